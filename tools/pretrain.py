"""Masked-LM pretraining (makes a teacher): python tools/pretrain.py -c configs/demo/pretrain.yaml [-o Section.key=value ...]

Data parallel: python -m paddle.distributed.launch --nproc_per_node N tools/pretrain.py -c ...
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ernie_tiny.cli import pretrain_main  # noqa: E402

if __name__ == "__main__":
    sys.exit(pretrain_main())

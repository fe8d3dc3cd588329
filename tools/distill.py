"""MiniLMv2 distillation: python tools/distill.py -c configs/ernie_tiny.yaml [-o Section.key=value ...]

Data parallel: python -m paddle.distributed.launch --nproc_per_node N tools/distill.py -c ...
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ernie_tiny.cli import distill_main  # noqa: E402

if __name__ == "__main__":
    sys.exit(distill_main())

"""Multi-task finetuning of the teacher: python tools/teacher_mtl.py -c configs/teacher_mtl.yaml [-o Section.key=value ...]

Data parallel: python -m paddle.distributed.launch --nproc_per_node N tools/teacher_mtl.py -c ...
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ernie_tiny.cli import teacher_mtl_main  # noqa: E402

if __name__ == "__main__":
    sys.exit(teacher_mtl_main())

"""Multi-task finetuning of the teacher: python tools/train_teacher.py -c configs/teacher_mtl.yaml [-o Section.key=value ...]

Data parallel: python -m paddle.distributed.launch --nproc_per_node N tools/train_teacher.py -c ...
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ernie_tiny.cli import train_teacher_main  # noqa: E402

if __name__ == "__main__":
    sys.exit(train_teacher_main())

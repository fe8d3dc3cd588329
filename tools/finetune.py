"""Finetune a student on one task and keep the model for export:
python tools/finetune.py -c configs/demo/finetune.yaml [-o Model.path=STUDENT_DIR -o Section.key=value ...]
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ernie_tiny.cli import finetune_main  # noqa: E402

if __name__ == "__main__":
    sys.exit(finetune_main())

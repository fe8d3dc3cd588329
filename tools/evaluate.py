"""Evaluation on task cards: python tools/evaluate.py -c configs/clue.yaml -o Model.path=DIR [-o Section.key=value ...]

Rerunning the same command resumes: finished grid points are not redone.
Several devices: python -m paddle.distributed.launch --gpus 0,1,2,3 tools/evaluate.py -c ... (one grid point per device).
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ernie_tiny.cli import evaluate_main  # noqa: E402

if __name__ == "__main__":
    sys.exit(evaluate_main())

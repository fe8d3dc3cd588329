"""The old name of tools/teacher_mtl.py (the teacher_mtl stage), kept for existing commands and jobs."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ernie_tiny.cli import teacher_mtl_main  # noqa: E402

if __name__ == "__main__":
    sys.exit(teacher_mtl_main())

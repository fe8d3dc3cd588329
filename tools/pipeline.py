"""The whole recipe in one command: python tools/pipeline.py -c configs/demo/pipeline.yaml [-o Section.key=value ...]

Stages whose output is complete are skipped; an interrupted stage resumes from its checkpoints.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ernie_tiny.cli import pipeline_main  # noqa: E402

if __name__ == "__main__":
    sys.exit(pipeline_main())

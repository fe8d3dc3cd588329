"""The MITKD claim experiment: python tools/experiment.py -c configs/demo/claim.yaml [-o Section.key=value ...]

Finished steps are skipped; an interrupted step resumes. See configs/demo/claim.yaml.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ernie_tiny.cli import experiment_main  # noqa: E402

if __name__ == "__main__":
    sys.exit(experiment_main())

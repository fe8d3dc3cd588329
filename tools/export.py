"""Export a finetuned model for inference (Paddle Inference, ONNX, int8), checked against eager:
python tools/export.py -c configs/demo/export.yaml [-o Model.path=FINETUNED_DIR -o Global.output_dir=DIR ...]
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ernie_tiny.cli import export_main  # noqa: E402

if __name__ == "__main__":
    sys.exit(export_main())

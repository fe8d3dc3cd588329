"""A shape's first call against its repeat on OpenVINO's dynamic models (no model compiled per
shape): every batch 1, 4, ..., 31 x length 16 and 32, called twice each, in that order.

python docs/results/serving/first_call/first_call.py output/bench40k/export-nncf > docs/results/serving/first_call.md
"""
import sys
import time

import numpy as np

from ernie_tiny.deploy.openvino_runtime import OpenVinoBackend

model_dir = sys.argv[1]
rng = np.random.default_rng(0)
print(f"# First call of a shape vs its repeat, OpenVINO dynamic models of {model_dir}\n")
print("| model | shapes | first / repeat, median | max | extra ms over all first calls |")
print("|---|---:|---:|---:|---:|")
for name in ("model.onnx", "model.int8.openvino.onnx"):
    backend = OpenVinoBackend(f"{model_dir}/{name}", threads=2, static_shapes=0)
    first, again = [], []
    for batch in range(1, 33, 3):
        for length in (16, 32):
            ids = rng.integers(5, 3000, (batch, length))
            for times in (first, again):
                start = time.perf_counter()
                backend(ids, np.zeros_like(ids))
                times.append((time.perf_counter() - start) * 1000)
    ratio = np.array(first) / np.array(again)
    print(f"| {name} | {len(first)} | {np.median(ratio):.2f}x | {ratio.max():.1f}x | "
          f"{np.sum(np.array(first) - np.array(again)):.0f} |")

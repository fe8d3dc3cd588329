"""OpenVINO's CPU runtime over an ONNX file, with models compiled for the shapes that recur.

OpenVINO runs a model compiled for dynamic shapes (any batch, any length) slower than one
compiled for a single shape: measured on the pruned 4L-312H-12A student at 1 x 128, 3.9 vs
4.4 ms in fp32 and 2.4 vs 3.1 ms in int8 (``docs/results/latency``). Upper bounds on the
dimensions did not help. Each shape's compiled model costs memory, though (30 to 70 MB measured
on that student, against a 5.9 MB int8 file) and 0.2 to 0.7 s to compile. So
``OpenVinoBackend`` keeps the dynamic model for every shape, and gives a shape its own compiled
model the ``promote_after``-th time it is called with it, up to ``static_shapes`` shapes for the
backend's life (the first ones to recur keep them: nothing is evicted, so a mix of shapes never
recompiles over and over). The predictor pads lengths to a multiple of 16 and batches to a fixed
size, so a server sees few shapes.

``precision``: ``f32`` (the default: OpenVINO's own default on CPUs with native bf16, AVX-512
BF16 or AMX, is bf16 arithmetic, which misses the export's fp32 tolerance) or ``bf16`` (the
``openvino-bf16`` backend, where ``native_bf16()``: scored against fp32 at export like int8).
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from ernie_tiny.runtime import inference_threads

STATIC_SHAPES = 4  # shapes compiled on their own per backend (memory: see the module doc)
PROMOTE_AFTER = 2  # calls with one shape before it gets its own compiled model


def openvino_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("openvino") is not None


def native_bf16() -> bool:
    """Whether OpenVINO's CPU plugin computes bf16 natively on this CPU (AVX-512 BF16 or AMX)."""
    import openvino as ov

    return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


class OpenVinoBackend:
    """OpenVINO on CPU over an ONNX file: ``backend(input_ids, token_type_ids) -> logits``
    (dynamic batch and length; recurring shapes compiled on their own; latency hint, a fixed
    thread count, ``precision`` arithmetic where the model is float)."""

    def __init__(self, path: str | Path, threads: int = 0, static_shapes: int = STATIC_SHAPES,
                 promote_after: int = PROMOTE_AFTER, precision: str = "f32"):
        import openvino as ov

        self.core = ov.Core()
        if precision not in ("f32", "bf16"):
            raise ValueError(f"OpenVINO precision {precision!r}: 'f32' or 'bf16'")
        self.properties = {"INFERENCE_NUM_THREADS": threads or inference_threads(), "PERFORMANCE_HINT": "LATENCY",
                           "INFERENCE_PRECISION_HINT": precision}
        self.model = self.core.read_model(str(path))
        self.input_names = [port.get_any_name() for port in self.model.inputs]
        self.dynamic = self._compile(self.model)
        self.static_shapes, self.promote_after = static_shapes, max(1, promote_after)
        self.static = {}  # (batch, length) -> (compiled model, infer request) for that shape only
        self.calls = Counter()  # calls by shape not yet compiled on its own
        shapes = f", up to {static_shapes} recurring shapes compiled on their own" if static_shapes else ""
        arithmetic = ", bf16 arithmetic" if precision == "bf16" else ""
        self.description = f"openvino {ov.__version__.split('-')[0]} cpu ({Path(path).name}{arithmetic}{shapes})"

    def _compile(self, model) -> tuple:
        compiled = self.core.compile_model(model, "CPU", self.properties)
        return compiled, compiled.create_infer_request()

    def _for_shape(self, shape: tuple) -> tuple:
        if shape in self.static:
            return self.static[shape]
        if len(self.static) < self.static_shapes:
            self.calls[shape] += 1
            if self.calls[shape] >= self.promote_after:
                import openvino as ov

                model = self.model.clone()
                model.reshape({name: ov.PartialShape(list(shape)) for name in self.input_names})
                self.static[shape] = self._compile(model)
                del self.calls[shape]
                if len(self.static) == self.static_shapes:
                    self.calls.clear()  # no more shapes get their own model: stop counting
                return self.static[shape]
        return self.dynamic

    def __call__(self, input_ids: np.ndarray, token_type_ids: np.ndarray) -> np.ndarray:
        compiled, request = self._for_shape(tuple(input_ids.shape))
        feed = dict(zip(self.input_names, (input_ids.astype(np.int64), token_type_ids.astype(np.int64))))
        return np.array(request.infer(feed)[compiled.outputs[0]], copy=True)  # the request reuses its buffer

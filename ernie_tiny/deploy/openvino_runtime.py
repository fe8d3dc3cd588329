"""OpenVINO's CPU runtime over an ONNX file, with models compiled for the shapes that recur, and
the table of the OpenVINO backends (``OPENVINO_MODELS``: the file each reads, its arithmetic,
the ``deploy.json`` record that shows the export scored it).

OpenVINO runs a model compiled for one shape faster than one compiled for dynamic shapes (any
batch, any length), chiefly for int8: in the committed latency reports (docs/results/latency/,
the ``-dynamic`` rows; three runs of 2026-12-02 on NNCF's int8 model) int8 took 57-61 vs 64-66 ms
at 32 x 128 in every run, and 2.8-3.7 vs 3.4-4.0 ms at 1 x 128 (as fast in one run of three);
fp32 per shape was within the noise of dynamic. Each shape's compiled model
costs memory and compile time, though: in a one-off measurement here (2026-12-02, process
RSS; not committed), 30 to 70 MB and 0.2 to 0.7 s per shape for the pruned 4L-312H-12A
student, against its 5.9 MB int8 file.

So ``OpenVinoBackend`` keeps the dynamic model for every shape and gives a shape its own
compiled model the ``promote_after``-th time it is called with it, up to ``static_shapes`` shapes
for the backend's life: the first ones to recur keep them, and nothing is evicted (a mix of shapes
never recompiles over and over). The predictor pads lengths to a multiple of 16 and sends full
batches but for the last of each request, so a batch job sees few shapes; a server's batch sizes
follow its load, and there the first shapes to recur keep the slots.

Where the compile runs: in the call that promotes the shape (a batch job waits for it, once per
shape), or with ``background`` (the server) on a thread of its own, while the calls go on on the
dynamic model until it is done (OpenVINO's compile releases the GIL: a one-off check here). A
compile that fails, either way, leaves the shape on the dynamic model for good (it keeps its
slot, so it is not tried again). Shapes known ahead (``shapes``; ``--compile_shapes 1x128
32x128``) are compiled before the first call instead: they take the first slots, so early
traffic (a health check, a burst of small batches) cannot take them.

Like every backend, not thread-safe: one caller at a time. The compile thread only reads what
``__init__`` set (the model, the core, the properties) and returns a new compiled model; only the
calling thread changes the shape tables.

``precision``: ``f32`` (the default: OpenVINO's own default on CPUs that compute bf16 natively
is bf16 arithmetic, which misses the export's fp32 tolerance; measured here: ``ov-defaults``) or ``bf16`` (the
``openvino-bf16`` backend, where ``native_bf16()``; scored against fp32 at export like int8).
"""
from __future__ import annotations

import functools
import weakref
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from ernie_tiny.errors import first_line
from ernie_tiny.runtime import inference_threads

STATIC_SHAPES = 4  # shapes compiled on their own per backend (memory: see the module doc)
PROMOTE_AFTER = 2  # calls with one shape before it gets its own compiled model


@dataclass(frozen=True)
class OpenVinoModel:
    file_key: str  # the deploy.json key naming the ONNX file it reads
    precision: str  # its arithmetic where the model is float: f32 or bf16
    scored_in: Optional[str]  # the deploy.json record whose "runtimes" list it when the export scored it
    # against fp32; None: checked against eager (``checks.openvino``)


OPENVINO_MODELS = {"openvino": OpenVinoModel("onnx", "f32", None),
                   "openvino-int8": OpenVinoModel("openvino_int8", "f32", "int8"),
                   "openvino-bf16": OpenVinoModel("onnx", "bf16", "bf16")}


def openvino_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("openvino") is not None


@functools.lru_cache(maxsize=1)
def native_bf16() -> bool:
    """Whether OpenVINO's CPU plugin computes bf16 natively on this CPU (AVX-512 BF16 or AMX; on
    other CPUs it ignores a bf16 hint and computes fp32)."""
    import openvino as ov

    return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


class OpenVinoBackend:
    """OpenVINO on CPU over an ONNX file: ``backend(input_ids, token_type_ids) -> logits``
    (dynamic batch and length; recurring shapes compiled on their own; latency hint, a fixed
    thread count, ``precision`` arithmetic where the model is float)."""

    def __init__(self, path: str | Path, threads: int = 0, static_shapes: int = STATIC_SHAPES,
                 promote_after: int = PROMOTE_AFTER, precision: str = "f32", shapes: Sequence[Sequence[int]] = (),
                 background: bool = False):
        import openvino as ov

        self.core = ov.Core()
        if precision not in ("f32", "bf16"):
            raise ValueError(f"OpenVINO precision {precision!r}: 'f32' or 'bf16'")
        shapes = list(dict.fromkeys(tuple(int(n) for n in shape) for shape in shapes))
        if len(shapes) > static_shapes:
            raise ValueError(f"{len(shapes)} shapes to compile ahead, but only {static_shapes} get a model of their own "
                             f"(static_shapes)")
        self.properties = {"INFERENCE_NUM_THREADS": threads or inference_threads(), "PERFORMANCE_HINT": "LATENCY",
                           "INFERENCE_PRECISION_HINT": precision}
        self.path, self.model = path, self.core.read_model(str(path))
        self.input_names = [port.get_any_name() for port in self.model.inputs]
        self.dynamic = self._compile(self.model)
        self.static_shapes, self.promote_after = static_shapes, max(1, promote_after)
        self.static = {}  # (batch, length) -> (compiled model, infer request) for that shape only
        self.calls = Counter()  # calls by shape not yet compiled on its own
        self.pending = {}  # with background: shape -> Future of its compiled model, while it compiles
        self.compiler = ThreadPoolExecutor(1, thread_name_prefix="openvino-compile") if background else None
        if self.compiler:  # queued compiles are dropped, not run, when the backend goes or the process exits
            weakref.finalize(self, self.compiler.shutdown, wait=False, cancel_futures=True)
        for shape in shapes:
            self.static[shape] = self._compile_shape(shape)
        compiled = [f"{b}x{n}" for b, n in shapes if self.static[(b, n)] is not self.dynamic]
        ahead = f" ({', '.join(compiled)} at start)" if compiled else ""
        background_note = ", in the background" if background else ""
        recurring = (f", up to {static_shapes} recurring shapes compiled on their own{background_note}{ahead}"
                     if static_shapes else "")
        arithmetic = ", bf16 arithmetic" if precision == "bf16" else ""
        self.description = f"openvino {ov.__version__.split('-')[0]} cpu ({Path(path).name}{arithmetic}{recurring})"

    def _compile(self, model) -> tuple:
        compiled = self.core.compile_model(model, "CPU", self.properties)
        return compiled, compiled.create_infer_request()

    def _compile_shape(self, shape: tuple) -> tuple:
        """The model compiled for ``shape`` alone; the dynamic model if OpenVINO cannot compile it."""
        import openvino as ov

        try:
            model = self.model.clone()
            model.reshape({name: ov.PartialShape(list(shape)) for name in self.input_names})
            return self._compile(model)
        except Exception as err:  # noqa: BLE001 -- OpenVINO's errors, or memory: this shape stays dynamic
            print(f"OpenVINO cannot compile {Path(self.path).name} for shape {list(shape)} "
                  f"({first_line(err)}): it runs on the dynamic model", flush=True)
            return self.dynamic  # takes a slot, so it is not tried again

    def _slots_used(self) -> int:
        return len(self.static) + len(self.pending)

    def _promote(self, shape: tuple) -> tuple:
        """Gives ``shape`` its own compiled model (in the background: once it is done); returns
        the model this call runs on."""
        if self.compiler:
            self.pending[shape] = self.compiler.submit(self._compile_shape, shape)
        else:
            self.static[shape] = self._compile_shape(shape)
        if self._slots_used() == self.static_shapes:
            self.calls.clear()  # no more shapes get their own model: stop counting
        return self.static.get(shape, self.dynamic)

    def _for_shape(self, shape: tuple) -> tuple:
        if shape in self.static:
            return self.static[shape]
        if shape in self.pending:  # compiling in the background: the dynamic model until it is done
            if not self.pending[shape].done():
                return self.dynamic
            self.static[shape] = self.pending.pop(shape).result()  # _compile_shape does not raise
            return self.static[shape]
        if self._slots_used() < self.static_shapes:
            self.calls[shape] += 1
            if self.calls[shape] >= self.promote_after:
                del self.calls[shape]
                return self._promote(shape)
        return self.dynamic

    def wait_for_compiles(self) -> None:
        """Blocks until the background compiles started so far are done (tests)."""
        for future in list(self.pending.values()):
            future.result()

    def warm(self, input_ids: np.ndarray, token_type_ids: np.ndarray) -> None:
        """One call on the model this shape runs on now, not counted towards its promotion (a
        warm-up call is not a recurring shape)."""
        self._run(self.static.get(tuple(input_ids.shape), self.dynamic), input_ids, token_type_ids)

    def __call__(self, input_ids: np.ndarray, token_type_ids: np.ndarray) -> np.ndarray:
        return self._run(self._for_shape(tuple(input_ids.shape)), input_ids, token_type_ids)

    def _run(self, model: tuple, input_ids: np.ndarray, token_type_ids: np.ndarray) -> np.ndarray:
        compiled, request = model
        feed = dict(zip(self.input_names, (input_ids.astype(np.int64), token_type_ids.astype(np.int64))))
        return np.array(request.infer(feed)[compiled.outputs[0]], copy=True)  # the request reuses its buffer

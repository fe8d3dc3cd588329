"""The runtimes an inference directory (``tools/export.py`` output) runs on, which one ``auto``
picks, and building one (``make_backend``); each is called as ``backend(input_ids,
token_type_ids) -> logits`` on padded int64 arrays:

* ``paddle``: Paddle Inference on the exported static model (``model.json`` on Paddle 3,
  ``model.pdmodel`` on Paddle 2.x). CPU with oneDNN (on by default: without it Paddle
  Inference runs slower than eager Paddle) and a thread count; GPU with optional fp16 and,
  where the GPU build has it, TensorRT (dynamic shapes) for ``.pdmodel`` exports only (see
  ``check_tensorrt_program``).
* ``onnx`` / ``onnx-fused`` / ``onnx-int8``: onnxruntime on CPU, on the plain paddle2onnx
  conversion, on its fused graph (``ernie_tiny.deploy.onnx_fusion``), or on the int8 model
  (``ernie_tiny.deploy.quantize``: static QDQ of the plain graph, or dynamic of the fused one).
* ``openvino`` / ``openvino-int8`` / ``openvino-bf16``: OpenVINO's CPU runtime
  (``ernie_tiny.deploy.openvino_runtime``) on the plain ONNX export (it reads ONNX directly; the
  fused graph's onnxruntime-only ops it does not), on OpenVINO's own int8 model (NNCF's, of the
  static int8 mode), or on the plain export in bf16 arithmetic (CPUs with native bf16), when the
  ``openvino`` package is installed and the export checked it.
* ``auto``: on CPU, the fastest fp32 backend in ``deploy.json`` ``timing`` (the export's, or
  taken again on the serving machine by ``deploy/python/retime.py``; only backends this machine
  runs; ``ernie_tiny.deploy.backend_timing``), int8 and bf16 included
  only with ``allow_int8``; exports without timings take onnxruntime fp32, and GPU takes Paddle.

Lengths reach a backend padded to a multiple of ``LENGTH_BUCKET`` (``pad_to_bucket``), so the
runtimes see few shapes.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable

import numpy as np

from ernie_tiny.deploy.inference_dir import DEPLOY_FILE, REMAKE, model_file, read_deploy_info
from ernie_tiny.deploy.backend_timing import (REDUCED_PRECISION, choose, cpu_features, int8_scored_elsewhere_note,
                                              timed_elsewhere_note)
from ernie_tiny.deploy.inputs import DeployInputError
from ernie_tiny.errors import first_line
from ernie_tiny.deploy.openvino_runtime import (OPENVINO_MODELS, STATIC_SHAPES, OpenVinoBackend, native_bf16,
                                                openvino_installed)
from ernie_tiny.runtime import inference_threads

BACKENDS = ("auto", "paddle", "onnx", "onnx-fused", "onnx-int8", "openvino", "openvino-int8", "openvino-bf16")
ONNX_FILES = {"onnx": "onnx", "onnx-fused": "onnx_fused", "onnx-int8": "onnx_int8"}  # backend -> deploy.json key
OPENVINO_FILES = {name: model.file_key for name, model in OPENVINO_MODELS.items()}  # backend -> deploy.json key
INPUT_NAMES = ("input_ids", "token_type_ids")
LENGTH_BUCKET = 16


def pad_to_bucket(input_ids: np.ndarray, token_type_ids: np.ndarray, pad_token_id: int, bucket: int = LENGTH_BUCKET):
    """Pad the length up to a multiple of ``bucket``. Padding is masked, so results do not
    change; but the runtimes see few distinct shapes (oneDNN keeps kernels per shape, and a
    server that saw every length from 1 to 128 would keep them all)."""
    extra = -input_ids.shape[1] % bucket
    if not extra:
        return input_ids, token_type_ids
    return (np.pad(input_ids, ((0, 0), (0, extra)), constant_values=pad_token_id),
            np.pad(token_type_ids, ((0, 0), (0, extra))))


def padded_length(length: int, bucket: int = LENGTH_BUCKET) -> int:
    """``length`` rounded up to a multiple of ``bucket``, as ``pad_to_bucket`` pads it."""
    return -(-length // bucket) * bucket


def tensorrt_shape_profile(max_batch_size: int, max_length: int, bucket: int = LENGTH_BUCKET) -> dict:
    """TensorRT's dynamic-shape profile, ``{"min"|"opt"|"max": [batch, length]}``, covering every
    batch ``Predictor.logits`` sends: 1 to ``max_batch_size`` rows, lengths padded to a multiple
    of ``bucket`` up to ``max_length`` rounded up to the bucket (130 -> 144: a profile ending at
    130 would reject the padded batches of the longest texts)."""
    longest = padded_length(max_length, bucket)
    return {"min": [1, bucket], "opt": [max_batch_size, longest], "max": [max_batch_size, longest]}


def check_tensorrt_program(program_file: str) -> None:
    """TensorRT runs here through Paddle Inference's ``enable_tensorrt_engine``, which applies to
    ``.pdmodel`` programs; Paddle 3 exports ``model.json`` (PIR), for which Paddle's route is
    ``paddle.tensorrt.convert``, not wired in (nothing here has a GPU to test it). Refuse
    before anything loads rather than run without TensorRT or fail inside it."""
    if not str(program_file).endswith(".pdmodel"):
        raise ValueError(
            f"TensorRT: {program_file} is a Paddle 3 (PIR) program, and TensorRT here needs a .pdmodel export "
            f"(Paddle Inference's enable_tensorrt_engine). Run without --trt (GPU fp16 works), or export with "
            f"FLAGS_enable_pir_api=0 set, which makes paddle.jit.save write model.pdmodel.")


class PaddleBackend:
    """Paddle Inference: ``backend(input_ids, token_type_ids) -> logits`` (numpy in, numpy out)."""

    def __init__(self, model_dir: str | Path, device: str = "cpu", threads: int = 0, mkldnn: bool = True,
                 precision: str = "fp32", tensorrt: bool = False, gpu_id: int = 0, max_batch_size: int = 32,
                 max_length: int = 128):
        from paddle import inference

        model_dir = Path(model_dir)
        info = read_deploy_info(model_dir)
        self.trt_profile = None
        if tensorrt:
            check_tensorrt_program(info["paddle"]["model"])
            self.trt_profile = tensorrt_shape_profile(max_batch_size, max_length)
        config = inference.Config(str(model_file(model_dir, info["paddle"]["model"])),
                                  str(model_file(model_dir, info["paddle"]["params"])))
        config.disable_glog_info()
        if device == "cpu":
            if precision != "fp32" or tensorrt:
                raise ValueError("fp16 and TensorRT need device 'gpu'; on CPU use precision fp32 "
                                 "(or the onnx-int8 backend)")
            config.disable_gpu()
            if mkldnn:
                config.enable_mkldnn()
            config.set_cpu_math_library_num_threads(threads or inference_threads())
        elif device == "gpu":
            import paddle

            if not paddle.device.is_compiled_with_cuda():
                raise DeployInputError("--device gpu needs a GPU build of Paddle (paddlepaddle-gpu); this one is "
                                       "CPU-only")
            half = inference.PrecisionType.Half if precision == "fp16" else inference.PrecisionType.Float32
            if tensorrt:
                if inference.get_trt_compile_version() == (0, 0, 0):
                    raise RuntimeError("TensorRT: this Paddle build has no TensorRT (run without --trt, or use a build with it)")
                config.enable_use_gpu(256, gpu_id)
                config.enable_tensorrt_engine(workspace_size=1 << 30, max_batch_size=max_batch_size,
                                              min_subgraph_size=5, precision_mode=half, use_static=False,
                                              use_calib_mode=False)
                profile = self.trt_profile
                shapes = lambda which: {name: profile[which] for name in INPUT_NAMES}  # noqa: E731
                config.set_trt_dynamic_shape_info(shapes("min"), shapes("max"), shapes("opt"))
            else:
                config.enable_use_gpu(256, gpu_id, half)
        else:
            raise ValueError(f"device {device!r}: 'cpu' or 'gpu'")
        self.predictor = inference.create_predictor(config)
        self.inputs = [self.predictor.get_input_handle(n) for n in self.predictor.get_input_names()]
        self.output = self.predictor.get_output_handle(self.predictor.get_output_names()[0])
        self.description = f"paddle-inference {device}" + (f" oneDNN {'on' if mkldnn else 'off'}" if device == "cpu"
                                                            else f" {precision}{' TensorRT' if tensorrt else ''}")

    def __call__(self, input_ids: np.ndarray, token_type_ids: np.ndarray) -> np.ndarray:
        if self.trt_profile and not all(lo <= n <= hi for lo, n, hi in
                                        zip(self.trt_profile["min"], input_ids.shape, self.trt_profile["max"])):
            raise ValueError(f"TensorRT: input shape {list(input_ids.shape)} is outside the engine's profile "
                             f"{self.trt_profile['min']}..{self.trt_profile['max']} (max_batch_size, max_length)")
        for handle, array in zip(self.inputs, (input_ids, token_type_ids)):
            handle.reshape(array.shape)
            handle.copy_from_cpu(np.ascontiguousarray(array, dtype=np.int64))
        self.predictor.run()
        return self.output.copy_to_cpu()


class OnnxBackend:
    """onnxruntime on CPU: ``backend(input_ids, token_type_ids) -> logits``."""

    def __init__(self, path: str | Path, threads: int = 0, spin: bool = False):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or inference_threads()
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Without ``spin``, idle worker threads sleep instead of spinning (onnxruntime's default),
        # which would take cores from everything else in the process (tokenization, HTTP) and
        # from other processes: measured here on 2 cores under load, 1 x 128 took 41 ms with
        # spinning and 15 ms without. On an idle machine spinning is faster (docs/results/latency:
        # onnxruntime's default session against the ``onnx`` backend), hence ``--spin``.
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.description = f"onnxruntime {ort.__version__} cpu ({Path(path).name}{', spinning' if spin else ''})"

    def __call__(self, input_ids: np.ndarray, token_type_ids: np.ndarray) -> np.ndarray:
        feed = dict(zip(self.input_names, (input_ids.astype(np.int64), token_type_ids.astype(np.int64))))
        return self.session.run(None, feed)[0]


def loaded(path: str | Path, open_runtime: Callable):
    """``open_runtime()``, a runtime over the model file ``path``. Where the runtime cannot read
    the file (cut short, damaged), a DeployInputError naming it instead of the runtime's own
    traceback; our own errors and bugs keep theirs."""
    try:
        return open_runtime()
    except Exception as err:  # noqa: BLE001 -- Paddle, onnxruntime and OpenVINO raise classes of their own
        if isinstance(err, (RuntimeError, OSError)) or type(err).__module__.startswith("onnxruntime"):
            raise DeployInputError(f"{path}: cannot be loaded ({first_line(err)}); {REMAKE}") from None
        raise


def resolve_backend(backend: str, info: dict, device: str = "cpu", allow_int8: bool = False) -> str:
    """``auto`` on CPU: the backend ``timing.median_ms`` has fastest among those available here
    (``choose``: fp32, or either precision with ``allow_int8``); without timings onnxruntime
    fp32 when exported. Paddle Inference otherwise (GPU)."""
    if backend != "auto":
        return backend
    if device != "cpu":
        return "paddle"
    timed = {name: ms for name, ms in ((info.get("timing") or {}).get("median_ms") or {}).items()
             if available(name, info)}
    if timed and (allow_int8 or set(timed) - set(REDUCED_PRECISION)):
        return choose(timed, allow_int8)
    return "onnx" if info.get("onnx") else "paddle"


def available(backend: str, info: dict) -> bool:
    """Whether ``backend`` can run this export here (its model file exported and checked; for
    openvino also the package installed, and for bf16 a CPU that computes it natively)."""
    if backend == "paddle":
        return True
    if backend in OPENVINO_MODELS:
        return (bool(info.get(OPENVINO_FILES[backend])) and checked_on_openvino(backend, info) and openvino_installed()
                and (OPENVINO_MODELS[backend].precision != "bf16" or native_bf16()))
    return backend in ONNX_FILES and bool(info.get(ONNX_FILES[backend]))


def checked_on_openvino(backend: str, info: dict) -> bool:
    """Whether the export ran this OpenVINO backend's model: fp32 against eager (``checks``), int8
    and bf16 through their accuracy gates (``OPENVINO_MODELS[backend].scored_in``: its record's
    ``runtimes``)."""
    record = OPENVINO_MODELS[backend].scored_in
    if record:
        return backend in ((info.get(record) or {}).get("runtimes") or {})
    return bool((info.get("checks") or {}).get("openvino"))


def open_openvino(backend: str, path: str | Path, **options) -> OpenVinoBackend:
    """The OpenVINO backend ``backend`` over ``path``, in its own arithmetic."""
    return OpenVinoBackend(path, precision=OPENVINO_MODELS[backend].precision, **options)


def auto_reason(backend: str, requested: str, info: dict, model_dir: str | Path = "DIR") -> str:
    """Why this backend runs, for the predictor's and the server's description; and where the
    export's records were taken on a CPU unlike this one, that (``auto``'s timings; an int8
    score taken with VNNI) and what to do."""
    here = cpu_features()
    caution = int8_scored_elsewhere_note(backend, info, here)
    caution = f"; {caution}" if caution else ""
    if requested != "auto":
        return "chosen" + caution
    timing = info.get("timing")
    if not timing or backend not in timing.get("median_ms", {}):
        return "auto: not timed at export" + caution
    shapes = ", ".join(f"{b}x{n} {ms:g} ms" for (b, n), ms in zip(timing["shapes"], timing["median_ms"][backend]))
    when = "when timed again" if "replaced" in timing else "at export"
    elsewhere = timed_elsewhere_note(timing, here)
    if elsewhere:
        return (f"auto: fastest {when} ({shapes}), but {elsewhere}: another backend may be faster here "
                f"(python deploy/python/retime.py --model_dir {model_dir} times them here){caution}")
    return f"auto: fastest {when} ({shapes}){caution}"


def make_backend(model_dir: str | Path, backend: str = "auto", requested: str = "", info: dict | None = None,
                 **options):
    """A runtime over ``model_dir``; ``options`` go to ``PaddleBackend`` (device, threads,
    mkldnn, precision, tensorrt, ...) or, for the onnx and openvino backends, only ``threads``
    (and ``spin`` for onnx; ``static_shapes``, ``compile_shapes`` and ``background_compile``, to
    compile recurring shapes off the calling thread, for openvino). ``requested``: the backend
    the user asked for, when ``backend`` is already what ``auto`` resolved to (for messages);
    ``info``: the export's ``deploy.json`` when the caller has read it already."""
    info = read_deploy_info(model_dir) if info is None else info
    requested = requested or backend
    backend = resolve_backend(backend, info, options.get("device", "cpu"), options.pop("allow_int8", False))
    spin, static_shapes = options.pop("spin", False), options.pop("static_shapes", STATIC_SHAPES)
    compile_shapes, background = options.pop("compile_shapes", []), options.pop("background_compile", False)
    chosen = f"auto chose {backend}" if requested == "auto" else f"{backend} is not one"
    if spin and backend not in ONNX_FILES:
        print(f"--spin applies to the onnxruntime backends; {chosen}, and runs without it", file=sys.stderr, flush=True)
    for flag, given in (("--static_shapes", static_shapes != STATIC_SHAPES), ("--compile_shapes", compile_shapes)):
        if given and backend not in OPENVINO_MODELS:
            print(f"{flag} applies to the openvino backends; {chosen}, and runs without it", file=sys.stderr,
                  flush=True)
    if backend == "paddle":
        return loaded(model_file(model_dir, info["paddle"]["params"]), lambda: PaddleBackend(model_dir, **options))
    gpu_only = options.get("device", "cpu") != "cpu" or options.get("tensorrt")
    if backend in BACKENDS and (gpu_only or options.get("precision", "fp32") != "fp32"):
        raise ValueError(f"backend {backend!r} runs on CPU (int8: 'onnx-int8', 'openvino-int8'; bf16: 'openvino-bf16'); "
                         "GPU, fp16 and TensorRT are options of the 'paddle' backend")
    if backend in OPENVINO_FILES:
        if not openvino_installed():
            raise DeployInputError(f"backend {backend} needs the openvino package (pip install -e .)")
        if OPENVINO_MODELS[backend].precision == "bf16" and not native_bf16():
            raise DeployInputError(f"backend {backend}: this CPU does not compute bf16 natively, so OpenVINO would "
                                   f"run it in fp32 (choose another --backend)")
        if backend == "openvino-int8" and "openvino-int8" in ((info.get("int8") or {}).get("runtimes") or {}) \
                and not info.get(OPENVINO_FILES[backend]):
            raise DeployInputError(f"{Path(model_dir) / DEPLOY_FILE}: exported before OpenVINO had an int8 model of "
                                   f"its own (NNCF's); re-export it with tools/export.py for backend {backend}")
        if not available(backend, info):
            needs = {"openvino": "the ONNX export (Export.onnx: true)",
                     "openvino-int8": "OpenVINO's int8 model (Export.int8: static)",
                     "openvino-bf16": "Export.bf16: true and an export machine whose CPU computes bf16 "
                                      "natively"}[backend]
            raise DeployInputError(f"{Path(model_dir) / DEPLOY_FILE}: backend {backend} needs {needs}, checked on "
                                   f"OpenVINO at export; {model_dir} has none (choose another --backend)")
        path = model_file(model_dir, info[OPENVINO_FILES[backend]])
        return loaded(path, lambda: open_openvino(backend, path, threads=options.get("threads", 0),
                                                  static_shapes=static_shapes, shapes=compile_shapes,
                                                  background=background))
    if backend in ONNX_FILES:
        key = ONNX_FILES[backend]
        if not info.get(key):
            needs = {"onnx": "", "onnx-fused": " and Export.fuse: true", "onnx-int8": " and Export.int8 on"}[backend]
            raise DeployInputError(f"{Path(model_dir) / DEPLOY_FILE}: {model_dir} has no {backend} model (export "
                                   f"with Export.onnx: true{needs}, or choose another --backend)")
        path = model_file(model_dir, info[key])
        return loaded(path, lambda: OnnxBackend(path, threads=options.get("threads", 0), spin=spin))
    raise ValueError(f"backend {backend!r}: one of {', '.join(BACKENDS)}")

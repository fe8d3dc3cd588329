"""Batch prediction from an inference directory (``tools/export.py`` output), one class over
two runtimes:

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
* ``auto``: on CPU, the fastest fp32 backend that the export timed on its machine
  (``deploy.json`` ``timing``, ``ernie_tiny.deploy.backend_timing``), int8 and bf16 included
  only with ``allow_int8``; exports without timings take onnxruntime fp32, and GPU takes Paddle.

``Predictor`` does what every runtime needs around the forward: tokenization with the
exported tokenizer (the same ``ernie_tiny.tasks.encode`` functions the model was finetuned
with), batching (texts sorted by length so batches pad little, lengths padded to a multiple
of 16 so the runtimes see few shapes; results come back in input order), and postprocessing (softmax, label names; per-character labels and BIO entities for
token tasks)::

    from ernie_tiny.deploy.predictor import Predictor
    predictor = Predictor("output/demo/export", backend="auto", threads=2)  # or paddle, onnx, onnx-int8
    predictor.predict(["质量很好，物流也快", "太差了"])
    # [{'label': 'positive', 'score': ...}, {'label': 'negative', 'score': ...}]
"""
from __future__ import annotations

import math
import sys
import time
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np

from ernie_tiny.deploy.inference_dir import DEPLOY_FILE, model_file, read_deploy_info  # noqa: F401 (re-exported)
from ernie_tiny.deploy.backend_timing import (REDUCED_PRECISION, choose, cpu_features, int8_scored_elsewhere_note,
                                              timed_elsewhere_note)
from ernie_tiny.deploy.inputs import DeployInputError
from ernie_tiny.deploy.openvino_runtime import (OPENVINO_MODELS, STATIC_SHAPES, OpenVinoBackend, native_bf16,
                                                openvino_installed)
from ernie_tiny.runtime import inference_threads
from ernie_tiny.tasks.encode import IGNORE, Features, collate, encode_sequence, encode_tokens
from ernie_tiny.tasks.readers import Example

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


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


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
                raise RuntimeError("device 'gpu' needs a GPU build of Paddle (paddlepaddle-gpu)")
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


def add_backend_arguments(parser) -> None:
    """The command-line flags that choose and tune a backend (deploy/python/infer.py, deploy/serving/server.py)."""
    parser.add_argument("--backend", choices=BACKENDS, default="auto",
                        help="auto (default): on CPU the fastest fp32 backend timed at export, else paddle")
    parser.add_argument("--allow_int8", action="store_true",
                        help="auto may pick a reduced-precision model (int8; OpenVINO bf16 where the CPU has it) when "
                             "it timed fastest: each was scored against fp32 at export")
    parser.add_argument("--device", choices=("cpu", "gpu"), default="cpu", help="gpu: paddle backend only")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0 = all available cores)")
    parser.add_argument("--no_mkldnn", action="store_true", help="paddle on CPU: turn oneDNN off (slower)")
    parser.add_argument("--precision", choices=("fp32", "fp16"), default="fp32", help="paddle on GPU: fp16")
    parser.add_argument("--trt", action="store_true", help="paddle on GPU: TensorRT (dynamic shapes)")
    parser.add_argument("--gpu_id", type=int, default=0)
    parser.add_argument("--static_shapes", type=int, default=STATIC_SHAPES, metavar="N",
                        help=f"openvino backends: up to N recurring batch x length shapes get a model compiled for "
                             f"them (faster, each takes memory of its own; default {STATIC_SHAPES}, 0 = none)")
    parser.add_argument("--compile_shapes", nargs="+", type=shape_arg, default=[], metavar="BxL",
                        help="openvino backends: batch x length shapes (e.g. 1x128 32x128) compiled at start, before "
                             "the first call: they take the first --static_shapes slots, and no call waits for their "
                             f"compile (lengths reach the model padded to a multiple of {LENGTH_BUCKET})")
    parser.add_argument("--spin", action="store_true",
                        help="onnxruntime backends: idle worker threads spin (faster on a machine that does nothing "
                             "else, slower when the cores are shared)")


def shape_arg(text: str) -> tuple:
    """``--compile_shapes``' ``BxL`` (``32x128``) as ``(32, 128)``."""
    import argparse

    try:
        batch, length = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: a shape is batch x length, e.g. 32x128") from None
    if batch < 1 or length < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: batch and length must be at least 1")
    return batch, length


class BackendFlagsError(DeployInputError):
    """Command-line flags the chosen backend cannot honour."""


def backend_options(args) -> dict:
    """``make_backend`` options from ``add_backend_arguments``' flags; BackendFlagsError for flags the
    chosen backend cannot honour (onnxruntime runs on CPU in fp32 here)."""
    options = {"threads": args.threads, "device": args.device, "allow_int8": args.allow_int8}
    if args.spin:
        if args.backend not in ("auto", *ONNX_FILES):
            raise BackendFlagsError(f"--spin is for the onnxruntime backends ({', '.join(ONNX_FILES)}) and auto, "
                                    f"not --backend {args.backend}")
        options["spin"] = True
    if args.static_shapes != STATIC_SHAPES:
        if args.backend not in ("auto", *OPENVINO_FILES) or args.static_shapes < 0:
            raise BackendFlagsError(f"--static_shapes is a count (0 or more) for the openvino backends "
                                    f"({', '.join(OPENVINO_FILES)}) and auto, not --backend {args.backend}")
        options["static_shapes"] = args.static_shapes
    if args.compile_shapes:
        if args.backend not in ("auto", *OPENVINO_FILES):
            raise BackendFlagsError(f"--compile_shapes is for the openvino backends ({', '.join(OPENVINO_FILES)}) and "
                                    f"auto, not --backend {args.backend}")
        if len(set(args.compile_shapes)) > args.static_shapes:
            raise BackendFlagsError(f"--compile_shapes gives {len(set(args.compile_shapes))} shapes; --static_shapes "
                                    f"allows at most {args.static_shapes}")
        options["compile_shapes"] = list(args.compile_shapes)
    if args.backend in ("auto", "paddle"):
        options.update(mkldnn=not args.no_mkldnn, precision=args.precision, tensorrt=args.trt, gpu_id=args.gpu_id)
    elif args.device != "cpu" or args.trt or args.precision != "fp32":
        raise BackendFlagsError(f"--backend {args.backend} runs on CPU in fp32; --device gpu, --precision and --trt are "
                         f"for --backend paddle")
    return options


def resolve_backend(backend: str, info: dict, device: str = "cpu", allow_int8: bool = False) -> str:
    """``auto`` on CPU: the backend the export measured fastest (``timing.auto``: fp32, or
    either precision with ``allow_int8``); without timings onnxruntime fp32 when exported.
    Paddle Inference otherwise (GPU)."""
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


def make_backend(model_dir: str | Path, backend: str = "auto", **options):
    """A runtime over ``model_dir``; ``options`` go to ``PaddleBackend`` (device, threads,
    mkldnn, precision, tensorrt, ...) or, for the onnx and openvino backends, only ``threads``
    (and ``spin`` for onnx; ``static_shapes``, ``compile_shapes`` and ``background_compile``, to
    compile recurring shapes off the calling thread, for openvino)."""
    info = read_deploy_info(model_dir)
    requested = backend
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
        return PaddleBackend(model_dir, **options)
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
        return open_openvino(backend, model_file(model_dir, info[OPENVINO_FILES[backend]]),
                             threads=options.get("threads", 0), static_shapes=static_shapes, shapes=compile_shapes,
                             background=background)
    if backend in ONNX_FILES:
        key = ONNX_FILES[backend]
        if not info.get(key):
            needs = {"onnx": "", "onnx-fused": " and Export.fuse: true", "onnx-int8": " and Export.int8 on"}[backend]
            raise DeployInputError(f"{Path(model_dir) / DEPLOY_FILE}: {model_dir} has no {backend} model (export "
                                   f"with Export.onnx: true{needs}, or choose another --backend)")
        return OnnxBackend(model_file(model_dir, info[key]), threads=options.get("threads", 0),
                           spin=spin)
    raise ValueError(f"backend {backend!r}: one of {', '.join(BACKENDS)}")


class Predictor:
    """Texts in, labels and scores out, over any backend (see ``make_backend``)."""

    def __init__(self, model_dir: str | Path, backend: str = "auto", batch_size: int = 32, max_length: int = 0,
                 **backend_options):
        from paddlenlp.transformers import AutoTokenizer

        self.model_dir = Path(model_dir)
        self.info = read_deploy_info(model_dir)
        self.labels: List[str] = list(self.info["labels"])
        self.head: str = self.info["head"]
        self.input_type: str = self.info["input"]
        self.max_length = max_length or self.info["max_length"]
        self.batch_size = batch_size
        self.tokenizer = AutoTokenizer.from_pretrained(str(self.model_dir))
        self.pad_token_id = self.tokenizer.pad_token_id
        requested = backend
        backend = resolve_backend(backend, self.info, backend_options.get("device", "cpu"),
                                  backend_options.pop("allow_int8", False))
        if backend == "paddle":
            backend_options.setdefault("max_batch_size", batch_size)
            backend_options.setdefault("max_length", self.max_length)
            if backend_options["max_batch_size"] < batch_size or backend_options["max_length"] < self.max_length:
                raise ValueError(f"the backend's max_batch_size {backend_options['max_batch_size']} / max_length "
                                 f"{backend_options['max_length']} are below the batches this predictor makes "
                                 f"(batch_size {batch_size}, max_length {self.max_length})")
        never_called = self.shapes_never_called(backend_options.get("compile_shapes", []))
        if never_called:
            raise DeployInputError(f"--compile_shapes {never_called}")
        self.backend = make_backend(model_dir, backend, **backend_options)
        self.backend_name = backend
        self.description = (f"{backend}: {self.backend.description}; "
                            f"{auto_reason(backend, requested, self.info, self.model_dir)}")

    def shapes_never_called(self, shapes) -> str:
        """Which of ``shapes`` (batch, length) this predictor never sends its backend, and why; ''
        if it may send them all (lengths are padded to multiples of LENGTH_BUCKET, up to the padded
        max length; batches hold at most ``batch_size`` examples)."""
        longest, problems = padded_length(self.max_length), []
        for batch, length in shapes:
            if length % LENGTH_BUCKET:
                problems.append(f"{batch}x{length}: lengths reach the model padded to a multiple of {LENGTH_BUCKET}")
            elif length > longest:
                problems.append(f"{batch}x{length}: lengths are at most {longest} (max length {self.max_length}, "
                                f"padded)")
            elif batch > self.batch_size:
                problems.append(f"{batch}x{length}: batches hold at most {self.batch_size} texts (--batch_size)")
        return "; ".join(problems) + (", so such a shape is never called" if problems else "")

    def sendable_shapes(self) -> List[Tuple[int, int]]:
        """Every batch x length this predictor can send its backend (batches of 1 to
        ``batch_size``, lengths padded to multiples of LENGTH_BUCKET up to the padded max length),
        cheapest first."""
        shapes = [(batch, length) for length in range(LENGTH_BUCKET, padded_length(self.max_length) + 1, LENGTH_BUCKET)
                  for batch in range(1, self.batch_size + 1)]
        return sorted(shapes, key=lambda shape: (shape[0] * shape[1], shape))

    def warm_up(self, max_seconds: float = math.inf) -> int:
        """Calls the backend once with every shape it can be sent (``sendable_shapes``, cheapest
        first), so no request pays a shape's first call, which is several times slower on
        OpenVINO's dynamic models (docs/results/serving/first_call.md); stops once ``max_seconds``
        have passed (the cheapest shape is always called; the rest get their first call from
        requests). OpenVINO does not count these calls towards a shape's promotion. Returns the
        number of shapes called."""
        call = getattr(self.backend, "warm", self.backend)
        token = self.tokenizer.unk_token_id  # any id the vocabulary has (pruning keeps the special tokens)
        started, called = time.perf_counter(), 0
        for batch, length in self.sendable_shapes():
            ids = np.full((batch, length), token, dtype=np.int64)
            call(ids, np.zeros_like(ids))
            called += 1
            if time.perf_counter() - started >= max_seconds:
                break
        return called

    # -- text -> features -> logits ---------------------------------------------------------
    def encode(self, texts: Sequence[str], text_pairs: Optional[Sequence[str]] = None) -> List[Features]:
        """Model inputs, as the model was finetuned on them. Token tasks take each character
        as a token (the offline tasks are per character); each token's "label" is its index,
        so after encoding the kept tokens (first sub-words) can be found again."""
        if text_pairs is not None and len(text_pairs) != len(texts):
            raise ValueError(f"{len(texts)} texts but {len(text_pairs)} text pairs")
        if self.input_type == "pair" and text_pairs is None:
            raise ValueError("this model takes text pairs: give text_pairs (CLI: text<TAB>pair per line)")
        if self.head == "token":
            return [encode_tokens(Example(list(t), None, list(range(len(t))), ""), self.tokenizer, self.max_length)
                    for t in texts]
        pairs = text_pairs if text_pairs is not None else [None] * len(texts)
        return [encode_sequence(Example(t, p, 0, ""), self.tokenizer, self.max_length) for t, p in zip(texts, pairs)]

    def logits(self, features: Sequence[Features]) -> List[np.ndarray]:
        """Per example: [classes] (sequence) or [its length, classes] (token), in input order.
        Batches are formed from length-sorted examples, so little compute goes to padding."""
        order = sorted(range(len(features)), key=lambda i: len(features[i].input_ids))
        out: List[Optional[np.ndarray]] = [None] * len(features)
        for start in range(0, len(order), self.batch_size):
            chunk = order[start:start + self.batch_size]
            batch = collate([features[i] for i in chunk], self.pad_token_id)
            ids, types = pad_to_bucket(batch["input_ids"], batch["token_type_ids"], self.pad_token_id)
            logits = self.backend(ids, types)
            for row, i in enumerate(chunk):
                out[i] = logits[row] if self.head == "sequence" else logits[row, :len(features[i].input_ids)]
        return out

    # -- logits -> labels ---------------------------------------------------------------------
    def predict(self, texts: Sequence[str], text_pairs: Optional[Sequence[str]] = None) -> List[dict]:
        """Sequence tasks: ``{"label", "score"}`` per text (score: the label's probability).
        Token tasks: ``{"tokens": [{"token", "label", "score"}...], "entities": [...],
        "truncated": bool}``; entities (BIO labels only) carry type, text and character offsets."""
        if not texts:
            return []
        features = self.encode(texts, text_pairs)
        results = []
        for text, feature, logits in zip(texts, features, self.logits(features)):
            probs = softmax(logits.astype(np.float64))
            if self.head == "sequence":
                best = int(probs.argmax())
                results.append({"label": self.labels[best], "score": round(float(probs[best]), 6)})
            else:
                results.append(self._token_result(text, feature, probs))
        return results

    def _token_result(self, text: str, feature: Features, probs: np.ndarray) -> dict:
        positions = [(p, index) for p, index in enumerate(feature.labels) if index != IGNORE]
        tokens = []
        for p, index in positions:
            best = int(probs[p].argmax())
            tokens.append({"token": text[index], "start": index, "label": self.labels[best],
                           "score": round(float(probs[p, best]), 6)})
        kept_last = positions[-1][1] if positions else -1
        truncated = any(not ch.isspace() for ch in text[kept_last + 1:])
        return {"tokens": tokens, "entities": bio_entities(tokens, text), "truncated": truncated}


def bio_entities(tokens: List[dict], text: str) -> List[dict]:
    """Entities from per-character BIO labels (``B-PER I-PER`` ...), via seqeval; none when
    the labels are not BIO (segmentation, POS)."""
    labels = [t["label"] for t in tokens]
    if not any(label.startswith(("B-", "I-")) for label in labels):
        return []
    from seqeval.metrics.sequence_labeling import get_entities

    entities = []
    for kind, first, last in get_entities(labels):
        start, end = tokens[first]["start"], tokens[last]["start"] + 1
        entities.append({"type": kind, "text": text[start:end], "start": start, "end": end})
    return entities


def predictor_from_args(args, **options) -> Predictor:
    """The Predictor that ``add_backend_arguments``' flags (and ``--model_dir``, ``--batch_size``) ask for,
    with PaddleNLP's notices quietened; BackendFlagsError before anything loads if the flags clash."""
    from paddlenlp.utils.log import logger as paddlenlp_logger

    backend = backend_options(args)
    paddlenlp_logger.set_level("WARNING")
    return Predictor(args.model_dir, backend=args.backend, batch_size=args.batch_size, **options, **backend)

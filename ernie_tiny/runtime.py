"""Process set-up: CPU threads, device, seeds, RNG state, data parallelism and AMP.

``configure_threads`` must run before Paddle is first imported (Paddle sets
``OMP_NUM_THREADS=1`` at import when it is unset), so this module imports no Paddle at import
time (only the standard library and ``ernie_tiny.config``); its functions import it lazily.
"""
from __future__ import annotations

import contextlib
import os
import random
import sys
from dataclasses import dataclass

from ernie_tiny.config import ConfigError  # standard library, pydantic and yaml only: no Paddle


def local_world_size() -> int:
    """Processes on this machine, as ``paddle.distributed.launch`` reports them (1 if not launched)."""
    for name in ("PADDLE_LOCAL_SIZE", "PADDLE_TRAINERS_NUM"):
        if os.environ.get(name, "").isdigit():
            return max(1, int(os.environ[name]))
    return 1


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask, else the machine's count)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def inference_threads() -> int:
    """The deployment backends' thread count when none is given: ``OMP_NUM_THREADS`` when set,
    else the available cores."""
    if os.environ.get("OMP_NUM_THREADS", "").isdigit():
        return int(os.environ["OMP_NUM_THREADS"])
    return available_cores()


def configure_threads(num_threads: int = 0) -> int:
    """Set the CPU thread count for Paddle's kernels: ``num_threads``, or (0) the available
    cores shared among this machine's ranks. Returns the count; warns if Paddle was
    imported already (then it may not take effect)."""
    if num_threads <= 0:
        num_threads = max(1, available_cores() // local_world_size())
    if "paddle" in sys.modules and os.environ.get("OMP_NUM_THREADS") != str(num_threads):
        print(f"warning: Paddle was imported before the thread count was set; OMP_NUM_THREADS="
              f"{os.environ.get('OMP_NUM_THREADS')} stays", file=sys.stderr)
    os.environ["OMP_NUM_THREADS"] = str(num_threads)
    os.environ.setdefault("MKL_NUM_THREADS", str(num_threads))
    configure_mkl_for_cpu()
    return num_threads


def mkl_cpu_type_for(cpuinfo: str) -> str:
    """``"5"`` (MKL's AVX2 code path) for an AMD CPU with AVX2, else ``""``.

    Paddle's CPU wheel does its eager matmuls with Intel MKL (``libmklml_intel``), which on
    AMD CPUs takes a generic code path unless ``MKL_DEBUG_CPU_TYPE=5`` asks for its AVX2 one
    (on an AMD EPYC, 2 threads, 2026-12-01: Paddle's eager 2048^3 float32 matmul 49 -> 120 GFLOP/s
    in ``tools/benchmark.py distill``; see docs/results/distill_speed/). Newer MKL releases ignore
    the variable; Paddle Inference's oneDNN kernels do not use MKL's GEMM."""
    flags = next((line.split(":", 1)[1].split() for line in cpuinfo.splitlines() if line.startswith("flags")), [])
    vendor = next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("vendor_id")), "")
    return "5" if vendor == "AuthenticAMD" and "avx2" in flags else ""


def configure_mkl_for_cpu(cpuinfo_path: str = "/proc/cpuinfo") -> str:
    """Set ``MKL_DEBUG_CPU_TYPE`` for this CPU (see ``mkl_cpu_type_for``) unless it is set
    already, before Paddle (and MKL) load. Returns the value in force ("" for none)."""
    if "MKL_DEBUG_CPU_TYPE" not in os.environ:
        try:
            with open(cpuinfo_path, encoding="utf-8", errors="replace") as f:
                value = mkl_cpu_type_for(f.read(200_000))
        except OSError:
            value = ""
        if value:
            os.environ["MKL_DEBUG_CPU_TYPE"] = value
    return os.environ.get("MKL_DEBUG_CPU_TYPE", "")


@dataclass
class Runtime:
    device: str
    rank: int
    world_size: int

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        if self.distributed:
            import paddle.distributed as dist

            dist.barrier()


def gpu_device_id(environ=None) -> int:
    """This process's GPU: the first entry of ``FLAGS_selected_gpus`` (0 when unset).

    ``paddle.distributed.launch`` sets ``FLAGS_selected_gpus`` for each process, counted within
    ``CUDA_VISIBLE_DEVICES`` (``--gpus 4,5,6,7``: rank 2 gets ``6``), and does not set
    ``CUDA_VISIBLE_DEVICES``; ``PADDLE_LOCAL_RANK`` is only the process's index on the node,
    so it names the wrong GPU whenever ``--gpus`` does not start at 0. This is the rule of
    ``paddle.distributed.ParallelEnv().device_id`` (paddle/distributed/parallel.py), applied
    here before ``init_parallel_env`` and in processes that never call it (evaluation)."""
    environ = os.environ if environ is None else environ
    first = environ.get("FLAGS_selected_gpus", "").split(",")[0].strip()
    if not first:
        return 0
    if not first.isdigit():
        raise RuntimeError(f"FLAGS_selected_gpus={environ['FLAGS_selected_gpus']!r} is not a list of GPU ids")
    return int(first)


def select_device(requested: str) -> str:
    """``Global.device`` ('auto', 'cpu', 'gpu') -> the device this process runs on, set as Paddle's."""
    import paddle

    has_gpu = paddle.device.is_compiled_with_cuda() and paddle.device.cuda.device_count() > 0
    if requested == "gpu" and not has_gpu:
        raise RuntimeError("Global.device is 'gpu' but this Paddle has no usable GPU (install paddlepaddle-gpu)")
    device = "gpu" if requested == "gpu" or (requested == "auto" and has_gpu) else "cpu"
    if device == "gpu":
        paddle.set_device(f"gpu:{gpu_device_id()}")
    else:
        paddle.set_device("cpu")
    return device


def init_runtime(device: str = "auto", join_group: bool = True) -> Runtime:
    """Pick the device and, when launched with several processes, join the process group
    (unless ``join_group`` is False: ranks that share work through the file system only)."""
    import paddle.distributed as dist

    chosen = select_device(device)
    world = dist.get_world_size()
    if world > 1 and join_group:
        dist.init_parallel_env()
    return Runtime(device=chosen, rank=dist.get_rank(), world_size=world)


def start_stage(config, *, paddlenlp_log: str = "WARNING", join_group: bool = True, device: str = ""):
    """What every stage's ``run`` does first: quiet PaddleNLP's per-file INFO lines (they drown
    the progress bar; ``paddlenlp_log``), pick the device (``Global.device``, or ``device``) and
    join the process group (``join_group``), refuse ``Train.amp`` the GPU cannot run, and seed.
    Nothing is written: the stage reads its inputs (tokenizer, corpus, task data, models) and then
    calls ``open_output_dir``, so bad input leaves the output directory as it was. Returns
    (runtime, output dir)."""
    from pathlib import Path

    from paddlenlp.utils.log import logger as paddlenlp_logger

    paddlenlp_logger.set_level(paddlenlp_log)
    rt = init_runtime(device or config.Global.device, join_group)
    train = getattr(config, "Train", None)
    if rt.device == "gpu" and getattr(train, "amp", "off") != "off":
        resolve_amp(train.amp, rt.device)  # refused now, before any data is prepared (the Trainer asks again)
    seed_everything(config.Global.seed)
    return rt, Path(config.Global.output_dir)


def open_output_dir(config, rt) -> "Path":
    """Once the inputs are known good: create the output directory with the resolved config in
    it (main rank), and check that every rank sees that directory."""
    from pathlib import Path

    from ernie_tiny.config import dump_config

    output_dir = Path(config.Global.output_dir)
    if rt.is_main:
        output_dir.mkdir(parents=True, exist_ok=True)
        dump_config(config, output_dir / "config.yaml")
    check_shared_output_dir(rt, output_dir)
    return output_dir


class SharedStorageError(RuntimeError):
    """The ranks of a run do not see one and the same output directory."""


def check_shared_output_dir(rt: Runtime, output_dir) -> None:
    """Stop at start-up, on every rank, unless every rank sees the output directory rank 0
    made: rank 0 writes a marker with a fresh random token, all ranks check they read that
    token, and all learn who did not (one all_gather). Every rank writes its RNG state into
    checkpoint folders only rank 0 creates, and reads the checkpoint rank 0 picked; on
    nodes without a shared ``Global.output_dir`` that would fail hours in, at the first save."""
    if not rt.distributed:
        return
    import secrets
    from pathlib import Path

    import paddle
    import paddle.distributed as dist

    marker = Path(output_dir) / ".shared_storage_check"
    expected = str(broadcast_int(rt, secrets.randbits(62) if rt.is_main else 0))
    if rt.is_main:
        marker.write_text(expected)
    rt.barrier()
    try:
        seen = marker.read_text().strip() == expected
    except OSError:
        seen = False
    answers = []
    dist.all_gather(answers, paddle.to_tensor([int(seen)], dtype="int64"))
    blind = [r for r, answer in enumerate(answers) if not int(answer.numpy()[0])]
    rt.barrier()
    if rt.is_main:
        marker.unlink(missing_ok=True)
    if blind:
        import socket

        raise SharedStorageError(
            f"Global.output_dir {output_dir}: rank(s) {', '.join(map(str, blind))} of {rt.world_size} do not see "
            f"the marker rank 0 wrote there (this is rank {rt.rank} on {socket.gethostname()}). Every rank writes "
            f"checkpoints into and resumes from this directory: on several machines put Global.output_dir "
            f"on storage all of them mount at the same path (NFS, a parallel file system), or run on one machine.")


def broadcast_int(rt: Runtime, value: int) -> int:
    """Rank 0's ``value`` on every rank (the value itself when not distributed)."""
    if not rt.distributed:
        return value
    import paddle
    import paddle.distributed as dist

    tensor = paddle.to_tensor([value], dtype="int64")
    dist.broadcast(tensor, src=0)
    return int(tensor.numpy()[0])


def seed_everything(seed: int) -> None:
    import numpy as np
    import paddle

    random.seed(seed)
    np.random.seed(seed)
    paddle.seed(seed)


def _generator_to_json(state) -> list:
    """A Paddle ``GeneratorState`` as JSON values: [device, seed, offset, engine text] (its own
    pickle tuple, ``GeneratorState.__getstate__``, with the engine's bytes as text)."""
    device, seed, offset, engine = state.__getstate__()
    return [device, seed, offset, bytes(engine).decode("latin-1")]


def _generator_from_json(values: list):
    from paddle.base import core

    device, seed, offset, engine = values
    state = core.GeneratorState.__new__(core.GeneratorState)  # what unpickling does, minus pickle
    state.__setstate__((device, seed, offset, list(engine.encode("latin-1"))))
    return state


def rng_state() -> dict:
    """This process's random state as plain JSON values: Python's, NumPy's, Paddle's CPU
    generator and, on GPU, the generator of this process's own GPU only.

    Not ``paddle.get_rng_state()``: on GPU that returns every visible GPU's generator and not
    the CPU one, and ``paddle.set_rng_state`` refuses a list of another length, so a run saved
    on 8 GPUs could not resume on 4, under another ``CUDA_VISIBLE_DEVICES``, or on CPU
    (paddle/framework/random.py)."""
    import numpy as np
    import paddle
    from paddle.base import core

    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"device": paddle.get_device(), "python": [version, list(internal), gauss],
             "numpy": [kind, keys.tolist(), pos, has_gauss, cached],
             "paddle_cpu": _generator_to_json(core.default_cpu_generator().get_state())}
    if state["device"].startswith("gpu"):
        state["paddle_gpu"] = _generator_to_json(core.default_cuda_generator(gpu_device_id()).get_state())
    return state


def set_rng_state(state: dict) -> list:
    """Restore what ``rng_state`` saved; returns what could not be restored (empty: everything).
    A GPU state goes to this process's own GPU, whichever index that has now."""
    import numpy as np
    import paddle
    from paddle.base import core

    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    core.default_cpu_generator().set_state(_generator_from_json(state["paddle_cpu"]))
    on_gpu = paddle.get_device().startswith("gpu")
    if "paddle_gpu" in state and on_gpu:
        core.default_cuda_generator(gpu_device_id()).set_state(_generator_from_json(state["paddle_gpu"]))
    elif "paddle_gpu" in state:
        return [f"the GPU generator (saved on {state['device']}; this run is on {paddle.get_device()})"]
    elif on_gpu:
        return [f"the GPU generator (the checkpoint was saved on {state['device']}; it keeps this run's seed)"]
    return []


class AmpUnsupportedError(ConfigError):
    """``Train.amp`` asks for a half precision this GPU cannot run (a config error: the tools
    print it as one and exit with status 2)."""


def check_amp_supported(amp: str, fp16: bool, bf16: bool, gpu: str = "this GPU") -> None:
    """Refuse ``Train.amp`` when the GPU lacks it. Paddle's ``auto_cast`` would otherwise switch
    itself off with only a warning (fp16 below compute capability 7.0, bf16 below 8.0 or
    without CUDA 11: paddle/amp/auto_cast.py, ``amp_guard``), and the run would train in
    float32 at about half the planned speed. ``fp16``/``bf16``: what the GPU supports."""
    supported = {"fp16": fp16, "bf16": bf16}
    if amp == "off" or supported[amp]:
        return
    can = [name for name, ok in supported.items() if ok]
    raise AmpUnsupportedError(
        f"Train.amp={amp}: {gpu} does not support {amp} ({'it supports ' + ' and '.join(can) if can else 'it supports neither fp16 nor bf16'}; "
        f"fp16 needs compute capability 7.0+, bf16 8.0+ and CUDA 11+). Set Train.amp to "
        f"{' or '.join(repr(c) for c in can + ['off'])}.")


def gpu_description() -> str:
    import paddle

    major, minor = paddle.device.cuda.get_device_capability()
    return f"{paddle.device.cuda.get_device_name()} (compute capability {major}.{minor})"


def resolve_amp(amp: str, device: str) -> str:
    """The AMP mode the loop uses: on GPU ``amp`` itself, refused (``AmpUnsupportedError``) if
    the GPU cannot run it; on CPU 'off', with a warning (Paddle's autocast runs on GPU only)."""
    if amp != "off" and device != "gpu":
        print(f"warning: Train.amp={amp} needs a GPU; training in float32 on {device}", file=sys.stderr)
        return "off"
    if amp != "off":
        check_amp_supported(amp, *gpu_half_precision_support(), gpu_description())
    return amp


def gpu_half_precision_support() -> tuple:
    """(fp16, bf16) as ``paddle.amp.auto_cast`` decides them for this GPU. Its own tests
    (``_is_gpu_float16_supported``: capability 7.0+; ``_is_gpu_bfloat16_supported``: 8.0+ and
    CUDA 11+) are stricter than ``paddle.amp.is_float16_supported()``, which accepts 5.3+
    (Paddle's pybind): on a 6.x GPU that one says yes while autocast turns fp16 off. Both
    must agree."""
    import importlib

    import paddle

    amp_module = importlib.import_module("paddle.amp.auto_cast")  # the module; paddle.amp.auto_cast is the function
    same_as_autocast = lambda name: getattr(amp_module, name, lambda: True)()  # noqa: E731
    fp16 = paddle.amp.is_float16_supported() and same_as_autocast("_is_gpu_float16_supported")
    bf16 = paddle.amp.is_bfloat16_supported() and same_as_autocast("_is_gpu_bfloat16_supported")
    return fp16, bf16


def autocast(amp: str):
    """The forward-pass context for ``amp`` in {'off', 'fp16', 'bf16'}."""
    if amp == "off":
        return contextlib.nullcontext()
    import paddle

    return paddle.amp.auto_cast(level="O1", dtype="float16" if amp == "fp16" else "bfloat16")


def thread_count() -> int:
    """The CPU threads this process runs its kernels with (``configure_threads`` set them)."""
    value = os.environ.get("OMP_NUM_THREADS", "")
    return int(value) if value.isdigit() and int(value) > 0 else 1

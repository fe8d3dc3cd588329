"""Process set-up: CPU threads, device, seeds, RNG state, data parallelism and AMP.

``configure_threads`` must run before Paddle is first imported (Paddle sets
``OMP_NUM_THREADS=1`` at import when it is unset), so it and ``local_world_size`` use only
the standard library; everything else imports Paddle lazily.
"""
from __future__ import annotations

import contextlib
import os
import random
import sys
from dataclasses import dataclass


def local_world_size() -> int:
    """Processes on this machine, as ``paddle.distributed.launch`` reports them (1 if not launched)."""
    for name in ("PADDLE_LOCAL_SIZE", "PADDLE_TRAINERS_NUM"):
        if os.environ.get(name, "").isdigit():
            return max(1, int(os.environ[name]))
    return 1


def configure_threads(num_threads: int = 0) -> int:
    """Set the CPU thread count for Paddle's kernels: ``num_threads``, or (0) the available
    cores shared among this machine's ranks. Returns the count; warns if Paddle was
    imported already (then it may not take effect)."""
    if num_threads <= 0:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        num_threads = max(1, cores // local_world_size())
    if "paddle" in sys.modules and os.environ.get("OMP_NUM_THREADS") != str(num_threads):
        print(f"warning: Paddle was imported before the thread count was set; OMP_NUM_THREADS="
              f"{os.environ.get('OMP_NUM_THREADS')} stays", file=sys.stderr)
    os.environ["OMP_NUM_THREADS"] = str(num_threads)
    os.environ.setdefault("MKL_NUM_THREADS", str(num_threads))
    return num_threads


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


def select_device(requested: str) -> str:
    import paddle

    has_gpu = paddle.device.is_compiled_with_cuda() and paddle.device.cuda.device_count() > 0
    if requested == "gpu" and not has_gpu:
        raise RuntimeError("Global.device is 'gpu' but this Paddle has no usable GPU (install paddlepaddle-gpu)")
    device = "gpu" if requested == "gpu" or (requested == "auto" and has_gpu) else "cpu"
    if device == "gpu":
        local_rank = int(os.environ.get("PADDLE_LOCAL_RANK", os.environ.get("FLAGS_selected_gpus", "0") or 0))
        paddle.set_device(f"gpu:{local_rank}")
    else:
        paddle.set_device("cpu")
    return device


def init_runtime(device: str = "auto") -> Runtime:
    """Pick the device and, when launched with several processes, join the process group."""
    import paddle.distributed as dist

    chosen = select_device(device)
    world = dist.get_world_size()
    if world > 1:
        dist.init_parallel_env()
    return Runtime(device=chosen, rank=dist.get_rank(), world_size=world)


def start_stage(config):
    """What every training stage does first: quiet PaddleNLP's per-file INFO lines (they drown
    the progress bar), pick the device and join the process group, create the output directory
    with the resolved config in it (main rank), and seed. Returns (runtime, output dir)."""
    from pathlib import Path

    from paddlenlp.utils.log import logger as paddlenlp_logger

    from ernie_tiny.config import dump_config

    paddlenlp_logger.set_level("WARNING")
    rt = init_runtime(config.Global.device)
    output_dir = Path(config.Global.output_dir)
    if rt.is_main:
        output_dir.mkdir(parents=True, exist_ok=True)
        dump_config(config, output_dir / "config.yaml")
    seed_everything(config.Global.seed)
    return rt, output_dir


def seed_everything(seed: int) -> None:
    import numpy as np
    import paddle

    random.seed(seed)
    np.random.seed(seed)
    paddle.seed(seed)


def rng_state() -> dict:
    import numpy as np
    import paddle

    state = {"python": random.getstate(), "numpy": np.random.get_state(), "paddle": paddle.get_rng_state()}
    if paddle.device.is_compiled_with_cuda() and paddle.device.cuda.device_count() > 0:
        state["cuda"] = paddle.get_cuda_rng_state()
    return state


def set_rng_state(state: dict) -> None:
    import numpy as np
    import paddle

    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    paddle.set_rng_state(state["paddle"])
    if "cuda" in state and paddle.device.is_compiled_with_cuda():
        paddle.set_cuda_rng_state(state["cuda"])


def resolve_amp(amp: str, device: str) -> str:
    """AMP runs on GPU only; on CPU it falls back to float32 with a warning."""
    if amp != "off" and device != "gpu":
        print(f"warning: Train.amp={amp} needs a GPU; training in float32 on {device}", file=sys.stderr)
        return "off"
    return amp


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

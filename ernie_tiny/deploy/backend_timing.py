"""What ``auto`` runs: every CPU backend of an export timed on this machine, and the fastest
that passed the export's checks.

The right backend depends on the CPU (int8 pays on AVX-512 VNNI, not on AVX2 only; fusion
gains more where plain onnxruntime leaves more of the matmul rate unused), so the export
times each backend at batch 1 and a larger batch at the task's length and writes
``deploy.json``'s ``timing`` (the CPU's instruction sets, the shapes, the median milliseconds
per backend and shape, and the choice). ``auto`` takes the fp32 choice, or the overall one
when the user allows reduced precision (int8, and bf16 where the CPU has it: ``--allow_int8``). Timings are medians of back-to-back calls (sleeping between calls
slows onnxruntime's batch-1 latency); on a shared machine they are noisy, so each run records
its own.
"""
from __future__ import annotations

import math
import time
from typing import Callable, Dict, List, Sequence

import numpy as np

# /proc/cpuinfo flags -> the names reported (instruction sets the runtimes' kernels pick from)
CPU_FLAGS = {"avx2": "AVX2", "fma": "FMA", "avx512f": "AVX-512F", "avx512bw": "AVX-512BW",
             "avx512_vnni": "AVX-512 VNNI", "avx_vnni": "AVX-VNNI", "avx512_bf16": "AVX-512 BF16",
             "amx_tile": "AMX", "amx_int8": "AMX-INT8", "amx_bf16": "AMX-BF16"}
# backends that compute in lower precision than fp32, scored against fp32 at export instead of
# matching eager to a tolerance: auto takes them only when allowed (``--allow_int8``)
REDUCED_PRECISION = ("onnx-int8", "openvino-int8", "openvino-bf16")
# Seconds to rest before timing a runtime in a process where another one just ran: worker
# threads spin for a while after a call (Intel OpenMP's, under Paddle, 200 ms by default:
# KMP_BLOCKTIME; onnxruntime's default session's; OpenVINO's) and take the cores from whatever
# runs next. Measured here (2026-12-01, 1 x 128): onnxruntime's default session took 19.5 ms
# after a 50 ms rest following Paddle, 5.7 ms timed apart.
SPIN_PAUSE = 0.3


def cpu_features(cpuinfo_path: str = "/proc/cpuinfo") -> dict:
    """``{"model": ..., "instruction_sets": [...], "vnni": bool}`` from ``/proc/cpuinfo`` (empty
    where it cannot be read: another OS)."""
    try:
        text = open(cpuinfo_path, encoding="utf-8", errors="replace").read()
    except OSError:
        return {"model": "", "instruction_sets": [], "vnni": False}
    fields = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    flags = set(fields.get("flags", "").split())
    found = [name for flag, name in CPU_FLAGS.items() if flag in flags]
    return {"model": fields.get("model name", ""), "instruction_sets": found,
            "vnni": bool(flags & {"avx512_vnni", "avx_vnni"})}


def timed_elsewhere_note(timing: dict, here: dict) -> str:
    """A note when ``timing`` (deploy.json's) was measured on a CPU whose instruction sets
    differ from this one's (``here``: ``cpu_features()``): both sets; '' when they are the same
    or either is unknown."""
    measured = (timing or {}).get("cpu") or {}
    sets, ours = measured.get("instruction_sets") or [], here.get("instruction_sets") or []
    if not sets or not ours or set(sets) == set(ours):
        return ""
    return f"timed on a CPU with {' '.join(sets)}; this one has {' '.join(ours)}"


def export_cpu(info: dict) -> dict:
    """The CPU the export ran on (its checks and int8 / bf16 scores were taken there): its
    timing's, or after ``deploy/python/retime.py`` the replaced record's."""
    timing = info.get("timing") or {}
    return (timing.get("replaced") or timing).get("cpu") or {}


def int8_scored_elsewhere_note(backend: str, info: dict, here: dict) -> str:
    """A note for an int8 backend on a CPU without VNNI (``here``) whose int8 score was taken on
    one with VNNI: without it, the u8 x s8 products of onnxruntime's and oneDNN's int8 kernels
    sum in 16 bits and may saturate, which that score did not see; '' otherwise (or unknown)."""
    if "int8" not in backend or not export_cpu(info).get("vnni") or here.get("vnni") \
            or not here.get("instruction_sets"):
        return ""
    return ("int8 scored at export on a CPU with VNNI, this one has none (its int8 kernels may saturate where "
            "VNNI's do not: re-export here to score it)")


def timing_inputs(batch: int, length: int, vocab_size: int, seed: int = 0):
    """Full-length inputs (no padding): ids drawn past the special tokens, one segment."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(min(5, vocab_size - 1), vocab_size, size=(batch, length), dtype=np.int64)
    return ids, np.zeros_like(ids)


def warmup_calls(run: Callable, warmup: int) -> int:
    """Untimed calls before timing ``run``: ``warmup``, and at least as many as a backend that
    compiles a recurring shape on its own (OpenVINO's ``promote_after``) needs to have done so, so
    the compile is never timed."""
    return max(warmup, getattr(run, "promote_after", 0))


def median_ms(run: Callable, inputs, repeats: int, warmup: int) -> float:
    for _ in range(warmup):
        run(*inputs)
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        run(*inputs)
        samples.append((time.perf_counter() - start) * 1e3)
    return round(float(np.median(samples)), 3)


def time_backends(backends: Dict[str, Callable], shapes: Sequence[Sequence[int]], vocab_size: int,
                  repeats: int, warmup: int) -> Dict[str, List[float]]:
    """Median ms per backend per shape; the backends take turns shape by shape, on the same inputs."""
    out: Dict[str, List[float]] = {name: [] for name in backends}
    for batch, length in shapes:
        inputs = timing_inputs(batch, length, vocab_size)
        for name, run in backends.items():
            time.sleep(SPIN_PAUSE)
            out[name].append(median_ms(run, inputs, repeats, warmup_calls(run, warmup)))
    return out


def choose(ms: Dict[str, List[float]], allow_int8: bool) -> str:
    """The fastest backend over all timed shapes (geometric mean: each shape weighs the same as
    a ratio); int8 and bf16 (``REDUCED_PRECISION``) only if allowed."""
    allowed = {n: t for n, t in ms.items() if t and (allow_int8 or n not in REDUCED_PRECISION)}
    if not allowed:
        raise ValueError("no timed backend to choose from")
    return min(allowed, key=lambda n: (math.fsum(math.log(max(t, 1e-6)) for t in allowed[n]), n))


def timing_record(ms: Dict[str, List[float]], shapes, repeats: int) -> dict:
    """``deploy.json``'s ``timing``: machine, shapes, medians and ``auto``'s two choices."""
    return {"cpu": cpu_features(), "shapes": [list(s) for s in shapes], "repeats": repeats, "median_ms": ms,
            "auto": {"fp32": choose(ms, allow_int8=False), "int8": choose(ms, allow_int8=True)},
            "note": "measured at export on this machine; on another, re-time: "
                    "python deploy/python/retime.py --model_dir DIR"}

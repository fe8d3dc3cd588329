"""``auto``'s timings taken again on the machine that serves an export.

The export times every CPU backend on the machine that exports (``deploy.json`` ``timing``),
and ``auto`` runs the fastest of them. The fastest backend depends on the CPU (int8 pays with
VNNI, much less without; bf16 only where the CPU computes it), so a model exported on one
machine and served on another may run a backend that is not the fastest there; the predictor
says so when the instruction sets differ. This times the same backends on the same shapes
here and rewrites ``timing`` (atomically; the previous one's CPU and choices are kept under
``timing.replaced``):

    python deploy/python/retime.py --model_dir output/demo/export [--threads 2 --repeats 10]

Only timings are taken again: the accuracy checks and int8 / bf16 scores stay the export's.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Dict, Optional

from ernie_tiny.deploy.inference_dir import DEPLOY_FILE, read_deploy_info, write_deploy_info


def cpu_backends(directory: Path, info: dict, threads: int = 0, reuse: Optional[Dict[str, Callable]] = None) -> dict:
    """Every CPU backend of the inference directory this machine can run, by name (paddle, the
    onnxruntime models, the OpenVINO models the export checked); ``reuse``: backends already
    built over the same files (not OpenVINO's, whose per-shape models earlier calls used up)."""
    from ernie_tiny.deploy.predictor import (ONNX_FILES, OPENVINO_FILES, OnnxBackend, PaddleBackend, available,
                                             open_openvino)

    reuse = reuse or {}
    backends = {"paddle": reuse.get("paddle") or PaddleBackend(directory, threads=threads)}
    backends.update({name: reuse.get(name) or OnnxBackend(directory / info[key], threads=threads)
                     for name, key in ONNX_FILES.items() if info.get(key)})
    for name, key in OPENVINO_FILES.items():
        if available(name, info):
            backends[name] = open_openvino(name, directory / info[key], threads=threads)
    return backends


def time_and_record(backends: dict, shapes, vocab_size: int, repeats: int, warmup: int) -> dict:
    """``deploy.json``'s ``timing`` from ``backends`` timed on ``shapes``; prints each one's times
    and ``auto``'s choices."""
    from ernie_tiny.deploy.backend_timing import time_backends, timing_record

    ms = time_backends(backends, shapes, vocab_size, repeats, warmup)
    record = timing_record(ms, shapes, repeats)
    for name, times in ms.items():
        print(f"timing {name}: " + ", ".join(f"{b}x{n} {t:g} ms" for (b, n), t in zip(shapes, times)), flush=True)
    print(f"auto: {record['auto']['fp32']} (fp32), {record['auto']['int8']} (int8 and bf16 allowed); CPU "
          f"{' '.join(record['cpu']['instruction_sets']) or 'unknown'}", flush=True)
    return record


def retime(model_dir: str | Path, threads: int = 0, repeats: int = 10, warmup: int = 2) -> dict:
    """Times ``model_dir``'s backends here on the shapes the export timed, and rewrites its
    ``deploy.json`` ``timing``; returns the new record."""
    from ernie_tiny.deploy.inputs import DeployInputError

    model_dir = Path(model_dir)
    info = read_deploy_info(model_dir)
    old = info.get("timing")
    if not old or not old.get("shapes"):
        raise DeployInputError(f"{model_dir / DEPLOY_FILE}: no timing to take again (exported with "
                               f"Export.timing_repeats: 0); re-export with timing on")
    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    shapes = [tuple(shape) for shape in old["shapes"]]
    record = time_and_record(cpu_backends(model_dir, info, threads), shapes, config["vocab_size"], repeats, warmup)
    record["note"] = "measured again here by deploy/python/retime.py (the export's timing: replaced)"
    record["replaced"] = {key: old[key] for key in ("cpu", "median_ms", "auto") if key in old}
    info["timing"] = record
    write_deploy_info(model_dir, info)
    return record

"""Timing runs over an inference directory's CPU backends: the export's (``tools/export.py``
writes ``deploy.json`` ``timing``), and again on the machine that serves it
(``deploy/python/retime.py``).

The fastest backend depends on the CPU (int8 pays with VNNI, much less without; bf16 only where
the CPU computes it), so a model exported on one machine and served on another may run a
backend that is not the fastest there; the predictor says so when the instruction sets differ.
``retime`` times the backends this machine runs, on the export's shapes, and rewrites
``timing`` whole (the export's own record kept under ``timing.replaced``, however often it is
run). Only timings are taken again: the accuracy checks and the int8 / bf16 scores stay the
export's.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable, Dict, Optional

from ernie_tiny.deploy.inference_dir import DEPLOY_FILE, read_deploy_info, write_deploy_info
from ernie_tiny.deploy.inputs import DeployInputError
from ernie_tiny.errors import describe


def cpu_backends(directory: Path, info: dict, threads: int = 0, reuse: Optional[Dict[str, Callable]] = None) -> dict:
    """Every CPU backend of the inference directory this machine can run, by name (paddle, the
    onnxruntime models, the OpenVINO models the export checked, where the package is installed
    and, for bf16, the CPU computes it); ``reuse``: backends already built over the same files
    (not OpenVINO's, whose per-shape models earlier calls used up)."""
    from ernie_tiny.deploy.backends import (ONNX_FILES, OPENVINO_FILES, OnnxBackend, PaddleBackend, available, loaded,
                                            open_openvino)
    from ernie_tiny.deploy.inference_dir import model_file

    reuse = reuse or {}
    backends = {"paddle": reuse.get("paddle") or loaded(model_file(directory, info["paddle"]["params"]),
                                                        lambda: PaddleBackend(directory, threads=threads))}
    for name, key in ONNX_FILES.items():
        if info.get(key):
            path = model_file(directory, info[key])
            backends[name] = reuse.get(name) or loaded(path, lambda: OnnxBackend(path, threads=threads))
    for name, key in OPENVINO_FILES.items():
        if available(name, info):
            path = model_file(directory, info[key])
            backends[name] = loaded(path, lambda: open_openvino(name, path, threads=threads))
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
    ``deploy.json`` ``timing``; returns the new record. A directory it cannot use (no timing,
    no config.json, not writable) is a ``DeployInputError``, raised before any timing."""
    model_dir = Path(model_dir)
    info = read_deploy_info(model_dir)
    old = info.get("timing")
    if not old or not old.get("shapes"):
        raise DeployInputError(f"{model_dir / DEPLOY_FILE}: no timing to take again (exported with "
                               f"Export.timing_repeats: 0); re-export with timing on")
    try:
        vocab_size = int(json.loads((model_dir / "config.json").read_text(encoding="utf-8"))["vocab_size"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise DeployInputError(f"{model_dir / 'config.json'}: the model's config with its vocab_size is needed "
                               f"({describe(err)}); re-export it with tools/export.py") from None
    if not os.access(model_dir, os.W_OK) or not os.access(model_dir / DEPLOY_FILE, os.W_OK):
        raise DeployInputError(f"{model_dir}: not writable, so its {DEPLOY_FILE} cannot be rewritten (retime a copy: "
                               f"cp -r {model_dir} DIR)")
    shapes = [tuple(shape) for shape in old["shapes"]]
    record = time_and_record(cpu_backends(model_dir, info, threads), shapes, vocab_size, repeats, warmup)
    record["note"] = "measured again here by deploy/python/retime.py (the export's timing: replaced)"
    record["replaced"] = old.get("replaced") or {key: old[key] for key in ("cpu", "median_ms", "auto") if key in old}
    info["timing"] = record
    try:
        write_deploy_info(model_dir, info)
    except OSError as err:
        raise DeployInputError(f"{model_dir / DEPLOY_FILE}: cannot be rewritten ({err.strerror or err})") from None
    return record

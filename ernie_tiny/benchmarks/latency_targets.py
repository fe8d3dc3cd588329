"""The deployment targets (issue 14), judged from one ``tools/benchmark.py latency`` run.

The targets are ratios to runtimes timed in the same run, because absolute times on shared
machines drift; which ones apply depends on the CPU's instruction sets:

* fp32 (what ``auto`` runs), at 1 x 128 and 32 x 128: no slower than the fastest fp32 peer a
  user would pick instead (plain onnxruntime, ``ort-defaults``; plain OpenVINO in fp32,
  ``ov-fp32``), and on a CPU with AVX-512 at most 0.75x plain onnxruntime;
* int8, at 1 x 128: at most 0.45x plain onnxruntime on a CPU with VNNI (AVX-512 VNNI or
  AVX-VNNI), at most 0.7x without; its dev metric within 0.5 points of fp32's;
* size: the pruned int8 model file at most 1/6 of the unpruned fp32 parameters.

A ratio is judged by its per-round median (``per_round_ratios``: each round of turns pairs the
runtime's calls with its peer's in the same round, so load that changes between rounds moves
both alike); the whole run's median ratio is shown beside it. A target whose runtimes or shape
were not in the run is "not measured", never met.
"""
from __future__ import annotations

import numpy as np

from ernie_tiny.benchmarks.turns import per_round_ratios

FP32_SHAPES = ((1, 128), (32, 128))
INT8_SHAPE = (1, 128)
FP32_MAX_WITH_AVX512 = 0.75
INT8_MAX = {"vnni": 0.45, "no_vnni": 0.70}
INT8_RUNTIMES = ("onnx-int8", "openvino-int8")
MAX_METRIC_DROP = 0.5
MAX_SIZE_FRACTION = 1 / 6


def judge(measured: list, info: dict, cpu: dict, block: int, baseline: str, fp32_peer: str) -> list:
    """The verdicts: ``[{"target", "measured", "met"}]`` (``met`` None: not measured in this
    run). ``measured``: ``[(batch, seq, {runtime: [seconds, ...]})]`` as ``measure`` timed them;
    ``info``: the export's ``deploy.json``; ``cpu``: ``cpu_features()``; ``baseline`` and
    ``fp32_peer``: the runtimes that are plain onnxruntime and plain OpenVINO in fp32."""
    times = {(batch, seq): shape_times for batch, seq, shape_times in measured}
    peers = (baseline, fp32_peer)
    avx512 = "AVX-512F" in cpu.get("instruction_sets", ())
    verdicts = []
    for shape in FP32_SHAPES:
        verdicts.append(_ratio_verdict(times.get(shape), "auto", peers, 1.0, shape, block,
                                       "auto (fp32) no slower than the fastest of plain onnxruntime and plain OpenVINO "
                                       "(fp32)"))
        if avx512:
            verdicts.append(_ratio_verdict(times.get(shape), "auto", (baseline,), FP32_MAX_WITH_AVX512, shape, block,
                                           f"auto (fp32) at most {FP32_MAX_WITH_AVX512}x plain onnxruntime "
                                           f"(CPU with AVX-512)"))
    if not cpu.get("instruction_sets"):  # another OS, or no flags line: which targets apply is unknown
        verdicts.append({"target": "the targets that depend on the CPU (fp32 with AVX-512; int8 with and without VNNI)",
                         "measured": "not judged: this CPU's instruction sets are unknown (no /proc/cpuinfo flags)",
                         "met": None})
        return verdicts + _accuracy_verdicts(info) + _size_verdicts(info)
    vnni = bool(cpu.get("vnni"))
    limit = INT8_MAX["vnni" if vnni else "no_vnni"]
    shape_times = times.get(INT8_SHAPE) or {}
    int8 = [name for name in INT8_RUNTIMES if name in shape_times]
    best = min(int8, key=lambda name: _per_round_median(shape_times[name], shape_times.get(baseline), block)
               if baseline in shape_times else 0.0, default=None)
    verdicts.append(_ratio_verdict(shape_times, best or "an int8 runtime", (baseline,), limit, INT8_SHAPE, block,
                                   f"int8 at most {limit}x plain onnxruntime fp32 (CPU "
                                   f"{'with' if vnni else 'without'} VNNI)"))
    verdicts.extend(_accuracy_verdicts(info))
    verdicts.extend(_size_verdicts(info))
    return verdicts


def _per_round_median(samples, peer, block: int) -> float:
    return float(np.median(per_round_ratios(samples, peer, block)))


def _ratio_verdict(shape_times, runtime, peers, limit: float, shape, block: int, target: str) -> dict:
    label = f"{target}, {shape[0]} x {shape[1]}"
    if not shape_times:
        return {"target": label, "measured": f"not measured ({shape[0]} x {shape[1]} not in this run)", "met": None}
    missing = [name for name in (runtime, *peers) if name not in shape_times]
    if missing:
        return {"target": label, "measured": f"not measured ({', '.join(str(m) for m in missing)} not in this run)",
                "met": None}
    ratios = {peer: (_per_round_median(shape_times[runtime], shape_times[peer], block),
                     float(np.median(shape_times[runtime]) / np.median(shape_times[peer]))) for peer in peers}
    text = "; ".join(f"{runtime} / {peer} {per_round:.2f}x per round ({whole:.2f}x of the run's medians)"
                     for peer, (per_round, whole) in ratios.items())
    return {"target": label, "measured": text, "met": all(per_round <= limit for per_round, _ in ratios.values())}


def _accuracy_verdicts(info: dict) -> list:
    """Each int8 model the export scored, against the fp32 model as trained (the unpruned one
    when the vocabulary was pruned, so pruning's own change counts too)."""
    record = info.get("int8") or {}
    pruning = info.get("vocab_pruning") or {}
    reference, against = ((pruning["unpruned"], "unpruned fp32") if pruning.get("unpruned") is not None
                          else (record.get("fp32"), "fp32"))
    verdicts = []
    for name in INT8_RUNTIMES:
        score = ((record.get("runtimes") or {}).get(name) or {}).get("score")
        target = f"{name} dev {record.get('metric', 'metric')} within {MAX_METRIC_DROP} points of {against}"
        if score is None or reference is None:
            verdicts.append({"target": target, "measured": "not scored by this export", "met": None})
            continue
        verdicts.append({"target": target, "measured": f"{score:.1f} vs {reference:.1f}",
                         "met": reference - score <= MAX_METRIC_DROP})
    return verdicts


def _size_verdicts(info: dict) -> list:
    pruning = info.get("vocab_pruning") or {}
    sizes = info.get("sizes_mb") or {}
    before = pruning.get("params_mb_before")
    verdicts = []
    for key in ("onnx_int8", "openvino_int8"):
        name = info.get(key)
        target = f"{name or key} (pruned, int8) at most 1/{round(1 / MAX_SIZE_FRACTION)} of the unpruned fp32 parameters"
        if not (before and name and sizes.get(name)):
            why = "the export did not prune its vocabulary" if not before else "no such file in the export"
            verdicts.append({"target": target, "measured": f"not measured ({why})", "met": None})
            continue
        verdicts.append({"target": target, "measured": f"{sizes[name]:g} of {before:g} MB (1/{before / sizes[name]:.1f})",
                         "met": sizes[name] <= before * MAX_SIZE_FRACTION})
    return verdicts


def format_targets(verdicts: list) -> str:
    """The Markdown section the latency report ends with."""
    marks = {True: "met", False: "**missed**", None: "not measured"}
    lines = ["## Targets", "",
             "Judged by each ratio's per-round median (`ernie_tiny/benchmarks/latency_targets.py`).", "",
             "| target | measured | verdict |", "|---|---|---|"]
    lines += [f"| {v['target']} | {v['measured']} | {marks[v['met']]} |" for v in verdicts]
    return "\n".join(lines) + "\n"

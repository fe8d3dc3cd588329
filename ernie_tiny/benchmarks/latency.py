"""Inference latency and throughput of an exported model: every backend the deploy tools offer,
plain onnxruntime as a user runs it, and eager Paddle, on the same inputs, in one run.

``python tools/benchmark.py latency --model_dir output/demo/export [--batches 1 8 32 --seqs 32 128]``

* inputs: random token ids from the model's vocabulary (fixed seed), no padding, segment 0;
  every runtime gets the same arrays, for every batch size x sequence length;
* runtimes: ``eager`` (the finetuned model the export was made from, dygraph, no gradients),
  ``paddle`` (Paddle Inference, oneDNN on), ``paddle-no-mkldnn`` (only when asked),
  ``ort-defaults`` (onnxruntime's ``InferenceSession`` with its default options: its worker
  threads spin between calls), ``ov-defaults`` (OpenVINO's ``compile_model`` with its default
  properties: bf16 arithmetic on CPUs with native bf16) and ``ov-fp32`` (the same in fp32), all
  on the whole model as users export it elsewhere (``baseline_graph``: for a first-token or
  pruned export, the source model through paddle2onnx, when it is found); then the predictor's ``onnx``,
  ``onnx-fused`` and ``onnx-int8`` (onnxruntime, threads not spinning), ``openvino``,
  ``openvino-bf16`` and ``openvino-int8`` (when the package is installed and the export checked
  them; ``openvino-dynamic`` and ``openvino-int8-dynamic`` only when asked: the same without
  models compiled per recurring shape), and ``auto`` (what the predictor's ``auto`` runs, named
  in the report; its own session), all with the same thread count. Only the forward pass is
  timed (tokenization is the same for all and not included);
* timing: after ``--warmup`` untimed calls, ``--iters`` timed calls per shape, taken in turns by
  blocks (each round: every runtime rests, makes one untimed call, then 5 timed calls back to
  back), so a change in background load affects all runtimes alike, and no runtime runs while
  another's worker threads still spin (``ernie_tiny.deploy.backend_timing.SPIN_PAUSE``); fewer
  rounds when a shape would take longer than ``--max_seconds``.
  Reported: median, p90 and p99 latency (with few rounds p99 is close to the maximum: the table
  gives the count), and throughput (sequences per second of the mean call);
* FLOPs: the multiply-adds of one forward of the graph each runtime runs, counted from the
  model's sizes (the encoder's matmuls, attention included, pooler and classifier), x 2. Achieved GFLOP/s = FLOPs / median
  latency, and its fraction of this machine's measured fp32 matmul rate (the best of Paddle's,
  NumPy's and OpenVINO's on a 2048^3 matmul with the same threads, measured before and after the
  runs; OpenVINO's fp32 kernels reached about twice Paddle's MKL rate on an AMD CPU with AVX-512).
  int8 runs are set against the same fp32 rate, so they can pass 100%. "time vs ort-defaults" is
  the row's median over plain onnxruntime's as a user runs it (``ort-defaults``:
  ``InferenceSession`` with default options on the plain graph; the predictor's own ``onnx``
  backend differs in its thread settings, chiefly that its worker threads do not spin): below 1
  is faster; "per round" takes that ratio in each round of turns (the runtime's median over
  ``ort-defaults``' in the same round, ``per_round_ratios``), so load that changes between
  rounds moves both sides alike, and gives its median and range over the rounds. The report names the CPU's instruction sets
  (AVX2, AVX-512, VNNI, AMX: they decide which backend is fastest) and the model files' sizes;
* targets: the report ends with the deployment targets that apply to this CPU, each met,
  missed or not measured in this run (``ernie_tiny.benchmarks.latency_targets``).

"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

from ernie_tiny.benchmarks.turns import BLOCK, measure, per_round_ratios, timed
from ernie_tiny.deploy.inputs import output_file

BASELINE = "ort-defaults"  # the "time vs" column: plain onnxruntime as a user runs it
PEER = "ov-defaults"  # plain OpenVINO as a user runs it, on the same whole-model graph (bf16 on CPUs with native bf16)
PEER_FP32 = "ov-fp32"  # the same with fp32 arithmetic asked for
DYNAMIC_ONLY = {"openvino-dynamic": "openvino", "openvino-int8-dynamic": "openvino-int8"}  # no per-shape models
RUNTIMES = ("eager", "paddle", "paddle-no-mkldnn", BASELINE, PEER_FP32, PEER, "onnx", "onnx-fused", "onnx-int8",
            "openvino", "openvino-dynamic", "openvino-bf16", "openvino-int8", "openvino-int8-dynamic", "auto")
DEFAULT_RUNTIMES = tuple(name for name in RUNTIMES if name != "paddle-no-mkldnn" and name not in DYNAMIC_ONLY)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model_dir", required=True, help="inference directory written by tools/export.py")
    parser.add_argument("--eager_model", help="the model for the eager runtime (default: the export's source model)")
    parser.add_argument("--runtimes", nargs="+", choices=RUNTIMES, default=list(DEFAULT_RUNTIMES))
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 8, 32])
    parser.add_argument("--seqs", nargs="+", type=int, default=[32, 128])
    parser.add_argument("--iters", type=int, default=50, help="timed calls per runtime and shape")
    parser.add_argument("--warmup", type=int, default=3, help="untimed calls first")
    parser.add_argument("--max_seconds", type=float, default=90.0, help="time budget per shape (all runtimes)")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0 = all available cores)")
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--matmul_size", type=int, default=2048, help="n of the n^3 matmul that measures the peak")
    parser.add_argument("--output", metavar="FILE.md", type=output_file, help="also write the Markdown report here")
    parser.add_argument("--json", metavar="FILE.json", type=output_file, help="also write the raw measurements here")


def forward_flops(config: dict, batch: int, seq: int, head: str, first_token: bool = False) -> float:
    """FLOPs (2 x multiply-adds) of one ERNIE forward with a classification head; ``first_token``:
    the first-token graph (``ernie_tiny.deploy.first_token``), whose last layer computes keys and
    values for every token but queries, attention output and feed-forward for the first only."""
    h, i, layers = config["hidden_size"], config["intermediate_size"], config["num_hidden_layers"]
    labels = config.get("num_labels") or len(config.get("id2label") or {}) or 2
    tokens = batch * seq

    def layer(queries: int) -> int:  # queries: rows of Q, attention output and FFN per sequence
        rows = batch * queries
        return tokens * 2 * h * h + rows * (2 * h * h + 2 * h * i) + 2 * batch * queries * seq * h

    last = layer(1) if first_token and head == "sequence" else layer(seq)
    head_macs = batch * h * h + batch * h * labels if head == "sequence" else tokens * h * labels
    return 2.0 * ((layers - 1) * layer(seq) + last + head_macs)


MATMUL_RATE_NAMES = {"paddle": "Paddle", "numpy": "NumPy", "openvino": "OpenVINO"}


def matmul_rate(threads: int, size: int = 2048, repeats: int = 3) -> dict:
    """GFLOP/s of an fp32 size^3 matmul in Paddle, in NumPy and, where it is installed, in
    OpenVINO (a one-MatMul model in fp32 with ``threads``: the CPU's own fp32 kernels, which
    Paddle's and NumPy's BLAS may not reach on every CPU), best of ``repeats`` each."""
    import numpy as np
    import paddle

    a = np.random.default_rng(0).standard_normal((size, size)).astype(np.float32)
    flops = 2.0 * size ** 3
    pa = paddle.to_tensor(a)
    candidates = [("paddle", lambda: paddle.matmul(pa, pa).numpy()), ("numpy", lambda: a @ a)]
    openvino = _openvino_matmul(a, threads)
    if openvino:
        candidates.append(("openvino", openvino))
    rates = {}
    for name, fn in candidates:
        fn()
        best = min(timed(fn) for _ in range(repeats))
        rates[name] = flops / best / 1e9
    return rates


def _openvino_matmul(a, threads: int):
    """``a @ a`` as a compiled OpenVINO model (fp32, ``threads``), or None without the package."""
    from ernie_tiny.deploy.openvino_runtime import openvino_installed

    if not openvino_installed():
        return None
    import numpy as np
    import openvino as ov
    import openvino.opset13 as ops

    x = ops.parameter(list(a.shape), np.float32, name="x")
    model = ov.Model([ops.matmul(x, ops.constant(a), False, False)], [x])
    request = ov.Core().compile_model(model, "CPU", {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY",
                                                     "INFERENCE_PRECISION_HINT": "f32"}).create_infer_request()
    return lambda: request.infer([a])


def build_runtimes(names, model_dir: Path, eager_model: str, info: dict, threads: int, baseline: Path,
                   shapes: int = 1) -> dict:
    """Each runtime by name: the eager model, Paddle Inference with and without oneDNN, plain
    onnxruntime on ``baseline`` and every backend the deploy tools offer (``make_backend``: onnx,
    onnx-fused, onnx-int8, openvino, openvino-int8, openvino-bf16, auto). ``shapes``: how many
    batch x length shapes will be timed: OpenVINO backends compile every one of them on its own
    (not only the first ``STATIC_SHAPES``), so each row measures what a predictor that sees
    that shape often runs."""
    from ernie_tiny.deploy.openvino_runtime import STATIC_SHAPES
    from ernie_tiny.deploy.backends import OPENVINO_FILES, PaddleBackend, make_backend, resolve_backend

    openvino = set(OPENVINO_FILES) | ({"auto"} if resolve_backend("auto", info) in OPENVINO_FILES else set())

    runtimes = {}
    for name in names:
        if name == "eager":
            runtimes[name] = _eager(eager_model, info["head"])
        elif name in ("paddle", "paddle-no-mkldnn"):
            runtimes[name] = PaddleBackend(model_dir, threads=threads, mkldnn=name == "paddle")
        elif name == BASELINE:
            runtimes[name] = _onnxruntime_defaults(baseline, threads)
        elif name in (PEER, PEER_FP32):
            runtimes[name] = _openvino_defaults(baseline, threads, fp32=name == PEER_FP32)
        elif name in DYNAMIC_ONLY:
            runtimes[name] = make_backend(model_dir, DYNAMIC_ONLY[name], threads=threads, static_shapes=0)
        elif name in openvino:
            runtimes[name] = make_backend(model_dir, name, threads=threads, static_shapes=max(STATIC_SHAPES, shapes))
        else:
            runtimes[name] = make_backend(model_dir, name, threads=threads)
    return runtimes


def _onnxruntime_defaults(path: Path, threads: int):
    """Plain onnxruntime as a user runs it: ``InferenceSession(model.onnx)`` with the default
    session options (worker threads spin while they wait, graph optimizations on), only the
    thread count set like every other runtime's."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return lambda input_ids, token_type_ids: session.run(None, {"input_ids": input_ids,
                                                                "token_type_ids": token_type_ids})[0]


def _openvino_defaults(path: Path, threads: int, fp32: bool = False):
    """Plain OpenVINO as a user runs it: ``compile_model(model.onnx, "CPU")`` with its default
    properties (latency hint; on CPUs with native bf16, AVX-512 BF16 or AMX, bf16 arithmetic),
    only the thread count set like every other runtime's (``fp32``: and fp32 arithmetic).
    ``.precision``: what it computes in."""
    import numpy as np
    import openvino as ov

    properties = {"INFERENCE_NUM_THREADS": threads, **({"INFERENCE_PRECISION_HINT": "f32"} if fp32 else {})}
    compiled = ov.Core().compile_model(str(path), "CPU", properties)
    request = compiled.create_infer_request()

    def run(input_ids, token_type_ids):
        return np.array(request.infer([input_ids, token_type_ids])[compiled.outputs[0]], copy=True)

    run.precision = compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()
    return run


def whole_model_onnx(model_dir: str, head: str, directory: Path, opset: int) -> Path:
    """The model as users export it elsewhere, for the baseline: ``paddle.jit.save`` of the whole
    model (every layer over every token, the vocabulary it was trained with) and paddle2onnx, at
    the export's opset, into ``directory``."""
    from ernie_tiny.deploy.export import export_onnx, load_model, save_static

    files = save_static(load_model(model_dir, head), directory / "model")
    return directory / export_onnx(directory, files, opset)


def baseline_graph(model_dir: Path, info: dict, eager_model: str | None, scratch: Path) -> tuple:
    """The ONNX file the baselines run, what it is, and whether it is the whole model as trained:
    the export's ``model.onnx`` when that is the model as is (no first-token graph, no pruning);
    else the whole source model exported here (so the baselines are not given our graph), or,
    without the source model, the export's own graph."""
    import onnx

    own = model_dir / info["onnx"]
    if not info.get("first_token_graph") and not info.get("vocab_pruning"):
        return own, f"the export's {info['onnx']}", True
    if not (eager_model and Path(eager_model, "config.json").is_file()):
        return own, (f"the export's own {info['onnx']} (the source model was not found: --eager_model DIR for the "
                     f"whole-model baseline)"), False
    opset = max(entry.version for entry in onnx.load(str(own), load_external_data=False).opset_import
                if entry.domain in ("", "ai.onnx"))
    return whole_model_onnx(eager_model, info["head"], scratch, opset), (
        f"the whole source model exported by paddle2onnx (opset {opset}), as users export it elsewhere"), True


def _eager(model_dir: str, head: str):
    import paddle

    from ernie_tiny.deploy.export import load_model

    model = load_model(model_dir, head)

    def run(input_ids, token_type_ids):
        with paddle.no_grad():
            return model(paddle.to_tensor(input_ids), token_type_ids=paddle.to_tensor(token_type_ids)).numpy()

    return run


def summarize(samples, batch: int, flops: float, peak: float) -> dict:
    import numpy as np

    ms = np.asarray(samples) * 1000.0
    median = float(np.median(ms))
    return {"n": len(ms), "median_ms": median, "p90_ms": float(np.percentile(ms, 90)),
            "p99_ms": float(np.percentile(ms, 99)), "seq_per_s": batch / (float(ms.mean()) / 1000.0),
            "gflops": flops / (median / 1000.0) / 1e9, "peak_fraction": flops / (median / 1000.0) / 1e9 / peak}


def speedup(row: dict, key: str = "speedup") -> str:
    return f"{row[key]:.2f}x" if key in row else "-"


def per_round(row: dict) -> str:
    spread = row.get("per_round")
    return f"{spread['median']:.2f}x [{spread['min']:.2f}, {spread['max']:.2f}]" if spread else "-"


def openvino_version() -> str:
    try:
        import openvino
    except ImportError:
        return "not installed"
    return openvino.__version__.split("-")[0]


def pruning_line(info: dict) -> str:
    """The pruned vocabulary against the unpruned model's fp32 parameters (the export's record),
    and the int8 file against those: '' when the export kept its vocabulary."""
    pruning = info.get("vocab_pruning")
    if not pruning:
        return ""
    before = pruning["params_mb_before"]
    line = (f" Vocabulary pruned {pruning['vocab_before']} -> {pruning['vocab_after']} rows: fp32 parameters "
            f"{before:g} -> {pruning['params_mb_after']:g} MB (dev {pruning['metric']} {pruning['pruned']:.2f} vs "
            f"{pruning['unpruned']:.2f} unpruned)")
    for key in ("onnx_int8", "openvino_int8"):
        int8_mb = (info.get("sizes_mb") or {}).get(info.get(key) or "")
        if int8_mb:
            line += f"; {info[key]} is {int8_mb / before:.3f} of the unpruned fp32 parameters (1/{before / int8_mb:.1f})"
    return line + "."


def format_report(meta: dict, rows: list, targets: str = "") -> str:
    rates = meta["matmul_gflops"]
    lines = [
        f"# Inference latency: {meta['model']}",
        "",
        f"{meta['task']} ({meta['head']}), {meta['sizes']}; {meta['threads']} threads; {meta['machine']}; "
        f"Paddle {meta['paddle']}, onnxruntime {meta['onnxruntime']}, OpenVINO {meta.get('openvino', '-')}. Same random "
        f"inputs for every runtime; "
        f"forward pass only; runtimes timed in turns.",
        f"CPU: {meta['cpu']['model'] or 'unknown'}; instruction sets {', '.join(meta['cpu']['instruction_sets']) or '-'}"
        f"; auto runs {meta['auto']}. Model files (MB): "
        + (", ".join(f"{name} {mb:g}" for name, mb in meta["sizes_mb"].items()) or "-") + "." + meta["pruning"],
        f"{BASELINE} runs {meta.get('baseline', '-')}"
        + (f", and so do {PEER} (OpenVINO's default properties; it computes in {meta['peer_precision']} here) and "
           f"{PEER_FP32} (the same in fp32)" if meta.get("peer_precision") else "")
        + "; the other runtimes run the export's graphs"
        + (" (first-token graph: the last layer computes only the [CLS] row the logits read; GFLOP counts what each "
           "graph computes)" if meta.get("first_token_graph") else "") + ".",
        f"Measured fp32 matmul rate ({meta['matmul_size']}^3, same threads, best of before and after): "
        + ", ".join(f"{MATMUL_RATE_NAMES.get(name, name)} {rate:.1f}" for name, rate in rates.items())
        + f" GFLOP/s; '% peak' is against the best, {max(rates.values()):.1f} GFLOP/s.",
        f"'per round' is the same ratio taken in each round of turns (the runtime's median over {BASELINE}'s in that "
        f"round): its median [lowest, highest] over the rounds.",
        "",
        f"| runtime | batch x seq | GFLOP | median ms | p90 ms | p99 ms | n | seq/s | GFLOP/s | % peak | speed-up vs "
        f"eager | time vs {BASELINE} | per round |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['runtime']} | {r['batch']} x {r['seq']} | {r['gflop']:.2f} | {r['median_ms']:.1f} | "
                     f"{r['p90_ms']:.1f} | {r['p99_ms']:.1f} | {r['n']} | {r['seq_per_s']:.1f} | {r['gflops']:.1f} | "
                     f"{100 * r['peak_fraction']:.0f}% | {speedup(r)} | {speedup(r, 'time_vs_baseline')} | "
                     f"{per_round(r)} |")
    lines.append("")
    lines.append(f"Wall time {meta['wall_seconds']:.0f} s.")
    return "\n".join(lines) + "\n" + (f"\n{targets}" if targets else "")


def main(args: argparse.Namespace) -> int:
    from ernie_tiny.runtime import configure_threads

    bad = [f"--{name} must be at least 1" for name in ("batches", "seqs") if min(getattr(args, name)) < 1]
    if args.iters < 1:
        bad.append("--iters must be at least 1")
    model_dir = Path(args.model_dir)
    if not (model_dir / "deploy.json").is_file():
        bad.append(f"--model_dir {model_dir}: no deploy.json (make an inference directory with tools/export.py)")
    if bad:
        print("\n".join(bad), file=sys.stderr)
        return 2
    threads = configure_threads(args.threads)  # before Paddle is imported
    import numpy as np
    import onnxruntime
    import paddle

    from ernie_tiny.benchmarks.latency_targets import format_targets, judge
    from ernie_tiny.deploy.backend_timing import cpu_features
    from ernie_tiny.deploy.backends import ONNX_FILES, OPENVINO_FILES, available, resolve_backend
    from ernie_tiny.deploy.inference_dir import read_deploy_info
    from ernie_tiny.deploy.openvino_runtime import openvino_installed

    paddle.set_device("cpu")
    info = read_deploy_info(model_dir)
    eager_model = args.eager_model or info.get("source_model")
    names = list(dict.fromkeys(args.runtimes))
    present = {BASELINE: available("onnx", info),
               **{peer: available("onnx", info) and openvino_installed() for peer in (PEER, PEER_FP32)}, "eager": eager_model and Path(eager_model, "config.json").is_file(),
               **{name: available(name, info) for name in (*ONNX_FILES, *OPENVINO_FILES)},
               **{name: available(backend, info) for name, backend in DYNAMIC_ONLY.items()}}
    for name in [n for n in names if n in present and not present[n]]:
        why = ("the openvino package is not installed" if name in (*OPENVINO_FILES, *DYNAMIC_ONLY, PEER, PEER_FP32)
               and not openvino_installed()
               else f"not in {model_dir}" + (" (--eager_model DIR)" if name == "eager" else ""))
        print(f"skipping {name}: {why}", file=sys.stderr)
        names.remove(name)
    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))  # sizes, for the FLOPs
    started = time.perf_counter()
    rates = matmul_rate(threads, args.matmul_size)
    scratch = tempfile.TemporaryDirectory(prefix="latency_baseline_")  # removed when main returns
    baseline, baseline_is, baseline_whole = (baseline_graph(model_dir, info, eager_model, Path(scratch.name))
                                             if {BASELINE, PEER, PEER_FP32} & set(names) else (None, "-", False))
    whole = {"eager"} | ({BASELINE, PEER, PEER_FP32} if baseline_whole else set())  # runtimes of whole-model graphs
    runtimes = build_runtimes(names, model_dir, eager_model, info, threads, baseline,
                              shapes=len(args.batches) * len(args.seqs))
    rng = np.random.default_rng(args.seed)
    vocab = config["vocab_size"]
    measured = []
    for seq in args.seqs:
        for batch in args.batches:
            ids = rng.integers(5, vocab, size=(batch, seq)).astype(np.int64)  # past the special tokens
            inputs = (ids, np.zeros_like(ids))
            times = measure(runtimes, inputs, args.iters, args.warmup, args.max_seconds)
            for name in runtimes:
                ms = np.median(times[name]) * 1000
                print(f"{name:>17} {batch:>3} x {seq:<4} median {ms:8.1f} ms  p90 "
                      f"{np.percentile(times[name], 90) * 1000:8.1f}  ({len(times[name])} calls)", file=sys.stderr,
                      flush=True)
            measured.append((batch, seq, times))
    # the machine's matmul rate, before and after (background load may change): the better counts
    after = matmul_rate(threads, args.matmul_size)
    rates = {name: max(rates[name], after[name]) for name in rates}
    peak = max(rates.values())
    rows = []
    for batch, seq, times in measured:
        shape_rows = []
        for name in runtimes:
            flops = forward_flops(config, batch, seq, info["head"],
                                  first_token=bool(info.get("first_token_graph")) and name not in whole)
            shape_rows.append({"runtime": name, "batch": batch, "seq": seq, "gflop": flops / 1e9,
                               **summarize(times[name], batch, flops, peak)})
        eager = next((r for r in shape_rows if r["runtime"] == "eager"), None)
        baseline_row = next((r for r in shape_rows if r["runtime"] == BASELINE), None)
        for r in shape_rows:
            if eager:
                r["speedup"] = eager["median_ms"] / r["median_ms"]
            if baseline_row:
                r["time_vs_baseline"] = r["median_ms"] / baseline_row["median_ms"]
            if baseline_row and r is not baseline_row:
                ratios = per_round_ratios(times[r["runtime"]], times[BASELINE], BLOCK)
                r["per_round"] = {"median": float(np.median(ratios)), "min": min(ratios), "max": max(ratios),
                                  "rounds": len(ratios)}
        rows.extend(shape_rows)
    meta = {"model": str(model_dir), "task": info["task"], "head": info["head"],
            "sizes": f"{config['num_hidden_layers']}L-{config['hidden_size']}H-{config['num_attention_heads']}A, "
                     f"FFN {config['intermediate_size']}, vocab {config['vocab_size']}",
            "threads": threads, "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
            "paddle": paddle.__version__, "onnxruntime": onnxruntime.__version__,
            "openvino": openvino_version(), "matmul_gflops": rates,
            "matmul_size": args.matmul_size, "cpu": cpu_features(), "sizes_mb": info.get("sizes_mb") or {},
            "auto": resolve_backend("auto", info), "pruning": pruning_line(info), "baseline": baseline_is,
            "peer_precision": getattr(runtimes.get(PEER), "precision", None),
            "first_token_graph": bool(info.get("first_token_graph")),
            "wall_seconds": time.perf_counter() - started}
    verdicts = judge(measured, info, meta["cpu"], BLOCK, baseline=BASELINE, fp32_peer=PEER_FP32)
    report = format_report(meta, rows, format_targets(verdicts))
    print(report)
    if args.output:
        Path(args.output).write_text(report, encoding="utf-8")
    if args.json:
        samples = {f"{batch}x{seq}": {name: [round(t * 1000, 4) for t in ts] for name, ts in times.items()}
                   for batch, seq, times in measured}  # in timing order: rounds of BLOCK calls
        Path(args.json).write_text(json.dumps({"meta": meta, "rows": rows, "targets": verdicts, "samples_ms": samples},
                                              indent=1), encoding="utf-8")
    return 0

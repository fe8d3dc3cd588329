"""Smoke test: the distill speed benchmark end to end with tiny models (both sides run in subprocesses)."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

TINY = ["--teacher-layers", "2", "--teacher-hidden", "32", "--teacher-heads", "4", "--teacher-intermediate", "64",
        "--teacher-layer", "1", "--student-layers", "2", "--student-hidden", "16", "--student-heads", "4",
        "--student-intermediate", "32", "--vocab", "100", "--relation-heads", "4",
        "--batch", "2", "--seq", "16", "--steps", "2", "--warmup", "1", "--threads", "1"]


def test_distill_benchmark_end_to_end(tmp_path):
    report_file, raw_file = tmp_path / "bench.md", tmp_path / "bench.json"
    scratch = tmp_path / "tmp"  # the sides' work directories go here, and must be gone at the end
    scratch.mkdir()
    proc = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "benchmark.py"), "distill", *TINY, "--students", "nano,micro",
         "--output", str(report_file), "--json", str(raw_file)],
        cwd=tmp_path, capture_output=True, text=True, timeout=300, env={**os.environ, "TMPDIR": str(scratch)})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert not list(scratch.iterdir())
    report = report_file.read_text()
    assert report.strip() == proc.stdout.strip()

    rows = {}
    for impl in ("ours", "paddlenlp"):
        match = re.search(rf"^\| {impl} \| ([0-9.]+) \| ([0-9.]+) \| ([0-9.]+) \|$", report, re.M)
        assert match, report
        rows[impl] = [float(x) for x in match.groups()]
        assert rows[impl][1] > 0, report  # tokens/s
    ratio = re.search(r"Speed ratio ours/paddlenlp: ([0-9.]+)x", report)
    assert ratio and float(ratio.group(1)) > 0, report
    assert re.search(r"Teacher forward alone .*: eager [0-9.]+ s, compiled [0-9.]+ s", report), report
    assert re.search(r"GFLOP/s = [0-9]+% of this machine's measured 2048\^3 float32 matmul rate \([0-9.]+ GFLOP/s, "
                     r"the faster of Paddle Inference \+ oneDNN [0-9.]+ and Paddle eager [0-9.]+\)", report), report
    assert "teacher engine inference" in report
    assert "threads" in report and "Paddle 3." in report

    raw = json.loads(raw_file.read_text())
    ours, base = raw["results"]["versus"]["ours"], raw["results"]["versus"]["paddlenlp"]
    assert len(ours["times"]["step"]) == len(base["times"]["step"]) == 2
    assert len(ours["times"]["teacher_eager"]) == 2
    assert set(ours["matmul_gflops"]) == {"paddle_eager", "inference_onednn"}
    assert ours["threads"] == base["threads"] == 1
    # both sides trained the same weights on the same batches and compute the same loss
    assert ours["weights_fingerprint"] == base["weights_fingerprint"]
    assert ours["check_loss"] > 0
    assert ours["check_loss"] == pytest.approx(base["check_loss"], rel=1e-3)

    # several students from one teacher pass, beside separate runs
    students = raw["results"]["students"]["default"]["median"]
    assert set(students) == {"multi", "teacher", "single:nano", "single:micro", "student:nano", "student:micro"}
    assert re.search(r"One run of 2 students: [0-9.]+ s/step against one teacher forward plus their own steps "
                     r"[0-9.]+ s: [0-9.]+x \((within|OVER) the \+5% budget\). Against 2 separate runs", report)
    assert "paper" not in raw["results"]["students"]  # only with --paper-teacher


def test_step_flops_count_the_truncated_teacher_and_the_student():
    from ernie_tiny.benchmarks.distill_speed import encoder_flops, step_flops

    o = {"batch": 8, "seq": 128, "teacher_hidden": 768, "teacher_intermediate": 3072, "teacher_layers": 12,
         "teacher_layer": 10, "student_layers": 4, "student_hidden": 312, "student_heads": 12,
         "student_intermediate": 1248}
    flops = step_flops(o)
    # 10 full teacher layers dominate: ~15.1 GFLOP each at 1024 tokens
    assert encoder_flops(1024, 128, 768, 3072, 1) == pytest.approx(2 * 1024 * (4 * 768 ** 2 + 2 * 768 * 3072)
                                                                  + 4 * 1024 * 128 * 768)
    assert 150e9 < flops["teacher"] < 160e9
    assert flops["total"] == flops["teacher"] + flops["student"]
    assert step_flops(dict(o, teacher_layer=-1))["teacher"] > flops["teacher"]


def test_distill_benchmark_rejects_sizes_that_do_not_fit():
    from ernie_tiny.benchmarks.cli import main

    assert main(["distill", *TINY, "--relation-heads", "3"]) == 2
    assert main(["distill", *TINY, "--teacher-layer", "5"]) == 2
    assert main(["distill", *TINY, "--students", "nano,giga"]) == 2
    assert main(["distill", *TINY, "--relation-heads", "16", "--teacher-hidden", "48", "--student-hidden", "48",
                 "--students", "nano"]) == 2  # 16 does not divide nano's 312


def test_the_readme_quotes_the_committed_distill_benchmark_verbatim():
    """The README's distillation speed table and ratios are the committed report's own lines
    (as `tools/benchmark.py distill --output` wrote them), not numbers typed by hand."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    report = (ROOT / "docs/results/distill_speed/distill_speed.md").read_text(encoding="utf-8").splitlines()
    section = readme[readme.index("### Speed"):readme.index("## Pretraining a teacher")]
    quoted = [line for line in section.splitlines()
              if line.startswith(("| ours |", "| paddlenlp |", "**Speed ratio", "Teacher forward alone", "One run of"))]
    assert len(quoted) == 6, quoted
    for line in quoted:
        assert line in report, f"README line not in the committed report: {line}"


def test_the_readme_quotes_the_committed_latency_benchmark_verbatim():
    """The README's deployment table and machine line are the committed latency report's own
    lines (as `tools/benchmark.py latency --output` wrote them), not numbers typed by hand."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    report = (ROOT / "docs/results/latency/latency.md").read_text(encoding="utf-8").splitlines()
    section = readme[readme.index("## Deployment"):readme.index("## The MITKD claim")]
    quoted = [line.strip() for line in section.splitlines() if line.strip().startswith(("| ", "CPU: "))]
    assert len(quoted) >= 10, quoted
    for line in quoted:
        assert line in report, f"README line not in the committed report: {line}"


def test_latency_measure_takes_turns_by_blocks_and_stops_on_its_budget():
    """Every runtime gets the same calls, in blocks of BLOCK after one untimed call each round;
    past max_seconds it stops, but only after MIN_ROUNDS rounds."""
    from ernie_tiny.benchmarks.turns import BLOCK, MIN_ROUNDS, measure

    calls = []
    runtimes = {name: (lambda *inputs, name=name: calls.append(name)) for name in ("a", "b")}
    times = measure(runtimes, (), iters=2 * BLOCK, warmup=1, max_seconds=60, pause=0)
    assert {len(t) for t in times.values()} == {2 * BLOCK}
    one_round = ["a"] * (1 + BLOCK) + ["b"] * (1 + BLOCK)
    assert calls == ["a", "b"] + one_round * 2  # warm-up, then two rounds of blocks
    times = measure(runtimes, (), iters=100 * BLOCK, warmup=0, max_seconds=0, pause=0)
    assert {len(t) for t in times.values()} == {MIN_ROUNDS * BLOCK}  # over budget at once: the minimum


def test_latency_per_round_ratios_pair_each_round_with_the_baselines_same_round():
    """A slow round slows both sides of its ratio: the per-round ratio does not move with it."""
    from ernie_tiny.benchmarks.turns import per_round_ratios

    runtime = [2.0] * 5 + [8.0] * 5 + [2.0] * 3  # round 2 ran on a loaded host; a short last round
    baseline = [4.0] * 5 + [16.0] * 5 + [4.0] * 3
    assert per_round_ratios(runtime, baseline, block=5) == [0.5, 0.5, 0.5]
    assert per_round_ratios([1.0, 3.0, 2.0], [1.0, 1.0, 1.0], block=3) == [2.0]  # each round's median


def _rounds(*per_round_ms, block=5):
    """Timed calls in seconds: ``block`` calls of each round's latency (ms)."""
    return [ms / 1000 for ms in per_round_ms for _ in range(block)]


AVX512_VNNI = {"instruction_sets": ["AVX2", "FMA", "AVX-512F", "AVX-512 VNNI"], "vnni": True}
AVX2_ONLY = {"instruction_sets": ["AVX2", "FMA"], "vnni": False}
RUN = {"block": 5, "baseline": "ort-defaults", "fp32_peer": "ov-fp32"}  # as tools/benchmark.py latency judges


def test_latency_targets_follow_the_cpu_and_judge_each_ratio_round_by_round():
    """The targets that apply depend on the instruction sets (0.75x only with AVX-512; int8 0.45x
    with VNNI, 0.7x without); fp32 must beat both plain runtimes; the int8 target takes the faster
    int8 runtime; each ratio is the per-round median, with the run's medians' ratio beside it."""
    from ernie_tiny.benchmarks.latency_targets import judge

    # ort 10 ms; ov-fp32 8 ms; auto 7 ms; int8 4 ms (0.4x), in three rounds, the second twice as slow
    shape = {"ort-defaults": _rounds(10, 20, 10), "ov-fp32": _rounds(8, 16, 8), "auto": _rounds(7, 14, 7),
             "openvino-int8": _rounds(4, 8, 4), "onnx-int8": _rounds(6, 12, 6)}
    measured = [(1, 128, shape), (32, 128, shape)]
    verdicts = {v["target"]: v for v in judge(measured, {}, AVX512_VNNI, **RUN)}
    fp32 = [v for t, v in verdicts.items() if t.startswith("auto (fp32)")]
    assert len(fp32) == 4 and all(v["met"] for v in fp32)  # two targets x two shapes
    int8 = next(v for t, v in verdicts.items() if t.startswith("int8 at most 0.45x"))
    assert int8["met"] and "openvino-int8 / ort-defaults 0.40x" in int8["measured"]  # the faster int8 runtime
    avx2 = {v["target"]: v for v in judge(measured, {}, AVX2_ONLY, **RUN)}
    assert not any("AVX-512" in t for t in avx2) and any(t.startswith("int8 at most 0.7x") for t in avx2)

    # auto 1.1x of OpenVINO: missed, though within 0.75x of onnxruntime
    slow = dict(shape, **{"ov-fp32": _rounds(6, 12, 6), "auto": _rounds(6.6, 13.2, 6.6)})
    verdicts = {v["target"]: v for v in judge([(1, 128, slow)], {}, AVX512_VNNI, **RUN)}
    assert verdicts["auto (fp32) no slower than the fastest of plain onnxruntime and plain OpenVINO (fp32), "
                    "1 x 128"]["met"] is False
    assert verdicts["auto (fp32) at most 0.75x plain onnxruntime (CPU with AVX-512), 1 x 128"]["met"] is True

    assert "auto / ort-defaults 0.66x per round (0.66x of the run's medians)" in verdicts[
        "auto (fp32) at most 0.75x plain onnxruntime (CPU with AVX-512), 1 x 128"]["measured"]


def test_latency_targets_take_each_round_as_it_came():
    """A ratio is judged round by round: here ours ran on a loaded host in round 2 while the peers
    did in round 3, so the run's medians say 2.8x (ours 28 ms over the peers' 10) where two of
    three rounds say 0.7x."""
    from ernie_tiny.benchmarks.latency_targets import judge

    shape = {"ort-defaults": _rounds(10, 10, 40), "ov-fp32": _rounds(10, 10, 40), "auto": _rounds(7, 28, 28),
             "openvino-int8": _rounds(4, 16, 16)}
    verdicts = {v["target"]: v for v in judge([(1, 128, shape)], {}, AVX512_VNNI, **RUN)}
    fp32 = verdicts["auto (fp32) at most 0.75x plain onnxruntime (CPU with AVX-512), 1 x 128"]
    assert fp32["met"] and fp32["measured"] == "auto / ort-defaults 0.70x per round (2.80x of the run's medians)"
    assert next(v for t, v in verdicts.items() if t.startswith("int8"))["met"]  # 0.4x per round, 1.6x pooled


def test_latency_targets_on_a_cpu_of_unknown_instruction_sets_judge_only_what_does_not_depend_on_it():
    from ernie_tiny.benchmarks.latency_targets import judge

    shape = {"ort-defaults": _rounds(10), "ov-fp32": _rounds(8), "auto": _rounds(7), "openvino-int8": _rounds(4)}
    verdicts = judge([(1, 128, shape)], {}, {"instruction_sets": [], "vnni": False}, **RUN)
    assert not any("AVX-512)" in v["target"] or v["target"].startswith("int8 at most") for v in verdicts)
    unknown = next(v for v in verdicts if v["target"].startswith("the targets that depend on the CPU"))
    assert unknown["met"] is None and "instruction sets are unknown" in unknown["measured"]
    assert next(v for v in verdicts if v["target"].startswith("auto (fp32) no slower"))["met"] is True


def test_latency_targets_not_in_the_run_are_never_met():
    from ernie_tiny.benchmarks.latency_targets import format_targets, judge

    verdicts = judge([(1, 16, {"ort-defaults": [0.01], "auto": [0.005]})], {}, AVX512_VNNI, **RUN)
    assert verdicts and all(v["met"] is None for v in verdicts)
    assert verdicts[0]["measured"] == "not measured (1 x 128 not in this run)"
    no_int8 = judge([(1, 128, {"ort-defaults": [0.01], "auto": [0.005]})], {}, AVX512_VNNI, **RUN)
    assert next(v for v in no_int8 if v["target"].startswith("int8"))["measured"] == \
        "not measured (an int8 runtime not in this run)"
    table = format_targets(verdicts)
    assert "| verdict |" in table and "not measured |" in table and "met |" not in table.replace("not measured", "")


def test_latency_targets_judge_int8_accuracy_against_the_unpruned_model_and_size_against_its_parameters():
    from ernie_tiny.benchmarks.latency_targets import judge

    info = {"int8": {"metric": "accuracy", "fp32": 75.8,
                     "runtimes": {"onnx-int8": {"score": 75.7}, "openvino-int8": {"score": 75.4}}},
            "vocab_pruning": {"unpruned": 76.0, "params_mb_before": 66.0},
            "onnx_int8": "model.int8.onnx", "openvino_int8": "model.int8.openvino.onnx",
            "sizes_mb": {"model.int8.onnx": 6.0, "model.int8.openvino.onnx": 12.0}}
    verdicts = {v["target"]: v for v in judge([], info, AVX512_VNNI, **RUN)}
    assert verdicts["onnx-int8 dev accuracy within 0.5 points of unpruned fp32"]["met"] is True  # 0.3 below
    assert verdicts["openvino-int8 dev accuracy within 0.5 points of unpruned fp32"]["met"] is False  # 0.6 below
    size = {t.split(" ")[0]: v for t, v in verdicts.items() if "1/6" in t}
    assert size["model.int8.onnx"]["met"] is True and size["model.int8.openvino.onnx"]["met"] is False
    unpruned = {v["target"]: v for v in judge([], {**info, "vocab_pruning": None}, AVX512_VNNI, **RUN)}
    assert unpruned["onnx-int8 dev accuracy within 0.5 points of fp32"]["met"] is True  # 75.7 vs 75.8
    assert all(v["met"] is None for t, v in unpruned.items() if "1/6" in t)


def test_a_report_file_that_cannot_be_written_is_refused_before_the_benchmark_runs(tmp_path, capsys):
    from ernie_tiny.benchmarks import cli

    for benchmark in ("latency", "distill"):
        with pytest.raises(SystemExit) as exit_:
            cli.main([benchmark, "--model_dir", str(tmp_path), "--output", str(tmp_path / "no_dir" / "report.md")]
                     if benchmark == "latency" else [benchmark, "--output", str(tmp_path / "no_dir" / "report.md")])
        assert exit_.value.code == 2 and "no_dir does not exist (create it first)" in capsys.readouterr().err

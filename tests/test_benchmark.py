"""Smoke test: the distill speed benchmark end to end with tiny models (both sides run in subprocesses)."""
import json
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
    proc = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "benchmark.py"), "distill", *TINY,
         "--output", str(report_file), "--json", str(raw_file)],
        cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
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
    assert "threads" in report and "Paddle 3." in report

    raw = json.loads(raw_file.read_text())
    ours, base = raw["results"]["ours"], raw["results"]["paddlenlp"]
    assert len(ours["step_times"]) == len(base["step_times"]) == 2
    assert ours["threads"] == base["threads"] == 1
    # both sides trained the same weights on the same batches and compute the same loss
    assert ours["weights_fingerprint"] == base["weights_fingerprint"]
    assert ours["check_loss"] > 0
    assert ours["check_loss"] == pytest.approx(base["check_loss"], rel=1e-3)


def test_distill_benchmark_rejects_sizes_that_do_not_fit():
    from ernie_tiny.benchmarks.cli import main

    assert main(["distill", *TINY, "--relation-heads", "3"]) == 2
    assert main(["distill", *TINY, "--teacher-layer", "5"]) == 2

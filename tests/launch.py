"""Two-rank CPU runs of a stage tool under ``paddle.distributed.launch``, and the data-parallel
check every stage writes at the end (``data_parallel_check.json``)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def run_two_ranks(tool: str, config: Path, workdir: Path, output_dir: Path) -> dict:
    """Run ``tools/<tool>`` on 2 CPU ranks; assert the ranks read different data and ended with
    identical weights; return the check's report."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("OMP_NUM_THREADS", None)
    proc = subprocess.run(
        [sys.executable, "-m", "paddle.distributed.launch", "--nproc_per_node", "2",
         "--log_dir", str(workdir / "launch_logs"), str(ROOT / "tools" / tool), "-c", str(config)],
        cwd=workdir, env=env, capture_output=True, text=True, timeout=300)
    logs = "\n".join(p.read_text(errors="replace") for p in sorted((workdir / "launch_logs").glob("*")))
    report_file = output_dir / "data_parallel_check.json"
    assert report_file.is_file(), proc.stdout[-3000:] + proc.stderr[-3000:] + logs[-5000:]
    report = json.loads(report_file.read_text())
    assert len(report["weights"]) == 2
    assert report["weights"][0] == pytest.approx(report["weights"][1], rel=1e-9)
    assert report["data"][0] != report["data"][1]  # the ranks read different data
    return report

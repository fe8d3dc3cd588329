"""One headline per finished step, read from the files each stage writes, and the summary table."""
from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Callable, Dict, List, Sequence

from ernie_tiny.pipeline.steps import StepResult


def read_log_lines(path: Path) -> List[dict]:
    """The records of a train_log.jsonl ([] if there is none)."""
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _pretrain(out: Path) -> str:
    log = read_log_lines(out / "train_log.jsonl")
    if not log:
        return ""
    last = log[-1]
    return (f"MLM loss {log[0]['loss']:.2f} -> {last['loss']:.2f}, masked-token accuracy "
            f"{100 * last.get('mlm_accuracy', 0):.1f}% (step {last['step']})")


def _teacher_mtl(out: Path) -> str:
    path = out / "heads" / "heads.json"
    if not path.is_file():
        return ""
    info = json.loads(path.read_text(encoding="utf-8"))
    scores = ", ".join(f"{name} {t['dev_score']:.1f} (majority {t['majority_baseline']:.1f})"
                       for name, t in info["tasks"].items())
    return f"best dev at step {info['step']}: {scores}"


def _distill(out: Path) -> str:
    log = read_log_lines(out / "train_log.jsonl")
    if not log:
        return ""
    return f"relation loss {log[0]['loss']:.4f} (step {log[0]['step']}) -> {log[-1]['loss']:.4f} (step {log[-1]['step']})"


def _evaluate(out: Path) -> str:
    path = out / "results.csv"
    if not path.is_file():
        return ""
    with open(path, encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    parts = []
    for r in rows:
        std = f" ± {float(r['std']):.1f}" if r.get("std") else ""
        majority = f" (majority {float(r['majority']):.1f})" if r.get("majority") else ""
        parts.append(f"{r['task']} {float(r['score']):.1f}{std}{majority}")
    return "dev: " + ", ".join(parts)


def _finetune(out: Path) -> str:
    path = out / "result.json"
    if not path.is_file():
        return ""
    r = json.loads(path.read_text(encoding="utf-8"))
    return f"{r['task']}: best dev {r['metric']} {r['best_dev']:.1f} at step {r['best_step']} of {r['steps']}"


def _export(out: Path) -> str:
    path = out / "deploy.json"
    if not path.is_file():
        return ""
    info = json.loads(path.read_text(encoding="utf-8"))
    parts = [f"Paddle Inference max abs diff {info['checks']['paddle_inference']['max_abs_diff']:.1e}"]
    if info.get("int8"):
        q = info["int8"]
        parts.append(f"int8 dev {q['metric']} {q['int8']:.1f} vs fp32 {q['fp32']:.1f}")
    return ", ".join(parts)


HEADLINES: Dict[str, Callable[[Path], str]] = {
    "pretrain": _pretrain, "teacher_mtl": _teacher_mtl, "distill": _distill,
    "evaluate": _evaluate, "finetune": _finetune, "export": _export,
}


def headline(result: StepResult) -> str:
    try:
        return HEADLINES[result.step.stage](result.step.output_dir)
    except (KeyError, ValueError, TypeError) as err:  # a file from another version: say so, do not fail the run
        return f"(no headline: {type(err).__name__} {err})"


def summary_markdown(results: Sequence[StepResult], title: str, total_seconds: float) -> str:
    lines = [f"# {title}", "", "| step | status | wall time | output | result |", "|---|---|---:|---|---|"]
    for r in results:
        lines.append(f"| {r.step.name} | {r.status} | {r.seconds / 60:.1f} min | {r.step.product} | {headline(r)} |")
    lines += ["", f"Wall time of this run: {total_seconds / 60:.1f} min."]
    return "\n".join(lines) + "\n"


def summary_text(results: Sequence[StepResult], total_seconds: float) -> str:
    """The console form: one block per step (tables wrap badly in a terminal)."""
    lines = ["", "=" * 72, "summary", "=" * 72]
    for r in results:
        lines.append(f"{r.step.name:<12} {r.status:<22} {r.seconds / 60:5.1f} min   {r.step.product}")
        text = headline(r)
        if text:
            lines.append(f"{'':<12} {text}")
    lines.append(f"total wall time of this run: {total_seconds / 60:.1f} min")
    return "\n".join(lines)

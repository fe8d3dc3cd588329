"""The summary table of a list of finished steps: each step's headline comes from its stage's
result reader (``ernie_tiny.stages``)."""
from __future__ import annotations

from typing import Sequence

from ernie_tiny.pipeline.steps import StepResult
from ernie_tiny.stages import headline as stage_headline


def headline(result: StepResult) -> str:
    return stage_headline(result.step.stage, result.step.output_dir)


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

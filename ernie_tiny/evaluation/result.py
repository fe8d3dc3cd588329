"""What the evaluation stage leaves behind: its output directory is its product, and its typed
result is the rows of ``results.csv``, read through the module that writes them."""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional

from ernie_tiny.evaluation.report import TaskResult, read_results
from ernie_tiny.stages import StageResult


@dataclass(frozen=True)
class EvaluateResult(StageResult):
    tasks: List[TaskResult]

    @classmethod
    def read(cls, output_dir) -> Optional["EvaluateResult"]:
        rows = read_results(output_dir)
        return cls(rows) if rows else None

    def headline(self) -> str:
        parts = []
        for r in self.tasks:
            std = f" ± {r.std:.1f}" if r.std is not None else ""
            majority = f" (majority {r.majority:.1f})" if r.majority is not None else ""
            parts.append(f"{r.task} {r.score:.1f}{std}{majority}")
        return "dev: " + ", ".join(parts)

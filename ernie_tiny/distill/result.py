"""What the distillation stage leaves behind: its product (``student/``, or ``students/<name>/``
with ``Students``) and its typed result, read from the files the stage wrote. No Paddle import."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from ernie_tiny.monitor import LossCurve
from ernie_tiny.stages import StageResult

SINGLE_STUDENT_DIR, STUDENTS_DIR = "student", "students"


def student_dir(output_dir, name: str = "") -> Path:
    """Where the student ``name`` is saved ('' = the single ``Student``)."""
    return Path(output_dir) / (STUDENTS_DIR + "/" + name if name else SINGLE_STUDENT_DIR)


@dataclass(frozen=True)
class DistillResult(LossCurve, StageResult):
    """The relation loss curve (``read``: from train_log.jsonl)."""

    product_dir: ClassVar[str] = SINGLE_STUDENT_DIR

    def headline(self) -> str:
        return (f"relation loss {self.first_loss:.4f} (step {self.first['step']}) -> "
                f"{self.last_loss:.4f} (step {self.last['step']})")

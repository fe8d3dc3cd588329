"""What the distillation stage leaves behind: its product (``student/``, or ``students/<name>/``
with ``Students``) and its typed result, read from the files the stage wrote. No Paddle import."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from ernie_tiny.monitor import LossCurve, read_loss_curve

SINGLE_STUDENT_DIR, STUDENTS_DIR = "student", "students"


def student_dir(output_dir, name: str = "") -> Path:
    """Where the student ``name`` is saved ('' = the single ``Student``)."""
    return Path(output_dir) / (STUDENTS_DIR + "/" + name if name else SINGLE_STUDENT_DIR)


@dataclass(frozen=True)
class DistillResult:
    loss: LossCurve

    @staticmethod
    def product(output_dir) -> Path:
        return student_dir(output_dir)

    @classmethod
    def read(cls, output_dir) -> Optional["DistillResult"]:
        curve = read_loss_curve(output_dir)
        return cls(curve) if curve else None

    def headline(self) -> str:
        return (f"relation loss {self.loss.first_loss:.4f} (step {self.loss.first['step']}) -> "
                f"{self.loss.last_loss:.4f} (step {self.loss.last['step']})")

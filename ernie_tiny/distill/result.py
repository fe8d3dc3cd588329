"""What the distillation stage leaves behind: its product (``student/``, or ``students/`` holding
``<name>/`` for each of ``Students``) and its typed result, read from the files the stage wrote.
This module alone names those folders. No Paddle import."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Tuple

import yaml

from ernie_tiny.monitor import LossCurve, read_train_log
from ernie_tiny.stages import StageResult

SINGLE_STUDENT_DIR, STUDENTS_DIR = "student", "students"
RESOLVED_CONFIG = "config.yaml"  # written first by every run (runtime.open_output_dir)


def students_root(output_dir, several: bool) -> Path:
    """The run's product: ``student/`` (the single ``Student``) or ``students/`` (``Students``)."""
    return Path(output_dir) / (STUDENTS_DIR if several else SINGLE_STUDENT_DIR)


def student_dir(output_dir, name: str = "") -> Path:
    """Where the student ``name`` is saved ('' = the single ``Student``)."""
    return students_root(output_dir, True) / name if name else students_root(output_dir, False)


def student_names(output_dir) -> Tuple[str, ...]:
    """The names of the ``Students`` the run in ``output_dir`` distils, from the resolved config it
    wrote when it started (() for a single ``Student``, and before the run has started)."""
    path = Path(output_dir) / RESOLVED_CONFIG
    if not path.is_file():
        return ()
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    return tuple(entry["name"] for entry in data.get("Students") or ())


@dataclass(frozen=True)
class DistillResult(LossCurve, StageResult):
    """The relation loss curve (``read``: from train_log.jsonl), per student with ``Students``."""

    students: Tuple[str, ...] = ()  # the Students' names; () for the single Student

    @classmethod
    def product(cls, output_dir, config=None) -> Path:
        several = bool(cls.several_models_reason(config) if config is not None else student_names(output_dir))
        return students_root(output_dir, several)

    @classmethod
    def several_models_reason(cls, config) -> str:
        """A run of several ``Students`` leaves ``students/<name>/``, not one model."""
        return ("Students: several students in one run (give Student instead, or run this config on its own)"
                if getattr(config, "Students", None) else "")

    @classmethod
    def read(cls, output_dir) -> Optional["DistillResult"]:
        log = read_train_log(output_dir)
        return cls(log[0], log[-1], student_names(output_dir)) if log else None

    def headline(self) -> str:
        if not self.students:
            return (f"relation loss {self.first_loss:.4f} (step {self.first['step']}) -> "
                    f"{self.last_loss:.4f} (step {self.last['step']})")
        return "relation loss " + ", ".join(
            f"{name} {self.first[f'loss_{name}']:.4f} -> {self.last[f'loss_{name}']:.4f}" for name in self.students
        ) + f" (step {self.first['step']} -> {self.last['step']})"

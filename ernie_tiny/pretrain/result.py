"""What the pretrain stage leaves behind: its product (``teacher/``, the next stage's input) and
its typed result, read from the files the stage wrote. No Paddle import."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from ernie_tiny.monitor import LossCurve, read_loss_curve

TEACHER_DIR = "teacher"  # the encoder + tokenizer (PaddleNLP format): what the next stage reads
MLM_DIR = "mlm"          # the encoder with its masked-LM head, to continue pretraining


@dataclass(frozen=True)
class PretrainResult:
    loss: LossCurve

    @staticmethod
    def product(output_dir) -> Path:
        return Path(output_dir) / TEACHER_DIR

    @classmethod
    def read(cls, output_dir) -> Optional["PretrainResult"]:
        curve = read_loss_curve(output_dir)
        return cls(curve) if curve else None

    @property
    def mlm_accuracy(self) -> float:
        """Masked-token accuracy (%) at the last log line."""
        return 100 * self.loss.last.get("mlm_accuracy", 0)

    def headline(self) -> str:
        return (f"MLM loss {self.loss.first_loss:.2f} -> {self.loss.last_loss:.2f}, masked-token accuracy "
                f"{self.mlm_accuracy:.1f}% (step {self.loss.last['step']})")

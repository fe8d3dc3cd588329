"""What the pretrain stage leaves behind: its product (``teacher/``, the next stage's input) and
its typed result, read from the files the stage wrote. No Paddle import."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ernie_tiny.monitor import LossCurve
from ernie_tiny.stages import StageResult

TEACHER_DIR = "teacher"  # the encoder + tokenizer (PaddleNLP format): what the next stage reads
MLM_DIR = "mlm"          # the encoder with its masked-LM head, to continue pretraining


@dataclass(frozen=True)
class PretrainResult(LossCurve, StageResult):
    """The masked-LM loss curve (``read``: from train_log.jsonl)."""

    product_dir: ClassVar[str] = TEACHER_DIR

    @property
    def mlm_accuracy(self) -> float:
        """Masked-token accuracy (%) at the last log line."""
        return 100 * self.last.get("mlm_accuracy", 0)

    def headline(self) -> str:
        return (f"MLM loss {self.first_loss:.2f} -> {self.last_loss:.2f}, masked-token accuracy "
                f"{self.mlm_accuracy:.1f}% (step {self.last['step']})")

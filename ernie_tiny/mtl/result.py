"""What the multi-task teacher stage leaves behind: its product (``teacher/``, the encoder the
distillation reads), the task heads (``heads/``) and its typed result, read from ``heads.json``
(its name and reader are here; ``ernie_tiny.mtl.model`` writes it). No Paddle import."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Dict, Optional, Tuple

from ernie_tiny.stages import StageResult

TEACHER_DIR, HEADS_DIR = "teacher", "heads"
HEADS_JSON = "heads.json"  # in heads/: the step of the best dev score, and per task its head, labels and scores


def read_heads_info(heads_dir) -> dict:
    """The ``info`` that ``ernie_tiny.mtl.model.save_heads`` wrote to ``<heads_dir>/heads.json``."""
    return json.loads((Path(heads_dir) / HEADS_JSON).read_text(encoding="utf-8"))


@dataclass(frozen=True)
class TeacherMTLResult(StageResult):
    step: int                                # of the best dev score
    tasks: Dict[str, Tuple[float, float]]    # task -> (dev score, majority-class score)
    product_dir: ClassVar[str] = TEACHER_DIR

    @classmethod
    def read(cls, output_dir) -> Optional["TeacherMTLResult"]:
        heads = Path(output_dir) / HEADS_DIR
        if not heads.is_dir():
            return None
        info = read_heads_info(heads)
        return cls(info["step"], {name: (t["dev_score"], t["majority_baseline"]) for name, t in info["tasks"].items()})

    def scores(self, template: str = "{task} {dev:.1f} (majority {majority:.1f})") -> str:
        return ", ".join(template.format(task=name, dev=dev, majority=majority)
                         for name, (dev, majority) in self.tasks.items())

    def headline(self) -> str:
        return f"best dev at step {self.step}: {self.scores()}"

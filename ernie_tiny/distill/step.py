"""One distillation micro-step, shared by the recipe and ``tools/benchmark.py distill``.

The teacher runs once per batch (``TeacherEngine``: compiled or eager, no gradients); every
student learns the same teacher Q/K/V. ``StudentsQKV`` holds every student's ``QKVExtractor``
as one layer, so ``paddle.DataParallel`` wraps (and averages the gradients of) all of them at
once, and the step's loss is the sum of every student's Q-Q, K-K and V-V terms (the students
share no parameter, so each one's gradients are those of its own terms).
"""
from __future__ import annotations

from typing import Callable, Dict, List, Sequence, Tuple

import numpy as np
import paddle
import paddle.nn as nn

from ernie_tiny.distill.loss import check_shapes, relation_losses_to
from ernie_tiny.modeling import QKVExtractor

RELATIONS = ("qq", "kk", "vv")


def loss_name(student: str, relation: str) -> str:
    """The log name of one loss term: ``qq`` for the single student, ``<name>.qq`` for several."""
    return f"{student}.{relation}" if student else relation


class StudentsQKV(nn.Layer):
    """Every student's distilled-layer Q/K/V: ``forward(ids, mask) -> {name: (q, k, v)}``."""

    def __init__(self, extractors: Sequence[Tuple[str, QKVExtractor]]):
        super().__init__()
        self.names = [name for name, _ in extractors]
        self.students = nn.LayerList([extractor for _, extractor in extractors])

    def forward(self, input_ids: paddle.Tensor, attention_mask: paddle.Tensor) -> Dict[str, tuple]:
        return {name: student(input_ids, attention_mask) for name, student in zip(self.names, self.students)}

    def parameter_groups(self) -> List[list]:
        return [student.parameters() for student in self.students]


def distill_losses(teacher, students: nn.Layer, relation_heads: Dict[str, int],
                   input_ids: paddle.Tensor) -> Dict[str, paddle.Tensor]:
    """Every student's relation losses on one batch of packed sequences (no padding: the loss
    skips key masking). ``teacher`` is a ``TeacherEngine``: its relations come once
    per relation-head count, whichever students use it."""
    mask = paddle.ones(input_ids.shape, dtype="int64")
    teacher_qkv, relations = teacher.outputs(input_ids, mask, relation_heads.values())
    losses = {}
    for name, student_qkv in students(input_ids, mask).items():
        heads = relation_heads[name]
        check_shapes(student_qkv, teacher_qkv, heads)
        for relation, value in zip(RELATIONS, relation_losses_to(student_qkv, relations[heads], None, heads)):
            losses[loss_name(name, relation)] = value
    return losses


def make_micro_step(next_batch: Callable[[], np.ndarray], teacher, students: nn.Layer,
                    relation_heads: Dict[str, int]) -> Callable[[], Dict[str, paddle.Tensor]]:
    """The ``micro_step`` ``Trainer`` runs: draw a batch of token ids, return the named losses.
    ``students`` is the trainer's layer (``StudentsQKV``, or it wrapped in ``paddle.DataParallel``)."""

    def micro_step() -> Dict[str, paddle.Tensor]:
        return distill_losses(teacher, students, relation_heads, paddle.to_tensor(next_batch()))

    return micro_step

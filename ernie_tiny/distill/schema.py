"""The distillation config (`tools/distill.py -c CONFIG`): every key, its type and default.

Read by ``ernie_tiny.config.load_config``; unknown keys and wrong types are errors naming the
key, and ``check()`` methods catch impossible combinations before any work starts.
"""
from __future__ import annotations

from pydantic import Field

from ernie_tiny.config import Section
from ernie_tiny.schema import (BUILTIN_SOURCES, DataSection, GlobalSection, ModelSection, OptimizerSection,  # noqa: F401
                               TokenizerSection, TrainSection)


class DistillSection(Section):
    teacher_layer: int = Field(-1, description="0-based teacher layer whose Q/K/V are distilled; -1 = last")
    student_layer: int = Field(-1, description="0-based student layer; -1 = last (MiniLMv2)")
    relation_heads: int = Field(12, ge=1)


class DistillConfig(Section):
    Global: GlobalSection = Field(default_factory=GlobalSection)
    Data: DataSection = Field(default_factory=DataSection)
    Tokenizer: TokenizerSection = Field(default_factory=TokenizerSection)
    Teacher: ModelSection = Field(default_factory=lambda: ModelSection(num_layers=12, hidden_size=768, intermediate_size=3072))
    Student: ModelSection = Field(default_factory=ModelSection)
    Distill: DistillSection = Field(default_factory=DistillSection)
    Optimizer: OptimizerSection = Field(default_factory=OptimizerSection)
    Train: TrainSection = Field(default_factory=TrainSection)

    def check(self):
        if self.Tokenizer.source == "teacher" and self.Teacher.name_or_path is None:
            yield "Tokenizer.source", (
                "'teacher', but the teacher is built from sizes and has no tokenizer: "
                "use 'corpus', a PaddleNLP name or a directory")
        yield from check_layers_and_heads(self, self.Teacher.sizes(), self.Student.sizes())


def check_layers_and_heads(config: DistillConfig, teacher: dict, student: dict):
    """Problems with Distill.* given the (possibly partly unknown) model sizes."""
    d = config.Distill
    for role, layer, sizes in (("teacher", d.teacher_layer, teacher), ("student", d.student_layer, student)):
        n = sizes.get("num_layers")
        if n is not None and not -n <= layer < n:
            yield f"Distill.{role}_layer", f"{layer} is outside the {role}'s {n} layers (0..{n - 1}, or -1 for the last)"
    for role, sizes in (("teacher", teacher), ("student", student)):
        h = sizes.get("hidden_size")
        if h is not None and h % d.relation_heads:
            th, sh = teacher.get("hidden_size", "?"), student.get("hidden_size", "?")
            yield "Distill.relation_heads", (
                f"{d.relation_heads} does not divide the {role} hidden size {h}: relation heads must divide "
                f"both hidden sizes (teacher {th}, student {sh})")
            return

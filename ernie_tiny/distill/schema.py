"""The distillation config (`tools/distill.py -c CONFIG`): every key, its type and default.

Read by ``ernie_tiny.config.load_config``; unknown keys and wrong types are errors naming the
key, and ``check()`` methods catch impossible combinations before any work starts.
"""
from __future__ import annotations

import os
import re
from typing import List, Literal, Optional

from pydantic import Field

from ernie_tiny import model_files
from ernie_tiny.config import Section
from ernie_tiny.schema import (BUILTIN_SOURCES, DataSection, GlobalSection, ModelSection, OptimizerSection,  # noqa: F401
                               TokenizerSection, TrainSection, check_model_fits)


class DistillSection(Section):
    teacher_layer: int = Field(-1, description="0-based teacher layer whose Q/K/V are distilled; -1 = last")
    student_layer: int = Field(-1, description="0-based student layer; -1 = last (MiniLMv2)")
    relation_heads: int = Field(12, ge=1)
    teacher_engine: Literal["auto", "eager", "inference"] = Field(
        "auto", description="how the frozen teacher runs: 'inference' = compiled graph on Paddle Inference, "
                            "'eager' = dygraph, 'auto' = inference where it builds and matches eager, else eager")


class StudentEntry(ModelSection):
    """One of several students learning from the same teacher pass (``Students:``): a model
    (sizes or ``name_or_path``) plus its own distilled layer, relation heads and optimizer
    settings (each ``None`` = the run's ``Distill`` / ``Optimizer`` value)."""

    name: str = Field(description="the student's name: its output folder students/<name>/ and log columns")
    student_layer: Optional[int] = Field(None, description="0-based layer whose Q/K/V are distilled; None = Distill's")
    relation_heads: Optional[int] = Field(None, ge=1, description="None = Distill.relation_heads")
    lr: Optional[float] = Field(None, gt=0, description="peak learning rate on the shared schedule; None = Optimizer.lr")
    betas: Optional[List[float]] = Field(None, min_length=2, max_length=2)
    eps: Optional[float] = Field(None, gt=0)
    weight_decay: Optional[float] = Field(None, ge=0)
    clip_norm: Optional[float] = Field(None, ge=0, description="global-norm clipping of this student's gradients")

    def check(self):
        yield from super().check()
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]*", self.name):
            yield "name", f"{self.name!r}: use letters, digits, '_' and '-' (it names a folder and log columns)"


class DistillConfig(Section):
    Global: GlobalSection = Field(default_factory=GlobalSection)
    Data: DataSection = Field(default_factory=DataSection)
    Tokenizer: TokenizerSection = Field(default_factory=TokenizerSection)
    Teacher: ModelSection = Field(default_factory=lambda: ModelSection(num_layers=12, hidden_size=768, intermediate_size=3072))
    Student: ModelSection = Field(default_factory=ModelSection)
    Students: List[StudentEntry] = Field(default_factory=list, description="several students, one teacher pass")
    Distill: DistillSection = Field(default_factory=DistillSection)
    Optimizer: OptimizerSection = Field(default_factory=OptimizerSection)
    Train: TrainSection = Field(default_factory=TrainSection)

    def check(self):
        if self.Tokenizer.source == "teacher" and self.Teacher.name_or_path is None:
            yield "Tokenizer.source", (
                "'teacher', but the teacher is built from sizes and has no tokenizer: "
                "use 'corpus', a PaddleNLP name or a directory")
        if self.Students and self.Student != ModelSection():  # (a resolved config lists the default Student)
            yield "Students", "give either Student (one student) or Students (several), not both"
        seen = {}
        for i, entry in enumerate(self.Students):
            if entry.name in seen:
                yield f"Students.{i}.name", f"{entry.name!r} is already Students.{seen[entry.name]}"
            seen.setdefault(entry.name, i)
        yield from check_layers_and_heads(self, self.Teacher.sizes(), [s.sizes() for _, s in self.student_specs()])
        yield from self.check_models_fit()

    def teacher_tokenizer_dir(self) -> Optional[str]:
        """The teacher's directory when it is the tokenizer (``Tokenizer.source: teacher``) and is
        there to read now, not written by an earlier step of the run; else None."""
        teacher = self.Teacher.name_or_path
        if self.Tokenizer.source == "teacher" and self.Teacher.is_directory() and not self.planned(teacher):
            return teacher
        return None

    def tokenizer_vocab_size(self):
        """The tokenizer's size when its directory is known before loading (else None)."""
        teacher = self.teacher_tokenizer_dir()
        if teacher is not None:
            return model_files.tokenizer_vocab_size(teacher)
        return self.Tokenizer.directory_vocab_size()

    def check_models_fit(self):
        """Every model has positions for ``Data.seq_len`` and embeddings for the tokenizer's tokens;
        a teacher directory that is the tokenizer has the tokenizer's files."""
        teacher = self.teacher_tokenizer_dir()
        if teacher is not None and os.path.isdir(teacher):
            try:
                model_files.check_tokenizer_dir(teacher)
            except model_files.ModelFilesError as err:
                yield "Tokenizer.source", f"'teacher', but {err}"
        vocab = self.tokenizer_vocab_size()
        roles = [("Teacher", self.Teacher)] + [
            (f"Students.{i}" if self.Students else "Student", spec) for i, (_, spec) in enumerate(self.student_specs())]
        for role, spec in roles:
            yield from check_model_fits(spec.sizes(), role, self.Data.seq_len, "Data.seq_len", vocab,
                                        f"{role}.name_or_path" if spec.name_or_path else f"{role}.vocab_size")

    def student_specs(self):
        """[(name, ModelSection)]: ``Students`` entries, or the single ``Student`` named ''."""
        if self.Students:
            return [(entry.name, entry) for entry in self.Students]
        return [("", self.Student)]

    def distill_of(self, name: str):
        """(student_layer, relation_heads) of student ``name`` ('' = the single Student)."""
        d = self.Distill
        for entry in self.Students:
            if entry.name == name:
                return (d.student_layer if entry.student_layer is None else entry.student_layer,
                        entry.relation_heads or d.relation_heads)
        return d.student_layer, d.relation_heads


def check_layers_and_heads(config: DistillConfig, teacher: dict, students: List[dict]):
    """Problems with the distilled layers and relation heads given the (possibly partly unknown)
    model sizes: ``students`` in the order of ``config.student_specs()``."""
    d = config.Distill
    n = teacher.get("num_layers")
    if n is not None and not -n <= d.teacher_layer < n:
        yield "Distill.teacher_layer", f"{d.teacher_layer} is outside the teacher's {n} layers (0..{n - 1}, or -1 for the last)"
    for i, ((name, spec), sizes) in enumerate(zip(config.student_specs(), students)):
        layer, heads = config.distill_of(name)
        entry = i if config.Students else None
        layer_key = "Distill.student_layer" if entry is None or spec.student_layer is None \
            else f"Students.{entry}.student_layer"
        heads_key = "Distill.relation_heads" if entry is None or spec.relation_heads is None \
            else f"Students.{entry}.relation_heads"
        who = "student" if entry is None else f"student {name!r}"
        n = sizes.get("num_layers")
        if n is not None and not -n <= layer < n:
            yield layer_key, f"{layer} is outside the {who}'s {n} layers (0..{n - 1}, or -1 for the last)"
        th, sh = teacher.get("hidden_size"), sizes.get("hidden_size")
        for role, h in (("teacher", th), (who, sh)):
            if h is not None and h % heads:
                yield heads_key, (
                    f"{heads} does not divide the {role} hidden size {h}: relation heads must divide "
                    f"both hidden sizes (teacher {th or '?'}, {who} {sh or '?'})")
                break

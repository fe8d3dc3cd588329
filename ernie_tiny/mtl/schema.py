"""The multi-task teacher finetuning config (`tools/teacher_mtl.py -c CONFIG`): every key,
its type and default.

One shared encoder (``Model``) is finetuned on several labelled tasks (``Tasks``: task cards
under ``tasks/``), one micro-batch of one task at a time, the task drawn by ``Schedule``.
Reading this module does not import Paddle; the cards are read and validated here, so a wrong
card name or a broken card stops the run before any work, naming ``Tasks.N.card``.
"""
from __future__ import annotations

import os
from typing import List, Literal

from pydantic import Field

from ernie_tiny import model_files
from ernie_tiny.config import Section
from ernie_tiny.schema import (GlobalSection, ModelSection, OptimizerSection, TaskSampleEntry, TrainSection,
                               load_task_cards, task_length_problems)
from ernie_tiny.tasks.card import TaskCard, load_card


class TeacherTaskEntry(TaskSampleEntry):
    weight: float = Field(1.0, gt=0, description="multiplies the task's loss")


class ScheduleSection(Section):
    """Which task each micro-batch comes from: task i is drawn with probability
    ``proportional``: n_i / sum n; ``temperature``: n_i^(1/T) / sum n^(1/T); ``uniform``: 1/K,
    where n_i is the number of training examples the run reads for task i."""

    kind: Literal["proportional", "temperature", "uniform"] = "temperature"
    temperature: float = Field(2.0, gt=0, description="T of the temperature schedule (1 = proportional)")


class TaskDataSection(Section):
    dir: str = Field("", description="local task files, <dir>/<card name>/train.json ...; '' = each card's "
                                     "builtin or PaddleNLP source")
    eval_batch_size: int = Field(64, ge=1)

    def check(self):
        if self.dir and not os.path.isdir(self.dir):
            yield "dir", f"{self.dir!r}: no such directory"


class MTLTrainSection(TrainSection):
    eval_every: int = Field(200, ge=1, description="optimizer steps between dev evaluations (and at the end)")


class TeacherMTLConfig(Section):
    Global: GlobalSection = Field(default_factory=lambda: GlobalSection(output_dir="output/teacher_mtl"))
    Model: ModelSection = Field(default_factory=ModelSection)
    Tasks: List[TeacherTaskEntry] = Field(min_length=1)
    Schedule: ScheduleSection = Field(default_factory=ScheduleSection)
    Data: TaskDataSection = Field(default_factory=TaskDataSection)
    Optimizer: OptimizerSection = Field(default_factory=lambda: OptimizerSection(
        lr=5e-5, betas=[0.9, 0.999], eps=1e-8, warmup_ratio=0.1))
    Train: MTLTrainSection = Field(default_factory=MTLTrainSection)

    def check(self):
        if not self.Model.name_or_path:
            yield "Model.name_or_path", ("required: the encoder to finetune, a PaddleNLP name "
                                         "(ernie-3.0-xbase-zh) or a save_pretrained directory with its tokenizer")
        elif self.Model.is_directory() and not self.planned(self.Model.name_or_path) \
                and os.path.isdir(self.Model.name_or_path):
            # the model files themselves are ModelSection's own check (Model.name_or_path); the
            # tokenizer is read from there too
            try:
                config = model_files.read_model_config(self.Model.name_or_path)
            except model_files.ModelFilesError:
                config = None  # reported by that check
            if config is not None:
                try:
                    model_files.check_own_tokenizer(self.Model.name_or_path, config)
                except model_files.ModelFilesError as err:
                    yield "Model.name_or_path", str(err)
        problems, loaded = load_task_cards(self.Tasks)
        yield from problems
        yield from task_length_problems(loaded, self.Model.sizes().get("max_position_embeddings"))

    def cards(self) -> List[TaskCard]:
        return [load_card(entry.card) for entry in self.Tasks]

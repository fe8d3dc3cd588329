"""The evaluation config (`tools/evaluate.py -c CONFIG`): every key, its type and default.

One model (``Model.path``, a ``save_pretrained`` directory) is finetuned on every task card in
``Tasks`` at every point of ``Grid``; the best dev score per task goes into the report, beside
the reference rows of ``Report.reference``. Task cards are loaded and checked here, so an
unknown card or missing data file stops the run before Paddle is imported, naming the key
(``Tasks.3.card``).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, List, Optional

from pydantic import Field

from ernie_tiny import model_files
from ernie_tiny.config import Section
from ernie_tiny.schema import GlobalSection, TaskSampleEntry, load_task_cards, task_length_problems


class EvalGlobalSection(GlobalSection):
    output_dir: str = "output/evaluate"


class EvalModelSection(Section):
    path: str = Field(description="the encoder to evaluate: a save_pretrained directory (or a PaddleNLP name)")
    name: str = Field("", description="its row name in the report; '' = the directory's name")

    def display_name(self) -> str:
        return self.name or Path(self.path.rstrip("/\\")).name or self.path

    def check(self):
        if model_files.is_local(self.path) and not self.planned(self.path):
            try:
                model_files.check_pretrained_dir(self.path)
            except model_files.ModelFilesError as err:
                yield "path", (f"{self.path!r} is not a model directory: {err}; make one with "
                               f"tools/distill.py, or give a PaddleNLP model name")


class EvalDataSection(Section):
    dir: str = Field("", description="a directory with one subfolder per task card, in the benchmark's own "
                                     "files; '' = PaddleNLP's loaders (network) or the built-in offline tasks")

    def check(self):
        if self.dir and not os.path.isdir(self.dir):
            yield "dir", f"{self.dir!r}: no such directory"


class EvalTaskEntry(TaskSampleEntry):
    epochs: Optional[int] = Field(None, ge=1, description="None = Grid.epochs, else the card's")


class GridSection(Section):
    """The hyperparameter grid (paper appendix A.7). Each task runs every combination of
    batch size x learning rate x dropout, for every seed; the best mean dev score over the
    seeds is kept."""

    batch_sizes: List[int] = Field(default_factory=lambda: [16, 32, 64], min_length=1)
    learning_rates: List[float] = Field(default_factory=lambda: [1e-5, 2e-5, 3e-5, 5e-5], min_length=1)
    dropouts: List[float] = Field(default_factory=lambda: [0.1], min_length=1,
                                  description="the dropout grid when card_overrides is off; 0.1 keeps the saved "
                                              "config's dropouts, another value sets the encoder's (not the head's)")
    card_overrides: bool = Field(True, description="take each card's dropout grid (instead of dropouts) and add "
                                                   "its extra batch sizes (CLUEWSC: dropout {0.0, 0.1}, batch 8)")
    seeds: List[int] = Field(default_factory=lambda: [42], min_length=1)
    epochs: Optional[int] = Field(None, ge=1, description="None = each card's epochs (paper Table 6)")
    max_steps: int = Field(0, ge=0, description="cap on optimizer steps per point; 0 = epochs x batches")
    eval_every: int = Field(100, ge=0, description="steps between dev evaluations; 0 = once per epoch (a card's "
                                                   "evals_per_epoch can make it shorter: FewCLUE)")
    warmup_ratio: float = Field(0.1, ge=0, le=1, description="of the total steps, rounded down")
    weight_decay: float = Field(0.01, ge=0)
    max_grad_norm: float = Field(1.0, ge=0, description="clip the gradients' global norm to this; 0 = no clipping")

    def check(self):
        for name in ("batch_sizes", "learning_rates", "seeds", "dropouts"):
            values = getattr(self, name)
            if len(set(values)) != len(values):
                yield name, f"{values} repeats a value"
        for i, bs in enumerate(self.batch_sizes):
            if bs < 1:
                yield f"batch_sizes.{i}", f"{bs} is not a batch size"
        for i, lr in enumerate(self.learning_rates):
            if not 0 < lr < 1:
                yield f"learning_rates.{i}", f"{lr} is not a learning rate (0 < lr < 1)"
        for i, p in enumerate(self.dropouts):
            if not 0 <= p < 1:
                yield f"dropouts.{i}", f"{p} is not a dropout probability (0 <= p < 1)"


class ReportSection(Section):
    reference: Dict[str, Dict[str, float]] = Field(
        default_factory=dict, description="rows to compare with: {row name: {task card name: dev score}}")
    groups: Dict[str, List[str]] = Field(default_factory=dict, description=(
        "the comparison table's column groups, in order: {group name: [task card names]} (paper Table 5: "
        "In-Domain, Out-Domain, Low-Resource); its Avg is over all their tasks. Empty: one column per task "
        "some reference row has"))
    chart: bool = True

    def check(self):
        seen = set()
        for group, tasks in self.groups.items():
            for i, task in enumerate(tasks):
                if task in seen:
                    yield f"groups.{group}.{i}", f"{task!r} is in more than one group"
                seen.add(task)
        for row, scores in self.reference.items():
            for task, value in scores.items():
                if not 0 <= value <= 100:
                    yield f"reference.{row}.{task}", f"{value} is not a score in percent (0-100)"


class EvaluateConfig(Section):
    Global: EvalGlobalSection = Field(default_factory=EvalGlobalSection)
    Model: EvalModelSection
    Data: EvalDataSection = Field(default_factory=EvalDataSection)
    Tasks: List[EvalTaskEntry] = Field(min_length=1)
    Grid: GridSection = Field(default_factory=GridSection)
    Report: ReportSection = Field(default_factory=ReportSection)

    def check(self):
        positions = _max_positions(self.Model.path)
        problems, loaded = load_task_cards(self.Tasks)
        yield from problems
        for i, task, card in loaded:
            yield from _check_local_files(card, self.Data.dir, f"Tasks.{i}.card")
        yield from task_length_problems(loaded, positions)

    def cards(self):
        """The task cards, in config order."""
        from ernie_tiny.tasks.card import load_card

        return [load_card(task.card) for task in self.Tasks]


def _max_positions(model_path: str) -> int:
    """The model's position limit, from a local directory's config.json (0 when unknown)."""
    try:
        return model_files.read_model_config(model_path).get("max_position_embeddings", 0)
    except model_files.ModelFilesError:
        return 0


def _check_local_files(card, data_dir: str, key: str):
    """With ``Data.dir``, every card that reads local files must find them there now, not hours in."""
    if not data_dir or not os.path.isdir(data_dir) or card.source.local is None:
        return
    for split in ("train", "dev"):
        name = card.source.local.splits.get(split)
        path = Path(data_dir) / card.name / name if name else None
        if path is None or not path.is_file():
            yield key, (f"{card.name}: no {split} file {str(path) if path else '(the card names none)'}; "
                        f"{card.source.download or 'see the card'}")

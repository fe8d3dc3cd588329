"""Task data as every stage reads it: one split of a task card, read (validated against the
card, sampled) and encoded to model inputs; and a task's train + dev pair, with the
majority-class baseline that every score is printed beside.

``sample`` is anything with ``max_train_examples``, ``max_dev_examples`` (0 = all, else a
fixed-seed sample) and ``max_length`` (tokens, 0 = the card's): a config's ``Tasks`` entry,
``Task`` section, or a ``Sample``. Nothing here imports Paddle."""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Iterator, List, Optional, Tuple

import numpy as np

from ernie_tiny.tasks.card import TaskCard
from ernie_tiny.tasks.encode import IGNORE, Features, encode
from ernie_tiny.tasks.metrics import score
from ernie_tiny.tasks.readers import TaskSplit, read_split, require_rows


@dataclass(frozen=True)
class Sample:
    """How much of each split a run reads, and how long its examples may be."""

    max_train_examples: int = 0
    max_dev_examples: int = 0
    max_length: int = 0


def read_task_split(card: TaskCard, split: str, sample, data_dir: str = "",
                    labels: Optional[List[str]] = None) -> TaskSplit:
    """One split as ``sample`` samples it, with at least one row (``labels``: the train split's)."""
    return require_rows(read_split(card, split, data_dir or None, labels=labels,
                                   max_examples=getattr(sample, f"max_{split}_examples")))


def read_task_splits(card: TaskCard, sample, data_dir: str = "") -> Tuple[TaskSplit, TaskSplit]:
    """(train, dev), dev labelled by train's label list."""
    train = read_task_split(card, "train", sample, data_dir)
    return train, read_task_split(card, "dev", sample, data_dir, labels=train.labels)


@dataclass
class TaskData:
    """One split of a task, read and encoded by a tokenizer; a sequence of its ``Features``."""

    card: TaskCard
    split: str
    labels: List[str]
    features: List[Features]
    skipped: int  # rows dropped because the card's ``label.skip`` names their label
    source: str

    @classmethod
    def load(cls, card: TaskCard, split: str, sample, tokenizer, data_dir: str = "",
             labels: Optional[List[str]] = None) -> "TaskData":
        return cls.encoded(read_task_split(card, split, sample, data_dir, labels), sample, tokenizer)

    @classmethod
    def encoded(cls, read: TaskSplit, sample, tokenizer) -> "TaskData":
        card = read.card
        features = encode(read.examples, tokenizer, card.tokens_per_example(sample.max_length), card.head)
        return cls(card, read.split, read.labels, features, read.skipped, read.source)

    def __len__(self) -> int:
        return len(self.features)

    def __getitem__(self, index):
        return self.features[index]

    def __iter__(self) -> Iterator[Features]:
        return iter(self.features)


@dataclass
class TrainDev:
    """A task's train and dev splits, encoded; dev labelled by train's label list."""

    train: TaskData
    dev: TaskData

    @classmethod
    def load(cls, card: TaskCard, sample, tokenizer, data_dir: str = "") -> "TrainDev":
        train, dev = read_task_splits(card, sample, data_dir)
        return cls(TaskData.encoded(train, sample, tokenizer), TaskData.encoded(dev, sample, tokenizer))

    @property
    def card(self) -> TaskCard:
        return self.train.card

    @property
    def name(self) -> str:
        return self.card.name

    @property
    def labels(self) -> List[str]:
        return self.train.labels

    @cached_property
    def majority(self) -> float:
        """``majority_baseline`` of the two splits."""
        return majority_baseline(self.train, self.dev)


def majority_baseline(train: TaskData, dev: TaskData) -> float:
    """The dev score, under the task's metric, of always predicting the train split's most
    frequent label (tag, for token tasks): the floor a finetuned model has to beat. It is taken
    from train because a baseline must not see the labels it is scored on."""
    card = dev.card
    if card.head == "token":
        counts = np.bincount([t for f in train.features for t in f.labels if t != IGNORE], minlength=len(train.labels))
        width = max(len(f.labels) for f in dev.features)
        gold = np.array([f.labels + [IGNORE] * (width - len(f.labels)) for f in dev.features])
    else:
        counts = np.bincount([f.labels for f in train.features], minlength=len(train.labels))
        gold = np.array([f.labels for f in dev.features])
    return float(score(card.metric, np.full_like(gold, int(np.argmax(counts))), gold, train.labels))

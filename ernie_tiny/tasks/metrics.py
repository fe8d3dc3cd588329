"""Task metrics, from scikit-learn and seqeval (entity-level F1), as a card names them.
All scores are percentages (0-100), as the CLUE tables report them."""
from __future__ import annotations

from typing import List, Sequence

import numpy as np

from ernie_tiny.tasks.encode import IGNORE


def _token_pairs(predictions: np.ndarray, labels: np.ndarray):
    """Per sequence, the (gold, predicted) label ids at positions that are not IGNORE."""
    for pred_row, gold_row in zip(predictions, labels):
        keep = gold_row != IGNORE
        yield gold_row[keep], pred_row[keep]


def score(metric: str, predictions, labels, label_names: Sequence[str]) -> float:
    """``predictions``/``labels``: class ids [n] (sequence) or [n, seq] with IGNORE (token)."""
    from sklearn.metrics import accuracy_score, f1_score

    predictions, labels = np.asarray(predictions), np.asarray(labels)
    if metric == "accuracy":
        return 100.0 * accuracy_score(labels, predictions)
    if metric == "macro_f1":
        return 100.0 * f1_score(labels, predictions, average="macro")
    if metric == "token_accuracy":
        gold, pred = zip(*_token_pairs(predictions, labels))
        return 100.0 * accuracy_score(np.concatenate(gold), np.concatenate(pred))
    if metric == "entity_f1":
        from seqeval.metrics import f1_score as entity_f1

        gold_tags: List[List[str]] = []
        pred_tags: List[List[str]] = []
        for gold, pred in _token_pairs(predictions, labels):
            gold_tags.append([label_names[i] for i in gold])
            pred_tags.append([label_names[i] for i in pred])
        return 100.0 * entity_f1(gold_tags, pred_tags)
    raise ValueError(f"unknown metric {metric!r}")

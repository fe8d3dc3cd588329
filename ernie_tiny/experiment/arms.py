"""The claim experiment's two arms (the teachers it distils from) and its task sets (in-domain,
held-out, one per low-resource share): what its steps are made of and its report is laid out by."""
from __future__ import annotations

from typing import List

from ernie_tiny.experiment.schema import ExperimentConfig

ARMS = {"vanilla": "pretrain", "mitkd": "teacher_mtl"}  # arm -> the step whose teacher it distils
ARM_NAMES = {"vanilla": "MiniLMv2 (vanilla teacher)", "mitkd": "MITKD (multi-task teacher)"}


def share_label(share: float) -> str:
    return f"low_resource_{share * 100:g}pct"


def train_size(card_name: str) -> int:
    from ernie_tiny.tasks.card import load_card
    from ernie_tiny.tasks.readers import read_split

    return len(read_split(load_card(card_name), "train").examples)


def task_sets(config: ExperimentConfig) -> List[tuple]:
    """[(set name, [task entry dicts])]: in-domain, held-out, then one set per low-resource share."""
    ev = config.Evaluation
    def dump(entries):
        return [e.model_dump(exclude_defaults=True) for e in entries]

    sets = [("in_domain", dump(ev.in_domain)), ("held_out", dump(ev.held_out))]
    low = ev.low_resource
    size = train_size(low.card)
    for share in low.fractions:
        entry = {"card": low.card, "max_train_examples": max(1, round(share * size))}
        entry.update({k: v for k, v in (("max_dev_examples", low.max_dev_examples), ("max_length", low.max_length),
                                        ("epochs", low.epochs)) if v})
        sets.append((share_label(share), [entry]))
    return sets

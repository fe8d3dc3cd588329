"""Which task each micro-batch comes from, and the batches themselves.

Every micro-batch holds examples of one task only (homogeneous task batches): the task is
drawn from a categorical distribution over the K tasks, built from their training set sizes
n_i (the examples this run reads):

    proportional   p_i = n_i / sum_j n_j
    temperature    p_i = n_i^(1/T) / sum_j n_j^(1/T)     (T = 1: proportional; T -> inf: uniform)
    uniform        p_i = 1 / K

Temperature sampling (T > 1) lifts small tasks without letting the largest dominate, as in
multilingual/multi-task BERT training. The draw uses its own NumPy generator seeded with
``Global.seed`` alone, not the rank: every data-parallel rank draws the same task at every
micro-step, so the ranks' gradients come from the same task heads (see ``mtl/model.py``).
The generator's state is part of the checkpoint, so a resumed run draws the same tasks as an
uninterrupted one.
"""
from __future__ import annotations

from typing import Dict, List, Sequence, Tuple

import numpy as np

SCHEDULES = ("proportional", "temperature", "uniform")


def task_probabilities(sizes: Sequence[int], kind: str, temperature: float = 2.0) -> np.ndarray:
    """p_i for training set sizes ``sizes`` under schedule ``kind`` (see the module docstring)."""
    n = np.asarray(sizes, dtype=np.float64)
    if n.ndim != 1 or len(n) == 0 or (n <= 0).any():
        raise ValueError(f"task sizes must be positive, got {list(sizes)}")
    if kind == "uniform":
        weights = np.ones_like(n)
    elif kind == "proportional":
        weights = n
    elif kind == "temperature":
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        weights = n ** (1.0 / temperature)
    else:
        raise ValueError(f"unknown schedule {kind!r} (one of {', '.join(SCHEDULES)})")
    return weights / weights.sum()


class TaskSchedule:
    """Draws task names with ``task_probabilities``; resumable (``state_dict``)."""

    def __init__(self, names: Sequence[str], sizes: Sequence[int], kind: str, temperature: float = 2.0,
                 seed: int = 0):
        self.names: List[str] = list(names)
        if len(set(self.names)) != len(self.names):
            raise ValueError(f"task names repeat: {self.names}")
        self.probabilities = task_probabilities(sizes, kind, temperature)
        self.rng = np.random.default_rng(seed)
        self.draws = 0

    def next_task(self) -> str:
        self.draws += 1
        return self.names[self.rng.choice(len(self.names), p=self.probabilities)]

    def state_dict(self) -> dict:
        """JSON-serialisable (it goes into ``trainer_state.json``)."""
        return {"names": self.names, "probabilities": self.probabilities.tolist(), "draws": self.draws,
                "rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict) -> None:
        if state["names"] != self.names or not np.allclose(state["probabilities"], self.probabilities):
            raise ValueError(
                f"cannot resume the task schedule: the checkpoint has tasks {state['names']} with probabilities "
                f"{np.round(state['probabilities'], 4).tolist()}, this run {self.names} with "
                f"{np.round(self.probabilities, 4).tolist()} (Tasks or Schedule changed)")
        self.rng.bit_generator.state = state["rng"]
        self.draws = state["draws"]


class MultiTaskBatches:
    """The training data of a multi-task run: the schedule picks a task, that task's sampler
    (``ResumableBatchSampler``: its own shuffled epochs, this rank's slice) picks the examples.
    Its state (schedule + every sampler) is what a checkpoint needs to continue the data order."""

    def __init__(self, schedule: TaskSchedule, samplers: Dict[str, object]):
        if sorted(samplers) != sorted(schedule.names):
            raise ValueError(f"samplers {sorted(samplers)} do not match the schedule's tasks {schedule.names}")
        self.schedule, self.samplers = schedule, samplers

    def next_batch(self) -> Tuple[str, np.ndarray]:
        """(task name, example indices into that task's training features)."""
        task = self.schedule.next_task()
        return task, self.samplers[task].next_batch()

    def state_dict(self) -> dict:
        return {"schedule": self.schedule.state_dict(),
                "samplers": {name: sampler.state_dict() for name, sampler in self.samplers.items()}}

    def load_state_dict(self, state: dict) -> None:
        self.schedule.load_state_dict(state["schedule"])
        for name, sampler in self.samplers.items():
            sampler.load_state_dict(state["samplers"][name])

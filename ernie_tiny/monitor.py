"""What a long run shows: a progress bar with tokens/s and ETA on the console, VisualDL
scalars and a JSON-lines log (``train_log.jsonl``) under the output directory.
Only the main rank reports; on other ranks every call is a no-op."""
from __future__ import annotations

import contextlib
import json
import logging
import sys
import time
from pathlib import Path
from dataclasses import dataclass
from typing import Dict, List, Optional

from tqdm import tqdm

TRAIN_LOG = "train_log.jsonl"


@dataclass(frozen=True)
class LossCurve:
    """The first and the last record of a train_log.jsonl (each record's ``loss`` is the mean
    over the steps since the previous record)."""

    first: dict
    last: dict

    @property
    def first_loss(self) -> float:
        return self.first["loss"]

    @property
    def last_loss(self) -> float:
        return self.last["loss"]

    @classmethod
    def read(cls, output_dir) -> Optional["LossCurve"]:
        """The run's curve (None before its first log line)."""
        log = read_train_log(output_dir)
        return cls(log[0], log[-1]) if log else None


def read_train_log(output_dir) -> List[dict]:
    """The records ``TrainMonitor`` wrote to ``<output_dir>/train_log.jsonl`` ([] if there is none)."""
    path = Path(output_dir) / TRAIN_LOG
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


class TrainMonitor:
    def __init__(self, output_dir, total_steps: int, initial_step: int = 0, enabled: bool = True,
                 desc: str = "distill"):
        self.enabled = enabled
        if not enabled:
            return
        from visualdl import LogWriter

        output_dir = Path(output_dir)
        self.writer = LogWriter(logdir=str(output_dir / "vdl"))
        self.log_file = open(output_dir / TRAIN_LOG, "a", encoding="utf-8")
        self.bar = tqdm(total=total_steps, initial=initial_step, desc=desc, unit="step", dynamic_ncols=True,
                        file=sys.stderr, mininterval=1.0 if sys.stderr.isatty() else 30.0)
        self.last_time, self.last_step = time.time(), initial_step

    def step(self, step: int, tokens_per_second: float, scalars: Dict[str, float]) -> None:
        if not self.enabled:
            return
        self.bar.update(step - self.bar.n)
        self.bar.set_postfix({k: f"{v:.4g}" for k, v in scalars.items() if k.startswith("loss")}
                             | {"tok/s": f"{tokens_per_second:.0f}"}, refresh=False)

    def log(self, step: int, scalars: Dict[str, float]) -> None:
        if not self.enabled:
            return
        for name, value in scalars.items():
            self.writer.add_scalar(tag=name, value=float(value), step=step)
        self.log_file.write(json.dumps({"step": step, **{k: float(v) for k, v in scalars.items()}}) + "\n")
        self.log_file.flush()
        self.writer.flush()

    def write(self, message: str) -> None:
        if self.enabled:
            self.bar.write(message, file=sys.stderr)

    def close(self) -> None:
        if not self.enabled:
            return
        self.bar.close()
        self.writer.close()
        self.log_file.close()


@contextlib.contextmanager
def quiet_logger(name: str = "", level: int = logging.WARNING):
    """Raise logger ``name`` (the root logger: "") to ``level`` for the block: onnxruntime's
    quantizer and transformer optimizer log a line per tensor or fusion otherwise."""
    logger = logging.getLogger(name)
    saved = logger.level
    logger.setLevel(level)
    try:
        yield
    finally:
        logger.setLevel(saved)

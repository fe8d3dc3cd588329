"""The finetuning schedule of one grid point, as PaddleNLP's CLUE benchmark sets it
(``examples/benchmark/clue/classification/run_clue_classifier.py``): how many optimizer steps,
how many of them warm up, and at which steps dev is scored. Nothing here imports Paddle.

- steps per epoch: ``ceil(examples / batch)``, the last partial batch kept (its batch sampler
  does not drop it); total = epochs x that, or ``max_steps``;
- warm-up: ``floor(ratio x total)`` steps (``LinearDecayWithWarmup`` with a proportion);
- dev: every ``eval_every`` steps and at the last step (its ``save_steps`` 100). Ours adds: a
  card with ``evals_per_epoch: k`` (FewCLUE, a few hundred rows, where 100 steps can be the whole
  run) is scored at least every ``max(1, steps per epoch // k)`` steps.
"""
from __future__ import annotations

import math
from typing import List

# Enters every grid point's identity (``evaluation.runner.point_key``): a point finished under an
# earlier schedule is run again rather than reused.
FINETUNE_PROTOCOL = ("paddlenlp-clue-benchmark: ceil steps per epoch, floor warm-up, global-norm clip, "
                     "encoder-only grid dropout")


def batches_per_epoch(examples: int, batch_size: int) -> int:
    """Batches of one epoch, the last partial one kept."""
    if batch_size < 1:
        raise ValueError(f"batch size {batch_size} is not a batch size")
    return max(1, math.ceil(examples / batch_size))


def total_steps(examples: int, batch_size: int, epochs: int, max_steps: int = 0) -> int:
    """Optimizer steps of the run: ``max_steps`` when set, else epochs x batches per epoch."""
    return max_steps or epochs * batches_per_epoch(examples, batch_size)


def warmup_steps(total: int, ratio: float) -> int:
    """Warm-up steps: the ratio of the total, rounded down."""
    return int(math.floor(ratio * total))


def eval_interval(batches: int, eval_every: int, evals_per_epoch: int = 0) -> int:
    """Steps between dev scores: ``eval_every`` (0: once per epoch), made shorter when the card
    asks for ``evals_per_epoch`` scores in an epoch of ``batches`` steps."""
    interval = eval_every or batches
    if evals_per_epoch:
        interval = min(interval, max(1, batches // evals_per_epoch))
    return interval


def eval_steps(total: int, interval: int) -> List[int]:
    """The steps at which dev is scored: every ``interval``-th and the last."""
    steps = list(range(interval, total + 1, interval))
    if not steps or steps[-1] != total:
        steps.append(total)
    return steps

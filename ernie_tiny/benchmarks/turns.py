"""Runtimes timed in turns on the same inputs, and each one's ratio to another taken round by
round, so background load that changes between rounds moves both sides of a ratio alike."""
from __future__ import annotations

import time

BLOCK, MIN_ROUNDS = 5, 3  # timed calls per runtime per round; rounds taken even past max_seconds


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def measure(runtimes: dict, inputs: tuple, iters: int, warmup: int, max_seconds: float, block: int = BLOCK,
            pause: float | None = None) -> dict:
    """Per runtime: the list of timed latencies (seconds). Runtimes take turns by blocks: in each
    round every runtime rests ``pause`` (default ``SPIN_PAUSE``: the previous runtime's worker
    threads may still be spinning), makes one untimed call and then ``block`` timed calls back to
    back; at least ``MIN_ROUNDS`` rounds, more until ``iters`` calls or ``max_seconds``."""
    from ernie_tiny.deploy.backend_timing import SPIN_PAUSE, warmup_calls

    pause = SPIN_PAUSE if pause is None else pause
    for fn in runtimes.values():
        for _ in range(warmup_calls(fn, warmup)):
            fn(*inputs)
    times = {name: [] for name in runtimes}
    started, rounds = time.perf_counter(), 0
    while min(len(t) for t in times.values()) < iters:
        for name, fn in runtimes.items():
            time.sleep(pause)
            fn(*inputs)
            times[name].extend(timed(lambda: fn(*inputs)) for _ in range(min(block, iters - len(times[name]))))
        rounds += 1
        if rounds >= MIN_ROUNDS and time.perf_counter() - started > max_seconds:
            break
    return times


def per_round_ratios(samples, baseline, block: int = BLOCK) -> list:
    """A runtime's median over the baseline's in each round of ``measure`` (its ``block`` timed
    calls against the baseline's of the same round): background load that changes between
    rounds moves both sides of a ratio alike."""
    import numpy as np

    rounds = range(0, min(len(samples), len(baseline)), block)
    return [float(np.median(samples[i:i + block]) / np.median(baseline[i:i + block])) for i in rounds]

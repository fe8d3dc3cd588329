"""Host-side batch preparation one step ahead, with a data order that still resumes exactly.

On GPU, the training step is launched asynchronously; while the device runs batch n, a
background thread draws and prepares batch n+1 on the host (index sampling, packing,
masking, collation: NumPy only; tensors are still made on the main thread). On CPU there is
nothing to overlap, host and "device" being the same cores, so the recipes use ``ahead=0``:
the same code, run in the caller's thread.

A checkpoint must describe the batches the loop has consumed, not the one prepared ahead:
``state_dict()`` is the source's state as it was right after the last batch ``next()``
returned, so a resumed run draws the prepared-but-unused batch again.
"""
from __future__ import annotations

import copy
import queue
import threading
from typing import Any, Callable


class Prefetcher:
    """``next()`` returns ``produce()``'s items in order; ``source`` is the object whose state
    decides them (a sampler: ``state_dict``/``load_state_dict``) and that ``produce`` advances.
    Once ``next()`` was first called, only the prefetch thread touches ``source``."""

    def __init__(self, produce: Callable[[], Any], source, ahead: int = 1):
        if ahead not in (0, 1):
            raise ValueError(f"ahead must be 0 (no thread) or 1, not {ahead}")
        self.produce, self.source, self.ahead = produce, source, ahead
        self._consumed_state = copy.deepcopy(source.state_dict())
        self._queue: "queue.Queue" = queue.Queue(maxsize=1)
        self._stop = threading.Event()
        self._thread = None

    def next(self) -> Any:
        if self.ahead == 0:
            item = self.produce()
            self._consumed_state = copy.deepcopy(self.source.state_dict())
            return item
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="batch-prefetch", daemon=True)
            self._thread.start()
        item, state, error = self._queue.get()
        if error is not None:
            raise error
        self._consumed_state = state
        return item

    def state_dict(self) -> dict:
        return copy.deepcopy(self._consumed_state)

    def load_state_dict(self, state: dict) -> None:
        if self._thread is not None:
            raise RuntimeError("Prefetcher.load_state_dict: batches were already prepared from the old state")
        self.source.load_state_dict(state)
        self._consumed_state = copy.deepcopy(self.source.state_dict())

    def close(self) -> None:
        """Stop the thread (it holds one prepared batch at most)."""
        self._stop.set()
        if self._thread is not None:
            while self._thread.is_alive():
                try:
                    self._queue.get_nowait()
                except queue.Empty:
                    pass
                self._thread.join(timeout=0.05)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                entry = (self.produce(), copy.deepcopy(self.source.state_dict()), None)
            except BaseException as error:  # handed to the consumer, raised in next()
                entry = (None, None, error)
            while not self._stop.is_set():
                try:
                    self._queue.put(entry, timeout=0.1)
                    break
                except queue.Full:
                    continue
            if entry[2] is not None:
                return

"""One rank builds a cached file or directory; the others wait for it on the file system.

No collective is involved (a barrier would start NCCL's 30-minute process-group timeout while
the main rank tokenizes a large corpus). The builder writes its result atomically (a path that
exists is complete); if it fails, it writes ``<path>.failed`` with the reason and the launch it
belongs to, so the waiting ranks stop with that reason instead of waiting forever. A marker
left by an earlier launch is ignored by the waiters and removed by the next builder.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Callable, Optional

from ernie_tiny.files import write_text_atomically

REPORT_EVERY = 30.0  # seconds between the waiting ranks' progress messages
POLL_EVERY = 1.0


class BuildFailed(RuntimeError):
    """The main rank could not build what this rank waits for; the message gives its reason."""


def launch_id() -> str:
    """The same for all ranks of one ``paddle.distributed.launch`` (its endpoints, or the
    launcher's process id), different for the next launch."""
    key = os.environ.get("PADDLE_TRAINER_ENDPOINTS") or os.environ.get("PADDLE_MASTER") or f"ppid={os.getppid()}"
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def failed_marker(path: Path) -> Path:
    path = Path(path)
    return path.with_name(path.name + ".failed")


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def build_once(path: Path, is_complete: Callable[[Path], bool], build: Callable[[], object], what: str) -> Path:
    """On the main rank: build ``path`` unless it is complete; on failure leave the marker."""
    path, marker = Path(path), failed_marker(path)
    if is_complete(path):
        return path
    marker.unlink(missing_ok=True)
    try:
        build()
    except BaseException as err:
        reason = f"{type(err).__name__}: {err}"
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomically(marker, json.dumps({"launch": launch_id(), "what": what, "reason": reason}))
        raise
    return path


def _failure(marker: Path) -> Optional[str]:
    """The reason in a marker of this launch, or None (no marker, unreadable, or stale)."""
    try:
        data = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data.get("reason", "unknown") if data.get("launch") == launch_id() else None


def wait_for(path: Path, is_complete: Callable[[Path], bool], what: str, rank: int,
             report_every: float = REPORT_EVERY, poll_every: float = POLL_EVERY,
             timeout: float = 0.0) -> Path:
    """On a non-main rank: poll until ``path`` is complete (returns it), the main rank's failure
    marker appears (raises ``BuildFailed``) or ``timeout`` seconds pass (0 = no limit)."""
    path, marker = Path(path), failed_marker(path)
    start = last_report = time.monotonic()
    while not is_complete(path):
        reason = _failure(marker)
        if reason is not None:
            raise BuildFailed(f"rank {rank}: the main rank failed to build the {what} {path}: {reason} "
                              f"(marker: {marker})")
        now = time.monotonic()
        if timeout and now - start > timeout:
            raise TimeoutError(f"rank {rank}: the {what} {path} was not built within {timeout:.0f} s")
        if now - last_report >= report_every:
            _log(f"rank {rank}: still waiting for the main rank to build the {what} {path} "
                 f"({now - start:.0f} s, file-based wait, no collective)")
            last_report = now
        time.sleep(poll_every)
    _log(f"rank {rank}: the {what} {path} is ready after {time.monotonic() - start:.1f} s "
         f"(file-based wait, no collective)")
    return path


def build_or_wait(path: Path, is_complete: Callable[[Path], bool], build: Callable[[], object], what: str,
                  rank: int, is_main: bool, **wait_options) -> Path:
    """The main rank builds (or reuses) ``path``; the other ranks wait for it on the file system."""
    if is_main:
        return build_once(path, is_complete, build, what)
    return wait_for(path, is_complete, what, rank, **wait_options)

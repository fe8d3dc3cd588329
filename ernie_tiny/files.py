"""Files written whole or not at all: the content goes to a temporary file beside the target
(same directory, same extension, so writers that go by the extension still work), which then
replaces the target in one rename."""
from __future__ import annotations

from pathlib import Path
from typing import Callable


def write_atomically(path: Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)``, then rename ``tmp`` to ``path``; a crash leaves the old file (or none),
    and an exception inside ``write`` removes ``tmp``."""
    path = Path(path)
    tmp = path.with_name(f".tmp_{path.name}")
    try:
        write(tmp)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    tmp.replace(path)
    return path


def write_text_atomically(path: Path, text: str) -> Path:
    return write_atomically(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))

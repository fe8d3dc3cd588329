"""Files and directories written whole or not at all: the content goes to a temporary beside
the target (same directory; a file keeps its extension, so writers that go by the extension
still work), which then replaces the target in one rename."""
from __future__ import annotations

import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

# A temporary's name is this + the target's; a run's leftovers are found by it
# (``checkpoint.remove_stale_temporaries``).
TMP_PREFIX = ".tmp_"


def write_atomically(path: Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)``, then rename ``tmp`` to ``path``; a crash leaves the old file (or none),
    and an exception inside ``write`` removes ``tmp``."""
    path = Path(path)
    tmp = path.with_name(f"{TMP_PREFIX}{path.name}")
    try:
        write(tmp)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    tmp.replace(path)
    return path


def write_text_atomically(path: Path, text: str) -> Path:
    return write_atomically(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


@contextmanager
def replacing_directory(directory: Path, tag: str = "") -> Iterator[Path]:
    """Yield a fresh, empty temporary directory beside ``directory``; when the block ends, the
    temporary replaces ``directory`` (the old one is removed first); an exception inside the
    block removes the temporary and leaves ``directory`` as it was. ``tag`` goes into the
    temporary's name, for writers that may run at once (a process id)."""
    directory = Path(directory)
    tmp = directory.with_name(f"{TMP_PREFIX}{directory.name}{tag}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(directory, ignore_errors=True)
    os.replace(tmp, directory)

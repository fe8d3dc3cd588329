"""Reading text files the one way every reader does (configs, corpus, task json/csv/tsv):
UTF-8, with or without a byte-order mark, with LF or CRLF line endings. Anything else (GBK,
UTF-16, a binary file) stops with the file, line and byte offset and how to convert it."""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Iterator, Tuple, Type

from ernie_tiny.errors import InputError

BOM = b"\xef\xbb\xbf"


class TextFileError(InputError):
    """A file that is not UTF-8 text; the message names the file, line and byte offset."""


def _not_utf8(error: Type[InputError], path: Path, number: int, offset: int, reason: str) -> InputError:
    return error(
        f"{path}:{number}: not UTF-8 text ({reason} at byte offset {offset} of the file); "
        f"convert it, e.g. iconv -f GBK -t UTF-8 {path} > {path}.utf8 (GBK, or the encoding it is in)")


def iter_text_lines(path, error: Type[InputError] = TextFileError) -> Iterator[Tuple[int, str]]:
    """(line number, line) of a UTF-8 text file, streamed: the BOM dropped, CRLF read as LF, each
    line keeping its final "\n" (the csv module needs it for quoted fields spanning lines).
    A file that is not UTF-8 text raises ``error`` (the reader's own ``InputError`` class)."""
    path = Path(path)
    if path.is_dir():
        raise error(f"{path}: is a directory, not a text file")
    if not path.is_file():
        raise error(f"{path}: no such file")
    with open(path, "rb") as f:
        yield from decode_lines(f, path, error)


def decode_lines(raw_lines: Iterable[bytes], name, error: Type[InputError] = TextFileError) -> Iterator[Tuple[int, str]]:
    """``iter_text_lines`` of lines of bytes already open (a file, ``io.BytesIO(stdin bytes)``);
    ``name`` stands for their file in messages."""
    offset = 0
    for number, raw in enumerate(raw_lines, 1):
        start = len(BOM) if number == 1 and raw.startswith(BOM) else 0
        nul = raw.find(b"\x00")
        if nul >= 0:
            raise error(f"{name}:{number}: a NUL byte at byte offset {offset + nul}: "
                        f"a binary file, not UTF-8 text")
        try:
            line = raw[start:].decode("utf-8")
        except UnicodeDecodeError as err:
            raise _not_utf8(error, name, number, offset + start + err.start, err.reason) from None
        offset += len(raw)
        if line.endswith("\r\n"):
            line = line[:-2] + "\n"
        yield number, line


def read_text(path, error: Type[InputError] = TextFileError) -> str:
    """The whole file as one string (see ``iter_text_lines``)."""
    return "".join(line for _, line in iter_text_lines(path, error))

"""What the deploy tools (deploy/python/infer.py, deploy/serving/server.py) take from their users,
checked before any work: the expected-failure error, argparse types, and text input files.

An expected failure is a ``DeployInputError``: its message names the file (and line or key) and
what to do; the tools print it and exit with status 2, with no traceback. Anything else is a bug
and keeps its traceback.
"""
from __future__ import annotations

import argparse
import codecs
from typing import List, Tuple


class DeployInputError(ValueError):
    """An input a deploy tool cannot use (a file, a directory, a flag): the message says which and what to do."""


def positive_int(value: str) -> int:
    """argparse type: an integer >= 1."""
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {number}")
    return number


def decode_utf8(data: bytes, name: str) -> str:
    """``data`` as text: UTF-8, with or without a byte-order mark; other encodings stop with the
    line and byte offset of the first byte that is not UTF-8, and the ``iconv`` that converts it."""
    bom = len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0
    try:
        return data[bom:].decode("utf-8")
    except UnicodeDecodeError as err:
        offset = bom + err.start  # in the file
        line = data.count(b"\n", 0, offset) + 1
        raise DeployInputError(
            f"{name}:{line}: not UTF-8 text ({err.reason} at byte offset {offset}); convert the file to UTF-8, "
            f"e.g. iconv -f GBK -t UTF-8 {name} > {name}.utf8 (GBK or whatever its encoding is)") from None


def text_lines(data: bytes, name: str) -> List[Tuple[int, str]]:
    """(line number, text) of each non-blank line of ``data`` (UTF-8, BOM and CRLF accepted);
    ``name`` is the file's name in messages."""
    lines = decode_utf8(data, name).split("\n")
    return [(number, line.rstrip("\r")) for number, line in enumerate(lines, 1) if line.strip()]

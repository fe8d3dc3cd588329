"""What the deploy tools (deploy/python/infer.py, deploy/serving/server.py) take from their users,
checked before any work: the expected-failure error, argparse types, and text input files.

An expected failure is a ``DeployInputError``: its message names the file (and line or key) and
what to do; the tools print it and exit with status 2, with no traceback. Anything else is a bug
and keeps its traceback.
"""
from __future__ import annotations

import argparse
import io
from typing import List, Tuple

from ernie_tiny.errors import InputError
from ernie_tiny.text_files import decode_lines


class DeployInputError(InputError):
    """An input a deploy tool cannot use (a file, a directory, a flag): the message says which and what to do."""


def positive_int(value: str) -> int:
    """argparse type: an integer >= 1."""
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {number}")
    return number


def text_lines(data: bytes, name: str) -> List[Tuple[int, str]]:
    """(line number, text) of each non-blank line of ``data`` (``text_files.decode_lines``: UTF-8,
    BOM and CRLF accepted, other encodings named with line and byte offset); ``name`` is the
    file's name in messages."""
    lines = decode_lines(io.BytesIO(data), name, DeployInputError)
    return [(number, line.rstrip("\n")) for number, line in lines if line.strip()]

"""What the deploy tools (deploy/python/infer.py, deploy/serving/server.py) take from their users,
checked before any work: the expected-failure error, argparse types, and text input files.

An expected failure is a ``DeployInputError``: its message names the file (and line or key) and
what to do; the tools print it and exit with status 2, with no traceback. Anything else is a bug
and keeps its traceback.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import List, Tuple

from ernie_tiny.errors import InputError
from ernie_tiny.text_files import decode_lines, iter_text_lines

STDIN = "-"  # the input name that reads standard input


class DeployInputError(InputError):
    """An input a deploy tool cannot use (a file, a directory, a flag): the message says which and what to do."""


def positive_int(value: str) -> int:
    """argparse type: an integer >= 1."""
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {number}")
    return number


def non_negative_int(value: str) -> int:
    """argparse type: an integer >= 0."""
    number = int(value)
    if number < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {number}")
    return number


def port(value: str) -> int:
    """argparse type: a TCP port, 0 to 65535 (0: one the system picks)."""
    number = int(value)
    if not 0 <= number <= 65535:
        raise argparse.ArgumentTypeError(f"a port is 0 to 65535, got {number}")
    return number


def writable_file(value: str, flag: str = "") -> str:
    """The file ``value`` to write a result to, checked before any work (a DeployInputError whose
    message starts with ``flag``): not a directory, in a directory that exists, and, where
    something is there already, a regular file (results are written beside it and renamed over
    it, which would replace a device, a pipe or a symlink; a symlink is followed to the file it
    names, which is returned)."""
    name = f"{flag} {value}" if flag else value
    path = Path(value)
    if path.is_dir():
        raise DeployInputError(f"{name}: is a directory (give a file name, e.g. {path / 'out.jsonl'})")
    if path.is_symlink():
        path = path.resolve()
    if not path.parent.is_dir():
        raise DeployInputError(f"{name}: directory {path.parent} does not exist (create it first)")
    if path.exists() and not path.is_file():
        raise DeployInputError(f"{name}: is not a regular file (a device, a pipe or a socket); results are written "
                               f"to a file")
    return str(path)


def output_file(value: str) -> str:
    """argparse type: ``writable_file``."""
    try:
        return writable_file(value)
    except DeployInputError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def seconds(value: str) -> float:
    """argparse type: a number of seconds >= 0 (``inf`` for no limit)."""
    try:
        number = float(value)
    except ValueError:
        number = float("nan")
    if not number >= 0:  # also refuses nan and what is no number
        raise argparse.ArgumentTypeError(f"must be a number of seconds >= 0, got {value}")
    return number


def input_name(source: str) -> str:
    """How messages name an input: the file, or ``<stdin>`` for ``-``."""
    return "<stdin>" if source == STDIN else source


def text_lines(source: str) -> List[Tuple[int, str]]:
    """(line number, text) of each non-blank line of the text file ``source``, or of stdin for
    ``-``, read by ``text_files`` (UTF-8, BOM and CRLF accepted; a missing file, a directory, or
    another encoding named with its line and byte offset)."""
    if source == STDIN:
        lines = decode_lines(sys.stdin.buffer, input_name(source), DeployInputError)
    else:
        lines = iter_text_lines(source, DeployInputError)
    return [(number, line.rstrip("\n")) for number, line in lines if line.strip()]

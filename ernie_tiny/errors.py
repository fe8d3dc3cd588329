"""The one family of expected failures: bad input a user can fix (a config, a model or tokenizer
directory, a corpus, task files, a flag). Every such error derives from ``InputError``; its
message names the file (and line or key) and what to do. ``ernie_tiny.cli`` prints it in one
line, without a traceback, and exits with status 2; any other exception keeps its traceback.

No Paddle import: the config layer raises these before Paddle is loaded."""
from __future__ import annotations

INPUT_ERROR_EXIT = 2


class InputError(ValueError):
    """Bad input; the message names the file (line, key) and what to do."""

    what = "input error"  # the heading the CLI prints above the message


def first_line(err: BaseException) -> str:
    """The first line of an exception's message, for a one-line report of a failure that is
    recovered from (a runtime that cannot load a model, a quantizer that gives up); its type's
    name when the message is empty."""
    return (str(err).splitlines() or [type(err).__name__])[0]


def describe(err: BaseException) -> str:
    """``Type: first line of the message`` (just the type's name when the message is empty)."""
    line = first_line(err)
    return line if line == type(err).__name__ else f"{type(err).__name__}: {line}"

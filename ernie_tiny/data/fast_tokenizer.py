"""A fast ERNIE WordPiece tokenizer for shard building, and the token-for-token check that
guards it.

``FastErnieTokenizer`` reads the same vocabulary as PaddleNLP's ``ErnieTokenizer`` and
reproduces its ``convert_tokens_to_ids(tokenize(text))``: characters lower-cased one by one,
control characters dropped, accents stripped (NFD, then combining marks removed), CJK
characters, punctuation and symbols (``_is_symbol``: Unicode S* and a few more) split off, whitespace split, then greedy longest-match
WordPiece with ``[UNK]`` for a word it cannot spell (or one over 100 characters).

Why not the ``tokenizers`` package or PaddleNLP's FastTokenizer: FastTokenizer has no
wheel for our Python (3.11), and ``tokenizers``' BERT pipeline measured only ~3x
``ErnieTokenizer`` on the offline corpus (its normaliser tracks every character's offsets,
which shards do not need). Here each step of a document is one call into CPython's compiled
string code: ``str.lower``, ``unicodedata.normalize``, precompiled ``re`` patterns (on the
Basic Multilingual Plane, where ``re`` matches classes by bitmap) that cut the text into words
and the text between them, ``str.translate`` that turns the CJK characters, punctuation and
symbols between words into their ids, and WordPiece once per distinct word (memoised). Ids
travel as strings of one character per id, read back into arrays with one ``encode`` per
chunk of documents, so Python does a few operations per word, not per token.

Exactness is not assumed: ``check_identical`` compares its ids with the Python tokenizer's
and raises ``TokenizerMismatch`` naming the first document that differs.
"""
from __future__ import annotations

import functools
import itertools
import re
import sys
import unicodedata
from typing import Dict, Iterable, List, Sequence, Tuple

import numpy as np

NAME = "ernie_tiny.FastErnieTokenizer"
MAX_WORD_CHARS = 100  # PaddleNLP's WordpieceTokenizer.max_input_chars_per_word
CACHE_LIMIT = 200_000  # distinct words memoised before the cache starts afresh (memory stays bounded)

# PaddleNLP's BasicTokenizer._is_chinese_char
CJK_RANGES = [(0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F),
              (0x2B740, 0x2B81F), (0x2B820, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F)]
ASCII_PUNCTUATION = [(33, 47), (58, 64), (91, 96), (123, 126)]  # _is_punctuation's non-letter ASCII
EXTRA_SYMBOLS = [0x00AD, 0x00B2, 0x00BA, 0x3007, 0x00B5, 0x00D8, 0x014B, 0x01B1]  # _is_symbol's list


class TokenizerMismatch(ValueError):
    """The fast tokenizer gave other ids than ``ErnieTokenizer``; the message says where."""


class UnsupportedTokenizer(ValueError):
    """The tokenizer's settings have no fast equivalent here (the message says which)."""


def _char_class(ranges: Iterable[Tuple[int, int]]) -> str:
    """A regex character-class body (no brackets) for inclusive code-point ranges."""
    return "".join(re.escape(chr(a)) if a == b else f"{re.escape(chr(a))}-{re.escape(chr(b))}" for a, b in ranges)


def _ranges(flags: Sequence[bool]) -> List[Tuple[int, int]]:
    out, start = [], None
    for cp, flag in enumerate(itertools.chain(flags, [False])):
        if flag and start is None:
            start = cp
        elif not flag and start is not None:
            out.append((start, cp - 1))
            start = None
    return out


ASTRAL = re.compile("[\U00010000-\U0010FFFF]")


@functools.lru_cache(maxsize=2)
def _patterns(astral: bool) -> Tuple[re.Pattern, re.Pattern, re.Pattern]:
    """(characters ``_clean_text`` drops, combining marks, words: the runs of characters that are
    neither whitespace, CJK, punctuation nor symbols, in a capturing group), built once per process
    from the Unicode tables of this Python (as ``ErnieTokenizer``'s own checks are). Without
    ``astral`` the classes cover only the Basic Multilingual Plane, which ``re`` matches with a
    bitmap (a class with code points above U+FFFF is a list of ranges, ~20x slower); text with
    an astral character gets the full patterns."""
    top = sys.maxunicode if astral else 0xFFFF
    categories = [unicodedata.category(chr(cp)) for cp in range(top + 1)]
    dropped = [cat[0] == "C" for cat in categories]
    for keep in "\t\n\r":
        dropped[ord(keep)] = False
    dropped[0] = dropped[0xFFFD] = True
    punct = [cat[0] in "PS" for cat in categories]  # BasicTokenizer splits off punctuation and symbols
    for a, b in ASCII_PUNCTUATION:
        punct[a:b + 1] = [True] * (b - a + 1)
    for cp in EXTRA_SYMBOLS:
        punct[cp] = True
    marks = [cat == "Mn" for cat in categories]
    cjk = _char_class((a, min(b, top)) for a, b in CJK_RANGES if a <= top)
    pun = _char_class(_ranges(punct))
    return (re.compile(f"[{_char_class(_ranges(dropped))}]+"),
            re.compile(f"[{_char_class(_ranges(marks))}]+"),
            re.compile(f"([^\\s{cjk}{pun}]+)"))


def unsupported_reason(tokenizer) -> str:
    """Why ``tokenizer`` cannot be reproduced here, or "" when it can."""
    basic = getattr(tokenizer, "basic_tokenizer", None)
    wordpiece = getattr(tokenizer, "wordpiece_tokenizer", None)
    if basic is None or wordpiece is None or not hasattr(tokenizer, "vocab"):
        return f"{type(tokenizer).__name__} is not a BasicTokenizer + WordPiece tokenizer"
    if not (getattr(tokenizer, "do_lower_case", False) and basic.do_lower_case):
        return "do_lower_case is off"
    if basic.strip_accents is False or not basic.tokenize_chinese_chars or basic.never_split:
        return "strip_accents=False, tokenize_chinese_chars=False or never_split is set"
    if wordpiece.max_input_chars_per_word != MAX_WORD_CHARS:
        return f"max_input_chars_per_word is {wordpiece.max_input_chars_per_word}, not {MAX_WORD_CHARS}"
    return ""


def _id_string(ids: Iterable[int]) -> str:
    """Ids as a string of one character per id (``chr(id)``): a document's ids are then built
    by str.translate and str.join, in C, and read back with one ``encode``."""
    return "".join(map(chr, ids))


class _SingleCharIds(dict):
    """``str.translate`` table for the text between words: code point -> its id character
    (a CJK character, punctuation or symbol is one token: its id, or [UNK]'s), or None for
    whitespace (dropped). Filled on first use of each character."""

    def __init__(self, vocab: Dict[str, int], unk_id: int):
        super().__init__()
        self.vocab, self.unk_id = vocab, unk_id

    def __missing__(self, cp: int):
        char = chr(cp)
        value = self[cp] = None if char.isspace() else chr(self.vocab.get(char, self.unk_id))
        return value


class _WordIds(dict):
    """word -> its WordPiece ids as an id string (``_id_string``), computed on first use."""

    def __init__(self, vocab: Dict[str, int], unk_id: int):
        super().__init__()
        self.vocab, self.unk_id = vocab, unk_id

    def __missing__(self, word: str) -> str:
        if len(self) >= CACHE_LIMIT:
            self.clear()
        ids = self[word] = _id_string(self.wordpiece(word))
        return ids

    def wordpiece(self, word: str) -> tuple:
        """Greedy longest match from the left, ``##`` on continuations; ``[UNK]`` for the whole
        word when a piece cannot be matched (PaddleNLP's WordpieceTokenizer)."""
        if len(word) > MAX_WORD_CHARS:
            return (self.unk_id,)
        ids, start = [], 0
        while start < len(word):
            for end in range(len(word), start, -1):
                piece = word[start:end] if start == 0 else "##" + word[start:end]
                if piece in self.vocab:
                    ids.append(self.vocab[piece])
                    start = end
                    break
            else:
                return (self.unk_id,)
        return tuple(ids)


class FastErnieTokenizer:
    """``ErnieTokenizer``'s ids from the same vocabulary, fast. Picklable (rebuilt in workers)."""

    name = NAME

    def __init__(self, vocab: Dict[str, int], unk_token: str = "[UNK]", special_tokens: Sequence[str] = ()):
        self.vocab = dict(vocab)
        self.unk_token = unk_token
        self.special_tokens = list(special_tokens)
        self._setup()

    @classmethod
    def from_tokenizer(cls, tokenizer) -> "FastErnieTokenizer":
        reason = unsupported_reason(tokenizer)
        if reason:
            raise UnsupportedTokenizer(f"no fast tokenizer for this tokenizer: {reason}")
        return cls(tokenizer.get_vocab(), tokenizer.unk_token, tokenizer.unique_no_split_tokens)

    def _setup(self) -> None:
        self._bmp = _patterns(False)
        unk_id = self.vocab[self.unk_token]
        self._single = _SingleCharIds(self.vocab, unk_id)
        self._words = _WordIds(self.vocab, unk_id)
        ordered = sorted(self.special_tokens, key=len, reverse=True)
        self._special = re.compile("(" + "|".join(map(re.escape, ordered)) + ")") if ordered else None

    def __getstate__(self):
        return {"vocab": self.vocab, "unk_token": self.unk_token, "special_tokens": self.special_tokens}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._setup()

    def _plain_ids(self, text: str) -> str:
        """The id string of text without special tokens: normalised as ``BasicTokenizer`` does,
        split into words (WordPiece, memoised) and the text between them (one token per
        character, by ``str.translate``; whitespace dropped)."""
        text = text.lower() if "\u03a3" not in text else "".join(ch.lower() for ch in text)  # no final-sigma rule
        dropped, marks, words = _patterns(True) if ASTRAL.search(text) else self._bmp
        if not text.isprintable():
            text = dropped.sub("", text)
        if not text.isascii():
            text = marks.sub("", unicodedata.normalize("NFD", text))
        parts = words.split(text)  # between-words, word, between-words, ..., between-words
        parts[0::2] = [part.translate(self._single) for part in parts[0::2]]
        parts[1::2] = [self._words[word] for word in parts[1::2]]
        return "".join(parts)

    def id_string(self, text: str) -> str:
        """``ErnieTokenizer``'s ids of ``text`` as an id string (one character per id)."""
        if self._special is None or not self._special.search(text):
            return self._plain_ids(text)
        parts = self._special.split(text)  # text, special token, text, ...
        return "".join(chr(self.vocab[part]) if i % 2 else self._plain_ids(part) for i, part in enumerate(parts))

    def encode(self, text: str) -> List[int]:
        """``ErnieTokenizer.convert_tokens_to_ids(ErnieTokenizer.tokenize(text))``."""
        return list(map(ord, self.id_string(text)))

    def encode_chunk(self, texts: Sequence[str], sep: int) -> Tuple[np.ndarray, np.ndarray]:
        """(per-text lengths with their [SEP], 0 for a text without tokens; all ids as uint32,
        each non-empty text followed by ``sep``), decoded from one joined id string."""
        strings = [self.id_string(text) for text in texts]
        lengths = np.fromiter((len(ids) + 1 if ids else 0 for ids in strings), dtype=np.int64, count=len(strings))
        sep_char = chr(sep)
        joined = "".join(ids + sep_char for ids in strings if ids)
        return lengths, np.frombuffer(joined.encode("utf-32-le", "surrogatepass"), dtype="<u4")

    def encode_batch(self, texts: Iterable[str]) -> List[List[int]]:
        return [self.encode(text) for text in texts]


def python_ids(tokenizer, text: str) -> List[int]:
    """The reference: PaddleNLP's Python tokenizer, as shards were always built."""
    return tokenizer.convert_tokens_to_ids(tokenizer.tokenize(text))


def _excerpt(text: str, limit: int = 60) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "...")


def mismatch_message(index: int, text: str, expected: List[int], got: List[int], reference_tokens=None) -> str:
    """Where two id sequences first differ, with a few ids either side."""
    first = next((i for i, (a, b) in enumerate(zip(expected, got)) if a != b), min(len(expected), len(got)))
    lo, hi = max(0, first - 3), first + 4
    lines = [f"document {index} ({_excerpt(text)}): ids differ at token {first} "
             f"(ErnieTokenizer: {len(expected)} tokens, fast: {len(got)})",
             f"  ErnieTokenizer ids[{lo}:{hi}] = {expected[lo:hi]}",
             f"  fast ids[{lo}:{hi}]           = {got[lo:hi]}"]
    if reference_tokens is not None:
        lines.append(f"  ErnieTokenizer tokens[{lo}:{hi}] = {reference_tokens[lo:hi]}")
    return "\n".join(lines)


def check_identical(reference, got: Sequence[List[int]], documents: Sequence[str], first: int = 0) -> None:
    """Raise ``TokenizerMismatch`` at the first of ``documents`` whose ids in ``got`` differ from
    ``reference``'s (the Python tokenizer's); ``first`` is the index of ``documents[0]`` in the corpus."""
    for offset, (text, ids) in enumerate(zip(documents, got)):
        expected = python_ids(reference, text)
        if expected != ids:
            raise TokenizerMismatch(mismatch_message(first + offset, text, expected, ids, reference.tokenize(text)))

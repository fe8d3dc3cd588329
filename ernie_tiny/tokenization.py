"""Tokenizers: PaddleNLP's ERNIE tokenizer from a name or directory, or a character
vocabulary built from the corpus and written as an ERNIE-compatible ``vocab.txt``."""
from __future__ import annotations

import collections
from pathlib import Path
from typing import Iterable

from paddlenlp.transformers import AutoTokenizer, ErnieTokenizer
from paddlenlp.transformers.bert.tokenizer import BasicTokenizer

from ernie_tiny.files import write_text_atomically

SPECIAL_TOKENS = ["[PAD]", "[CLS]", "[SEP]", "[MASK]", "[UNK]"]


def build_vocab(documents: Iterable[str], path: Path, max_size: int, min_freq: int) -> Path:
    """Count characters (after ERNIE's basic tokenization: lower case, accents stripped, CJK
    split) and write the specials, then the most frequent characters, to ``path``. Non-CJK
    characters also get their ``##`` continuation form, so WordPiece can spell any word."""
    basic = BasicTokenizer(do_lower_case=True)
    counts: collections.Counter = collections.Counter()
    for doc in documents:
        for word in basic.tokenize(doc):
            counts[word[0]] += 1
            counts.update("##" + ch for ch in word[1:])
    vocab = list(SPECIAL_TOKENS)
    for token, freq in counts.most_common():
        if len(vocab) >= max_size or freq < min_freq:
            break
        vocab.append(token)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomically(path, "\n".join(vocab) + "\n")
    return path


def tokenizer_from_vocab(path: Path) -> ErnieTokenizer:
    return ErnieTokenizer(vocab_file=str(path))


def load_tokenizer(name_or_path: str):
    """A PaddleNLP tokenizer from a name (needs the network once) or a local directory."""
    return AutoTokenizer.from_pretrained(name_or_path)

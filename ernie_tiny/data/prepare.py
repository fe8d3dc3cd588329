"""From the ``Data`` and ``Tokenizer`` config sections to a tokenizer and packed sequences.

Vocabulary and shards are cached under ``Data.cache_dir`` (default: ``.shards`` beside the
output directory), keyed by a hash of the sources (paths, sizes, times) and settings, so a
second run, or another rank, reuses them. Only the main rank builds; the others wait.
"""
from __future__ import annotations

import hashlib
import sys
from pathlib import Path

from tqdm import tqdm

from ernie_tiny import tokenization
from ernie_tiny.data.corpus import fingerprint, iter_documents
from ernie_tiny.data.shards import PackedSequences, build_shards, find_complete


def cache_root(config) -> Path:
    if config.Data.cache_dir:
        return Path(config.Data.cache_dir)
    return Path(config.Global.output_dir).resolve().parent / ".shards"


def _documents(config, desc: str):
    docs = iter_documents(config.Data.sources, config.Data.document_separator, config.Data.max_documents)
    return tqdm(docs, desc=desc, unit="doc", file=sys.stderr, mininterval=2.0, leave=False)


def prepare_tokenizer(config, rt):
    source = config.Tokenizer.source
    if source == "teacher":
        return tokenization.load_tokenizer(config.Teacher.name_or_path)
    if source != "corpus":
        return tokenization.load_tokenizer(source)
    data = config.Data
    key = fingerprint(data.sources, data.document_separator, data.max_documents,
                      config.Tokenizer.vocab_size, config.Tokenizer.min_freq)
    vocab = cache_root(config) / f"vocab-{key}.txt"
    if rt.is_main and not vocab.is_file():
        tokenization.build_vocab(_documents(config, "vocabulary"), vocab,
                                 config.Tokenizer.vocab_size, config.Tokenizer.min_freq)
    rt.barrier()
    return tokenization.tokenizer_from_vocab(vocab)


def vocab_hash(tokenizer) -> str:
    items = sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1])
    text = "\n".join(tok for tok, _ in items) + f"|lower={getattr(tokenizer, 'do_lower_case', None)}"
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def prepare_corpus(config, rt, tokenizer, workers: int = 1) -> PackedSequences:
    data = config.Data
    key = fingerprint(data.sources, data.document_separator, data.max_documents, vocab_hash(tokenizer))
    shard_dir = cache_root(config) / f"shards-{key}"
    if rt.is_main and find_complete(shard_dir) is None:
        build_shards(_documents(config, "tokenize"), tokenizer, shard_dir, data.shard_tokens, workers=workers)
    rt.barrier()
    return PackedSequences(shard_dir, data.seq_len)

"""From the ``Data`` and ``Tokenizer`` config sections to a tokenizer and packed sequences.

Vocabulary and shards are cached under ``Data.cache_dir`` (default: ``.shards`` beside the
output directory), keyed by a hash of the sources (paths, sizes, times) and settings, so a
second run, or another rank, reuses them. Only the main rank builds; the others wait on the
file system (``filewait``), never in a collective, so no process-group timeout runs while a
large corpus is tokenized.
"""
from __future__ import annotations

import hashlib
import sys
from pathlib import Path

from tqdm import tqdm

from ernie_tiny import tokenization
from ernie_tiny.data.corpus import CorpusError, fingerprint, iter_documents
from ernie_tiny.data.filewait import build_or_wait
from ernie_tiny.data.sampler import batches_per_epoch
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
    build_or_wait(vocab, Path.is_file,
                  lambda: tokenization.build_vocab(_documents(config, "vocabulary"), vocab,
                                                   config.Tokenizer.vocab_size, config.Tokenizer.min_freq),
                  "corpus vocabulary", rt.rank, rt.is_main)
    return tokenization.tokenizer_from_vocab(vocab)


def vocab_hash(tokenizer) -> str:
    items = sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1])
    text = "\n".join(tok for tok, _ in items) + f"|lower={getattr(tokenizer, 'do_lower_case', None)}"
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def prepare_corpus(config, rt, tokenizer) -> PackedSequences:
    """The corpus as packed sequences. The main rank builds the shards (cached by sources and
    vocabulary) with ``Data.shard_workers`` processes and ``Data.shard_tokenizer``; the other
    ranks wait for the finished directory on the file system."""
    data = config.Data
    key = fingerprint(data.sources, data.document_separator, data.max_documents, vocab_hash(tokenizer))
    shard_dir = cache_root(config) / f"shards-{key}"
    build_or_wait(shard_dir, lambda path: find_complete(path) is not None,
                  lambda: build_shards(_documents(config, "tokenize"), tokenizer, shard_dir, data.shard_tokens,
                                       workers=data.shard_workers, fast=data.shard_tokenizer == "fast"),
                  "token shards", rt.rank, rt.is_main)
    sources = ", ".join(data.sources)
    try:
        corpus = PackedSequences(shard_dir, data.seq_len)
    except CorpusError as err:
        raise CorpusError(f"{sources} (Data.sources): {err}") from None
    batch, world = config.Train.batch_size, rt.world_size
    if batches_per_epoch(len(corpus), batch, world) == 0:  # the sampler's rule, said before anything is written
        raise CorpusError(f"{sources} (Data.sources): {len(corpus)} sequences of {data.seq_len} tokens, fewer than "
                          f"one batch (Train.batch_size {batch} x {world} processes): add text, or lower "
                          f"Train.batch_size or Data.seq_len")
    return corpus

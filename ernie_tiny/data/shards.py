"""Tokenized corpus on disk: flat token streams in memory-mapped shard files, cut into
fixed-length packed sequences when read.

Layout of a shard directory (written to a temporary directory, then renamed, so a
directory that exists is complete)::

    index.json        {"dtype": "uint16", "shards": [{"file": "shard_00000.bin", "tokens": N}, ...],
                       "tokenizer": {"name": ..., "checked_documents": ...}, ...}
    shard_00000.bin   token ids: document, [SEP], document, [SEP], ...

Sequence i of length L is ``[CLS] + L-2 stream tokens + [SEP]``; every position is a real
token, so packed batches need no padding. Corpora larger than memory stream from disk.
"""
from __future__ import annotations

import collections
import itertools
import json
import multiprocessing
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Iterable, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from ernie_tiny.data import fast_tokenizer
from ernie_tiny.data.corpus import CorpusError
from ernie_tiny.runtime import available_cores

INDEX = "index.json"
CHUNK_DOCUMENTS = 512  # documents per task sent to a worker
CHECK_DOCUMENTS = 1024  # the first documents (two chunks) also tokenized by ErnieTokenizer to check the fast ids
PYTHON_TOKENIZER = "paddlenlp.ErnieTokenizer"


class PythonEncoder:
    """PaddleNLP's Python tokenizer with the chunk interface of ``FastErnieTokenizer``."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer

    def encode_chunk(self, docs: Sequence[str], sep: int) -> Tuple[np.ndarray, np.ndarray]:
        seqs = [fast_tokenizer.python_ids(self.tokenizer, doc) for doc in docs]
        lengths = np.fromiter((len(ids) + 1 if ids else 0 for ids in seqs), dtype=np.int64, count=len(seqs))
        flat = np.fromiter(itertools.chain.from_iterable(itertools.chain(ids, (sep,)) for ids in seqs if ids),
                           dtype=np.uint32, count=int(lengths.sum()))
        return lengths, flat


def _per_document(lengths: np.ndarray, flat: np.ndarray) -> List[List[int]]:
    """Each document's ids (without its [SEP]; [] for a document without tokens)."""
    out, start = [], 0
    for length in lengths.tolist():
        out.append(flat[start:start + length - 1].tolist() if length else [])
        start += length
    return out


_worker_state: tuple = ()  # (encoder, reference or None, sep id, dtype) in each worker


def _init_worker(encoder, reference, sep: int, dtype) -> None:
    global _worker_state
    _worker_state = (encoder, reference, sep, dtype)


def _encode(task: Tuple[int, List[str], bool]) -> Tuple[np.ndarray, np.ndarray, int]:
    """A chunk as (per-document lengths with their [SEP], 0 for a document without tokens;
    all ids, each non-empty document followed by [SEP]; characters checked): arrays, cheap to
    send back. A chunk marked for checking is also tokenized by the reference (Python)
    tokenizer; the first document whose ids differ raises ``TokenizerMismatch``."""
    first, docs, check = task
    encoder, reference, sep, dtype = _worker_state
    lengths, flat = encoder.encode_chunk(docs, sep)
    checked = 0
    if check and reference is not None:
        fast_tokenizer.check_identical(reference, _per_document(lengths, flat), docs, first)
        checked = sum(len(doc) for doc in docs)
    return lengths, flat.astype(dtype, copy=False), checked


def _chunks(documents: Iterable[str], size: int) -> Iterator[List[str]]:
    iterator = iter(documents)
    while True:
        chunk = list(itertools.islice(iterator, size))
        if not chunk:
            return
        yield chunk


def _tasks(documents: Iterable[str], check_documents: int) -> Iterator[Tuple[int, List[str], bool]]:
    """(index of the chunk's first document, chunk, check it?): the chunks that start within the
    first ``check_documents`` documents are checked."""
    first = 0
    for chunk in _chunks(documents, CHUNK_DOCUMENTS):
        yield first, chunk, first < check_documents
        first += len(chunk)


def _ordered(pool, chunks: Iterable[tuple], ahead: int) -> Iterator[Tuple[np.ndarray, np.ndarray, int]]:
    """Encoded chunks in order, with at most ``ahead`` in flight, so memory stays flat however
    large the corpus (``Pool.imap`` would read the whole corpus into its task queue)."""
    pending: collections.deque = collections.deque()
    for chunk in chunks:
        pending.append(pool.apply_async(_encode, (chunk,)))
        if len(pending) >= ahead:
            yield pending.popleft().get()
    while pending:
        yield pending.popleft().get()


class _ShardWriter:
    """Appends the token stream to shard files, starting a new one at the first document end
    at or past ``shard_tokens``."""

    def __init__(self, directory: Path, shard_tokens: int):
        self.directory, self.shard_tokens = directory, shard_tokens
        self.shards: List[dict] = []
        self.handle = None

    def write(self, lengths: np.ndarray, flat: np.ndarray) -> None:
        ends = np.cumsum(lengths[lengths > 0])
        pos = 0
        while pos < len(flat):
            if self.handle is None or self.shards[-1]["tokens"] >= self.shard_tokens:
                self._open_next()
            need = self.shard_tokens - self.shards[-1]["tokens"]
            j = int(np.searchsorted(ends, pos + need, side="left"))
            stop = int(ends[j]) if j < len(ends) else len(flat)
            self.handle.write(flat[pos:stop].tobytes())
            self.shards[-1]["tokens"] += stop - pos
            pos = stop

    def _open_next(self) -> None:
        self.close()
        name = f"shard_{len(self.shards):05d}.bin"
        self.shards.append({"file": name, "tokens": 0})
        self.handle = open(self.directory / name, "wb")

    def close(self) -> None:
        if self.handle is not None:
            self.handle.close()
            self.handle = None


def choose_encoder(tokenizer, fast: bool = True) -> tuple:
    """(the encoder that turns chunks of documents into ids, the reference tokenizer its output
    is checked against or None, what to record about it in index.json).

    ``fast``: the ``FastErnieTokenizer``, checked token for token against ``ErnieTokenizer``
    on the first documents (``build_shards`` refuses on a difference rather than falling back:
    a silent slow path would cost days on a large corpus, and a difference means a setting we
    do not reproduce). A tokenizer it cannot reproduce (not BasicTokenizer + WordPiece, or
    other settings) is built with the Python tokenizer, with a warning. ``fast=False``:
    PaddleNLP's Python tokenizer, as before."""
    python = PythonEncoder(tokenizer)
    python_name = f"paddlenlp.{type(tokenizer).__name__}"  # PYTHON_TOKENIZER for an ErnieTokenizer
    if not fast:
        return python, None, {"name": python_name}
    reason = fast_tokenizer.unsupported_reason(tokenizer)
    if reason:
        print(f"warning: shards are built with the Python {type(tokenizer).__name__} (slow): {reason}",
              file=sys.stderr)
        return python, None, {"name": python_name, "fast_unsupported": reason}
    encoder = fast_tokenizer.FastErnieTokenizer.from_tokenizer(tokenizer)
    return encoder, tokenizer, {"name": encoder.name, "checked_against": python_name}


def build_shards(
    documents: Iterable[str],
    tokenizer,
    out_dir: Path,
    shard_tokens: int = 16_000_000,
    workers: int = 0,
    progress=None,
    fast: bool = True,
    check_documents: int = CHECK_DOCUMENTS,
) -> Path:
    """Tokenize ``documents`` into ``out_dir`` (atomically) with ``workers`` processes (0: the
    available cores), streaming: at most a few chunks are in memory at once. ``fast``: see
    ``choose_encoder``; its check runs in the workers on the chunks that start within the first
    ``check_documents`` documents. The tokenizer used is recorded in index.json.
    ``progress(n_docs)`` is called as it goes."""
    out_dir = Path(out_dir)
    workers = workers if workers > 0 else available_cores()
    vocab_size = len(tokenizer)
    dtype = np.uint16 if vocab_size <= np.iinfo(np.uint16).max else np.uint32
    sep = tokenizer.sep_token_id
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    encoder, reference, record = choose_encoder(tokenizer, fast)
    tmp = Path(tempfile.mkdtemp(prefix=out_dir.name + ".tmp", dir=out_dir.parent))
    writer = _ShardWriter(tmp, shard_tokens)
    docs = checked_docs = checked_chars = 0
    try:
        state = (encoder, reference, sep, dtype)
        _init_worker(*state)
        pool = multiprocessing.get_context("fork").Pool(workers, _init_worker, state) if workers > 1 else None
        tasks = _tasks(documents, check_documents if reference is not None else 0)
        encoded = _ordered(pool, tasks, 2 * workers) if pool else map(_encode, tasks)
        try:
            for lengths, flat, checked in encoded:
                writer.write(lengths, flat)
                if reference is not None and docs < check_documents:  # this chunk was checked
                    checked_docs, checked_chars = checked_docs + len(lengths), checked_chars + checked
                docs += len(lengths)
                if progress:
                    progress(len(lengths))
        except fast_tokenizer.TokenizerMismatch as err:
            raise fast_tokenizer.TokenizerMismatch(
                f"{err}\nno shards were built: the fast tokenizer must give ErnieTokenizer's ids exactly; "
                f"set Data.shard_tokenizer: python to build with ErnieTokenizer (about 10x slower)") from None
        finally:
            if pool:
                pool.terminate()
                pool.join()
            writer.close()
        if not writer.shards:
            raise CorpusError("the corpus has no document with any token (Data.sources)")
        if reference is not None:
            record = dict(record, checked_documents=checked_docs, checked_characters=checked_chars)
        index = {"dtype": np.dtype(dtype).name, "documents": docs, "vocab_size": vocab_size,
                 "cls_token_id": tokenizer.cls_token_id, "sep_token_id": sep, "shards": writer.shards,
                 "tokenizer": record}
        (tmp / INDEX).write_text(json.dumps(index, indent=1))
        if out_dir.exists():  # another process finished first
            shutil.rmtree(tmp)
        else:
            os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


class PackedSequences:
    """Fixed-length sequences over a shard directory: ``len()``, ``[i]`` -> int64 [seq_len]."""

    def __init__(self, shard_dir: Path, seq_len: int):
        shard_dir = Path(shard_dir)
        index = json.loads((shard_dir / INDEX).read_text())
        self.seq_len = seq_len
        self.body = seq_len - 2
        self.cls, self.sep = index["cls_token_id"], index["sep_token_id"]
        self.vocab_size = index["vocab_size"]
        self.documents = index["documents"]
        self.streams = [np.memmap(shard_dir / s["file"], dtype=index["dtype"], mode="r", shape=(s["tokens"],))
                        for s in index["shards"] if s["tokens"] >= self.body]
        counts = [len(s) // self.body for s in self.streams]
        self.offsets = np.cumsum([0] + counts)
        if self.offsets[-1] == 0:
            raise CorpusError(f"the corpus (tokenized in {shard_dir}) is shorter than one sequence of {seq_len} "
                              f"tokens: add text or lower Data.seq_len")
        self.tokens = int(sum(len(s) for s in self.streams))

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def __getitem__(self, i: int) -> np.ndarray:
        shard = int(np.searchsorted(self.offsets, i, side="right") - 1)
        start = (i - self.offsets[shard]) * self.body
        out = np.empty(self.seq_len, dtype=np.int64)
        out[0], out[-1] = self.cls, self.sep
        out[1:-1] = self.streams[shard][start:start + self.body]
        return out

    def batch(self, indices) -> np.ndarray:
        return np.stack([self[int(i)] for i in indices])


def find_complete(path: Path) -> Optional[Path]:
    return path if (Path(path) / INDEX).is_file() else None

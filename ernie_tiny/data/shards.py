"""Tokenized corpus on disk: flat token streams in memory-mapped shard files, cut into
fixed-length packed sequences when read.

Layout of a shard directory (written to a temporary directory, then renamed, so a
directory that exists is complete)::

    index.json        {"dtype": "uint16", "shards": [{"file": "shard_00000.bin", "tokens": N}, ...], ...}
    shard_00000.bin   token ids: document, [SEP], document, [SEP], ...

Sequence i of length L is ``[CLS] + L-2 stream tokens + [SEP]``; every position is a real
token, so packed batches need no padding. Corpora larger than memory stream from disk.
"""
from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterable, Iterator, List, Optional

import numpy as np

INDEX = "index.json"

_worker_tokenizer = None


def _init_worker(tokenizer) -> None:
    global _worker_tokenizer
    _worker_tokenizer = tokenizer


def _encode(docs: List[str]) -> List[List[int]]:
    tok = _worker_tokenizer
    return [tok.convert_tokens_to_ids(tok.tokenize(doc)) for doc in docs]


def _chunks(documents: Iterable[str], size: int) -> Iterator[List[str]]:
    chunk: List[str] = []
    for doc in documents:
        chunk.append(doc)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def build_shards(
    documents: Iterable[str],
    tokenizer,
    out_dir: Path,
    shard_tokens: int = 16_000_000,
    workers: int = 1,
    progress=None,
) -> Path:
    """Tokenize ``documents`` into ``out_dir`` (atomically). ``progress(n_docs)`` is called as it goes."""
    out_dir = Path(out_dir)
    vocab_size = len(tokenizer)
    dtype = np.uint16 if vocab_size <= np.iinfo(np.uint16).max else np.uint32
    sep = tokenizer.sep_token_id
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=out_dir.name + ".tmp", dir=out_dir.parent))
    shards = []
    docs = 0
    try:
        handle, written = None, 0

        def open_next():
            name = f"shard_{len(shards):05d}.bin"
            shards.append({"file": name, "tokens": 0})
            return open(tmp / name, "wb")

        pool = multiprocessing.get_context("fork").Pool(workers, _init_worker, (tokenizer,)) if workers > 1 else None
        _init_worker(tokenizer)
        encoded = (pool.imap(_encode, _chunks(documents, 256)) if pool else map(_encode, _chunks(documents, 256)))
        try:
            for batch in encoded:
                for ids in batch:
                    if not ids:
                        continue
                    if handle is None or written >= shard_tokens:
                        if handle is not None:
                            handle.close()
                        handle, written = open_next(), 0
                    arr = np.asarray(ids + [sep], dtype=dtype)
                    handle.write(arr.tobytes())
                    written += len(arr)
                    shards[-1]["tokens"] = written
                docs += len(batch)
                if progress:
                    progress(len(batch))
        finally:
            if pool:
                pool.close()
                pool.join()
        if handle is not None:
            handle.close()
        if not shards:
            raise ValueError("the corpus has no document with any token")
        index = {"dtype": np.dtype(dtype).name, "documents": docs, "vocab_size": vocab_size,
                 "cls_token_id": tokenizer.cls_token_id, "sep_token_id": sep, "shards": shards}
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
            raise ValueError(f"{shard_dir}: the corpus is shorter than one sequence of {seq_len} tokens")
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

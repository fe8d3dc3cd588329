"""Checks of a model or tokenizer directory (PaddleNLP ``save_pretrained`` format) before it
is loaded: the files are there, ``config.json`` parses and gives the sizes, each safetensors
file is complete (its header is whole and the file holds every tensor's bytes), and the
tokenizer has its config and vocabulary. A problem is a ``ModelFilesError`` naming the
directory and the missing or broken file, instead of a deep traceback from the loader.

Used wherever a directory is loaded: the config schemas (``Teacher``/``Student``/``Model``
``name_or_path``, ``Model.path``, ``Tokenizer.source``) call these before any work starts.
No Paddle import."""
from __future__ import annotations

import json
import os
import struct
from pathlib import Path
from typing import Dict, Optional

from ernie_tiny.errors import InputError

CONFIG_FILE = "config.json"
SAFETENSORS_INDEX = "model.safetensors.index.json"
WEIGHT_FILES = ("model.safetensors", "model_state.pdparams")
TOKENIZER_CONFIG = "tokenizer_config.json"
VOCAB_FILES = ("vocab.txt", "tokenizer.json", "sentencepiece.bpe.model", "spm.model", "vocab.json")
REQUIRED_SIZES = ("num_hidden_layers", "hidden_size")  # the rest have ErnieConfig defaults
SIZE_KEYS = REQUIRED_SIZES + ("num_attention_heads", "intermediate_size", "vocab_size", "max_position_embeddings")


class ModelFilesError(InputError):
    """A model or tokenizer directory that cannot be loaded; the message names the directory and file."""

    what = "model error"


def is_local(name_or_path: str) -> bool:
    """A local directory rather than a PaddleNLP model name (which has no path separator)."""
    return os.sep in name_or_path or name_or_path.startswith(".") or os.path.exists(name_or_path)


def _directory(path) -> Path:
    path = Path(path)
    if not path.exists():
        raise ModelFilesError(f"{path}: no such directory")
    if not path.is_dir():
        raise ModelFilesError(f"{path}: is a file, not a model directory")
    return path


def read_model_config(path) -> Dict:
    """``config.json`` of a model directory, checked to parse, to give ``REQUIRED_SIZES`` and to
    have every size of ``SIZE_KEYS`` it gives a positive whole number."""
    file = _directory(path) / CONFIG_FILE
    if not file.is_file():
        raise ModelFilesError(f"{path}: no {CONFIG_FILE}; a model directory is what save_pretrained writes "
                              f"(tools/pretrain.py, tools/distill.py)")
    try:
        config = json.loads(file.read_bytes().decode("utf-8-sig"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ModelFilesError(f"{file}: not valid JSON ({err}); write the model again") from None
    if not isinstance(config, dict):
        raise ModelFilesError(f"{file}: not a JSON object")
    for key in SIZE_KEYS:
        value = config.get(key)
        if value is None and key not in REQUIRED_SIZES:
            continue
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ModelFilesError(f"{file}: {key} is {'missing' if value is None else repr(value)}, "
                                  f"expected a positive whole number")
    return config


def safetensors_problem(file: Path) -> Optional[str]:
    """What is wrong with a safetensors file (None: nothing): it must hold an 8-byte header
    length, that many bytes of JSON header, and at least as many bytes of data as the largest
    tensor end offset. Model directories and checkpoints both check their weights with it."""
    size = file.stat().st_size
    with open(file, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            return f"truncated ({size} bytes, not even the 8-byte header length)"
        (length,) = struct.unpack("<Q", head)
        if 8 + length > size:
            return f"truncated ({size} bytes; its header alone needs {8 + length})"
        try:
            header = json.loads(f.read(length))
        except (UnicodeDecodeError, json.JSONDecodeError):
            return "not a safetensors file (its header is not JSON)"
    if not isinstance(header, dict):
        return "not a safetensors file (its header is not a JSON object)"
    ends = [entry["data_offsets"][1] for name, entry in header.items()
            if name != "__metadata__" and isinstance(entry, dict) and "data_offsets" in entry]
    need = 8 + length + max(ends, default=0)
    return f"truncated ({size} bytes; its tensors need {need})" if size < need else None


def check_safetensors(file: Path) -> None:
    problem = safetensors_problem(file)
    if problem:
        raise ModelFilesError(f"{file}: {problem}; copy or write it again")


def check_weights(path: Path) -> None:
    index = path / SAFETENSORS_INDEX
    if index.is_file():
        try:
            shards = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
        except (ValueError, KeyError, AttributeError):
            raise ModelFilesError(f"{index}: not a safetensors index (no weight_map)") from None
        files = [path / name for name in shards]
    else:
        files = [path / name for name in WEIGHT_FILES if (path / name).is_file()][:1]
        if not files:
            raise ModelFilesError(f"{path}: no weights ({' or '.join(WEIGHT_FILES)})")
    for file in files:
        if not file.is_file():
            raise ModelFilesError(f"{path}: {file.name} is missing (listed in {SAFETENSORS_INDEX})")
        if file.suffix == ".safetensors":
            check_safetensors(file)


def check_model_dir(path) -> Dict:
    """Raise ``ModelFilesError`` unless ``path`` holds a loadable model; returns its config.json."""
    config = read_model_config(path)
    check_weights(Path(path))
    return config


def check_tokenizer_dir(path) -> None:
    """Raise ``ModelFilesError`` unless ``path`` holds a tokenizer (its config and a vocabulary)."""
    directory = _directory(path)
    if not any(directory.iterdir()):
        raise ModelFilesError(f"{path}: empty directory, expected a tokenizer ({TOKENIZER_CONFIG}, vocab.txt)")
    if not (directory / TOKENIZER_CONFIG).is_file():
        raise ModelFilesError(f"{path}: no {TOKENIZER_CONFIG}; a tokenizer directory is what save_pretrained writes")
    vocab = [directory / name for name in VOCAB_FILES if (directory / name).is_file()]
    if not vocab:
        raise ModelFilesError(f"{path}: no vocabulary ({', '.join(VOCAB_FILES)})")
    if vocab[0].stat().st_size == 0:
        raise ModelFilesError(f"{vocab[0]}: empty vocabulary")


def tokenizer_vocab_size(path) -> Optional[int]:
    """Tokens in a checked tokenizer directory's ``vocab.txt`` (None without one)."""
    vocab = Path(path) / "vocab.txt"
    if not vocab.is_file():
        return None
    with open(vocab, "rb") as f:
        return sum(1 for _ in f)


def check_own_tokenizer(path, config: Dict) -> None:
    """``path`` (a model directory, ``config`` its config.json) also holds the model's tokenizer,
    with embeddings for every token of its vocabulary."""
    check_tokenizer_dir(path)
    vocab, embeddings = tokenizer_vocab_size(path), config.get("vocab_size")
    if vocab is not None and embeddings is not None and embeddings < vocab:
        raise ModelFilesError(f"{path}: config.json has vocab_size {embeddings}, fewer than the {vocab} tokens "
                              f"of its vocab.txt: the tokenizer is not this model's")


def check_pretrained_dir(path) -> Dict:
    """A model directory that is also its own tokenizer (what stage 1 and evaluation load): the
    model, the tokenizer, and embeddings for every token of the vocabulary. Returns config.json."""
    config = check_model_dir(path)
    check_own_tokenizer(path, config)
    return config

"""Resumable checkpoints, written atomically, read without unpickling.

``<output_dir>/checkpoints/step_00000100/`` holds the model in PaddleNLP ``save_pretrained``
format (safetensors), the tokenizer, the optimizer (``optimizer.safetensors``: its tensors, the
loss scale under AMP; ``optimizer.json``: its scalars, the LR scheduler's and the loss
scaler's), ``rng_rank{r}.json`` per rank (its random state, plain JSON: see
``runtime.rng_state``) and ``trainer_state.json`` (step, data order, counters). It is written
under a temporary name and renamed when complete, so a crash leaves either the whole
checkpoint or none; older checkpoints beyond ``keep`` are removed. A checkpoint is checked
before it is loaded (``check_checkpoint``), and a write that fails (disk full, read-only)
stops the run naming the path; both raise ``CheckpointError``, an ``InputError`` (exit status 2).

Checkpoints of earlier versions hold pickles (``optimizer.pdopt``, ``rng_rank{r}.pkl``); those
are read only when ``ERNIE_TINY_TRUST_PICKLE=1`` (or the older ``ERNIE_TINY_TRUST_PICKLED_RNG=1``)
says the files are trusted (unpickling runs code from them).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
from contextlib import contextmanager
from pathlib import Path
from typing import Optional

import numpy as np
import paddle
from safetensors import SafetensorError
from safetensors.numpy import load_file

from ernie_tiny import runtime
from ernie_tiny.errors import InputError
from ernie_tiny.files import TMP_PREFIX, replacing_directory
from ernie_tiny.model_files import safetensors_problem

STATE = "trainer_state.json"
WEIGHTS = "model.safetensors"
OPTIMIZER_TENSORS = "optimizer.safetensors"
OPTIMIZER_SCALARS = "optimizer.json"
PICKLED_OPTIMIZER = "optimizer.pdopt"
RNG_FILE = "rng_rank{rank}.json"
PICKLED_RNG_FILE = "rng_rank{rank}.pkl"
TRUST_PICKLE_ENV = "ERNIE_TINY_TRUST_PICKLE"
OLD_TRUST_PICKLE_ENV = "ERNIE_TINY_TRUST_PICKLED_RNG"  # its earlier name, still honoured
CRASH_ENV = "ERNIE_TINY_TEST_CRASH"
_STEP_DIR = re.compile(r"^step_(\d{8})$")


class CheckpointError(InputError):
    """A checkpoint that cannot be loaded, or a checkpoint or output that cannot be written;
    the message names the directory and the file."""

    what = "checkpoint error"


class UntrustedPickleError(CheckpointError, RuntimeError):
    """A checkpoint of an earlier version holds pickles, and they are not trusted."""


def pickle_trusted() -> bool:
    return "1" in (os.environ.get(TRUST_PICKLE_ENV), os.environ.get(OLD_TRUST_PICKLE_ENV))


def crash_point(point: str, step: int, rank: int = 0) -> None:
    """Test-only: SIGKILL this process at ``point`` of step ``step`` when ``ERNIE_TINY_TEST_CRASH``
    is ``point:step`` (any rank) or ``point:step:rank``. Points: ``step`` (after an optimizer
    step), ``checkpoint`` (a checkpoint half-written), ``renamed`` (renamed, older not yet pruned)."""
    wanted = os.environ.get(CRASH_ENV, "").split(":")
    if wanted[:2] == [point, str(step)] and (len(wanted) < 3 or wanted[2] == str(rank)):
        print(f"{CRASH_ENV}: rank {rank} killed at {point} {step}", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)


@contextmanager
def writing(target):
    """Turn a failed write (disk full, file size limit, read-only directory) into a
    ``CheckpointError`` naming the file, or ``target``."""
    try:
        yield
    except (OSError, SafetensorError) as err:
        path = getattr(err, "filename", None) or target
        reason = getattr(err, "strerror", None) or str(err)
        raise CheckpointError(f"{path}: cannot write ({reason}); the run stopped, earlier checkpoints are kept") from err


def checkpoints_dir(output_dir) -> Path:
    return Path(output_dir) / "checkpoints"


def list_checkpoints(output_dir) -> list:
    root = checkpoints_dir(output_dir)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if _STEP_DIR.match(p.name) and (p / STATE).is_file()]
    return sorted(found, key=lambda p: p.name)


def latest_checkpoint(output_dir) -> Optional[Path]:
    found = list_checkpoints(output_dir)
    return found[-1] if found else None


def agreed_latest_checkpoint(rt: runtime.Runtime, output_dir) -> Optional[Path]:
    """The newest checkpoint as rank 0 sees it, the same on every rank (collective). Ranks that
    each listed their own disk could resume from different steps after rank 0's weights
    were broadcast; ``runtime.check_shared_output_dir`` has made sure they all see rank 0's."""
    found = latest_checkpoint(output_dir) if rt.is_main else None
    step = runtime.broadcast_int(rt, int(_STEP_DIR.match(found.name).group(1)) if found else -1)
    return None if step < 0 else checkpoints_dir(output_dir) / f"step_{step:08d}"


def remove_stale_temporaries(output_dir) -> None:
    """Remove what a killed run left half-written: ``checkpoints/.tmp_step_*`` and the output
    directory's ``.tmp_*`` (outputs are renamed into place when complete)."""
    for root in (Path(output_dir), checkpoints_dir(output_dir)):
        if root.is_dir():
            for stale in root.glob(TMP_PREFIX + "*"):
                shutil.rmtree(stale, ignore_errors=True) if stale.is_dir() else stale.unlink(missing_ok=True)


def _check_json(path: Path) -> None:
    try:
        json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise CheckpointError(f"{path.parent}: {path.name} is not readable JSON ({err}); the checkpoint is broken") from err


def _check_safetensors(path: Path) -> None:
    problem = safetensors_problem(path)
    if problem:
        raise CheckpointError(f"{path.parent}: {path.name} is {problem}; the checkpoint is broken")


def check_checkpoint(directory, rank: int = 0) -> None:
    """Raise ``CheckpointError`` naming the directory and the broken file unless ``directory``
    is a complete checkpoint: every file present, the JSON files parse, the safetensors files
    are whole (header complete, as long as it says)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(f"{directory}: no such checkpoint directory")
    if not any(directory.iterdir()):
        raise CheckpointError(f"{directory}: the checkpoint directory is empty")
    tensors = [WEIGHTS, OPTIMIZER_TENSORS]
    texts = [STATE, OPTIMIZER_SCALARS]
    if not (directory / OPTIMIZER_TENSORS).exists() and (directory / PICKLED_OPTIMIZER).exists():
        tensors, texts = [WEIGHTS], [STATE]  # an earlier version's checkpoint: see load_optimizer_state
    for name in tensors + texts:
        if not (directory / name).is_file():
            raise CheckpointError(f"{directory}: {name} is missing; the checkpoint is incomplete")
    for name in tensors:
        _check_safetensors(directory / name)
    for name in texts:
        _check_json(directory / name)
    if (directory / RNG_FILE.format(rank=rank)).is_file():
        _check_json(directory / RNG_FILE.format(rank=rank))


def _rename_optimizer_state(state: dict, mapping: dict) -> dict:
    """Re-key optimizer state from one set of parameter names to another.

    Paddle keys accumulators by a parameter's unique name (``linear_3.w_0_moment1_0``), which
    depends on how many layers the process built before; checkpoints use the structured names
    (``encoder.layers.0.linear1.weight``) so they load into any process."""

    def rename(key: str) -> str:
        for old, new in mapping.items():
            if key == old or key.startswith(old + "_"):
                return new + key[len(old):]
        return key

    out = {}
    for key, value in state.items():
        if key == "master_weights" and isinstance(value, dict):
            out[key] = {rename(k): v for k, v in value.items()}
        elif key == "LR_Scheduler":
            out[key] = value
        else:
            out[rename(key)] = value
    return out


def _unique_to_structured(model) -> dict:
    return {p.name: name for name, p in model.named_parameters()}


def save_checkpoint(rt: runtime.Runtime, output_dir, step: int, model, tokenizer, optimizer, state: dict,
                    keep: int, scaler=None) -> Path:
    """Write a checkpoint (collective: every rank calls it). A failed write raises
    ``CheckpointError`` naming the file; the half-written temporary is removed."""
    root = checkpoints_dir(output_dir)
    final = root / f"step_{step:08d}"
    tmp = root / f"{TMP_PREFIX}step_{step:08d}"
    try:
        with writing(tmp):
            if rt.is_main:
                shutil.rmtree(tmp, ignore_errors=True)
                tmp.mkdir(parents=True)
            rt.barrier()
            save_rng_state(rt, tmp)
            if rt.is_main:
                save_weights(model, tmp)
                crash_point("checkpoint", step, rt.rank)
                if tokenizer is not None:
                    tokenizer.save_pretrained(str(tmp))
                save_optimizer_state(tmp, optimizer, model, scaler)
            rt.barrier()
            if rt.is_main:
                (tmp / STATE).write_text(json.dumps(dict(state, step=step), indent=1))
                shutil.rmtree(final, ignore_errors=True)
                tmp.rename(final)
                crash_point("renamed", step, rt.rank)
                for old in list_checkpoints(output_dir)[:-keep]:
                    shutil.rmtree(old, ignore_errors=True)
    except CheckpointError:
        if rt.is_main:
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    rt.barrier()
    return final


def save_weights(model, directory: Path) -> None:
    """``save_pretrained`` (safetensors) for PaddleNLP models; ``model.safetensors`` of the
    state dict for any other Layer (e.g. an encoder with several task heads)."""
    if hasattr(model, "save_pretrained"):
        model.save_pretrained(str(directory), safe_serialization=True)
    else:
        from safetensors.numpy import save_file

        save_file({k: v.numpy() for k, v in model.state_dict().items()}, str(Path(directory) / WEIGHTS))


def save_pretrained_dir(directory, model, tokenizer, config, config_name: str) -> Path:
    """A stage's output model: ``save_pretrained`` (safetensors) + tokenizer + the resolved
    config as ``config_name``, written under a temporary name and renamed when complete (a
    failed write raises ``CheckpointError`` naming the file)."""
    from ernie_tiny.config import dump_config

    directory = Path(directory)
    with writing(directory), replacing_directory(directory) as tmp:  # a failed write removes tmp
        model.save_pretrained(str(tmp), safe_serialization=True)
        tokenizer.save_pretrained(str(tmp))
        dump_config(config, tmp / config_name)
    return directory


def load_model_weights(model, directory) -> None:
    """Load ``save_pretrained`` safetensors weights into an existing model, strictly."""
    weights = load_file(str(Path(directory) / WEIGHTS))
    own = model.state_dict()
    missing = sorted(set(own) - set(weights))
    unexpected = sorted(set(weights) - set(own))
    if missing or unexpected:
        raise ValueError(f"{directory}: weights do not match the model (missing {missing[:5]}, "
                         f"unexpected {unexpected[:5]})")
    model.set_state_dict({k: paddle.to_tensor(v) for k, v in weights.items()})


def _split_tensors(tree: dict, prefix: str = "") -> tuple:
    """A nested state dict -> ({'a/b': tensor}, the same tree without its tensors)."""
    tensors, rest = {}, {}
    for key, value in tree.items():
        if isinstance(value, dict):
            inner, rest[key] = _split_tensors(value, f"{prefix}{key}/")
            tensors.update(inner)
        elif isinstance(value, (paddle.Tensor, np.ndarray)):
            tensors[f"{prefix}{key}"] = value if isinstance(value, paddle.Tensor) else paddle.to_tensor(value)
        else:
            rest[key] = value.item() if isinstance(value, np.generic) else value
    return tensors, rest


def _join_tensors(tree: dict, tensors: dict) -> dict:
    """The inverse of ``_split_tensors``: ``tensors`` put back into ``tree`` (in place)."""
    for name, value in tensors.items():
        *path, key = name.split("/")
        node = tree
        for part in path:
            node = node.setdefault(part, {})
        node[key] = value
    return tree


def save_optimizer_state(directory: Path, optimizer, model, scaler=None) -> None:
    """The optimizer's state under the model's structured parameter names (and the loss
    scaler's): its tensors as ``optimizer.safetensors``, every other value as ``optimizer.json``."""
    from safetensors.paddle import save_file

    state = {"optimizer": _rename_optimizer_state(optimizer.state_dict(), _unique_to_structured(model))}
    if scaler is not None:
        state["scaler"] = scaler.state_dict()
    tensors, rest = _split_tensors(state)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(directory / OPTIMIZER_TENSORS))
    (directory / OPTIMIZER_SCALARS).write_text(json.dumps(rest, indent=1))


def load_optimizer_state(directory: Path) -> dict:
    """What ``save_optimizer_state`` wrote; an earlier version's ``optimizer.pdopt`` (pickle) only
    when pickles are trusted (``pickle_trusted``)."""
    if not (directory / OPTIMIZER_TENSORS).is_file():
        path = directory / PICKLED_OPTIMIZER
        _refuse_untrusted_pickle(path, "delete the checkpoint to start over")
        print(f"{path}: unpickling the optimizer state (trusted: {TRUST_PICKLE_ENV}=1)", flush=True)
        return paddle.load(str(path))
    from safetensors.paddle import load_file as load_paddle_file

    tensors = load_paddle_file(str(directory / OPTIMIZER_TENSORS), device=paddle.get_device())
    state = _join_tensors(json.loads((directory / OPTIMIZER_SCALARS).read_text()), tensors)
    if "scaler" in state:
        state["scaler"] = {k: v.numpy() if isinstance(v, paddle.Tensor) else v for k, v in state["scaler"].items()}
    return state


def _refuse_untrusted_pickle(path: Path, otherwise: str) -> None:
    if not pickle_trusted():
        raise UntrustedPickleError(
            f"{path}: this checkpoint of an earlier version keeps state as a pickle, which is no longer read by "
            f"default (unpickling runs code from the file). If you trust the file, resume with "
            f"{TRUST_PICKLE_ENV}=1; or {otherwise}.")


def load_checkpoint(rt: runtime.Runtime, directory, model, optimizer, scaler=None) -> dict:
    """Check the checkpoint (``check_checkpoint``), then restore model, optimizer, scaler and
    this rank's RNG; return the trainer state."""
    directory = Path(directory)
    check_checkpoint(directory, rt.rank)
    state = json.loads((directory / STATE).read_text())
    load_model_weights(model, directory)
    opt_state = load_optimizer_state(directory)
    structured_to_unique = {v: k for k, v in _unique_to_structured(model).items()}
    optimizer.set_state_dict(_rename_optimizer_state(opt_state["optimizer"], structured_to_unique))
    if scaler is not None and "scaler" in opt_state:
        scaler.load_state_dict(opt_state["scaler"])
    message = restore_rng_state(rt, directory)
    if message and rt.is_main:
        print(message, flush=True)
    return state


def save_rng_state(rt: runtime.Runtime, directory) -> Path:
    """This rank's random state (``runtime.rng_state``) and the layout it was saved with, as JSON."""
    path = Path(directory) / RNG_FILE.format(rank=rt.rank)
    path.write_text(json.dumps({"rank": rt.rank, "world_size": rt.world_size, **runtime.rng_state()}))
    return path


def restore_rng_state(rt: runtime.Runtime, directory) -> str:
    """Restore this rank's random state from ``directory``; returns "" when the run continues
    exactly as the saved one would have, else what is and is not reproduced. A checkpoint of
    another layout (ranks, GPUs, CPU) resumes; only the random streams that do not carry over
    differ (dropout masks, hence the weights, differ from an uninterrupted run)."""
    directory = Path(directory)
    path = directory / RNG_FILE.format(rank=rt.rank)
    if not path.is_file():
        return _restore_pickled_rng_state(rt, directory)
    saved = json.loads(path.read_text())
    missed = runtime.set_rng_state(saved)
    if saved["world_size"] > rt.world_size:
        missed.append(f"the random streams of ranks {rt.world_size}-{saved['world_size'] - 1}, which this run does not have")
    elif saved["world_size"] < rt.world_size:
        missed.append(f"ranks {saved['world_size']}-{rt.world_size - 1} start from their seed (the checkpoint has no "
                      f"state for them)")
    if not missed:
        return ""
    return (f"{directory}: saved by {saved['world_size']} rank(s) on {saved['device']}, resumed by {rt.world_size} "
            f"on {paddle.get_device()}. Restored: the Python, NumPy and Paddle CPU random state of each rank the "
            f"checkpoint has. Not "
            f"reproduced: {'; '.join(missed)}. Training continues, but random draws (dropout) differ from an "
            f"uninterrupted run of the saved layout.")


def _restore_pickled_rng_state(rt: runtime.Runtime, directory: Path) -> str:
    """``rng_rank{r}.pkl`` of earlier versions: refused unless trusted; then its Python,
    NumPy and CPU generator state are restored (its GPU list matches only the same GPUs)."""
    path = directory / PICKLED_RNG_FILE.format(rank=rt.rank)
    if not path.is_file():
        return f"{directory}: no random state for rank {rt.rank}; it starts from its seed"
    _refuse_untrusted_pickle(path, "delete the checkpoint's rng_rank*.pkl files to resume without its random state")
    import pickle
    import random

    from paddle.base import core

    print(f"{path}: unpickling the random state (trusted: {TRUST_PICKLE_ENV}=1)", flush=True)
    with open(path, "rb") as f:
        state = pickle.load(f)  # trusted by the user, see above
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    cpu = [g for g in state["paddle"] if g.__getstate__()[0] == -1]
    if cpu:
        core.default_cpu_generator().set_state(cpu[0])
    return "" if cpu else f"{path}: read (trusted pickle); its Paddle generator state is for GPUs and was not restored"

"""Resumable checkpoints, written atomically.

``<output_dir>/checkpoints/step_00000100/`` holds the model in PaddleNLP ``save_pretrained``
format (safetensors), the tokenizer, ``optimizer.pdopt`` (optimizer + LR scheduler, and the
loss scaler under AMP), ``rng_rank{r}.json`` per rank (its random state, plain JSON: see
``runtime.rng_state``) and ``trainer_state.json`` (step, data order, counters). It is written
under a temporary name and renamed when complete, so a crash leaves either the whole
checkpoint or none; older checkpoints beyond ``keep`` are removed.

Checkpoints of earlier versions hold ``rng_rank{r}.pkl`` (pickle); those are read only when
``ERNIE_TINY_TRUST_PICKLED_RNG=1`` says the file is trusted (unpickling runs code from it).
"""
from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Optional

import paddle
from safetensors.numpy import load_file

from ernie_tiny import runtime

STATE = "trainer_state.json"
_STEP_DIR = re.compile(r"^step_(\d{8})$")


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
    """Write a checkpoint (collective: every rank calls it)."""
    root = checkpoints_dir(output_dir)
    final = root / f"step_{step:08d}"
    tmp = root / f".tmp_step_{step:08d}"
    if rt.is_main:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    rt.barrier()
    save_rng_state(rt, tmp)
    if rt.is_main:
        save_weights(model, tmp)
        if tokenizer is not None:
            tokenizer.save_pretrained(str(tmp))
        opt_state = {"optimizer": _rename_optimizer_state(optimizer.state_dict(), _unique_to_structured(model))}
        if scaler is not None:
            opt_state["scaler"] = scaler.state_dict()
        paddle.save(opt_state, str(tmp / "optimizer.pdopt"))
    rt.barrier()
    if rt.is_main:
        (tmp / STATE).write_text(json.dumps(dict(state, step=step), indent=1))
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        for old in list_checkpoints(output_dir)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    rt.barrier()
    return final


def save_weights(model, directory: Path) -> None:
    """``save_pretrained`` (safetensors) for PaddleNLP models; ``model.safetensors`` of the
    state dict for any other Layer (e.g. an encoder with several task heads)."""
    if hasattr(model, "save_pretrained"):
        model.save_pretrained(str(directory), safe_serialization=True)
    else:
        from safetensors.numpy import save_file

        save_file({k: v.numpy() for k, v in model.state_dict().items()}, str(Path(directory) / "model.safetensors"))


def save_pretrained_dir(directory, model, tokenizer, config, config_name: str) -> Path:
    """A stage's output model: ``save_pretrained`` (safetensors) + tokenizer + the resolved
    config as ``config_name``, written under a temporary name and renamed when complete."""
    from ernie_tiny.config import dump_config

    directory = Path(directory)
    tmp = directory.with_name(f".tmp_{directory.name}")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(str(tmp), safe_serialization=True)
    tokenizer.save_pretrained(str(tmp))
    dump_config(config, tmp / config_name)
    shutil.rmtree(directory, ignore_errors=True)
    tmp.rename(directory)
    return directory


def load_model_weights(model, directory) -> None:
    """Load ``save_pretrained`` safetensors weights into an existing model, strictly."""
    weights = load_file(str(Path(directory) / "model.safetensors"))
    own = model.state_dict()
    missing = sorted(set(own) - set(weights))
    unexpected = sorted(set(weights) - set(own))
    if missing or unexpected:
        raise ValueError(f"{directory}: weights do not match the model (missing {missing[:5]}, "
                         f"unexpected {unexpected[:5]})")
    model.set_state_dict({k: paddle.to_tensor(v) for k, v in weights.items()})


def load_checkpoint(rt: runtime.Runtime, directory, model, optimizer, scaler=None) -> dict:
    """Restore model, optimizer, scaler and this rank's RNG; return the trainer state."""
    directory = Path(directory)
    state = json.loads((directory / STATE).read_text())
    load_model_weights(model, directory)
    opt_state = paddle.load(str(directory / "optimizer.pdopt"))
    structured_to_unique = {v: k for k, v in _unique_to_structured(model).items()}
    optimizer.set_state_dict(_rename_optimizer_state(opt_state["optimizer"], structured_to_unique))
    if scaler is not None and "scaler" in opt_state:
        scaler.load_state_dict(opt_state["scaler"])
    message = restore_rng_state(rt, directory)
    if message and rt.is_main:
        print(message, flush=True)
    return state


RNG_FILE = "rng_rank{rank}.json"
PICKLED_RNG_FILE = "rng_rank{rank}.pkl"
TRUST_PICKLE_ENV = "ERNIE_TINY_TRUST_PICKLED_RNG"


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
    if os.environ.get(TRUST_PICKLE_ENV) != "1":
        raise RuntimeError(
            f"{path}: this checkpoint keeps its random state as a pickle, which is no longer read by default "
            f"(unpickling runs code from the file). If you trust the file, resume with {TRUST_PICKLE_ENV}=1; "
            f"or delete the checkpoint's rng_rank*.pkl files to resume without its random state.")
    import pickle
    import random

    import numpy as np
    from paddle.base import core

    with open(path, "rb") as f:
        state = pickle.load(f)  # trusted by the user, see above
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    cpu = [g for g in state["paddle"] if g.__getstate__()[0] == -1]
    if cpu:
        core.default_cpu_generator().set_state(cpu[0])
    return "" if cpu else f"{path}: read (trusted pickle); its Paddle generator state is for GPUs and was not restored"

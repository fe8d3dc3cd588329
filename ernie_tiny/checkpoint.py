"""Resumable checkpoints, written atomically.

``<output_dir>/checkpoints/step_00000100/`` holds the model in PaddleNLP ``save_pretrained``
format (safetensors), the tokenizer, ``optimizer.pdopt`` (optimizer + LR scheduler, and the
loss scaler under AMP), ``rng_rank{r}.pkl`` per rank and ``trainer_state.json`` (step, data
order, counters). It is written under a temporary name and renamed when complete, so a crash
leaves either the whole checkpoint or none; older checkpoints beyond ``keep`` are removed.
"""
from __future__ import annotations

import json
import pickle
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
    with open(tmp / f"rng_rank{rt.rank}.pkl", "wb") as f:
        pickle.dump(runtime.rng_state(), f)
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
    rng_file = directory / f"rng_rank{rt.rank}.pkl"
    if rng_file.is_file():
        with open(rng_file, "rb") as f:
            runtime.set_rng_state(pickle.load(f))
    return state

"""The inference directory that tools/export.py writes: its ``deploy.json`` (what the model is,
which files hold it), written whole, read and checked before anything loads."""
from __future__ import annotations

import json
from pathlib import Path
from typing import List, Literal, Optional

import pydantic

from ernie_tiny.deploy.inputs import DeployInputError
from ernie_tiny.deploy.json_body import validation_problems
from ernie_tiny.files import write_text_atomically

DEPLOY_FILE = "deploy.json"
REMAKE = "re-export it with tools/export.py"


class PaddleFiles(pydantic.BaseModel):
    model: str
    params: str


class DeployInfo(pydantic.BaseModel):
    """The keys of ``deploy.json`` the predictor reads (export.py writes more: checks, int8 scores)."""
    model_config = pydantic.ConfigDict(extra="allow")

    task: str
    head: Literal["sequence", "token"]
    input: str
    labels: List[str] = pydantic.Field(min_length=1)
    max_length: int = pydantic.Field(ge=1)
    paddle: PaddleFiles
    onnx: Optional[str] = None
    onnx_int8: Optional[str] = None
    openvino_int8: Optional[str] = None


def write_deploy_info(model_dir: str | Path, info: dict) -> Path:
    """``deploy.json`` of ``model_dir``, written whole or not at all."""
    return write_text_atomically(Path(model_dir) / DEPLOY_FILE, json.dumps(info, ensure_ascii=False, indent=1) + "\n")


def read_deploy_info(model_dir: str | Path) -> dict:
    """``deploy.json`` of ``model_dir`` as a dict, checked; a ``DeployInputError`` naming the
    directory, the file, its line or key, when it is missing, not JSON or lacks what the predictor needs."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise DeployInputError(f"{model_dir}: no such directory (make an inference directory with tools/export.py)")
    path = model_dir / DEPLOY_FILE
    if not path.is_file():
        raise DeployInputError(f"{path}: not found; {model_dir} is not an inference directory "
                               f"(make one with tools/export.py)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as err:
        raise DeployInputError(f"{path}: not UTF-8 ({err.reason} at byte {err.start}); {REMAKE}") from None
    except json.JSONDecodeError as err:
        raise DeployInputError(f"{path}:{err.lineno}:{err.colno}: not valid JSON ({err.msg}; a truncated or "
                               f"edited file?); {REMAKE}") from None
    try:
        DeployInfo.model_validate(data)
    except pydantic.ValidationError as err:
        raise DeployInputError(f"{path}: {validation_problems(err, whole='top level')}; {REMAKE}") from None
    return data


def model_file(model_dir: str | Path, name: str) -> Path:
    """``model_dir / name``, which ``deploy.json`` lists; a ``DeployInputError`` if it is not there."""
    path = Path(model_dir) / name
    if not path.is_file():
        raise DeployInputError(f"{path}: listed in {Path(model_dir) / DEPLOY_FILE} but not found; {REMAKE}")
    return path

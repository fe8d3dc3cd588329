"""Writing a test's YAML config: a base mapping with some sections updated key by key."""
import copy
import json
from pathlib import Path

import yaml


def write_config_file(path: Path, base: dict, **sections) -> Path:
    data = copy.deepcopy(base)
    for section, values in sections.items():
        data.setdefault(section, {}).update(values)
    path.write_text(yaml.safe_dump(data))
    return path


def write_model_dir(path: Path, **config) -> Path:
    """A stand-in ``save_pretrained`` directory for config checks (nothing loads it): config.json
    with ``config``, a weights file with no tensors, a tokenizer config and a vocabulary."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps(config))
    header = b"{}"
    (path / "model.safetensors").write_bytes(len(header).to_bytes(8, "little") + header)
    (path / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "ErnieTokenizer"}))
    (path / "vocab.txt").write_text("[PAD]\n[CLS]\n[SEP]\n[MASK]\n[UNK]\n", encoding="utf-8")
    return path

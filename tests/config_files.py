"""Writing a test's YAML config: a base mapping with some sections updated key by key."""
import copy
from pathlib import Path

import yaml


def write_config_file(path: Path, base: dict, **sections) -> Path:
    data = copy.deepcopy(base)
    for section, values in sections.items():
        data.setdefault(section, {}).update(values)
    path.write_text(yaml.safe_dump(data))
    return path

"""Command-line entry points. ``tools/*.py`` and the console scripts call these; each one
reads its config (without importing Paddle), sets the thread count, then imports and runs
the stage, so a config error costs no Paddle import."""
from __future__ import annotations

import argparse
import importlib
import sys

from ernie_tiny.config import ConfigError, load_config
from ernie_tiny.runtime import configure_threads


def run_stage(description: str, schema_path: str, run_path: str, argv=None, resume_flag: bool = True) -> int:
    """Parse ``-c CONFIG -o Section.key=value ... [--resume [DIR]]``, validate the config
    against ``schema_path`` ('module:Class'), then call ``run_path`` ('module:function')."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("-c", "--config", required=True, help="YAML config file")
    parser.add_argument("-o", "--override", action="append", default=[], metavar="Section.key=value",
                        help="override a config value (repeatable); the value is read as YAML")
    if resume_flag:
        parser.add_argument("--resume", nargs="?", const="auto", default=None, metavar="CHECKPOINT",
                            help="resume from the newest checkpoint in Global.output_dir, or from CHECKPOINT "
                                 "(same as -o Train.resume=...)")
    args = parser.parse_args(argv)
    overrides = list(args.override)
    if resume_flag and args.resume:
        overrides.append(f"Train.resume={args.resume}")
    module, name = schema_path.split(":")
    schema = getattr(importlib.import_module(module), name)
    try:
        config = load_config(schema, args.config, overrides)
        configure_threads(config.Global.num_threads)
        module, name = run_path.split(":")
        getattr(importlib.import_module(module), name)(config)
    except ConfigError as err:
        print(f"config error:\n{err}", file=sys.stderr)
        return 2
    return 0


def distill_main(argv=None) -> int:
    return run_stage("MiniLMv2 task-agnostic distillation of an ERNIE teacher into a small student.",
                     "ernie_tiny.distill.schema:DistillConfig", "ernie_tiny.distill.recipe:run", argv)


def benchmark_main(argv=None) -> int:
    from ernie_tiny.benchmarks.cli import main

    return main(argv)

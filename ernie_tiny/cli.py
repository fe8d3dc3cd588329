"""Command-line entry points. ``tools/*.py`` and the console scripts call these; each one
reads its config (without importing Paddle), sets the thread count, then runs the stage."""
from __future__ import annotations

import argparse
import sys

from ernie_tiny.config import ConfigError, load_config
from ernie_tiny.runtime import configure_threads


def _parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("-c", "--config", required=True, help="YAML config file")
    parser.add_argument("-o", "--override", action="append", default=[], metavar="Section.key=value",
                        help="override a config value (repeatable)")
    return parser


def distill_main(argv=None) -> int:
    parser = _parser("MiniLMv2 task-agnostic distillation of an ERNIE teacher into a small student.")
    parser.add_argument("--resume", nargs="?", const="auto", default=None, metavar="CHECKPOINT",
                        help="resume from the latest checkpoint in Global.output_dir, or from CHECKPOINT "
                             "(same as -o Train.resume=...)")
    args = parser.parse_args(argv)
    from ernie_tiny.distill.schema import DistillConfig

    overrides = list(args.override) + ([f"Train.resume={args.resume}"] if args.resume else [])
    try:
        config = load_config(DistillConfig, args.config, overrides)
        configure_threads(config.Global.num_threads)
        from ernie_tiny.distill.recipe import run

        run(config)
    except ConfigError as err:
        print(f"config error:\n{err}", file=sys.stderr)
        return 2
    return 0


def benchmark_main(argv=None) -> int:
    from ernie_tiny.benchmarks.cli import main

    return main(argv)

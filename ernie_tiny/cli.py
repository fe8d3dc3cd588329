"""Command-line entry points. ``tools/*.py`` and the console scripts call these; each one
reads its config (without importing Paddle), sets the thread count, then imports and runs
the stage, so a config error costs no Paddle import.

Every expected failure (a bad config, model or tokenizer directory, corpus, task file or flag)
is an ``ernie_tiny.errors.InputError``: ``run_stage`` prints its message (which names the file,
line or key) under a one-line heading, without a traceback, and returns 2. Anything else is a
bug or an environment failure and keeps its traceback."""
from __future__ import annotations

import argparse
import errno
import sys
from typing import List, Tuple

from ernie_tiny.config import load_config
from ernie_tiny.errors import INPUT_ERROR_EXIT, InputError
from ernie_tiny.runtime import configure_threads
from ernie_tiny.stages import Stage, stage as find_stage


WRITE_FAILURES = {errno.ENOSPC, errno.EFBIG, errno.EROFS, errno.EDQUOT, errno.EACCES}


def parse_stage_args(stage: Stage, argv=None) -> Tuple[str, List[str]]:
    """(config file, overrides) from ``-c CONFIG -o Section.key=value ... [--resume [DIR]]``
    (``--resume X`` becomes the override ``Train.resume=X``)."""
    parser = argparse.ArgumentParser(description=stage.description)
    parser.add_argument("-c", "--config", required=True, help="YAML config file")
    parser.add_argument("-o", "--override", action="append", default=[], metavar="Section.key=value",
                        help="override a config value (repeatable); the value is read as YAML")
    if stage.resume_flag:
        parser.add_argument("--resume", nargs="?", const="auto", default=None, metavar="CHECKPOINT",
                            help="resume from the newest checkpoint in Global.output_dir, or from CHECKPOINT "
                                 "(same as -o Train.resume=...)")
    args = parser.parse_args(argv)
    overrides = list(args.override)
    if stage.resume_flag and args.resume:
        overrides.append(f"Train.resume={args.resume}")
    return args.config, overrides


def run_stage(name: str, argv=None) -> int:
    """Parse the command line of stage ``name`` (``ernie_tiny.stages``; see ``parse_stage_args``),
    validate the config against its schema, then run it; bad input (an ``InputError``) is printed
    without a traceback and gives exit code 2."""
    stage = find_stage(name)
    config_file, overrides = parse_stage_args(stage, argv)
    try:
        config = load_config(stage.load_schema(), config_file, overrides)
        configure_threads(config.Global.num_threads)
        run = stage.load_run()
        run(config, config_file) if stage.pass_origin else run(config)
    except InputError as err:
        print(f"{err.what}:\n{err}", file=sys.stderr)
        return INPUT_ERROR_EXIT
    except OSError as err:
        if err.errno not in WRITE_FAILURES:
            raise
        # a full disk, a file-size limit or a read-only directory, anywhere (logs, config.yaml,
        # a best model): checkpoints already turn these into CheckpointError; earlier ones stay
        print(f"write error:\n{err.filename or 'a file'}: cannot write ({err.strerror}); the run stopped, "
              f"earlier checkpoints are kept", file=sys.stderr)
        return INPUT_ERROR_EXIT
    return 0


def teacher_mtl_main(argv=None) -> int:
    return run_stage("teacher_mtl", argv)



def distill_main(argv=None) -> int:
    return run_stage("distill", argv)


def pretrain_main(argv=None) -> int:
    return run_stage("pretrain", argv)


def benchmark_main(argv=None) -> int:
    from ernie_tiny.benchmarks.cli import main

    return main(argv)


def finetune_main(argv=None) -> int:
    return run_stage("finetune", argv)


def export_main(argv=None) -> int:
    return run_stage("export", argv)


def evaluate_main(argv=None) -> int:
    return run_stage("evaluate", argv)


def pipeline_main(argv=None) -> int:
    return run_stage("pipeline", argv)


def experiment_main(argv=None) -> int:
    return run_stage("experiment", argv)

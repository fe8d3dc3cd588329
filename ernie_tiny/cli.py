"""Command-line entry points. ``tools/*.py`` and the console scripts call these; each one
reads its config (without importing Paddle), sets the thread count, then imports and runs
the stage, so a config error costs no Paddle import."""
from __future__ import annotations

import argparse
import importlib
import sys

from ernie_tiny.config import ConfigError, load_config
from ernie_tiny.runtime import configure_threads


def run_stage(description: str, schema_path: str, run_path: str, argv=None, resume_flag: bool = True,
              pass_origin: bool = False) -> int:
    """Parse ``-c CONFIG -o Section.key=value ... [--resume [DIR]]``, validate the config
    against ``schema_path`` ('module:Class'), then call ``run_path`` ('module:function') with it
    (and, with ``pass_origin``, the config file's path, for messages naming it)."""
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
        run = getattr(importlib.import_module(module), name)
        run(config, args.config) if pass_origin else run(config)
    except ConfigError as err:
        print(f"config error:\n{err}", file=sys.stderr)
        return 2
    return 0


def train_teacher_main(argv=None) -> int:
    return run_stage("Multi-task finetuning of an ERNIE teacher: one shared encoder, one head per task.",
                     "ernie_tiny.mtl.schema:TeacherMTLConfig", "ernie_tiny.mtl.recipe:run", argv)


def distill_main(argv=None) -> int:
    return run_stage("MiniLMv2 task-agnostic distillation of an ERNIE teacher into a small student.",
                     "ernie_tiny.distill.schema:DistillConfig", "ernie_tiny.distill.recipe:run", argv)


def pretrain_main(argv=None) -> int:
    return run_stage("Masked-LM pretraining of an ERNIE (from sizes, or continued from a model): makes a teacher.",
                     "ernie_tiny.pretrain.schema:PretrainConfig", "ernie_tiny.pretrain.recipe:run", argv)


def benchmark_main(argv=None) -> int:
    from ernie_tiny.benchmarks.cli import main

    return main(argv)


def finetune_main(argv=None) -> int:
    return run_stage("Finetune a student on one task (one hyperparameter point) and keep the model for export.",
                     "ernie_tiny.deploy.schema:FinetuneConfig", "ernie_tiny.deploy.finetune:run", argv,
                     resume_flag=False)


def export_main(argv=None) -> int:
    return run_stage("Export a finetuned model to a Paddle Inference directory (+ ONNX, int8), checked against eager.",
                     "ernie_tiny.deploy.schema:ExportConfig", "ernie_tiny.deploy.export:run", argv,
                     resume_flag=False)


def evaluate_main(argv=None) -> int:
    return run_stage("Finetune a model on task cards over a hyperparameter grid; report the best dev score per task.",
                     "ernie_tiny.evaluation.schema:EvaluateConfig", "ernie_tiny.evaluation.runner:run", argv,
                     resume_flag=False)


def pipeline_main(argv=None) -> int:
    return run_stage("The whole recipe: pretrain -> multi-task teacher -> distill -> evaluate -> finetune -> export; "
                     "finished stages are skipped, interrupted ones resume.",
                     "ernie_tiny.pipeline.schema:PipelineConfig", "ernie_tiny.pipeline.recipe:run", argv,
                     resume_flag=False, pass_origin=True)


def experiment_main(argv=None) -> int:
    return run_stage("The MITKD claim, measured: vanilla task-agnostic distillation vs distillation from the "
                     "multi-task teacher, on in-domain, held-out and low-resource tasks.",
                     "ernie_tiny.experiment.schema:ExperimentConfig", "ernie_tiny.experiment.recipe:run", argv,
                     resume_flag=False, pass_origin=True)

"""The one list of stages. Each is declared once: its name (the tool, the pipeline step and the
output folder all use it), its config schema, its run function and its result class, each as a
'module:name' string, so this module imports no Paddle and a config error costs no Paddle import.

A stage's result class (``<stage>/result.py``) is a small dataclass with ``product(output_dir)``
(the folder the next stage reads; the recipe saves there too), ``read(output_dir)`` (the typed
result, from the files the stage wrote, through the modules that write them; None before the
stage has written it) and ``headline()`` (one line for summaries).

Adding a stage: write its schema, its recipe (``run(config)``, starting with
``runtime.start_stage``) and its result class, then add one line here."""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Dict


def load_object(path: str):
    """The object at 'module:name'."""
    module, name = path.split(":")
    return getattr(importlib.import_module(module), name)


@dataclass(frozen=True)
class Stage:
    """A config-driven command. ``result`` is '' for the commands that run other stages (pipeline,
    experiment): they are not steps of a pipeline. ``resume_flag``: the command takes
    ``--resume``; ``pass_origin``: ``run`` is also given the config file's path (for messages)."""

    name: str
    description: str
    schema: str
    run: str
    result: str = ""
    resume_flag: bool = True
    pass_origin: bool = False

    def load_schema(self):
        return load_object(self.schema)

    def load_run(self):
        return load_object(self.run)

    def product(self, output_dir, config=None) -> Path:
        """The folder of ``output_dir`` that the next stage reads (the directory itself for the
        stages whose output is read as a whole, or by nobody); ``config``: the stage's resolved
        config, for a run that has not written its output yet."""
        return load_object(self.result).product(output_dir, config)

    def several_models_reason(self, config) -> str:
        """Why a run with this resolved config leaves several models in its product, naming the
        config key ('' when it leaves one): a later stage that reads one model cannot read it."""
        return load_object(self.result).several_models_reason(config)

    def read_result(self, output_dir):
        """The stage's typed result in ``output_dir`` (None if it has not written it yet)."""
        return load_object(self.result).read(output_dir)


class StageResult:
    """Base of the result classes: ``product_dir`` is the folder of the output directory that the
    next stage reads ('' = the output directory itself)."""

    product_dir: ClassVar[str] = ""

    @classmethod
    def product(cls, output_dir, config=None) -> Path:
        return Path(output_dir) / cls.product_dir if cls.product_dir else Path(output_dir)

    @classmethod
    def several_models_reason(cls, config) -> str:
        return ""


def _stages(*stages: Stage) -> Dict[str, Stage]:
    return {stage.name: stage for stage in stages}


STAGES: Dict[str, Stage] = _stages(  # in pipeline order; the multi-stage commands last
    Stage("pretrain", "Masked-LM pretraining of an ERNIE (from sizes, or continued from a model): makes a teacher.",
          "ernie_tiny.pretrain.schema:PretrainConfig", "ernie_tiny.pretrain.recipe:run",
          "ernie_tiny.pretrain.result:PretrainResult"),
    Stage("teacher_mtl", "Multi-task finetuning of an ERNIE teacher: one shared encoder, one head per task.",
          "ernie_tiny.mtl.schema:TeacherMTLConfig", "ernie_tiny.mtl.recipe:run",
          "ernie_tiny.mtl.result:TeacherMTLResult"),
    Stage("distill", "MiniLMv2 task-agnostic distillation of an ERNIE teacher into a small student.",
          "ernie_tiny.distill.schema:DistillConfig", "ernie_tiny.distill.recipe:run",
          "ernie_tiny.distill.result:DistillResult"),
    Stage("evaluate", "Finetune a model on task cards over a hyperparameter grid; report the best dev score per task.",
          "ernie_tiny.evaluation.schema:EvaluateConfig", "ernie_tiny.evaluation.runner:run",
          "ernie_tiny.evaluation.result:EvaluateResult", resume_flag=False),
    Stage("finetune", "Finetune a student on one task (one hyperparameter point) and keep the model for export.",
          "ernie_tiny.deploy.schema:FinetuneConfig", "ernie_tiny.deploy.finetune:run",
          "ernie_tiny.deploy.result:FinetuneResult", resume_flag=False),
    Stage("export", "Export a finetuned model to a Paddle Inference directory (+ ONNX, int8), checked against eager.",
          "ernie_tiny.deploy.schema:ExportConfig", "ernie_tiny.deploy.export:run",
          "ernie_tiny.deploy.result:ExportResult", resume_flag=False),
    Stage("pipeline", "The whole recipe: pretrain -> multi-task teacher -> distill -> evaluate -> finetune -> export; "
          "finished stages are skipped, interrupted ones resume.",
          "ernie_tiny.pipeline.schema:PipelineConfig", "ernie_tiny.pipeline.recipe:run",
          resume_flag=False, pass_origin=True),
    Stage("experiment", "The MITKD claim, measured: vanilla task-agnostic distillation vs distillation from the "
          "multi-task teacher, on in-domain, held-out and low-resource tasks.",
          "ernie_tiny.experiment.schema:ExperimentConfig", "ernie_tiny.experiment.recipe:run",
          resume_flag=False, pass_origin=True),
)

PIPELINE_STAGES = tuple(name for name, stage in STAGES.items() if stage.result)  # what a pipeline can run

ALIASES = {"train_teacher": "teacher_mtl"}  # old tool names (tools/train_teacher.py) -> stage names


def stage(name: str) -> Stage:
    """The stage called ``name`` (or an old alias of it)."""
    return STAGES[ALIASES.get(name, name)]


def headline(stage_name: str, output_dir) -> str:
    """One line of what the stage wrote in ``output_dir`` ('' before it has written it; a file from
    another version is named, not raised: a summary must not fail the run it summarizes)."""
    from ernie_tiny.errors import InputError

    try:
        result = STAGES[stage_name].read_result(output_dir)
    except (KeyError, ValueError, TypeError, OSError, InputError) as err:
        return f"(no headline: {type(err).__name__} {err})"
    return result.headline() if result is not None else ""


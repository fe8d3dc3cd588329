"""The claim experiment's config (`tools/experiment.py -c configs/demo/claim.yaml`).

One pretrained teacher; (a) distilled as is (vanilla task-agnostic, "MiniLMv2-B"), (b) finetuned
on the in-domain tasks and then distilled (MITKD). The same distillation config (student size,
corpus, steps, seed) for both; both students finetuned with the same evaluation config on the
in-domain tasks, on held-out tasks the teacher never saw, and on small samples of a held-out
task's training data, each over several seeds.
"""
from __future__ import annotations

from typing import List, Optional

from pydantic import Field

from ernie_tiny.config import Section
from ernie_tiny.evaluation.schema import EvalTaskEntry
from ernie_tiny.pipeline.schema import PipelineGlobal, StageEntry


class ExperimentGlobal(PipelineGlobal):
    output_dir: str = "output/claim"


class TeacherSection(Section):
    pretrain: StageEntry = Field(description="makes the shared teacher (tools/pretrain.py config)")
    teacher_mtl: StageEntry = Field(description="finetunes it on the in-domain tasks (tools/teacher_mtl.py config)")


class LowResourceSection(Section):
    card: str = Field(description="a held-out task card")
    fractions: List[float] = Field(min_length=1, description="shares of its train split, e.g. [0.01, 0.1]")
    max_dev_examples: int = Field(0, ge=0)
    max_length: int = Field(0, ge=0)
    epochs: Optional[int] = Field(None, ge=1, description="None = the evaluation grid's; small samples need more")

    def check(self):
        for i, share in enumerate(self.fractions):
            if not 0 < share <= 1:
                yield f"fractions.{i}", f"{share} is not a share of the train split (0 < share <= 1)"
        if len(set(self.fractions)) != len(self.fractions):
            yield "fractions", f"{self.fractions} repeats a value"


class EvaluationSection(StageEntry):
    """A tools/evaluate.py config (its grid, epochs, learning rates) plus the task sets; the
    experiment sets Tasks, Grid.seeds, Model.path and Model.name for each (arm, task set)."""

    seeds: List[int] = Field(min_length=1, description="finetuning seeds: every score is a mean over them")
    in_domain: List[EvalTaskEntry] = Field(min_length=1, description="tasks the MTL teacher was finetuned on")
    held_out: List[EvalTaskEntry] = Field(min_length=1, description="tasks the teacher never saw")
    low_resource: LowResourceSection


class ExperimentConfig(Section):
    Global: ExperimentGlobal = Field(default_factory=ExperimentGlobal)
    Teacher: TeacherSection
    Distill: StageEntry = Field(description="one tools/distill.py config for both arms")
    Evaluation: EvaluationSection

    def check(self):
        for key in ("Tasks", "Model"):
            if key in self.Evaluation.overrides:
                yield f"Evaluation.overrides.{key}", "set by the experiment for each arm and task set"

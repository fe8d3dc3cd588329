"""The pipeline config (`tools/pipeline.py -c configs/demo/pipeline.yaml`): which stages run, each
from its own stage config plus overrides. The pipeline sets each stage's output directory
(``<Global.output_dir>/<stage>``) and wires the stages together:

    pretrain/teacher -> teacher_mtl (Model.name_or_path)
    teacher_mtl/teacher (else pretrain/teacher) -> distill (Teacher.name_or_path, Tokenizer.source: teacher)
    distill/student -> evaluate (Model.path), finetune (Model.path)
    finetune/model -> export (Model.path)

Leave a stage out to start from something you already have (e.g. no pretrain: teacher_mtl reads
its config's Model.name_or_path; no teacher_mtl: the student is distilled from the pretrained
teacher as is).
"""
from __future__ import annotations

import os
from typing import Any, Dict, Optional

import pydantic
from pydantic import Field

from ernie_tiny.config import Section
from ernie_tiny.stages import PIPELINE_STAGES


class StageEntry(Section):
    config: str = Field(description="the stage's YAML config (e.g. configs/demo/distill.yaml)")
    overrides: Dict[str, Any] = Field(default_factory=dict,
                                      description="values replacing the stage config's, as nested sections: "
                                                  "{Train: {max_steps: 100}}; a list (Tasks) is replaced whole")

    def check(self):
        if not os.path.isfile(self.config):
            yield "config", f"{self.config!r}: no such file"


class PipelineGlobal(Section):
    output_dir: str = "output/pipeline"
    seed: Optional[int] = Field(None, description="every stage's Global.seed; None = each stage config's own")
    num_threads: int = Field(0, ge=0, description="CPU threads; 0 = all cores")


class _StagesBase(Section):
    def present(self):
        return [name for name in PIPELINE_STAGES if getattr(self, name) is not None]

    def check(self):
        if not self.present():
            yield PIPELINE_STAGES[0], "no stage is configured: give at least one of " + ", ".join(PIPELINE_STAGES)
        if self.export is not None and self.finetune is None:
            yield "export", "exports the finetune stage's model: configure Stages.finetune too"


# one optional entry per stage of the registry, in its order
PipelineStages = pydantic.create_model("PipelineStages", __base__=_StagesBase,
                                       **{name: (Optional[StageEntry], None) for name in PIPELINE_STAGES})


class PipelineConfig(Section):
    Global: PipelineGlobal = Field(default_factory=PipelineGlobal)
    Stages: PipelineStages

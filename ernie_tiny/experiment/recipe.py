"""The claim experiment as a list of pipeline steps (``ernie_tiny.pipeline.steps``), so it shares
the pipeline's up-front validation, skipping of finished steps and resume: an interrupted run
continues where it stopped, and a longer run can be finished in parts.

Steps, in an order that makes partial results comparable (both arms of a task set finish
before the next set starts):

    pretrain -> teacher_mtl -> distill/vanilla (pretrain's teacher) -> distill/mitkd (MTL teacher)
    -> evaluate/<set>/<arm> for set in in_domain, held_out, low_resource_<share>; arm in vanilla, mitkd
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import List

from ernie_tiny.experiment.arms import ARM_NAMES, ARMS, task_sets
from ernie_tiny.experiment.schema import ExperimentConfig
from ernie_tiny.pipeline.steps import ProductOf, Step, flatten, run_steps, validate
from ernie_tiny.stages import STAGES

def plan(config: ExperimentConfig, origin: str = "") -> List[Step]:
    root = Path(config.Global.output_dir)
    seed = {"Global.seed": config.Global.seed} if config.Global.seed is not None else {}
    t = config.Teacher
    def product(step: str, output_dir: Path) -> str:  # step names start with their stage's: distill/mitkd
        return ProductOf(STAGES[step.split("/")[0]].product(output_dir), step)

    steps = [
        Step("pretrain", "pretrain", t.pretrain.config, root / "pretrain", flatten(t.pretrain.overrides),
             dict(seed), origin),
        Step("teacher_mtl", "teacher_mtl", t.teacher_mtl.config, root / "teacher_mtl", flatten(t.teacher_mtl.overrides),
             {"Model.name_or_path": product("pretrain", root / "pretrain"), **seed}, origin, after=("pretrain",)),
    ]
    for arm, source in ARMS.items():
        steps.append(Step(f"distill/{arm}", "distill", config.Distill.config, root / "distill" / arm,
                          flatten(config.Distill.overrides),
                          {"Teacher.name_or_path": product(source, root / source), "Tokenizer.source": "teacher",
                           **seed}, origin, after=(source,)))
    ev = config.Evaluation
    for name, tasks in task_sets(config):
        for arm in ARMS:
            steps.append(Step(f"evaluate/{name}/{arm}", "evaluate", ev.config, root / "evaluate" / name / arm,
                              flatten(ev.overrides),
                              {"Model.path": product(f"distill/{arm}", root / "distill" / arm),
                               "Model.name": ARM_NAMES[arm], "Tasks": tasks, "Grid.seeds": list(ev.seeds), **seed},
                              origin, after=(f"distill/{arm}",)))
    return steps


def run(config: ExperimentConfig, origin: str = "") -> Path:
    from ernie_tiny.experiment.report import write_report
    from ernie_tiny.pipeline.summary import summary_markdown, summary_text

    started = time.time()
    steps = plan(config, origin)
    validate(steps)
    root = Path(config.Global.output_dir)
    print(f"claim experiment: {len(steps)} steps; outputs under {root}", flush=True)
    results = run_steps(steps, root, title="claim")
    total = time.time() - started
    print(summary_text(results, total), flush=True)
    (root / "steps.md").write_text(summary_markdown(results, "Claim experiment: steps", total), encoding="utf-8")
    report = write_report(root, config, results, origin)
    print(report.read_text(encoding="utf-8"), flush=True)
    print(f"report written to {report}", flush=True)
    return report

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

from ernie_tiny.experiment.schema import ExperimentConfig
from ernie_tiny.pipeline.steps import ProductOf, Step, flatten, run_steps, validate
from ernie_tiny.stages import STAGES

ARMS = {"vanilla": "pretrain", "mitkd": "teacher_mtl"}  # arm -> the step whose teacher it distils
ARM_NAMES = {"vanilla": "MiniLMv2 (vanilla teacher)", "mitkd": "MITKD (multi-task teacher)"}


def share_label(share: float) -> str:
    return f"low_resource_{share * 100:g}pct"


def train_size(card_name: str) -> int:
    from ernie_tiny.tasks.card import load_card
    from ernie_tiny.tasks.readers import read_split

    return len(read_split(load_card(card_name), "train").examples)


def task_sets(config: ExperimentConfig) -> List[tuple]:
    """[(set name, [task entry dicts])]: in-domain, held-out, then one set per low-resource share."""
    ev = config.Evaluation
    def dump(entries):
        return [e.model_dump(exclude_defaults=True) for e in entries]

    sets = [("in_domain", dump(ev.in_domain)), ("held_out", dump(ev.held_out))]
    low = ev.low_resource
    size = train_size(low.card)
    for share in low.fractions:
        entry = {"card": low.card, "max_train_examples": max(1, round(share * size))}
        entry.update({k: v for k, v in (("max_dev_examples", low.max_dev_examples), ("max_length", low.max_length),
                                        ("epochs", low.epochs)) if v})
        sets.append((share_label(share), [entry]))
    return sets


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

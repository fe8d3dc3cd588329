"""The whole recipe in one command: pretrain -> multi-task teacher -> distill -> evaluate ->
finetune -> export, each stage's output feeding the next (see ``schema.py`` for the wiring),
finished stages skipped, one summary at the end (console and ``<output_dir>/summary.md``)."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Dict, List, Optional

from ernie_tiny.pipeline.schema import PipelineConfig
from ernie_tiny.pipeline.steps import ProductOf, Step, flatten, run_steps, validate
from ernie_tiny.pipeline.summary import summary_markdown, summary_text
from ernie_tiny.stages import STAGES


def plan(config: PipelineConfig, origin: str = "") -> List[Step]:
    root = Path(config.Global.output_dir)
    present = config.Stages.present()
    wired: Dict[str, Dict] = {name: {} for name in present}
    after: Dict[str, List[str]] = {name: [] for name in present}

    def feed(source: str, target: str, key: str, extra: Optional[Dict] = None) -> None:
        """``target`` reads ``source``'s product through its config key ``key``."""
        wired[target].update({key: ProductOf(STAGES[source].product(root / source), source), **(extra or {})})
        after[target].append(source)

    teacher = None
    if "pretrain" in present:
        teacher = "pretrain"
    if "teacher_mtl" in present:
        if teacher:
            feed(teacher, "teacher_mtl", "Model.name_or_path")
        teacher = "teacher_mtl"
    if "distill" in present:
        if teacher:
            feed(teacher, "distill", "Teacher.name_or_path", {"Tokenizer.source": "teacher"})
        for target in ("evaluate", "finetune"):
            if target in present:
                feed("distill", target, "Model.path")
    if "export" in present:
        feed("finetune", "export", "Model.path")

    steps = []
    for name in present:
        entry = getattr(config.Stages, name)
        if config.Global.seed is not None:
            wired[name]["Global.seed"] = config.Global.seed
        steps.append(Step(name=name, stage=name, config=entry.config, output_dir=root / name,
                          overrides=flatten(entry.overrides), wired=wired[name], origin=origin, after=after[name]))
    return steps


def run(config: PipelineConfig, origin: str = "") -> List:
    started = time.time()
    steps = plan(config, origin)
    validate(steps)
    print(f"pipeline: {' -> '.join(s.name for s in steps)}; outputs under {config.Global.output_dir}", flush=True)
    results = run_steps(steps, Path(config.Global.output_dir), title="pipeline")
    total = time.time() - started
    print(summary_text(results, total), flush=True)
    summary = Path(config.Global.output_dir) / "summary.md"
    summary.write_text(summary_markdown(results, "Pipeline summary", total), encoding="utf-8")
    print(f"summary written to {summary}", flush=True)
    return results

"""The claim experiment's report, in the paper's layout: in-domain, held-out and low-resource
tables (mean ± std over finetuning seeds, the majority class, MITKD minus vanilla), the teachers'
own scores, the plot, and the wall time of every step. Written to the experiment's output dir as
claim.md, claim.csv and claim.png (each replaced whole)."""
from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from ernie_tiny.experiment.arms import ARM_NAMES, ARMS, share_label, task_sets
from ernie_tiny.experiment.schema import ExperimentConfig
from ernie_tiny.files import write_atomically, write_text_atomically
from ernie_tiny.pipeline.steps import StepState
from ernie_tiny.stages import STAGES

COLUMNS = ["set", "task", "arm", "score", "std", "seeds", "majority", "metric", "train_examples", "dev_examples"]
SET_TITLES = {"in_domain": "In-domain (tasks the multi-task teacher was finetuned on)",
              "held_out": "Held-out (tasks the teacher never saw)"}


def collect(root: Path, config: ExperimentConfig) -> List[dict]:
    """One row per (set, task, arm) that has finished, from each evaluation's result."""
    rows = []
    for set_name, _ in task_sets(config):
        for arm in ARMS:
            result = STAGES["evaluate"].read_result(root / "evaluate" / set_name / arm)
            for task in result.tasks if result else ():
                rows.append({"set": set_name, "task": task.task, "arm": arm,
                             **{key: getattr(task, key) for key in COLUMNS[3:]}})
    return rows


def _cell(row: Optional[dict]) -> str:
    if row is None:
        return "not run yet"
    return f"{row['score']:.2f}" + (f" ± {row['std']:.2f}" if row["std"] is not None else "")


def _table(rows: List[dict], set_name: str, column_label) -> List[str]:
    mine = [r for r in rows if r["set"] == set_name]
    tasks = list(dict.fromkeys(r["task"] for r in mine))
    if not tasks:
        return ["(not run yet)", ""]
    get = {(r["task"], r["arm"]): r for r in mine}
    lines = ["| student | " + " | ".join(column_label(get, t) for t in tasks) + " | mean |",
             "|---|" + "---:|" * (len(tasks) + 1)]
    means = {}
    for arm in ARMS:
        cells = [get.get((t, arm)) for t in tasks]
        done = [c["score"] for c in cells if c is not None]
        means[arm] = sum(done) / len(done) if len(done) == len(tasks) else None
        lines.append(f"| {ARM_NAMES[arm]} | " + " | ".join(_cell(c) for c in cells)
                     + f" | {'' if means[arm] is None else f'{means[arm]:.2f}'} |")
    majority = [next((r["majority"] for r in mine if r["task"] == t), None) for t in tasks]
    lines.append("| majority class | " + " | ".join("" if m is None else f"{m:.2f}" for m in majority) + " | |")
    deltas = []
    for t in tasks:
        a, b = get.get((t, "vanilla")), get.get((t, "mitkd"))
        if a is None or b is None:
            deltas.append("")
            continue
        se = math.sqrt(sum((r["std"] or 0.0) ** 2 / r["seeds"] for r in (a, b)))  # of the difference of means
        deltas.append(f"{b['score'] - a['score']:+.2f}" + (f" ± {se:.2f}" if a["std"] is not None else ""))
    mean_delta = "" if None in means.values() else f"{means['mitkd'] - means['vanilla']:+.2f}"
    lines.append("| **MITKD − vanilla** | " + " | ".join(deltas) + f" | {mean_delta} |")
    return lines + [""]


def _task_label(get: Dict, task: str) -> str:
    r = next(v for (t, _), v in get.items() if t == task)
    return f"{task} ({r['metric']}, {r['train_examples']:,} train)"


def _teacher_lines(root: Path) -> List[str]:
    lines = []
    pretrain = STAGES["pretrain"].read_result(root / "pretrain")
    if pretrain:
        lines.append(f"- Pretrained teacher (masked LM): loss {pretrain.first_loss:.2f} at step "
                     f"{pretrain.first['step']} -> {pretrain.last_loss:.2f} at step "
                     f"{pretrain.last['step']}, masked-token accuracy {pretrain.mlm_accuracy:.1f}%.")
    teacher = STAGES["teacher_mtl"].read_result(root / "teacher_mtl")
    if teacher:
        lines.append(f"- Multi-task teacher, best dev (step {teacher.step}) against the majority class: "
                     + teacher.scores("{task} {dev:.1f} ({majority:.1f})") + ".")
    for arm in ARMS:
        distill = STAGES["distill"].read_result(root / "distill" / arm)
        if distill:
            lines.append(f"- Distillation, {ARM_NAMES[arm]}: relation loss {distill.first_loss:.4f} at step "
                         f"{distill.first['step']} -> {distill.last_loss:.4f} at step {distill.last['step']}.")
    return lines


def _step_lines(root: Path) -> List[str]:
    steps = StepState(root).steps
    if not steps:
        return []
    lines = ["| step | finished | wall time |", "|---|---|---:|"]
    total = 0.0
    for name, record in steps.items():
        seconds = record.get("seconds", 0.0)
        total += seconds
        lines.append(f"| {name} | {'yes' if record['complete'] else 'no'} | {seconds / 60:.1f} min |")
    return lines + [f"| total | | {total / 60:.1f} min |", ""]


def chart(rows: List[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = list(dict.fromkeys((r["set"], r["task"]) for r in rows))
    fig, ax = plt.subplots(figsize=(max(6.0, 1.6 * len(columns) + 2), 4.2))
    width = 0.38
    for j, arm in enumerate(ARMS):
        xs, ys, es = [], [], []
        for i, (s, t) in enumerate(columns):
            r = next((r for r in rows if (r["set"], r["task"], r["arm"]) == (s, t, arm)), None)
            if r is not None:
                xs.append(i + (j - 0.5) * width)
                ys.append(r["score"])
                es.append(r["std"] or 0.0)
        ax.bar(xs, ys, width, yerr=es, capsize=3, label=ARM_NAMES[arm])
    for i, (s, t) in enumerate(columns):
        m = next((r["majority"] for r in rows if (r["set"], r["task"]) == (s, t)), None)
        if m is not None:
            ax.hlines(m, i - width, i + width, colors="k", linestyles="dashed", label="majority class" if i == 0 else None)
    ax.set_xticks(range(len(columns)), [f"{t}\n{s.replace('_', ' ')}" for s, t in columns], fontsize=7)
    ax.set_ylabel("dev score (%)")
    top = max(r["score"] + (r["std"] or 0) for r in rows)
    ax.set_ylim(0, min(100.0, math.ceil(top / 10) * 10 + 10))
    ax.set_title("Students distilled from the vanilla vs the multi-task teacher")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_report(root: Path, config: ExperimentConfig, results: Sequence = (), origin: str = "") -> Path:
    root = Path(root)
    rows = collect(root, config)
    seeds = ", ".join(map(str, config.Evaluation.seeds))
    low = config.Evaluation.low_resource
    lines = ["# The MITKD claim, measured offline", "",
             f"Config: `{origin or 'the experiment config'}`; outputs under `{root}`. Scores are the best dev score "
             f"of each finetuning run, mean ± std over finetuning seeds {seeds} (one distillation per arm); "
             f"MITKD − vanilla is the difference of the means ± its standard error.", ""]
    for set_name in ("in_domain", "held_out"):
        lines += [f"## {SET_TITLES[set_name]}", ""] + _table(rows, set_name, _task_label)
    lines += [f"## Low-resource ({low.card}: a fixed-seed sample of its train split)", ""]
    for share in low.fractions:
        lines += [f"### {share * 100:g}% of the train split", ""] + _table(rows, share_label(share), _task_label)
    teacher = _teacher_lines(root)
    if teacher:
        lines += ["## Teachers and distillation", ""] + teacher + [""]
    steps = _step_lines(root)
    if steps:
        lines += ["## Wall time per step", ""] + steps
    md = root / "claim.md"
    write_text_atomically(md, "\n".join(lines))

    def write_csv(p: Path) -> None:
        with open(p, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=COLUMNS)
            writer.writeheader()
            writer.writerows(rows)

    write_atomically(root / "claim.csv", write_csv)
    if rows:
        write_atomically(root / "claim.png", lambda p: chart(rows, p))
    return md


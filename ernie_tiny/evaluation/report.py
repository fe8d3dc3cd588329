"""From finished grid points to the report: ``results.csv``, ``results.md`` and ``results.png``.

Per task, the points are grouped by their hyperparameters (batch size, learning rate, dropout,
epochs); a group's score is the mean of its seeds' best dev scores, and the task's score is
the best group's (ties: the first in grid order), with the standard deviation over its seeds.
The Markdown and the chart put the model beside the config's reference rows (the paper's
numbers). With ``Report.groups`` the comparison is laid out as the paper's Table 5: the groups'
tasks in order (In-Domain, Out-Domain, Low-Resource), a blank cell for a task the run lacks, and
an Avg over the tasks the run has, which the note under the table names. Nothing here imports Paddle.
"""
from __future__ import annotations

import csv
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from ernie_tiny.files import write_atomically

CSV_COLUMNS = ["model", "task", "metric", "score", "std", "seeds", "majority", "batch_size", "learning_rate",
               "dropout", "epochs", "best_step", "grid_points", "train_examples", "dev_examples", "skipped_rows",
               "seconds"]


@dataclass
class TaskResult:
    model: str
    task: str
    metric: str
    score: float
    std: Optional[float]  # over seeds; None with one seed
    seeds: int
    majority: Optional[float]  # the dev score of always predicting the most frequent train label
    batch_size: int
    learning_rate: float
    dropout: float
    epochs: int
    best_step: int  # of the best seed of the best group
    grid_points: int
    train_examples: int
    dev_examples: int
    skipped_rows: int  # rows whose label the card skips (OCNLI '-'), train + dev
    seconds: float  # finetuning time of all the task's points


def summarize(records: Sequence[dict], model: str) -> List[TaskResult]:
    """One result per task, tasks in the order they first appear in ``records``."""
    by_task: Dict[str, List[dict]] = {}
    for record in records:
        by_task.setdefault(record["task"], []).append(record)
    results = []
    for task, rows in by_task.items():
        groups: Dict[tuple, List[dict]] = {}
        for row in rows:
            key = (row["batch_size"], row["learning_rate"], row["dropout"], row["epochs"])
            groups.setdefault(key, []).append(row)
        best_key = max(groups, key=lambda k: np.mean([r["score"] for r in groups[k]]))  # first max wins
        best = groups[best_key]
        scores = [r["score"] for r in best]
        top = max(best, key=lambda r: r["score"])
        results.append(TaskResult(
            model=model, task=task, metric=rows[0]["metric"], score=float(np.mean(scores)),
            std=float(np.std(scores, ddof=1)) if len(scores) > 1 else None, seeds=len(scores),
            majority=rows[0].get("majority"),
            batch_size=best_key[0], learning_rate=best_key[1], dropout=best_key[2], epochs=best_key[3],
            best_step=top["best_step"], grid_points=len(rows), train_examples=rows[0]["train_examples"],
            dev_examples=rows[0]["dev_examples"], skipped_rows=rows[0]["skipped_train"] + rows[0]["skipped_dev"],
            seconds=float(sum(r["seconds"] for r in rows))))
    return results


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m" if hours else f"{minutes}m {secs:02d}s" if minutes else f"{secs}s"


RESULTS_CSV = "results.csv"


def read_results(output_dir) -> List[TaskResult]:
    """The rows ``write_csv`` wrote to ``<output_dir>/results.csv``, typed ([] if there is none)."""
    path = Path(output_dir) / RESULTS_CSV
    if not path.is_file():
        return []
    types = {name: field.type for name, field in TaskResult.__dataclass_fields__.items()}
    with open(path, encoding="utf-8") as f:
        return [TaskResult(**{key: _parse_cell(types[key], value) for key, value in row.items()})
                for row in csv.DictReader(f)]


def _parse_cell(kind: str, text: str):
    if kind == "str":
        return text
    if text == "":
        return None  # an Optional column left empty (std with one seed, no majority)
    return int(text) if kind == "int" else float(text)


def write_csv(results: Sequence[TaskResult], path: Path) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        for result in results:
            row = asdict(result)
            row["score"] = round(row["score"], 4)
            row["std"] = "" if row["std"] is None else round(row["std"], 4)
            row["majority"] = "" if row["majority"] is None else round(row["majority"], 4)
            row["seconds"] = round(row["seconds"], 1)
            writer.writerow(row)


def comparison_rows(results: Sequence[TaskResult],
                    reference: Dict[str, Dict[str, float]]) -> Dict[str, Dict[str, float]]:
    """{row name: {task: score}}: the model first, then each reference row that has one of the tasks."""
    tasks = [r.task for r in results]
    rows = {results[0].model: {r.task: r.score for r in results}} if results else {}
    for name, scores in reference.items():
        known = {t: s for t, s in scores.items() if t in tasks}
        if known:
            rows[name] = known
    return rows


Groups = Dict[str, List[str]]


def table_columns(groups: Groups) -> Dict[str, str]:
    """{task: its group's name}, in the table's column order (a task is in one group: schema check)."""
    return {t: name for name, group in groups.items() for t in group}


def table_rows(results: Sequence[TaskResult], reference: Dict[str, Dict[str, float]],
               groups: Groups) -> Dict[str, Dict[str, float]]:
    """{row name: {task: score}} over the groups' tasks: the model's (only the tasks it ran, maybe
    none), then every reference row (all of its tasks in the groups)."""
    tasks = table_columns(groups)
    rows = {results[0].model: {r.task: r.score for r in results if r.task in tasks}}
    for name, scores in reference.items():
        rows[name] = {t: s for t, s in scores.items() if t in tasks}
    return rows


def table_average(scores: Dict[str, float], over: Sequence[str]) -> Optional[float]:
    """The mean over the tasks ``over``; None unless the row has every one of them."""
    if not over or any(t not in scores for t in over):
        return None
    return float(np.mean([scores[t] for t in over]))


def grouped_table(results: Sequence[TaskResult], reference: Dict[str, Dict[str, float]], groups: Groups) -> List[str]:
    """Markdown lines of the Table 5 layout: a line of group names over the task columns, then the model
    and the reference rows; blank where a row has no score; Avg over the tasks the model ran."""
    columns = table_columns(groups)
    tasks, names = list(columns), list(columns.values())
    rows = table_rows(results, reference, groups)
    ran = [t for t in tasks if t in rows[results[0].model]]
    group_cells = [name if i == 0 or names[i - 1] != name else "" for i, name in enumerate(names)]
    lines = ["## Compared with the paper, as its Table 5 (dev)", "",
             "| | " + " | ".join(group_cells) + " | |",
             "|---|" + "---:|" * (len(tasks) + 1),
             "| **model** | " + " | ".join(f"**{t.upper()}**" for t in tasks) + " | **Avg** |"]
    for name, scores in rows.items():
        cells = [f"{scores[t]:.1f}" if t in scores else "" for t in tasks]
        avg = table_average(scores, ran)
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {'' if avg is None else f'{avg:.1f}'} |")
    missing = [t for t in tasks if t not in ran]
    if not missing:
        note = f"Avg: the mean over all {len(tasks)} tasks of the table."
    elif ran:
        note = (f"Avg: the mean over the {len(ran)} of {len(tasks)} tasks this run has ({', '.join(ran)}), for every "
                f"row; blank: not in this run ({', '.join(missing)}).")
        full = [f"{name} {avg:.1f}" for name, scores in list(rows.items())[1:]
                if (avg := table_average(scores, tasks)) is not None]
        if full:
            note += f" Over all {len(tasks)}: " + ", ".join(full) + "."
    else:
        note = f"This run has none of the table's {len(tasks)} tasks; no Avg."
    extra = [r.task for r in results if r.task not in tasks]
    if extra:
        note += f" Not in the table: {', '.join(extra)} (scores above)."
    return lines + ["", note]


def markdown(results: Sequence[TaskResult], reference: Dict[str, Dict[str, float]],
             groups: Optional[Groups] = None) -> str:
    if not results:
        return "No finished grid points.\n"
    lines = [f"## {results[0].model}: best dev score per task", "",
             "| task | metric | score | std | majority class | best hyperparameters | grid points | "
             "train / dev examples | time |",
             "|---|---|---:|---:|---:|---|---:|---|---:|"]
    for r in results:
        std = "-" if r.std is None else f"{r.std:.2f} ({r.seeds} seeds)"
        hyper = (f"batch {r.batch_size}, lr {r.learning_rate:g}, dropout {r.dropout:g}, {r.epochs} epochs, "
                 f"step {r.best_step}")
        majority = "-" if r.majority is None else f"{r.majority:.2f}"
        lines.append(f"| {r.task} | {r.metric} | {r.score:.2f} | {std} | {majority} | {hyper} | {r.grid_points} | "
                     f"{r.train_examples} / {r.dev_examples} | {_duration(r.seconds)} |")
    skipped = [f"{r.task}: {r.skipped_rows}" for r in results if r.skipped_rows]
    if skipped:
        lines += ["", "Rows skipped for a label the card skips (e.g. OCNLI's '-'): " + ", ".join(skipped) + "."]
    if groups:
        return "\n".join(lines + [""] + grouped_table(results, reference, groups)) + "\n"
    rows = comparison_rows(results, reference)
    if len(rows) > 1:
        tasks = [r.task for r in results if any(r.task in scores for name, scores in list(rows.items())[1:])]
        lines += ["", "## Compared with the reference rows (dev)", "",
                  "| model | " + " | ".join(tasks) + " | avg |", "|---|" + "---:|" * (len(tasks) + 1)]
        for name, scores in rows.items():
            cells = [f"{scores[t]:.1f}" if t in scores else "-" for t in tasks]
            avg = f"{np.mean([scores[t] for t in tasks]):.1f}" if all(t in scores for t in tasks) else "-"
            lines.append(f"| {name} | " + " | ".join(cells) + f" | {avg} |")
    return "\n".join(lines) + "\n"


def results_chart(results: Sequence[TaskResult], reference: Dict[str, Dict[str, float]], path: Path,
          groups: Optional[Groups] = None) -> None:
    """Grouped bars: one group per task, one bar per row (the model, then the references). With
    ``groups``: the table's tasks in its order (a task the run lacks keeps its place, with the
    references' bars only), the group names under the task names, then the run's other tasks."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_task = {r.task: r for r in results}
    if groups:
        group_of = table_columns(groups)
        tasks = list(group_of) + [r.task for r in results if r.task not in group_of]
        rows = table_rows(results, reference, groups)
        rows[results[0].model] = {r.task: r.score for r in results}
    else:
        tasks = [r.task for r in results]
        rows = comparison_rows(results, reference)
        group_of = {}
    width = 0.8 / len(rows)
    fig, ax = plt.subplots(figsize=(min(18.0, max(6.0, 2.5 + len(tasks) * (0.4 + 0.3 * len(rows)))), 4.8))
    for i, (name, scores) in enumerate(rows.items()):
        xs = [j + (i - (len(rows) - 1) / 2) * width for j, t in enumerate(tasks) if t in scores]
        ys = [scores[t] for t in tasks if t in scores]
        bars = ax.bar(xs, ys, width, label=name)
        ax.bar_label(bars, fmt="%.1f", fontsize=7, padding=1)
    first = True
    for j, task in enumerate(tasks):  # the floor: always the most frequent train label
        result = by_task.get(task)
        if result is not None and result.majority is not None:
            ax.hlines(result.majority, j - 0.45, j + 0.45, colors="gray", linestyles="--", linewidth=1,
                      label="majority class" if first else None)
            first = False

    def label(task: str) -> str:
        metric = by_task[task].metric if task in by_task else "not run"
        return f"{task}\n({metric})" + (f"\n{group_of[task]}" if task in group_of else "")

    ax.set_xticks(range(len(tasks)), [label(t) for t in tasks], fontsize=7)
    ax.set_ylabel("dev score (%)")
    top = max((max(s.values()) for s in rows.values() if s), default=90.0)
    ax.set_ylim(0, min(105.0, math.ceil(top / 10) * 10 + 10))  # room for a label over a bar near 100
    ax.set_title(f"{results[0].model}: best dev score per task" + (" (paper Table 5 layout)" if groups else ""))
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_results(output_dir: Path, records: Sequence[dict], model: str,
                  reference: Dict[str, Dict[str, float]], with_chart: bool = True,
                  groups: Optional[Groups] = None) -> List[Path]:
    """Write results.csv, results.md (and results.png); each file is replaced whole."""
    results = summarize(records, model)
    output_dir = Path(output_dir)
    written = []

    def replace(name: str, write) -> None:
        written.append(write_atomically(output_dir / name, write))

    replace(RESULTS_CSV, lambda p: write_csv(results, p))
    replace("results.md", lambda p: p.write_text(markdown(results, reference, groups), encoding="utf-8"))
    if with_chart and results:
        replace("results.png", lambda p: results_chart(results, reference, p, groups))
    return written

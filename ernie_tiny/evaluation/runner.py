"""The evaluation recipe: for each task card, finetune a fresh copy of the model at every grid
point, keep the best dev score, and write the report. Top to bottom:

1. set up: device, output directory, the resolved config, the finished points of earlier runs;
2. per task: read and encode train/dev once, then per grid point (batch x lr x dropout x seed)
   call ``ernie_tiny.finetune.loop.finetune`` (dev scored every ``Grid.eval_every`` steps, and
   at least ``evals_per_epoch`` times an epoch when the card asks, best kept), log its curves to
   VisualDL, and append the point to ``grid_points.jsonl`` the moment it finishes;
3. report: ``results.csv``, ``results.md``, ``results.png``.

Resuming: a point is identified by a hash of everything its score depends on (the model's
files, the card, the data, the hyperparameters), so a rerun with the same config skips the
finished points, and a changed model or setting is run afresh rather than reused.

Several processes (``paddle.distributed.launch --nproc_per_node N``, or ``--gpus``): the grid
points are dealt round-robin to the ranks, each point runs whole on its rank's device, each rank
appends to its own ``grid_points.rank<R>.jsonl``; rank 0 writes the report once every point of
the grid is recorded. No collective communication is used, so a long grid never hits a timeout.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Dict, List, Optional

from ernie_tiny.config import dump_config
from ernie_tiny.errors import InputError
from ernie_tiny.evaluation.grid import GridPoint, for_rank, task_points
from ernie_tiny.evaluation.schema import EvaluateConfig, EvalTaskEntry
from ernie_tiny.finetune.schedule import FINETUNE_PROTOCOL
from ernie_tiny.tasks.data import TrainDev, read_task_splits

RESULTS_PREFIX = "grid_points"


class ResultsLogError(InputError):
    """A damaged line in a results file; the message names the file and line."""

    what = "results file error"


class ResultsLog:
    """Finished grid points, one JSON object a line, appended and flushed to disk as each
    finishes. Reading merges every rank's file; a last line cut off by a crash is ignored,
    any other unreadable line is an error naming the file and line."""

    def __init__(self, output_dir: Path, rank: int = 0, world_size: int = 1):
        self.output_dir = Path(output_dir)
        suffix = f".rank{rank}" if world_size > 1 else ""
        self.path = self.output_dir / f"{RESULTS_PREFIX}{suffix}.jsonl"

    def load(self) -> Dict[str, dict]:
        records: Dict[str, dict] = {}
        for path in sorted(self.output_dir.glob(f"{RESULTS_PREFIX}*.jsonl")):
            text = path.read_text(encoding="utf-8")
            lines = text.split("\n")
            for number, line in enumerate(lines, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as err:
                    if number == len(lines):  # no newline after it: a write the crash cut off
                        continue
                    raise ResultsLogError(f"{path}:{number}: not a JSON line ({err.msg}); delete the line to redo "
                                     f"that grid point") from None
                records[record["key"]] = record
        return records

    def append(self, record: dict) -> None:
        self._drop_cut_off_line()
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def _drop_cut_off_line(self) -> None:
        """A crash mid-write leaves a last line without its newline: cut it off (that point is
        redone), so the next record does not run into it."""
        if not self.path.is_file():
            return
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):
            with open(self.path, "r+b") as f:
                f.truncate(data.rfind(b"\n") + 1)


def model_fingerprint(path: str) -> str:
    """A hash of the model directory's files (a PaddleNLP name stands for itself)."""
    if not os.path.isdir(path):
        return path
    digest = hashlib.sha1()
    for file in sorted(Path(path).iterdir()):
        if file.is_file():
            digest.update(file.name.encode())
            with open(file, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    digest.update(chunk)
    return digest.hexdigest()


def point_key(point: GridPoint, settings: dict) -> str:
    """Identity of a grid point: its hyperparameters and everything else its score depends on."""
    blob = json.dumps({"point": point.as_dict(), **settings}, sort_keys=True, ensure_ascii=False)
    return hashlib.sha1(blob.encode("utf-8")).hexdigest()[:16]


def task_settings(config: EvaluateConfig, entry: EvalTaskEntry, card, model_id: str) -> dict:
    grid = config.Grid
    return {"model": model_id, "card": card.model_dump(mode="json"),
            "data_dir": os.path.abspath(config.Data.dir) if config.Data.dir else "",
            "max_train_examples": entry.max_train_examples, "max_dev_examples": entry.max_dev_examples,
            "max_length": card.tokens_per_example(entry.max_length),
            "max_steps": grid.max_steps, "eval_every": grid.eval_every, "warmup_ratio": grid.warmup_ratio,
            "weight_decay": grid.weight_decay, "max_grad_norm": grid.max_grad_norm, "protocol": FINETUNE_PROTOCOL}


def load_task_data(card, entry: EvalTaskEntry, data_dir: str, tokenizer) -> TrainDev:
    """A task's train and dev splits, read (validated against the card) and encoded once."""
    started = time.time()
    data = TrainDev.load(card, entry, tokenizer, data_dir)
    train, dev = data.train, data.dev
    skipped = f"; skipped {train.skipped} train / {dev.skipped} dev rows labelled {card.label.skip}" \
        if card.label.skip else ""
    if skipped and train.source.startswith("paddlenlp:"):
        skipped += " (besides any PaddleNLP's loader drops itself: OCNLI's, uncounted)"
    print(f"[{card.name}] {len(train)} train / {len(dev)} dev examples from {train.source}, "
          f"{len(data.labels)} labels{skipped}; always the most frequent train label scores "
          f"{data.majority:.2f} ({time.time() - started:.0f}s)", flush=True)
    return data


def run_point(config: EvaluateConfig, card, data: TrainDev, point: GridPoint, key: str, pad_token_id: int,
              output_dir: Path) -> dict:
    """Finetune a fresh copy of the model at one grid point; its dev curve goes to VisualDL."""
    from visualdl import LogWriter

    from ernie_tiny.finetune.loop import FinetuneParams, finetune

    grid = config.Grid
    params = FinetuneParams(lr=point.learning_rate, batch_size=point.batch_size, epochs=point.epochs,
                            dropout=point.dropout, warmup_ratio=grid.warmup_ratio, weight_decay=grid.weight_decay,
                            eval_every=grid.eval_every, max_steps=grid.max_steps, seed=point.seed,
                            max_grad_norm=grid.max_grad_norm)
    writer = LogWriter(logdir=str(output_dir / "vdl" / card.name / point.name))

    def on_eval(step: int, loss: float, score: float) -> None:
        writer.add_scalar(tag="train/loss", value=loss, step=step)
        writer.add_scalar(tag=f"dev/{card.metric}", value=score, step=step)
        writer.flush()
        print(f"    step {step}: loss {loss:.4f}, dev {card.metric} {score:.2f}", flush=True)

    try:
        result = finetune(config.Model.path, card, data.labels, data.train.features, data.dev.features,
                          pad_token_id, params, on_eval=on_eval)
    finally:
        writer.close()
    return {"key": key, **point.as_dict(), "metric": card.metric, "score": result.best_score,
            "best_step": result.best_step, "steps": result.steps, "seconds": round(result.seconds, 2),
            "evals": result.evals, "train_examples": len(data.train), "dev_examples": len(data.dev),
            "skipped_train": data.train.skipped, "skipped_dev": data.dev.skipped, "majority": data.majority,
            "model": config.Model.display_name(), "finished": time.strftime("%Y-%m-%dT%H:%M:%S")}


def needs_data_dir(card, data_dir: str) -> bool:
    """A card whose only source is local files (CANLI, SHOPPING10) and a run without ``Data.dir``."""
    source = card.source
    return not data_dir and bool(source.local) and not (source.builtin or source.paddlenlp)


def runnable_tasks(config: EvaluateConfig) -> List[tuple]:
    """(entry, card) of every task the run can read; a local-only card without ``Data.dir`` is
    left out with a notice (its Table 5 column stays blank), a missing file under ``Data.dir``
    still stops the run."""
    tasks = []
    for entry, card in zip(config.Tasks, config.cards()):
        if needs_data_dir(card, config.Data.dir):
            print(f"[{card.name}] left out: its files are read only from Data.dir (-o Data.dir=DIR); "
                  f"{card.source.download}", flush=True)
            continue
        tasks.append((entry, card))
    return tasks


def check_data(pending: List[tuple], data_dir: str) -> None:
    """Read (and so validate) every split the pending tasks need before the first point runs:
    a bad line in the last task's files stops the run now, not hours in."""
    for entry, card in pending:
        read_task_splits(card, entry, data_dir)


def _wait_for(log: ResultsLog, keys: List[str], poll_seconds: float = 10.0) -> Dict[str, dict]:
    """Rank 0, after its own share: wait until the other ranks have recorded theirs (the launcher
    stops every rank if one fails, so this does not wait for a dead rank)."""
    announced = False
    while True:
        done = log.load()
        missing = [k for k in keys if k not in done]
        if not missing:
            return done
        if not announced:
            print(f"waiting for {len(missing)} grid points on the other ranks", flush=True)
            announced = True
        time.sleep(poll_seconds)


def run(config: EvaluateConfig) -> Optional[List[Path]]:
    """The stage; bad task data or a damaged results file stop it (``InputError``) with the file
    and line, before the output directory is touched when it is the data."""
    from paddlenlp.transformers import AutoTokenizer

    from ernie_tiny import runtime
    from ernie_tiny.evaluation.report import write_results

    # per-point "newly initialized classifier" notices drown the progress; the ranks share the
    # grid through the file system (no process group)
    rt, output_dir = runtime.start_stage(config, paddlenlp_log="ERROR", join_group=False)
    rank, world, device = rt.rank, rt.world_size, rt.device
    log = ResultsLog(output_dir, rank, world)
    done = log.load()
    tokenizer = AutoTokenizer.from_pretrained(config.Model.path)
    model_id = model_fingerprint(config.Model.path)

    tasks = runnable_tasks(config)
    plan = []  # (entry, card, point, key) for every point of the grid, in config order
    for entry, card in tasks:
        settings = task_settings(config, entry, card, model_id)
        plan += [(entry, card, p, point_key(p, settings)) for p in task_points(card, entry, config.Grid)]
    mine = for_rank(plan, rank, world)
    todo = [item for item in mine if item[3] not in done]
    print(f"{config.Model.display_name()}: {len(plan)} grid points over {len(tasks)} tasks; "
          f"this process ({rank + 1} of {world}, {device}) runs {len(mine)}, {len(mine) - len(todo)} of them "
          f"finished before", flush=True)

    pending = list({item[1].name: item[:2] for item in todo}.values())  # (entry, card) per task, in order
    check_data(pending[1:], config.Data.dir)  # the first is read right away
    data: Dict[str, TrainDev] = {}
    if pending:
        entry, card = pending[0]
        data[card.name] = load_task_data(card, entry, config.Data.dir, tokenizer)
    # every input is read: only now is the output directory made (a bad input leaves it as it was)
    output_dir.mkdir(parents=True, exist_ok=True)
    if rank == 0:
        dump_config(config, output_dir / "config.yaml")

    for number, (entry, card, point, key) in enumerate(todo, 1):
        if card.name not in data:
            data.clear()  # one task's data in memory at a time
            data[card.name] = load_task_data(card, entry, config.Data.dir, tokenizer)
        print(f"[{card.name}] point {number}/{len(todo)}: batch {point.batch_size}, lr {point.learning_rate:g}, "
              f"dropout {point.dropout:g}, {point.epochs} epochs, seed {point.seed}", flush=True)
        record = run_point(config, card, data[card.name], point, key, tokenizer.pad_token_id, output_dir)
        log.append(record)
        print(f"[{card.name}] best dev {card.metric} {record['score']:.2f} at step {record['best_step']} "
              f"of {record['steps']} ({record['seconds']:.0f}s)", flush=True)

    if rank != 0:
        return None
    keys = [item[3] for item in plan]
    done = _wait_for(log, keys) if world > 1 else log.load()
    written = write_results(output_dir, [done[k] for k in keys], config.Model.display_name(),
                            config.Report.reference, config.Report.chart, config.Report.groups)
    print((output_dir / "results.md").read_text(encoding="utf-8"))
    print("written: " + ", ".join(str(p) for p in written), flush=True)
    return written

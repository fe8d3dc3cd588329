"""The multi-task teacher finetuning recipe: set up -> loop -> keep the best, top to bottom.

Stage 1 of MITKD: a pretrained ERNIE is finetuned on several labelled tasks at once (one
shared encoder, one head per task, ``mtl/model.py``); each micro-batch holds one task, drawn by
the schedule (``mtl/sampling.py``), and its loss is the task's cross-entropy times its weight.
Every ``Train.eval_every`` steps every task is scored on its dev split; the step with the best
mean dev score is kept as

    <output_dir>/teacher/   the encoder, PaddleNLP format (config.json, model.safetensors,
                            tokenizer, teacher_mtl_config.yaml): tools/distill.py's teacher
    <output_dir>/heads/     heads.safetensors + heads.json (labels, head type, metric, dev score
                            of every task): ``mtl.model.load_task_model`` rebuilds a task model
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import paddle

from ernie_tiny import runtime
from ernie_tiny.config import dump_config
from ernie_tiny.data.sampler import ResumableBatchSampler, batches_per_epoch
from ernie_tiny.files import replacing_directory
from ernie_tiny.finetune.loop import evaluate
from ernie_tiny.mtl.model import MultiTaskModel, save_heads, task_loss
from ernie_tiny.mtl.result import HEADS_DIR, TEACHER_DIR
from ernie_tiny.mtl.sampling import MultiTaskBatches, TaskSchedule
from ernie_tiny.mtl.schema import TeacherMTLConfig, TeacherTaskEntry
from ernie_tiny.prefetch import Prefetcher
from ernie_tiny.tasks.data import TrainDev
from ernie_tiny.tasks.encode import collate
from ernie_tiny.tasks.readers import TaskDataError
from ernie_tiny.tokenization import load_tokenizer
from ernie_tiny.training import Trainer, read_scalars


@dataclass
class TeacherTask(TrainDev):
    """One of the teacher's tasks: its train and dev splits, encoded, and its config entry."""

    entry: Optional[TeacherTaskEntry] = None


def load_tasks(config: TeacherMTLConfig, tokenizer) -> List[TeacherTask]:
    """Each card's train and dev split (dev labels come from train), encoded by ``tokenizer``."""
    tasks = []
    for entry, card in zip(config.Tasks, config.cards()):
        data = TrainDev.load(card, entry, tokenizer, config.Data.dir)
        tasks.append(TeacherTask(data.train, data.dev, entry))
    return tasks


def heads_info(tasks: List[TeacherTask], scores: Dict[str, float], baselines: Dict[str, float], step: int) -> dict:
    return {"step": step, "mean_dev_score": float(np.mean(list(scores.values()))),
            "tasks": {t.name: {"head": t.card.head, "labels": t.labels, "metric": t.card.metric,
                               "dev_score": scores[t.name], "majority_baseline": baselines[t.name],
                               "dropout": t.card.dropout[0], "weight": t.entry.weight, "card": t.entry.card,
                               "max_length": t.card.tokens_per_example(t.entry.max_length), "train_examples": len(t.train),
                               "dev_examples": len(t.dev)}
                      for t in tasks}}


def save_best(output_dir: Path, model: MultiTaskModel, tokenizer, config: TeacherMTLConfig, info: dict) -> None:
    """``teacher/`` and ``heads/``, each written under a temporary name; both renamed once both are written."""
    with replacing_directory(output_dir / TEACHER_DIR) as teacher, \
            replacing_directory(output_dir / HEADS_DIR) as heads:
        model.ernie.save_pretrained(str(teacher), safe_serialization=True)
        tokenizer.save_pretrained(str(teacher))
        dump_config(config, teacher / "teacher_mtl_config.yaml")
        save_heads(model, heads, info)


def run(config: TeacherMTLConfig) -> Path:
    from paddlenlp.transformers import ErnieModel
    rt, _ = runtime.start_stage(config)

    tokenizer = load_tokenizer(config.Model.name_or_path)
    pad = tokenizer.pad_token_id
    tasks = load_tasks(config, tokenizer)
    for i, t in enumerate(tasks):
        if batches_per_epoch(len(t.train), config.Train.batch_size, rt.world_size) == 0:  # the sampler's rule
            raise TaskDataError(f"Tasks.{i} ({t.name}): {len(t.train)} train examples, fewer than one batch "
                                f"(Train.batch_size {config.Train.batch_size} x {rt.world_size} processes): lower "
                                f"Train.batch_size or give the task more examples")
    by_name = {t.name: t for t in tasks}
    baselines = {t.name: t.majority for t in tasks}
    model = MultiTaskModel(ErnieModel.from_pretrained(config.Model.name_or_path),
                           {t.name: (t.card.head, len(t.labels), t.card.dropout[0]) for t in tasks})
    train = config.Train
    # one schedule for all ranks (seed without the rank); each task's sampler reads this rank's slice
    schedule = TaskSchedule([t.name for t in tasks], [len(t.train) for t in tasks], config.Schedule.kind,
                            config.Schedule.temperature, seed=config.Global.seed)
    samplers = {t.name: ResumableBatchSampler(len(t.train), train.batch_size, rt.rank, rt.world_size,
                                              config.Global.seed + i) for i, t in enumerate(tasks)}
    data = MultiTaskBatches(schedule, samplers)
    output_dir = runtime.open_output_dir(config, rt)  # the inputs are good: only now is anything written
    mean_tokens = sum(p * np.mean([len(f.input_ids) for f in t.train]) for p, t in zip(schedule.probabilities, tasks))

    def prepare_batch():
        """The host side of one micro-batch (NumPy only; on GPU it runs a step ahead, in a thread)."""
        name, indices = data.next_batch()
        return name, collate([by_name[name].train[i] for i in indices], pad)

    batches = Prefetcher(prepare_batch, data, ahead=1 if rt.device == "gpu" else 0)
    trainer = Trainer(rt, output_dir, train, config.Optimizer, model=model, trained=model, data=batches,
                      tokenizer=tokenizer, tokens_per_micro_step=int(train.batch_size * mean_tokens),
                      desc="teacher-mtl", gradient_sync="all_reduce")
    trainer.resume()
    window: Dict[str, List[paddle.Tensor]] = {t.name: [] for t in tasks}  # unweighted losses since the last log, on the device
    seen = []  # fingerprint of this rank's first batch, for the data-parallel check

    def micro_step():
        name, batch = batches.next()
        task = by_name[name]
        if not seen:
            seen.append(float(np.abs(batch["input_ids"].astype(np.float64)).sum()))
        logits = trainer.layer(name, paddle.to_tensor(batch["input_ids"]),
                               token_type_ids=paddle.to_tensor(batch["token_type_ids"]),
                               attention_mask=paddle.to_tensor(batch["attention_mask"]))
        loss = task_loss(logits, paddle.to_tensor(batch["labels"]))
        window[name].append(loss.detach())  # read back only when logged (no device sync per micro-step)
        return {name: loss * task.entry.weight}

    def after_step(step: int) -> Dict[str, float]:
        scalars = {}
        if step % train.log_every == 0 or step == train.max_steps:
            scalars.update(read_scalars({f"train_loss/{name}": paddle.stack(v).mean() for name, v in window.items() if v}))
            for v in window.values():
                v.clear()
        if step % train.eval_every == 0 or step == train.max_steps:
            scores = {t.name: evaluate(model.task_model(t.name), t.dev, t.card, t.labels,
                                       config.Data.eval_batch_size, pad) for t in tasks}
            if rt.distributed:  # every rank scored the same weights; rank 0's scores decide for all
                values = paddle.to_tensor([scores[t.name] for t in tasks], dtype="float64")
                paddle.distributed.broadcast(values, src=0)
                scores = dict(zip(scores, values.numpy().tolist()))
            mean = float(np.mean(list(scores.values())))
            scalars.update({f"dev/{name}": s for name, s in scores.items()}, **{"dev/mean": mean})
            best = trainer.state.get("best")
            if best is None or mean > best["mean_dev_score"]:
                info = heads_info(tasks, scores, baselines, step)
                trainer.state["best"] = {k: info[k] for k in ("step", "mean_dev_score")} | {"scores": scores}
                if rt.is_main:
                    save_best(output_dir, model, tokenizer, config, info)
                rt.barrier()
        return scalars

    shares = ", ".join(f"{t.name} {len(t.train)}/{len(t.dev)} p={p:.3f} ({baselines[t.name]:.1f})"
                       for t, p in zip(tasks, schedule.probabilities))
    trainer.fit(micro_step, after_step, banner=(
        f"tasks (train/dev examples, draw probability under the {config.Schedule.kind} schedule, majority "
        f"baseline): {shares}; "
        f"world size {rt.world_size}, device {rt.device}"))
    batches.close()
    trainer.check_ranks_in_sync(seen[0] if seen else 0.0)
    best = trainer.state.get("best")
    if rt.is_main and best:
        print(f"best mean dev score {best['mean_dev_score']:.2f} at step {best['step']}: "
              + ", ".join(f"{k} {v:.2f} (majority baseline {baselines[k]:.2f})" for k, v in best["scores"].items()))
        print(f"teacher written to {output_dir / TEACHER_DIR} (heads: {output_dir / HEADS_DIR})")
    rt.barrier()
    return output_dir / TEACHER_DIR

"""Finetune a student on one task at one hyperparameter point and keep the model, for export.

``python tools/finetune.py -c configs/demo/finetune.yaml -o Model.path=STUDENT_DIR``

The evaluation stage runs a grid and keeps scores; deployment needs one finetuned model on
disk. This reuses ``ernie_tiny.finetune.loop.finetune`` (best dev checkpoint kept) and
writes, beside the model, ``task.json`` (card, labels, head, input type, max length) so that
``tools/export.py`` knows what the logits mean without being told again.

Output (``Global.output_dir``)::

    config.yaml           the resolved config
    finetune_log.jsonl    one line per dev evaluation: step, train loss, dev score
    result.json           best dev score and step, steps, seconds
    model/                the best model (save_pretrained, safetensors) + tokenizer + task.json
"""
from __future__ import annotations

import json
from pathlib import Path

from ernie_tiny.config import dump_config
from ernie_tiny.deploy.result import RESULT_FILE, FinetuneResult
from ernie_tiny.deploy.schema import TASK_FILE, FinetuneConfig
from ernie_tiny.files import write_text_atomically


def task_info(card, labels, card_file: str, max_length: int = 0) -> dict:
    """What ``task.json`` holds: enough to turn logits into labels and text into inputs."""
    return {"task": card.name, "card": str(card_file), "head": card.head, "input": card.input.type,
            "metric": card.metric, "labels": list(labels), "max_length": card.tokens_per_example(max_length)}


def write_json(path: Path, data: dict) -> None:
    write_text_atomically(path, json.dumps(data, ensure_ascii=False, indent=1) + "\n")


def run(config: FinetuneConfig) -> Path:
    from paddlenlp.transformers import AutoTokenizer

    from ernie_tiny import runtime
    from ernie_tiny.finetune.loop import FinetuneParams, finetune
    from ernie_tiny.tasks.card import card_path, load_card
    from ernie_tiny.tasks.data import TrainDev

    _, output_dir = runtime.start_stage(config, join_group=False)
    output_dir.mkdir(parents=True, exist_ok=True)
    dump_config(config, output_dir / "config.yaml")

    task = config.Task
    card = load_card(task.name)
    tokenizer = AutoTokenizer.from_pretrained(config.Model.path)
    data = TrainDev.load(card, task, tokenizer, task.data_dir)
    train, train_features, dev_features = data.train, data.train.features, data.dev.features
    max_length = card.tokens_per_example(task.max_length)
    f = config.Finetune
    params = FinetuneParams(lr=f.lr, batch_size=f.batch_size, epochs=f.epochs, dropout=f.dropout,
                            warmup_ratio=f.warmup_ratio, weight_decay=f.weight_decay, eval_every=f.eval_every,
                            max_steps=f.max_steps, seed=config.Global.seed)
    print(f"{card.name}: {len(train_features)} train, {len(dev_features)} dev examples, {len(train.labels)} labels; "
          f"model {config.Model.path}", flush=True)

    log_path = output_dir / "finetune_log.jsonl"
    log_path.unlink(missing_ok=True)

    def on_eval(step: int, loss: float, dev_score: float) -> None:
        with open(log_path, "a", encoding="utf-8") as log:
            log.write(json.dumps({"step": step, "loss": round(loss, 6), "dev": round(dev_score, 4)}) + "\n")
        print(f"step {step}: loss {loss:.4f}, dev {card.metric} {dev_score:.2f}", flush=True)

    model_dir = FinetuneResult.product(output_dir)
    result = finetune(config.Model.path, card, train.labels, train_features, dev_features, tokenizer.pad_token_id,
                      params, save_dir=model_dir, on_eval=on_eval, tokenizer=tokenizer)
    write_json(model_dir / TASK_FILE, task_info(card, train.labels, card_path(task.name), max_length))
    write_json(output_dir / RESULT_FILE, {"task": card.name, "metric": card.metric, "best_dev": result.best_score,
                                            "best_step": result.best_step, "steps": result.steps,
                                            "seconds": round(result.seconds, 1), "train_examples": len(train_features),
                                            "dev_examples": len(dev_features)})
    print(f"best dev {card.metric} {result.best_score:.2f} at step {result.best_step}; model written to {model_dir}")
    return model_dir

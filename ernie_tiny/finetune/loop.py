"""Finetune an encoder on one task: PaddleNLP's sequence/token classification head over a
``save_pretrained`` directory, AdamW with linear warm-up and decay and the gradients' global norm
clipped, evaluation on the dev split every ``eval_every`` steps, best dev score kept (and the
best weights, when asked to save). Steps, warm-up and the evaluation schedule follow PaddleNLP's
CLUE benchmark (``ernie_tiny.finetune.schedule``); so does the grid's dropout (``build_task_model``)."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, List, Optional, Sequence

import numpy as np
import paddle
from paddlenlp.transformers import AutoModelForSequenceClassification, AutoModelForTokenClassification

from ernie_tiny.files import replacing_directory
from ernie_tiny.finetune.schedule import batches_per_epoch, eval_interval, eval_steps, total_steps, warmup_steps
from ernie_tiny.tasks.card import TaskCard
from ernie_tiny.tasks.encode import IGNORE, Features, collate
from ernie_tiny.schema import OptimizerSection
from ernie_tiny.tasks.metrics import score
from ernie_tiny.training import build_optimizer


@dataclass
class FinetuneParams:
    lr: float = 3e-5
    batch_size: int = 32
    epochs: int = 3
    dropout: float = 0.1
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    eval_every: int = 100  # steps; 0 = once per epoch
    max_steps: int = 0  # 0 = epochs x batches
    seed: int = 42
    max_grad_norm: float = 1.0  # the gradients' global norm is clipped to this; 0 = no clipping


@dataclass
class FinetuneResult:
    best_score: float
    best_step: int
    steps: int
    seconds: float
    evals: List[tuple] = field(default_factory=list)  # (step, dev score)


# The dropout a saved ERNIE 3.0 config has, and that PaddleNLP's benchmark treats as "as saved".
SAVED_DROPOUT = 0.1


def build_task_model(model_dir: str, card: TaskCard, num_labels: int, dropout: float):
    """The encoder with a fresh task head, dropout as PaddleNLP's CLUE benchmark sets it: the grid's
    0.1 keeps the saved config's values; any other value goes to the encoder's dropouts
    (``set_encoder_dropout``) while the head keeps its saved dropout (0.1 for ERNIE 3.0)."""
    auto = AutoModelForTokenClassification if card.head == "token" else AutoModelForSequenceClassification
    model = auto.from_pretrained(model_dir, num_classes=num_labels)
    if dropout != SAVED_DROPOUT:
        set_encoder_dropout(model, dropout)
    return model


def set_encoder_dropout(model, p: float) -> None:
    """The benchmark's ``update_model_dropout``: the embeddings' dropout and, in every layer, the
    feed-forward activation's and both residual dropouts; attention dropout and head stay."""
    encoder = model.base_model
    encoder.embeddings.dropout.p = p
    for layer in encoder.encoder.layers:
        layer.dropout.p = p
        layer.dropout1.p = p
        layer.dropout2.p = p


def finetune_optimizer(model, params: FinetuneParams, total: int):
    """(AdamW, its scheduler) from ``training.build_optimizer`` under the benchmark's settings:
    Paddle's default moments (0.9, 0.999, eps 1e-8), linear warm-up over ``warmup_steps`` (rounded
    down) then linear decay to 0 at ``total``; weight decay off for biases and norms; the global
    gradient norm clipped at ``params.max_grad_norm`` (the benchmark's ``ClipGradByGlobalNorm(1.0)``)."""
    # the floor's 0 stays 0: with warmup_ratio 0 the builder's ceil fallback is 0 too
    settings = OptimizerSection(lr=params.lr, betas=[0.9, 0.999], eps=1e-8, weight_decay=params.weight_decay,
                                warmup_steps=warmup_steps(total, params.warmup_ratio), warmup_ratio=0,
                                clip_norm=params.max_grad_norm)
    return build_optimizer(settings, total, model)


def predict(model, features: Sequence[Features], batch_size: int, pad_token_id: int) -> tuple:
    """(predicted ids, gold labels): [n] for sequence tasks; [n, longest] for token tasks,
    gold padded with IGNORE. The model is left in the mode it was in."""
    was_training = model.training
    model.eval()
    preds, golds = [], []
    with paddle.no_grad():
        for start in range(0, len(features), batch_size):
            batch = collate(features[start:start + batch_size], pad_token_id)
            logits = model(paddle.to_tensor(batch["input_ids"]), token_type_ids=paddle.to_tensor(batch["token_type_ids"]),
                           attention_mask=paddle.to_tensor(batch["attention_mask"]))
            preds.extend(logits.argmax(axis=-1).numpy())
            golds.extend(batch["labels"])
    if was_training:
        model.train()
    if np.ndim(golds[0]) == 0:
        return np.asarray(preds), np.asarray(golds)
    width = max(len(row) for row in golds)
    pad = lambda rows, value: np.stack([np.pad(r, (0, width - len(r)), constant_values=value) for r in rows])
    return pad(preds, 0), pad(golds, IGNORE)


def evaluate(model, features: Sequence[Features], card: TaskCard, labels: Sequence[str], batch_size: int,
             pad_token_id: int) -> float:
    predictions, gold = predict(model, features, batch_size, pad_token_id)
    return score(card.metric, predictions, gold, labels)


def finetune(model_dir: str, card: TaskCard, labels: Sequence[str], train: Sequence[Features],
             dev: Sequence[Features], pad_token_id: int, params: FinetuneParams,
             save_dir: Optional[Path] = None, on_eval: Optional[Callable[[int, float, float], None]] = None,
             tokenizer=None) -> FinetuneResult:
    """Train on ``train``, score ``dev``; returns the best dev score (and saves that model to ``save_dir``)."""
    paddle.seed(params.seed)
    rng = np.random.default_rng(params.seed)
    model = build_task_model(model_dir, card, len(labels), params.dropout)
    batches = batches_per_epoch(len(train), params.batch_size)
    total = total_steps(len(train), params.batch_size, params.epochs, params.max_steps)
    optimizer, scheduler = finetune_optimizer(model, params, total)
    loss_fn = paddle.nn.CrossEntropyLoss(ignore_index=IGNORE)
    eval_at = set(eval_steps(total, eval_interval(batches, params.eval_every, card.evals_per_epoch)))
    result = FinetuneResult(best_score=-1.0, best_step=0, steps=total, seconds=0.0)
    best_state = None
    started = time.time()
    model.train()
    step = 0
    while step < total:
        order = rng.permutation(len(train))
        for b in range(batches):  # the last, partial batch included
            if step >= total:
                break
            batch = collate([train[i] for i in order[b * params.batch_size:(b + 1) * params.batch_size]], pad_token_id)
            logits = model(paddle.to_tensor(batch["input_ids"]), token_type_ids=paddle.to_tensor(batch["token_type_ids"]),
                           attention_mask=paddle.to_tensor(batch["attention_mask"]))
            loss = loss_fn(logits.reshape([-1, logits.shape[-1]]), paddle.to_tensor(batch["labels"]).reshape([-1]))
            loss.backward()
            optimizer.step()
            optimizer.clear_grad()
            scheduler.step()
            step += 1
            if step in eval_at:
                dev_score = evaluate(model, dev, card, labels, max(params.batch_size, 64), pad_token_id)
                result.evals.append((step, dev_score))
                if on_eval:
                    on_eval(step, float(loss), dev_score)
                if dev_score > result.best_score:
                    result.best_score, result.best_step = dev_score, step
                    if save_dir is not None:
                        best_state = {k: v.numpy().copy() for k, v in model.state_dict().items()}
    result.seconds = time.time() - started
    if save_dir is not None and best_state is not None:
        model.set_state_dict({k: paddle.to_tensor(v) for k, v in best_state.items()})
        with replacing_directory(save_dir) as tmp:
            model.save_pretrained(str(tmp), safe_serialization=True)
            if tokenizer is not None:
                tokenizer.save_pretrained(str(tmp))
    return result

"""The multi-task model: one shared ERNIE encoder, one classification head per task.

A head is PaddleNLP's own classification head: dropout + ``classifier`` (Linear), on the
pooled [CLS] output for sequence tasks (as ``ErnieForSequenceClassification``) and on every
token's hidden state for token tasks (as ``ErnieForTokenClassification``). Its parameters are
named as there (``classifier.weight``, ``classifier.bias``), so a saved head drops into a
PaddleNLP task model over the saved encoder (``load_task_model``).

Data parallelism: a micro-batch holds one task, so a step uses the encoder and one head (or a
few, with accumulation); the other heads, and the pooler in a token-task step, take no part in
the loss. ``paddle.DataParallel`` fails on such parameters (even with
``find_unused_parameters``), and making every head take part through a zero-weighted loss term
would cost a forward of every head and hide the real structure. So the Trainer runs this model
unwrapped (``gradient_sync="all_reduce"``): it broadcasts rank 0's parameters once and, after
the last micro-step of each optimizer step, averages the gradients that exist with one fused
all-reduce. That is sound because every rank draws the same task at every micro-step (the
schedule is seeded without the rank, ``mtl/sampling.py``), so every rank holds gradients for
the same parameters; the end-of-run weight fingerprint check confirms the ranks agree. The
Trainer clears gradients to None in this mode: a head is updated (AdamW, weight decay) only
in steps that draw its task, the same way in a resumed run as in an uninterrupted one.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, Tuple

import paddle
import paddle.nn as nn
from paddlenlp.transformers import ErnieModel

from ernie_tiny.mtl.result import HEADS_DIR, HEADS_JSON, TEACHER_DIR, read_heads_info
from ernie_tiny.tasks.encode import IGNORE

HEADS_WEIGHTS = "heads.safetensors"


class TaskHead(nn.Layer):
    def __init__(self, hidden_size: int, num_labels: int, kind: str, dropout: float):
        super().__init__()
        if kind not in ("sequence", "token"):
            raise ValueError(f"unknown head type {kind!r}")
        self.kind = kind
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(hidden_size, num_labels)

    def forward(self, sequence_output: paddle.Tensor, pooled_output: paddle.Tensor) -> paddle.Tensor:
        """Logits: [batch, labels] (sequence) or [batch, seq, labels] (token)."""
        return self.classifier(self.dropout(pooled_output if self.kind == "sequence" else sequence_output))


class MultiTaskModel(nn.Layer):
    """``ernie`` (the shared encoder) and ``heads[task]``; ``heads``: task -> (kind, labels, dropout)."""

    def __init__(self, encoder: ErnieModel, heads: Dict[str, Tuple[str, int, float]]):
        super().__init__()
        self.ernie = encoder
        hidden = encoder.config.hidden_size
        self.heads = nn.LayerDict({name: TaskHead(hidden, n, kind, dropout) for name, (kind, n, dropout) in heads.items()})

    def forward(self, task: str, input_ids, token_type_ids=None, attention_mask=None) -> paddle.Tensor:
        sequence_output, pooled_output = self.ernie(input_ids, token_type_ids=token_type_ids,
                                                    attention_mask=attention_mask)
        return self.heads[task](sequence_output, pooled_output)

    def task_model(self, task: str) -> "TaskModel":
        return TaskModel(self, task)


class TaskModel(nn.Layer):
    """One task's view of a ``MultiTaskModel`` (shared parameters), called like a PaddleNLP
    task model: ``(input_ids, token_type_ids=, attention_mask=) -> logits``; for evaluation."""

    def __init__(self, mtl: MultiTaskModel, task: str):
        super().__init__()
        self.mtl, self.task = mtl, task

    def forward(self, input_ids, token_type_ids=None, attention_mask=None):
        return self.mtl(self.task, input_ids, token_type_ids=token_type_ids, attention_mask=attention_mask)


def task_loss(logits: paddle.Tensor, labels: paddle.Tensor) -> paddle.Tensor:
    """Cross-entropy over the labelled positions (token tasks: the first piece of each
    character; [CLS], [SEP], padding and later pieces are IGNORE)."""
    return nn.functional.cross_entropy(logits.reshape([-1, logits.shape[-1]]), labels.reshape([-1]),
                                       ignore_index=IGNORE)


def save_heads(model: MultiTaskModel, directory: Path, info: dict) -> None:
    """``heads.safetensors`` (``<task>.classifier.weight`` ...) and ``heads.json`` (``info``)."""
    from safetensors.numpy import save_file

    directory.mkdir(parents=True, exist_ok=True)
    save_file({k: v.numpy() for k, v in model.heads.state_dict().items()}, str(directory / HEADS_WEIGHTS))
    (directory / HEADS_JSON).write_text(json.dumps(info, indent=1, ensure_ascii=False), encoding="utf-8")


def load_task_model(output_dir, task: str):
    """A PaddleNLP ``AutoModelFor{Sequence,Token}Classification`` over ``<output_dir>/teacher``
    with ``task``'s trained head from ``<output_dir>/heads``: the teacher as one task's model."""
    from paddlenlp.transformers import AutoModelForSequenceClassification, AutoModelForTokenClassification
    from safetensors.numpy import load_file

    output_dir = Path(output_dir)
    info = read_heads_info(output_dir / HEADS_DIR)
    if task not in info["tasks"]:
        raise KeyError(f"no head for task {task!r} in {output_dir / HEADS_DIR} (heads: {', '.join(info['tasks'])})")
    head = info["tasks"][task]
    auto = AutoModelForTokenClassification if head["head"] == "token" else AutoModelForSequenceClassification
    model = auto.from_pretrained(str(output_dir / TEACHER_DIR), num_classes=len(head["labels"]),
                                 classifier_dropout=head["dropout"])
    weights = load_file(str(output_dir / HEADS_DIR / HEADS_WEIGHTS))
    model.classifier.set_state_dict({"weight": paddle.to_tensor(weights[f"{task}.classifier.weight"]),
                                     "bias": paddle.to_tensor(weights[f"{task}.classifier.bias"])})
    model.eval()
    return model

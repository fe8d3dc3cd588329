"""The masked-LM pretraining recipe: set up -> loop -> save, top to bottom.

An ERNIE (PaddleNLP ``ErnieForMaskedLM``: encoder + MLM head, the head's decoder tied to the
word embeddings) learns to restore masked tokens of packed unlabelled text. It starts from
sizes (random weights) or from ``Model.name_or_path`` (continued pretraining). The corpus,
tokenizer, sampler, loop, checkpoints and logs are the distillation stage's.

Outputs under ``Global.output_dir``:

- ``teacher/``: the encoder alone (``ErnieModel``, safetensors) with the tokenizer and the
  resolved config: what ``tools/distill.py`` takes as ``Teacher.name_or_path`` (with
  ``Tokenizer.source: teacher``) and what multi-task finetuning starts from;
- ``mlm/``: encoder and MLM head (``ErnieForMaskedLM``), to continue pretraining from.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import paddle
import paddle.nn as nn
import paddle.nn.functional as F
from paddlenlp.transformers import ErnieForMaskedLM

from ernie_tiny import runtime
from ernie_tiny.checkpoint import save_pretrained_dir
from ernie_tiny.config import ConfigError
from ernie_tiny.data.prepare import prepare_corpus, prepare_tokenizer
from ernie_tiny.data.sampler import ResumableBatchSampler
from ernie_tiny.modeling import additive_attention_mask, encoder_config
from ernie_tiny.pretrain.masking import IGNORE_INDEX, Masker, batch_rng
from ernie_tiny.prefetch import Prefetcher
from ernie_tiny.pretrain.result import MLM_DIR, PretrainResult
from ernie_tiny.pretrain.schema import PretrainConfig
from ernie_tiny.training import Trainer, read_scalars


class MaskedLMBody(nn.Layer):
    """``ErnieForMaskedLM``'s forward pass without the pooler (MLM does not use it, and
    ``paddle.DataParallel`` fails on a parameter that takes no part in the loss), scoring only
    the masked positions: the vocabulary projection, the costliest matmul of a small model,
    runs on ~15% of the tokens. Shares its parameters with the model it is built from."""

    def __init__(self, model: ErnieForMaskedLM):
        super().__init__()
        self.embeddings = model.ernie.embeddings
        self.encoder = model.ernie.encoder
        self.head = model.cls
        self.pad_token_id = model.ernie.pad_token_id

    def forward(self, input_ids: paddle.Tensor, masked_positions: paddle.Tensor) -> paddle.Tensor:
        """input_ids [batch, seq]; masked_positions: indices into the flattened [batch * seq]
        -> logits [len(masked_positions), vocab]."""
        x = self.embeddings(input_ids=input_ids)
        mask = additive_attention_mask((input_ids != self.pad_token_id).astype("int64"), x.dtype)
        x = self.encoder(x, src_mask=mask)
        return self.head(x, masked_positions=masked_positions)


def build_model(config: PretrainConfig, tokenizer) -> ErnieForMaskedLM:
    """From ``Model.name_or_path`` (its MLM head too, if the directory has one) or from the sizes."""
    spec = config.Model
    if spec.name_or_path:
        model = ErnieForMaskedLM.from_pretrained(spec.name_or_path)
    else:
        model = ErnieForMaskedLM(encoder_config(spec, len(tokenizer), tokenizer.pad_token_id))
    problems = []
    if model.config.vocab_size < len(tokenizer):
        problems.append(("Model.vocab_size", f"{model.config.vocab_size} is smaller than the tokenizer's "
                                             f"vocabulary ({len(tokenizer)} tokens)"))
    if problems:
        raise ConfigError("\n".join(f"{key}: {message}" for key, message in problems))
    return model


COLLAPSE_SPREAD = 1e-3  # below this, the encoder's hidden states hardly depend on the input


def hidden_state_spread(encoder, ids: np.ndarray) -> float:
    """How much the last hidden states vary over the tokens of ``ids`` (std over tokens, relative
    to their mean magnitude). A healthy encoder gives ~0.1-1; a collapsed one, where masked-LM
    training settled on predicting character frequencies whatever the text, gives ~1e-5."""
    encoder.eval()
    with paddle.no_grad():
        hidden = encoder(paddle.to_tensor(ids))[0].numpy().reshape(-1, encoder.config.hidden_size)
    encoder.train()
    return float(hidden.std(axis=0).mean() / (np.abs(hidden).mean() + 1e-12))


def run(config: PretrainConfig) -> Path:
    rt, _ = runtime.start_stage(config)

    tokenizer = prepare_tokenizer(config, rt)
    corpus = prepare_corpus(config, rt, tokenizer)
    model = build_model(config, tokenizer)
    output_dir = runtime.open_output_dir(config, rt)  # the inputs are good: only now is anything written
    body = MaskedLMBody(model)
    masker = Masker.for_tokenizer(tokenizer, config.Mlm)
    train = config.Train
    sampler = ResumableBatchSampler(len(corpus), train.batch_size, rt.rank, rt.world_size, config.Global.seed)

    def prepare_batch():
        """The host side of one micro-batch (NumPy only; on GPU it runs a step ahead, in a thread)."""
        ids = corpus.batch(sampler.next_batch())
        # the batch's masking depends only on its place in the data order: exact on resume
        inputs, labels = masker(ids, batch_rng(config.Global.seed, rt.rank, (sampler.epoch, sampler.position)))
        positions = np.flatnonzero(labels.ravel() != IGNORE_INDEX)
        return ids, inputs, labels.ravel()[positions], positions

    batches = Prefetcher(prepare_batch, sampler, ahead=1 if rt.device == "gpu" else 0)
    trainer = Trainer(rt, output_dir, train, config.Optimizer, model=model, trained=body, data=batches,
                      tokenizer=tokenizer, tokens_per_micro_step=train.batch_size * corpus.seq_len, desc="pretrain")
    trainer.resume()
    seen = []  # fingerprint of this rank's first batch, for the data-parallel check
    window = {"correct": paddle.zeros([], dtype="int64"), "masked": 0}  # masked-token accuracy since the last log line
    # ("correct" stays on the device and is read when logged: no device sync per micro-step)

    def micro_step():
        ids, inputs, masked_labels, positions = batches.next()
        if not seen:
            seen.append(float(np.abs(ids.astype(np.float64)).sum()))
        target = paddle.to_tensor(masked_labels)
        logits = trainer.layer(paddle.to_tensor(inputs), paddle.to_tensor(positions))
        loss = F.cross_entropy(logits.astype("float32"), target)
        window["correct"] = window["correct"] + (logits.argmax(axis=-1) == target).astype("int64").sum().detach()
        window["masked"] += len(positions)
        return {"mlm": loss}

    def after_step(step: int):
        if step % train.log_every and step != train.max_steps:
            return None
        accuracy = read_scalars({"correct": window["correct"]})["correct"] / max(window["masked"], 1)
        window.update(correct=paddle.zeros([], dtype="int64"), masked=0)
        return {"mlm_accuracy": accuracy}

    m = model.config
    trainer.fit(micro_step, after_step, banner=(
        f"corpus: {corpus.documents} documents, {corpus.tokens} tokens, {len(corpus)} sequences of "
        f"{corpus.seq_len}; model {m.num_hidden_layers}L-{m.hidden_size}H-{m.num_attention_heads}A, "
        f"vocabulary {m.vocab_size}; masking {config.Mlm.mask_prob:.0%} of tokens; "
        f"world size {rt.world_size}, device {rt.device}"))
    batches.close()
    trainer.check_ranks_in_sync(seen[0] if seen else 0.0)
    teacher = PretrainResult.product(output_dir)
    if rt.is_main:
        spread = hidden_state_spread(model.ernie, corpus.batch(np.arange(min(8, len(corpus)))))
        print(f"hidden-state spread over tokens: {spread:.3g} (collapsed below {COLLAPSE_SPREAD:g})")
        if spread < COLLAPSE_SPREAD:
            print(f"WARNING: the encoder collapsed: its hidden states barely depend on the input (spread "
                  f"{spread:.2g}), so finetuning it will stay at the majority class. Lower Optimizer.lr or raise "
                  f"Optimizer.warmup_ratio, and pretrain again.", flush=True)
        save_pretrained_dir(output_dir / MLM_DIR, model, tokenizer, config, "pretrain_config.yaml")
        save_pretrained_dir(teacher, model.ernie, tokenizer, config, "pretrain_config.yaml")
        print(f"encoder (the teacher) written to {teacher}; encoder + MLM head to {output_dir / MLM_DIR}")
    rt.barrier()
    return teacher

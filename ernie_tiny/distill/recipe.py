"""The distillation recipe: set up -> loop -> checkpoint, top to bottom.

MiniLMv2 (task-agnostic): the student learns the teacher's Q-Q, K-K and V-V self-attention
relations of one teacher layer in its own (last) layer, on unlabelled packed text. The
teacher runs in eval mode, without gradients, and only up to the distilled layer's Q/K/V
projections; the student runs only up to its distilled layer's projections too.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import paddle

from ernie_tiny import runtime
from ernie_tiny.checkpoint import save_pretrained_dir
from ernie_tiny.config import ConfigError
from ernie_tiny.data.prepare import prepare_corpus, prepare_tokenizer
from ernie_tiny.data.sampler import ResumableBatchSampler
from ernie_tiny.distill.loss import relation_losses
from ernie_tiny.distill.schema import DistillConfig, check_layers_and_heads
from ernie_tiny.modeling import QKVExtractor, build_encoder, encoder_sizes
from ernie_tiny.training import Trainer

RELATIONS = ("qq", "kk", "vv")


def build_models(config: DistillConfig, tokenizer):
    """Teacher and student encoders; checks their sizes against the config and the tokenizer."""
    vocab, pad = len(tokenizer), tokenizer.pad_token_id
    teacher = build_encoder(config.Teacher, vocab, pad)
    student = build_encoder(config.Student, vocab, pad)
    problems = list(check_layers_and_heads(config, encoder_sizes(teacher), encoder_sizes(student)))
    for role, model in (("Teacher", teacher), ("Student", student)):
        if model.config.vocab_size < vocab:
            problems.append((f"{role}.vocab_size", f"{model.config.vocab_size} is smaller than the tokenizer's "
                                                   f"vocabulary ({vocab} tokens)"))
    if problems:
        raise ConfigError("\n".join(f"{key}: {message}" for key, message in problems))
    teacher.eval()
    for p in teacher.parameters():
        p.stop_gradient = True
    return teacher, student


def save_student(output_dir: Path, student, tokenizer, config: DistillConfig) -> Path:
    """The final student in PaddleNLP format (safetensors), written atomically."""
    return save_pretrained_dir(output_dir / "student", student, tokenizer, config, "distill_config.yaml")


def run(config: DistillConfig) -> Path:
    rt, output_dir = runtime.start_stage(config)

    tokenizer = prepare_tokenizer(config, rt)
    corpus = prepare_corpus(config, rt, tokenizer)
    teacher, student = build_models(config, tokenizer)
    teacher_qkv = QKVExtractor(teacher, config.Distill.teacher_layer)
    student_qkv = QKVExtractor(student, config.Distill.student_layer)
    train = config.Train
    sampler = ResumableBatchSampler(len(corpus), train.batch_size, rt.rank, rt.world_size, config.Global.seed)
    trainer = Trainer(rt, output_dir, train, config.Optimizer, model=student, trained=student_qkv, data=sampler,
                      tokenizer=tokenizer, tokens_per_micro_step=train.batch_size * corpus.seq_len, desc="distill")
    trainer.resume()
    seen = []  # fingerprint of this rank's first batch, for the data-parallel check

    def micro_step():
        ids = paddle.to_tensor(corpus.batch(sampler.next_batch()))
        if not seen:
            seen.append(float(np.abs(ids.numpy().astype(np.float64)).sum()))
        mask = paddle.ones(ids.shape, dtype="int64")  # packed sequences have no padding
        with paddle.no_grad():
            t_qkv = teacher_qkv(ids, mask)
        s_qkv = trainer.layer(ids, mask)
        losses = relation_losses(s_qkv, t_qkv, mask, config.Distill.relation_heads)
        return dict(zip(RELATIONS, losses))

    trainer.fit(micro_step, banner=(
        f"corpus: {corpus.documents} documents, {corpus.tokens} tokens, {len(corpus)} sequences of "
        f"{corpus.seq_len}; teacher layer {config.Distill.teacher_layer} of {teacher.config.num_hidden_layers}, "
        f"{config.Distill.relation_heads} relation heads; world size {rt.world_size}, device {rt.device}"))
    trainer.check_ranks_in_sync(seen[0] if seen else 0.0)
    final = None
    if rt.is_main:
        final = save_student(output_dir, student, tokenizer, config)
        print(f"student written to {final}")
    rt.barrier()
    return final or output_dir / "student"

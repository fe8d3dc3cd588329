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
from ernie_tiny.config import ConfigError, dump_config
from ernie_tiny.data.prepare import prepare_corpus, prepare_tokenizer
from ernie_tiny.data.sampler import ResumableBatchSampler
from ernie_tiny.distill.result import student_dir, students_root
from ernie_tiny.distill.schema import DistillConfig, check_layers_and_heads
from ernie_tiny.distill.step import StudentsQKV, make_micro_step
from ernie_tiny.distill.teacher_engine import build_engine
from ernie_tiny.modeling import QKVExtractor, build_encoder, encoder_sizes
from ernie_tiny.prefetch import Prefetcher
from ernie_tiny.training import Trainer



def build_models(config: DistillConfig, tokenizer):
    """The teacher encoder and ``{name: student encoder}`` ('' for the single ``Student``);
    checks their sizes against the config and the tokenizer."""
    vocab, pad = len(tokenizer), tokenizer.pad_token_id
    teacher = build_encoder(config.Teacher, vocab, pad)
    students = {name: build_encoder(spec, vocab, pad) for name, spec in config.student_specs()}
    problems = list(check_layers_and_heads(config, encoder_sizes(teacher),
                                           [encoder_sizes(s) for s in students.values()]))
    roles = [("Teacher", teacher)] + [(f"Students.{i}" if name else "Student", model)
                                      for i, (name, model) in enumerate(students.items())]
    for role, model in roles:
        if model.config.vocab_size < vocab:
            problems.append((f"{role}.vocab_size", f"{model.config.vocab_size} is smaller than the tokenizer's "
                                                   f"vocabulary ({vocab} tokens)"))
    if problems:
        raise ConfigError("\n".join(f"{key}: {message}" for key, message in problems))
    teacher.eval()
    for p in teacher.parameters():
        p.stop_gradient = True
    return teacher, students


def build_students(config: DistillConfig, students: dict):
    """The trained layer (every student's Q/K/V extractor), the checkpointed model (the single
    student itself, or all of them in one ``LayerDict``), each student's relation heads and its
    optimizer parameter group (None for a single student: the run's ``Optimizer``)."""
    extractors = [(name, QKVExtractor(model, config.distill_of(name)[0])) for name, model in students.items()]
    trained = StudentsQKV(extractors)
    heads = {name: config.distill_of(name)[1] for name in students}
    if list(students) == [""]:
        return trained, students[""], heads, None
    settings = {entry.name: entry.model_dump(include={"lr", "betas", "eps", "weight_decay", "clip_norm"})
                for entry in config.Students}
    groups = [(params, settings[name]) for name, params in zip(trained.names, trained.parameter_groups())]
    return trained, paddle.nn.LayerDict(students), heads, groups


def save_students(output_dir: Path, students: dict, tokenizer, config: DistillConfig) -> Path:
    """Each student in PaddleNLP format (safetensors), written atomically: ``student/`` for the
    single ``Student``, ``students/<name>/`` for ``Students``. Returns the folder."""
    if list(students) == [""]:
        return save_pretrained_dir(student_dir(output_dir), students[""], tokenizer, config, "distill_config.yaml")
    for name, model in students.items():
        save_pretrained_dir(student_dir(output_dir, name), model, tokenizer, config, "distill_config.yaml")
    return students_root(output_dir, several=True)


def build_teacher(config: DistillConfig, rt, output_dir: Path, teacher, check_ids: np.ndarray, relation_heads=()):
    """The teacher engine ``Distill.teacher_engine`` asks for (see ``teacher_engine``), checked on
    ``check_ids``; the resolved choice is written back into ``config.yaml``."""
    output_dir = Path(output_dir)
    ids = paddle.to_tensor(check_ids)
    engine = build_engine(config.Distill.teacher_engine, QKVExtractor(teacher, config.Distill.teacher_layer),
                          config.Distill.teacher_layer, output_dir, (ids, paddle.ones(ids.shape, dtype="int64")),
                          rt.device, runtime.thread_count(), is_main=rt.is_main, barrier=rt.barrier,
                          relation_heads=tuple(relation_heads))
    if rt.is_main:
        resolved = config.model_copy(deep=True)
        resolved.Distill.teacher_engine = engine.name
        dump_config(resolved, output_dir / "config.yaml")
    return engine


def run(config: DistillConfig) -> Path:
    rt, _ = runtime.start_stage(config)

    tokenizer = prepare_tokenizer(config, rt)
    corpus = prepare_corpus(config, rt, tokenizer)
    teacher, students = build_models(config, tokenizer)
    output_dir = runtime.open_output_dir(config, rt)  # the inputs are good: only now is anything written
    trained, model, relation_heads, groups = build_students(config, students)
    train = config.Train
    sampler = ResumableBatchSampler(len(corpus), train.batch_size, rt.rank, rt.world_size, config.Global.seed)
    # on GPU the next batch is packed on the host while the device runs this one
    batches = Prefetcher(lambda: corpus.batch(sampler.next_batch()), sampler, ahead=1 if rt.device == "gpu" else 0)
    trainer = Trainer(rt, output_dir, train, config.Optimizer, model=model, trained=trained, data=batches,
                      tokenizer=tokenizer, tokens_per_micro_step=train.batch_size * corpus.seq_len, desc="distill",
                      param_groups=groups)
    # before resuming: building the engine must not move the RNG state that resuming restores
    teacher_engine = build_teacher(config, rt, output_dir, teacher, corpus.batch(np.arange(min(len(corpus), 2))),
                                   relation_heads.values())
    trainer.resume()
    seen = []  # fingerprint of this rank's first batch, for the data-parallel check

    def next_batch() -> np.ndarray:
        ids = batches.next()
        if not seen:
            seen.append(float(np.abs(ids.astype(np.float64)).sum()))
        return ids

    micro_step = make_micro_step(next_batch, teacher_engine, trainer.layer, relation_heads)
    names = ", ".join(f"{n} (R={relation_heads[n]})" for n in students) if groups else \
        f"{relation_heads['']} relation heads"
    try:
        trainer.fit(micro_step, banner=(
            f"corpus: {corpus.documents} documents, {corpus.tokens} tokens, {len(corpus)} sequences of "
            f"{corpus.seq_len}; teacher layer {config.Distill.teacher_layer} of {teacher.config.num_hidden_layers}, "
            f"{teacher_engine.describe()}; students: {names}; world size {rt.world_size}, device {rt.device}"))
    finally:
        batches.close()
    trainer.check_ranks_in_sync(seen[0] if seen else 0.0)
    final = None
    if rt.is_main:
        final = save_students(output_dir, students, tokenizer, config)
        print(f"student{'s' if groups else ''} written to {final}")
    rt.barrier()
    return final or students_root(output_dir, several=bool(groups))

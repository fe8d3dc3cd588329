"""The distillation recipe: set up -> loop -> checkpoint, top to bottom.

MiniLMv2 (task-agnostic): the student learns the teacher's Q-Q, K-K and V-V self-attention
relations of one teacher layer in its own (last) layer, on unlabelled packed text. The
teacher runs in eval mode, without gradients, and only up to the distilled layer's Q/K/V
projections; the student runs only up to its distilled layer's projections too.
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import paddle
from paddlenlp.transformers import LinearDecayWithWarmup

from ernie_tiny import checkpoint, runtime
from ernie_tiny.config import ConfigError, dump_config
from ernie_tiny.data.prepare import prepare_corpus, prepare_tokenizer
from ernie_tiny.data.sampler import ResumableBatchSampler
from ernie_tiny.distill.loss import relation_losses
from ernie_tiny.distill.schema import DistillConfig, check_layers_and_heads
from ernie_tiny.modeling import QKVExtractor, build_encoder, encoder_sizes
from ernie_tiny.monitor import TrainMonitor

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


def build_optimizer(config: DistillConfig, params_layer: paddle.nn.Layer):
    opt = config.Optimizer
    total = config.Train.max_steps
    warmup = opt.warmup_steps or int(math.ceil(opt.warmup_ratio * total))
    scheduler = LinearDecayWithWarmup(opt.lr, total, warmup)
    named = params_layer.named_parameters()
    decay = {p.name for n, p in named if not any(k in n for k in ("bias", "norm"))}
    optimizer = paddle.optimizer.AdamW(
        learning_rate=scheduler,
        beta1=opt.betas[0], beta2=opt.betas[1], epsilon=opt.eps,
        parameters=params_layer.parameters(),
        weight_decay=opt.weight_decay,
        apply_decay_param_fun=lambda name: name in decay,
        grad_clip=paddle.nn.ClipGradByGlobalNorm(opt.clip_norm) if opt.clip_norm > 0 else None,
    )
    return optimizer, scheduler


def save_student(output_dir: Path, student, tokenizer, config: DistillConfig) -> Path:
    """The final student in PaddleNLP format (safetensors), written atomically."""
    final = output_dir / "student"
    tmp = output_dir / ".tmp_student"
    import shutil

    shutil.rmtree(tmp, ignore_errors=True)
    student.save_pretrained(str(tmp), safe_serialization=True)
    tokenizer.save_pretrained(str(tmp))
    dump_config(config, tmp / "distill_config.yaml")
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    return final


def parameters_fingerprint(layer: paddle.nn.Layer) -> float:
    """A float64 sum over all parameters: equal on every rank when data parallelism is right."""
    return float(sum(np.abs(p.numpy().astype(np.float64)).sum() for p in layer.parameters()))


def run(config: DistillConfig) -> Path:
    from paddlenlp.utils.log import logger as paddlenlp_logger

    paddlenlp_logger.set_level("WARNING")  # its per-file "saved in ..." lines drown the progress
    rt = runtime.init_runtime(config.Global.device)
    output_dir = Path(config.Global.output_dir)
    if rt.is_main:
        output_dir.mkdir(parents=True, exist_ok=True)
        dump_config(config, output_dir / "config.yaml")
    runtime.seed_everything(config.Global.seed)

    tokenizer = prepare_tokenizer(config, rt)
    corpus = prepare_corpus(config, rt, tokenizer, workers=2 if rt.world_size == 1 else 1)
    teacher, student = build_models(config, tokenizer)
    teacher_qkv = QKVExtractor(teacher, config.Distill.teacher_layer)
    student_qkv = QKVExtractor(student, config.Distill.student_layer)
    trained = paddle.DataParallel(student_qkv) if rt.distributed else student_qkv
    optimizer, scheduler = build_optimizer(config, student_qkv)
    train = config.Train
    amp = runtime.resolve_amp(train.amp, rt.device)
    scaler = paddle.amp.GradScaler(init_loss_scaling=2.0**15) if amp == "fp16" else None
    sampler = ResumableBatchSampler(len(corpus), train.batch_size, rt.rank, rt.world_size, config.Global.seed)

    state = {"tokens": 0, "elapsed": 0.0}
    step = 0
    resume_from = None
    if train.resume == "auto":
        resume_from = checkpoint.latest_checkpoint(output_dir)
    elif train.resume != "never":
        resume_from = Path(train.resume)
    if resume_from is not None:
        state = checkpoint.load_checkpoint(rt, resume_from, student, optimizer, scaler)
        sampler.load_state_dict(state["sampler"])
        step = state["step"]

    monitor = TrainMonitor(output_dir, train.max_steps, step, enabled=rt.is_main)
    if resume_from is not None:
        monitor.write(f"resumed from {resume_from} at step {step}")
    monitor.write(f"corpus: {corpus.documents} documents, {corpus.tokens} tokens, {len(corpus)} sequences of "
                  f"{corpus.seq_len}; teacher layer {config.Distill.teacher_layer} of "
                  f"{teacher.config.num_hidden_layers}, {config.Distill.relation_heads} relation heads; "
                  f"world size {rt.world_size}, device {rt.device}")
    tokens_per_step = train.batch_size * train.accumulate_steps * corpus.seq_len * rt.world_size
    first_batch_ids = None
    student.train()
    window_start, window_steps = time.time(), 0
    while step < train.max_steps:
        totals = np.zeros(3)
        for micro in range(train.accumulate_steps):
            ids = paddle.to_tensor(corpus.batch(sampler.next_batch()))
            if first_batch_ids is None:
                first_batch_ids = ids.numpy()
            mask = paddle.ones(ids.shape, dtype="int64")  # packed sequences have no padding
            sync = micro == train.accumulate_steps - 1 or not rt.distributed
            with (trained.no_sync() if not sync else _null()):
                with runtime.autocast(amp):
                    with paddle.no_grad():
                        t_qkv = teacher_qkv(ids, mask)
                    s_qkv = trained(ids, mask)
                losses = relation_losses(s_qkv, t_qkv, mask, config.Distill.relation_heads)
                loss = paddle.add_n(losses) / train.accumulate_steps
                (scaler.scale(loss) if scaler else loss).backward()
            totals += [float(x) for x in losses]
        if scaler:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        optimizer.clear_grad()
        scheduler.step()
        step += 1
        window_steps += 1
        state["tokens"] += tokens_per_step
        now = time.time()
        speed = window_steps * tokens_per_step / max(now - window_start, 1e-9)
        per_relation = totals / train.accumulate_steps
        scalars = {"loss": float(per_relation.sum()), **{f"loss_{r}": float(v) for r, v in zip(RELATIONS, per_relation)}}
        monitor.step(step, speed, scalars)
        if step % train.log_every == 0 or step == train.max_steps:
            state["elapsed"] += now - window_start
            monitor.log(step, {**scalars, "lr": optimizer.get_lr(), "tokens_per_second": speed})
            window_start, window_steps = now, 0
        if step % train.save_every == 0 or step == train.max_steps:
            checkpoint.save_checkpoint(rt, output_dir, step, student, tokenizer, optimizer,
                                       dict(state, sampler=sampler.state_dict()), train.keep_checkpoints, scaler)
    monitor.close()

    if rt.distributed:
        _check_ranks_in_sync(rt, output_dir, student, first_batch_ids)
    final = None
    if rt.is_main:
        final = save_student(output_dir, student, tokenizer, config)
        print(f"student written to {final}")
    rt.barrier()
    return final or output_dir / "student"


def _null():
    import contextlib

    return contextlib.nullcontext()


def _check_ranks_in_sync(rt, output_dir: Path, student, first_batch_ids) -> None:
    """All ranks must end with identical weights (and must have read different data)."""
    import paddle.distributed as dist

    first = 0.0 if first_batch_ids is None else float(np.abs(first_batch_ids.astype(np.float64)).sum())
    mine = paddle.to_tensor([parameters_fingerprint(student), first], dtype="float64")
    gathered = []
    dist.all_gather(gathered, mine)
    rows = [t.numpy().tolist() for t in gathered]
    if rt.is_main:
        report = {"weights": [r[0] for r in rows], "first_batch": [r[1] for r in rows]}
        (output_dir / "data_parallel_check.json").write_text(json.dumps(report, indent=1))
        if len({round(w, 6) for w in report["weights"]}) != 1:
            raise RuntimeError(f"data-parallel ranks ended with different weights: {report['weights']}")

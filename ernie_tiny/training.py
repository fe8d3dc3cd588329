"""The optimisation loop every training stage shares (distillation, MLM pretraining,
multi-task finetuning): AdamW with linear warm-up and decay, gradient accumulation and
clipping, AMP on GPU, data parallelism, atomic checkpoints and exact resume, progress and
VisualDL logs. A stage supplies ``micro_step()``: draw one micro-batch, run the forward pass,
return its named losses (scalar tensors, summed into the loss)."""
from __future__ import annotations

import contextlib
import json
import math
import time
from pathlib import Path
from typing import Callable, Dict, Optional

import numpy as np
import paddle
from paddle.distributed.fleet.utils.hybrid_parallel_util import fused_allreduce_gradients
from paddlenlp.transformers import LinearDecayWithWarmup

from ernie_tiny import checkpoint, runtime
from ernie_tiny.monitor import TrainMonitor
from ernie_tiny.schema import OptimizerSection, TrainSection


def build_optimizer(opt: OptimizerSection, max_steps: int, layer: paddle.nn.Layer, groups=None):
    """AdamW over ``layer``'s parameters (no weight decay on biases and norms) and its LR schedule:
    linear warm-up over ``opt.warmup_steps`` steps (0: ``ceil(opt.warmup_ratio x max_steps)``),
    then linear decay to 0 at ``max_steps``.

    ``groups``: optional ``[(parameters, settings)]``, one AdamW parameter group each (several
    students in one run): ``settings`` may set ``lr`` (the group's peak learning rate on the
    shared warm-up/decay schedule), ``betas``, ``eps``, ``weight_decay`` and ``clip_norm``;
    unset ones are ``opt``'s. Paddle keeps each group's moments apart and clips each group by
    its own global norm, so one group's gradients never scale another's update."""
    warmup = opt.warmup_steps or int(math.ceil(opt.warmup_ratio * max_steps))
    scheduler = LinearDecayWithWarmup(opt.lr, max_steps, warmup)
    decay = {p.name for n, p in layer.named_parameters() if not any(k in n for k in ("bias", "norm"))}

    def clip(norm):
        return paddle.nn.ClipGradByGlobalNorm(norm) if norm > 0 else None

    parameters = layer.parameters()
    if groups:
        parameters = []
        for params, settings in groups:
            get = lambda key, default: default if settings.get(key) is None else settings[key]  # noqa: E731
            betas = get("betas", opt.betas)
            parameters.append({
                "params": list(params), "learning_rate": get("lr", opt.lr) / opt.lr,  # a factor on the schedule
                "beta1": betas[0], "beta2": betas[1], "epsilon": get("eps", opt.eps),
                "weight_decay": get("weight_decay", opt.weight_decay), "grad_clip": clip(get("clip_norm", opt.clip_norm)),
            })
    optimizer = paddle.optimizer.AdamW(
        learning_rate=scheduler, beta1=opt.betas[0], beta2=opt.betas[1], epsilon=opt.eps,
        parameters=parameters, weight_decay=opt.weight_decay,
        apply_decay_param_fun=lambda name: name in decay, grad_clip=clip(opt.clip_norm),
    )
    return optimizer, scheduler


def read_scalars(values: Dict[str, paddle.Tensor]) -> Dict[str, float]:
    """Device scalars -> host floats, in one transfer. Reading a device value back waits for
    the device to finish everything queued before it, so the training loop reads only through
    this function, and only when it logs (the tests count the calls)."""
    if not values:
        return {}
    stacked = paddle.stack([v.reshape([]).astype("float64") for v in values.values()]).numpy()
    return dict(zip(values, stacked.tolist()))


def add_into(totals: Dict[str, paddle.Tensor], values: Dict[str, paddle.Tensor]) -> None:
    """Add ``values`` to the running ``totals`` by name, on the device (a new name starts at its value)."""
    for name, value in values.items():
        totals[name] = totals[name] + value if name in totals else value


def parameters_fingerprint(layer: paddle.nn.Layer) -> float:
    """A float64 sum over all parameters: equal on every rank when data parallelism is right."""
    return float(sum(np.abs(p.numpy().astype(np.float64)).sum() for p in layer.parameters()))


def loss_scalars(totals: Dict[str, float]) -> Dict[str, float]:
    """What the log shows of a step's named losses: ``loss`` (their sum, the trained loss),
    ``loss_<name>`` each, and for names ``<group>.<term>`` (several students) ``loss_<group>``."""
    scalars = {"loss": sum(totals.values())}
    for name, value in totals.items():
        group, dot, _ = name.partition(".")
        if dot:
            scalars[f"loss_{group}"] = scalars.get(f"loss_{group}", 0.0) + value
    scalars.update({f"loss_{name}": value for name, value in totals.items()})
    return scalars


class Trainer:
    """Runs ``Train.max_steps`` optimizer steps of ``micro_step`` over ``trained`` (the layer
    whose parameters are optimised; when distributed, see ``gradient_sync``), and checkpoints
    ``model`` (the whole model, ``save_pretrained`` or a plain Layer) with the
    optimizer and ``data`` (an object with ``state_dict``/``load_state_dict``)."""

    def __init__(self, rt: runtime.Runtime, output_dir, train: TrainSection, opt: OptimizerSection,
                 model: paddle.nn.Layer, trained: paddle.nn.Layer, data, tokenizer=None,
                 tokens_per_micro_step: int = 0, desc: str = "train", gradient_sync: str = "data_parallel",
                 param_groups=None):
        """``gradient_sync``: ``data_parallel`` (distributed runs wrap ``trained`` in
        ``paddle.DataParallel``, which needs every parameter in every step's loss) or
        ``all_reduce``, for models whose steps use part of their parameters (multi-task heads):
        ``trained`` stays unwrapped, rank 0's parameters are broadcast once, and after each
        step's last micro-step the gradients that exist are averaged (one fused all-reduce);
        every rank must use the same parameters in a step. Gradients are then cleared to None,
        not zero, so a parameter outside a step's loss is not updated in that step (no momentum,
        no weight decay), the same way whether or not the run was resumed.
        ``param_groups``: see ``build_optimizer`` (several students, each its own settings)."""
        if gradient_sync not in ("data_parallel", "all_reduce"):
            raise ValueError(f"gradient_sync must be 'data_parallel' or 'all_reduce', not {gradient_sync!r}")
        self.rt, self.output_dir, self.train = rt, Path(output_dir), train
        self.model, self.data, self.tokenizer = model, data, tokenizer
        self.wrapped = rt.distributed and gradient_sync == "data_parallel"
        self.all_reduce = rt.distributed and gradient_sync == "all_reduce"
        self.grads_to_zero = gradient_sync == "data_parallel"
        self.layer = paddle.DataParallel(trained) if self.wrapped else trained
        if self.all_reduce:
            from paddle.distributed.parallel import sync_params_buffers

            sync_params_buffers(trained, src_rank=0)
        self.optimizer, self.scheduler = build_optimizer(opt, train.max_steps, trained, param_groups)
        self.amp = runtime.resolve_amp(train.amp, rt.device)
        self.scaler = paddle.amp.GradScaler(init_loss_scaling=2.0**15) if self.amp == "fp16" else None
        self.tokens_per_step = tokens_per_micro_step * train.accumulate_steps * rt.world_size
        self.desc = desc
        self.step = 0
        self.state: Dict = {"tokens": 0, "elapsed": 0.0}
        self.resumed_from: Optional[Path] = None

    def resume(self) -> int:
        """Continue from ``Train.resume`` ('auto': the newest checkpoint in the output dir, as rank 0 sees it),
        after removing what a killed run left half-written. A broken checkpoint raises
        ``checkpoint.CheckpointError`` naming the file."""
        if self.rt.is_main:
            checkpoint.remove_stale_temporaries(self.output_dir)
        source = self.train.resume
        found = checkpoint.agreed_latest_checkpoint(self.rt, self.output_dir) if source == "auto" else (
            None if source == "never" else Path(source))
        if found is not None:
            self.state = checkpoint.load_checkpoint(self.rt, found, self.model, self.optimizer, self.scaler)
            self.data.load_state_dict(self.state.pop("data"))
            self.step = self.state["step"]
            self.resumed_from = found
        return self.step

    def save(self) -> Path:
        return checkpoint.save_checkpoint(self.rt, self.output_dir, self.step, self.model, self.tokenizer,
                                          self.optimizer, dict(self.state, data=self.data.state_dict()),
                                          self.train.keep_checkpoints, self.scaler)

    def train_step(self, micro_step: Callable[[], Dict[str, paddle.Tensor]]) -> Dict[str, paddle.Tensor]:
        """One optimizer step: ``Train.accumulate_steps`` micro-steps (forward under AMP,
        backward, gradient sync on the last), the update, the LR schedule. Returns each named
        loss's mean over the micro-steps as a detached tensor, still on the device (reading it
        back is a sync). ``fit`` runs it; ``tools/benchmark.py distill`` times it."""
        train = self.train
        totals: Dict[str, paddle.Tensor] = {}
        for micro in range(train.accumulate_steps):
            last = micro == train.accumulate_steps - 1
            no_sync = self.layer.no_sync() if self.wrapped and not last else contextlib.nullcontext()
            with no_sync:
                with runtime.autocast(self.amp):
                    losses = micro_step()
                loss = paddle.add_n(list(losses.values())) / train.accumulate_steps
                (self.scaler.scale(loss) if self.scaler else loss).backward()
            add_into(totals, {name: value.detach() / train.accumulate_steps for name, value in losses.items()})
        if self.all_reduce:
            fused_allreduce_gradients(list(self.layer.parameters()), None)
        if self.scaler:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.clear_grad(set_to_zero=self.grads_to_zero)
        self.scheduler.step()
        return totals

    def fit(self, micro_step: Callable[[], Dict[str, paddle.Tensor]],
            after_step: Optional[Callable[[int], Dict[str, float]]] = None, banner: str = "") -> None:
        """The loop. ``after_step(step)`` may return extra scalars to log (e.g. dev scores).

        The losses stay on the device: each step adds its losses (the mean over its micro-steps,
        detached) to running totals, which are read back (``read_scalars``, one device sync)
        only when a line is logged: every ``Train.log_every`` steps, at the last step, and when
        ``after_step`` returned scalars. Each logged ``loss``/``loss_<name>`` is the mean of the
        per-step losses over the steps since the previous log line; the progress bar shows the
        last logged values."""
        train = self.train
        monitor = TrainMonitor(self.output_dir, train.max_steps, self.step, enabled=self.rt.is_main, desc=self.desc)
        if self.resumed_from is not None:
            monitor.write(f"resumed from {self.resumed_from} at step {self.step}")
        if banner:
            monitor.write(banner)
        self.model.train()
        window_start, window_steps = time.time(), 0
        window_totals: Dict[str, paddle.Tensor] = {}  # per-step losses summed since the last log, on the device
        shown: Dict[str, float] = {}  # the last logged losses, for the progress bar
        try:
            while self.step < train.max_steps:
                add_into(window_totals, self.train_step(micro_step))
                self.step += 1
                window_steps += 1
                self.state["tokens"] += self.tokens_per_step
                now = time.time()
                speed = window_steps * self.tokens_per_step / max(now - window_start, 1e-9)
                extra = after_step(self.step) if after_step else None
                if self.step % train.log_every == 0 or self.step == train.max_steps or extra:
                    means = {k: v / window_steps for k, v in read_scalars(window_totals).items()}
                    shown = loss_scalars(means)
                    self.state["elapsed"] += now - window_start
                    monitor.log(self.step, {**shown, **(extra or {}), "lr": self.optimizer.get_lr(),
                                            "tokens_per_second": speed})
                    window_start, window_steps, window_totals = time.time(), 0, {}
                monitor.step(self.step, speed, shown)
                checkpoint.crash_point("step", self.step, self.rt.rank)  # test-only, see its docstring
                if self.step % train.save_every == 0 or self.step == train.max_steps:
                    self.save()
        finally:
            monitor.close()

    def check_ranks_in_sync(self, data_fingerprint: float) -> None:
        """All ranks must end with identical weights (and should have read different data);
        writes ``data_parallel_check.json`` and fails if the weights differ."""
        if not self.rt.distributed:
            return
        import paddle.distributed as dist

        mine = paddle.to_tensor([parameters_fingerprint(self.model), data_fingerprint], dtype="float64")
        gathered = []
        dist.all_gather(gathered, mine)
        rows = [t.numpy().tolist() for t in gathered]
        if self.rt.is_main:
            report = {"weights": [r[0] for r in rows], "data": [r[1] for r in rows]}
            (self.output_dir / "data_parallel_check.json").write_text(json.dumps(report, indent=1))
            if len({round(w, 6) for w in report["weights"]}) != 1:
                raise RuntimeError(f"data-parallel ranks ended with different weights: {report['weights']}")

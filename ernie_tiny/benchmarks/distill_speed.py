"""Distillation training-step speed: ours vs PaddleNLP's ``to_distill`` + ``calc_minilm_loss``.

Both sides train the same random-weight student against the same random-weight teacher on
the same batches (random token ids, no padding) and time one full training step: teacher
forward (eval mode, no gradients), student forward (train mode), Q-Q/K-K/V-V relation loss,
backward, AdamW step.

* ours: the step of ``ernie_tiny.distill.recipe`` (its ``micro_step`` inside
  ``ernie_tiny.training.Trainer.fit``) - ``QKVExtractor`` (runs the teacher and the student
  only up to the distilled layer's Q/K/V projections) and ``relation_losses``.
* paddlenlp: PaddleNLP's MiniLMv2 example - ``to_distill(model, return_qkv=True,
  layer_index=i)`` on teacher and student, full forwards, ``model.outputs.q/k/v``, and
  ``calc_minilm_loss`` with ``KLDivLoss(reduction='sum')`` for Q, K and V, summed and divided
  by relation heads x sequence length x batch.

Both use the trainer's optimizer (``ernie_tiny.training.build_optimizer``: AdamW, linear
warm-up/decay, global-norm clipping, as the PaddleNLP example also sets up) with the default
``Optimizer`` settings. Each side runs in its own subprocess
(``to_distill`` patches Paddle's transformer classes globally); the two take turns step by
step (alternating which goes first), so a change in background load affects both alike.
Reported: the median step time over ``--steps`` timed steps after ``--warmup`` untimed ones,
and the median time of the teacher forward alone (timed the same way, after all steps).
Before timing, each side computes the loss once with the student in eval mode (no dropout):
the two must agree, a guard that both do the same work on the same weights.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

IMPLEMENTATIONS = ("ours", "paddlenlp")
PAD_TOKEN_ID = 0
SEED = 1234
_PROGRESS = "[bench] "
_REPLY = "[bench-reply] "
_SETTLE_SECONDS = 0.3
_ROOT = Path(__file__).resolve().parents[2]

# (flag, default, help); the flag's dest is the option name
OPTIONS = (
    ("teacher-layers", 12, "teacher encoder layers"),
    ("teacher-hidden", 768, "teacher hidden size"),
    ("teacher-heads", 12, "teacher attention heads"),
    ("teacher-intermediate", 3072, "teacher feed-forward size"),
    ("teacher-layer", 10, "0-based teacher layer whose Q/K/V are distilled (negative: from the end)"),
    ("student-layers", 4, "student encoder layers (its last layer is distilled)"),
    ("student-hidden", 312, "student hidden size"),
    ("student-heads", 12, "student attention heads"),
    ("student-intermediate", 1248, "student feed-forward size"),
    ("vocab", 40000, "vocabulary size of both models"),
    ("relation-heads", 24, "MiniLMv2 relation heads (must divide both hidden sizes)"),
    ("batch", 8, "sequences per step"),
    ("seq", 128, "tokens per sequence"),
    ("steps", 5, "timed steps (the median is reported)"),
    ("warmup", 1, "untimed steps before timing"),
    ("threads", 0, "CPU threads per run; 0 = all available cores"),
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    for flag, default, help_text in OPTIONS:
        parser.add_argument(f"--{flag}", type=int, default=default, help=f"{help_text} (default {default})")
    parser.add_argument("--output", metavar="FILE.md", help="also write the Markdown report here")
    parser.add_argument("--json", metavar="FILE.json", help="also write the raw measurements here")


def options_of(args: argparse.Namespace) -> dict:
    return {flag.replace("-", "_"): getattr(args, flag.replace("-", "_")) for flag, _, _ in OPTIONS}


def check_options(o: dict):
    """Problems with the sizes, as (flag, message)."""
    for name in o:
        if name not in ("teacher_layer", "threads", "warmup") and o[name] < 1:
            yield name, "must be at least 1"
    if o["warmup"] < 0:
        yield "warmup", "must be at least 0"
    if o["threads"] < 0:
        yield "threads", "must be at least 0 (0 = all available cores)"
    for role in ("teacher", "student"):
        if o[f"{role}_hidden"] % max(o[f"{role}_heads"], 1):
            yield f"{role}_heads", f"{o[f'{role}_heads']} does not divide --{role}-hidden {o[f'{role}_hidden']}"
        if o[f"{role}_hidden"] % max(o["relation_heads"], 1):
            yield "relation_heads", f"{o['relation_heads']} does not divide --{role}-hidden {o[f'{role}_hidden']}"
    n = o["teacher_layers"]
    if not -n <= o["teacher_layer"] < n:
        yield "teacher_layer", f"{o['teacher_layer']} is outside the teacher's {n} layers (0..{n - 1}, or negative)"
    if o["vocab"] < 2:
        yield "vocab", "must be at least 2 (token 0 is padding)"
    if o["seq"] > 2048:
        yield "seq", "must be at most 2048 (the models' max_position_embeddings)"


# ---------------------------------------------------------------- parent process (no Paddle)

def main(args: argparse.Namespace) -> int:
    options = options_of(args)
    problems = list(check_options(options))
    if problems:
        for name, message in problems:
            print(f"--{name.replace('_', '-')}: {message}", file=sys.stderr)
        return 2
    started = time.perf_counter()
    results = run(options)
    wall = time.perf_counter() - started
    report = format_report(options, results, wall)
    print(report)
    if args.output:
        Path(args.output).write_text(report, encoding="utf-8")
    if args.json:
        Path(args.json).write_text(json.dumps({"options": options, "results": results, "wall_seconds": wall},
                                              indent=1), encoding="utf-8")
    return 0


def run(options: dict) -> dict:
    """Measure both implementations, each in its own subprocess, step by step in turns."""
    load_before = _load_average()
    children = {impl: _Child(impl, options) for impl in IMPLEMENTATIONS}
    try:
        results = {impl: child.wait_ready() for impl, child in children.items()}
        for impl in IMPLEMENTATIONS:
            _note(f"{impl}: loss check {results[impl]['check_loss']:.6g}")
            results[impl].update(step_times=[], step_cpu_times=[], losses=[], teacher_forward_times=[])
        rounds = options["warmup"] + options["steps"]
        for what in ("step", "teacher"):
            for i in range(rounds):
                # alternate who goes first, so that a change in background load hits both alike
                for impl in IMPLEMENTATIONS[:: 1 if i % 2 == 0 else -1]:
                    # the other process's OpenMP threads spin for a while after its request
                    # (Intel OpenMP: KMP_BLOCKTIME, 200 ms); let them go idle first
                    time.sleep(_SETTLE_SECONDS)
                    reply = children[impl].ask(what)
                    timed = i >= options["warmup"]
                    r = results[impl]
                    if what == "step":
                        r["losses"].append(reply["loss"])
                        _note(f"{impl}: {'step' if timed else 'warm-up step'} {i + 1}/{rounds}: "
                              f"{reply['seconds']:.3f} s, loss {reply['loss']:.4f}")
                    if timed:
                        r["step_times" if what == "step" else "teacher_forward_times"].append(reply["seconds"])
                        if what == "step":
                            r["step_cpu_times"].append(reply["cpu_seconds"])
        for impl, child in children.items():
            child.close()
    finally:
        for child in children.values():
            child.kill()
    tokens = options["batch"] * options["seq"]
    for impl, r in results.items():
        r["step_seconds"] = statistics.median(r["step_times"])
        r["tokens_per_second"] = tokens / r["step_seconds"]
        r["teacher_forward_seconds"] = statistics.median(r["teacher_forward_times"])
        r["step_cpu_seconds"] = statistics.median(r["step_cpu_times"])
        _note(f"{impl}: median {r['step_seconds']:.3f} s/step, teacher forward {r['teacher_forward_seconds']:.3f} s")
        r["load_average"] = [load_before, _load_average()]
    return results


def _load_average():
    return round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None


def _note(message: str) -> None:
    print(f"{_PROGRESS}{message}", file=sys.stderr, flush=True)


class _Child:
    """One implementation in a subprocess: it builds its models, then runs one step or one
    teacher forward per request (a line on its stdin) and answers with a ``_REPLY`` line."""

    def __init__(self, impl: str, options: dict):
        self.impl = impl
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(_ROOT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
        env.pop("OMP_NUM_THREADS", None)  # the child sets it from --threads before importing Paddle
        env.pop("MKL_NUM_THREADS", None)
        env.setdefault("PYTHONWARNINGS", "ignore")
        command = [sys.executable, "-m", "ernie_tiny.benchmarks.distill_speed", "--impl", impl,
                   "--options", json.dumps(options)]
        _note(f"{impl}: starting")
        self.output = []
        self.proc = subprocess.Popen(command, env=env, cwd=str(_ROOT), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, errors="replace", bufsize=1)

    def _reply(self) -> dict:
        for line in self.proc.stdout:
            if line.startswith(_REPLY):
                return json.loads(line[len(_REPLY):])
            self.output.append(line)
        self.proc.wait()
        raise RuntimeError(f"the {self.impl} benchmark failed (exit code {self.proc.returncode}):\n"
                           + "".join(self.output[-60:]))

    def wait_ready(self) -> dict:
        return self._reply()

    def ask(self, what: str) -> dict:
        self.proc.stdin.write(what + "\n")
        self.proc.stdin.flush()
        return self._reply()

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.stdout.read()
        if self.proc.wait(timeout=60) != 0:
            raise RuntimeError(f"the {self.impl} benchmark exited with code {self.proc.returncode}")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def format_report(options: dict, results: dict, wall_seconds: float | None = None) -> str:
    o = options
    tokens = o["batch"] * o["seq"]
    teacher_layer = o["teacher_layer"] % o["teacher_layers"]
    first = results[IMPLEMENTATIONS[0]]
    lines = [
        "## Distillation training step: ours vs PaddleNLP `to_distill` + `calc_minilm_loss`",
        "",
        f"Teacher {o['teacher_layers']} layers, hidden {o['teacher_hidden']}, {o['teacher_heads']} heads, "
        f"FFN {o['teacher_intermediate']}, distilled layer {teacher_layer} (0-based); "
        f"student {o['student_layers']} layers, hidden {o['student_hidden']}, {o['student_heads']} heads, "
        f"FFN {o['student_intermediate']}, last layer distilled; vocabulary {o['vocab']}; "
        f"{o['relation_heads']} relation heads. Random weights; batch {o['batch']} x {o['seq']} tokens "
        f"= {tokens} tokens/step, no padding. Median of {o['steps']} timed steps after {o['warmup']} warm-up.",
        "",
        "| implementation | s/step | tokens/s | teacher forward s |",
        "|---|---:|---:|---:|",
    ]
    for impl in IMPLEMENTATIONS:
        r = results[impl]
        lines.append(f"| {impl} | {r['step_seconds']:.3f} | {r['tokens_per_second']:.1f} "
                     f"| {r['teacher_forward_seconds']:.3f} |")
    ours, base = results["ours"], results["paddlenlp"]
    ratio = ours["tokens_per_second"] / base["tokens_per_second"]
    loss_diff = abs(ours["check_loss"] - base["check_loss"]) / max(abs(base["check_loss"]), 1e-12)
    same_weights = ours["weights_fingerprint"] == base["weights_fingerprint"]
    lines += [
        "",
        f"Speed ratio ours/paddlenlp: {ratio:.2f}x (tokens/s). Teacher forward time ours/paddlenlp: "
        f"{ours['teacher_forward_seconds'] / base['teacher_forward_seconds']:.2f}. CPU time per step (all "
        f"threads, median; less sensitive to other load on the machine): ours {ours['step_cpu_seconds']:.2f} s, "
        f"paddlenlp {base['step_cpu_seconds']:.2f} s, ratio paddlenlp/ours "
        f"{base['step_cpu_seconds'] / ours['step_cpu_seconds']:.2f}.",
        "",
        f"Loss check (same weights{'' if same_weights else ' NOT CONFIRMED: fingerprints differ'}, same batch, "
        f"student in eval mode): ours {ours['check_loss']:.6g}, paddlenlp {base['check_loss']:.6g} "
        f"(relative difference {loss_diff:.1e}).",
        "",
        f"Machine: {os.cpu_count()} CPUs ({_available_cores()} available), {first['threads']} threads, "
        f"Paddle {first['paddle_version']}, PaddleNLP {first['paddlenlp_version']}, "
        f"Python {platform.python_version()}, {platform.machine()} {platform.processor() or ''}".rstrip()
        + (f"; wall time {wall_seconds:.0f} s" if wall_seconds is not None else "")
        + (f"; 1-minute load average {first['load_average'][0]} before, {first['load_average'][1]} after "
           f"(the benchmark itself adds about {first['threads']})." if first.get("load_average") else "."),
        "",
    ]
    return "\n".join(lines)


def _available_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


# ---------------------------------------------------------------- child process (one implementation)

class _Vocabulary:
    """What ``recipe.build_models`` reads from a tokenizer: its size and padding id."""

    def __init__(self, size: int):
        self.size, self.pad_token_id = size, PAD_TOKEN_ID

    def __len__(self) -> int:
        return self.size


def distill_config(o: dict):
    from ernie_tiny.config import validate_config
    from ernie_tiny.distill.schema import DistillConfig

    def model(role: str) -> dict:
        return {"num_layers": o[f"{role}_layers"], "hidden_size": o[f"{role}_hidden"],
                "num_heads": o[f"{role}_heads"], "intermediate_size": o[f"{role}_intermediate"],
                "vocab_size": o["vocab"]}

    return validate_config(DistillConfig, {
        "Global": {"device": "cpu", "seed": SEED, "num_threads": o["threads"]},
        "Tokenizer": {"source": "corpus"},
        "Teacher": model("teacher"),
        "Student": model("student"),
        "Distill": {"teacher_layer": o["teacher_layer"], "student_layer": -1, "relation_heads": o["relation_heads"]},
        "Train": {"batch_size": o["batch"], "max_steps": o["warmup"] + o["steps"] + 1},
    }, "<benchmark options>")


def prepare(impl: str, o: dict):
    """Build one implementation and check its loss once; returns (facts about it, a function
    that runs and times the next training step or teacher forward on request)."""
    import numpy as np
    import paddle
    import paddlenlp

    from ernie_tiny import runtime
    from ernie_tiny.distill.recipe import RELATIONS, build_models
    from ernie_tiny.training import build_optimizer

    paddle.set_device("cpu")
    config = distill_config(o)
    runtime.seed_everything(SEED)
    teacher, student = build_models(config, _Vocabulary(o["vocab"]))
    fingerprint = sum(float(np.abs(p.numpy().astype(np.float64)).sum())
                      for model in (teacher, student) for p in model.parameters())
    rng = np.random.RandomState(SEED)
    batches = [rng.randint(PAD_TOKEN_ID + 1, o["vocab"], size=(o["batch"], o["seq"])).astype("int64")
               for _ in range(o["warmup"] + o["steps"])]
    R = config.Distill.relation_heads

    if impl == "ours":
        from ernie_tiny.distill.loss import relation_losses
        from ernie_tiny.modeling import QKVExtractor

        teacher_qkv = QKVExtractor(teacher, config.Distill.teacher_layer)
        student_qkv = QKVExtractor(student, config.Distill.student_layer)
        optimizer, scheduler = build_optimizer(config.Optimizer, config.Train.max_steps, student_qkv)

        def teacher_forward(ids, mask):
            with paddle.no_grad():
                return teacher_qkv(ids, mask)

        def loss_terms(ids):
            # recipe.run's micro_step: packed sequences have no padding
            mask = paddle.ones(ids.shape, dtype="int64")
            t_qkv = teacher_forward(ids, mask)
            s_qkv = student_qkv(ids, mask)
            return dict(zip(RELATIONS, relation_losses(s_qkv, t_qkv, mask, R)))

        def train_step(batch):
            # Trainer.fit with one micro-step per step, in float32
            losses = loss_terms(paddle.to_tensor(batch))
            loss = paddle.add_n(list(losses.values()))
            loss.backward()
            value = sum(float(x) for x in losses.values())
            optimizer.step()
            optimizer.clear_grad()
            scheduler.step()
            return value

        def check_loss(batch):
            return sum(float(x) for x in loss_terms(paddle.to_tensor(batch)).values())

        def time_teacher(batch):
            ids = paddle.to_tensor(batch)
            teacher_forward(ids, paddle.ones(ids.shape, dtype="int64"))
            return None

    elif impl == "paddlenlp":
        from paddlenlp.transformers.distill_utils import calc_minilm_loss, to_distill

        teacher = to_distill(teacher, return_qkv=True, layer_index=config.Distill.teacher_layer % o["teacher_layers"])
        student = to_distill(student, return_qkv=True, layer_index=config.Distill.student_layer % o["student_layers"])
        optimizer, scheduler = build_optimizer(config.Optimizer, config.Train.max_steps, student)
        kl_loss_fct = paddle.nn.KLDivLoss(reduction="sum")

        def loss_terms(ids):
            # as in PaddleNLP's MiniLMv2 example (examples/model_compression/minilmv2/general_distill.py)
            attn_mask = paddle.unsqueeze((ids == PAD_TOKEN_ID).astype(paddle.get_default_dtype()) * -1e9, axis=[1, 2])
            student(ids)
            with paddle.no_grad():
                teacher(ids)
            t, s = teacher.outputs, student.outputs
            return [calc_minilm_loss(kl_loss_fct, s.q, t.q, attn_mask, R),
                    calc_minilm_loss(kl_loss_fct, s.k, t.k, attn_mask, R),
                    calc_minilm_loss(kl_loss_fct, s.v, t.v, attn_mask, R)]

        def total(ids):
            batch_size, seq_len = ids.shape
            return paddle.add_n(loss_terms(ids)) / (R * seq_len * batch_size)

        def train_step(batch):
            loss = total(paddle.to_tensor(batch))
            loss.backward()
            value = float(loss)
            optimizer.step()
            optimizer.clear_grad()
            scheduler.step()
            return value

        def check_loss(batch):
            return float(total(paddle.to_tensor(batch)))

        def time_teacher(batch):
            with paddle.no_grad():
                teacher(paddle.to_tensor(batch))
            return None

    else:
        raise ValueError(f"unknown implementation {impl!r}")

    # the correctness guard: the loss on the first batch, without dropout, before any update
    student.eval()
    with paddle.no_grad():
        reference_loss = check_loss(batches[0])
    student.train()

    def timed(function, batch):
        start, cpu_start = time.perf_counter(), time.process_time()
        value = function(batch)
        return {"seconds": time.perf_counter() - start, "cpu_seconds": time.process_time() - cpu_start,
                "loss": value}

    info = {
        "impl": impl,
        "check_loss": reference_loss,
        "weights_fingerprint": fingerprint,
        "threads": int(os.environ["OMP_NUM_THREADS"]),
        "paddle_version": paddle.__version__,
        "paddlenlp_version": paddlenlp.__version__,
    }
    counters = {"step": 0, "teacher": 0}
    actions = {"step": train_step, "teacher": time_teacher}

    def serve(what: str) -> dict:
        i = counters[what]
        counters[what] += 1
        return timed(actions[what], batches[i % len(batches)])

    return info, serve


def _child_main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="one side of the distill benchmark (run by the parent)")
    parser.add_argument("--impl", choices=IMPLEMENTATIONS, required=True)
    parser.add_argument("--options", required=True, help="the benchmark options as JSON")
    args = parser.parse_args(argv)
    options = json.loads(args.options)
    from ernie_tiny.runtime import configure_threads

    configure_threads(options["threads"])  # before Paddle is imported

    def reply(message: dict) -> None:
        sys.stdout.write(_REPLY + json.dumps(message) + "\n")
        sys.stdout.flush()

    info, serve = prepare(args.impl, options)
    reply(info)
    for line in sys.stdin:  # one request per line: "step" or "teacher"; end of input: done
        reply(serve(line.strip()))
    return 0


if __name__ == "__main__":
    sys.exit(_child_main())

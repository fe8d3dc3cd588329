"""Distillation training-step speed, measured on the recipe's own step code.

1. **Ours vs PaddleNLP**: one full training step (teacher forward without gradients, student
   forward, Q-Q/K-K/V-V relation loss, backward, AdamW step) on the same random weights and
   batches (random token ids, no padding). Ours is the recipe's step (``Trainer.train_step`` over
   ``distill.step.make_micro_step``, with the compiled teacher of ``Distill.teacher_engine:
   auto``); PaddleNLP's is its MiniLMv2 example (``to_distill`` + ``calc_minilm_loss``). Both
   compute the loss once on the first batch with the student in eval mode: they must agree
   (same weights, same work). Also timed: the teacher forward alone, eager and compiled.
2. **Several students, one teacher pass** (``--students``, default nano, micro, mini: the ERNIE
   3.0 Tiny v2 shapes): a step of all students in one run, each student alone (a separate run's
   step: teacher + that student) and each student's own step given the teacher's Q/K/V. With
   ``--paper-teacher`` also for the paper's teacher shape (20L-1024H-16A, layer 15, R=8).

Each side runs in its own subprocess (``to_distill`` patches Paddle's classes globally; see
``distill_sides``); the sides take turns request by request, alternating which goes first, and
wait ``_SETTLE_SECONDS`` before each request so the other's OpenMP threads are idle. Reported:
medians over ``--steps`` timed requests after ``--warmup`` untimed ones; FLOPs per step from the
model sizes and the share of the machine's measured 2048^3 matmul rate the step reaches.
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

from ernie_tiny.benchmarks.distill_sides import REPLY, STUDENT_SHAPES
from ernie_tiny.deploy.backend_timing import cpu_features
from ernie_tiny.deploy.inputs import output_file
from ernie_tiny.runtime import available_cores

_PROGRESS = "[bench] "
_SETTLE_SECONDS = 0.3
_ROOT = Path(__file__).resolve().parents[2]
PAPER_TEACHER = {"teacher_layers": 20, "teacher_hidden": 1024, "teacher_heads": 16, "teacher_intermediate": 4096,
                 "teacher_layer": 15, "relation_heads": 8}
BUDGET = 1.05  # several students may cost at most the teacher + their own steps, +5%

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
    parser.add_argument("--students", default="nano,micro,mini",
                        help=f"students of the one-teacher-pass comparison, from {', '.join(STUDENT_SHAPES)} "
                             "('' = skip it; default nano,micro,mini)")
    parser.add_argument("--paper-teacher", action="store_true",
                        help="also run the comparison with the paper's teacher shape (20L-1024H-16A, layer 15, R=8)")
    parser.add_argument("--output", metavar="FILE.md", type=output_file, help="also write the Markdown report here")
    parser.add_argument("--json", metavar="FILE.json", type=output_file, help="also write the raw measurements here")


def options_of(args: argparse.Namespace) -> dict:
    options = {flag.replace("-", "_"): getattr(args, flag.replace("-", "_")) for flag, _, _ in OPTIONS}
    options["students"] = [name.strip() for name in args.students.split(",") if name.strip()]
    options["paper_teacher"] = bool(args.paper_teacher)
    return options


def check_options(o: dict):
    """Problems with the sizes, as (flag, message)."""
    for name, value in o.items():
        if isinstance(value, int) and not isinstance(value, bool) and name not in ("teacher_layer", "threads", "warmup") \
                and value < 1:
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
    for name in o["students"]:
        if name not in STUDENT_SHAPES:
            yield "students", f"{name!r} is not one of {', '.join(STUDENT_SHAPES)}"
        elif STUDENT_SHAPES[name][1] % max(o["relation_heads"], 1):
            yield "students", f"--relation-heads {o['relation_heads']} does not divide {name}'s hidden size " \
                              f"{STUDENT_SHAPES[name][1]}"


# ---------------------------------------------------------------- FLOPs from the sizes

def encoder_flops(tokens: int, seq: int, hidden: int, ffn: int, layers: int) -> float:
    """Forward FLOPs of ``layers`` post-norm transformer layers (matmuls only)."""
    dense = 2 * tokens * (4 * hidden * hidden + 2 * hidden * ffn)
    attention = 2 * 2 * tokens * seq * hidden  # Q K^T and P V
    return layers * (dense + attention)


def relation_flops(tokens: int, seq: int, hidden: int) -> float:
    """Forward FLOPs of one side's three relation score products."""
    return 3 * 2 * tokens * seq * hidden


def step_flops(o: dict, student=None) -> dict:
    """FLOPs of one of our steps: the truncated teacher forward (layers below the distilled one
    and its Q/K/V), and the student's forward up to its last layer's Q/K/V, relation loss and
    backward (about twice the forward)."""
    tokens, seq = o["batch"] * o["seq"], o["seq"]
    th, tf = o["teacher_hidden"], o["teacher_intermediate"]
    below = o["teacher_layer"] % o["teacher_layers"]
    teacher = encoder_flops(tokens, seq, th, tf, below) + 2 * tokens * 3 * th * th + relation_flops(tokens, seq, th)
    layers, sh, _, sf = student or (o["student_layers"], o["student_hidden"], o["student_heads"],
                                    o["student_intermediate"])
    student_forward = (encoder_flops(tokens, seq, sh, sf, layers - 1) + 2 * tokens * 3 * sh * sh
                       + relation_flops(tokens, seq, sh))
    return {"teacher": teacher, "student": 3 * student_forward, "total": teacher + 3 * student_forward}


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
    """Every measurement: ours vs PaddleNLP, then the students comparison(s)."""
    results = {"load_average": [_load_average()], "cpu": cpu_features()}
    results["versus"] = _measure(options, {"ours": ["step", "teacher", "teacher_eager"],
                                           "paddlenlp": ["step", "teacher"]})
    if options["students"]:
        shapes = {"default": {}} | ({"paper": PAPER_TEACHER} if options["paper_teacher"] else {})
        results["students"] = {}
        for label, teacher in shapes.items():
            o = dict(options, **teacher)
            names = options["students"]
            requests = ["multi", "teacher"] + [f"single:{n}" for n in names] + [f"student:{n}" for n in names]
            results["students"][label] = {"options": o, **_measure(o, {"multi": requests})["multi"]}
    results["load_average"].append(_load_average())
    return results


def _measure(options: dict, plan: dict) -> dict:
    """Start one subprocess per side of ``plan`` ({side: [requests]}); for each request kind,
    ``warmup + steps`` rounds in which every side that has it answers once, taking turns."""
    children = {side: _Child(side, options) for side in plan}
    try:
        results = {side: child.wait_ready() for side, child in children.items()}
        for side in plan:
            _note(f"{side}: loss check {results[side]['check_loss']:.6g}; {results[side].get('engine', '')}")
            results[side]["times"] = {}
        kinds = list(dict.fromkeys(kind for requests in plan.values() for kind in requests))
        rounds = options["warmup"] + options["steps"]
        for kind in kinds:
            sides = [side for side in plan if kind in plan[side]]
            for i in range(rounds):
                for side in sides[:: 1 if i % 2 == 0 else -1]:  # alternate who goes first
                    time.sleep(_SETTLE_SECONDS)  # let the other side's OpenMP threads go idle
                    reply = children[side].ask(kind)
                    timed = i >= options["warmup"]
                    _note(f"{side}: {kind} {'' if timed else '(warm-up) '}{i + 1}/{rounds}: {reply['seconds']:.3f} s")
                    if timed:
                        results[side]["times"].setdefault(kind, []).append(reply["seconds"])
        for child in children.values():
            child.close()
    finally:
        for child in children.values():
            child.kill()
    for side in plan:
        results[side]["median"] = {kind: statistics.median(t) for kind, t in results[side]["times"].items()}
    return results


def _load_average():
    return round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None


def _note(message: str) -> None:
    print(f"{_PROGRESS}{message}", file=sys.stderr, flush=True)


class _Child:
    """One side in a subprocess (``distill_sides``): it builds its models, then answers one
    request per line on its stdin with a ``REPLY`` line."""

    def __init__(self, side: str, options: dict):
        self.side = side
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(_ROOT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
        env.pop("OMP_NUM_THREADS", None)  # the child sets it from --threads before importing Paddle
        env.pop("MKL_NUM_THREADS", None)
        env.setdefault("PYTHONWARNINGS", "ignore")
        command = [sys.executable, "-m", "ernie_tiny.benchmarks.distill_sides", "--side", side,
                   "--options", json.dumps(options)]
        _note(f"{side}: starting")
        self.output = []
        self.proc = subprocess.Popen(command, env=env, cwd=str(_ROOT), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, errors="replace", bufsize=1)

    def _reply(self) -> dict:
        for line in self.proc.stdout:
            if line.startswith(REPLY):
                return json.loads(line[len(REPLY):])
            self.output.append(line)
        self.proc.wait()
        raise RuntimeError(f"the {self.side} benchmark side failed (exit code {self.proc.returncode}):\n"
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
            raise RuntimeError(f"the {self.side} benchmark side exited with code {self.proc.returncode}")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


# ---------------------------------------------------------------- the report

def _sizes(o: dict) -> str:
    return (f"teacher {o['teacher_layers']}L-{o['teacher_hidden']}H-{o['teacher_heads']}A (FFN "
            f"{o['teacher_intermediate']}), distilled layer {o['teacher_layer'] % o['teacher_layers']} (0-based); "
            f"{o['relation_heads']} relation heads; vocabulary {o['vocab']}; batch {o['batch']} x {o['seq']} tokens")


def format_report(options: dict, results: dict, wall_seconds: float | None = None) -> str:
    o = options
    tokens = o["batch"] * o["seq"]
    ours, base = results["versus"]["ours"], results["versus"]["paddlenlp"]
    om, bm = ours["median"], base["median"]
    ratio = bm["step"] / om["step"]
    flops = step_flops(o)
    rates = ours["matmul_gflops"]
    rate = max(rates.values())
    loss_diff = abs(ours["check_loss"] - base["check_loss"]) / max(abs(base["check_loss"]), 1e-12)
    same_weights = ours["weights_fingerprint"] == base["weights_fingerprint"]
    lines = [
        "## Distillation training step: ours vs PaddleNLP `to_distill` + `calc_minilm_loss`",
        "",
        f"{_sizes(o)}; student {o['student_layers']}L-{o['student_hidden']}H-{o['student_heads']}A (FFN "
        f"{o['student_intermediate']}), last layer distilled. Random weights, no padding. Median of {o['steps']} "
        f"timed steps after {o['warmup']} warm-up, the two sides taking turns.",
        "",
        "| implementation | s/step | tokens/s | teacher forward s |",
        "|---|---:|---:|---:|",
        f"| ours | {om['step']:.3f} | {tokens / om['step']:.1f} | {om['teacher']:.3f} |",
        f"| paddlenlp | {bm['step']:.3f} | {tokens / bm['step']:.1f} | {bm['teacher']:.3f} |",
        "",
        f"**Speed ratio ours/paddlenlp: {ratio:.2f}x** (tokens/s). Our teacher: {ours['engine']}.",
        "",
        f"Teacher forward alone (ours, up to the distilled layer's Q/K/V): eager {om['teacher_eager']:.3f} s, "
        f"compiled {om['teacher']:.3f} s ({om['teacher_eager'] / om['teacher']:.2f}x faster).",
        "",
        f"FLOPs per step (matmuls, from the sizes): ours {flops['total'] / 1e9:.1f} GFLOP (teacher "
        f"{flops['teacher'] / 1e9:.1f}, student forward + backward {flops['student'] / 1e9:.1f}); "
        f"{flops['total'] / om['step'] / 1e9:.1f} GFLOP/s = {100 * flops['total'] / om['step'] / 1e9 / rate:.0f}% of "
        f"this machine's measured 2048^3 float32 matmul rate ({rate:.1f} GFLOP/s, the faster of Paddle Inference + "
        f"oneDNN {rates['inference_onednn']:.1f} and Paddle eager {rates['paddle_eager']:.1f}); the teacher "
        f"forward alone reaches {flops['teacher'] / om['teacher'] / 1e9:.1f} GFLOP/s.",
        "",
        f"Loss check (same weights{'' if same_weights else ' NOT CONFIRMED: fingerprints differ'}, same batch, "
        f"student in eval mode): ours {ours['check_loss']:.6g}, paddlenlp {base['check_loss']:.6g} "
        f"(relative difference {loss_diff:.1e}).",
        "",
    ]
    for label, r in results.get("students", {}).items():
        lines += _students_section(label, r)
    cpu = results.get("cpu", {})
    load = results.get("load_average", [None, None])
    lines += [
        f"Machine: {cpu.get('model') or platform.machine()} ({', '.join(cpu.get('instruction_sets', [])) or 'no AVX2'}), "
        f"{os.cpu_count()} CPUs ({available_cores()} available), {ours['threads']} threads, "
        f"Paddle {ours['paddle_version']}, PaddleNLP {ours['paddlenlp_version']}, Python {platform.python_version()}"
        + (f"; wall time {wall_seconds:.0f} s" if wall_seconds is not None else "")
        + (f"; 1-minute load average {load[0]} before, {load[-1]} after." if load[0] is not None else "."),
        "",
    ]
    return "\n".join(lines)


def _students_section(label: str, r: dict) -> list:
    o, m = r["options"], r["median"]
    names = o["students"]
    own = sum(m[f"student:{n}"] for n in names)
    budget = m["teacher"] + own
    separate = sum(m[f"single:{n}"] for n in names)
    verdict = "within" if m["multi"] <= BUDGET * budget else "OVER"
    title = "the paper's teacher shape" if label == "paper" else "the default teacher"
    lines = [
        f"### {len(names)} students from one teacher pass: {title}",
        "",
        f"{_sizes(o)}; students " + ", ".join(
            f"{n} {STUDENT_SHAPES[n][0]}L-{STUDENT_SHAPES[n][1]}H-{STUDENT_SHAPES[n][2]}A" for n in names)
        + f". {r['engine']}.",
        "",
        "| step | s |",
        "|---|---:|",
        f"| teacher forward (compiled) | {m['teacher']:.3f} |",
    ]
    lines += [f"| {n}: its own step (teacher Q/K/V given) | {m[f'student:{n}']:.3f} |" for n in names]
    lines += [f"| {n}: a separate run's step (teacher + {n}) | {m[f'single:{n}']:.3f} |" for n in names]
    lines += [
        f"| **all {len(names)} in one run** | **{m['multi']:.3f}** |",
        "",
        f"One run of {len(names)} students: {m['multi']:.3f} s/step against one teacher forward plus their own steps "
        f"{budget:.3f} s: {m['multi'] / budget:.3f}x ({verdict} the +{100 * (BUDGET - 1):.0f}% budget). Against "
        f"{len(names)} separate runs ({separate:.3f} s): **{m['multi'] / separate:.2f}x**.",
        "",
    ]
    return lines



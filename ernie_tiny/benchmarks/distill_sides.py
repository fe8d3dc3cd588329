"""The measured sides of ``tools/benchmark.py distill``, each run in its own subprocess.

* ``ours``: the recipe's own step: ``distill.recipe.build_models`` / ``build_students`` /
  ``build_teacher`` (the compiled teacher, ``Distill.teacher_engine: auto``), the micro-step of
  ``distill.step.make_micro_step`` and ``training.Trainer.train_step`` (AdamW, warm-up/decay,
  clipping), so a change to the recipe is what gets measured.
* ``paddlenlp``: PaddleNLP's MiniLMv2 example: ``to_distill(model, return_qkv=True,
  layer_index=i)`` on teacher and student, full forwards, ``model.outputs.q/k/v``, and
  ``calc_minilm_loss`` with ``KLDivLoss(reduction='sum')`` for Q, K and V, summed and divided by
  relation heads x sequence length x batch; the same optimizer (``training.build_optimizer``).
* ``multi``: several students learning from one teacher pass (``Students:``), beside each of
  them alone (a separate run's step: teacher + that student) and each student's own step given
  the teacher's Q/K/V.

A side answers one request per line on stdin with one ``[bench-reply] {json}`` line.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

PAD_TOKEN_ID = 0
SEED = 1234
REPLY = "[bench-reply] "
SIDES = ("ours", "paddlenlp", "multi")
# ERNIE 3.0 Tiny v2 shapes: (layers, hidden, heads, FFN)
STUDENT_SHAPES = {"nano": (4, 312, 12, 1248), "micro": (4, 384, 12, 1536), "mini": (6, 384, 12, 1536)}


class _Vocabulary:
    """What ``recipe.build_models`` reads from a tokenizer: its size and padding id."""

    def __init__(self, size: int):
        self.size, self.pad_token_id = size, PAD_TOKEN_ID

    def __len__(self) -> int:
        return self.size


def distill_config(o: dict, output_dir: str, students=()):
    """The distillation config of the benchmark's sizes: one ``Student`` from the options, or
    ``Students`` of the named ``STUDENT_SHAPES``."""
    from ernie_tiny.config import validate_config
    from ernie_tiny.distill.schema import DistillConfig

    def sizes(layers, hidden, heads, ffn) -> dict:
        return {"num_layers": layers, "hidden_size": hidden, "num_heads": heads, "intermediate_size": ffn,
                "vocab_size": o["vocab"]}

    data = {
        "Global": {"device": "cpu", "seed": SEED, "num_threads": o["threads"], "output_dir": output_dir},
        "Tokenizer": {"source": "corpus"},
        "Teacher": sizes(o["teacher_layers"], o["teacher_hidden"], o["teacher_heads"], o["teacher_intermediate"]),
        "Distill": {"teacher_layer": o["teacher_layer"], "student_layer": -1, "relation_heads": o["relation_heads"],
                    "teacher_engine": "auto"},
        "Train": {"batch_size": o["batch"], "max_steps": 1000},
    }
    if students:
        data["Students"] = [{"name": name, **sizes(*STUDENT_SHAPES[name])} for name in students]
    else:
        data["Student"] = sizes(o["student_layers"], o["student_hidden"], o["student_heads"], o["student_intermediate"])
    return validate_config(DistillConfig, data, "<benchmark options>")


def matmul_gflops(threads: int, workdir: str) -> dict:
    """The float32 2048^3 matmul rate in this process (GFLOP/s, best of 3), through Paddle's eager
    kernel and through Paddle Inference with oneDNN (the compiled teacher's engine)."""
    import numpy as np
    import paddle
    import paddle.inference as pi
    from paddle.static import InputSpec

    n = 2048
    a = paddle.randn([n, n])

    def best(run) -> float:
        run()
        seconds = float("inf")
        for _ in range(3):
            start = time.perf_counter()
            run()
            seconds = min(seconds, time.perf_counter() - start)
        return 2 * n ** 3 / seconds / 1e9

    rates = {"paddle_eager": best(lambda: paddle.matmul(a, a).numpy())}

    class MatMul(paddle.nn.Layer):
        def forward(self, x):
            return paddle.matmul(x, x)

    path = os.path.join(workdir, "matmul", "model")
    paddle.jit.save(paddle.jit.to_static(MatMul(), input_spec=[InputSpec([n, n], "float32", "x")]), path)
    config = pi.Config(path + ".json", path + ".pdiparams")
    config.disable_glog_info()
    config.enable_mkldnn()
    config.set_cpu_math_library_num_threads(threads)
    predictor = pi.create_predictor(config)
    x = np.random.RandomState(0).standard_normal((n, n)).astype("float32")
    handle = predictor.get_input_handle(predictor.get_input_names()[0])
    output = predictor.get_output_handle(predictor.get_output_names()[0])

    def run_inference():
        handle.copy_from_cpu(x)
        predictor.run()
        output.copy_to_cpu()

    rates["inference_onednn"] = best(run_inference)
    return rates


def _timed(function, *args) -> dict:
    start, cpu_start = time.perf_counter(), time.process_time()
    value = function(*args)
    return {"seconds": time.perf_counter() - start, "cpu_seconds": time.process_time() - cpu_start, "loss": value}


def _total(losses) -> float:
    return float(sum(float(v) for v in losses.values()))


class _Recipe:
    """The recipe's objects for one config: models, the compiled teacher, the trainer and its
    micro-step, fed the benchmark's batches."""

    def __init__(self, config, o: dict, check_ids, shared=None):
        """``shared``: another ``_Recipe`` whose teacher and compiled teacher this one reuses
        (the students of a multi-student comparison learn from one teacher)."""
        import paddle

        from ernie_tiny import runtime
        from ernie_tiny.distill.recipe import build_models, build_students, build_teacher
        from ernie_tiny.distill.step import make_micro_step
        from ernie_tiny.modeling import build_encoder
        from ernie_tiny.training import Trainer

        runtime.seed_everything(SEED)
        self.rt = runtime.Runtime(device="cpu", rank=0, world_size=1)
        if shared is None:
            self.teacher, self.students = build_models(config, _Vocabulary(o["vocab"]))
        else:
            self.teacher = shared.teacher
            self.students = {name: build_encoder(spec, o["vocab"], PAD_TOKEN_ID) for name, spec in config.student_specs()}
        self.trained, self.model, self.heads, groups = build_students(config, self.students)
        out = config.Global.output_dir
        self.trainer = Trainer(self.rt, out, config.Train, config.Optimizer, model=self.model, trained=self.trained,
                               data=None, param_groups=groups)
        os.makedirs(out, exist_ok=True)
        self.engine = (build_teacher(config, self.rt, out, self.teacher, check_ids, self.heads.values())
                       if shared is None else shared.engine)
        self.batch = None
        self.micro_step = make_micro_step(lambda: self.batch, self.engine, self.trainer.layer, self.heads)
        self.paddle = paddle

    def step(self, batch) -> float:
        """One training step, exactly as ``Trainer.fit`` runs it."""
        self.batch = batch
        return _total(self.trainer.train_step(self.micro_step))

    def check_loss(self, batch) -> float:
        from ernie_tiny.distill.step import distill_losses

        self.trained.eval()
        with self.paddle.no_grad():
            value = _total(distill_losses(self.engine, self.trained, self.heads, self.paddle.to_tensor(batch)))
        self.trained.train()
        return value


def prepare(side: str, o: dict, workdir: str):
    """Build one side in ``workdir`` and check its loss once; returns (facts about it, ``serve(request)``)."""
    import numpy as np
    import paddle
    import paddlenlp

    paddle.set_device("cpu")
    rng = np.random.RandomState(SEED)
    batches = [rng.randint(PAD_TOKEN_ID + 1, o["vocab"], size=(o["batch"], o["seq"])).astype("int64")
               for _ in range(o["warmup"] + o["steps"])]
    info = {"side": side, "threads": int(os.environ["OMP_NUM_THREADS"]), "paddle_version": paddle.__version__,
            "paddlenlp_version": paddlenlp.__version__}
    actions = {}

    if side == "ours":
        recipe = _Recipe(distill_config(o, workdir), o, batches[0])
        extractor = recipe.engine  # compiled (or eager, if it could not be built: said in info)
        from ernie_tiny.distill.teacher_engine import eager_engine
        from ernie_tiny.modeling import QKVExtractor

        eager = eager_engine(QKVExtractor(recipe.teacher, o["teacher_layer"]))
        heads = list(recipe.heads.values())
        actions = {"step": recipe.step, "teacher": lambda b: _teacher(extractor, b, heads),
                   "teacher_eager": lambda b: _teacher(eager, b, heads)}
        info.update(check_loss=recipe.check_loss(batches[0]), engine=recipe.engine.describe(),
                    weights_fingerprint=_fingerprint([recipe.teacher, recipe.students[""]]),
                    matmul_gflops=matmul_gflops(info["threads"], workdir))
    elif side == "paddlenlp":
        actions, check, models = _paddlenlp_side(o, workdir, batches)
        info.update(check_loss=check, weights_fingerprint=_fingerprint(models))
    elif side == "multi":
        names = o["students"]
        multi = _Recipe(distill_config(o, os.path.join(workdir, "multi"), names), o, batches[0])
        singles = {name: _Recipe(distill_config(o, os.path.join(workdir, name), [name]), o, batches[0], shared=multi)
                   for name in names}
        actions = {"multi": multi.step, "teacher": lambda b: _teacher(multi.engine, b, list(multi.heads.values()))}
        for name, single in singles.items():
            actions[f"single:{name}"] = single.step
            actions[f"student:{name}"] = _student_alone(single)
        info.update(engine=multi.engine.describe(), check_loss=multi.check_loss(batches[0]))
    else:
        raise ValueError(f"unknown side {side!r}")

    counters = {}

    def serve(request: str) -> dict:
        i = counters[request] = counters.get(request, -1) + 1
        batch = batches[i % len(batches)]
        if request.startswith("student:"):  # the teacher's Q/K/V are computed before the clock starts
            return actions[request](batch)
        return _timed(actions[request], batch)

    return info, serve


def _teacher(engine, batch, relation_heads) -> None:
    """The teacher's side of a step: Q/K/V and the relation distributions the loss takes."""
    import paddle

    ids = paddle.to_tensor(batch)
    qkv, relations = engine.outputs(ids, paddle.ones(ids.shape, dtype="int64"), relation_heads)
    qkv[0].numpy()  # .numpy(): wait for the result


class _FixedTeacher:
    """A teacher whose outputs for the next step were computed already (a student's own step)."""

    def __init__(self, outputs):
        self.fixed = outputs

    def outputs(self, *_):
        return self.fixed


def _student_alone(recipe: _Recipe):
    """A student's own step time: ``Trainer.train_step`` with the teacher's outputs precomputed."""
    import paddle

    from ernie_tiny.distill.step import make_micro_step

    def serve(batch) -> dict:
        ids = paddle.to_tensor(batch)
        teacher = _FixedTeacher(recipe.engine.outputs(ids, paddle.ones(ids.shape, dtype="int64"),
                                                      recipe.heads.values()))
        step = make_micro_step(lambda: batch, teacher, recipe.trainer.layer, recipe.heads)
        return _timed(lambda _: _total(recipe.trainer.train_step(step)), batch)

    return serve


def _fingerprint(models) -> float:
    import numpy as np

    return sum(float(np.abs(p.numpy().astype(np.float64)).sum()) for m in models for p in m.parameters())


def _paddlenlp_side(o: dict, workdir: str, batches):
    import paddle
    from paddlenlp.transformers.distill_utils import calc_minilm_loss, to_distill

    from ernie_tiny import runtime
    from ernie_tiny.distill.recipe import build_models
    from ernie_tiny.training import build_optimizer

    config = distill_config(o, workdir)
    runtime.seed_everything(SEED)
    teacher, students = build_models(config, _Vocabulary(o["vocab"]))
    student = students[""]
    fingerprint_models = [teacher, student]
    R = config.Distill.relation_heads
    teacher = to_distill(teacher, return_qkv=True, layer_index=config.Distill.teacher_layer % o["teacher_layers"])
    student = to_distill(student, return_qkv=True, layer_index=config.Distill.student_layer % o["student_layers"])
    optimizer, scheduler = build_optimizer(config.Optimizer, config.Train.max_steps, student)
    kl_loss_fct = paddle.nn.KLDivLoss(reduction="sum")

    def total(ids):
        # as in PaddleNLP's MiniLMv2 example (examples/model_compression/minilmv2/general_distill.py)
        attn_mask = paddle.unsqueeze((ids == PAD_TOKEN_ID).astype(paddle.get_default_dtype()) * -1e9, axis=[1, 2])
        student(ids)
        with paddle.no_grad():
            teacher(ids)
        t, s = teacher.outputs, student.outputs
        loss = paddle.add_n([calc_minilm_loss(kl_loss_fct, s.q, t.q, attn_mask, R),
                             calc_minilm_loss(kl_loss_fct, s.k, t.k, attn_mask, R),
                             calc_minilm_loss(kl_loss_fct, s.v, t.v, attn_mask, R)])
        batch_size, seq_len = ids.shape
        return loss / (R * seq_len * batch_size)

    def step(batch) -> float:
        loss = total(paddle.to_tensor(batch))
        loss.backward()
        value = float(loss)
        optimizer.step()
        optimizer.clear_grad()
        scheduler.step()
        return value

    def teacher_forward(batch) -> None:
        with paddle.no_grad():
            teacher(paddle.to_tensor(batch))
        teacher.outputs.q.numpy()

    student.eval()
    with paddle.no_grad():
        check = float(total(paddle.to_tensor(batches[0])))
    student.train()
    return {"step": step, "teacher": teacher_forward}, check, fingerprint_models


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="one side of the distill benchmark (run by the parent)")
    parser.add_argument("--side", choices=SIDES, required=True)
    parser.add_argument("--options", required=True, help="the benchmark options as JSON")
    args = parser.parse_args(argv)
    options = json.loads(args.options)
    from ernie_tiny.runtime import configure_threads

    configure_threads(options["threads"])  # before Paddle is imported

    def reply(message: dict) -> None:
        sys.stdout.write(REPLY + json.dumps(message) + "\n")
        sys.stdout.flush()

    with tempfile.TemporaryDirectory(prefix=f"bench-{args.side}-") as workdir:  # removed at the end
        info, serve = prepare(args.side, options, workdir)
        reply(info)
        for line in sys.stdin:  # one request per line; end of input: done
            reply(serve(line.strip()))
    return 0


if __name__ == "__main__":
    sys.exit(main())

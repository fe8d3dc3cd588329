"""The frozen teacher as a compiled inference graph (``Distill.teacher_engine``).

Distillation needs only the teacher's embeddings, the layers below the distilled one and that
layer's Q/K/V projections (``QKVExtractor``), and their weights never change during the run.
So that part is saved once as a static graph (``paddle.jit.to_static`` + ``paddle.jit.save``,
dynamic batch and length) and every batch runs through Paddle Inference: oneDNN with the run's
thread count on CPU; on GPU, float16 (never run here: no GPU on our machines).

Engines: ``eager`` (the teacher's own dygraph forward, no gradients), ``inference`` (the
compiled graph; an error if it cannot be built), ``auto`` (``inference`` where it builds and
passes the check, else ``eager`` with the reason printed). Before the first step the compiled
teacher's Q/K/V are compared with the eager ones on a real batch; the run refuses to start if
the largest difference exceeds ``tolerance(precision)`` of the largest eager value.

The graph is cached in ``<output_dir>/teacher_engine/<fingerprint>/``, keyed by the extractor's
weights and layer, so a resumed run loads it instead of rebuilding it.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Tuple

import numpy as np
import paddle

from ernie_tiny.files import replacing_directory

ENGINES = ("auto", "eager", "inference")
MODEL_FILE, PARAMS_FILE, INFO_FILE = "model.json", "model.pdiparams", "engine.json"
_TOLERANCE = {"float32": 1e-4, "float16": 2e-2}  # max |compiled - eager| / max |eager|, per tensor


class TeacherEngineError(RuntimeError):
    """The compiled teacher cannot be built, loaded or trusted."""


def tolerance(precision: str) -> float:
    """The relative error the start-up check allows: 1e-4 in float32; float16 keeps ~3
    significant digits and its rounding adds up over the layers, so 2e-2 there."""
    return _TOLERANCE[precision]


@dataclass
class TeacherEngine:
    """The teacher's side of a step, no gradients: ``engine(ids, mask) -> (q, k, v)``, and
    ``outputs(ids, mask, relation_heads)`` -> ``((q, k, v), {R: its Q-Q, K-K, V-V
    ``TeacherRelation``s})`` (what the loss needs of the teacher; the distributions of the heads
    in ``graph_heads`` come out of the compiled graph, the rest is computed eagerly in float32).
    ``describe()`` for the banner."""

    name: str
    forward: Callable  # (ids, mask) -> (q, k, v, then 3 distributions per graph_heads entry)
    precision: str = "float32"
    check_error: Optional[float] = None
    cache_dir: Optional[Path] = None
    note: str = ""
    graph_heads: Tuple[int, ...] = ()

    def __call__(self, input_ids: paddle.Tensor, attention_mask: paddle.Tensor):
        return tuple(self.forward(input_ids, attention_mask)[:3])

    def outputs(self, input_ids: paddle.Tensor, attention_mask: paddle.Tensor, relation_heads):
        from ernie_tiny.distill.loss import teacher_relations, with_plogp

        out = self.forward(input_ids, attention_mask)
        qkv = tuple(out[:3])
        relations = {}
        for heads in sorted(set(relation_heads)):
            if heads in self.graph_heads:
                i = 3 + 3 * self.graph_heads.index(heads)
                relations[heads] = with_plogp(out[i:i + 3])
            else:
                relations[heads] = teacher_relations(qkv, attention_mask, heads)
        return qkv, relations

    def describe(self) -> str:
        text = f"teacher engine {self.name}"
        if self.name == "inference":
            text += f" ({self.precision}, Paddle Inference; Q/K/V match eager to {self.check_error:.1e} relative)"
        return text + (f"; {self.note}" if self.note else "")


def eager_engine(extractor: paddle.nn.Layer, note: str = "") -> TeacherEngine:
    def forward(input_ids, attention_mask):
        with paddle.no_grad():
            return extractor(input_ids, attention_mask)

    return TeacherEngine("eager", forward, note=note)


# ------------------------------------------------------------------ building the graph

def fingerprint(extractor: paddle.nn.Layer, layer_index: int, relation_heads: Tuple[int, ...] = ()) -> str:
    """A hash of the extractor's parameters (names, shapes, bytes), its layer and the relation
    heads whose distributions the graph computes."""
    digest = hashlib.sha256(f"layer={layer_index};heads={list(relation_heads)};paddle={paddle.__version__}".encode())
    for name, p in extractor.named_parameters():
        value = p.numpy()
        digest.update(f"{name}:{value.dtype}:{value.shape}".encode())
        digest.update(np.ascontiguousarray(value).tobytes())
    return digest.hexdigest()[:16]


def export_graph(extractor: paddle.nn.Layer, directory: Path, relation_heads: Tuple[int, ...] = ()) -> Path:
    """Save ``extractor`` (a ``QKVExtractor``) as a static graph with dynamic batch and
    length, into ``directory`` (written under a temporary name, then renamed); with
    ``relation_heads``, the graph also computes the teacher's relation distributions for each."""
    directory = Path(directory)
    with replacing_directory(directory, tag=f"-{os.getpid()}") as tmp:
        _save_graph(extractor, tmp, relation_heads)
    return directory


def _save_graph(extractor: paddle.nn.Layer, tmp: Path, relation_heads: Tuple[int, ...]) -> None:
    from paddle.static import InputSpec

    from ernie_tiny.modeling import QKVExtractor

    # a fresh view of the same parameters: to_static replaces the forward of the layer it is
    # given, and the eager extractor must stay eager (it is the reference of the check)
    copy = QKVExtractor.__new__(QKVExtractor)
    paddle.nn.Layer.__init__(copy)
    for name in ("embeddings", "layers", "pre_norm", "q_proj", "k_proj", "v_proj"):
        setattr(copy, name, getattr(extractor, name))
    copy.eval()
    # InputSpec names must match forward's argument names; the distilled layer's own Q/K/V do
    # not read the mask, so a graph without layers below it takes the ids alone
    specs = [InputSpec([None, None], "int64", "input_ids")]
    if relation_heads:
        specs.append(InputSpec([None, None], "int64", "attention_mask"))
        copy = _WithRelations(copy, tuple(relation_heads))
    elif len(copy.layers):
        specs.append(InputSpec([None, None], "int64", "attention_mask"))
    else:
        copy = _IdsOnly(copy)
    static = paddle.jit.to_static(copy, input_spec=specs, full_graph=True)
    paddle.jit.save(static, str(tmp / "model"))
    if not (tmp / MODEL_FILE).is_file():  # Paddle 2.x writes model.pdmodel instead of model.json
        found = sorted(p.name for p in tmp.iterdir())
        raise TeacherEngineError(f"paddle.jit.save wrote {found}, not {MODEL_FILE}")
    (tmp / INFO_FILE).write_text(json.dumps({"paddle": paddle.__version__}, indent=1), encoding="utf-8")


class _IdsOnly(paddle.nn.Layer):
    """An extractor of layer 0 (nothing below it reads the mask) as a graph of the ids alone."""

    def __init__(self, extractor):
        super().__init__()
        self.extractor = extractor

    def forward(self, input_ids):
        return self.extractor(input_ids, paddle.ones_like(input_ids))


def qkv_and_relations(extractor, input_ids, attention_mask, relation_heads: Tuple[int, ...]) -> list:
    """The compiled graph's outputs, in its order: Q, K, V, then for each relation-head count
    the three relation distributions of the loss (also the eager reference of the check)."""
    from ernie_tiny.distill.loss import teacher_distributions

    qkv = extractor(input_ids, attention_mask)
    out = list(qkv)
    for heads in relation_heads:
        out += teacher_distributions(qkv, attention_mask, heads)
    return out


class _WithRelations(paddle.nn.Layer):
    """``qkv_and_relations`` as a layer, to be saved as one graph."""

    def __init__(self, extractor, relation_heads: Tuple[int, ...]):
        super().__init__()
        self.extractor, self.relation_heads = extractor, relation_heads

    def forward(self, input_ids, attention_mask):
        return qkv_and_relations(self.extractor, input_ids, attention_mask, self.relation_heads)


def load_predictor(directory: Path, device: str, threads: int, precision: str = "float32"):
    """A Paddle Inference predictor of the saved graph and a function running it on Paddle tensors."""
    import paddle.inference as pi

    directory = Path(directory)
    config = pi.Config(str(directory / MODEL_FILE), str(directory / PARAMS_FILE))
    config.disable_glog_info()
    if device == "gpu":
        # never run here (no GPU): float16 weights and activations, float32 inputs/outputs handled
        # by the engine; the start-up check compares against the eager float32 teacher
        gpu_id = paddle.distributed.ParallelEnv().device_id
        kind = pi.PrecisionType.Half if precision == "float16" else pi.PrecisionType.Float32
        config.enable_use_gpu(256, gpu_id, kind)
    else:
        config.disable_gpu()
        config.enable_mkldnn()
        config.set_cpu_math_library_num_threads(threads)
    predictor = pi.create_predictor(config)
    names = predictor.get_input_names()
    if not set(names) <= {"attention_mask", "input_ids"} or "input_ids" not in names:
        raise TeacherEngineError(f"the saved teacher takes inputs {names}, not input_ids and attention_mask")

    def forward(input_ids: paddle.Tensor, attention_mask: paddle.Tensor) -> Tuple[paddle.Tensor, ...]:
        feeds = {"input_ids": input_ids, "attention_mask": attention_mask}
        outputs = predictor.run([feeds[name].astype("int64") for name in names])
        return tuple(o.astype("float32") if o.dtype != paddle.float32 else o for o in outputs)

    return predictor, forward


def relative_error(compiled, eager) -> float:
    """The largest |compiled - eager| over the outputs (Q, K, V, relation distributions),
    relative to the largest |eager| of each; infinite when their number or shapes differ."""
    if len(compiled) != len(eager):
        return float("inf")
    worst = 0.0
    for c, e in zip(compiled, eager):
        c, e = np.asarray(c.numpy(), np.float64), np.asarray(e.numpy(), np.float64)
        if c.shape != e.shape:
            return float("inf")
        worst = max(worst, float(np.abs(c - e).max() / max(np.abs(e).max(), 1e-30)))
    return worst


def inference_engine(extractor: paddle.nn.Layer, layer_index: int, output_dir: Path, check_batch,
                     device: str, threads: int, is_main: bool = True, barrier=lambda: None,
                     relation_heads: Tuple[int, ...] = ()) -> TeacherEngine:
    """The compiled teacher, built (main rank) or loaded from the cache, checked against eager
    on ``check_batch`` (ids, mask); raises ``TeacherEngineError`` when it cannot be trusted.
    In float32 the graph also computes the relation distributions of ``relation_heads`` (in
    float16, on GPU, they are computed eagerly in float32: the loss must not see half precision)."""
    precision = "float16" if device == "gpu" else "float32"
    graph_heads = tuple(sorted(set(relation_heads))) if precision == "float32" else ()
    key = fingerprint(extractor, layer_index, graph_heads)
    directory = Path(output_dir) / "teacher_engine" / key
    failure = None
    if is_main and not (directory / INFO_FILE).is_file():
        try:
            export_graph(extractor, directory, graph_heads)
        except Exception as error:  # noqa: BLE001 - the message says what failed; auto falls back
            failure = error
    barrier()
    if failure is not None or not (directory / INFO_FILE).is_file():
        raise TeacherEngineError(f"could not save the teacher as a static graph: {failure or 'not written'}")
    try:
        _, forward = load_predictor(directory, device, threads, precision)
        ids, mask = check_batch
        compiled = forward(ids, mask)
    except TeacherEngineError:
        raise
    except Exception as error:  # noqa: BLE001
        raise TeacherEngineError(f"Paddle Inference could not run the saved teacher in {directory}: "
                                 f"{type(error).__name__}: {str(error).strip().splitlines()[-1][:300]}") from error
    with paddle.no_grad():
        eager = qkv_and_relations(extractor, ids, mask, graph_heads)
    error = relative_error(compiled, eager)
    if not error <= tolerance(precision):
        raise TeacherEngineError(
            f"the compiled teacher's outputs (Q/K/V and relation distributions) differ from the eager teacher's by "
            f"{error:.2e} (relative; allowed "
            f"{tolerance(precision):.0e} in {precision}) on the first batch; graph in {directory}")
    return TeacherEngine("inference", forward, precision=precision, check_error=error, cache_dir=directory,
                         graph_heads=graph_heads)


def build_engine(choice: str, extractor: paddle.nn.Layer, layer_index: int, output_dir: Path, check_batch,
                 device: str, threads: int, is_main: bool = True, barrier=lambda: None,
                 relation_heads: Tuple[int, ...] = ()) -> TeacherEngine:
    """The teacher engine ``choice`` (``Distill.teacher_engine``) asks for. ``auto`` falls back to
    eager with a warning naming the reason; ``inference`` raises."""
    if choice not in ENGINES:
        raise ValueError(f"teacher engine must be one of {ENGINES}, not {choice!r}")
    if choice == "eager":
        return eager_engine(extractor)
    try:
        return inference_engine(extractor, layer_index, output_dir, check_batch, device, threads, is_main, barrier,
                                relation_heads)
    except TeacherEngineError as error:
        if choice == "inference":
            raise
        print(f"warning: Distill.teacher_engine=auto: {error}; the teacher runs eager", file=sys.stderr)
        return eager_engine(extractor, note=f"compiled teacher unavailable: {error}")

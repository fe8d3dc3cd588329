"""Export a finetuned model (PaddleNLP ``ErnieForSequenceClassification`` or
``ErnieForTokenClassification``) into an inference directory, and check it against eager.

``python tools/export.py -c configs/demo/export.yaml -o Model.path=DIR -o Global.output_dir=OUT``

Steps, top to bottom (``run``):

1. the model goes through ``paddle.jit.to_static`` with inputs ``input_ids`` and
   ``token_type_ids``, both int64 ``[None, None]`` (any batch, any length) and is saved with
   ``paddle.jit.save`` (Paddle 3: ``model.json`` + ``model.pdiparams``; Paddle 2.x:
   ``model.pdmodel``). Padding is masked inside the graph from ``pad_token_id``, as eager
   ERNIE does when it gets no attention mask;
2. the tokenizer files and ``deploy.json`` (task, head, input type, labels, max length, files,
   check results) are written beside it;
3. check: dev examples in batches of several sizes and lengths go through the eager model (with
   the attention mask, as in finetuning) and through Paddle Inference (oneDNN); any logit
   differing by more than ``Export.atol`` fails the export;
4. ONNX (``Export.onnx``): paddle2onnx converts the saved model; onnxruntime is checked the same
   way; with ``Export.fuse`` the fused graph (``ernie_tiny.deploy.onnx_fusion``) is written beside
   it (fusion counts in ``deploy.json`` ``fusion``) and checked too, and so is OpenVINO on the
   plain graph when the ``openvino`` package is installed (``Export.openvino``);
5. int8 (``Export.int8``; ``ernie_tiny.deploy.quantize``): onnxruntime's ``dynamic``
   of the fused graph (the plain one without ``Export.fuse``), run by onnxruntime; ``static``
   (QDQ, calibrated on train examples) of the plain graph, run by onnxruntime, and for OpenVINO
   NNCF's quantization of the same graph on the same examples (``OPENVINO_INT8_FILE``).
   fp32 and every int8 model are scored on the same dev examples with the task metric;
   onnxruntime's losing more than ``Export.max_int8_drop`` points fails the export, OpenVINO's
   (an extra model) is then left out with a message, as it is when NNCF or OpenVINO's compile
   fails on it; OpenVINO's bf16
   arithmetic (``Export.bf16``, on CPUs that compute bf16 natively) is scored the same way, but
   one that loses more than ``Export.max_bf16_drop`` is left out, not failed (nobody asked for
   it), so the ``openvino-bf16`` backend ships only where it was scored;
6. timing (``Export.timing_repeats``): every CPU backend is timed at batch 1 and
   ``Export.timing_batch`` at the task's length (``ernie_tiny.deploy.backend_timing``); ``auto``
   then runs the fastest (``deploy.json`` ``timing``), and the model files' sizes are recorded.

With ``Export.prune_vocab`` the vocabulary is pruned first (``ernie_tiny.deploy.vocab_prune``):
everything above then runs on the pruned model.

Everything is written to a temporary directory that replaces ``Global.output_dir`` only when
every check passed, so a failed export leaves no half-checked model behind.
"""
from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import List, Optional, Sequence

import numpy as np

from ernie_tiny.config import ConfigError, dump_config
from ernie_tiny.deploy.backends import INPUT_NAMES, ONNX_FILES, OPENVINO_FILES, OnnxBackend, PaddleBackend, open_openvino
from ernie_tiny.deploy.inference_dir import write_deploy_info
from ernie_tiny.deploy.openvino_runtime import OpenVinoBackend, native_bf16, openvino_installed
from ernie_tiny.errors import describe, first_line
from ernie_tiny.files import replacing_directory
from ernie_tiny.deploy.schema import TASK_FILE, ExportConfig
from ernie_tiny.tasks.encode import Features, collate

TASK_KEYS = ("task", "head", "input", "metric", "labels", "max_length")  # from task.json into deploy.json


class ExportCheckError(RuntimeError):
    """The exported model does not compute what the eager model computes."""


def task_info(config: ExportConfig) -> dict:
    """Task, head, input type, labels, metric and max length: from ``Export.task`` (a card) or
    the ``task.json`` that ``tools/finetune.py`` wrote beside the model."""
    from ernie_tiny.deploy.finetune import task_info as from_card
    from ernie_tiny.tasks.card import card_path, load_card
    from ernie_tiny.tasks.readers import read_split

    if config.Export.task:
        card = load_card(config.Export.task)
        labels = card.label.values
        if labels == "infer":
            labels = read_split(card, "train", config.Export.data_dir or None).labels
        info = from_card(card, labels, card_path(config.Export.task))
    else:
        info = json.loads((Path(config.Model.path) / TASK_FILE).read_text(encoding="utf-8"))
    if config.Export.max_length:
        info["max_length"] = config.Export.max_length
    return info


def load_model(model_dir: str, head: str, num_labels: Optional[int] = None):
    """The finetuned PaddleNLP model for ``head``, in eval mode; ``num_labels``: the count it must have."""
    from paddlenlp.transformers import AutoModelForSequenceClassification, AutoModelForTokenClassification

    auto = AutoModelForTokenClassification if head == "token" else AutoModelForSequenceClassification
    model = auto.from_pretrained(model_dir)
    found = model.config.num_labels
    if num_labels is not None and found != num_labels:
        raise ConfigError(f"Model.path: {model_dir!r} has {found} output labels, the task has {num_labels}")
    model.eval()
    return model


def inference_graph(model, head: str, first_token: bool):
    """What is exported: the model itself, or for a sequence head with ``Export.first_token_graph``
    its first-token graph (``ernie_tiny.deploy.first_token``), when the model has its layout."""
    from ernie_tiny.deploy import first_token as graph

    if not first_token or head != "sequence":
        return model
    if not graph.applies(model):
        print(f"Export.first_token_graph: {type(model).__name__} does not have the layout the first-token graph "
              f"reads; the whole model is exported", flush=True)
        return model
    return graph.FirstTokenClassifier(model)


def save_static(model, prefix: Path) -> dict:
    """``paddle.jit.save`` with dynamic batch and length; returns the file names written."""
    import paddle

    spec = [paddle.static.InputSpec([None, None], "int64", name) for name in INPUT_NAMES]
    static = paddle.jit.to_static(model, input_spec=spec, full_graph=True)
    paddle.jit.save(static, str(prefix))
    program = prefix.with_suffix(".json")
    if not program.is_file():  # Paddle 2.x writes the old program format
        program = prefix.with_suffix(".pdmodel")
    return {"model": program.name, "params": prefix.with_suffix(".pdiparams").name}


def check_batches(features: Sequence[Features], pad_token_id: int) -> List[dict]:
    """Batches of several sizes and lengths: the shortest example alone; the next shortest, a
    median and the longest together (padding inside a batch); then the rest, 8 and up to 32."""
    order = sorted(range(len(features)), key=lambda i: len(features[i].input_ids))
    first = order[:1]
    second = [i for i in dict.fromkeys(order[1:2] + [order[len(order) // 2], order[-1]]) if i not in first]
    rest = [i for i in range(len(features)) if i not in set(first + second)]
    groups = [first, second, rest[:8], rest[8:40]]
    return [collate([features[i] for i in group], pad_token_id) for group in groups if group]


def eager_logits(model, batch: dict) -> np.ndarray:
    import paddle

    with paddle.no_grad():
        return model(paddle.to_tensor(batch["input_ids"]), token_type_ids=paddle.to_tensor(batch["token_type_ids"]),
                     attention_mask=paddle.to_tensor(batch["attention_mask"])).numpy()


def compare(name: str, backend, reference: List[np.ndarray], batches: List[dict], atol: float) -> dict:
    """Max |difference| from the eager logits at real (non-padding) positions; fails above ``atol``."""
    worst, agree, total = 0.0, 0, 0
    for expected, batch in zip(reference, batches):
        got = backend(batch["input_ids"], batch["token_type_ids"])
        if got.shape != expected.shape:
            raise ExportCheckError(f"{name}: output shape {got.shape}, eager {expected.shape}")
        real = batch["attention_mask"].astype(bool) if expected.ndim == 3 else np.ones(len(expected), bool)
        worst = max(worst, float(np.abs(got - expected)[real].max()))
        agree += int((got.argmax(-1) == expected.argmax(-1))[real].sum())
        total += int(real.sum())
    shapes = [list(b["input_ids"].shape) for b in batches]
    if not worst <= atol:
        raise ExportCheckError(f"{name} differs from the eager model by {worst:.3g} > atol {atol:g} "
                               f"(batches {shapes})")
    print(f"check {name}: max |logit - eager| {worst:.2e} <= {atol:g} on batches {shapes}; "
          f"argmax agrees {agree}/{total}", flush=True)
    return {"max_abs_diff": worst, "atol": atol, "argmax_agreement": agree / total, "batch_shapes": shapes}


def check_shape_models(name: str, path: Path, reference: List[np.ndarray], batches: List[dict], atol: float) -> dict:
    """OpenVINO's models compiled for one shape (``ernie_tiny.deploy.openvino_runtime``, which
    the backends use for recurring shapes) against ``reference``: each check batch runs on a
    model compiled for its own shape."""
    backend = OpenVinoBackend(path, static_shapes=len(batches), promote_after=1)
    return compare(f"{name}, each shape compiled on its own", backend, reference, batches, atol)


def export_onnx(tmp: Path, files: dict, opset: int) -> str:
    # paddle2onnx's constant folding (Polygraphy) sets POLYGRAPHY_AUTOINSTALL_DEPS=1 and then
    # pip-installs what it misses while it runs; Polygraphy reads that setting once, at import, so
    # importing it first with the setting off means nothing is ever installed at run time (the
    # packages it needs are named in setup.py)
    os.environ["POLYGRAPHY_AUTOINSTALL_DEPS"] = "0"
    import polygraphy.config  # noqa: F401
    import paddle2onnx

    paddle2onnx.export(str(tmp / files["model"]), str(tmp / files["params"]), str(tmp / "model.onnx"),
                       opset_version=opset, enable_onnx_checker=True)
    return "model.onnx"


SCORED_SHAPES = 16  # shapes compiled on their own while scoring (the rest run on the dynamic model)


def shape_models(name: str) -> str:
    """The name under which a gate scores an OpenVINO backend with every shape compiled on its own."""
    return f"{name} shape models"


def drop_problem(what: str, name: str, scores: dict, examples: int, metric: str, max_drop: float, hint: str) -> str:
    """Prints how ``name`` scored against fp32; '' if it is within ``max_drop`` points, else why not."""
    print(f"{what} on {name}: dev {metric} {scores[name]['score']:.2f} vs fp32 {scores['fp32']['score']:.2f} "
          f"on {examples} examples; predictions agree {scores[name]['agreement']:.2%}", flush=True)
    drop = scores["fp32"]["score"] - scores[name]["score"]
    return (f"{what} on {name} scores {drop:.2f} points below fp32 on {examples} dev examples (> {max_drop}): {hint}"
            if drop > max_drop else "")


def first_drop_problem(what: str, names, scores: dict, examples: int, metric: str, max_drop: float, hint: str) -> str:
    """``drop_problem`` for each of ``names`` (each one's score is printed); the first problem, or ''."""
    problems = [drop_problem(what, name, scores, examples, metric, max_drop, hint) for name in names]
    return next((problem for problem in problems if problem), "")


def gate(what: str, fp32, scored: dict, evaluated, card, labels, pad: int, max_drop: float, hint: str) -> dict:
    """fp32 and every ``scored`` backend on the same dev examples with the task metric; an
    ExportCheckError if one scores more than ``max_drop`` points below fp32. Returns the scores."""
    from ernie_tiny.deploy.quantize import compare_scores

    scores = compare_scores({"fp32": fp32, **scored}, evaluated, card, labels, pad)
    problem = first_drop_problem(what, scored, scores, len(evaluated), card.metric, max_drop, hint)
    if problem:
        raise ExportCheckError(problem)
    return scores


def with_shape_models(name: str, path: Path) -> dict:
    """An OpenVINO backend to score twice: on its dynamic model, and with each shape compiled on
    its own (as recurring shapes run; those compute slightly differently)."""
    return {name: open_openvino(name, path, static_shapes=0),
            shape_models(name): open_openvino(name, path, static_shapes=SCORED_SHAPES, promote_after=1)}


def add_int8(tmp: Path, onnx_file: str, ex, card, labels, calibration, evaluated, pad: int, fp32,
             openvino: bool) -> tuple:
    """Quantize, then score fp32 and every int8 model on the same dev examples: onnxruntime's
    (fails the export if it drops too far) and, with ``openvino`` in a calibrated mode, OpenVINO's
    own (``add_openvino_int8``). Returns the record and the onnxruntime int8 backend by name."""
    from ernie_tiny.deploy.quantize import INT8_FILE, OPENVINO_INT8_MODES, compare_scores, quantize_onnx

    done = quantize_onnx(tmp / onnx_file, tmp / INT8_FILE, ex.int8, calibration, pad)
    onnx_int8 = {"onnx-int8": OnnxBackend(tmp / INT8_FILE)}
    for_openvino, openvino_int8 = ((add_openvino_int8(tmp, onnx_file, calibration, pad)
                                    if openvino and ex.int8 in OPENVINO_INT8_MODES else (None, {})))
    scores = compare_scores({"fp32": fp32, **onnx_int8, **openvino_int8}, evaluated, card, labels, pad)
    what = f"int8 ({ex.int8})"
    problem = first_drop_problem(what, onnx_int8, scores, len(evaluated), card.metric, ex.max_int8_drop,
                                 "try the other Export.int8 mode, or Export.int8: off")
    if problem:
        raise ExportCheckError(problem)
    problem = first_drop_problem(what, openvino_int8, scores, len(evaluated), card.metric, ex.max_int8_drop,
                                 "the openvino-int8 backend is left out")
    if problem:  # OpenVINO's int8 model is an extra: left out, not failed
        print(problem, flush=True)
        leave_out_openvino_int8(tmp, for_openvino, problem)
        openvino_int8 = {}
    result = {**done, "mode": ex.int8, "source": onnx_file, "metric": card.metric, "dev_examples": len(evaluated),
              "fp32": scores["fp32"]["score"], "int8": scores["onnx-int8"]["score"],
              "agreement": scores["onnx-int8"]["agreement"], "max_drop": ex.max_int8_drop, "file": INT8_FILE,
              "openvino": for_openvino, "runtimes": {name: scores[name] for name in (*onnx_int8, *openvino_int8)}}
    return result, onnx_int8  # timing builds OpenVINO's afresh


def add_openvino_int8(tmp: Path, onnx_file: str, calibration, pad: int) -> tuple:
    """NNCF's int8 model for OpenVINO and its backends to score (dynamic and per shape); when NNCF
    or OpenVINO fails on it, it is left out with a message (onnxruntime's int8 model still ships).
    Returns its record and the backends by name."""
    from ernie_tiny.deploy.quantize import OPENVINO_INT8_FILE, quantize_for_openvino

    try:
        record = quantize_for_openvino(tmp / onnx_file, tmp / OPENVINO_INT8_FILE, calibration, pad)
    except Exception as err:  # noqa: BLE001 -- NNCF's errors have no common class; the export goes on without it
        record, problem = {}, f"NNCF cannot quantize {onnx_file} ({describe(err)})"
    else:
        try:
            return record, with_shape_models("openvino-int8", tmp / record["file"])
        except RuntimeError as err:  # OpenVINO's compile errors
            problem = f"OpenVINO cannot compile {record['file']} ({first_line(err)})"
    print(f"{problem}: the openvino-int8 backend is left out", flush=True)
    leave_out_openvino_int8(tmp, record, problem)
    return record, {}


def leave_out_openvino_int8(tmp: Path, record: dict, why: str) -> None:
    """Removes OpenVINO's int8 model and marks its record left out (``why``)."""
    from ernie_tiny.deploy.quantize import OPENVINO_INT8_FILE

    (tmp / OPENVINO_INT8_FILE).unlink(missing_ok=True)
    record.pop("file", None)
    record["left_out"] = why


def add_bf16(onnx_path: Path, ex, card, labels, evaluated, pad: int) -> dict:
    """OpenVINO in bf16 arithmetic on the plain graph, scored against OpenVINO fp32 on the same
    dev examples. Left out, with a message, if it drops more than ``Export.max_bf16_drop`` (it is
    an extra backend, not one the config asked for): ``runtimes`` then lists none."""
    record = {"metric": card.metric, "dev_examples": len(evaluated), "max_drop": ex.max_bf16_drop,
              "source": onnx_path.name, "runtimes": {}}
    try:
        scores = gate("bf16", OpenVinoBackend(onnx_path, static_shapes=0),
                      with_shape_models("openvino-bf16", onnx_path), evaluated, card, labels, pad,
                      ex.max_bf16_drop, "the openvino-bf16 backend is left out")
    except (ExportCheckError, RuntimeError) as err:  # scored too low, or OpenVINO cannot compile it in bf16
        print(f"bf16 is left out: {first_line(err)}", flush=True)
        return {**record, "left_out": first_line(err)}
    return {**record, "fp32": scores["fp32"]["score"],
            "runtimes": {name: scores[name] for name in scores if name != "fp32"}}


def add_fused(tmp: Path, onnx_file: str, model_config) -> tuple:
    """The fused graph beside the plain one; returns its file name and the fusion counts."""
    from ernie_tiny.deploy.onnx_fusion import fuse_onnx

    target = tmp / "model.fused.onnx"
    counts = fuse_onnx(tmp / onnx_file, target, model_config.num_attention_heads, model_config.hidden_size)
    print("fused graph: " + ", ".join(f"{op} {n}" for op, n in counts.items()), flush=True)
    return target.name, counts


def add_timing(tmp: Path, info: dict, ex, length: int, vocab_size: int, checked: dict) -> dict:
    """Every CPU backend of the export timed on the same inputs; ``auto``'s choice among them.
    ``checked``: the backends the checks already built (reused, not built again, but for
    OpenVINO's, whose per-shape models the checks used up)."""
    from ernie_tiny.deploy.timing_runs import cpu_backends, time_and_record

    shapes = [(1, length), (ex.timing_batch, length)]
    return time_and_record(cpu_backends(tmp, info, reuse=checked), shapes, vocab_size, ex.timing_repeats,
                           ex.timing_warmup)


def file_sizes_mb(directory: Path, info: dict) -> dict:
    keys = dict.fromkeys([*ONNX_FILES.values(), *OPENVINO_FILES.values()])  # the model files deploy.json names
    names = [info["paddle"]["params"]] + list(dict.fromkeys(info[k] for k in keys if info.get(k)))
    return {name: round((directory / name).stat().st_size / 2**20, 3) for name in names}


def run(config: ExportConfig) -> Path:
    import paddle
    from paddlenlp.transformers import AutoTokenizer

    from ernie_tiny import runtime
    from ernie_tiny.deploy.quantize import SOURCE_GRAPH
    from ernie_tiny.tasks.card import load_card
    from ernie_tiny.tasks.data import Sample, TaskData

    runtime.start_stage(config, join_group=False, device="cpu")  # exported and checked on CPU
    started = time.time()
    ex = config.Export
    task = task_info(config)
    card = load_card(task["card"] if Path(task["card"]).is_file() else task["task"])
    model = load_model(config.Model.path, task["head"], len(task["labels"]))
    tokenizer = AutoTokenizer.from_pretrained(config.Model.path)
    pad = tokenizer.pad_token_id
    if model.config.pad_token_id != pad:  # the graph masks padding by the model's pad id
        raise ConfigError(f"Model.path: the model's pad_token_id {model.config.pad_token_id} is not the "
                          f"tokenizer's {pad}")

    if ex.prune_vocab:
        from ernie_tiny.deploy.vocab_prune import prune_for_task

        vocab_dir = tempfile.TemporaryDirectory(prefix="pruned_vocab_")  # removed when run() returns
        model, tokenizer, pruning = prune_for_task(model, tokenizer, card, task, ex, Path(vocab_dir.name))
        pad = tokenizer.pad_token_id
    gated = ex.int8 != "off" or (ex.bf16 and ex.onnx and ex.openvino)  # scored on dev examples: 0 = all of them
    needed = 0 if gated and ex.eval_examples == 0 else max(ex.check_examples, ex.eval_examples)
    sample = Sample(max_train_examples=ex.calibration_examples, max_dev_examples=needed, max_length=task["max_length"])
    dev_features = TaskData.load(card, "dev", sample, tokenizer, ex.data_dir, labels=task["labels"]).features
    batches = check_batches(dev_features[:ex.check_examples], pad)
    evaluated = dev_features[:ex.eval_examples] if ex.eval_examples else dev_features  # what int8 and bf16 are scored on
    reference = [eager_logits(model, b) for b in batches]  # before to_static turns the model static

    output_dir = Path(config.Global.output_dir)
    with replacing_directory(output_dir) as tmp:  # replaces output_dir only once every check passed
        graph = inference_graph(model, task["head"], ex.first_token_graph)
        files = save_static(graph, tmp / "model")
        tokenizer.save_pretrained(str(tmp))
        model.config.save_pretrained(str(tmp))  # sizes and labels, for readers of the directory (no weights)
        info = {"format": "ernie-tiny-inference/1", **{k: task[k] for k in TASK_KEYS}, "pad_token_id": pad,
                "inputs": list(INPUT_NAMES), "paddle": files, "onnx": None, "onnx_int8": None, "openvino_int8": None,
                "paddle_version": paddle.__version__, "source_model": str(config.Model.path), "checks": {},
                "int8": None, "bf16": None, "onnx_fused": None, "fusion": None, "timing": None,
                "vocab_pruning": pruning if ex.prune_vocab else None,
                "first_token_graph": graph is not model}
        write_deploy_info(tmp, info)
        checked = {"paddle": PaddleBackend(tmp)}  # every backend the checks build, by backend name (timing reuses them)
        info["checks"]["paddle_inference"] = compare("Paddle Inference (oneDNN)", checked["paddle"], reference,
                                                     batches, ex.atol)
        if ex.onnx:
            info["onnx"] = export_onnx(tmp, files, ex.opset)
            checked["onnx"] = OnnxBackend(tmp / info["onnx"])
            info["checks"]["onnxruntime"] = compare("onnxruntime", checked["onnx"], reference, batches, ex.atol)
            if ex.openvino and openvino_installed():
                checked["openvino"] = OpenVinoBackend(tmp / info["onnx"])
                info["checks"]["openvino"] = compare("OpenVINO", checked["openvino"], reference, batches, ex.atol)
                info["checks"]["openvino_shape_models"] = check_shape_models("OpenVINO", tmp / info["onnx"], reference,
                                                                            batches, ex.atol)
            elif ex.openvino:
                print("OpenVINO is not installed (pip install -e .): the openvino backend is left out", flush=True)
            if ex.bf16 and "openvino" in checked and not native_bf16():
                print("Export.bf16: this CPU does not compute bf16 natively: the openvino-bf16 backend is left out "
                      "(export on a CPU with AVX-512 BF16 or AMX for it)", flush=True)
            elif ex.bf16 and "openvino" in checked:
                info["bf16"] = add_bf16(tmp / info[OPENVINO_FILES["openvino-bf16"]], ex, card, task["labels"],
                                        evaluated, pad)
            if ex.fuse:
                info["onnx_fused"], info["fusion"] = add_fused(tmp, info["onnx"], model.config)
                checked["onnx-fused"] = OnnxBackend(tmp / info["onnx_fused"])
                info["checks"]["onnxruntime_fused"] = compare("onnxruntime fused", checked["onnx-fused"], reference,
                                                              batches, ex.atol)
        if ex.int8 != "off":
            calibration = []
            if ex.int8 == "static":
                calibration = TaskData.load(card, "train", sample, tokenizer, ex.data_dir, labels=task["labels"]).features
            source = SOURCE_GRAPH[ex.int8] if SOURCE_GRAPH[ex.int8] in checked else "onnx"  # the fp32 backend
            info["int8"], int8 = add_int8(tmp, info[ONNX_FILES[source]], ex, card, task["labels"], calibration,
                                          evaluated, pad, checked[source], openvino="openvino" in checked)
            info["onnx_int8"] = info["int8"].pop("file")
            info["openvino_int8"] = (info["int8"]["openvino"] or {}).pop("file", None)
            checked.update(int8)
        if ex.timing_repeats:
            info["timing"] = add_timing(tmp, info, ex, task["max_length"], model.config.vocab_size, checked)
        info["sizes_mb"] = file_sizes_mb(tmp, info)
        write_deploy_info(tmp, info)
        dump_config(config, tmp / "export_config.yaml")
    print(f"inference directory written to {output_dir} ({time.time() - started:.0f} s)")
    return output_dir

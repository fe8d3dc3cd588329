"""Export -> inference directory -> predictor, on tiny ERNIE models (2 layers, hidden 32).

Covers: the exported Paddle Inference model and the ONNX model against the eager model
(sequence and token classification, dynamic batch and length), the predictor on CPU over
every backend, the infer CLI, and int8 accuracy against fp32 on review_sentiment dev after a
short finetune (tools/finetune.py's recipe).
"""
import importlib.util
import json
from pathlib import Path

import numpy as np
import paddle
import pytest

from ernie_tiny.config import ConfigError, load_config
from ernie_tiny.deploy.openvino_runtime import native_bf16
from ernie_tiny.deploy.schema import TASK_FILE, ExportConfig, FinetuneConfig
from ernie_tiny.files import TMP_PREFIX

ROOT = Path(__file__).resolve().parent.parent
ATOL = 1e-4  # |exported - eager| on any logit (what Export.atol enforces)
SIZES = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
             max_position_embeddings=130, type_vocab_size=4)
FAST_TIMING = ("Export.timing_repeats=2", "Export.timing_warmup=1", "Export.timing_batch=4")
TEXTS = ["质量很好，物流也快，下次还来", "太差了", "书的内容一般，但是印刷不错。", "江泽民在北京会见了美国总统克林顿。", "好"]


def make_tiny_model(directory: Path, task: str, head_model: bool = True, seed: int = 0) -> Path:
    """A random-weight tiny ERNIE (with a classification head for ``task``, or the bare
    encoder) + a character vocabulary from the task's dev texts, saved as PaddleNLP saves.
    With a head, ``task.json`` is written too, as tools/finetune.py does."""
    from paddlenlp.transformers import ErnieConfig, ErnieForSequenceClassification, ErnieForTokenClassification, \
        ErnieModel

    from ernie_tiny.deploy.finetune import task_info, write_json
    from ernie_tiny.tasks.card import card_path, load_card
    from ernie_tiny.tasks.offline import load_builtin
    from ernie_tiny.tokenization import build_vocab, tokenizer_from_vocab

    card = load_card(task)
    records = load_builtin(card.source.builtin.name, "dev")[:3000]
    texts = [r.get("text") or "".join(r["tokens"]) for r in records] + TEXTS
    tokenizer = tokenizer_from_vocab(build_vocab(texts, directory / "vocab.txt", 3000, 1))
    paddle.seed(seed)
    config = ErnieConfig(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
                         num_labels=len(card.label.values), **SIZES)
    if not head_model:
        model = ErnieModel(config)
    elif card.head == "token":
        model = ErnieForTokenClassification(config)
    else:
        model = ErnieForSequenceClassification(config)
    model.save_pretrained(str(directory))
    tokenizer.save_pretrained(str(directory))
    if head_model:
        write_json(directory / TASK_FILE, task_info(card, card.label.values, card_path(task)))
    return directory


def export(model_dir: Path, output_dir: Path, *overrides: str) -> Path:
    from ernie_tiny.deploy.export import run

    return run(load_config(ExportConfig, ROOT / "configs/demo/export.yaml",
                           [f"Model.path={model_dir}", f"Global.output_dir={output_dir}", *overrides]))


def eager_logits(model_dir: Path, head: str, predictor, texts):
    """The source model's logits in dygraph, on the predictor's own encoding (with attention mask)."""
    from paddlenlp.transformers import AutoModelForSequenceClassification, AutoModelForTokenClassification

    from ernie_tiny.tasks.encode import collate

    auto = AutoModelForTokenClassification if head == "token" else AutoModelForSequenceClassification
    model = auto.from_pretrained(str(model_dir))
    model.eval()
    features = predictor.encode(texts)
    batch = collate(features, predictor.pad_token_id)
    with paddle.no_grad():
        logits = model(paddle.to_tensor(batch["input_ids"]), token_type_ids=paddle.to_tensor(batch["token_type_ids"]),
                       attention_mask=paddle.to_tensor(batch["attention_mask"])).numpy()
    return [logits[i] if head == "sequence" else logits[i, :len(f.input_ids)] for i, f in enumerate(features)]


@pytest.fixture(scope="module")
def sequence_export(tmp_path_factory):
    base = tmp_path_factory.mktemp("seq")
    model = make_tiny_model(base / "model", "review_sentiment")
    # random weights: the logits are near ties that int8 and bf16 rounding flip (the int8 gate is tested on a
    # finetuned model, test_int8_stays_within_one_point_after_a_short_finetune)
    return model, export(model, base / "export", "Export.eval_examples=200", "Export.max_int8_drop=100",
                         "Export.max_bf16_drop=100", *FAST_TIMING)


@pytest.fixture(scope="module")
def token_export(tmp_path_factory):
    base = tmp_path_factory.mktemp("tok")
    model = make_tiny_model(base / "model", "pd_ner")
    return model, export(model, base / "export", "Export.int8=off", "Export.check_examples=24", *FAST_TIMING)


def test_sequence_export_writes_a_checked_inference_directory(sequence_export):
    _, out = sequence_export
    info = json.loads((out / "deploy.json").read_text(encoding="utf-8"))
    assert info["labels"] == ["positive", "negative"] and info["head"] == "sequence" and info["max_length"] == 128
    for name in ("model.json", "model.pdiparams", "model.onnx", "model.fused.onnx", "model.int8.onnx", "vocab.txt",
                 "export_config.yaml"):
        assert (out / name).is_file(), name
    shapes = info["checks"]["paddle_inference"]["batch_shapes"]
    assert {b for b, _ in shapes} == {1, 3, 8, 32} and len({n for _, n in shapes}) > 1  # dynamic batch and length
    assert set(info["checks"]) == {"paddle_inference", "onnxruntime", "onnxruntime_fused", "openvino",
                                   "openvino_shape_models"}  # OpenVINO's per-shape models checked too
    assert info["first_token_graph"] is True  # a sequence head: the last layer runs for [CLS] only
    if native_bf16():  # OpenVINO bf16 scored against fp32, on its dynamic model and per shape
        assert set(info["bf16"]["runtimes"]) == {"openvino-bf16", "openvino-bf16 shape models"}
        assert info["bf16"]["fp32"] is not None and info["bf16"]["source"] == "model.onnx"
    else:
        assert info["bf16"] is None
    for check in info["checks"].values():
        assert check["max_abs_diff"] <= ATOL and check["argmax_agreement"] == 1.0
    assert not any(p.name.startswith(TMP_PREFIX) for p in out.parent.iterdir())  # the temporary replaced it


@pytest.mark.parametrize("backend", ["paddle", "onnx"])
def test_predictor_matches_eager_sequence(sequence_export, backend):
    from ernie_tiny.deploy.predictor import Predictor, softmax

    model_dir, out = sequence_export
    predictor = Predictor(out, backend=backend, batch_size=2, threads=2)  # batches of 2: several lengths
    got = predictor.logits(predictor.encode(TEXTS))
    expected = eager_logits(model_dir, "sequence", predictor, TEXTS)
    np.testing.assert_allclose(np.stack(got), np.stack(expected), atol=ATOL, rtol=0)
    results = predictor.predict(TEXTS)
    assert [r["label"] for r in results] == [predictor.labels[int(e.argmax())] for e in expected]
    assert [r["score"] for r in results] == pytest.approx([softmax(e).max() for e in expected], abs=1e-4)


def test_onnx_backends_agree_with_paddle_inference(sequence_export):
    from ernie_tiny.deploy.predictor import Predictor

    _, out = sequence_export
    timing = json.loads((out / "deploy.json").read_text())["timing"]
    assert Predictor(out).backend_name == timing["auto"]["fp32"] != "onnx-int8"  # auto: the fastest fp32 timed
    paddle_logits = np.stack(Predictor(out, backend="paddle").logits(Predictor(out).encode(TEXTS)))
    onnx = Predictor(out, backend="onnx")
    np.testing.assert_allclose(np.stack(onnx.logits(onnx.encode(TEXTS))), paddle_logits, atol=ATOL, rtol=0)
    int8 = Predictor(out, backend="onnx-int8")
    int8_logits = np.stack(int8.logits(int8.encode(TEXTS)))
    assert np.abs(int8_logits - paddle_logits).max() < 0.05  # quantized, so close but not equal


def test_token_export_and_predictor(token_export):
    from ernie_tiny.deploy.predictor import Predictor

    model_dir, out = token_export
    info = json.loads((out / "deploy.json").read_text(encoding="utf-8"))
    assert info["head"] == "token" and info["checks"]["paddle_inference"]["max_abs_diff"] <= ATOL
    assert info["first_token_graph"] is False  # token heads read every token
    assert info["onnx_int8"] is None and not (out / "model.int8.onnx").exists()
    predictor = Predictor(out, backend="paddle", batch_size=2)
    texts = TEXTS[:3] + ["江泽民 在北京"]  # a space: no token, no label
    got = predictor.logits(predictor.encode(texts))
    for g, e in zip(got, eager_logits(model_dir, "token", predictor, texts)):
        np.testing.assert_allclose(g, e, atol=ATOL, rtol=0)
    onnx = Predictor(out, backend="onnx")
    for g, o in zip(got, onnx.logits(onnx.encode(texts))):
        np.testing.assert_allclose(o, g, atol=ATOL, rtol=0)
    result = predictor.predict(texts)[-1]
    assert "".join(t["token"] for t in result["tokens"]) == "江泽民在北京"
    assert [t["start"] for t in result["tokens"]] == [0, 1, 2, 4, 5, 6]
    assert set(t["label"] for t in result["tokens"]) <= set(info["labels"]) and not result["truncated"]
    for entity in result["entities"]:
        assert texts[-1][entity["start"]:entity["end"]] == entity["text"]
    long_text = "中" * 300
    assert predictor.predict([long_text])[0]["truncated"] and len(predictor.predict([long_text])[0]["tokens"]) == 126


def load_script(path: str):
    """A command-line script of the repository as a module (its main() is called in-process)."""
    spec = importlib.util.spec_from_file_location(Path(path).stem, ROOT / path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_infer_cli_writes_json_lines(sequence_export, tmp_path):
    _, out = sequence_export
    infer = load_script("deploy/python/infer.py")
    source = tmp_path / "texts.txt"
    source.write_text("\n".join(TEXTS[:2]) + "\n\n" + TEXTS[2] + "\n", encoding="utf-8")
    target = tmp_path / "out.jsonl"
    assert infer.main(["--model_dir", str(out), "--input", str(source), "--output", str(target),
                       "--backend", "onnx-int8", "--batch_size", "2"]) == 0
    rows = [json.loads(line) for line in target.read_text(encoding="utf-8").splitlines()]
    assert [r["line"] for r in rows] == [1, 2, 4] and [r["text"] for r in rows] == TEXTS[:3]
    assert all(r["label"] in ("positive", "negative") and 0.5 <= r["score"] <= 1 for r in rows)


def test_a_differing_export_fails_the_check(sequence_export):
    from ernie_tiny.deploy.export import ExportCheckError, compare
    from ernie_tiny.deploy.predictor import Predictor

    _, out = sequence_export
    predictor = Predictor(out, backend="onnx")
    from ernie_tiny.tasks.encode import collate

    batch = collate(predictor.encode(TEXTS), predictor.pad_token_id)
    reference = [predictor.backend(batch["input_ids"], batch["token_type_ids"])]
    assert compare("same", predictor.backend, reference, [batch], ATOL)["max_abs_diff"] == 0.0
    shifted = lambda ids, types: predictor.backend(ids, types) + 2 * ATOL  # noqa: E731
    with pytest.raises(ExportCheckError, match="differs from the eager model"):
        compare("shifted", shifted, reference, [batch], ATOL)


def test_export_config_errors_name_the_key(tmp_path):
    model = tmp_path / "bare"
    model.mkdir()
    (model / "config.json").write_text("{}")
    config = ROOT / "configs/demo/export.yaml"
    with pytest.raises(ConfigError, match=r"Export.task: '' but .* has no task.json"):
        load_config(ExportConfig, config, [f"Model.path={model}"])
    with pytest.raises(ConfigError, match=r"-o Model.path=.*: Model.path: .*no such directory"):
        load_config(ExportConfig, config, [f"Model.path={tmp_path / 'missing'}"])
    with pytest.raises(ConfigError, match="Export.keep_frequent: 100 .* needs Export.prune_vocab: true"):
        load_config(ExportConfig, config, [f"Model.path={model}", "Export.task=review_sentiment",
                                           "Export.keep_frequent=100"])
    with pytest.raises(ConfigError, match="Export.int8: 'static' quantizes the ONNX model"):
        load_config(ExportConfig, config, [f"Model.path={model}", "Export.task=review_sentiment", "Export.onnx=false"])


def test_int8_stays_within_one_point_after_a_short_finetune(tmp_path):
    """A tiny encoder finetuned briefly on review_sentiment (tools/finetune.py's recipe), then
    exported with dynamic int8: fp32 and int8 are scored on the same dev examples."""
    from ernie_tiny.deploy.finetune import run as finetune

    student = make_tiny_model(tmp_path / "student", "review_sentiment", head_model=False)
    config = load_config(FinetuneConfig, ROOT / "configs/demo/finetune.yaml", [
        f"Model.path={student}", f"Global.output_dir={tmp_path / 'ft'}", "Task.max_train_examples=2000",
        "Task.max_dev_examples=400", "Task.max_length=64", "Finetune.max_steps=80", "Finetune.lr=5e-3",
        "Finetune.eval_every=40"])
    model_dir = finetune(config)
    result = json.loads((tmp_path / "ft/result.json").read_text())
    assert (model_dir / TASK_FILE).is_file() and result["best_dev"] > 60  # learned something (majority ~53%)
    out = export(model_dir, tmp_path / "export", "Export.eval_examples=400", "Export.int8=dynamic")
    int8 = json.loads((out / "deploy.json").read_text())["int8"]
    assert int8["fp32"] > 60 and abs(int8["fp32"] - int8["int8"]) <= 1.0 and int8["agreement"] >= 0.95
    assert set(int8["runtimes"]) == {"onnx-int8"}  # onnxruntime's own int8 ops: OpenVINO does not read them
    assert int8["source"] == "model.fused.onnx" and int8["openvino"] is None
    assert json.loads((out / "deploy.json").read_text())["openvino_int8"] is None  # NNCF needs calibration: static

    # static: QDQ of the plain graph, calibrated on train examples, for onnxruntime; NNCF's of the same
    # graph on the same examples for OpenVINO; each scored
    static = export(model_dir, tmp_path / "static", "Export.eval_examples=400", "Export.int8=static",
                    "Export.calibration_examples=64", *FAST_TIMING)
    info = json.loads((static / "deploy.json").read_text())
    int8 = info["int8"]
    assert int8["source"] == "model.onnx" and int8["format"] == "qdq" and int8["dev_examples"] == 400
    assert set(int8["runtimes"]) == {"onnx-int8", "openvino-int8", "openvino-int8 shape models"}
    for name, scored in int8["runtimes"].items():
        assert abs(int8["fp32"] - scored["score"]) <= 1.0 and scored["agreement"] >= 0.95, name
    assert "openvino-int8" in info["timing"]["median_ms"]
    assert info["onnx_int8"] == "model.int8.onnx" and info["openvino_int8"] == "model.int8.openvino.onnx"
    assert int8["openvino"]["method"].startswith("NNCF ") and "64 train examples" in int8["openvino"]["activations"]
    layers = SIZES["num_hidden_layers"]  # Q K^T and its product with V stay fp32, the first-token layer's too
    assert f"the {2 * layers} attention matmuls of two activations stay fp32" in int8["openvino"]["activations"]
    from ernie_tiny.deploy.result import ExportResult

    headline = ExportResult.read(static).headline()
    assert "(onnx-int8)" in headline and "(openvino-int8)" in headline  # each int8 runtime's score
    for name in ("model.int8.onnx", "model.int8.openvino.onnx"):
        assert info["sizes_mb"][name] < info["sizes_mb"]["model.onnx"] / 2, name  # embeddings int8 too
    from ernie_tiny.deploy.predictor import Predictor

    fp32, ov_int8 = Predictor(static, backend="onnx"), Predictor(static, backend="openvino-int8")
    assert ov_int8.description.startswith("openvino-int8: openvino ") and "model.int8.openvino.onnx" in \
        ov_int8.description
    texts = ["质量很好，物流也快", "太差了，再也不买", "还行吧"]
    fp32_logits, int8_logits = (np.stack(p.logits(p.encode(texts))) for p in (fp32, ov_int8))
    assert np.abs(int8_logits - fp32_logits).max() < 0.1  # quantized, so close but not equal


def test_latency_benchmark_times_every_runtime_on_the_same_inputs(sequence_export, tmp_path):
    from ernie_tiny.benchmarks.cli import main
    from ernie_tiny.benchmarks.latency import forward_flops

    # the ERNIE 3.0 Tiny shape at 1 x 128: ~1.3 GFLOP (counted independently, FACTS.md)
    nano = {"hidden_size": 312, "intermediate_size": 1248, "num_hidden_layers": 4, "num_labels": 2}
    assert 1.2e9 < forward_flops(nano, 1, 128, "sequence") < 1.35e9
    assert forward_flops(nano, 8, 128, "sequence") == pytest.approx(8 * forward_flops(nano, 1, 128, "sequence"))
    _, out = sequence_export
    report, raw = tmp_path / "latency.md", tmp_path / "latency.json"
    assert main(["latency", "--model_dir", str(out), "--batches", "1", "4", "--seqs", "16", "--iters", "3",
                 "--warmup", "1", "--matmul_size", "256", "--output", str(report), "--json", str(raw)]) == 0
    rows = json.loads(raw.read_text())["rows"]
    bf16 = ("openvino-bf16",) if native_bf16() else ()
    assert {(r["runtime"], r["batch"]) for r in rows} == {
        (n, b) for n in ("eager", "paddle", "ort-defaults", "ov-fp32", "ov-defaults", "onnx", "onnx-fused", "onnx-int8",
                         "openvino", "openvino-int8", "auto", *bf16) for b in (1, 4)}
    assert all(r["time_vs_baseline"] > 0 for r in rows)
    assert all(r["time_vs_baseline"] == 1.0 and "per_round" not in r for r in rows if r["runtime"] == "ort-defaults")
    assert all(r["per_round"]["rounds"] == 1 and r["per_round"]["min"] <= r["per_round"]["median"]
               <= r["per_round"]["max"] for r in rows if r["runtime"] != "ort-defaults")  # 3 calls: one round
    assert all(r["n"] == 3 and 0 < r["median_ms"] <= r["p99_ms"] and r["gflops"] > 0 for r in rows)
    table = report.read_text()
    assert "| runtime | batch x seq |" in table and "| onnx-int8 | 4 x 16 |" in table and "| auto | 1 x 16 |" in table
    assert "instruction sets" in table and "model.fused.onnx" in table and "model.int8.openvino.onnx" in table
    assert "| time vs ort-defaults | per round |" in table and "| ort-defaults | 1 x 16 |" in table
    # the targets are at 1 x 128 and 32 x 128: judged "not measured" here, never "met"
    assert "## Targets" in table and "| auto (fp32) no slower than" in table
    speed = [v for v in json.loads(raw.read_text())["targets"] if " x 128" in v["target"]]
    assert len(speed) >= 3 and all(v["met"] is None for v in speed)
    samples = json.loads(raw.read_text())["samples_ms"]  # every timed call, for judging again later
    assert set(samples) == {"1x16", "4x16"} and all(len(ms) == 3 for ms in samples["1x16"].values())
    # the baseline runs the whole source model as users export it, not our first-token graph
    meta = json.loads(raw.read_text())["meta"]
    assert meta["baseline"].startswith("the whole source model") and meta["baseline"] in table
    assert set(meta["matmul_gflops"]) == {"paddle", "numpy", "openvino"} and ", OpenVINO " in table  # the peak's
    assert all(rate > 0 for rate in meta["matmul_gflops"].values())  # candidates, the best of them counts
    gflop = {r["runtime"]: r["gflop"] for r in rows if r["batch"] == 1}
    assert gflop["ort-defaults"] == gflop["ov-defaults"] == gflop["ov-fp32"] == gflop["eager"] > gflop["openvino"] \
        == gflop["onnx"]
    assert main(["latency", "--model_dir", str(tmp_path)]) == 2  # not an inference directory
    from ernie_tiny.benchmarks.latency import build_runtimes

    info = json.loads((out / "deploy.json").read_text())  # more timed shapes than STATIC_SHAPES: each compiled
    built = build_runtimes(["openvino", "openvino-dynamic", "onnx"], out, None, info, 1, out / "model.onnx", shapes=6)
    assert built["openvino"].static_shapes == 6 and built["openvino-dynamic"].static_shapes == 0


# ---- TensorRT (GPU only; its set-up logic checked here, issue 13 point 4) ----

@pytest.mark.parametrize("max_length", [8, 16, 100, 128, 130])
@pytest.mark.parametrize("max_batch_size", [1, 32])
def test_tensorrt_profile_covers_every_padded_batch_the_predictor_makes(max_length, max_batch_size):
    """Every batch ``Predictor.logits`` can send (1..max_batch_size rows; any longest text up to
    max_length, then padded to the length bucket) lies within the profile; 130 pads to 144."""
    from ernie_tiny.deploy.backends import pad_to_bucket, tensorrt_shape_profile

    profile = tensorrt_shape_profile(max_batch_size, max_length)
    assert profile["min"] <= profile["opt"] <= profile["max"]
    padded = set()
    for rows in {1, max_batch_size}:
        for length in range(1, max_length + 1):
            ids = np.zeros((rows, length), dtype=np.int64)
            shape = pad_to_bucket(ids, ids, 0)[0].shape
            assert all(lo <= n <= hi for lo, n, hi in zip(profile["min"], shape, profile["max"])), (shape, profile)
            padded.add(shape[1])
    assert max(padded) == profile["max"][1]  # the profile is no wider than needed
    if max_length % 16:
        assert max(padded) > max_length  # why a profile ending at max_length would not do


def test_tensorrt_is_refused_for_a_paddle3_json_export_before_anything_loads(sequence_export):
    from ernie_tiny.deploy.backends import PaddleBackend, check_tensorrt_program
    from ernie_tiny.deploy.inference_dir import read_deploy_info

    _, export_dir = sequence_export
    program = read_deploy_info(export_dir)["paddle"]["model"]
    assert program.endswith(".json")  # what Paddle 3's jit.save writes
    with pytest.raises(ValueError, match=r"TensorRT: .*model\.json is a Paddle 3 \(PIR\) program.*"
                                         r"needs a \.pdmodel export.*FLAGS_enable_pir_api=0"):
        PaddleBackend(export_dir, device="gpu", tensorrt=True)
    check_tensorrt_program("model.pdmodel")  # Paddle 2.x programs go on to enable_tensorrt_engine


def test_predictor_refuses_a_backend_profile_smaller_than_its_batches(sequence_export):
    from ernie_tiny.deploy.predictor import Predictor

    _, export_dir = sequence_export
    with pytest.raises(ValueError, match="max_batch_size 4 / max_length .* below the batches this predictor makes"):
        Predictor(export_dir, backend="paddle", batch_size=8, max_batch_size=4)


# ---- issue 14: fused graph, int8 of it, vocabulary pruning, auto from measured timings ----

def test_fused_graph_fuses_attention_and_matches_eager(sequence_export):
    """paddle2onnx's attention is rewritten so onnxruntime fuses it: every full layer's attention,
    both layer norms, gelu and the embedding; the fused and the int8 graph against eager."""
    from ernie_tiny.deploy.predictor import Predictor

    model_dir, out = sequence_export
    info = json.loads((out / "deploy.json").read_text())
    layers = SIZES["num_hidden_layers"]
    # the first-token graph's last layer attends from [CLS] only: not onnxruntime's Attention pattern
    assert info["fusion"] == {"Attention": layers - 1, "SkipLayerNormalization": 2 * layers, "BiasGelu": layers,
                              "EmbedLayerNormalization": 1, "attention_rewrites": layers}
    assert info["checks"]["onnxruntime_fused"]["max_abs_diff"] <= ATOL
    fused = Predictor(out, backend="onnx-fused", batch_size=2)  # batches of 2: padding inside some
    expected = np.stack(eager_logits(model_dir, "sequence", fused, TEXTS))
    np.testing.assert_allclose(np.stack(fused.logits(fused.encode(TEXTS))), expected, atol=ATOL, rtol=0)
    assert info["int8"]["fp32"] is not None and info["onnx_int8"] == "model.int8.onnx"
    int8 = Predictor(out, backend="onnx-int8", batch_size=2)
    assert np.abs(np.stack(int8.logits(int8.encode(TEXTS))) - expected).max() < 0.05
    sizes = info["sizes_mb"]
    assert set(sizes) == {"model.pdiparams", "model.onnx", "model.fused.onnx", "model.int8.onnx",
                          "model.int8.openvino.onnx"}
    assert sizes["model.int8.onnx"] < sizes["model.fused.onnx"] / 2  # embeddings and weights int8


def test_export_times_every_backend_and_auto_runs_the_fastest_fp32(sequence_export, tmp_path):
    import shutil

    from ernie_tiny.deploy.predictor import Predictor

    _, out = sequence_export
    info = json.loads((out / "deploy.json").read_text())
    timing = info["timing"]
    assert set(timing["median_ms"]) == {"paddle", "onnx", "onnx-fused", "onnx-int8", "openvino", "openvino-int8",
                                        *(("openvino-bf16",) if native_bf16() else ())}
    assert timing["shapes"] == [[1, 128], [4, 128]] and all(len(t) == 2 and min(t) > 0
                                                             for t in timing["median_ms"].values())
    assert isinstance(timing["cpu"]["instruction_sets"], list)
    # auto follows the recorded timings: make int8 the fastest and fused the fastest fp32
    edited = tmp_path / "export"
    shutil.copytree(out, edited)
    timing["median_ms"] = {"paddle": [9, 90], "onnx": [5, 50], "onnx-fused": [4, 45], "onnx-int8": [2, 20],
                           "openvino": [6, 40]}
    timing["auto"] = {"fp32": "onnx-fused", "int8": "onnx-int8"}
    (edited / "deploy.json").write_text(json.dumps({**info, "timing": timing}))
    chosen = Predictor(edited)
    assert chosen.backend_name == "onnx-fused"
    assert chosen.description.startswith("onnx-fused: onnxruntime") and "auto: fastest at export (1x128 4 ms" \
        in chosen.description
    assert Predictor(edited, allow_int8=True).backend_name == "onnx-int8"
    assert Predictor(edited, backend="onnx").description.endswith("; chosen")
    timing["median_ms"]["openvino"] = [3, 40]  # now the fastest fp32 over both shapes
    (edited / "deploy.json").write_text(json.dumps({**info, "timing": timing}))
    assert Predictor(edited).backend_name == "openvino"


def test_openvino_backend_matches_eager(sequence_export, monkeypatch, capsys):
    import ernie_tiny.deploy.backends as backends_module
    from ernie_tiny.deploy.inputs import DeployInputError
    from ernie_tiny.deploy.predictor import Predictor

    model_dir, out = sequence_export
    backends_module.make_backend(out, "openvino", requested="auto", spin=True)  # what auto resolved to, for messages
    assert "--spin applies to the onnxruntime backends; auto chose openvino, and runs without it" in \
        capsys.readouterr().err
    openvino = Predictor(out, backend="openvino", batch_size=2)
    assert openvino.backend.description.startswith("openvino ") and "up to 4 recurring shapes" in openvino.description
    expected = np.stack(eager_logits(model_dir, "sequence", openvino, TEXTS))
    for _ in range(2):  # the second time, the recurring batch shapes run on models compiled for them
        np.testing.assert_allclose(np.stack(openvino.logits(openvino.encode(TEXTS))), expected, atol=ATOL, rtol=0)
    assert openvino.backend.static
    dynamic = Predictor(out, backend="openvino", batch_size=2, static_shapes=0)
    np.testing.assert_allclose(np.stack(dynamic.logits(dynamic.encode(TEXTS * 2))), np.concatenate([expected] * 2),
                               atol=ATOL, rtol=0)
    assert not dynamic.backend.static and "recurring" not in dynamic.description
    warm = Predictor(out, backend="openvino", batch_size=2, max_length=40)
    assert warm.sendable_shapes() == [(1, 16), (1, 32), (2, 16), (1, 48), (2, 32), (2, 48)]  # cheapest first
    assert warm.warm_up(max_seconds=0) == 1  # the budget spent after the cheapest shape
    assert warm.warm_up() == 6  # batches 1 and 2 x lengths 16, 32 and 48
    assert not warm.backend.calls and not warm.backend.static  # warm-up calls do not count towards promotion
    ahead = Predictor(out, backend="openvino", batch_size=2, compile_shapes=[(2, 16)])
    assert list(ahead.backend.static) == [(2, 16)] and "(2x16 at start)" in ahead.description
    with pytest.raises(DeployInputError, match=r"--compile_shapes 1x144: lengths are at most 128 \(max length 128, "
                                               r"padded\); 4x16: batches hold at most 2 texts \(--batch_size\); "
                                               r"1x100: lengths reach the model padded to a multiple of 16, so such a "
                                               r"shape is never called"):
        Predictor(out, backend="openvino", batch_size=2, compile_shapes=[(1, 144), (4, 16), (1, 100)])
    with monkeypatch.context() as patch:  # served on a CPU without native bf16: refused, not run in fp32
        patch.setattr(backends_module, "native_bf16", lambda: False)
        with pytest.raises(DeployInputError, match="does not compute bf16 natively"):
            Predictor(out, backend="openvino-bf16")
    if not native_bf16():
        return
    bf16 = Predictor(out, backend="openvino-bf16", batch_size=2)
    assert "bf16 arithmetic" in bf16.description
    assert bf16.backend.dynamic[0].get_property("INFERENCE_PRECISION_HINT").get_type_name() == "bf16"
    got = np.stack(bf16.logits(bf16.encode(TEXTS)))
    assert np.abs(got - expected).max() < 0.05 * max(1.0, np.abs(expected).max())  # bf16: close


@pytest.fixture(scope="module")
def pruned_export(sequence_export, tmp_path_factory):
    model_dir, _ = sequence_export
    return export(model_dir, tmp_path_factory.mktemp("pruned") / "export", "Export.prune_vocab=true",
                  "Export.eval_examples=300", *FAST_TIMING)


def test_vocabulary_pruning_keeps_predictions_and_maps_unseen_tokens_to_unk(sequence_export, pruned_export):
    from ernie_tiny.deploy.predictor import Predictor

    _, out = sequence_export
    info = json.loads((pruned_export / "deploy.json").read_text())
    record = info["vocab_pruning"]
    full_vocab = (out / "vocab.txt").read_text(encoding="utf-8").splitlines()
    kept_vocab = (pruned_export / "vocab.txt").read_text(encoding="utf-8").splitlines()
    assert record["tokenizer_before"] == len(full_vocab) <= record["vocab_before"]  # embedding rows >= tokens
    assert record["vocab_after"] == len(kept_vocab) < len(full_vocab)
    assert kept_vocab[:5] == full_vocab[:5] and set(kept_vocab) < set(full_vocab)  # specials first, old order
    assert record["identical_where_all_kept"] and 0 < record["all_tokens_kept"] <= record["dev_examples"] == 300
    assert abs(record["pruned"] - record["unpruned"]) <= 100 * (1 - record["identical_overall"])
    assert info["sizes_mb"]["model.pdiparams"] < json.loads((out / "deploy.json").read_text())["sizes_mb"][
        "model.pdiparams"]
    full, pruned = Predictor(out, backend="onnx"), Predictor(pruned_export, backend="onnx")
    kept = [t for t in TEXTS if all(ch in set(kept_vocab) for ch in t)]
    assert kept  # texts whose tokens all survived: the same logits
    np.testing.assert_allclose(np.stack(pruned.logits(pruned.encode(kept))),
                               np.stack(full.logits(full.encode(kept))), atol=ATOL, rtol=0)
    dropped = next(t for t in full_vocab[5:] if t not in set(kept_vocab) and not t.startswith("##"))
    text = "好" + dropped
    ids = pruned.encode([text])[0].input_ids
    assert ids[2] == pruned.tokenizer.unk_token_id  # [CLS] 好 [UNK] [SEP]
    # ... and reads as the unpruned model reading [UNK] there
    full_ids = full.encode([text])[0].input_ids
    full_ids[2] = full.tokenizer.unk_token_id
    as_unk = full.backend(np.array([full_ids]), np.zeros((1, len(full_ids)), np.int64))
    np.testing.assert_allclose(pruned.logits(pruned.encode([text]))[0], as_unk[0], atol=ATOL, rtol=0)


def test_spinning_onnxruntime_gives_the_same_logits_and_says_so(sequence_export):
    from ernie_tiny.deploy.predictor import Predictor

    _, out = sequence_export
    quiet, spinning = Predictor(out, backend="onnx-int8"), Predictor(out, backend="onnx-int8", spin=True)
    entry = "session.intra_op.allow_spinning"
    assert spinning.backend.session.get_session_options().get_session_config_entry(entry) == "1"
    assert quiet.backend.session.get_session_options().get_session_config_entry(entry) == "0"
    assert "spinning" in spinning.description and "spinning" not in quiet.description
    np.testing.assert_array_equal(np.stack(spinning.logits(spinning.encode(TEXTS))),
                                  np.stack(quiet.logits(quiet.encode(TEXTS))))


def test_an_export_on_a_cpu_without_native_bf16_leaves_openvino_bf16_out(sequence_export, tmp_path, monkeypatch):
    import ernie_tiny.deploy.export as export_module

    monkeypatch.setattr(export_module, "native_bf16", lambda: False)
    model_dir, _ = sequence_export
    out = export(model_dir, tmp_path / "export", "Export.int8=off", "Export.eval_examples=50", *FAST_TIMING)
    info = json.loads((out / "deploy.json").read_text())
    assert info["bf16"] is None and "openvino-bf16" not in info["timing"]["median_ms"]
    assert "openvino" in info["timing"]["median_ms"]  # OpenVINO fp32 is still checked and timed

    # where bf16 scores too low it is left out, and the export still succeeds
    monkeypatch.setattr(export_module, "native_bf16", lambda: True)
    real_gate = export_module.gate

    def failing_bf16_gate(what, *args, **kwargs):
        if what == "bf16":
            raise export_module.ExportCheckError("bf16 on openvino-bf16 scores 3.00 points below fp32")
        return real_gate(what, *args, **kwargs)

    monkeypatch.setattr(export_module, "gate", failing_bf16_gate)
    out = export(model_dir, tmp_path / "left_out", "Export.int8=off", "Export.eval_examples=50", *FAST_TIMING)
    info = json.loads((out / "deploy.json").read_text())
    assert info["bf16"]["runtimes"] == {} and "3.00 points below" in info["bf16"]["left_out"]
    assert "openvino-bf16" not in info["timing"]["median_ms"]


@pytest.mark.parametrize("failure", ["nncf raises", "openvino cannot compile", "scores too low"])
def test_openvino_int8_that_fails_is_left_out_and_the_export_ships_onnxruntime_int8(sequence_export, tmp_path,
                                                                                   monkeypatch, failure):
    """OpenVINO's int8 model is an extra: NNCF failing on it, OpenVINO failing to compile it, or
    its score dropping past Export.max_int8_drop leaves it out (file, record, timing), with a
    message; onnxruntime's int8 model still ships."""
    import ernie_tiny.deploy.export as export_module
    import ernie_tiny.deploy.quantize as quantize_module
    from ernie_tiny.deploy.result import ExportResult

    if failure == "nncf raises":
        def broken_nncf(*args, **kwargs):
            raise KeyError("unsupported node")
        monkeypatch.setattr(quantize_module, "quantize_for_openvino", broken_nncf)
    elif failure == "openvino cannot compile":
        def no_compile(name, path):
            raise RuntimeError(f"Exception from src/inference: cannot compile {path.name}\nmore")
        monkeypatch.setattr(export_module, "with_shape_models", no_compile)
    else:
        real_scores = quantize_module.compare_scores

        def lower_openvino(backends, *args, **kwargs):
            scores = real_scores(backends, *args, **kwargs)
            return {**scores, **{name: {**scores[name], "score": scores["fp32"]["score"] - 3}
                                 for name in scores if name.startswith("openvino-int8")}}
        monkeypatch.setattr(quantize_module, "compare_scores", lower_openvino)
    model_dir, _ = sequence_export
    out = export(model_dir, tmp_path / "export", "Export.int8=static", "Export.eval_examples=50",
                 "Export.calibration_examples=16", "Export.bf16=false", *FAST_TIMING)
    info = json.loads((out / "deploy.json").read_text())
    why = info["int8"]["openvino"]["left_out"]
    assert {"nncf raises": "NNCF cannot quantize model.onnx (KeyError: 'unsupported node')",
            "openvino cannot compile": "OpenVINO cannot compile model.int8.openvino.onnx (Exception from src/"
                                       "inference: cannot compile model.int8.openvino.onnx)",
            "scores too low": "int8 (static) on openvino-int8 scores 3.00 points below fp32"}[failure] in why
    assert info["openvino_int8"] is None and not (out / "model.int8.openvino.onnx").exists()
    assert set(info["int8"]["runtimes"]) == {"onnx-int8"} and info["onnx_int8"] == "model.int8.onnx"
    assert "openvino-int8" not in info["timing"]["median_ms"] and "openvino" in info["timing"]["median_ms"]
    assert ExportResult.read(out).headline().endswith("(openvino-int8 left out)")


def test_an_export_from_before_openvinos_own_int8_model_says_to_re_export(sequence_export, tmp_path):
    import shutil

    from ernie_tiny.deploy.inputs import DeployInputError
    from ernie_tiny.deploy.backends import resolve_backend
    from ernie_tiny.deploy.predictor import Predictor

    _, out = sequence_export
    old = tmp_path / "old"
    shutil.copytree(out, old)
    info = json.loads((old / "deploy.json").read_text())
    del info["openvino_int8"]  # written before: openvino-int8 ran model.int8.onnx then
    (old / "deploy.json").write_text(json.dumps(info))
    assert resolve_backend("auto", info, allow_int8=True) != "openvino-int8"
    with pytest.raises(DeployInputError, match="exported before OpenVINO had an int8 model of its own"):
        Predictor(old, backend="openvino-int8")


# ---- auto's timings on the machine that serves (deploy/python/retime.py) ----

def test_a_model_timed_on_another_cpu_says_so_and_retime_times_it_here(sequence_export, tmp_path, monkeypatch, capsys):
    """Exported on a CPU with other instruction sets, auto's description says its choice may not be
    the fastest here and names the command; retime.py times the backends here on the export's
    shapes and rewrites deploy.json's timing (the export's own record kept under ``replaced``, also
    when run twice), and the note goes; an int8 score taken with VNNI is still flagged on a CPU
    without it."""
    import shutil

    from ernie_tiny.deploy import backends as backends_module
    from ernie_tiny.deploy.backend_timing import cpu_features
    from ernie_tiny.deploy.predictor import Predictor

    _, out = sequence_export
    served = shutil.copytree(out, tmp_path / "export")
    info = json.loads((served / "deploy.json").read_text())
    exported_on = {"model": "elsewhere", "instruction_sets": ["AVX2", "FMA", "AVX-VNNI"], "vnni": True}
    info["timing"]["cpu"] = exported_on
    (served / "deploy.json").write_text(json.dumps(info))
    moved = Predictor(served, backend="auto")
    assert f"timed on a CPU with AVX2 FMA AVX-VNNI; this one has {' '.join(cpu_features()['instruction_sets'])}: " \
           f"another backend may be faster here (python deploy/python/retime.py --model_dir {served} times them " \
           f"here)" in moved.description
    assert "retime" not in Predictor(served, backend="onnx").description  # chosen, not auto: no note

    retime = load_script("deploy/python/retime.py")
    for _ in range(2):  # twice: the export's record stays under replaced
        assert retime.main(["--model_dir", str(served), "--repeats", "1", "--warmup_calls", "0", "--threads", "1"]) == 0
        assert f"{served}/deploy.json: auto runs " in capsys.readouterr().out
        timed = json.loads((served / "deploy.json").read_text())["timing"]
        assert timed["cpu"] == cpu_features() and timed["replaced"]["cpu"] == exported_on
        assert timed["replaced"]["median_ms"] == info["timing"]["median_ms"]
    assert timed["shapes"] == info["timing"]["shapes"] and set(timed["median_ms"]) == set(info["timing"]["median_ms"])
    assert timed["repeats"] == 1 and {k: v for k, v in json.loads((served / "deploy.json").read_text()).items()
                                      if k != "timing"} == {k: v for k, v in info.items() if k != "timing"}
    here = Predictor(served, backend="auto")
    assert "retime" not in here.description and "fastest when timed again (" in here.description

    # the int8 score was taken on the export's CPU, with VNNI: said on a CPU without it, for int8 only,
    # after a retime too
    monkeypatch.setattr(backends_module, "cpu_features", lambda: {"instruction_sets": ["AVX2", "FMA"], "vnni": False})
    assert "int8 scored at export on a CPU with VNNI" in Predictor(served, backend="onnx-int8").description
    assert "VNNI" not in Predictor(served, backend="onnx").description
    monkeypatch.undo()

    damaged = Path(shutil.copytree(served, tmp_path / "damaged"))
    onnx_file = damaged / info["onnx"]
    onnx_file.write_bytes(onnx_file.read_bytes()[:1000])  # a copy cut short: named, no traceback
    assert retime.main(["--model_dir", str(damaged), "--threads", "1"]) == 2
    assert f"{onnx_file}: cannot be loaded (" in capsys.readouterr().err
    onnx_file.unlink()
    assert retime.main(["--model_dir", str(damaged), "--threads", "1"]) == 2
    assert f"{onnx_file}: listed in {damaged / 'deploy.json'} but not found" in capsys.readouterr().err

    (served / "config.json").unlink()  # no model config: refused before any timing
    assert retime.main(["--model_dir", str(served)]) == 2
    assert "config.json: the model's config with its vocab_size is needed" in capsys.readouterr().err
    del info["timing"]  # exported without timing: nothing to take again
    (served / "deploy.json").write_text(json.dumps(info))
    assert retime.main(["--model_dir", str(served)]) == 2
    assert "no timing to take again (exported with Export.timing_repeats: 0)" in capsys.readouterr().err
    assert retime.main(["--model_dir", str(tmp_path / "none")]) == 2


def test_cpu_notes_compare_instruction_sets_and_are_silent_when_either_is_unknown():
    from ernie_tiny.deploy.backend_timing import export_cpu, int8_scored_elsewhere_note, timed_elsewhere_note

    vnni = {"instruction_sets": ["AVX2", "AVX-512 VNNI"], "vnni": True}
    avx2 = {"instruction_sets": ["AVX2"], "vnni": False}
    assert timed_elsewhere_note({"cpu": vnni}, {"instruction_sets": ["AVX-512 VNNI", "AVX2"]}) == ""  # order aside
    assert timed_elsewhere_note({"cpu": vnni}, avx2) == "timed on a CPU with AVX2 AVX-512 VNNI; this one has AVX2"
    assert timed_elsewhere_note({"cpu": vnni}, {"instruction_sets": []}) == ""  # no /proc/cpuinfo here
    assert timed_elsewhere_note({}, avx2) == ""
    retimed = {"timing": {"cpu": avx2, "replaced": {"cpu": vnni}}}
    assert export_cpu(retimed) == vnni and export_cpu({"timing": {"cpu": avx2}}) == avx2 and export_cpu({}) == {}
    assert int8_scored_elsewhere_note("openvino-int8", retimed, avx2).startswith("int8 scored at export on a CPU "
                                                                                 "with VNNI, this one has none")
    assert int8_scored_elsewhere_note("openvino", retimed, avx2) == ""  # fp32
    assert int8_scored_elsewhere_note("onnx-int8", retimed, vnni) == ""  # VNNI here too
    assert int8_scored_elsewhere_note("onnx-int8", retimed, {"instruction_sets": [], "vnni": False}) == ""  # unknown

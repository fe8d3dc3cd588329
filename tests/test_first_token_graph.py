"""The deployed graph's speed-ups that must not change what the model computes: the first-token
graph of a sequence classifier (``ernie_tiny.deploy.first_token``), OpenVINO's models compiled
per recurring shape (``ernie_tiny.deploy.openvino_runtime``), and the latency benchmark's
accounting of both (FLOPs per graph, a whole-model baseline)."""
import numpy as np
import paddle
import pytest

from test_export import SIZES

openvino = pytest.importorskip("openvino")


def tiny_classifier(seed: int = 0, pre_norm: bool = False):
    from paddlenlp.transformers import ErnieConfig, ErnieForSequenceClassification

    paddle.seed(seed)
    model = ErnieForSequenceClassification(ErnieConfig(vocab_size=200, pad_token_id=0, num_labels=3, **SIZES))
    for layer in model.ernie.encoder.layers:
        layer.normalize_before = pre_norm
    model.eval()
    return model


def padded_batch(seed: int = 0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(2, 200, (4, 24))
    ids[1, 10:] = 0  # padding in a batch
    ids[2, 3:] = 0
    return ids, rng.integers(0, 2, ids.shape)


@pytest.mark.parametrize("pre_norm", [False, True])
def test_first_token_graph_gives_the_classifiers_logits(pre_norm):
    from ernie_tiny.deploy.first_token import FirstTokenClassifier

    model = tiny_classifier(pre_norm=pre_norm)
    if pre_norm:  # a pre-norm encoder ends with its own layer norm (PaddleNLP's ERNIE has none)
        model.ernie.encoder.norm = paddle.nn.LayerNorm(SIZES["hidden_size"])
    ids, types = padded_batch()
    with paddle.no_grad():
        expected = model(paddle.to_tensor(ids), token_type_ids=paddle.to_tensor(types),
                         attention_mask=paddle.to_tensor((ids != 0).astype("int64"))).numpy()
        got = FirstTokenClassifier(model)(paddle.to_tensor(ids), paddle.to_tensor(types)).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)
    model.ernie.encoder.layers[-1].linear2.weight.set_value(paddle.zeros_like(model.ernie.encoder.layers[-1].linear2.weight))
    with paddle.no_grad():  # the last layer is really used: changing it changes the logits
        assert not np.allclose(FirstTokenClassifier(model)(paddle.to_tensor(ids), paddle.to_tensor(types)).numpy(),
                               got, atol=1e-4)


def test_the_export_runs_the_first_token_graph_for_sequence_heads_only():
    from paddlenlp.transformers import ErnieConfig, ErnieModel

    from ernie_tiny.deploy.export import inference_graph
    from ernie_tiny.deploy.first_token import FirstTokenClassifier, applies

    model = tiny_classifier()
    assert isinstance(inference_graph(model, "sequence", True), FirstTokenClassifier)
    assert inference_graph(model, "sequence", False) is model
    assert inference_graph(model, "token", True) is model
    from paddlenlp.transformers import ErnieForTokenClassification

    tagger = ErnieForTokenClassification(ErnieConfig(vocab_size=200, num_labels=3, **SIZES))
    assert not applies(tagger)  # has a classifier too, but reads every token
    bare = ErnieModel(ErnieConfig(vocab_size=200, **SIZES))
    assert not applies(bare) and inference_graph(bare, "sequence", True) is bare  # no classifier: whole model
    with pytest.raises(TypeError, match="not an ERNIE sequence classifier"):
        FirstTokenClassifier(bare)


def test_openvino_compiles_recurring_shapes_on_their_own_up_to_its_limit(tmp_path):
    from ernie_tiny.deploy.export import export_onnx, save_static
    from ernie_tiny.deploy.first_token import FirstTokenClassifier
    from ernie_tiny.deploy.openvino_runtime import OpenVinoBackend

    model = tiny_classifier()
    onnx_file = tmp_path / export_onnx(tmp_path, save_static(FirstTokenClassifier(model), tmp_path / "model"), 14)
    backend = OpenVinoBackend(onnx_file, threads=1, static_shapes=2, promote_after=2)
    dynamic = OpenVinoBackend(onnx_file, threads=1, static_shapes=0)
    assert "up to 2 recurring shapes" in backend.description and "recurring" not in dynamic.description
    rng = np.random.default_rng(1)
    shapes = [(1, 16), (1, 16), (3, 32), (1, 16), (3, 32), (2, 48), (2, 48), (2, 48)]
    compiled_after = []
    for batch, length in shapes:
        ids = rng.integers(2, 200, (batch, length))
        ids[-1, length // 2:] = 0
        got = backend(ids, np.zeros_like(ids))
        np.testing.assert_allclose(got, dynamic(ids, np.zeros_like(ids)), atol=1e-5, rtol=0)
        with paddle.no_grad():
            expected = model(paddle.to_tensor(ids), token_type_ids=paddle.zeros(ids.shape, "int64")).numpy()
        np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)
        compiled_after.append(sorted(backend.static))
    assert compiled_after[0] == []  # seen once: the dynamic model
    assert compiled_after[1] == [(1, 16)]  # the second call of a shape compiles it
    assert compiled_after[4] == [(1, 16), (3, 32)]
    assert compiled_after[-1] == [(1, 16), (3, 32)]  # the limit reached: later shapes stay dynamic, none evicted
    assert not backend.calls and not dynamic.static


def test_flops_count_what_each_graph_computes():
    from ernie_tiny.benchmarks.latency import forward_flops

    nano = {"hidden_size": 312, "intermediate_size": 1248, "num_hidden_layers": 4, "num_labels": 2}
    whole, first = forward_flops(nano, 1, 128, "sequence"), forward_flops(nano, 1, 128, "sequence", first_token=True)
    h, i, seq = 312, 1248, 128
    dropped = 2 * (seq - 1) * (2 * h * h + 2 * h * i + 2 * seq * h)  # the last layer's other rows: Q, out, FFN, attention
    assert whole - first == pytest.approx(dropped)
    assert 0.75 < first / whole < 0.82  # ~20% fewer in a 4-layer student
    assert forward_flops(nano, 1, 128, "token", first_token=True) == forward_flops(nano, 1, 128, "token")


def test_openvino_compiles_shapes_given_ahead_before_the_first_call(tmp_path):
    from ernie_tiny.deploy.export import export_onnx, save_static
    from ernie_tiny.deploy.openvino_runtime import OpenVinoBackend

    model = tiny_classifier()
    onnx_file = tmp_path / export_onnx(tmp_path, save_static(model, tmp_path / "model"), 14)
    backend = OpenVinoBackend(onnx_file, threads=1, static_shapes=2, shapes=[(1, 16), [1, 16], (2, 32)])
    assert sorted(backend.static) == [(1, 16), (2, 32)] and "(1x16, 2x32 at start)" in backend.description
    ids = np.random.default_rng(2).integers(2, 200, (1, 16))
    compiled, _ = backend.static[(1, 16)]
    assert backend._for_shape((1, 16))[0] is compiled and compiled is not backend.dynamic[0]  # the first call
    with paddle.no_grad():
        expected = model(paddle.to_tensor(ids), token_type_ids=paddle.zeros(ids.shape, "int64")).numpy()
    np.testing.assert_allclose(backend(ids, np.zeros_like(ids)), expected, atol=1e-4, rtol=0)
    backend(np.ones((3, 48), "int64"), np.zeros((3, 48), "int64"))
    backend(np.ones((3, 48), "int64"), np.zeros((3, 48), "int64"))
    assert sorted(backend.static) == [(1, 16), (2, 32)]  # the slots were taken ahead: later shapes stay dynamic
    with pytest.raises(ValueError, match="3 shapes to compile ahead, but only 2"):
        OpenVinoBackend(onnx_file, threads=1, static_shapes=2, shapes=[(1, 16), (2, 16), (3, 16)])


def test_openvino_background_compiles_leave_calls_on_the_dynamic_model_until_done(tmp_path):
    from ernie_tiny.deploy.export import export_onnx, save_static
    from ernie_tiny.deploy.openvino_runtime import OpenVinoBackend

    model = tiny_classifier()
    onnx_file = tmp_path / export_onnx(tmp_path, save_static(model, tmp_path / "model"), 14)
    backend = OpenVinoBackend(onnx_file, threads=1, static_shapes=1, promote_after=2, background=True)
    assert "in the background" in backend.description
    ids = np.random.default_rng(3).integers(2, 200, (2, 16))
    expected = OpenVinoBackend(onnx_file, threads=1, static_shapes=0)(ids, np.zeros_like(ids))
    for _ in range(2):  # the second call starts the compile and runs on the dynamic model
        np.testing.assert_allclose(backend(ids, np.zeros_like(ids)), expected, atol=1e-5, rtol=0)
    assert set(backend.pending) == {(2, 16)} and not backend.static and not backend.calls
    assert backend._for_shape((3, 16)) is backend.dynamic and not backend.calls  # the one slot is taken: no counting
    backend.wait_for_compiles()
    np.testing.assert_allclose(backend(ids, np.zeros_like(ids)), expected, atol=1e-5, rtol=0)
    assert list(backend.static) == [(2, 16)] and not backend.pending
    assert backend.static[(2, 16)] is not backend.dynamic


def test_a_failed_background_compile_leaves_the_shape_on_the_dynamic_model_for_good(tmp_path, capsys):
    from ernie_tiny.deploy.export import export_onnx, save_static
    from ernie_tiny.deploy.openvino_runtime import OpenVinoBackend

    model = tiny_classifier()
    onnx_file = tmp_path / export_onnx(tmp_path, save_static(model, tmp_path / "model"), 14)
    backend = OpenVinoBackend(onnx_file, threads=1, static_shapes=2, promote_after=1, background=True)

    def out_of_memory(model):
        raise MemoryError()
    backend._compile = out_of_memory  # every compile from now on fails
    ids = np.ones((2, 16), "int64")
    for _ in range(4):  # never raises; promoted once, never tried again
        backend(ids, np.zeros_like(ids))
        backend.wait_for_compiles()
    assert backend.static == {(2, 16): backend.dynamic} and not backend.pending
    assert capsys.readouterr().out.count("cannot compile model.onnx for shape [2, 16] (MemoryError)") == 1

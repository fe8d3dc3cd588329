"""build_encoder and QKVExtractor on tiny ERNIE encoders."""
import os

import numpy as np
import paddle
import pytest

from ernie_tiny.schema import ModelSection
from ernie_tiny.modeling import QKVExtractor, build_encoder

VOCAB = 100
SIZES = dict(num_layers=3, hidden_size=48, num_heads=4, intermediate_size=96, max_position_embeddings=32)


def tiny_encoder(seed=0, **overrides):
    paddle.seed(seed)
    return build_encoder(ModelSection(**{**SIZES, **overrides}), VOCAB)


def padded_batch(seed=0, lengths=(9, 5, 2), seq=9):
    rng = np.random.default_rng(seed)
    mask = np.array([[1] * n + [0] * (seq - n) for n in lengths], dtype="int64")
    ids = rng.integers(1, VOCAB, size=mask.shape) * mask  # pad id 0 at padded positions
    return paddle.to_tensor(ids.astype("int64")), paddle.to_tensor(mask)


@pytest.fixture(scope="module")
def model():
    m = tiny_encoder()
    m.eval()
    return m


@pytest.mark.parametrize("layer", [0, 1, -1])
def test_extractor_matches_full_forward_pass(model, layer):
    ids, mask = padded_batch()
    attention = model.encoder.layers[layer].self_attn
    captured = {}
    hooks = [
        getattr(attention, name).register_forward_post_hook(
            lambda _layer, _inputs, output, name=name: captured.__setitem__(name, output.numpy()))
        for name in ("q_proj", "k_proj", "v_proj")
    ]
    try:
        with paddle.no_grad():
            model(ids, attention_mask=mask)
    finally:
        for h in hooks:
            h.remove()
    extractor = QKVExtractor(model, layer)
    extractor.eval()
    with paddle.no_grad():
        q, k, v = extractor(ids, mask)
    for name, got in zip(("q_proj", "k_proj", "v_proj"), (q, k, v)):
        assert list(got.shape) == [3, 9, SIZES["hidden_size"]]
        np.testing.assert_allclose(got.numpy(), captured[name], atol=1e-6, rtol=0)
    # the three are different projections
    assert not np.allclose(captured["q_proj"], captured["k_proj"])


def test_extractor_of_different_layers_differ(model):
    """Guards the comparison above: a wrong layer index would not give the same Q."""
    ids, mask = padded_batch()
    with paddle.no_grad():
        q0 = QKVExtractor(model, 0)(ids, mask)[0].numpy()
        q1 = QKVExtractor(model, 1)(ids, mask)[0].numpy()
    assert np.abs(q0 - q1).max() > 1e-3


def _param_ids(layer):
    return {id(p) for p in layer.parameters()}


@pytest.mark.parametrize("layer", [0, 1, -1])
def test_extractor_parameters_all_take_part(layer):
    model = tiny_encoder()
    model.train()
    extractor = QKVExtractor(model, layer)
    ids, mask = padded_batch()
    q, k, v = extractor(ids, mask)
    (q.sum() + k.sum() + v.sum()).backward()
    params = extractor.named_parameters()
    assert params
    without_grad = [name for name, p in params if not p.stop_gradient and p.grad is None]
    assert without_grad == []


@pytest.mark.parametrize("layer", [0, 1, -1])
def test_extractor_holds_only_embeddings_lower_layers_and_qkv(layer):
    model = tiny_encoder()
    layers = model.encoder.layers
    index = layer % len(layers)
    extractor = QKVExtractor(model, layer)
    target = layers[index].self_attn
    expected = _param_ids(model.embeddings)
    for i in range(index):
        expected |= _param_ids(layers[i])
    for proj in (target.q_proj, target.k_proj, target.v_proj):
        expected |= _param_ids(proj)
    got = _param_ids(extractor)
    # shared with the model (same objects), and exactly these
    assert got == expected
    assert got <= _param_ids(model)
    assert not got & _param_ids(model.pooler)
    assert not got & _param_ids(target.out_proj)
    for i in range(index + 1, len(layers)):
        assert not got & _param_ids(layers[i])
    n_model = len(model.parameters())
    n_extractor = len(extractor.parameters())
    # embeddings: word, position, token type, layer norm (2); each encoder layer: 16; q/k/v: 6
    assert n_extractor == 5 + 16 * index + 6
    assert n_model == 5 + 16 * len(layers) + 2


def test_build_encoder_from_sizes():
    model = tiny_encoder()
    cfg = model.config
    assert cfg.num_hidden_layers == 3
    assert cfg.hidden_size == 48
    assert cfg.num_attention_heads == 4
    assert cfg.intermediate_size == 96
    assert cfg.vocab_size == VOCAB
    assert cfg.use_task_id is False
    assert not hasattr(model.embeddings, "task_type_embeddings")
    assert len(model.encoder.layers) == 3
    assert model.encoder.layers[0].linear1.weight.shape == [48, 96]
    assert model.encoder.layers[0].self_attn.num_heads == 4
    assert model.embeddings.word_embeddings.weight.shape == [VOCAB, 48]
    # an explicit vocab_size in the section wins over the tokenizer's size
    assert tiny_encoder(vocab_size=120).config.vocab_size == 120


def test_build_encoder_from_saved_directory(tmp_path):
    model = tiny_encoder(seed=1)
    model.save_pretrained(str(tmp_path), safe_serialization=True)
    assert any(name.endswith(".safetensors") for name in os.listdir(tmp_path))
    paddle.seed(2)  # a random initialisation would differ from the saved weights
    loaded = build_encoder(ModelSection(name_or_path=str(tmp_path)), vocab_size=999)
    assert loaded.config.vocab_size == VOCAB
    assert loaded.config.num_hidden_layers == 3 and loaded.config.hidden_size == 48
    saved_state, loaded_state = model.state_dict(), loaded.state_dict()
    assert set(saved_state) == set(loaded_state)
    for name, value in saved_state.items():
        np.testing.assert_array_equal(loaded_state[name].numpy(), value.numpy(), err_msg=name)
    model.eval()
    loaded.eval()
    ids, mask = padded_batch()
    with paddle.no_grad():
        np.testing.assert_allclose(loaded(ids, attention_mask=mask)[0].numpy(),
                                   model(ids, attention_mask=mask)[0].numpy(), atol=1e-6)

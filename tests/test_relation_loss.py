"""relation_loss / relation_losses (MiniLMv2 Q-Q, K-K, V-V relation distillation).

The reference below is written from the contract, in float64 NumPy, one example at a time,
with padding keys removed (not masked) and padding queries skipped.
"""
import contextlib

import numpy as np
import paddle
import pytest

from ernie_tiny.distill.loss import relation_loss, relation_losses

BATCH, SEQ = 3, 7
STUDENT_HIDDEN, TEACHER_HIDDEN, R = 24, 36, 6
LENGTHS = [7, 4, 2]  # different real lengths per example; the first has no padding


def _mask(lengths, seq):
    return np.array([[1] * n + [0] * (seq - n) for n in lengths], dtype="int64")


def _qkv(rng, batch, seq, hidden, scale=1.0):
    return [rng.standard_normal((batch, seq, hidden)) * scale for _ in range(3)]


def _t(arrays, stop_gradient=True):
    out = [paddle.to_tensor(a.astype("float32")) for a in arrays]
    for t in out:
        t.stop_gradient = stop_gradient
    return out


def _log_softmax(z):
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def reference_relation_losses(student_qkv, teacher_qkv, mask, relation_heads):
    """Float64 reference: one loss per relation (Q, K, V)."""
    mask = np.asarray(mask).astype(bool)
    n_real_queries = mask.sum()
    losses = []
    for s, t in zip(student_qkv, teacher_qkv):
        total = 0.0
        for b in range(s.shape[0]):
            real = mask[b]
            x_s, x_t = s[b][real].astype(np.float64), t[b][real].astype(np.float64)  # [real tokens, hidden]
            ds, dt = x_s.shape[1] // relation_heads, x_t.shape[1] // relation_heads
            for r in range(relation_heads):
                hs = x_s[:, r * ds:(r + 1) * ds]
                ht = x_t[:, r * dt:(r + 1) * dt]
                log_ps = _log_softmax(hs @ hs.T / np.sqrt(ds))  # only real keys exist here
                log_pt = _log_softmax(ht @ ht.T / np.sqrt(dt))
                kl_rows = (np.exp(log_pt) * (log_pt - log_ps)).sum(axis=-1)  # one per real query
                total += kl_rows.sum()
        losses.append(total / (relation_heads * n_real_queries))
    return losses


@pytest.fixture
def padded_inputs():
    rng = np.random.default_rng(0)
    s = _qkv(rng, BATCH, SEQ, STUDENT_HIDDEN)
    t = _qkv(rng, BATCH, SEQ, TEACHER_HIDDEN, scale=1.5)
    return s, t, _mask(LENGTHS, SEQ)


def test_matches_numpy_reference_with_padding_and_different_hidden_sizes(padded_inputs):
    s, t, mask = padded_inputs
    expected = reference_relation_losses(s, t, mask, R)
    got = relation_losses(_t(s), _t(t), paddle.to_tensor(mask), R)
    assert len(got) == 3
    np.testing.assert_allclose([float(g) for g in got], expected, rtol=1e-5)
    total = float(relation_loss(_t(s), _t(t), paddle.to_tensor(mask), R))
    np.testing.assert_allclose(total, sum(expected), rtol=1e-5)
    # sanity: the reference is not degenerate, and a per-example average would differ
    assert sum(expected) > 1e-2


def test_averages_over_real_tokens_of_the_whole_batch_not_per_example(padded_inputs):
    """Weighting every real query token equally differs from averaging per-example means."""
    s, t, mask = padded_inputs
    per_example = [
        sum(reference_relation_losses([x[b:b + 1] for x in s], [x[b:b + 1] for x in t], mask[b:b + 1], R))
        for b in range(BATCH)
    ]
    token_weighted = np.dot(per_example, LENGTHS) / sum(LENGTHS)
    got = float(relation_loss(_t(s), _t(t), paddle.to_tensor(mask), R))
    np.testing.assert_allclose(got, token_weighted, rtol=1e-5)
    assert abs(np.mean(per_example) - token_weighted) > 1e-3 * token_weighted


def test_zero_for_identical_activations_and_positive_otherwise(padded_inputs):
    s, _, mask = padded_inputs
    m = paddle.to_tensor(mask)
    same = float(relation_loss(_t(s), _t(s), m, R))
    assert abs(same) < 1e-6
    rng = np.random.default_rng(1)
    other = [x + 0.3 * rng.standard_normal(x.shape) for x in s]
    different = relation_losses(_t(other), _t(s), m, R)
    assert all(float(v) > 1e-6 for v in different)


def test_padded_values_do_not_matter(padded_inputs):
    s, t, mask = padded_inputs
    m = paddle.to_tensor(mask)
    base = float(relation_loss(_t(s), _t(t), m, R))
    rng = np.random.default_rng(2)
    pad = ~mask.astype(bool)
    s2 = [x.copy() for x in s]
    t2 = [x.copy() for x in t]
    for x in s2 + t2:
        x[pad] = rng.standard_normal((pad.sum(), x.shape[-1])) * 50.0
    changed = float(relation_loss(_t(s2), _t(t2), m, R))
    assert np.isfinite(changed)
    np.testing.assert_allclose(changed, base, rtol=1e-6)


def test_appending_padded_positions_does_not_change_loss(padded_inputs):
    s, t, mask = padded_inputs
    base = float(relation_loss(_t(s), _t(t), paddle.to_tensor(mask), R))
    extra = 5
    rng = np.random.default_rng(3)
    s2 = [np.concatenate([x, rng.standard_normal((BATCH, extra, x.shape[-1])) * 3], axis=1) for x in s]
    t2 = [np.concatenate([x, rng.standard_normal((BATCH, extra, x.shape[-1])) * 3], axis=1) for x in t]
    mask2 = np.concatenate([mask, np.zeros((BATCH, extra), dtype=mask.dtype)], axis=1)
    longer = float(relation_loss(_t(s2), _t(t2), paddle.to_tensor(mask2), R))
    np.testing.assert_allclose(longer, base, rtol=1e-5)


def test_relation_losses_sum_to_relation_loss(padded_inputs):
    s, t, mask = padded_inputs
    m = paddle.to_tensor(mask)
    parts = relation_losses(_t(s), _t(t), m, R)
    assert len(parts) == 3
    assert all(p.size == 1 for p in parts)
    # Q, K, V are different relations, so their losses are different
    assert len({round(float(p), 6) for p in parts}) == 3
    np.testing.assert_allclose(sum(float(p) for p in parts), float(relation_loss(_t(s), _t(t), m, R)), rtol=1e-6)


def _heads(x, num_heads):
    """[batch, seq, hidden] -> [batch, heads, seq, hidden / heads], as attention splits it."""
    b, n, h = x.shape
    return paddle.to_tensor(x.astype("float32")).reshape([b, n, num_heads, h // num_heads]).transpose([0, 2, 1, 3])


@pytest.mark.parametrize("student_heads, teacher_heads", [(4, 3), (R, R), (12, 2)])
def test_agrees_with_paddlenlp_calc_minilm_loss_without_padding(student_heads, teacher_heads):
    from paddlenlp.transformers.distill_utils import calc_minilm_loss

    rng = np.random.default_rng(4)
    batch, seq = 2, 6
    s = _qkv(rng, batch, seq, STUDENT_HIDDEN)
    t = _qkv(rng, batch, seq, TEACHER_HIDDEN, scale=1.5)
    loss_fct = paddle.nn.KLDivLoss(reduction="sum")
    attn_mask = paddle.zeros([batch, 1, 1, seq], dtype="float32")
    theirs = sum(
        float(calc_minilm_loss(loss_fct, _heads(xs, student_heads), _heads(xt, teacher_heads), attn_mask, R))
        for xs, xt in zip(s, t)
    ) / (R * seq * batch)
    ours = float(relation_loss(_t(s), _t(t), paddle.to_tensor(np.ones((batch, seq), dtype="int64")), R))
    assert theirs > 1e-2
    np.testing.assert_allclose(ours, theirs, rtol=1e-5)


@pytest.mark.parametrize("bad_heads", [5, 8])  # 5 divides neither 24 nor 36; 8 divides 24 but not 36
def test_relation_heads_must_divide_both_hidden_sizes(padded_inputs, bad_heads):
    s, t, mask = padded_inputs
    with pytest.raises(ValueError, match="relation_heads"):
        relation_loss(_t(s), _t(t), paddle.to_tensor(mask), bad_heads)
    with pytest.raises(ValueError, match="relation_heads"):
        relation_losses(_t(t), _t(s), paddle.to_tensor(mask), bad_heads)


def test_gradients_reach_the_students_real_positions_only(padded_inputs):
    s, t, mask = padded_inputs
    student = _t(s, stop_gradient=False)
    loss = relation_loss(student, _t(t), paddle.to_tensor(mask), R)
    assert not loss.stop_gradient
    loss.backward()
    pad = ~mask.astype(bool)
    for x in student:
        assert x.grad is not None
        g = x.grad.numpy()
        assert np.isfinite(g).all()
        assert np.abs(g[~pad]).max() > 1e-6
        # padded positions take no part in the loss, so they get no gradient
        assert np.abs(g[pad]).max() < 1e-8


def test_a_teacher_that_requires_gradients_gets_none_and_the_student_the_same(padded_inputs):
    """The teacher is frozen: even teacher tensors that require a gradient (an eager teacher built
    without no_grad) get none, and the student's gradients do not change."""
    s, t, mask = padded_inputs
    expected = _t(s, stop_gradient=False)
    relation_loss(expected, _t(t), paddle.to_tensor(mask), R).backward()
    student, teacher = _t(s, stop_gradient=False), _t(t, stop_gradient=False)
    relation_loss(student, teacher, paddle.to_tensor(mask), R).backward()
    assert all(x.grad is None for x in teacher)
    for got, want in zip(student, expected):
        np.testing.assert_array_equal(got.grad.numpy(), want.grad.numpy())


def _autograd_reference_loss(student, teacher, mask, relation_heads):
    """The loss written the plain way (log_softmax, KL with 0 log 0 = 0), float64, for autograd."""
    mask = paddle.to_tensor(mask.astype("float64"))
    bias = ((1.0 - mask) * -1e9).unsqueeze([1, 2])
    weight = mask.unsqueeze(1) / (relation_heads * mask.sum())
    total = 0.0
    for x_s, x_t in zip(student, teacher):
        def log_p(x):
            b, n, h = x.shape
            x = x.reshape([b, n, relation_heads, h // relation_heads]).transpose([0, 2, 1, 3])
            return paddle.nn.functional.log_softmax(paddle.matmul(x, x, transpose_y=True) / np.sqrt(h // relation_heads)
                                                    + bias, axis=-1)
        log_pt = log_p(x_t)
        p_t = paddle.exp(log_pt)
        kl = paddle.where(p_t > 0, p_t * (log_pt - log_p(x_s)), paddle.zeros_like(p_t)).sum(axis=-1)
        total = total + (kl * weight).sum()
    return total


def test_the_hand_written_gradient_equals_autograd_of_the_plain_loss(padded_inputs):
    """``_RelationKL`` gives autograd softmax(s) - p_t directly: it must agree with
    differentiating log_softmax + KL in float64, padding included."""
    s, t, mask = padded_inputs
    student = _t(s, stop_gradient=False)
    relation_loss(student, _t(t), paddle.to_tensor(mask), R).backward()
    reference = [paddle.to_tensor(x) for x in s]
    for x in reference:
        x.stop_gradient = False
    _autograd_reference_loss(reference, [paddle.to_tensor(x) for x in t], mask, R).backward()
    for got, expected in zip(student, reference):
        np.testing.assert_allclose(got.grad.numpy(), expected.grad.numpy(), rtol=1e-4, atol=1e-7)

# ---- AMP: the loss runs in float32 with autocast off (issue 13, point 1) ----

@contextlib.contextmanager
def tracer_in_o1_autocast(dtype: str):
    """The tracer state ``paddle.amp.auto_cast(level="O1", dtype=dtype)`` sets on a GPU
    (paddle/amp/auto_cast.py, ``amp_guard``: level, dtype and Paddle's O1 op lists). On CPU
    ``auto_cast`` switches itself off, so the state is set directly, as amp_guard does."""
    from paddle.amp.auto_cast import AMP_LEVEL, _update_list
    from paddle.base.framework import _dygraph_tracer

    tracer = _dygraph_tracer()
    saved = tracer._amp_level, tracer._amp_dtype, tracer._get_amp_op_list()
    white, black = _update_list(None, None, "O1", dtype)
    assert "matmul_v2" in white and "softmax" in black  # why the loss must switch autocast off
    tracer._amp_level, tracer._amp_dtype = AMP_LEVEL.O1, dtype
    tracer._set_amp_op_list(white, black)
    try:
        yield tracer
    finally:
        tracer._amp_level, tracer._amp_dtype = saved[0], saved[1]
        tracer._set_amp_op_list(*saved[2])


def test_under_bf16_autocast_the_loss_equals_the_float32_loss(padded_inputs):
    s, t, mask = padded_inputs
    expected = [float(v) for v in relation_losses(_t(s), _t(t), paddle.to_tensor(mask), R)]
    with paddle.amp.auto_cast(level="O1", dtype="bfloat16"):
        got = relation_losses(_t(s), _t(t), paddle.to_tensor(mask), R)
    assert all(v.dtype == paddle.float32 for v in got)
    np.testing.assert_allclose([float(v) for v in got], expected, rtol=1e-6)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_every_matmul_and_softmax_of_the_loss_runs_with_autocast_off(padded_inputs, monkeypatch, dtype):
    """Inside an O1 autocast (as on GPU), the loss's own ops see AMP level O0, and the caller's
    autocast is back on afterwards (for the rest of the step)."""
    from paddle.amp.auto_cast import AMP_LEVEL
    from paddle.base.framework import _dygraph_tracer

    import ernie_tiny.distill.loss as loss_module

    levels = []

    def spy(name, fn):
        def wrapped(*args, **kwargs):
            levels.append((name, _dygraph_tracer()._amp_level))
            return fn(*args, **kwargs)
        return wrapped

    monkeypatch.setattr(loss_module.paddle, "matmul", spy("matmul", paddle.matmul))
    monkeypatch.setattr(loss_module.F, "softmax", spy("softmax", loss_module.F.softmax))
    s, t, mask = padded_inputs
    expected = float(relation_loss(_t(s), _t(t), paddle.to_tensor(mask), R))
    levels.clear()
    with tracer_in_o1_autocast(dtype) as tracer:
        got = relation_loss(_t(s, stop_gradient=False), _t(t), paddle.to_tensor(mask), R)
        assert tracer._amp_level == AMP_LEVEL.O1
    assert sorted({name for name, _ in levels}) == ["matmul", "softmax"]
    assert len(levels) == 3 * 4  # Q, K, V: two matmuls and two softmaxes each (teacher, student)
    assert all(level == AMP_LEVEL.O0 for _, level in levels), levels
    np.testing.assert_allclose(float(got), expected, rtol=1e-6)
    got.backward()  # the loss stays differentiable for the student


def test_no_mask_means_no_padding_and_equals_the_reference():
    rng = np.random.default_rng(11)
    s, t = _qkv(rng, BATCH, SEQ, STUDENT_HIDDEN), _qkv(rng, BATCH, SEQ, TEACHER_HIDDEN)
    full = np.ones((BATCH, SEQ), dtype="int64")
    expected = reference_relation_losses(s, t, full, R)
    without = relation_losses(_t(s), _t(t), None, R)
    with_ones = relation_losses(_t(s), _t(t), paddle.to_tensor(full), R)
    np.testing.assert_allclose([float(x) for x in without], expected, rtol=1e-5)
    np.testing.assert_allclose([float(x) for x in without], [float(x) for x in with_ones], rtol=1e-6)


def test_teacher_relations_computed_once_serve_students_of_any_width():
    from ernie_tiny.distill.loss import relation_losses_to, teacher_relations

    rng = np.random.default_rng(12)
    t = _t(_qkv(rng, BATCH, SEQ, TEACHER_HIDDEN))
    mask = paddle.to_tensor(_mask(LENGTHS, SEQ))
    shared = teacher_relations(t, mask, R)
    for hidden in (STUDENT_HIDDEN, 12, 48):
        s = _t(_qkv(rng, BATCH, SEQ, hidden), stop_gradient=False)
        np.testing.assert_allclose([float(x) for x in relation_losses_to(s, shared, mask, R)],
                                   [float(x) for x in relation_losses(s, t, mask, R)], rtol=1e-6)

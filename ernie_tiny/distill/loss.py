"""MiniLMv2 multi-head self-attention relation loss (Q-Q, K-K, V-V).

For one of Q, K, V with activations X of shape [batch, seq, hidden] (before the attention
head split): re-split the hidden size into R relation heads X_r, form the relation
``softmax(X_r X_r^T / sqrt(hidden / R))`` over the keys, padding keys masked out, and take
KL(teacher || student) for every query row. The result averages over the R relation heads
and over the real (non-padding) query tokens of the whole batch; the three relations are summed.

(PaddleNLP's ``calc_minilm_loss`` example divides by R x padded length x batch instead, so
padded query rows count there; on inputs without padding the two agree.)

The loss always runs in float32 with autocast off, whatever AMP the forward pass used:
``matmul`` is on Paddle's AMP white list (paddle/amp/amp_lists.py), so under the trainer's O1
``auto_cast`` it would run in fp16/bf16 even on float32 inputs. Teacher scores of a 128-wide
relation head reach ~1e3; bf16 rounds them by ~0.35 before the softmax, and fp16 overflows to
inf on large activations (softmax NaN, every step skipped by the loss scaler). Each side is
scaled by d^-1/4 before the product, so the product itself is already X X^T / sqrt(d).

Per query row, with teacher distribution p and student scores s (z = s - max s, so that
softmax(z) = softmax(s) and logsumexp(z) = -log max softmax(s)):
``KL(p || softmax(s)) = sum p log p - sum p z - log max softmax(s)``, and its gradient with
respect to s is ``softmax(s) - p``. ``_RelationKL`` computes exactly that with Paddle's fast
softmax kernel and hands autograd the gradient directly: Paddle's CPU ``log_softmax`` +
``kl_div`` and their backward took about twice as long (the benchmark before and after:
docs/results/distill_speed/before-relation-kl-39862c4.md and distill_speed.md).
The teacher's ``sum p log p`` is computed once per teacher distribution (``TeacherRelation``),
whichever students use it, in eager Paddle: inside Paddle Inference's graph the same ops made
the compiled teacher's pass slower by more than they cost eagerly.
"""
from __future__ import annotations

from typing import List, NamedTuple, Optional, Sequence

import paddle
import paddle.nn.functional as F

_MASKED = -1e9  # added to the scores of padding keys (the loss works in float32)


def _relation_scores(x: paddle.Tensor, relation_heads: int, key_bias: Optional[paddle.Tensor]) -> paddle.Tensor:
    """[batch, seq, hidden] -> X_r X_r^T / sqrt(d_r) + key bias, shape [batch, R, seq, seq]
    (float32; call with autocast off). ``key_bias`` None: no padding keys."""
    batch, seq, hidden = x.shape
    head_dim = hidden // relation_heads
    x = x.astype("float32").reshape([batch, seq, relation_heads, head_dim]).transpose([0, 2, 1, 3])
    x = x * (head_dim ** -0.25)  # d^-1/4 on each side: the product is X X^T / sqrt(d), never larger
    scores = paddle.matmul(x, x, transpose_y=True)
    return scores if key_bias is None else scores + key_bias


def check_shapes(student_qkv, teacher_qkv, relation_heads: int) -> None:
    if len(student_qkv) != len(teacher_qkv):
        raise ValueError(f"{len(student_qkv)} student relations but {len(teacher_qkv)} teacher relations")
    for s, t in zip(student_qkv, teacher_qkv):
        if s.shape[:2] != t.shape[:2]:
            raise ValueError(f"student {s.shape} and teacher {t.shape} differ in batch or sequence length")
        for name, h in (("student", s.shape[-1]), ("teacher", t.shape[-1])):
            if h % relation_heads:
                raise ValueError(f"relation_heads={relation_heads} does not divide the {name} hidden size {h}")


def _key_bias(attention_mask: Optional[paddle.Tensor]) -> Optional[paddle.Tensor]:
    if attention_mask is None:
        return None
    return ((1.0 - attention_mask.astype("float32")) * _MASKED).unsqueeze([1, 2])  # [batch, 1, 1, seq]


class TeacherRelation(NamedTuple):
    """One teacher relation of a batch: its distribution p ([batch, R, seq, seq], over the keys)
    and ``plogp`` = sum over the keys of p log p per query row ([batch, R, seq]; minus the entropy)."""

    distribution: paddle.Tensor
    plogp: paddle.Tensor


_TINY = 1.1754944e-38  # the smallest normal float32: p log p is 0 where p is 0


def with_plogp(distributions: Sequence[paddle.Tensor]) -> List[TeacherRelation]:
    """Each teacher distribution with its per-row sum of p log p (0 log 0 = 0)."""
    with paddle.amp.auto_cast(enable=False):
        return [TeacherRelation(p, (p * paddle.log(paddle.clip(p, min=_TINY))).sum(axis=-1)) for p in distributions]


def teacher_distributions(teacher_qkv: Sequence[paddle.Tensor], attention_mask: Optional[paddle.Tensor],
                          relation_heads: int) -> List[paddle.Tensor]:
    """The teacher's Q-Q, K-K, V-V relation distributions ([batch, R, seq, seq] each, float32).
    ``attention_mask`` None means no padding (packed sequences)."""
    with paddle.amp.auto_cast(enable=False):
        bias = _key_bias(attention_mask)
        return [F.softmax(_relation_scores(t, relation_heads, bias), axis=-1) for t in teacher_qkv]


def teacher_relations(teacher_qkv: Sequence[paddle.Tensor], attention_mask: Optional[paddle.Tensor],
                      relation_heads: int) -> List[TeacherRelation]:
    """What the loss needs of the teacher, computed once per batch and relation-head count,
    whichever students learn from it."""
    return with_plogp(teacher_distributions(teacher_qkv, attention_mask, relation_heads))


class _RelationKL(paddle.autograd.PyLayer):
    """sum over rows of weight x KL(p_t || softmax(scores)); gradient (softmax(scores) - p_t) x weight.
    ``weight``: a float, or a [batch, 1, seq] tensor (per query row)."""

    @staticmethod
    def forward(ctx, scores, p_t, plogp_t, weight):
        p_s = F.softmax(scores, axis=-1)
        z = scores - scores.max(axis=-1, keepdim=True)
        # KL = sum p_t log p_t - sum p_t log p_s, log p_s = z - logsumexp(z), logsumexp(z) = -log max p_s
        kl_rows = plogp_t - (p_t * z).sum(axis=-1) - paddle.log(p_s.max(axis=-1))
        ctx.save_for_backward(p_s, p_t)
        ctx.weight = weight
        return (kl_rows * weight).sum()

    @staticmethod
    def backward(ctx, grad):
        p_s, p_t = ctx.saved_tensor()
        if isinstance(ctx.weight, float):
            return (p_s - p_t) * (grad * ctx.weight), None, None
        return (p_s - p_t) * (grad * ctx.weight.unsqueeze(-1)), None, None, None  # weight [batch, 1, seq, 1]


def relation_losses_to(
    student_qkv: Sequence[paddle.Tensor],
    teacher: Sequence[TeacherRelation],
    attention_mask: Optional[paddle.Tensor],
    relation_heads: int,
) -> List[paddle.Tensor]:
    """The Q-Q, K-K and V-V losses against ``teacher_relations``' output."""
    with paddle.amp.auto_cast(enable=False):
        bias = _key_bias(attention_mask)
        if attention_mask is None:  # every query row counts
            batch, seq = student_qkv[0].shape[:2]
            query_weight = 1.0 / (relation_heads * batch * seq)
        else:
            mask = attention_mask.astype("float32")  # [batch, seq]
            query_weight = (mask / (relation_heads * mask.sum())).unsqueeze(1)  # [batch, 1, seq]
        # the teacher is frozen: its side never gets a gradient (detached, so a teacher tensor that
        # happens to require one is not handed a None gradient by the PyLayer's backward)
        return [_RelationKL.apply(_relation_scores(s, relation_heads, bias), t.distribution.detach(), t.plogp.detach(),
                                  query_weight)
                for s, t in zip(student_qkv, teacher)]


def relation_losses(
    student_qkv: Sequence[paddle.Tensor],
    teacher_qkv: Sequence[paddle.Tensor],
    attention_mask: Optional[paddle.Tensor],
    relation_heads: int,
) -> List[paddle.Tensor]:
    """The Q-Q, K-K and V-V losses (one float32 scalar each, computed with autocast off);
    see the module docstring. ``attention_mask`` None: no padding (skips the key masking)."""
    check_shapes(student_qkv, teacher_qkv, relation_heads)
    return relation_losses_to(student_qkv, teacher_relations(teacher_qkv, attention_mask, relation_heads),
                              attention_mask, relation_heads)


def relation_loss(
    student_qkv: Sequence[paddle.Tensor],
    teacher_qkv: Sequence[paddle.Tensor],
    attention_mask: paddle.Tensor,
    relation_heads: int,
) -> paddle.Tensor:
    """KL(teacher || student) averaged over relation heads and real query tokens, summed over Q, K, V."""
    return paddle.add_n(relation_losses(student_qkv, teacher_qkv, attention_mask, relation_heads))

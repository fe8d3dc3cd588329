"""Build ERNIE encoders (PaddleNLP ``ErnieModel``) and take one layer's Q/K/V from them.

An encoder comes from a PaddleNLP name (``ernie-3.0-base-zh``), a local ``save_pretrained``
directory, or explicit sizes (random initialisation). ``QKVExtractor`` is the part of an
encoder that produces one layer's query/key/value projections: the embeddings, the layers
below, and that layer's three projections, sharing their parameters with the encoder. Nothing
above is run, and everything in it takes part in the result, so ``paddle.DataParallel``
sees no unused parameter.
"""
from __future__ import annotations

from typing import Optional, Tuple

import paddle
import paddle.nn as nn
from paddlenlp.transformers import ErnieConfig, ErnieModel

from ernie_tiny.schema import ModelSection


def build_encoder(spec: ModelSection, vocab_size: int, pad_token_id: int = 0) -> ErnieModel:
    """An ``ErnieModel`` from ``spec.name_or_path`` or, when that is empty, from the sizes."""
    if spec.name_or_path:
        return ErnieModel.from_pretrained(spec.name_or_path)
    return ErnieModel(encoder_config(spec, vocab_size, pad_token_id))


def encoder_config(spec: ModelSection, vocab_size: int, pad_token_id: int = 0) -> ErnieConfig:
    """The ``ErnieConfig`` of ``spec``'s sizes (``spec.vocab_size``, or 0: ``vocab_size``); any
    ERNIE class builds from it (``ErnieModel``, ``ErnieForMaskedLM``, ...)."""
    return ErnieConfig(
        vocab_size=spec.vocab_size or vocab_size,
        hidden_size=spec.hidden_size,
        num_hidden_layers=spec.num_layers,
        num_attention_heads=spec.num_heads,
        intermediate_size=spec.intermediate_size,
        hidden_act="gelu",
        hidden_dropout_prob=spec.hidden_dropout,
        attention_probs_dropout_prob=spec.attention_dropout,
        max_position_embeddings=spec.max_position_embeddings,
        type_vocab_size=spec.type_vocab_size,
        pad_token_id=pad_token_id,
        use_task_id=False,
    )


def encoder_sizes(model: ErnieModel) -> dict:
    return {"num_layers": model.config.num_hidden_layers, "hidden_size": model.config.hidden_size}


def additive_attention_mask(attention_mask: paddle.Tensor, dtype: str = "float32") -> paddle.Tensor:
    """[batch, seq] 1/0 -> [batch, 1, 1, seq] 0/-1e4, as ``ErnieModel`` builds it."""
    return ((1.0 - attention_mask.astype(dtype)) * -1e4).unsqueeze([1, 2])


class QKVExtractor(nn.Layer):
    """Layer ``layer_index``'s Q, K, V activations ([batch, seq, hidden] each, before the
    head split) of an ERNIE encoder, computed without the layers above it."""

    def __init__(self, encoder: ErnieModel, layer_index: int = -1):
        super().__init__()
        layers = encoder.encoder.layers
        index = layer_index % len(layers)
        self.embeddings = encoder.embeddings
        self.layers = nn.LayerList([layers[i] for i in range(index)])
        target = layers[index]
        # ERNIE is post-norm: the attention reads the layer input as is
        self.pre_norm = target.norm1 if target.normalize_before else None
        attention = target.self_attn
        self.q_proj, self.k_proj, self.v_proj = attention.q_proj, attention.k_proj, attention.v_proj

    def forward(
        self, input_ids: paddle.Tensor, attention_mask: paddle.Tensor, token_type_ids: Optional[paddle.Tensor] = None
    ) -> Tuple[paddle.Tensor, paddle.Tensor, paddle.Tensor]:
        x = self.embeddings(input_ids=input_ids, token_type_ids=token_type_ids)
        mask = additive_attention_mask(attention_mask, x.dtype)
        for layer in self.layers:
            x = layer(x, src_mask=mask)
        if self.pre_norm is not None:
            x = self.pre_norm(x)
        return self.q_proj(x), self.k_proj(x), self.v_proj(x)

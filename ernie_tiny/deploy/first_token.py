"""The inference graph of a sequence classifier that computes only what its logits read.

A sequence head reads the pooled ``[CLS]`` vector, the first token of the last layer. In the last
encoder layer the other tokens are only keys and values of that token's attention: their queries,
attention outputs, output projection and feed-forward are computed and then dropped. This graph
runs the last layer for the first token alone (its attention still sees every token), with the
model's own weights, so the logits are the eager model's (to float rounding) and a 4-layer student
does ~20% fewer multiply-adds per call.

``FirstTokenClassifier(model)(input_ids, token_type_ids) -> logits`` for PaddleNLP
``ErnieForSequenceClassification``; padding is masked from ``pad_token_id`` as ERNIE does when it
gets no attention mask. ``applies(model)`` says whether a model has the layout this relies on.
"""
from __future__ import annotations

import paddle
from paddle import nn


def applies(model) -> bool:
    """A PaddleNLP ``ErnieForSequenceClassification`` over ``paddle.nn.TransformerEncoder`` layers
    (token, question-answering and multiple-choice heads read other tokens too)."""
    from paddlenlp.transformers import ErnieForSequenceClassification

    encoder = getattr(getattr(model, "ernie", None), "encoder", None)
    return (isinstance(model, ErnieForSequenceClassification) and isinstance(encoder, nn.TransformerEncoder)
            and all(isinstance(layer, nn.TransformerEncoderLayer) for layer in encoder.layers))


def first_token_layer(layer: nn.TransformerEncoderLayer, hidden, mask):
    """``layer(hidden, mask)[:, :1]``, computing the first token's row only."""
    query, residual = hidden[:, :1], hidden[:, :1]
    if layer.normalize_before:
        hidden = layer.norm1(hidden)
        query = hidden[:, :1]
    out = residual + layer.dropout1(layer.self_attn(query, hidden, hidden, mask))
    if not layer.normalize_before:
        out = layer.norm1(out)
    residual = out
    if layer.normalize_before:
        out = layer.norm2(out)
    out = residual + layer.dropout2(layer.linear2(layer.dropout(layer.activation(layer.linear1(out)))))
    if not layer.normalize_before:
        out = layer.norm2(out)
    return out


class FirstTokenClassifier(nn.Layer):
    """The classifier's logits, the last encoder layer run for the first token only."""

    def __init__(self, model):
        super().__init__()
        if not applies(model):
            raise TypeError(f"{type(model).__name__} is not an ERNIE sequence classifier over "
                            f"paddle.nn.TransformerEncoderLayer layers")
        self.model = model

    def forward(self, input_ids, token_type_ids):
        ernie = self.model.ernie
        # the padding mask as PaddleNLP's ErnieModel.forward builds it when given none
        mask = paddle.unsqueeze((input_ids == ernie.pad_token_id).astype(ernie.pooler.dense.weight.dtype) * -1e4,
                                axis=[1, 2])
        hidden = ernie.embeddings(input_ids=input_ids, token_type_ids=token_type_ids)
        *layers, last = ernie.encoder.layers
        for layer in layers:
            hidden = layer(hidden, mask)
        first = first_token_layer(last, hidden, mask)
        if ernie.encoder.norm is not None:
            first = ernie.encoder.norm(first)
        pooled = ernie.pooler(first)
        return self.model.classifier(self.model.dropout(pooled))

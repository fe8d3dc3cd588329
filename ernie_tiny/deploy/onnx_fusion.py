"""The fused inference graph: onnxruntime's transformer optimizer on the paddle2onnx export.

``onnxruntime.transformers.optimizer.optimize_model(model_type="bert")`` fuses, on the plain
paddle2onnx graph, EmbedLayerNormalization, SkipLayerNormalization and BiasGelu but **not
Attention**: its ``FusionAttention`` looks for the Hugging Face BERT pattern, and paddle2onnx
writes ERNIE's attention differently in two places:

* the scale: Paddle scales Q before ``Q @ K^T`` (``Mul(Q, 1/sqrt(d))`` then ``Add(0)``, Paddle's
  ``scale`` op), while the optimizer wants ``MatMul -> Div(sqrt(d)) -> Add(mask) -> Softmax``;
* the mask: built inside the graph from ``input_ids == pad_token_id`` (``Equal -> Cast ->
  Mul(-1e4) -> Add(0) -> Unsqueeze``), while the optimizer wants a 2-D keep-mask going through
  ``Unsqueeze -> Unsqueeze -> Cast -> Sub(1, .) -> Mul(-1e4)``.

A different opset or paddle2onnx option writes the same ops, so ``rewrite_attention`` rewrites
those two spots into the expected pattern (same arithmetic: ``(Q s) K^T = (Q K^T) / (1/s)`` and
``[id == pad] = 1 - [id != pad]``) before the optimizer runs; the attention then fuses too.
The fused Attention gets the raw 2-D mask (not a per-row length), so any padding layout stays
exact. ``opt_level=0``: from 1 on, the optimizer imports torch (not installed here) for a
version check; onnxruntime's own session-level optimizations still run when the model loads.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Dict

import numpy as np

from ernie_tiny.monitor import quiet_logger

FUSED_OPS = ("Attention", "SkipLayerNormalization", "BiasGelu", "EmbedLayerNormalization")


def _scalar(onnx_model, name: str):
    """The value of a one-element constant or initializer; None for anything else."""
    value = onnx_model.get_constant_value(name)
    return float(value.reshape(-1)[0]) if value is not None and value.size == 1 else None


def rewrite_attention(onnx_model) -> int:
    """Rewrite, in place, paddle2onnx's attention scale and padding mask into the pattern
    onnxruntime's FusionAttention matches (see the module doc); returns the number of attention
    blocks rewritten. ``onnx_model``: onnxruntime's ``OnnxModel`` after Identity nodes are gone
    (optimizer pass 1)."""
    from onnx import TensorProto, helper, numpy_helper

    graph = onnx_model.model.graph
    producer = {out: node for node in graph.node for out in node.output}
    ids = next((i.name for i in graph.input if i.name == "input_ids"), None)
    new_nodes, new_inits, rewritten, mask = [], [], 0, None
    drop = set()

    def make_mask(equal_node) -> str:
        """``-1e4 * (1 - keep)`` through Unsqueeze/Unsqueeze/Cast/Sub/Mul, from the graph's Equal."""
        names = {k: f"fusion.mask.{k}" for k in ("not", "keep", "u1", "u2", "float", "pad", "bias", "ax1", "ax2",
                                                 "one", "big")}
        new_inits.extend([numpy_helper.from_array(np.array([1], np.int64), names["ax1"]),
                          numpy_helper.from_array(np.array([2], np.int64), names["ax2"]),
                          numpy_helper.from_array(np.array(1.0, np.float32), names["one"]),
                          numpy_helper.from_array(np.array(-10000.0, np.float32), names["big"])])
        new_nodes.extend([
            helper.make_node("Not", [equal_node.output[0]], [names["not"]], name="fusion_mask_not"),
            helper.make_node("Cast", [names["not"]], [names["keep"]], to=TensorProto.INT64, name="fusion_mask_keep"),
            helper.make_node("Unsqueeze", [names["keep"], names["ax1"]], [names["u1"]], name="fusion_mask_u1"),
            helper.make_node("Unsqueeze", [names["u1"], names["ax2"]], [names["u2"]], name="fusion_mask_u2"),
            helper.make_node("Cast", [names["u2"]], [names["float"]], to=TensorProto.FLOAT, name="fusion_mask_cast"),
            helper.make_node("Sub", [names["one"], names["float"]], [names["pad"]], name="fusion_mask_sub"),
            helper.make_node("Mul", [names["pad"], names["big"]], [names["bias"]], name="fusion_mask_mul"),
        ])
        return names["bias"]

    for softmax in [n for n in graph.node if n.op_type == "Softmax"]:
        add_mask = producer.get(softmax.input[0])
        if add_mask is None or add_mask.op_type != "Add":
            continue
        matmul_qk = producer.get(add_mask.input[0])
        unsqueeze = producer.get(add_mask.input[1])
        if matmul_qk is None or matmul_qk.op_type != "MatMul" or unsqueeze is None or unsqueeze.op_type != "Unsqueeze":
            continue
        add_zero = producer.get(matmul_qk.input[0])  # Paddle's scale(Q): Mul(Q, s) then Add(0)
        mul_scale = producer.get(add_zero.input[0]) if add_zero is not None and add_zero.op_type == "Add" else None
        if mul_scale is None or mul_scale.op_type != "Mul" or _scalar(onnx_model, add_zero.input[1]) != 0.0:
            continue
        chain, node = [], producer.get(unsqueeze.input[0])  # Add(0) <- Mul(-1e4) <- Cast <- Equal(input_ids, pad)
        for op in ("Add", "Mul", "Cast", "Equal"):
            if node is None or node.op_type != op:
                break
            chain.append(node)
            node = producer.get(node.input[0])
        if len(chain) != 4 or chain[-1].input[0] != ids or _scalar(onnx_model, chain[1].input[1]) != -10000.0:
            continue
        if mask is None:
            mask = make_mask(chain[-1])
        scale = _scalar(onnx_model, mul_scale.input[1])
        if not scale:
            continue
        scaled, divisor = f"{matmul_qk.output[0]}.scaled", f"{matmul_qk.output[0]}.divisor"
        # Div, not Mul: the matcher takes the Add's first Mul parent as the mask's
        new_inits.append(numpy_helper.from_array(np.array(1.0 / scale, np.float32), divisor))
        new_nodes.append(helper.make_node("Div", [matmul_qk.output[0], divisor], [scaled],
                                          name=f"{matmul_qk.name}_scale"))
        matmul_qk.input[0] = mul_scale.input[0]
        add_mask.input[0], add_mask.input[1] = scaled, mask
        drop.update({id(add_zero), id(mul_scale)})
        rewritten += 1
    if not rewritten:
        return 0
    kept = [n for n in graph.node if id(n) not in drop]
    graph.initializer.extend(new_inits)
    del graph.node[:]
    graph.node.extend(new_nodes + kept)
    onnx_model.topological_sort()
    return rewritten


def fuse_onnx(source: Path, target: Path, num_heads: int, hidden_size: int) -> Dict[str, int]:
    """Write the fused graph ``target`` from the plain paddle2onnx ``source``; returns the
    fusion counts (``FUSED_OPS``, 0 where the fusion did not take) and the attention rewrites."""
    from onnxruntime.transformers.fusion_options import AttentionMaskFormat, FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    cleanup = FusionOptions("bert")  # pass 1 only tidies the graph (Identity nodes out): no fusion yet
    for name in list(vars(cleanup)):
        if name.startswith("enable_"):
            setattr(cleanup, name, False)
    options = FusionOptions("bert")
    options.attention_mask_format = AttentionMaskFormat.AttentionMask  # the raw 2-D mask: exact for any padding
    with quiet_logger("onnxruntime.transformers", logging.ERROR):
        first = optimize_model(str(source), model_type="bert", num_heads=num_heads, hidden_size=hidden_size,
                               opt_level=0, optimization_options=cleanup)
        rewritten = rewrite_attention(first)
        second = optimize_model(first.model, model_type="bert", num_heads=num_heads, hidden_size=hidden_size,
                                opt_level=0, optimization_options=options)
    second.save_model_to_file(str(target))
    found = second.get_fused_operator_statistics()  # the fused ops now in the graph
    counts = {op: int(found.get(op, 0)) for op in FUSED_OPS}
    counts["attention_rewrites"] = rewritten
    return counts

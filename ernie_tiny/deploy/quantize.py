"""int8 post-training quantization of the exported model, and the accuracy check that keeps
an int8 model from shipping broken (the field's "int8 ERNIE scores 0% on CPU").

Why onnxruntime and not Paddle: on Paddle 3.3.1 no Paddle-native int8 path works for ERNIE
(checked; see README "int8"): ``paddle.static.quantization.PostTrainingQuantization`` and
PaddleSlim's ``quant_post_static`` need the old ``.pdmodel`` program, which Paddle 3 no longer
writes for PaddleNLP's ERNIE; the dygraph ``paddle.quantization.PTQ`` model exports only at
fixed shapes, and Paddle Inference then fails on it ("Tensor holds no memory"). So the int8
models are quantizations of the paddle2onnx export, each by its runtime's own quantizer:

* ``dynamic``: onnxruntime's, weights int8 ahead of time, activations quantized per batch at run
  time (no calibration data needed), on the fused graph: onnxruntime's own int8 ops (QAttention,
  QEmbedLayerNormalization), so only onnxruntime runs it (``INT8_FILE``);
* ``static``: activation ranges calibrated once on examples from the task's train split, on the
  plain graph. For onnxruntime, its ``quantize_static`` (``INT8_FILE``; QDQ format:
  ``QuantizeLinear`` / ``DequantizeLinear`` around every MatMul, weights int8 per channel,
  activations uint8, the embedding tables int8 too). For OpenVINO, NNCF's (OpenVINO's own
  post-training quantizer, ``quantize_for_openvino``; ``OPENVINO_INT8_FILE``) of the same graph
  on the same examples: it places the QDQ pairs where OpenVINO's int8 kernels (VNNI where the CPU
  has it) take them. In one-off runs here (2026-12-02, 4L-312H-12A student, not committed)
  OpenVINO ran NNCF's model in 0.77-0.87x of the time it took on onnxruntime's QDQ model, at
  1 x 128 and 32 x 128, and onnxruntime ran NNCF's model 3x slower than its own: so each runtime
  gets its own quantizer's model. The committed latency reports time both int8 backends
  (docs/results/latency/).
The export scores every int8 model and the fp32 model on the same dev examples, with the task's
own metric, and fails if onnxruntime's int8 loses more than ``Export.max_int8_drop`` points
(OpenVINO's, an extra model, is then left out instead, with a message).
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator, List, Sequence

import numpy as np

from ernie_tiny.monitor import quiet_logger
from ernie_tiny.tasks.encode import IGNORE, Features, collate


# per Export.int8 mode: the fp32 backend whose graph it quantizes (dynamic: the plain graph when
# the export has no fused one), onnxruntime's int8 model's format (deploy.json int8.format), and
# the modes that also write OpenVINO's own int8 model (calibrated: NNCF needs the examples)
SOURCE_GRAPH = {"dynamic": "onnx-fused", "static": "onnx"}
INT8_FILE = "model.int8.onnx"  # onnxruntime's int8 model (deploy.json onnx_int8)
OPENVINO_INT8_FILE = "model.int8.openvino.onnx"  # NNCF's, for OpenVINO (deploy.json openvino_int8)
FORMAT = {"dynamic": "onnxruntime int8 ops", "static": "qdq"}
OPENVINO_INT8_MODES = ("static",)


def feeds(features: Sequence[Features], pad_token_id: int, batch_size: int) -> Iterator[dict]:
    """onnxruntime input dicts, ``batch_size`` examples each, padded per batch."""
    for start in range(0, len(features), batch_size):
        batch = collate(features[start:start + batch_size], pad_token_id)
        yield {"input_ids": batch["input_ids"], "token_type_ids": batch["token_type_ids"]}


def quantize_onnx(source: Path, target: Path, mode: str, calibration: Sequence[Features] = (),
                  pad_token_id: int = 0) -> dict:
    """Write the int8 model ``target`` from the fp32 ``source``; returns what was done."""
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_dynamic, quantize_static)

    with quiet_logger():  # the quantizer logs one INFO line per tensor through the root logger
        if mode == "dynamic":
            quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8)
            return {"method": "onnxruntime quantize_dynamic", "weights": "int8 per tensor",
                    "activations": "int8, ranges per batch at run time", "format": FORMAT[mode]}
        if mode != "static":
            raise ValueError(f"int8 mode {mode!r}: 'dynamic' or 'static'")
        if not calibration:
            raise ValueError("static int8 needs calibration examples")

        class Reader(CalibrationDataReader):
            def __init__(self):
                self.batches = feeds(calibration, pad_token_id, 16)

            def get_next(self):
                return next(self.batches, None)

        # uint8 activations: OpenVINO's int8 kernels take them (int8 ones were 17% slower in a one-off run
        # there); Gather: the embedding tables are stored int8 as well (a third of the file)
        quantize_static(str(source), str(target), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.MinMax, op_types_to_quantize=["MatMul", "Gather"])
        return {"method": "onnxruntime quantize_static (QDQ, MinMax)", "weights": "int8 per channel, embeddings int8",
                "activations": f"uint8, ranges calibrated on {len(calibration)} train examples",
                "format": FORMAT[mode]}


def activation_matmuls(model) -> List[str]:
    """The MatMul nodes of an ONNX graph that multiply two activations (attention's ``Q K^T``
    and its product with ``V``), not an activation by a weight. A weight is an initializer or
    the output of nodes that read only weights (a ``Constant``, a ``Transpose`` of an initializer)."""
    constant = {tensor.name for tensor in model.graph.initializer}
    found = []
    for node in model.graph.node:  # ONNX graphs list nodes in topological order
        if all(name in constant for name in node.input if name):
            constant.update(node.output)
        elif node.op_type == "MatMul" and not any(name in constant for name in node.input):
            found.append(node.name)
    if not all(found):
        raise ValueError("an activation-by-activation MatMul without a node name: NNCF cannot leave it out")
    return found


def quantize_for_openvino(source: Path, target: Path, calibration: Sequence[Features], pad_token_id: int = 0) -> dict:
    """Write OpenVINO's int8 model ``target`` from the fp32 ONNX ``source``: NNCF's post-training
    quantization (its ONNX backend, transformer model type and its default preset for it),
    calibrated on ``calibration`` one example at a time (no padding); returns what was done.
    Attention's activation-by-activation matmuls stay fp32: quantized, they moved a tiny
    model's logits by up to 0.58 (2 heads of 16; onnxruntime's QDQ model: 0.03), and on the
    4L-312H-12A student they made the int8 model 4x further from fp32 (mean logit difference
    0.0079 against 0.0017) and were no faster (3.30 ms with them quantized, 3.08 ms without, at
    1 x 128; one-offs here, 2026-12-02, not committed)."""
    import logging

    import nncf
    import onnx

    nncf.set_log_level(logging.ERROR)  # its per-step INFO lines; the progress bars stay
    model = onnx.load(str(source))
    kept = activation_matmuls(model)
    examples = list(feeds(calibration, pad_token_id, 1))
    quantized = nncf.quantize(model, nncf.Dataset(examples), subset_size=len(examples),
                              model_type=nncf.ModelType.TRANSFORMER, ignored_scope=nncf.IgnoredScope(names=kept))
    onnx.save(quantized, str(target))
    return {"method": f"NNCF {nncf.__version__} quantize (ONNX, transformer)",
            "weights": "int8 (the matmuls with weights, the embeddings)",
            "activations": f"int8, ranges calibrated on {len(examples)} train examples; the {len(kept)} attention "
                           f"matmuls of two activations stay fp32", "file": target.name}


class BackendAsModel:
    """A runtime (numpy in, numpy out) seen as the eager model ``ernie_tiny.finetune.loop``
    evaluates, so exported models are scored by exactly the code that scored finetuning. Lengths
    are padded to the predictor's buckets first, so the runtime sees the shapes a predictor sends
    it (padding is masked: token logits are cut back to the batch's length)."""

    training = False  # a runtime has no train mode

    def __init__(self, backend, pad_token_id: int):
        self.backend, self.pad_token_id = backend, pad_token_id

    def eval(self):
        return self

    def train(self):
        return self

    def __call__(self, input_ids, token_type_ids=None, attention_mask=None):
        import paddle

        from ernie_tiny.deploy.backends import pad_to_bucket

        length = input_ids.shape[1]
        logits = self.backend(*pad_to_bucket(input_ids.numpy(), token_type_ids.numpy(), self.pad_token_id))
        return paddle.to_tensor(logits[:, :length] if logits.ndim == 3 else logits)


def compare_scores(backends: dict, features: List[Features], card, labels: Sequence[str], pad_token_id: int,
                   batch_size: int = 32) -> dict:
    """The task metric of each named backend on the same examples, plus how often each one's
    predictions agree with the first's."""
    from ernie_tiny.finetune.loop import predict
    from ernie_tiny.tasks.metrics import score

    out, reference = {}, None
    for name, backend in backends.items():
        predicted, gold = predict(BackendAsModel(backend, pad_token_id), features, batch_size, pad_token_id)
        out[name] = {"score": round(float(score(card.metric, predicted, gold, labels)), 4)}
        if reference is None:
            reference = predicted
        else:
            keep = gold != IGNORE if gold.ndim == 2 else np.ones(len(gold), bool)
            out[name]["agreement"] = round(float((predicted[keep] == reference[keep]).mean()), 6)
    return out

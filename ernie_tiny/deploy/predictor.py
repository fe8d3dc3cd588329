"""Batch prediction from an inference directory (``tools/export.py`` output), over any backend
of ``ernie_tiny.deploy.backends``.

``Predictor`` does what every runtime needs around the forward: tokenization with the
exported tokenizer (the same ``ernie_tiny.tasks.encode`` functions the model was finetuned
with), batching (texts sorted by length so batches pad little, lengths padded to a multiple
of 16 so the runtimes see few shapes; results come back in input order), and postprocessing
(softmax, label names; per-character labels and BIO entities for token tasks); and the
command-line flags that choose a backend (``add_backend_arguments``, ``predictor_from_args``)::

    from ernie_tiny.deploy.predictor import Predictor
    predictor = Predictor("output/demo/export", backend="auto", threads=2)  # or paddle, onnx, onnx-int8
    predictor.predict(["质量很好，物流也快", "太差了"])
    # [{'label': 'positive', 'score': ...}, {'label': 'negative', 'score': ...}]
"""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np

from ernie_tiny import model_files
from ernie_tiny.deploy.backends import (BACKENDS, LENGTH_BUCKET, ONNX_FILES, OPENVINO_FILES, auto_reason, make_backend,
                                        pad_to_bucket, padded_length, resolve_backend)
from ernie_tiny.deploy.inference_dir import read_deploy_info
from ernie_tiny.deploy.inputs import DeployInputError, non_negative_int
from ernie_tiny.deploy.openvino_runtime import STATIC_SHAPES
from ernie_tiny.tasks.encode import IGNORE, Features, collate, encode_sequence, encode_tokens
from ernie_tiny.tasks.readers import Example


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def add_backend_arguments(parser) -> None:
    """The command-line flags that choose and tune a backend (deploy/python/infer.py, deploy/serving/server.py)."""
    parser.add_argument("--backend", choices=BACKENDS, default="auto",
                        help="auto (default): on CPU the fastest fp32 backend timed at export, else paddle")
    parser.add_argument("--allow_int8", action="store_true",
                        help="auto may pick a reduced-precision model (int8; OpenVINO bf16 where the CPU has it) when "
                             "it timed fastest: each was scored against fp32 at export")
    parser.add_argument("--device", choices=("cpu", "gpu"), default="cpu", help="gpu: paddle backend only")
    parser.add_argument("--threads", type=non_negative_int, default=0, help="CPU threads (0 = all available cores)")
    parser.add_argument("--no_mkldnn", action="store_true", help="paddle on CPU: turn oneDNN off (slower)")
    parser.add_argument("--precision", choices=("fp32", "fp16"), default="fp32", help="paddle on GPU: fp16")
    parser.add_argument("--trt", action="store_true", help="paddle on GPU: TensorRT (dynamic shapes)")
    parser.add_argument("--gpu_id", type=non_negative_int, default=0)
    parser.add_argument("--static_shapes", type=int, default=STATIC_SHAPES, metavar="N",
                        help=f"openvino backends: up to N recurring batch x length shapes get a model compiled for "
                             f"them (faster, each takes memory of its own; default {STATIC_SHAPES}, 0 = none)")
    parser.add_argument("--compile_shapes", nargs="+", type=shape_arg, default=[], metavar="BxL",
                        help="openvino backends: batch x length shapes (e.g. 1x128 32x128) compiled at start, before "
                             "the first call: they take the first --static_shapes slots, and no call waits for their "
                             f"compile (lengths reach the model padded to a multiple of {LENGTH_BUCKET})")
    parser.add_argument("--spin", action="store_true",
                        help="onnxruntime backends: idle worker threads spin (faster on a machine that does nothing "
                             "else, slower when the cores are shared)")


def shape_arg(text: str) -> tuple:
    """``--compile_shapes``' ``BxL`` (``32x128``) as ``(32, 128)``."""
    import argparse

    try:
        batch, length = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: a shape is batch x length, e.g. 32x128") from None
    if batch < 1 or length < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: batch and length must be at least 1")
    return batch, length


class BackendFlagsError(DeployInputError):
    """Command-line flags the chosen backend cannot honour."""


def backend_options(args) -> dict:
    """``make_backend`` options from ``add_backend_arguments``' flags; BackendFlagsError for flags the
    chosen backend cannot honour (onnxruntime runs on CPU in fp32 here)."""
    options = {"threads": args.threads, "device": args.device, "allow_int8": args.allow_int8}
    if args.spin:
        if args.backend not in ("auto", *ONNX_FILES):
            raise BackendFlagsError(f"--spin is for the onnxruntime backends ({', '.join(ONNX_FILES)}) and auto, "
                                    f"not --backend {args.backend}")
        options["spin"] = True
    if args.static_shapes != STATIC_SHAPES:
        if args.backend not in ("auto", *OPENVINO_FILES) or args.static_shapes < 0:
            raise BackendFlagsError(f"--static_shapes is a count (0 or more) for the openvino backends "
                                    f"({', '.join(OPENVINO_FILES)}) and auto, not --backend {args.backend}")
        options["static_shapes"] = args.static_shapes
    if args.compile_shapes:
        if args.backend not in ("auto", *OPENVINO_FILES):
            raise BackendFlagsError(f"--compile_shapes is for the openvino backends ({', '.join(OPENVINO_FILES)}) and "
                                    f"auto, not --backend {args.backend}")
        if len(set(args.compile_shapes)) > args.static_shapes:
            raise BackendFlagsError(f"--compile_shapes gives {len(set(args.compile_shapes))} shapes; --static_shapes "
                                    f"allows at most {args.static_shapes}")
        options["compile_shapes"] = list(args.compile_shapes)
    if args.backend in ("auto", "paddle"):
        if args.device == "cpu" and (args.trt or args.precision != "fp32"):
            raise BackendFlagsError(f"{'--trt' if args.trt else '--precision ' + args.precision} needs --device gpu "
                                    f"(on CPU: fp32, or --backend onnx-int8 / openvino-int8)")
        options.update(mkldnn=not args.no_mkldnn, precision=args.precision, tensorrt=args.trt, gpu_id=args.gpu_id)
    elif args.device != "cpu" or args.trt or args.precision != "fp32":
        raise BackendFlagsError(f"--backend {args.backend} runs on CPU in fp32; --device gpu, --precision and --trt are "
                         f"for --backend paddle")
    return options


class Predictor:
    """Texts in, labels and scores out, over any backend (see ``make_backend``)."""

    def __init__(self, model_dir: str | Path, backend: str = "auto", batch_size: int = 32, max_length: int = 0,
                 **backend_options):
        from paddlenlp.transformers import AutoTokenizer

        self.model_dir = Path(model_dir)
        self.info = read_deploy_info(model_dir)
        self.labels: List[str] = list(self.info["labels"])
        self.head: str = self.info["head"]
        self.input_type: str = self.info["input"]
        self.max_length = max_length or self.info["max_length"]
        self.batch_size = batch_size
        self.tokenizer = AutoTokenizer.from_pretrained(str(self.model_dir))
        self.pad_token_id = self.tokenizer.pad_token_id
        self.check_max_length()
        requested = backend
        backend = resolve_backend(backend, self.info, backend_options.get("device", "cpu"),
                                  backend_options.pop("allow_int8", False))
        if backend == "paddle":
            backend_options.setdefault("max_batch_size", batch_size)
            backend_options.setdefault("max_length", self.max_length)
            if backend_options["max_batch_size"] < batch_size or backend_options["max_length"] < self.max_length:
                raise ValueError(f"the backend's max_batch_size {backend_options['max_batch_size']} / max_length "
                                 f"{backend_options['max_length']} are below the batches this predictor makes "
                                 f"(batch_size {batch_size}, max_length {self.max_length})")
        never_called = self.shapes_never_called(backend_options.get("compile_shapes", []))
        if never_called:
            raise DeployInputError(f"--compile_shapes {never_called}")
        self.backend = make_backend(model_dir, backend, requested=requested, info=self.info, **backend_options)
        self.backend_name = backend
        self.description = (f"{backend}: {self.backend.description}; "
                            f"{auto_reason(backend, requested, self.info, self.model_dir)}")

    def check_max_length(self) -> None:
        """A DeployInputError unless ``max_length`` holds the special tokens and one of the text's,
        and is within the model's position embeddings (past them a runtime reads out of range)."""
        config = self.model_dir / model_files.CONFIG_FILE
        try:
            positions = model_files.read_model_config(self.model_dir).get("max_position_embeddings") \
                if config.is_file() else None
        except model_files.ModelFilesError as err:  # a damaged config.json: one line, as for the other files
            raise DeployInputError(str(err)) from None
        fewest = self.tokenizer.num_special_tokens_to_add(pair=self.input_type == "pair") + 1
        if self.max_length < fewest or (positions and self.max_length > positions):
            most = f" and at most {positions} ({config}: max_position_embeddings)" if positions else ""
            raise DeployInputError(f"max_length {self.max_length}: this model takes at least {fewest} tokens per "
                                   f"{self.input_type} input{most}")

    def shapes_never_called(self, shapes) -> str:
        """Which of ``shapes`` (batch, length) this predictor never sends its backend, and why; ''
        if it may send them all (lengths are padded to multiples of LENGTH_BUCKET, up to the padded
        max length; batches hold at most ``batch_size`` examples)."""
        longest, problems = padded_length(self.max_length), []
        for batch, length in shapes:
            if length % LENGTH_BUCKET:
                problems.append(f"{batch}x{length}: lengths reach the model padded to a multiple of {LENGTH_BUCKET}")
            elif length > longest:
                problems.append(f"{batch}x{length}: lengths are at most {longest} (max length {self.max_length}, "
                                f"padded)")
            elif batch > self.batch_size:
                problems.append(f"{batch}x{length}: batches hold at most {self.batch_size} texts (--batch_size)")
        return "; ".join(problems) + (", so such a shape is never called" if problems else "")

    def sendable_shapes(self) -> List[Tuple[int, int]]:
        """Every batch x length this predictor can send its backend (batches of 1 to
        ``batch_size``, lengths padded to multiples of LENGTH_BUCKET up to the padded max length),
        cheapest first."""
        shapes = [(batch, length) for length in range(LENGTH_BUCKET, padded_length(self.max_length) + 1, LENGTH_BUCKET)
                  for batch in range(1, self.batch_size + 1)]
        return sorted(shapes, key=lambda shape: (shape[0] * shape[1], shape))

    def warm_up(self, max_seconds: float = math.inf) -> int:
        """Calls the backend once with every shape it can be sent (``sendable_shapes``, cheapest
        first), so no request pays a shape's first call, which is several times slower on
        OpenVINO's dynamic models (docs/results/serving/first_call.md); stops once ``max_seconds``
        have passed (the cheapest shape is always called; the rest get their first call from
        requests). OpenVINO does not count these calls towards a shape's promotion. Returns the
        number of shapes called."""
        call = getattr(self.backend, "warm", self.backend)
        token = self.tokenizer.unk_token_id  # any id the vocabulary has (pruning keeps the special tokens)
        started, called = time.perf_counter(), 0
        for batch, length in self.sendable_shapes():
            ids = np.full((batch, length), token, dtype=np.int64)
            call(ids, np.zeros_like(ids))
            called += 1
            if time.perf_counter() - started >= max_seconds:
                break
        return called

    # -- text -> features -> logits ---------------------------------------------------------
    def encode(self, texts: Sequence[str], text_pairs: Optional[Sequence[str]] = None) -> List[Features]:
        """Model inputs, as the model was finetuned on them. Token tasks take each character
        as a token (the offline tasks are per character); each token's "label" is its index,
        so after encoding the kept tokens (first sub-words) can be found again."""
        if text_pairs is not None and len(text_pairs) != len(texts):
            raise ValueError(f"{len(texts)} texts but {len(text_pairs)} text pairs")
        if self.input_type == "pair" and text_pairs is None:
            raise ValueError("this model takes text pairs: give text_pairs (CLI: text<TAB>pair per line)")
        if self.head == "token":
            return [encode_tokens(Example(list(t), None, list(range(len(t))), ""), self.tokenizer, self.max_length)
                    for t in texts]
        pairs = text_pairs if text_pairs is not None else [None] * len(texts)
        return [encode_sequence(Example(t, p, 0, ""), self.tokenizer, self.max_length) for t, p in zip(texts, pairs)]

    def logits(self, features: Sequence[Features]) -> List[np.ndarray]:
        """Per example: [classes] (sequence) or [its length, classes] (token), in input order.
        Batches are formed from length-sorted examples, so little compute goes to padding."""
        order = sorted(range(len(features)), key=lambda i: len(features[i].input_ids))
        out: List[Optional[np.ndarray]] = [None] * len(features)
        for start in range(0, len(order), self.batch_size):
            chunk = order[start:start + self.batch_size]
            batch = collate([features[i] for i in chunk], self.pad_token_id)
            ids, types = pad_to_bucket(batch["input_ids"], batch["token_type_ids"], self.pad_token_id)
            logits = self.backend(ids, types)
            for row, i in enumerate(chunk):
                out[i] = logits[row] if self.head == "sequence" else logits[row, :len(features[i].input_ids)]
        return out

    # -- logits -> labels ---------------------------------------------------------------------
    def predict(self, texts: Sequence[str], text_pairs: Optional[Sequence[str]] = None) -> List[dict]:
        """Sequence tasks: ``{"label", "score"}`` per text (score: the label's probability).
        Token tasks: ``{"tokens": [{"token", "label", "score"}...], "entities": [...],
        "truncated": bool}``; entities (BIO labels only) carry type, text and character offsets."""
        if not texts:
            return []
        features = self.encode(texts, text_pairs)
        results = []
        for text, feature, logits in zip(texts, features, self.logits(features)):
            probs = softmax(logits.astype(np.float64))
            if self.head == "sequence":
                best = int(probs.argmax())
                results.append({"label": self.labels[best], "score": round(float(probs[best]), 6)})
            else:
                results.append(self._token_result(text, feature, probs))
        return results

    def _token_result(self, text: str, feature: Features, probs: np.ndarray) -> dict:
        positions = [(p, index) for p, index in enumerate(feature.labels) if index != IGNORE]
        tokens = []
        for p, index in positions:
            best = int(probs[p].argmax())
            tokens.append({"token": text[index], "start": index, "label": self.labels[best],
                           "score": round(float(probs[p, best]), 6)})
        kept_last = positions[-1][1] if positions else -1
        truncated = any(not ch.isspace() for ch in text[kept_last + 1:])
        return {"tokens": tokens, "entities": bio_entities(tokens, text), "truncated": truncated}


def bio_entities(tokens: List[dict], text: str) -> List[dict]:
    """Entities from per-character BIO labels (``B-PER I-PER`` ...), via seqeval; none when
    the labels are not BIO (segmentation, POS)."""
    labels = [t["label"] for t in tokens]
    if not any(label.startswith(("B-", "I-")) for label in labels):
        return []
    from seqeval.metrics.sequence_labeling import get_entities

    entities = []
    for kind, first, last in get_entities(labels):
        start, end = tokens[first]["start"], tokens[last]["start"] + 1
        entities.append({"type": kind, "text": text[start:end], "start": start, "end": end})
    return entities


def predictor_from_args(args, **options) -> Predictor:
    """The Predictor that ``add_backend_arguments``' flags (and ``--model_dir``, ``--batch_size``) ask for,
    with PaddleNLP's notices quietened; BackendFlagsError before anything loads if the flags clash."""
    from paddlenlp.utils.log import logger as paddlenlp_logger

    backend = backend_options(args)
    paddlenlp_logger.set_level("WARNING")
    return Predictor(args.model_dir, backend=args.backend, batch_size=args.batch_size, **options, **backend)

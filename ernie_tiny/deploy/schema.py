"""Configs of the deployment tools: ``tools/finetune.py`` (one task, one hyperparameter point,
the model saved for export) and ``tools/export.py`` (finetuned model -> inference directory).

Like every stage config, these are validated before Paddle is imported; errors name the file,
the line and the key.
"""
from __future__ import annotations

import json
import os
from typing import Literal

from pydantic import Field, field_validator

from ernie_tiny import model_files
from ernie_tiny.config import Section
from ernie_tiny.schema import GlobalSection

TASK_FILE = "task.json"  # written beside a finetuned model: card, labels, head, max length


def task_file_problem(file: str) -> str:
    """Why ``file`` (a finetuned model's ``task.json``) cannot be read, or ''."""
    try:
        with open(file, "rb") as f:
            info = json.loads(f.read().decode("utf-8-sig"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        return f"{file}: not valid JSON ({err}); finetune the model again with tools/finetune.py"
    return "" if isinstance(info, dict) else f"{file}: not a JSON object; finetune the model again"


class ModelPathSection(Section):
    path: str = Field(description="a PaddleNLP save_pretrained directory (weights, config.json, tokenizer files)")

    def check(self):
        if self.planned(self.path):
            return
        try:
            model_files.check_pretrained_dir(self.path)  # config.json, weights, tokenizer
        except model_files.ModelFilesError as err:
            yield "path", f"{self.path!r} is not a save_pretrained model directory: {err}"


class TaskSection(Section):
    name: str = Field(description="a task card: name under tasks/ (review_sentiment) or a path to its YAML")
    data_dir: str = Field("", description="directory with the task's files, for cards with a local source")
    max_train_examples: int = Field(0, ge=0, description="a fixed-seed sample of the train split; 0 = all")
    max_dev_examples: int = Field(0, ge=0, description="a fixed-seed sample of the dev split; 0 = all")
    max_length: int = Field(0, ge=0, description="tokens per example; 0 = the card's max_length")


class FinetuneSection(Section):
    """One point of the finetuning grid (``ernie_tiny.finetune.loop.FinetuneParams``)."""

    lr: float = Field(5e-5, gt=0)
    batch_size: int = Field(32, ge=1)
    epochs: int = Field(3, ge=1)
    max_steps: int = Field(0, ge=0, description="0 = epochs x batches")
    dropout: float = Field(0.1, ge=0.0, lt=1.0)
    warmup_ratio: float = Field(0.1, ge=0.0, le=1.0)
    weight_decay: float = Field(0.01, ge=0.0)
    eval_every: int = Field(100, ge=0, description="steps; 0 = once per epoch")


class FinetuneConfig(Section):
    Global: GlobalSection = Field(default_factory=lambda: GlobalSection(output_dir="output/finetune"))
    Model: ModelPathSection
    Task: TaskSection
    Finetune: FinetuneSection = Field(default_factory=FinetuneSection)

    def check(self):
        from ernie_tiny.tasks.card import card_path

        try:
            card_path(self.Task.name)
        except FileNotFoundError as err:
            yield "Task.name", str(err)


class ExportSection(Section):
    task: str = Field("", description=f"task card (name or path); '' = the {TASK_FILE} that tools/finetune.py "
                                      "wrote into Model.path")
    data_dir: str = Field("", description="directory with the task's files, for cards with a local source")
    max_length: int = Field(0, ge=0, description="tokens per text at inference; 0 = the card's max_length")
    check_examples: int = Field(64, ge=1, description="dev examples run through the eager and the exported model")
    atol: float = Field(1e-4, gt=0, description="largest allowed |eager - exported| on any logit")
    first_token_graph: bool = Field(True, description="sequence heads: the exported graph runs the last encoder layer "
                                                      "for the [CLS] token only, the one the logits read (same "
                                                      "logits, fewer multiply-adds)")
    onnx: bool = Field(True, description="also convert to ONNX with paddle2onnx (for the onnx backends and int8)")
    opset: int = Field(14, ge=11, description="ONNX opset")
    openvino: bool = Field(True, description="with onnx, when the openvino package (extra) is installed: check "
                                             "and time OpenVINO on the ONNX model too, so auto may pick it")
    fuse: bool = Field(True, description="with onnx: also write the fused graph (onnxruntime's transformer "
                                         "optimizer: attention, skip-layer-norm, gelu, embedding), checked like the "
                                         "others; int8 then quantizes it")
    int8: Literal["off", "dynamic", "static"] = Field(
        "static", description="post-training quantization: dynamic (onnxruntime's, of the fused graph: weights "
                               "int8, activations quantized per batch; onnxruntime runs it) or static (of the plain "
                               "graph, activation ranges calibrated on the train split: onnxruntime's QDQ model, and "
                               "with openvino NNCF's model for OpenVINO)")
    calibration_examples: int = Field(256, ge=1, description="static int8: train examples for calibration")
    eval_examples: int = Field(1000, ge=0, description="dev examples scored before and after int8; 0 = all")
    max_int8_drop: float = Field(0.5, ge=0, description="the export fails if int8 scores more than this many "
                                                        "points below fp32 on those dev examples")
    bf16: bool = Field(True, description="with openvino, where the CPU computes bf16 natively: also score OpenVINO "
                                         "in bf16 arithmetic (the openvino-bf16 backend) against fp32, like int8")
    max_bf16_drop: float = Field(0.5, ge=0, description="bf16 scoring more than this many points below fp32 on the "
                                                        "int8 gate's dev examples is left out (with a message)")
    prune_vocab: bool = Field(False, description="keep only the tokens of the task's train split (+ special tokens "
                                                 "+ keep_frequent): smaller word embedding and vocab.txt, unseen "
                                                 "tokens read as [UNK]")
    keep_frequent: int = Field(0, ge=0, description="prune_vocab: also keep the first N ids of vocab.txt (the most "
                                                    "frequent corpus tokens, in vocabularies built by build_vocab)")
    timing_repeats: int = Field(10, ge=0, description="timed calls per backend and shape (median), for auto; "
                                                      "0 = no timing (auto then takes onnxruntime fp32)")
    timing_warmup: int = Field(2, ge=0, description="untimed calls before each timing")
    timing_batch: int = Field(32, ge=2, description="the larger batch timed (besides batch 1), at the task's length")

    @field_validator("int8", mode="before")
    @classmethod
    def _yaml_off(cls, value):
        """YAML 1.1 reads a bare ``off`` as false: take it as the 'off' it was meant to be."""
        return "off" if value is False else value


class ExportConfig(Section):
    Global: GlobalSection = Field(default_factory=lambda: GlobalSection(output_dir="output/export"))
    Model: ModelPathSection
    Export: ExportSection = Field(default_factory=ExportSection)

    def check(self):
        from ernie_tiny.tasks.card import card_path

        if self.Export.task:
            try:
                card_path(self.Export.task)
            except FileNotFoundError as err:
                yield "Export.task", str(err)
        elif os.path.isdir(self.Model.path) and not os.path.isfile(os.path.join(self.Model.path, TASK_FILE)):
            yield "Export.task", (f"'' but {self.Model.path!r} has no {TASK_FILE} (it was not written by "
                                  "tools/finetune.py): name the task card")
        elif os.path.isdir(self.Model.path) and not self.planned(self.Model.path):
            problem = task_file_problem(os.path.join(self.Model.path, TASK_FILE))
            if problem:
                yield "Model.path", problem
        if self.Export.keep_frequent and not self.Export.prune_vocab:
            yield "Export.keep_frequent", (f"{self.Export.keep_frequent} keeps tokens when pruning the vocabulary: "
                                           "it needs Export.prune_vocab: true")
        if self.Export.int8 != "off" and not self.Export.onnx:
            yield "Export.int8", f"{self.Export.int8!r} quantizes the ONNX model: it needs Export.onnx: true"

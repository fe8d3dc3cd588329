"""What the finetune and export stages leave behind: their products (``model/``; the inference
directory itself) and their typed results, read from the finetune stage's ``result.json``
(its name and reader are here) and the export's ``deploy.json``. No Paddle import."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Optional

from ernie_tiny.stages import StageResult

RESULT_FILE = "result.json"  # the finetune stage's: task, metric, best_dev, best_step, steps, seconds, examples


def read_result_file(output_dir) -> Optional[dict]:
    """What the finetune stage wrote to ``<output_dir>/result.json`` (None if there is none)."""
    path = Path(output_dir) / RESULT_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


@dataclass(frozen=True)
class FinetuneResult(StageResult):
    task: str
    metric: str
    best_dev: float
    best_step: int
    steps: int
    product_dir: ClassVar[str] = "model"  # the finetuned model + tokenizer + task.json: what the export reads

    @classmethod
    def read(cls, output_dir) -> Optional["FinetuneResult"]:
        r = read_result_file(output_dir)
        return cls(r["task"], r["metric"], r["best_dev"], r["best_step"], r["steps"]) if r else None

    def headline(self) -> str:
        return f"{self.task}: best dev {self.metric} {self.best_dev:.1f} at step {self.best_step} of {self.steps}"


@dataclass(frozen=True)
class ExportResult(StageResult):
    paddle_max_abs_diff: float          # Paddle Inference against eager
    int8: Optional[dict] = None         # metric, int8 and fp32 dev scores (None without Export.int8)
    bf16: Optional[dict] = None         # OpenVINO bf16's dev scores (None where it was not checked; no runtimes
    # where it scored too low and was left out)

    @classmethod
    def read(cls, output_dir) -> Optional["ExportResult"]:
        from ernie_tiny.deploy.inference_dir import DEPLOY_FILE, read_deploy_info

        if not (Path(output_dir) / DEPLOY_FILE).is_file():
            return None
        info = read_deploy_info(output_dir)
        return cls(info["checks"]["paddle_inference"]["max_abs_diff"], info.get("int8"), info.get("bf16"))

    def headline(self) -> str:
        parts = [f"Paddle Inference max abs diff {self.paddle_max_abs_diff:.1e}"]
        if self.int8:
            runtimes = self.int8.get("runtimes") or {}
            scores = (", ".join(f"{r['score']:.1f} ({name})" for name, r in runtimes.items()) if len(runtimes) > 1
                      else f"{self.int8['int8']:.1f}")
            parts.append(f"int8 dev {self.int8['metric']} {scores} vs fp32 {self.int8['fp32']:.1f}"
                         + (" (openvino-int8 left out)" if (self.int8.get("openvino") or {}).get("left_out") else ""))
        if self.bf16 and self.bf16["runtimes"]:
            scores = ", ".join(f"{r['score']:.1f} ({name})" for name, r in self.bf16["runtimes"].items())
            parts.append(f"bf16 dev {self.bf16['metric']} {scores} vs fp32 {self.bf16['fp32']:.1f}")
        elif self.bf16:  # scored too low, or not compiled: left out
            parts.append("bf16 left out")
        return ", ".join(parts)

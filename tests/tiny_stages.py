"""Overrides that shrink the shipped demo stage configs to seconds: tiny models, a few hundred
documents of the offline corpus, a few steps. Shared by the pipeline and experiment tests, so
both run the real demo configs end to end."""
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

TINY_TASK = {"max_train_examples": 32, "max_dev_examples": 16, "max_length": 32}
TINY_DATA = {"max_documents": 300, "seq_len": 32}

PRETRAIN = {
    "Data": TINY_DATA,
    "Model": {"num_layers": 2, "hidden_size": 32, "num_heads": 4, "intermediate_size": 64},
    "Train": {"max_steps": 3, "batch_size": 4, "log_every": 1, "save_every": 100},
}
TEACHER_MTL = {
    "Tasks": [{"card": "pd_entity_type", **TINY_TASK}, {"card": "pd_ner", **TINY_TASK}],
    "Train": {"max_steps": 3, "batch_size": 4, "eval_every": 3, "log_every": 1},
    "Data": {"eval_batch_size": 16},
}
DISTILL = {
    "Data": TINY_DATA,
    "Student": {"num_layers": 2, "hidden_size": 16, "num_heads": 2, "intermediate_size": 32},
    "Distill": {"relation_heads": 4},
    "Train": {"max_steps": 3, "batch_size": 4, "log_every": 1, "save_every": 100},
}
EVALUATE_GRID = {"max_steps": 2, "eval_every": 2, "batch_sizes": [8]}
EVALUATE = {
    "Tasks": [{"card": "review_sentiment", **TINY_TASK}],
    "Grid": EVALUATE_GRID,
    "Report": {"chart": False},
}
FINETUNE = {
    "Task": TINY_TASK,
    "Finetune": {"max_steps": 2, "eval_every": 2, "batch_size": 8},
}
EXPORT = {"Export": {"check_examples": 8, "onnx": False, "int8": "off"}}


def stage(config: str, overrides: dict) -> dict:
    return {"config": str(ROOT / "configs" / "demo" / f"{config}.yaml"), "overrides": overrides}

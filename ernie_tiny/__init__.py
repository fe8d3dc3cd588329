"""ernie-tiny: MITKD (multi-task infused task-agnostic knowledge distillation) on PaddlePaddle."""
__version__ = "0.1.0"

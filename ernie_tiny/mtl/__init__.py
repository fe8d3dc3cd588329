"""Multi-task teacher finetuning (stage 1 of MITKD): the config (``schema.py``), the task
schedule (``sampling.py``), the shared encoder with one head per task (``model.py``) and the
recipe (``recipe.py``). Reading the config does not import Paddle."""

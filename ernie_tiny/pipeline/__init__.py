"""Running several stages as one command: the pipeline (``recipe.py``) and the step runner both
it and the claim experiment use (``steps.py``: validate all, skip finished, resume, summarize)."""

"""Stage 3, evaluation: finetune a student on task cards over a hyperparameter grid and report
the best dev score per task (``tools/evaluate.py -c configs/clue.yaml``).

``schema`` (the config), ``grid`` (grid points from the config and the cards), ``runner`` (the
recipe, with resume), ``report`` (CSV, Markdown, chart)."""

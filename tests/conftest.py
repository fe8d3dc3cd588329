"""Shared test set-up: CPU threads are set before Paddle is imported (one pytest process)."""
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from ernie_tiny.runtime import configure_threads  # noqa: E402

configure_threads(int(os.environ.get("ERNIE_TINY_TEST_THREADS", "0")))

"""Speed benchmarks: ``python tools/benchmark.py <name> ...`` (see ``cli.py``).

Nothing here imports Paddle at import time: each measurement runs in its own subprocess,
which sets the CPU thread count before Paddle is imported.
"""

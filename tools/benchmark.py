"""Speed benchmarks: python tools/benchmark.py distill [--batch 8 --seq 128 ... --output FILE.md]

``distill``: tokens/s of one distillation training step, ours vs PaddleNLP's
``to_distill`` + ``calc_minilm_loss``, on the same random-weight models.

``shards``: characters/s of shard building, our fast tokenizer vs ``ErnieTokenizer``.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ernie_tiny.cli import benchmark_main  # noqa: E402

if __name__ == "__main__":
    sys.exit(benchmark_main())

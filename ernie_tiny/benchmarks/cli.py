"""``python tools/benchmark.py <benchmark> [options]``: one subcommand per benchmark."""
from __future__ import annotations

import argparse

from ernie_tiny.benchmarks import distill_speed, latency, serving_load, shard_speed


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="benchmark", description="ernie-tiny speed benchmarks")
    commands = parser.add_subparsers(dest="command", required=True, metavar="BENCHMARK")
    distill = commands.add_parser(
        "distill", help="tokens/s of one distillation training step: ours vs PaddleNLP to_distill",
        description=distill_speed.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    distill_speed.add_arguments(distill)
    latency_parser = commands.add_parser(
        "latency", help="inference latency: eager vs Paddle Inference vs onnxruntime fp32 / int8",
        description=latency.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    latency.add_arguments(latency_parser)
    shards = commands.add_parser(
        "shards", help="characters/s of shard building: our fast tokenizer vs PaddleNLP's ErnieTokenizer",
        description=shard_speed.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    shard_speed.add_arguments(shards)
    serving = commands.add_parser(
        "serving", help="the HTTP server under concurrent load: requests/s, p50/p99 latency, errors",
        description=serving_load.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    serving_load.add_arguments(serving)
    args = parser.parse_args(argv)
    if args.command == "shards":
        return shard_speed.main(args)
    if args.command == "distill":
        return distill_speed.main(args)
    if args.command == "latency":
        return latency.main(args)
    if args.command == "serving":
        return serving_load.main(args)
    parser.error(f"unknown benchmark {args.command!r}")
    return 2

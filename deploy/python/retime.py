"""Time an export's CPU backends again on this machine, so ``auto`` runs the fastest here.

    python deploy/python/retime.py --model_dir output/demo/export [--threads 2 --repeats 10]

The export timed its backends on the machine that exported it (deploy.json ``timing``); served
on a CPU with other instruction sets (the predictor and the server say so), another backend may
be the fastest. This times the backends this machine runs (OpenVINO's where the package is
installed, bf16 where the CPU computes it) on the export's shapes and rewrites ``timing`` whole
or not at all; the export's own CPU, timings and choices stay under ``timing.replaced``, however
often it is run. The accuracy checks and the int8 / bf16 scores stay the export's. A directory
it cannot use (no timing, no config.json, not writable) stops with a message and exit status 2,
before any timing.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from ernie_tiny.deploy.inputs import DeployInputError, positive_int  # noqa: E402 (no Paddle import)
from ernie_tiny.runtime import configure_threads  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--model_dir", required=True, help="inference directory written by tools/export.py")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads, as the server will run (0 = all cores)")
    parser.add_argument("--repeats", type=positive_int, default=10, help="timed calls per backend and shape (median)")
    parser.add_argument("--warmup_calls", type=int, default=2, help="untimed calls before each timing")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    threads = configure_threads(args.threads)  # before Paddle is imported
    from ernie_tiny.deploy.timing_runs import retime

    try:
        record = retime(args.model_dir, threads=threads, repeats=args.repeats, warmup=max(0, args.warmup_calls))
    except DeployInputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    exported = record["replaced"].get("auto", {})
    print(f"{args.model_dir}/deploy.json: auto runs {record['auto']['fp32']} (fp32; at export "
          f"{exported.get('fp32', '-')}), {record['auto']['int8']} with --allow_int8 (at export {exported.get('int8', '-')})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

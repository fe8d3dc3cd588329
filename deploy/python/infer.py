"""Batch prediction with an exported model (tools/export.py output), one text per line.

    python deploy/python/infer.py --model_dir output/demo/export --input texts.txt
    echo "质量很好，物流也快" | python deploy/python/infer.py --model_dir output/demo/export
    python deploy/python/infer.py --model_dir DIR --backend onnx-int8 --input texts.txt --output preds.jsonl

Backends: paddle (Paddle Inference; CPU with oneDNN unless --no_mkldnn, or --device gpu with
--precision fp16 and --trt where the GPU build has TensorRT), onnx and onnx-int8 (onnxruntime,
CPU); auto (the default): onnx on CPU when the export has it, else paddle. Pair tasks take "text<TAB>pair" lines. Prints "label<TAB>score<TAB>text" per line
(token tasks: "char/label ..."), or writes JSON lines with --output. Blank lines are skipped;
JSON lines carry the input line number. The same predictor is importable:
``from ernie_tiny.deploy.predictor import Predictor``.
"""
import argparse
import json
import os
import sys
from itertools import islice

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from ernie_tiny.deploy.predictor import (BackendFlagsError, add_backend_arguments,  # noqa: E402 (no Paddle import)
                                         predictor_from_args)
from ernie_tiny.runtime import configure_threads  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--model_dir", required=True, help="inference directory written by tools/export.py")
    parser.add_argument("--input", default="-", help="text file, one text per line ('-' = stdin, the default)")
    parser.add_argument("--output", help="write JSON lines here instead of printing")
    add_backend_arguments(parser)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--max_length", type=int, default=0, help="tokens per text (0 = the exported max length)")
    return parser.parse_args(argv)


def read_lines(stream, name: str):
    """(line number, text[, pair]) for each non-blank line; a line that is not UTF-8 stops with its number."""
    for number, raw in enumerate(stream, 1):
        try:
            line = raw.decode("utf-8").rstrip("\r\n")
        except UnicodeDecodeError as err:
            raise SystemExit(f"{name}:{number}: not UTF-8 text ({err.reason} at byte {err.start})")
        if line.strip():
            yield number, line


def format_line(text: str, result: dict) -> str:
    if "tokens" in result:
        return " ".join(f"{t['token']}/{t['label']}" for t in result["tokens"])
    return f"{result['label']}\t{result['score']:.4f}\t{text}"


def main(argv=None) -> int:
    args = parse_args(argv)
    configure_threads(args.threads)
    try:
        predictor = predictor_from_args(args, max_length=args.max_length)
    except BackendFlagsError as err:
        print(err, file=sys.stderr)
        return 2
    pairs = predictor.input_type == "pair"
    stream = sys.stdin.buffer if args.input == "-" else open(args.input, "rb")
    out = open(args.output, "w", encoding="utf-8") if args.output else None
    lines = read_lines(stream, "<stdin>" if args.input == "-" else args.input)
    count = 0
    while True:
        chunk = list(islice(lines, 1024))
        if not chunk:
            break
        if pairs:
            split = [line.split("\t", 1) for _, line in chunk]
            bad = [number for (number, _), parts in zip(chunk, split) if len(parts) != 2]
            if bad:
                print(f"{args.input}:{bad[0]}: this model takes text pairs: text<TAB>pair", file=sys.stderr)
                return 2
            texts, text_pairs = [p[0] for p in split], [p[1] for p in split]
        else:
            texts, text_pairs = [line for _, line in chunk], None
        for (number, line), text, result in zip(chunk, texts, predictor.predict(texts, text_pairs)):
            if out:
                out.write(json.dumps({"line": number, "text": line, **result}, ensure_ascii=False) + "\n")
            else:
                print(format_line(text, result))
        count += len(chunk)
    if out:
        out.close()
        print(f"{count} predictions ({predictor.backend.description}) written to {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

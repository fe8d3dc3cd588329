"""Batch prediction with an exported model (tools/export.py output), one text per line.

    python deploy/python/infer.py --model_dir output/demo/export --input texts.txt
    echo "质量很好，物流也快" | python deploy/python/infer.py --model_dir output/demo/export
    python deploy/python/infer.py --model_dir DIR --backend onnx-int8 --input texts.txt --output preds.jsonl

Backends (--backend; ernie_tiny.deploy.backends lists them): paddle (Paddle Inference; CPU with
oneDNN unless --no_mkldnn, or --device gpu with --precision fp16 and --trt where the GPU build has
TensorRT), onnx, onnx-fused and onnx-int8 (onnxruntime, CPU), openvino, openvino-int8 and
openvino-bf16 (where the export's CPU computes bf16 natively); auto (the default): on CPU the
fastest fp32 backend the export timed (--allow_int8: int8 and bf16 too), on GPU paddle. Pair tasks take "text<TAB>pair" lines. Prints "label<TAB>score<TAB>text" per line
(token tasks: "char/label ..."), or writes JSON lines with --output. Blank lines are skipped;
JSON lines carry the input line number. The same predictor is importable:
``from ernie_tiny.deploy.predictor import Predictor``.

Input is UTF-8 (a byte-order mark and CRLF line ends are fine). The model directory, the input
and the output's directory are checked before the model loads, and the whole input before any
prediction: a bad one stops with a message naming the file (and line or key) and exit status 2,
and leaves no output file. --output is written whole or not at all.
"""
import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from ernie_tiny.deploy.inference_dir import read_deploy_info  # noqa: E402 (no Paddle import)
from ernie_tiny.deploy.inputs import (DeployInputError, input_name, non_negative_int, positive_int,  # noqa: E402
                                      text_lines, writable_file)
from ernie_tiny.deploy.predictor import add_backend_arguments, predictor_from_args  # noqa: E402
from ernie_tiny.files import write_atomically  # noqa: E402
from ernie_tiny.runtime import configure_threads  # noqa: E402

CHUNK = 1024  # lines per predictor call (the predictor batches them by --batch_size)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--model_dir", required=True, help="inference directory written by tools/export.py")
    parser.add_argument("--input", default="-", help="UTF-8 text file, one text per line ('-' = stdin, the default)")
    parser.add_argument("--output", help="write JSON lines here instead of printing")
    add_backend_arguments(parser)
    parser.add_argument("--batch_size", type=positive_int, default=32)
    parser.add_argument("--max_length", type=non_negative_int, default=0,
                        help="tokens per text (0 = the exported max length)")
    return parser.parse_args(argv)


def split_pairs(lines, source: str):
    """(texts, pairs) of "text<TAB>pair" lines; a line without a tab stops with its number."""
    split = [line.split("\t", 1) for _, line in lines]
    for (number, _), parts in zip(lines, split):
        if len(parts) != 2:
            raise DeployInputError(f"{source}:{number}: this model takes text pairs: text<TAB>pair")
    return [p[0] for p in split], [p[1] for p in split]


def format_line(text: str, result: dict) -> str:
    if "tokens" in result:
        return " ".join(f"{t['token']}/{t['label']}" for t in result["tokens"])
    return f"{result['label']}\t{result['score']:.4f}\t{text}"


def predictions(predictor, lines, texts, pairs):
    """(line number, line, text, result) for every input line, predicted CHUNK lines at a time."""
    for start in range(0, len(lines), CHUNK):
        end = start + CHUNK
        chunk_pairs = pairs[start:end] if pairs is not None else None
        results = predictor.predict(texts[start:end], chunk_pairs)
        for (number, line), text, result in zip(lines[start:end], texts[start:end], results):
            yield number, line, text, result


def run(args) -> None:
    info = read_deploy_info(args.model_dir)
    output = writable_file(args.output, "--output") if args.output else None
    lines = text_lines(args.input)
    if info["input"] == "pair":
        texts, pairs = split_pairs(lines, input_name(args.input))
    else:
        texts, pairs = [line for _, line in lines], None
    predictor = predictor_from_args(args, max_length=args.max_length)
    rows = predictions(predictor, lines, texts, pairs)
    if not args.output:
        for _, _, text, result in rows:
            print(format_line(text, result))
        return

    def write(tmp: Path) -> None:
        with open(tmp, "w", encoding="utf-8") as out:
            for number, line, _, result in rows:
                out.write(json.dumps({"line": number, "text": line, **result}, ensure_ascii=False) + "\n")

    write_atomically(Path(output), write)
    print(f"{len(lines)} predictions ({predictor.description}) written to {args.output}", file=sys.stderr)


def main(argv=None) -> int:
    args = parse_args(argv)
    configure_threads(args.threads)
    try:
        run(args)
    except DeployInputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

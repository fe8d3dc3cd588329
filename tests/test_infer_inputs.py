"""deploy/python/infer.py on bad inputs (issue 10): every expected failure is one message naming the
file (and line or key) and what to do, exit status 2, no traceback, and no output file; UTF-8 with
a byte-order mark and CRLF line ends is read as plain UTF-8. Over a tiny real exported model."""
import codecs
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from test_export import TEXTS, export, make_tiny_model

ROOT = Path(__file__).resolve().parent.parent
INFER = ROOT / "deploy/python/infer.py"


def load_infer_module():
    spec = importlib.util.spec_from_file_location("ernie_tiny_infer", INFER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def tiny_export(tmp_path_factory):
    """(source model dir, inference dir): a tiny review_sentiment model exported without ONNX or int8."""
    base = tmp_path_factory.mktemp("infer_inputs")
    model = make_tiny_model(base / "model", "review_sentiment")
    return model, export(model, base / "export", "Export.onnx=false", "Export.int8=off", "Export.check_examples=8")


@pytest.fixture
def infer():
    return load_infer_module()


def write_deploy_json(directory: Path, text: str) -> Path:
    directory.mkdir()
    (directory / "deploy.json").write_text(text, encoding="utf-8")
    return directory


def test_bad_model_dirs_are_named_with_what_to_do(tiny_export, infer, tmp_path, capsys):
    model, export_dir = tiny_export
    source = tmp_path / "texts.txt"
    source.write_text("好\n", encoding="utf-8")
    good = (export_dir / "deploy.json").read_text(encoding="utf-8")
    no_labels = json.dumps({k: v for k, v in json.loads(good).items() if k != "labels"})
    cases = [
        (tmp_path / "missing", ["missing: no such directory (make an inference directory with tools/export.py)"]),
        (model, [f"{model / 'deploy.json'}: not found; {model} is not an inference directory"]),
        (write_deploy_json(tmp_path / "truncated", good[:len(good) // 2]),
         ["truncated/deploy.json:", "not valid JSON", "re-export it with tools/export.py"]),
        (write_deploy_json(tmp_path / "no_labels", no_labels), ["no_labels/deploy.json: labels: Field required"]),
    ]
    for model_dir, messages in cases:
        assert infer.main(["--model_dir", str(model_dir), "--input", str(source)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and all(m in err for m in messages) and "Traceback" not in err, err


def test_bad_inputs_outputs_and_backends_stop_before_anything_is_written(tiny_export, infer, tmp_path, capsys):
    _, export_dir = tiny_export
    good = tmp_path / "texts.txt"
    good.write_text("好\n", encoding="utf-8")
    gbk = tmp_path / "gbk.txt"
    gbk.write_bytes("好\n".encode("utf-8") + "质量很好".encode("gbk") + b"\n")
    bom_then_gbk = tmp_path / "bom_gbk.txt"
    bom_then_gbk.write_bytes(codecs.BOM_UTF8 + gbk.read_bytes())
    output = tmp_path / "preds.jsonl"
    cases = [
        (["--input", str(tmp_path / "nope.txt")], "nope.txt: no such file"),
        (["--input", str(good), "--output", str(tmp_path / "no_dir" / "p.jsonl")], "no_dir does not exist"),
        (["--input", str(good), "--output", str(tmp_path)], "is a directory"),
        (["--input", str(good), "--output", str(output), "--backend", "onnx-int8"], "has no onnx-int8 model"),
        (["--input", str(gbk), "--output", str(output)],
         "gbk.txt:2: not UTF-8 text (invalid continuation byte at byte offset 4 of the file); convert it, "
         "e.g. iconv -f GBK"),
        (["--input", str(bom_then_gbk), "--output", str(output)], "bom_gbk.txt:2: not UTF-8 text (invalid "
                                                                  "continuation byte at byte offset 7 of the file)"),
    ]
    for flags, message in cases:
        assert infer.main(["--model_dir", str(export_dir), *flags]) == 2, flags
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err, err
        assert not output.exists() and not list(tmp_path.glob(".tmp_*"))  # nothing half-written
    with pytest.raises(SystemExit) as exit_:
        infer.main(["--model_dir", str(export_dir), "--batch_size", "0"])
    assert exit_.value.code == 2 and "--batch_size: must be at least 1, got 0" in capsys.readouterr().err


def test_bom_and_crlf_input_reads_as_plain_utf8(tiny_export, infer, tmp_path):
    _, export_dir = tiny_export
    plain, windows = tmp_path / "plain.txt", tmp_path / "windows.txt"
    plain.write_text("\n".join(TEXTS[:3]) + "\n", encoding="utf-8")
    windows.write_bytes(codecs.BOM_UTF8 + "\r\n".join(TEXTS[:3]).encode("utf-8") + b"\r\n")
    rows = {}
    for source in (plain, windows):
        target = tmp_path / f"{source.stem}.jsonl"
        assert infer.main(["--model_dir", str(export_dir), "--input", str(source), "--output", str(target),
                           "--backend", "paddle", "--threads", "1"]) == 0
        rows[source.stem] = [json.loads(line) for line in target.read_text(encoding="utf-8").splitlines()]
    assert rows["windows"] == rows["plain"] and [r["text"] for r in rows["plain"]] == TEXTS[:3]


def test_an_unexpected_failure_keeps_its_traceback_and_leaves_no_output(tiny_export, infer, tmp_path, monkeypatch):
    from ernie_tiny.deploy.predictor import Predictor

    _, export_dir = tiny_export
    source, target = tmp_path / "texts.txt", tmp_path / "preds.jsonl"
    source.write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    calls = []

    def fail_on_the_second_chunk(self, texts, pairs=None):
        calls.append(len(texts))
        if len(calls) == 2:
            raise RuntimeError("a bug")
        return original(self, texts, pairs)

    original = Predictor.predict
    monkeypatch.setattr(Predictor, "predict", fail_on_the_second_chunk)
    monkeypatch.setattr(infer, "CHUNK", 2)
    with pytest.raises(RuntimeError, match="a bug"):
        infer.main(["--model_dir", str(export_dir), "--input", str(source), "--output", str(target),
                    "--backend", "paddle", "--threads", "1"])
    assert calls == [2, 2] and not target.exists() and not list(tmp_path.glob(".tmp_*"))


def test_the_script_exits_2_with_one_line_and_no_traceback(tmp_path):
    done = subprocess.run([sys.executable, str(INFER), "--model_dir", str(tmp_path / "missing")],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.strip().splitlines() == [f"error: {tmp_path / 'missing'}: no such directory (make an "
                                                f"inference directory with tools/export.py)"]


def test_output_through_a_symlink_writes_its_file_and_a_pipe_is_refused(tiny_export, infer, tmp_path, capsys):
    import os

    _, export_dir = tiny_export
    source = tmp_path / "texts.txt"
    source.write_text("好\n", encoding="utf-8")
    real, link, pipe = tmp_path / "real.jsonl", tmp_path / "link.jsonl", tmp_path / "pipe"
    real.write_text("old\n", encoding="utf-8")
    link.symlink_to(real)
    os.mkfifo(pipe)
    assert infer.main(["--model_dir", str(export_dir), "--input", str(source), "--output", str(pipe),
                       "--threads", "1"]) == 2
    assert "is not a regular file" in capsys.readouterr().err and pipe.is_fifo()
    assert infer.main(["--model_dir", str(export_dir), "--input", str(source), "--output", str(link),
                       "--backend", "paddle", "--threads", "1"]) == 0
    assert link.is_symlink() and json.loads(real.read_text(encoding="utf-8"))["text"] == "好"


def test_max_length_threads_and_cpu_precision_are_checked(tiny_export, infer, tmp_path, capsys):
    _, export_dir = tiny_export
    source = tmp_path / "texts.txt"
    source.write_text("好\n", encoding="utf-8")
    positions = json.loads((export_dir / "config.json").read_text(encoding="utf-8"))["max_position_embeddings"]
    cases = [(["--max_length", "2"], "max_length 2: this model takes at least 3 tokens"),
             (["--max_length", str(positions + 1)], f"and at most {positions}"),
             (["--precision", "fp16"], "--precision fp16 needs --device gpu"),
             (["--trt"], "--trt needs --device gpu")]
    for flags, message in cases:
        assert infer.main(["--model_dir", str(export_dir), "--input", str(source), "--backend", "paddle",
                           "--threads", "1", *flags]) == 2, flags
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err, err
    for flag in ("--threads", "--max_length"):
        with pytest.raises(SystemExit) as exit_:
            infer.main(["--model_dir", str(export_dir), flag, "-1"])
        assert exit_.value.code == 2 and f"{flag}: must be 0 or more, got -1" in capsys.readouterr().err


def test_a_damaged_model_file_is_named_not_a_traceback(tiny_export, infer, tmp_path, capsys):
    import shutil

    _, export_dir = tiny_export
    source = tmp_path / "texts.txt"
    source.write_text("好\n", encoding="utf-8")
    copy = Path(shutil.copytree(export_dir, tmp_path / "export"))
    params = copy / json.loads((copy / "deploy.json").read_text(encoding="utf-8"))["paddle"]["params"]
    params.write_bytes(params.read_bytes()[:100])  # a copy cut short
    assert infer.main(["--model_dir", str(copy), "--input", str(source), "--backend", "paddle",
                       "--threads", "1"]) == 2
    err = capsys.readouterr().err
    assert f"error: {params}: cannot be loaded (" in err and "re-export it with tools/export.py" in err, err
    params.unlink()
    assert infer.main(["--model_dir", str(copy), "--input", str(source), "--backend", "paddle",
                       "--threads", "1"]) == 2
    assert f"{params}: listed in {copy / 'deploy.json'} but not found" in capsys.readouterr().err

"""Bad input past the config gets a one-line answer, not a traceback (issue 10).

Each case builds one malformed input in tmp_path and runs a tool's main function on the shipped
demo config: exit status 2, a message naming the culprit file (and key or line), and the output
directory left as it was. Two cases run the real tools/*.py in a subprocess, where the exit code
and the absence of a traceback are what a user sees. Then the accepted forms (a byte-order mark,
CRLF line endings) for every kind of text a run reads."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from config_files import write_model_dir
from ernie_tiny.cli import (distill_main, evaluate_main, export_main, finetune_main, pretrain_main, run_stage,
                            teacher_mtl_main)
from ernie_tiny.config import load_config
from ernie_tiny.data.corpus import iter_documents
from ernie_tiny.stages import STAGES, Stage
from ernie_tiny.distill.schema import DistillConfig
from ernie_tiny.errors import INPUT_ERROR_EXIT
from ernie_tiny.tasks.card import load_card
from ernie_tiny.tasks.readers import read_split
from test_evaluate import tiny_model  # noqa: F401 (a fixture: a real 2-layer student with its tokenizer)
from tiny_stages import DISTILL, PRETRAIN, ROOT, TINY_TASK

DEMO = ROOT / "configs" / "demo"
GBK_TEXT = "中文文本\n".encode("gbk")


def flat(overrides: dict, prefix: str = "") -> list:
    """``{"Data": {"seq_len": 32}}`` -> ``["-o", "Data.seq_len=32"]``."""
    items = []
    for key, value in overrides.items():
        if isinstance(value, dict):
            items += flat(value, f"{prefix}{key}.")
        else:
            items += ["-o", f"{prefix}{key}={json.dumps(value, ensure_ascii=False)}"]
    return items


def write_corpus(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def broken_model(tmp_path: Path, how: str) -> Path:
    """A teacher directory with one thing wrong; returns the culprit's path (dir or file)."""
    model = write_model_dir(tmp_path / "teacher", num_hidden_layers=2, hidden_size=16, vocab_size=64,
                            max_position_embeddings=64)
    if how == "no_config":
        (model / "config.json").unlink()
        return model
    if how == "corrupt_config":
        (model / "config.json").write_text('{"num_hidden_layers": 2,')
        return model / "config.json"
    if how == "truncated_weights":  # a header promising 400 bytes of one tensor, 10 of them present
        header = json.dumps({"w": {"dtype": "F32", "shape": [100], "data_offsets": [0, 400]}}).encode()
        (model / "model.safetensors").write_bytes(len(header).to_bytes(8, "little") + header + b"\0" * 10)
        return model / "model.safetensors"
    if how == "small_vocab":  # 64 embeddings, a 70-token vocabulary
        (model / "vocab.txt").write_text("".join(f"t{i}\n" for i in range(70)), encoding="utf-8")
        return model
    raise ValueError(how)


def distill_args(tmp_path: Path, *extra: str) -> list:
    return ["-c", str(DEMO / "distill.yaml"), *flat(DISTILL), "-o", f"Global.output_dir={tmp_path / 'out'}",
            "-o", f"Data.cache_dir={tmp_path / 'cache'}", *extra]


def with_o(*overrides: str) -> list:
    return [item for override in overrides for item in ("-o", override)]


def teacher_case(how: str, key: str, expect: str):
    def build(tmp_path):
        culprit = broken_model(tmp_path, how)
        return distill_main, distill_args(tmp_path, *with_o(f"Teacher.name_or_path={tmp_path / 'teacher'}",
                                                             "Tokenizer.source=teacher")), [key, str(culprit), expect]
    return build


def tokenizer_case(make):
    def build(tmp_path):
        path = make(tmp_path)
        return distill_main, distill_args(tmp_path, "-o", f"Tokenizer.source={path}"), ["Tokenizer.source", str(path)]
    return build


def corpus_case(data: bytes, *expect: str, extra=()):
    def build(tmp_path):
        path = write_corpus(tmp_path / "corpus.txt", data)
        args = distill_args(tmp_path, "-o", f"Data.sources=[{path}]", *extra)
        return distill_main, args, [s.format(path=path) for s in expect]
    return build


def config_file_case(make, *expect: str):
    def build(tmp_path):
        path = make(tmp_path)
        return distill_main, ["-c", str(path), "-o", f"Global.output_dir={tmp_path / 'out'}"], \
            [s.format(path=path) for s in expect]
    return build


def output_file_case(tmp_path):
    (tmp_path / "out").write_text("a file where the output directory goes\n")
    return distill_main, ["-c", str(DEMO / "distill.yaml"), "-o", f"Global.output_dir={tmp_path / 'out'}"], \
        ["Global.output_dir", str(tmp_path / "out"), "is a file"]


def unknown_section_case(tmp_path):
    return distill_main, distill_args(tmp_path, "-o", "Trainer.max_steps=2"), ["-o Trainer.max_steps=2: Trainer"]


def pretrain_positions_case(tmp_path):
    args = ["-c", str(DEMO / "pretrain.yaml"), *flat(PRETRAIN), "-o", f"Global.output_dir={tmp_path / 'out'}",
            "-o", "Model.max_position_embeddings=16"]
    return pretrain_main, args, ["Data.seq_len", "Model.max_position_embeddings 16"]


def evaluate_args(tmp_path: Path, model: Path) -> list:
    tasks = json.dumps([{"card": "eprstmt", **TINY_TASK}])
    return ["-c", str(DEMO / "evaluate.yaml"),
            *with_o(f"Model.path={model}", f"Global.output_dir={tmp_path / 'out'}", f"Data.dir={tmp_path / 'clue'}",
                    f"Tasks={tasks}", "Grid.max_steps=1")]


def clue_case(train: bytes, *expect: str):
    """FewCLUE eprstmt files with a bad train.json (the model: a real tiny student)."""
    def build(tmp_path, model):
        folder = tmp_path / "clue" / "eprstmt"
        folder.mkdir(parents=True)
        (folder / "train_few_all.json").write_bytes(train)
        (folder / "dev_few_all.json").write_text('{"sentence": "很好", "label": "Positive"}\n', encoding="utf-8")
        return evaluate_main, evaluate_args(tmp_path, model), \
            [s.format(path=folder / "train_few_all.json") for s in expect]
    return build


def evaluate_model_case(tmp_path, model):
    empty = tmp_path / "not_a_model"
    empty.mkdir()
    return evaluate_main, evaluate_args(tmp_path, empty), ["Model.path", str(empty), "no config.json"]


CASES = {
    # model and tokenizer directories (checked with the config, before Paddle is imported)
    "teacher_without_config_json": teacher_case("no_config", "Teacher.name_or_path", "no config.json"),
    "teacher_corrupt_config_json": teacher_case("corrupt_config", "Teacher.name_or_path", "not valid JSON"),
    "teacher_truncated_safetensors": teacher_case("truncated_weights", "Teacher.name_or_path", "truncated"),
    "teacher_vocab_smaller_than_tokenizer": teacher_case("small_vocab", "Teacher.name_or_path",
                                                         "64 token embeddings, fewer than the tokenizer's 70"),
    "tokenizer_missing_dir": tokenizer_case(lambda tmp: tmp / "no_such_tokenizer"),
    "tokenizer_empty_dir": tokenizer_case(lambda tmp: (tmp / "empty").mkdir() or tmp / "empty"),
    "seq_len_over_positions": lambda tmp: (distill_main, distill_args(tmp, "-o", "Data.seq_len=1024"),
                                           ["Data.seq_len", "1024", "max_position_embeddings 512"]),
    "pretrain_seq_len_over_positions": pretrain_positions_case,
    # the config file and flags
    "config_is_a_directory": config_file_case(lambda tmp: tmp, "{path}: is a directory"),
    "config_not_utf8": config_file_case(
        lambda tmp: write_corpus(tmp / "c.yaml", "Global:\n  seed: 1  # 种子\n".encode("gbk")),
        "{path}:2: not UTF-8", "iconv -f GBK -t UTF-8"),
    "unknown_section_from_override": unknown_section_case,
    "output_dir_is_a_file": output_file_case,
    # the corpus (read while the tokenizer and shards are built)
    "corpus_empty": corpus_case(b"", "{path}: no text"),
    "corpus_blank": corpus_case(b"\n  \n\r\n", "{path}: no text"),
    "corpus_gbk": corpus_case(GBK_TEXT, "{path}:1: not UTF-8", "byte offset 0", "iconv -f GBK -t UTF-8 {path}"),
    "corpus_binary": corpus_case(b"PK\x03\x04\x00\x00binary", "{path}:1: a NUL byte", "binary file"),
    "corpus_shorter_than_a_sequence": corpus_case("短文本\n".encode() * 3, "{path} (Data.sources)",
                                                  "shorter than one sequence of 32 tokens",
                                                  "Data.seq_len", extra=("-o", "Tokenizer.min_freq=1")),
    "corpus_smaller_than_a_batch": corpus_case(("一二三四五六七八九十" * 8 + "\n").encode(),
                                               "{path} (Data.sources): 2 sequences", "fewer than one batch",
                                               "Train.batch_size",
                                               extra=("-o", "Tokenizer.min_freq=1")),
}
def evaluate_truncated_model_case(tmp_path, model):
    copy = Path(shutil.copytree(model, tmp_path / "student"))
    weights = copy / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])  # a copy cut short
    return evaluate_main, evaluate_args(tmp_path, copy), ["Model.path", str(weights), "truncated"]


def mtl_small_task_case(tmp_path, model):
    tasks = json.dumps([{"card": "pd_entity_type", "max_train_examples": 3, "max_dev_examples": 4, "max_length": 32}])
    return teacher_mtl_main, ["-c", str(DEMO / "teacher_mtl.yaml"), "-o", f"Model.name_or_path={model}",
                                "-o", f"Global.output_dir={tmp_path / 'out'}", "-o", f"Tasks={tasks}",
                                "-o", "Train.batch_size=4"], \
        ["Tasks.0 (pd_entity_type): 3 train examples, fewer than one batch", "Train.batch_size"]


def finetune_model_without_weights_case(tmp_path, model):
    copy = Path(shutil.copytree(model, tmp_path / "student"))
    (copy / "model.safetensors").unlink()
    return finetune_main, ["-c", str(DEMO / "finetune.yaml"), *with_o(f"Model.path={copy}",
                                                                      f"Global.output_dir={tmp_path / 'out'}")], \
        ["Model.path", str(copy), "no weights"]


def export_task_json_truncated_case(tmp_path, model):
    copy = Path(shutil.copytree(model, tmp_path / "finetuned"))
    (copy / "task.json").write_text('{"task": "review_sen', encoding="utf-8")  # a copy cut short
    return export_main, ["-c", str(DEMO / "export.yaml"), *with_o(f"Model.path={copy}",
                                                                  f"Global.output_dir={tmp_path / 'out'}")], \
        ["Model.path", str(copy / "task.json"), "not valid JSON", "tools/finetune.py"]


MODEL_CASES = {  # cases on a real tiny student (evaluated, or finetuned as a teacher)
    "finetune_model_without_weights": finetune_model_without_weights_case,
    "export_task_json_truncated": export_task_json_truncated_case,
    "mtl_task_smaller_than_a_batch": mtl_small_task_case,
    "evaluate_model_dir_without_config": evaluate_model_case,
    "evaluate_model_truncated_safetensors": evaluate_truncated_model_case,
    "clue_train_empty": clue_case(b"", "{path}: no rows"),
    "clue_train_gbk": clue_case('{"sentence": "很好", "label": "Positive"}\n'.encode("gbk"),
                                "{path}:1: not UTF-8", "iconv -f GBK -t UTF-8"),
}


def assert_rejected(main, args, expect, tmp_path, capsys):
    before = sorted(p.name for p in tmp_path.iterdir())
    out_before = (tmp_path / "out").read_bytes() if (tmp_path / "out").is_file() else None
    assert main(args) == INPUT_ERROR_EXIT
    err = capsys.readouterr().err
    assert "Traceback" not in err
    for text in expect:
        assert text in err, err
    out = tmp_path / "out"
    assert not out.is_dir() and (out.read_bytes() if out.is_file() else None) == out_before  # as it was
    assert set(p.name for p in tmp_path.iterdir()) - set(before) <= {"cache"}  # at most the shard cache


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_exits_2_naming_the_file_and_writes_nothing(case, tmp_path, capsys):
    main, args, expect = CASES[case](tmp_path)
    assert_rejected(main, args, expect, tmp_path, capsys)


@pytest.mark.parametrize("case", sorted(MODEL_CASES))
def test_bad_evaluation_input_exits_2_naming_the_file(case, tmp_path, capsys, tiny_model):  # noqa: F811
    main, args, expect = MODEL_CASES[case](tmp_path, tiny_model)
    assert_rejected(main, args, expect, tmp_path, capsys)


@pytest.mark.parametrize("tool, make_args, expect", [
    ("distill.py", lambda tmp: distill_args(tmp, *with_o(f"Teacher.name_or_path={tmp / 'teacher'}",
                                                         "Tokenizer.source=teacher")), "truncated"),
    ("distill.py", lambda tmp: distill_args(tmp, "-o", f"Data.sources=[{write_corpus(tmp / 'c.txt', GBK_TEXT)}]"),
     "c.txt:1: not UTF-8"),
])
def test_the_tool_prints_one_message_and_no_traceback(tmp_path, tool, make_args, expect):
    broken_model(tmp_path, "truncated_weights")
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / tool), *make_args(tmp_path)],
                          capture_output=True, text=True, timeout=180, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and expect in proc.stderr, proc.stderr[-3000:]
    assert not (tmp_path / "out").exists()


def test_an_unexpected_failure_keeps_its_traceback(monkeypatch, tmp_path):
    """Only InputError is turned into a message: a bug still raises."""
    monkeypatch.setitem(STAGES, "broken", Stage("broken", "a stage whose run is not a function",
                                                "ernie_tiny.distill.schema:DistillConfig",
                                                "ernie_tiny.distill.schema:BUILTIN_SOURCES", resume_flag=False))
    with pytest.raises(TypeError):
        run_stage("broken", ["-c", str(DEMO / "distill.yaml"), "-o", f"Global.output_dir={tmp_path / 'out'}"])



def _fails_writing(errno_name: str):
    import errno
    import os

    def run(config):
        code = getattr(errno, errno_name)
        raise OSError(code, os.strerror(code), str(Path(config.Global.output_dir) / "train_log.jsonl"))
    return run


def fail_disk_full(config):
    _fails_writing("ENOSPC")(config)


def fail_not_found(config):
    _fails_writing("ENOENT")(config)


def test_a_write_failure_anywhere_is_one_message_and_any_other_os_error_keeps_its_traceback(
        monkeypatch, tmp_path, capsys):
    """A full disk (or file-size limit, read-only directory) wherever a stage writes: the file and
    the reason, exit 2; an OSError that is not a failed write is a bug and raises."""
    args = ["-c", str(DEMO / "distill.yaml"), "-o", f"Global.output_dir={tmp_path / 'out'}"]
    for name in ("fail_disk_full", "fail_not_found"):
        monkeypatch.setitem(STAGES, name, Stage(name, "a stage that cannot write", "ernie_tiny.distill.schema:DistillConfig",
                                                f"{__name__}:{name}", resume_flag=False))
    assert run_stage("fail_disk_full", args) == INPUT_ERROR_EXIT
    err = capsys.readouterr().err
    assert f"{tmp_path / 'out' / 'train_log.jsonl'}: cannot write (No space left on device)" in err
    with pytest.raises(FileNotFoundError):
        run_stage("fail_not_found", args)

# ---- what is accepted: a byte-order mark and CRLF line endings, everywhere text is read ----

BOM = b"\xef\xbb\xbf"


def test_config_with_bom_and_crlf_loads(tmp_path):
    text = (DEMO / "distill.yaml").read_bytes().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    path = write_corpus(tmp_path / "c.yaml", BOM + text)
    assert load_config(DistillConfig, path) == load_config(DistillConfig, DEMO / "distill.yaml")


def test_corpus_with_bom_and_crlf_reads_clean_documents(tmp_path):
    path = write_corpus(tmp_path / "c.txt", BOM + "第一篇\r\n第二篇\r\n".encode())
    assert list(iter_documents([str(path)])) == ["第一篇", "第二篇"]


def test_clue_json_lines_with_bom_and_crlf_are_read(tmp_path):
    folder = tmp_path / "eprstmt"
    folder.mkdir()
    rows = [{"sentence": "很好", "label": "Positive"}, {"sentence": "很差", "label": "Negative"}]
    lines = "".join(json.dumps(r, ensure_ascii=False) + "\r\n" for r in rows).encode()
    write_corpus(folder / "train_few_all.json", BOM + lines)
    split = read_split(load_card("eprstmt"), "train", str(tmp_path))
    assert [(e.text, e.label) for e in split.examples] == [("很好", 0), ("很差", 1)]
    assert split.examples[1].where.endswith("train_few_all.json:2")


def test_csv_and_tsv_with_bom_and_crlf_are_read(tmp_path):
    (tmp_path / "shopping10").mkdir()
    rows = "".join(f"书籍,{i % 2},评论{i}\r\n" for i in range(40))
    write_corpus(tmp_path / "shopping10" / "online_shopping_10_cats.csv", BOM + f"cat,label,review\r\n{rows}".encode())
    card = load_card("shopping10")
    texts = [e.text for split in ("train", "dev") for e in read_split(card, split, str(tmp_path)).examples]
    assert sorted(texts) == sorted(f"评论{i}" for i in range(40))  # no "\r" left, the header's BOM gone
    card_file = tmp_path / "tsvtask.yaml"
    card_file.write_text((ROOT / "tasks" / "fewclue" / "eprstmt.yaml").read_text(encoding="utf-8")
                         .replace("name: eprstmt", "name: tsvtask")
                         .replace("local: {format: jsonl,", "local: {format: tsv, columns: [sentence, label],"),
                         encoding="utf-8")
    (tmp_path / "tsvtask").mkdir()
    write_corpus(tmp_path / "tsvtask" / "train_few_all.json", BOM + "很好\tPositive\r\n很差\tNegative\r\n".encode())
    split = read_split(load_card(str(card_file)), "train", str(tmp_path))
    assert [(e.text, e.label) for e in split.examples] == [("很好", 0), ("很差", 1)]

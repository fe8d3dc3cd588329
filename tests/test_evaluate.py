"""Stage 3: the evaluation config, the grid, the report, the metrics against hand-computed values,
and short end-to-end runs on a tiny real model (one local task in the FewCLUE format, one
built-in offline task), including resuming after an interruption."""
import json
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from ernie_tiny.config import ConfigError, load_config, validate_config
from ernie_tiny.evaluation.grid import GridPoint, for_rank, task_points
from ernie_tiny.evaluation.report import markdown, summarize, write_results
from ernie_tiny.evaluation.runner import ResultsLog, point_key
from ernie_tiny.evaluation.schema import EvaluateConfig, GridSection, EvalTaskEntry
from ernie_tiny.tasks.card import load_card
from ernie_tiny.tasks.readers import TaskDataError

ROOT = Path(__file__).resolve().parent.parent

EPRSTMT_TRAIN = [("质量很好，非常满意", "Positive"), ("物流很快，包装完好", "Positive"), ("声音清晰，推荐购买", "Positive"),
                 ("做工精致，值得购买", "Positive"), ("太差了，退货", "Negative"), ("质量不好，很失望", "Negative"),
                 ("声音太小，不推荐", "Negative"), ("包装破损，差评", "Negative")] * 2
EPRSTMT_DEV = [("非常满意，推荐", "Positive"), ("很失望，差评", "Negative"), ("质量很好", "Positive"),
               ("退货了，太差", "Negative"), ("包装完好", "Positive"), ("不推荐", "Negative")]


def write_jsonl(path: Path, rows) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    """A 2-layer, 24-wide ERNIE with a character vocabulary, saved as a student directory."""
    import paddle

    from ernie_tiny.schema import ModelSection
    from ernie_tiny.modeling import build_encoder
    from ernie_tiny.tasks.offline import load_builtin
    from ernie_tiny.tokenization import build_vocab, tokenizer_from_vocab

    root = tmp_path_factory.mktemp("tiny_student")
    texts = [t for t, _ in EPRSTMT_TRAIN + EPRSTMT_DEV] + [r["text"] for r in load_builtin("pd_entity_type", "dev")[:2000]]
    tokenizer = tokenizer_from_vocab(build_vocab(texts, root / "vocab.txt", 3000, 1))
    paddle.seed(0)
    spec = ModelSection(num_layers=2, hidden_size=24, num_heads=4, intermediate_size=48, max_position_embeddings=160)
    model = build_encoder(spec, len(tokenizer), tokenizer.pad_token_id)
    model.save_pretrained(str(root / "student"), safe_serialization=True)
    tokenizer.save_pretrained(str(root / "student"))
    return root / "student"


def e2e_config(tmp_path: Path, model: Path, **grid) -> Path:
    data_dir = tmp_path / "data"
    write_jsonl(data_dir / "eprstmt" / "train_few_all.json",
                [{"id": i, "sentence": s, "label": y} for i, (s, y) in enumerate(EPRSTMT_TRAIN)])
    write_jsonl(data_dir / "eprstmt" / "dev_few_all.json",
                [{"id": i, "sentence": s, "label": y} for i, (s, y) in enumerate(EPRSTMT_DEV)])
    config = {
        "Global": {"output_dir": str(tmp_path / "out"), "num_threads": 0},
        "Model": {"path": str(model), "name": "tiny"},
        "Data": {"dir": str(data_dir)},
        "Tasks": [{"card": "eprstmt"},
                  {"card": "pd_entity_type", "max_train_examples": 48, "max_dev_examples": 32, "max_length": 64}],
        "Grid": {"batch_sizes": [8], "learning_rates": [1e-3, 3e-4], "card_overrides": False, "seeds": [1],
                 "epochs": 2, "eval_every": 2, **grid},
        "Report": {"reference": {"paper": {"eprstmt": 80.0, "afqmc": 70.0}}},
    }
    path = tmp_path / "evaluate.yaml"
    path.write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
    return path


def run_evaluate(path: Path, *overrides: str):
    from ernie_tiny.evaluation.runner import run

    return run(load_config(EvaluateConfig, path, overrides))


def valid_lines(path: Path) -> list:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


# ---- end to end ----

def test_evaluation_writes_results_csv_md_chart_and_curves(tmp_path, tiny_model):
    run_evaluate(e2e_config(tmp_path, tiny_model))
    out = tmp_path / "out"
    records = valid_lines(out / "grid_points.jsonl")
    assert [(r["task"], r["learning_rate"]) for r in records] == [
        ("eprstmt", 1e-3), ("eprstmt", 3e-4), ("pd_entity_type", 1e-3), ("pd_entity_type", 3e-4)]
    for r in records:
        assert r["steps"] == 2 * -(-r["train_examples"] // 8)  # 2 epochs, a last partial batch kept
        every = 1 if r["task"] == "eprstmt" else 2  # a FewCLUE card: at least 4 scores an epoch of 2 steps
        assert [s for s, _ in r["evals"]] == list(range(every, r["steps"] + 1, every))
        assert r["score"] == max(score for _, score in r["evals"])  # the best dev score is kept
        assert dict(map(tuple, r["evals"]))[r["best_step"]] == r["score"]
    assert records[0]["train_examples"] == 16 and records[0]["dev_examples"] == 6
    assert records[0]["majority"] == 50.0  # 8/8 in train: the first label, Positive; 3 of 6 in dev
    assert records[2]["train_examples"] == 48 and records[2]["dev_examples"] == 32
    for score in (r["score"] for r in records[:2]):  # accuracy on 6 dev rows is a multiple of 1/6
        assert round(score * 6 / 100, 6) == round(score * 6 / 100)

    import csv

    rows = list(csv.DictReader(open(out / "results.csv", encoding="utf-8")))
    assert [r["task"] for r in rows] == ["eprstmt", "pd_entity_type"]
    for row, pair in zip(rows, (records[:2], records[2:])):
        best = max(pair, key=lambda r: r["score"])
        assert float(row["score"]) == pytest.approx(best["score"], abs=1e-4)
        assert float(row["learning_rate"]) == best["learning_rate"] and row["std"] == ""
        assert row["grid_points"] == "2" and row["metric"] == "accuracy" and row["model"] == "tiny"
    md = (out / "results.md").read_text(encoding="utf-8")
    assert "| eprstmt | accuracy |" in md and "| paper | 80.0 |" in md
    png = (out / "results.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and struct.unpack(">II", png[16:24])[0] > 300
    for r in records:
        point = GridPoint(r["task"], r["batch_size"], r["learning_rate"], r["dropout"], r["seed"], r["epochs"])
        assert list((out / "vdl" / r["task"] / point.name).glob("vdlrecords.*")), point.name
    assert yaml.safe_load((out / "config.yaml").read_text())["Model"]["name"] == "tiny"

    # resume: a rerun after an interruption redoes only the unfinished points
    lines = (out / "grid_points.jsonl").read_text(encoding="utf-8").splitlines()
    (out / "grid_points.jsonl").write_text("\n".join(lines[:2]) + "\n" + lines[2][:40], encoding="utf-8")  # cut mid-write
    (out / "results.csv").unlink()
    run_evaluate(e2e_config(tmp_path, tiny_model))
    again = ResultsLog(out).load()
    assert sorted(again) == sorted(r["key"] for r in records)
    assert [again[r["key"]]["finished"] for r in records[:2]] == [r["finished"] for r in records[:2]]  # kept
    assert len(valid_lines(out / "grid_points.jsonl")) == 4  # 2 kept, the cut-off line dropped, 2 redone
    assert (out / "results.csv").is_file()

    # a finished grid runs nothing; a changed setting is not mistaken for a finished point
    before = (out / "grid_points.jsonl").read_text(encoding="utf-8")
    run_evaluate(e2e_config(tmp_path, tiny_model))
    assert (out / "grid_points.jsonl").read_text(encoding="utf-8") == before
    config = load_config(EvaluateConfig, e2e_config(tmp_path, tiny_model))
    changed = load_config(EvaluateConfig, e2e_config(tmp_path, tiny_model, eval_every=3))
    from ernie_tiny.evaluation.runner import task_settings

    card = load_card("eprstmt")
    point = task_points(card, config.Tasks[0], config.Grid)[0]
    assert point_key(point, task_settings(config, config.Tasks[0], card, "m")) != \
        point_key(point, task_settings(changed, changed.Tasks[0], card, "m"))
    assert point_key(point, task_settings(config, config.Tasks[0], card, "m")) != \
        point_key(point, task_settings(config, config.Tasks[0], card, "another model"))
    unclipped = load_config(EvaluateConfig, e2e_config(tmp_path, tiny_model, max_grad_norm=0))
    assert point_key(point, task_settings(config, config.Tasks[0], card, "m")) != \
        point_key(point, task_settings(unclipped, unclipped.Tasks[0], card, "m"))


def test_a_bad_line_in_a_later_task_stops_the_run_before_the_first_point(tmp_path, tiny_model):
    path = e2e_config(tmp_path, tiny_model)
    config = yaml.safe_load(path.read_text(encoding="utf-8"))
    config["Tasks"].reverse()  # the built-in task first; the local file with the bad line second
    path.write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
    dev = tmp_path / "data" / "eprstmt" / "dev_few_all.json"
    dev.write_text(dev.read_text(encoding="utf-8") + '{"id": 9, "sentence": "cut\n', encoding="utf-8")
    with pytest.raises(TaskDataError) as info:
        run_evaluate(path)
    assert str(info.value).startswith(f"{dev}:{len(EPRSTMT_DEV) + 1}: not a JSON line")
    assert not (tmp_path / "out").exists()  # no point ran, nothing was written


def test_recorded_score_is_the_metric_of_the_models_predictions(tiny_model, tmp_path):
    """``evaluate`` (what the grid records) against accuracy and macro-F1 computed by hand from
    the same model's predictions."""
    from paddlenlp.transformers import AutoTokenizer

    from ernie_tiny.finetune.loop import build_task_model, evaluate, predict
    from ernie_tiny.tasks.encode import encode
    from ernie_tiny.tasks.readers import read_split

    e2e_config(tmp_path, tiny_model)  # writes the data
    card = load_card("eprstmt")
    split = read_split(card, "dev", data_dir=str(tmp_path / "data"))
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model))
    features = encode(split.examples, tokenizer, card.max_length, card.head)
    model = build_task_model(str(tiny_model), card, 2, 0.1)
    predictions, gold = predict(model, features, 4, tokenizer.pad_token_id)
    assert list(gold) == [card.label.values.index(y) for _, y in EPRSTMT_DEV]
    accuracy = 100.0 * sum(int(p == g) for p, g in zip(predictions, gold)) / len(gold)
    assert evaluate(model, features, card, split.labels, 4, tokenizer.pad_token_id) == pytest.approx(accuracy)


def test_metrics_by_hand():
    from ernie_tiny.tasks.encode import IGNORE
    from ernie_tiny.tasks.metrics import score

    # accuracy and macro-F1, 3 classes: gold 0 0 1 1 2 2, predicted 0 1 1 1 2 0
    gold, pred = [0, 0, 1, 1, 2, 2], [0, 1, 1, 1, 2, 0]
    assert score("accuracy", pred, gold, ["a", "b", "c"]) == pytest.approx(100 * 4 / 6)
    f1 = [2 * 0.5 * 0.5 / 1.0, 2 * (2 / 3) * 1 / (2 / 3 + 1), 2 * 1 * 0.5 / 1.5]  # per class
    assert score("macro_f1", pred, gold, ["a", "b", "c"]) == pytest.approx(100 * sum(f1) / 3)
    # entity F1 (seqeval): gold PER, LOC | ORG(2 tokens); predicted PER | ORG cut short -> 1 of 2
    # predicted right, 1 of 3 gold found: P 1/2, R 1/3, F1 0.4. IGNORE positions ([CLS], [SEP],
    # sub-words, padding) do not count even where the prediction there is an entity.
    names = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG", "I-ORG"]
    x = IGNORE
    gold = np.array([[x, 1, 2, 0, 3, x], [x, 5, 6, x, x, x]])
    pred = np.array([[3, 1, 2, 0, 0, 3], [1, 5, 0, 5, 6, 1]])
    assert score("entity_f1", pred, gold, names) == pytest.approx(40.0)
    assert score("token_accuracy", pred, gold, names) == pytest.approx(100 * 4 / 6)


def test_majority_class_baseline_by_hand():
    """The train split's most frequent label (tag), scored on dev: the baseline never sees dev labels."""
    from ernie_tiny.tasks.data import TaskData, majority_baseline
    from ernie_tiny.tasks.encode import IGNORE, Features

    def split(card, name, labels, ys):
        features = [Features([1] * (len(y) if isinstance(y, list) else 3), [0], y) for y in ys]
        return TaskData(card, name, labels, features, 0, "by hand")

    def baseline(card, labels, train, dev):
        return majority_baseline(split(card, "train", labels, train), split(card, "dev", labels, dev))

    card = load_card("afqmc")  # accuracy
    assert baseline(card, ["0", "1"], [1, 1, 0], [1, 0, 0, 1, 1]) == pytest.approx(60.0)
    # train mostly "0", dev mostly "1": the train label is predicted, dev's majority is not looked at
    assert baseline(card, ["0", "1"], [0, 0, 1], [1, 1, 0]) == pytest.approx(100 / 3)
    x = IGNORE  # token tasks: the most frequent train tag everywhere ("O" here, id 0)
    train, dev = [[x, 0, 0, 1, x]], [[x, 0, 1, 2, x], [x, 0, x]]
    assert baseline(load_card("pd_pos"), load_card("pd_pos").label.values, train, dev) == pytest.approx(50.0)
    assert baseline(load_card("pd_pos"), load_card("pd_pos").label.values, [[x, 2, 2, 0, x]], dev) == pytest.approx(25.0)
    ner = load_card("pd_ner")
    assert baseline(ner, ner.label.values, train, dev) == 0.0  # no entity predicted, none found


# ---- results log ----

def test_results_log_names_file_and_line_of_a_damaged_record(tmp_path):
    log = ResultsLog(tmp_path)
    log.append({"key": "a", "score": 1.0})
    with open(log.path, "a", encoding="utf-8") as f:
        f.write("{broken\n")
    log.append({"key": "b", "score": 2.0})
    with pytest.raises(ValueError, match=rf"^{log.path}:2: not a JSON line"):
        log.load()


def test_results_log_merges_the_ranks_files(tmp_path):
    ResultsLog(tmp_path, 0, 2).append({"key": "a"})
    ResultsLog(tmp_path, 1, 2).append({"key": "b"})
    ResultsLog(tmp_path).append({"key": "c"})  # an earlier single-process run
    assert sorted(ResultsLog(tmp_path, 1, 2).load()) == ["a", "b", "c"]
    assert ResultsLog(tmp_path, 1, 2).path.name == "grid_points.rank1.jsonl"


# ---- grid ----

def test_paper_grid_with_the_cards_overrides():
    grid = GridSection()  # paper defaults
    sizes = {name: len(task_points(load_card(name), EvalTaskEntry(card=name), grid))
             for name in ("afqmc", "iflytek", "cluewsc2020", "csl")}
    assert sizes == {"afqmc": 12, "iflytek": 24, "cluewsc2020": 32, "csl": 12}
    wsc = task_points(load_card("cluewsc2020"), EvalTaskEntry(card="cluewsc2020"), grid)
    assert sorted({p.batch_size for p in wsc}) == [8, 16, 32, 64]
    assert sorted({p.dropout for p in wsc}) == [0.0, 0.1]
    assert {p.epochs for p in wsc} == {50}  # Table 6
    assert {p.learning_rate for p in wsc} == {1e-5, 2e-5, 3e-5, 5e-5}


def test_one_point_grid_and_epochs_precedence():
    card = load_card("cluewsc2020")
    grid = GridSection(batch_sizes=[32], learning_rates=[3e-5], card_overrides=False, seeds=[1, 2])
    points = task_points(card, EvalTaskEntry(card="cluewsc2020"), grid)
    assert points == [GridPoint("cluewsc2020", 32, 3e-5, 0.1, 1, 50), GridPoint("cluewsc2020", 32, 3e-5, 0.1, 2, 50)]
    grid.epochs = 4
    assert {p.epochs for p in task_points(card, EvalTaskEntry(card="cluewsc2020"), grid)} == {4}
    assert {p.epochs for p in task_points(card, EvalTaskEntry(card="cluewsc2020", epochs=7), grid)} == {7}


def test_points_are_dealt_to_ranks_whole_and_once():
    items = list(range(11))
    shares = [for_rank(items, r, 3) for r in range(3)]
    assert sorted(sum(shares, [])) == items and shares[1] == [1, 4, 7, 10]


# ---- report ----

def record(task, bs, lr, seed, score, seconds=10.0, best_step=100, dropout=0.1):
    return {"task": task, "metric": "accuracy", "batch_size": bs, "learning_rate": lr, "dropout": dropout,
            "epochs": 3, "seed": seed, "score": score, "best_step": best_step, "seconds": seconds,
            "train_examples": 100, "dev_examples": 50, "skipped_train": 0, "skipped_dev": 2, "majority": 55.0}


def test_summary_takes_the_best_mean_over_seeds():
    records = [record("afqmc", 16, 1e-5, 1, 70.0), record("afqmc", 16, 1e-5, 2, 74.0),  # mean 72
               record("afqmc", 32, 2e-5, 1, 75.0, best_step=300), record("afqmc", 32, 2e-5, 2, 71.0),  # mean 73
               record("tnews", 16, 1e-5, 1, 50.0), record("tnews", 16, 1e-5, 2, 50.0)]
    afqmc, tnews = summarize(records, "student")
    assert (afqmc.score, afqmc.batch_size, afqmc.learning_rate, afqmc.seeds) == (73.0, 32, 2e-5, 2)
    assert afqmc.std == pytest.approx(np.std([75.0, 71.0], ddof=1)) and afqmc.best_step == 300
    assert (afqmc.grid_points, afqmc.seconds, afqmc.skipped_rows) == (4, 40.0, 2)
    assert (tnews.score, tnews.std) == (50.0, 0.0)
    one_seed, = summarize([record("afqmc", 16, 1e-5, 1, 70.0), record("afqmc", 32, 1e-5, 1, 70.0)], "s")
    assert one_seed.std is None and one_seed.batch_size == 16  # ties: the first in grid order


def test_markdown_compares_with_reference_rows(tmp_path):
    records = [record("afqmc", 16, 1e-5, 1, 70.0), record("tnews", 16, 1e-5, 1, 50.0),
               record("review_sentiment", 16, 1e-5, 1, 90.0)]
    reference = {"ERNIE 3.0 Tiny (paper)": {"afqmc": 72.4, "tnews": 55.4, "csl": 76.5},
                 "only csl": {"csl": 1.0}}
    md = markdown(summarize(records, "student"), reference)
    assert "| model | afqmc | tnews | avg |" in md  # tasks some reference row has; rows without any are left out
    assert "| student | 70.0 | 50.0 | 60.0 |" in md
    assert "| ERNIE 3.0 Tiny (paper) | 72.4 | 55.4 | 63.9 |" in md and "only csl" not in md
    assert "| review_sentiment | accuracy | 90.00 | - | 55.00 | batch 16, lr 1e-05, dropout 0.1, 3 epochs, step 100 |" in md
    written = write_results(tmp_path, records, "student", reference)
    assert [p.name for p in written] == ["results.csv", "results.md", "results.png"]
    assert not list(tmp_path.glob(".tmp_*"))


TABLE5_TASKS = ["afqmc", "tnews", "iflytek", "ocnli", "cluewsc2020", "csl", "canli", "shopping10",
                "bustm", "eprstmt", "csldcp"]


# ---- config ----

SHIPPED = ["configs/clue.yaml", "configs/demo/evaluate.yaml"]


@pytest.mark.parametrize("path", SHIPPED)
def test_shipped_configs_validate(path, tiny_model):
    full = yaml.safe_load((ROOT / path).read_text(encoding="utf-8"))
    full["Model"]["path"] = str(tiny_model)
    for task in full["Tasks"]:  # the tiny model has 160 positions
        task["max_length"] = 128
    config = validate_config(EvaluateConfig, full)
    if path == "configs/clue.yaml":
        assert [c.name for c in config.cards()][:11] == TABLE5_TASKS
        assert config.Report.reference["ERNIE 3.0 Tiny 4L-312H (paper)"]["afqmc"] == 72.4
        fewclue = {row: {t: scores[t] for t in ("bustm", "eprstmt", "csldcp")}
                   for row, scores in config.Report.reference.items()}
        assert fewclue == {"ERNIE 3.0 Tiny 4L-312H (paper)": {"bustm": 72.3, "eprstmt": 87.0, "csldcp": 45.1},
                           "TinyBERT-Chinese 4L (paper)": {"bustm": 71.3, "eprstmt": 78.6, "csldcp": 34.1}}  # Table 5
        assert [t for g in config.Report.groups.values() for t in g] == TABLE5_TASKS
        averages = {row: round(float(np.mean([scores[t] for t in TABLE5_TASKS])), 1)
                    for row, scores in config.Report.reference.items()}
        assert averages == {"ERNIE 3.0 Tiny 4L-312H (paper)": 72.3, "TinyBERT-Chinese 4L (paper)": 68.0}
        assert config.Grid.max_grad_norm == 1.0 and config.Grid.eval_every == 100
        assert config.Grid.batch_sizes == [16, 32, 64] and config.Grid.learning_rates == [1e-5, 2e-5, 3e-5, 5e-5]
    else:
        assert all(len(task_points(c, t, config.Grid)) == 1 for c, t in zip(config.cards(), config.Tasks))


def test_config_errors_name_file_line_and_key(tmp_path, tiny_model):
    text = (f"Model:\n  path: {tiny_model}\nTasks:\n  - {{card: afqmc}}\n  - {{card: no_such_task}}\n"
            f"  - {{card: csl, max_length: 300}}\nReport:\n  reference:\n    paper: {{afqmc: 724}}\n")
    path = tmp_path / "bad.yaml"
    path.write_text(text, encoding="utf-8")
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "evaluate.py"), "-c", str(path)],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert f"{path}:5: Tasks.1.card: no task card 'no_such_task'" in proc.stderr
    assert f"{path}:6: Tasks.2.max_length: csl: 300 tokens is more than the model's 160 positions" in proc.stderr
    assert f"{path}:9: Report.reference.paper.afqmc: 724.0 is not a score in percent" in proc.stderr
    with pytest.raises(ConfigError, match=r"-o Model.path=.*: Model.path: .* is not a model directory"):
        load_config(EvaluateConfig, path, [f"Model.path={tmp_path}"])

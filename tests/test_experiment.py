"""The claim experiment, reduced to tiny sizes and a few steps, end to end: both arms distilled
from the right teachers, every task set evaluated for both, the report in the paper's layout,
and a rerun that skips everything finished."""
import csv
import json
from pathlib import Path

import pytest
import yaml

import tiny_stages as tiny
from ernie_tiny.cli import experiment_main
from ernie_tiny.config import ConfigError, load_config
from ernie_tiny.experiment.arms import task_sets
from ernie_tiny.experiment.recipe import plan
from ernie_tiny.experiment.schema import ExperimentConfig
from ernie_tiny.pipeline.steps import validate

ROOT = tiny.ROOT


def write_experiment(tmp_path: Path, **evaluation) -> Path:
    data = {
        "Global": {"output_dir": str(tmp_path / "claim")},
        "Teacher": {"pretrain": tiny.stage("pretrain", tiny.PRETRAIN),
                    "teacher_mtl": tiny.stage("teacher_mtl", tiny.TEACHER_MTL)},
        "Distill": tiny.stage("distill", tiny.DISTILL),
        "Evaluation": {
            **tiny.stage("evaluate", {"Grid": tiny.EVALUATE_GRID, "Report": {"chart": False}}),
            "seeds": [1, 2],
            "in_domain": [{"card": "pd_entity_type", **tiny.TINY_TASK}],
            "held_out": [{"card": "pd_next_paragraph", **tiny.TINY_TASK}],
            "low_resource": {"card": "review_sentiment", "fractions": [0.001, 0.002], "max_dev_examples": 16,
                             "max_length": 32},
            **evaluation,
        },
    }
    path = tmp_path / "claim.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_shipped_claim_config_plans_both_arms_from_one_teacher():
    config = load_config(ExperimentConfig, ROOT / "configs/demo/claim.yaml")
    steps = plan(config)
    validate(steps)
    by_name = {s.name: s for s in steps}
    out = Path(config.Global.output_dir)
    assert by_name["distill/vanilla"].wired["Teacher.name_or_path"] == str(out / "pretrain" / "teacher")
    assert by_name["distill/mitkd"].wired["Teacher.name_or_path"] == str(out / "teacher_mtl" / "teacher")
    # the arms differ in the teacher only: same distillation config, same student, same seed
    vanilla, mitkd = (by_name[f"distill/{arm}"].resolved.model_dump() for arm in ("vanilla", "mitkd"))
    differ = {k for k in vanilla if vanilla[k] != mitkd[k]}
    assert differ == {"Global", "Teacher"}
    assert vanilla["Global"]["seed"] == mitkd["Global"]["seed"]
    # held-out tasks are not in the teacher's multi-task mix
    mix = {t.card for t in by_name["teacher_mtl"].resolved.Tasks}
    held_out = {t.card for t in config.Evaluation.held_out} | {config.Evaluation.low_resource.card}
    assert not mix & held_out


def test_low_resource_sets_are_shares_of_the_real_train_split(tmp_path):
    config = load_config(ExperimentConfig, write_experiment(tmp_path))
    sets = dict(task_sets(config))
    assert sets["low_resource_0.1pct"][0]["max_train_examples"] == 28  # 0.1% of review_sentiment's 28,035
    assert sets["low_resource_0.2pct"][0]["max_train_examples"] == 56


def test_the_experiment_refuses_overrides_it_sets(tmp_path):
    path = write_experiment(tmp_path, overrides={"Tasks": [{"card": "pd_ner"}]})
    with pytest.raises(ConfigError, match="Evaluation.overrides.Tasks: set by the experiment"):
        load_config(ExperimentConfig, path)


def test_reduced_claim_experiment_end_to_end(tmp_path, capsys):
    path = write_experiment(tmp_path)
    assert experiment_main(["-c", str(path)]) == 0
    out = tmp_path / "claim"
    with open(out / "claim.csv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    cells = {(r["set"], r["task"], r["arm"]) for r in rows}
    assert cells == {(s, t, arm) for s, t in [("in_domain", "pd_entity_type"), ("held_out", "pd_next_paragraph"),
                                             ("low_resource_0.1pct", "review_sentiment"),
                                             ("low_resource_0.2pct", "review_sentiment")]
                     for arm in ("vanilla", "mitkd")}
    assert all(int(r["seeds"]) == 2 and r["std"] != "" for r in rows)
    low = [r for r in rows if r["set"] == "low_resource_0.1pct"]
    assert {int(r["train_examples"]) for r in low} == {28}
    report = (out / "claim.md").read_text()
    assert report.count("**MITKD − vanilla**") == 4  # in-domain, held-out, two low-resource shares
    assert "not run yet" not in report
    assert (out / "claim.png").is_file()
    mitkd = yaml.safe_load((out / "distill" / "mitkd" / "step_config.yaml").read_text())
    assert mitkd["Teacher"]["name_or_path"] == str(out / "teacher_mtl" / "teacher")

    capsys.readouterr()
    assert experiment_main(["-c", str(path)]) == 0  # a rerun: everything is done, the report is rebuilt
    log = capsys.readouterr().out
    assert log.count("done before, skipped") == 2 + 2 + 8
    state = json.loads((out / "steps_state.json").read_text())["steps"]
    assert len(state) == 12 and all(r["complete"] for r in state.values())

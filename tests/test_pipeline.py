"""The one-command pipeline: wiring, up-front validation of every stage, skipping finished
stages, rerunning what a changed config invalidates, resuming an interrupted stage, and the
summary. The end-to-end tests run the shipped demo stage configs shrunk by tests/tiny_stages.py."""
import json
import re
from pathlib import Path

import pytest
import yaml

import tiny_stages as tiny
from ernie_tiny.cli import pipeline_main
from ernie_tiny.config import ConfigError, load_config
from ernie_tiny.pipeline.recipe import plan
from ernie_tiny.pipeline.schema import PipelineConfig
from ernie_tiny.pipeline.steps import STATE_FILE, validate

ROOT = tiny.ROOT


def write_pipeline(tmp_path: Path, **stages) -> Path:
    stages = stages or {
        "pretrain": tiny.stage("pretrain", tiny.PRETRAIN),
        "teacher_mtl": tiny.stage("teacher_mtl", tiny.TEACHER_MTL),
        "distill": tiny.stage("distill", tiny.DISTILL),
        "evaluate": tiny.stage("evaluate", tiny.EVALUATE),
        "finetune": tiny.stage("finetune", tiny.FINETUNE),
        "export": tiny.stage("export", tiny.EXPORT),
    }
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump({"Global": {"output_dir": str(tmp_path / "run")}, "Stages": stages}))
    return path


def test_shipped_pipeline_config_validates_every_stage_before_anything_runs():
    config = load_config(PipelineConfig, ROOT / "configs/demo/pipeline.yaml")
    steps = plan(config)
    validate(steps)  # the downstream model directories do not exist yet: they count as planned
    assert [s.name for s in steps] == ["pretrain", "teacher_mtl", "distill", "evaluate", "finetune", "export"]
    out = Path(config.Global.output_dir)
    wired = {s.name: s.wired for s in steps}
    assert wired["teacher_mtl"]["Model.name_or_path"] == str(out / "pretrain" / "teacher")
    assert wired["distill"] == {"Teacher.name_or_path": str(out / "teacher_mtl" / "teacher"), "Tokenizer.source": "teacher"}
    assert wired["evaluate"]["Model.path"] == wired["finetune"]["Model.path"] == str(out / "distill" / "student")
    assert wired["export"]["Model.path"] == str(out / "finetune" / "model")
    assert {s.name: s.resolved.Global.output_dir for s in steps} == {s.name: str(out / s.name) for s in steps}


def test_without_the_multi_task_stage_the_student_is_distilled_from_the_pretrained_teacher(tmp_path):
    path = write_pipeline(tmp_path, pretrain=tiny.stage("pretrain", tiny.PRETRAIN),
                          distill=tiny.stage("distill", tiny.DISTILL))
    steps = plan(load_config(PipelineConfig, path))
    assert steps[1].wired["Teacher.name_or_path"] == str(tmp_path / "run" / "pretrain" / "teacher")
    assert steps[1].after == ["pretrain"]


@pytest.mark.parametrize("override, message", [
    ("Stages.export.overrides.Export.int8=fast", "step export: .*Export.int8 = \"fast\""),
    ("Stages.distill.overrides.Teacher.name_or_path=elsewhere",
     "step distill: Teacher.name_or_path is set by the plan"),
    # the teacher does not exist yet, but the pretrain step's sizes say 32 hidden: 5 heads cannot divide it
    ("Stages.distill.overrides.Distill.relation_heads=5", "5 does not divide the teacher hidden size 32"),
    ("Stages.distill.config=configs/demo/nope.yaml", "Stages.distill.config: 'configs/demo/nope.yaml': no such file"),
])
def test_a_bad_stage_config_stops_the_pipeline_before_the_first_stage(tmp_path, capsys, override, message):
    path = write_pipeline(tmp_path)
    assert pipeline_main(["-c", str(path), "-o", override]) == 2
    err = capsys.readouterr().err
    assert re.search(message, err, re.S), err
    assert not (tmp_path / "run").exists()  # nothing ran, nothing was written


def test_export_without_finetune_is_refused(tmp_path):
    path = write_pipeline(tmp_path, distill=tiny.stage("distill", tiny.DISTILL), export=tiny.stage("export", tiny.EXPORT))
    with pytest.raises(ConfigError, match="Stages.export: exports the finetune stage's model"):
        load_config(PipelineConfig, path)


def statuses(out: str) -> dict:
    """{step: 'ran' | 'skipped' | 'resumed'} from the pipeline's per-step lines."""
    found = {}
    for line in out.splitlines():
        if line.startswith("[pipeline ") and ": " in line:
            name, what = line.split("] ", 1)[1].split(": ", 1)
            if what.startswith("done before"):
                found[name] = "skipped"
            elif what.startswith("running"):
                found[name] = "ran"
            elif what.startswith("resuming"):
                found[name] = "resumed"
    return found


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("pipeline")
    path = write_pipeline(tmp_path)
    assert pipeline_main(["-c", str(path)]) == 0
    return path, tmp_path / "run"


def test_the_whole_recipe_runs_and_summarizes(finished_run):
    _, run = finished_run
    assert (run / "pretrain" / "teacher" / "config.json").is_file()
    assert (run / "teacher_mtl" / "heads" / "heads.json").is_file()
    assert (run / "distill" / "student" / "config.json").is_file()
    assert (run / "evaluate" / "results.csv").is_file()
    assert (run / "export" / "deploy.json").is_file()
    # each stage read the previous one's output
    distill = yaml.safe_load((run / "distill" / "step_config.yaml").read_text())
    assert distill["Teacher"]["name_or_path"] == str(run / "teacher_mtl" / "teacher")
    student = json.loads((run / "distill" / "student" / "config.json").read_text())
    assert student["hidden_size"] == 16
    exported = json.loads((run / "export" / "deploy.json").read_text())
    assert exported["source_model"] == str(run / "finetune" / "model")
    summary = (run / "summary.md").read_text()
    for name in ("pretrain", "teacher_mtl", "distill", "evaluate", "finetune", "export"):
        assert f"| {name} | ran |" in summary
    assert "review_sentiment" in summary and "majority" in summary
    state = json.loads((run / STATE_FILE).read_text())["steps"]
    assert all(record["complete"] for record in state.values()) and len(state) == 6


def test_a_rerun_skips_finished_stages_and_a_changed_stage_reruns_with_what_follows(finished_run, capsys):
    path, run = finished_run
    capsys.readouterr()
    assert pipeline_main(["-c", str(path)]) == 0
    assert set(statuses(capsys.readouterr().out).values()) == {"skipped"}

    assert pipeline_main(["-c", str(path), "-o", "Stages.distill.overrides.Train.max_steps=4"]) == 0
    assert statuses(capsys.readouterr().out) == {
        "pretrain": "skipped", "teacher_mtl": "skipped", "distill": "ran",
        "evaluate": "ran", "finetune": "ran", "export": "ran"}  # the student changed: all that reads it reruns
    assert json.loads((run / "distill" / "train_log.jsonl").read_text().splitlines()[-1])["step"] == 4
    assert len(list(run.glob("distill.old-*"))) == 1  # the previous output is kept, not deleted


def test_an_interrupted_stage_is_run_again_and_so_is_what_reads_it(finished_run, capsys):
    path, run = finished_run
    state_file = run / STATE_FILE
    state = json.loads(state_file.read_text())
    state["steps"]["finetune"]["complete"] = False  # as if the process died during finetuning
    state_file.write_text(json.dumps(state))
    capsys.readouterr()
    assert pipeline_main(["-c", str(path), "-o", "Stages.distill.overrides.Train.max_steps=4"]) == 0
    found = statuses(capsys.readouterr().out)
    assert found["finetune"] == "resumed"
    assert [name for name, s in found.items() if s != "skipped"] == ["finetune", "export"]


def test_a_distill_step_with_several_students_is_refused_when_a_later_step_reads_its_student(tmp_path, capsys):
    """finetune (like evaluate) reads one student; a distill config with Students writes several."""
    distill = yaml.safe_load((ROOT / "configs/demo/distill.yaml").read_text(encoding="utf-8"))
    del distill["Student"]
    size = {"num_layers": 2, "hidden_size": 16, "num_heads": 2, "intermediate_size": 32}
    distill["Students"] = [{"name": "a", **size}, {"name": "b", **size}]
    config = tmp_path / "several.yaml"
    config.write_text(yaml.safe_dump(distill, allow_unicode=True), encoding="utf-8")
    overrides = {k: v for k, v in tiny.DISTILL.items() if k != "Student"}
    path = write_pipeline(tmp_path, pretrain=tiny.stage("pretrain", tiny.PRETRAIN),
                          distill={"config": str(config), "overrides": overrides},
                          finetune=tiny.stage("finetune", tiny.FINETUNE))
    assert pipeline_main(["-c", str(path)]) == 2
    err = capsys.readouterr().err
    assert "step distill: " in err and "Students: several students in one run (give Student instead" in err \
        and "but finetune reads one model from it" in err
    assert "Traceback" not in err and not (tmp_path / "run").exists()
    # with nothing after it reading the student, several students are fine
    alone = write_pipeline(tmp_path, pretrain=tiny.stage("pretrain", tiny.PRETRAIN),
                           distill={"config": str(config), "overrides": overrides})
    steps = plan(load_config(PipelineConfig, alone))
    validate(steps)
    distill_step = next(step for step in steps if step.stage == "distill")
    assert distill_step.product.name == "students"  # read from its resolved config, before anything ran
    # a rerun with one Student where an earlier run of several left its config: the reader is wired to
    # student/, which this run writes, not to the students/ the old config names
    (tmp_path / "run" / "distill").mkdir(parents=True)
    (tmp_path / "run" / "distill" / "config.yaml").write_text(yaml.safe_dump(distill, allow_unicode=True))
    single = write_pipeline(tmp_path, pretrain=tiny.stage("pretrain", tiny.PRETRAIN),
                            distill=tiny.stage("distill", tiny.DISTILL), finetune=tiny.stage("finetune", tiny.FINETUNE))
    steps = plan(load_config(PipelineConfig, single))
    validate(steps)
    finetune = next(step for step in steps if step.stage == "finetune")
    assert finetune.wired["Model.path"] == str(tmp_path / "run" / "distill" / "student")

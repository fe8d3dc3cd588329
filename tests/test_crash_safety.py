"""Crash safety of the training stages: SIGKILLed runs (at chosen steps, inside a checkpoint
write) that resume bit-identical with no temporary left, a dead rank that ends a 2-rank job in
bounded time, broken checkpoints and failed writes that stop with exit status 2 naming the
file, and optimizer state read without unpickling."""
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import paddle
import pytest

from test_distill_recipe import cache, read_log, student_weights  # noqa: F401 (cache: a fixture)
from test_distill_recipe import write_config as write_distill_config
from test_mtl import tiny_encoder, toy_tasks  # noqa: F401 (fixtures)
from test_mtl import write_config as write_mtl_config
from test_pretrain import write_config as write_pretrain_config

from ernie_tiny import checkpoint, cli
from ernie_tiny.errors import InputError
from ernie_tiny.runtime import Runtime
from ernie_tiny.schema import OptimizerSection
from ernie_tiny.training import build_optimizer

ROOT = Path(__file__).resolve().parent.parent
RANK0 = Runtime("cpu", 0, 1)
DISTILL_RUN = {"Train": {"max_steps": 6, "save_every": 2, "keep_checkpoints": 2}}


def start_tool(tool: str, config: Path, crash: str = "", limit_file_size: int = 0) -> subprocess.Popen:
    """``tools/<tool> -c config`` in a fresh process (killed at ``crash``, see ``checkpoint.crash_point``;
    ``limit_file_size``: RLIMIT_FSIZE in bytes). Every run of a comparison is a fresh process, as
    a restart is: a process that ran other stages may round differently."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), **{checkpoint.CRASH_ENV: crash})
    limit = None
    if limit_file_size:
        import resource

        def limit():
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit_file_size, limit_file_size))
    return subprocess.Popen([sys.executable, str(ROOT / "tools" / tool), "-c", str(config)], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=limit)


def finish(proc: subprocess.Popen, timeout=180) -> subprocess.CompletedProcess:
    out, err = proc.communicate(timeout=timeout)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def run_tool(tool: str, config: Path, **options) -> subprocess.CompletedProcess:
    return finish(start_tool(tool, config, **options))


def assert_ran(proc) -> None:
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]


def assert_killed(proc) -> None:
    assert proc.returncode == -9, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert f"{checkpoint.CRASH_ENV}: rank" in proc.stdout


def assert_identical(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def no_temporaries(output_dir: Path) -> list:
    return [p for root in (output_dir, output_dir / "checkpoints") for p in root.glob(".tmp_*")]


# ---- kills: every stage ends bit-identical to an uninterrupted run ----

def test_distillation_killed_after_a_step_and_inside_a_checkpoint_write_ends_bit_identical(tmp_path, cache):  # noqa: F811
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    uninterrupted = start_tool("distill.py", write_distill_config(tmp_path / "a", tmp_path / "a" / "cache", **DISTILL_RUN))
    config = write_distill_config(tmp_path / "b", cache, **DISTILL_RUN)
    out = tmp_path / "b" / "out"
    assert_killed(run_tool("distill.py", config, crash="step:3"))  # step 3 done, not yet checkpointed
    assert [p.name for p in checkpoint.list_checkpoints(out)] == ["step_00000002"]
    assert_killed(run_tool("distill.py", config, crash="checkpoint:4"))  # weights of step 4 half-written
    assert [p.name for p in checkpoint.list_checkpoints(out)] == ["step_00000002"]
    assert (out / "checkpoints" / ".tmp_step_00000004").is_dir()
    assert_ran(run_tool("distill.py", config))  # the same command again
    assert_ran(finish(uninterrupted))
    assert not no_temporaries(out)
    assert [row["step"] for row in read_log(out)][-4:] == [3, 4, 5, 6]
    assert_identical(student_weights(tmp_path / "a" / "out" / "student"), student_weights(out / "student"))
    assert read_log(tmp_path / "a" / "out")[-1]["loss"] == read_log(out)[-1]["loss"]


def test_pretraining_killed_between_a_checkpoint_rename_and_the_pruning_ends_bit_identical(tmp_path, cache):  # noqa: F811,E501
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    uninterrupted = start_tool("pretrain.py", write_pretrain_config(tmp_path / "a", tmp_path / "a" / "cache"))
    config = write_pretrain_config(tmp_path / "b", cache)
    assert_killed(run_tool("pretrain.py", config, crash="renamed:3"))
    assert_ran(run_tool("pretrain.py", config))
    assert_ran(finish(uninterrupted))
    assert_identical(student_weights(tmp_path / "a" / "out" / "mlm"), student_weights(tmp_path / "b" / "out" / "mlm"))
    assert not no_temporaries(tmp_path / "b" / "out")


def test_multi_task_training_killed_mid_run_ends_bit_identical(tmp_path, tiny_encoder, toy_tasks):  # noqa: F811
    root, tasks = toy_tasks
    configs = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        configs.append(write_mtl_config(tmp_path / name, tiny_encoder, tasks, Data={"dir": str(root / "data")},
                                        Schedule={"kind": "proportional"}))
    uninterrupted = start_tool("train_teacher.py", configs[0])
    assert_killed(run_tool("train_teacher.py", configs[1], crash="step:6"))
    assert_ran(run_tool("train_teacher.py", configs[1]))
    assert_ran(finish(uninterrupted))
    final = [student_weights(tmp_path / name / "out" / "checkpoints" / "step_00000008") for name in ("a", "b")]
    assert_identical(*final)
    assert not no_temporaries(tmp_path / "b" / "out")


# ---- a dead rank ends the job; the same command resumes ----

DEAD_RANK_BOUND_S = 60


def test_a_killed_rank_ends_the_two_rank_job_in_bounded_time_and_a_rerun_resumes(tmp_path, cache):  # noqa: F811
    config = write_distill_config(tmp_path, cache, **DISTILL_RUN)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("OMP_NUM_THREADS", None)

    def launch(crash: str):
        command = [sys.executable, "-m", "paddle.distributed.launch", "--nproc_per_node", "2",
                   "--log_dir", str(tmp_path / f"logs{crash}"), str(ROOT / "tools" / "distill.py"), "-c", str(config)]
        started = time.time()
        proc = subprocess.run(command, cwd=tmp_path, env=dict(env, **{checkpoint.CRASH_ENV: crash}),
                              capture_output=True, text=True, timeout=240)
        logs = "\n".join(p.read_text(errors="replace") for p in sorted((tmp_path / f"logs{crash}").glob("*")))
        return proc, logs, time.time() - started

    proc, logs, _ = launch("step:3:1")
    killed_at = (tmp_path / "out" / "train_log.jsonl").stat().st_mtime
    assert proc.returncode != 0, logs[-3000:]
    assert time.time() - killed_at < DEAD_RANK_BOUND_S
    assert "rank 1 killed at step 3" in logs
    assert [p.name for p in checkpoint.list_checkpoints(tmp_path / "out")] == ["step_00000002"]
    proc, logs, _ = launch("")
    finished = (tmp_path / "out" / "data_parallel_check.json").is_file()  # written after the last step
    # rc 250: Paddle's CPU launcher now and then aborts rank 0 at exit after the work is done (FACTS.md)
    assert proc.returncode == 0 or (proc.returncode == 250 and finished), logs[-3000:]
    assert f"resumed from {tmp_path / 'out' / 'checkpoints' / 'step_00000002'}" in logs
    assert (tmp_path / "out" / "data_parallel_check.json").is_file()


# ---- broken checkpoints and failed writes: exit status 2, the file named ----

def tiny_training_state(directory: Path, steps: int = 2):
    """A Linear layer, its AdamW + schedule after ``steps`` steps, and a checkpoint of them in ``directory``."""
    paddle.seed(0)
    layer = paddle.nn.Linear(4, 3)
    optimizer, scheduler = build_optimizer(OptimizerSection(lr=0.1, warmup_steps=1), 10, layer)
    for _ in range(steps):
        layer(paddle.rand([2, 4])).sum().backward()
        optimizer.step(), optimizer.clear_grad(), scheduler.step()
    path = checkpoint.save_checkpoint(RANK0, directory, steps, layer, None, optimizer, {"data": {}}, keep=2)
    return layer, optimizer, path


def fresh_optimizer():
    paddle.seed(1)
    layer = paddle.nn.Linear(4, 3)
    return layer, build_optimizer(OptimizerSection(lr=0.1, warmup_steps=1), 10, layer)[0]


def test_optimizer_state_is_safetensors_and_json_and_restores_exactly(tmp_path):
    layer, optimizer, path = tiny_training_state(tmp_path)
    assert {p.name for p in path.iterdir()} >= {checkpoint.OPTIMIZER_TENSORS, checkpoint.OPTIMIZER_SCALARS}
    assert not (path / checkpoint.PICKLED_OPTIMIZER).exists()
    again, restored = fresh_optimizer()
    assert checkpoint.load_checkpoint(RANK0, path, again, restored)["step"] == 2
    saved, loaded = optimizer.state_dict(), restored.state_dict()
    assert loaded["LR_Scheduler"] == saved["LR_Scheduler"] and restored.get_lr() == optimizer.get_lr()
    assert len(saved) == 9  # 2 moments and 2 beta powers of 2 parameters, the schedule
    for (name, value), (_, other) in zip(sorted(saved.items())[1:], sorted(loaded.items())[1:]):
        np.testing.assert_array_equal(value.numpy(), other.numpy(), err_msg=name)


def truncate(name):
    def damage(path: Path):
        data = (path / name).read_bytes()
        (path / name).write_bytes(data[: len(data) // 2])
    return damage


@pytest.mark.parametrize("damage, named", [
    (truncate("optimizer.safetensors"), "optimizer.safetensors is truncated"),
    (truncate("model.safetensors"), "model.safetensors is truncated"),
    (truncate("trainer_state.json"), "trainer_state.json is not readable JSON"),
    (lambda path: (path / "optimizer.json").unlink(), "optimizer.json is missing"),
    (lambda path: [p.unlink() for p in path.iterdir()], "the checkpoint directory is empty"),
])
def test_a_broken_checkpoint_is_refused_naming_the_directory_and_the_file(tmp_path, damage, named):
    _, _, path = tiny_training_state(tmp_path)
    damage(path)
    layer, optimizer = fresh_optimizer()
    with pytest.raises(checkpoint.CheckpointError, match=f"^{path}: {named}"):
        checkpoint.load_checkpoint(RANK0, path, layer, optimizer)


def test_resuming_at_a_broken_checkpoint_exits_with_status_2_and_no_traceback(tmp_path, cache, capsys):  # noqa: F811
    _, _, path = tiny_training_state(tmp_path / "other")
    truncate("model.safetensors")(path)
    config = write_distill_config(tmp_path, cache, Train={"max_steps": 2})
    assert cli.run_stage("distill", ["-c", str(config), "--resume", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{path}: model.safetensors is truncated" in err and "Traceback" not in err


def test_a_pickled_optimizer_of_an_earlier_version_is_read_only_when_trusted(tmp_path, monkeypatch, capsys):
    layer, optimizer, path = tiny_training_state(tmp_path)
    paddle.save({"optimizer": checkpoint._rename_optimizer_state(optimizer.state_dict(),
                                                                 checkpoint._unique_to_structured(layer))},
                str(path / checkpoint.PICKLED_OPTIMIZER))
    (path / checkpoint.OPTIMIZER_TENSORS).unlink(), (path / checkpoint.OPTIMIZER_SCALARS).unlink()
    for name in (checkpoint.TRUST_PICKLE_ENV, checkpoint.OLD_TRUST_PICKLE_ENV):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(checkpoint.UntrustedPickleError, match=f"resume with {checkpoint.TRUST_PICKLE_ENV}=1"):
        checkpoint.load_checkpoint(RANK0, path, *fresh_optimizer())
    assert issubclass(checkpoint.UntrustedPickleError, InputError)
    monkeypatch.setenv(checkpoint.OLD_TRUST_PICKLE_ENV, "1")  # the earlier name still works
    again, restored = fresh_optimizer()
    checkpoint.load_checkpoint(RANK0, path, again, restored)
    assert "unpickling the optimizer state" in capsys.readouterr().out
    assert restored.get_lr() == optimizer.get_lr()


def test_a_checkpoint_write_that_hits_the_file_size_limit_stops_with_status_2_keeping_the_last(tmp_path, cache):  # noqa: F811,E501
    from test_distill_recipe import run_distill

    config = write_distill_config(tmp_path, cache, Train={"max_steps": 3, "save_every": 3})
    run_distill(config)  # checkpoint 3 (and the compiled teacher, reused from here on)
    config = write_distill_config(tmp_path, cache, Train={"max_steps": 6, "save_every": 3})
    proc = run_tool("distill.py", config, limit_file_size=64 * 1024)  # the weights are ~150 KB
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "cannot write" in proc.stderr and "File too large" in proc.stderr and "Traceback" not in proc.stderr
    assert str(tmp_path / "out" / "checkpoints" / ".tmp_step_00000006") in proc.stderr
    assert not no_temporaries(tmp_path / "out")
    (last,) = checkpoint.list_checkpoints(tmp_path / "out")
    checkpoint.check_checkpoint(last)
    assert last.name == "step_00000003"


def test_an_output_model_that_cannot_be_written_raises_a_checkpoint_error_naming_it(tmp_path, tiny_encoder):  # noqa: F811,E501
    from paddlenlp.transformers import AutoModel, AutoTokenizer

    (tmp_path / "not_a_directory").write_text("")
    target = tmp_path / "not_a_directory" / "student"
    with pytest.raises(checkpoint.CheckpointError, match=f"{tmp_path / 'not_a_directory'}.*cannot write"):
        checkpoint.save_pretrained_dir(target, AutoModel.from_pretrained(str(tiny_encoder)),
                                       AutoTokenizer.from_pretrained(str(tiny_encoder)), None, "config.yaml")
    assert not target.exists()

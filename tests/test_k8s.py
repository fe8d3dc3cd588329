"""deploy/k8s/: the Kubeflow PaddleJob manifests parse, their container command lines parse with
our CLI's parser (ernie_tiny/cli.py), and the configs they name validate with their overrides,
the shared volume's paths mapped to a temporary directory with stand-ins for the inputs that
must exist (the corpus, stage 1's teacher)."""
from pathlib import Path

import pytest
import yaml

from config_files import write_model_dir
from ernie_tiny.cli import parse_stage_args
from ernie_tiny.config import load_config
from ernie_tiny.stages import stage as find_stage

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "deploy" / "k8s"
JOBS = sorted(K8S.glob("*-paddlejob.yaml"))
LAUNCHER = ["python", "-m", "paddle.distributed.launch"]
SINGLE_MACHINE_GPUS = 8  # the configs' batch sizes are per GPU on one 8-GPU machine


def load_job(path: Path) -> dict:
    documents = [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d]
    assert len(documents) == 1, f"{path.name}: one PaddleJob per file"
    return documents[0]


def worker_container(job: dict) -> dict:
    containers = job["spec"]["paddleReplicaSpecs"]["Worker"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def shared_mount(job: dict) -> str:
    """The mount path of the job's PersistentVolumeClaim."""
    pod = job["spec"]["paddleReplicaSpecs"]["Worker"]["template"]["spec"]
    claims = {v["name"] for v in pod["volumes"] if "persistentVolumeClaim" in v}
    (mount,) = [m["mountPath"] for m in worker_container(job)["volumeMounts"] if m["name"] in claims]
    return mount


def split_command(container: dict):
    """(launcher flags, tools/ script, the script's arguments) of the container's command line."""
    argv = container["command"] + container.get("args", [])
    assert argv[:3] == LAUNCHER, argv[:3]
    script = next(i for i, arg in enumerate(argv) if arg.endswith(".py"))
    return argv[3:script], argv[script], argv[script + 1:]


def make_stand_ins(overrides: list) -> None:
    """The corpus directories and a teacher directory (ERNIE 3.0 xbase's sizes) the overrides name."""
    for override in overrides:
        key, value = override.split("=", 1)
        if key == "Data.sources":
            for source in yaml.safe_load(value):
                Path(source).mkdir(parents=True, exist_ok=True)
                (Path(source) / "a.txt").write_text("一个文档\n", encoding="utf-8")
        elif key == "Teacher.name_or_path":
            write_model_dir(Path(value), num_hidden_layers=20, hidden_size=1024, num_attention_heads=16,
                            vocab_size=40000, max_position_embeddings=2048)


def test_the_manifests_are_there():
    assert [p.name for p in JOBS] == ["distill-paddlejob.yaml", "teacher-paddlejob.yaml"]


@pytest.mark.parametrize("path", JOBS, ids=lambda p: p.name)
def test_manifest_is_a_multi_node_collective_paddlejob_on_the_shared_volume(path):
    job = load_job(path)
    assert job["apiVersion"] == "kubeflow.org/v1" and job["kind"] == "PaddleJob"
    specs = job["spec"]["paddleReplicaSpecs"]
    assert list(specs) == ["Worker"]  # collective mode: the operator makes worker 0 the rendezvous
    assert specs["Worker"]["replicas"] >= 2 and specs["Worker"]["restartPolicy"] == "OnFailure"
    container = worker_container(job)
    # the operator reads the rendezvous port from the container named "paddle", port named "master"
    assert container["name"] == "paddle"
    assert [p["name"] for p in container["ports"]] == ["master"]
    pod = specs["Worker"]["template"]["spec"]
    claims = [v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"] if "persistentVolumeClaim" in v]
    (volume,) = [d for d in yaml.safe_load_all((K8S / "shared-volume.yaml").read_text(encoding="utf-8")) if d]
    assert volume["kind"] == "PersistentVolumeClaim" and claims == [volume["metadata"]["name"]]
    assert volume["spec"]["accessModes"] == ["ReadWriteMany"]
    launcher_flags, _, _ = split_command(container)
    gpus = launcher_flags[launcher_flags.index("--gpus") + 1].split(",")
    assert int(container["resources"]["limits"]["nvidia.com/gpu"]) == len(gpus)


@pytest.mark.parametrize("path", JOBS, ids=lambda p: p.name)
def test_command_line_parses_with_our_cli_and_its_config_validates(path, tmp_path):
    job = load_job(path)
    container = worker_container(job)
    _, script, script_args = split_command(container)
    assert script.startswith("tools/") and (ROOT / script).is_file()
    stage = find_stage(Path(script).stem)
    mount, shared = shared_mount(job), tmp_path / "shared"
    config_file, overrides = parse_stage_args(stage, [a.replace(mount, str(shared)) for a in script_args])
    assert (ROOT / config_file).is_file() and config_file.startswith("configs/")
    config_data = yaml.safe_load((ROOT / config_file).read_text(encoding="utf-8"))
    make_stand_ins(overrides)
    config = load_config(stage.load_schema(), ROOT / config_file, overrides)
    assert Path(config.Global.output_dir).is_relative_to(shared)  # checkpoints on the shared volume
    assert config.Train.resume == "auto"  # every (re)start goes on from the newest checkpoint
    if hasattr(config.Data, "cache_dir"):
        assert Path(config.Data.cache_dir).is_relative_to(shared)  # the token shards too
    # the same global batch as the config's single 8-GPU machine
    launcher_flags, _, _ = split_command(container)
    gpus = len(launcher_flags[launcher_flags.index("--gpus") + 1].split(","))
    nodes = job["spec"]["paddleReplicaSpecs"]["Worker"]["replicas"]
    assert nodes * gpus * config.Train.batch_size == SINGLE_MACHINE_GPUS * config_data["Train"]["batch_size"]


def test_the_distillation_job_reads_the_teacher_that_the_teacher_job_writes(tmp_path):
    def overrides_of(name):
        _, script, args = split_command(worker_container(load_job(K8S / name)))
        return dict(o.split("=", 1) for o in parse_stage_args(find_stage(Path(script).stem), args)[1])

    teacher_dir = overrides_of("teacher-paddlejob.yaml")["Global.output_dir"]
    assert overrides_of("distill-paddlejob.yaml")["Teacher.name_or_path"] == f"{teacher_dir}/teacher"

import copy
from pathlib import Path

import pytest
import yaml

CLUSTER = Path(__file__).resolve().parent.parent / "cluster"
YAMLS = sorted(CLUSTER.glob("*.yaml"))
LAUNCHER = {"local-cpu.yaml": ("local", "cpu"), "aws-gpu.yaml": ("aws", "gpu")}


def load(name: str) -> dict:
    return yaml.safe_load((CLUSTER / name).read_text())


def test_every_expected_file_is_there():
    assert {*LAUNCHER, "kuberay-rayjob.yaml"} <= {p.name for p in YAMLS}
    assert (CLUSTER / "README.md").is_file()


@pytest.mark.parametrize("path", YAMLS, ids=lambda p: p.name)
def test_yaml_parses_to_a_mapping(path):
    assert isinstance(yaml.safe_load(path.read_text()), dict)


@pytest.mark.parametrize("name", sorted(LAUNCHER))
def test_launcher_config(name):
    provider, target = LAUNCHER[name]
    config = load(name)
    for key in ("cluster_name", "provider", "auth", "max_workers", "file_mounts", "setup_commands",
                "head_start_ray_commands", "worker_start_ray_commands"):
        assert key in config, f"{name} lacks {key}"
    assert config["provider"]["type"] == provider
    assert config["file_mounts"] == {"~/cdra": "."}
    install = [c for c in config["setup_commands"] if "cluster/install.sh" in c]
    assert len(install) == 1 and install[0].endswith(f"cd ~/cdra && bash cluster/install.sh {target}")
    assert (CLUSTER / "install.sh").is_file()
    head = " ".join(config["head_start_ray_commands"])
    assert "ray start --head --port=6379 --dashboard-host=0.0.0.0" in head
    assert "ray start --address=$RAY_HEAD_IP:6379" in " ".join(config["worker_start_ray_commands"])
    assert "docker" not in config


def test_local_config_starts_every_listed_worker():
    config = load("local-cpu.yaml")
    n = len(config["provider"]["worker_ips"])
    assert config["min_workers"] == config["max_workers"] == n


def test_aws_config_has_cpu_head_and_gpu_workers():
    config = load("aws-gpu.yaml")
    nodes = config["available_node_types"]
    head = nodes[config["head_node_type"]]
    assert "GPU" not in head["resources"] and not head["node_config"]["InstanceType"].startswith(("g", "p"))
    gpu = [n for n in nodes.values() if n["resources"].get("GPU", 0) > 0]
    assert len(gpu) == 1 and 1 <= gpu[0]["min_workers"] <= gpu[0]["max_workers"] <= config["max_workers"]


@pytest.mark.parametrize("name", sorted(LAUNCHER))
def test_launcher_config_passes_rays_schema(name):
    # Ray's own validation, as `ray up` runs it; private API, so tolerate its absence.
    util = pytest.importorskip("ray.autoscaler._private.util")
    util.validate_config(util.prepare_config(copy.deepcopy(load(name))))


def test_kuberay_rayjob():
    job = load("kuberay-rayjob.yaml")
    assert job["apiVersion"] == "ray.io/v1" and job["kind"] == "RayJob"
    spec = job["spec"]
    assert spec["entrypoint"] == "python jobs/critique_rl.py --config /configs/critique_rl.yaml"
    assert spec["shutdownAfterJobFinishes"] is True
    cluster = spec["rayClusterSpec"]
    head = cluster["headGroupSpec"]["template"]["spec"]
    mounts = [m["mountPath"] for c in head["containers"] for m in c.get("volumeMounts", [])]
    assert "/configs" in mounts  # the entrypoint's --config lives there
    gpus = [
        int(c["resources"]["limits"]["nvidia.com/gpu"])
        for group in cluster["workerGroupSpecs"]
        for c in group["template"]["spec"]["containers"]
        if "nvidia.com/gpu" in c["resources"]["limits"]
    ]
    assert gpus and all(g > 0 for g in gpus)

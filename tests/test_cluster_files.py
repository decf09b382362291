"""The cluster files: Ray's own launcher validation, the README's install command, a RayJob that
names only files the repository has, and no dashboard job API open to the network."""

from __future__ import annotations

import copy
import re
import shlex
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
CLUSTER = REPO / "cluster"
YAMLS = sorted(CLUSTER.glob("*.yaml"))
LAUNCHER = {"local-cpu.yaml": ("local", "cpu"), "aws-gpu.yaml": ("aws", "gpu")}
VENV = "~/cdra-venv"


def load(name: str) -> dict:
    return yaml.safe_load((CLUSTER / name).read_text())


def readme_install_command() -> str:
    """The one command in the README's "Install" section's code block."""
    text = (REPO / "README.md").read_text()
    section = text.split("## Install", 1)[1].split("\n## ", 1)[0]
    assert "virtual environment" in section
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1).strip()
    return block


def test_every_expected_file_is_there():
    assert {*LAUNCHER, "kuberay-rayjob.yaml"} <= {p.name for p in YAMLS}
    assert (CLUSTER / "README.md").is_file() and (CLUSTER / "install.sh").is_file()


@pytest.mark.parametrize("path", YAMLS, ids=lambda p: p.name)
def test_yaml_parses_to_a_mapping(path):
    assert isinstance(yaml.safe_load(path.read_text()), dict)


def test_local_config_passes_what_ray_up_runs():
    # `ray up` -> create_or_update_cluster -> _bootstrap_config: prepare_config (defaults,
    # node types), the provider's resource fill-in, validate_config against ray-schema.json,
    # then the provider's bootstrap_config. For the local provider every step runs offline.
    from ray.autoscaler._private.commands import _bootstrap_config

    resolved = _bootstrap_config(copy.deepcopy(load("local-cpu.yaml")), no_config_cache=True)
    assert resolved["provider"]["type"] == "local"
    assert resolved["head_node_type"] in resolved["available_node_types"]


def test_aws_config_passes_rays_schema_validation():
    # The same steps as `ray up` up to validation; the AWS provider's resource fill-in and
    # bootstrap_config call the EC2/IAM APIs (credentials, network), which a test cannot.
    from ray.autoscaler._private.util import prepare_config, validate_config

    validate_config(prepare_config(copy.deepcopy(load("aws-gpu.yaml"))))


def test_rays_validation_rejects_a_broken_config():
    # guards the two tests above against a validator that accepts anything
    import jsonschema
    from ray.autoscaler._private.util import prepare_config, validate_config

    broken = copy.deepcopy(load("aws-gpu.yaml"))
    broken["available_node_types"]["gpu_worker"]["min_workers"] = "one"
    with pytest.raises(jsonschema.ValidationError):
        validate_config(prepare_config(broken))


@pytest.mark.parametrize("name", sorted(LAUNCHER))
def test_setup_commands_are_the_readme_install_in_a_venv(name):
    provider, flavour = LAUNCHER[name]
    config = load(name)
    assert config["provider"]["type"] == provider
    assert config["file_mounts"] == {"~/cdra": "."} and "docker" not in config
    commands = config["setup_commands"]
    install = [i for i, c in enumerate(commands) if "cluster/install.sh" in c]
    assert len(install) == 1
    step = commands[install[0]]
    assert step == f"source {VENV}/bin/activate && cd ~/cdra && {readme_install_command()} {flavour}"
    # the venv exists before the install step runs
    assert any(f"venv --seed --python 3.11 {VENV}" in c for c in commands[: install[0]])


@pytest.mark.parametrize("name", sorted(LAUNCHER))
def test_dashboard_job_api_stays_on_the_head(name):
    config = load(name)
    head = " ".join(config["head_start_ray_commands"])
    assert "ray start --head --port=6379 --dashboard-host=127.0.0.1 --dashboard-port=8265" in head
    assert "0.0.0.0" not in yaml.safe_dump(config)
    assert f"ray dashboard cluster/{name}" in (CLUSTER / name).read_text()  # the comment says how to reach it
    assert "ray start --address=$RAY_HEAD_IP:6379" in " ".join(config["worker_start_ray_commands"])


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


# --------------------------------------------------------------------------- KubeRay

# Fields without `omitempty` in KubeRay's ray.io/v1 Go types (raycluster_types.go), i.e. the
# ones the CRD marks required, plus the pod template's containers and each container's name.
HEAD_REQUIRED = {"rayStartParams", "template"}
WORKER_REQUIRED = {"groupName", "minReplicas", "maxReplicas", "rayStartParams", "template"}
RAYJOB_SPEC_KEYS = {"entrypoint", "runtimeEnvYAML", "shutdownAfterJobFinishes", "ttlSecondsAfterFinished",
                    "rayClusterSpec", "activeDeadlineSeconds", "jobId", "metadata", "clusterSelector",
                    "submitterPodTemplate", "entrypointNumCpus", "entrypointNumGpus", "entrypointResources",
                    "suspend", "submissionMode", "backoffLimit"}


def _check_pod_template(template: dict, where: str) -> list[dict]:
    containers = template["spec"]["containers"]
    assert containers, f"{where}: no containers"
    for c in containers:
        assert {"name", "image"} <= set(c), f"{where}: a container lacks name or image"
        limits, requests = c["resources"]["limits"], c["resources"]["requests"]
        assert limits == requests, f"{where}: limits and requests differ (Ray reads its resources from them)"
        mounts = {m["name"] for m in c.get("volumeMounts", [])}
        assert mounts <= {v["name"] for v in template["spec"].get("volumes", [])}, f"{where}: mount of an undeclared volume"
    return containers


def test_kuberay_rayjob_structure():
    job = load("kuberay-rayjob.yaml")
    assert job["apiVersion"] == "ray.io/v1" and job["kind"] == "RayJob" and job["metadata"]["name"]
    spec = job["spec"]
    assert set(spec) <= RAYJOB_SPEC_KEYS, set(spec) - RAYJOB_SPEC_KEYS
    assert spec["shutdownAfterJobFinishes"] is True
    assert yaml.safe_load(spec["runtimeEnvYAML"])["working_dir"] == "/home/ray/cdra"
    cluster = spec["rayClusterSpec"]
    import ray

    assert cluster["rayVersion"] == ray.__version__  # the image must carry the Ray the repo pins
    head = cluster["headGroupSpec"]
    assert HEAD_REQUIRED <= set(head)
    head_containers = _check_pod_template(head["template"], "head")
    assert not any("nvidia.com/gpu" in c["resources"]["limits"] for c in head_containers)
    gpus = 0
    for group in cluster["workerGroupSpecs"]:
        assert WORKER_REQUIRED <= set(group), f"worker group lacks {WORKER_REQUIRED - set(group)}"
        assert group["minReplicas"] <= group.get("replicas", group["minReplicas"]) <= group["maxReplicas"]
        for c in _check_pod_template(group["template"], group["groupName"]):
            gpus += int(c["resources"]["limits"].get("nvidia.com/gpu", 0)) * group["replicas"]
    assert gpus > 0


def test_kuberay_entrypoint_runs_the_main_job_with_overrides_only():
    from cdra.config import load_config
    from cdra.recipes.critique_rl import CritiqueRLConfig

    argv = shlex.split(load("kuberay-rayjob.yaml")["spec"]["entrypoint"])
    assert argv[:2] == ["python", "jobs/critique_rl.py"]
    overrides = argv[2:]
    assert overrides and all("=" in a and not a.startswith("-") for a in overrides)  # no --config FILE
    config = load_config(CritiqueRLConfig, overrides)  # every key exists and every value parses
    assert config.run.placement_strategy == "SPREAD"


def test_kuberay_rayjob_names_only_files_the_repo_has():
    text = (CLUSTER / "kuberay-rayjob.yaml").read_text()
    named = set(re.findall(r"(?<![\w/.])((?:jobs|cluster|cdra|benchmarks|tests)/[\w./-]*\w)", text))
    assert "jobs/critique_rl.py" in named
    missing = sorted(p for p in named if not (REPO / p).exists())
    assert not missing, f"the RayJob names files the repo lacks: {missing}"
    spec = load("kuberay-rayjob.yaml")["spec"]["rayClusterSpec"]
    templates = [spec["headGroupSpec"]["template"]] + [g["template"] for g in spec["workerGroupSpecs"]]
    # a ConfigMap volume would need an object that nothing here creates
    assert not [v for t in templates for v in t["spec"].get("volumes", []) if "configMap" in v]

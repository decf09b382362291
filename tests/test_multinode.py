"""A 3-node Ray cluster on this machine (head + 2 workers, `ray.cluster_utils.Cluster`): the GRPO
default with SPREAD placement puts the rollout engine and the two learner ranks on three
different nodes, DeepSpeed and the weight sync cross nodes, and `ray job submit` runs the job on
that cluster too."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch

from cdra.runtime.cluster import free_port

pytestmark = [pytest.mark.integration, pytest.mark.exclusive, pytest.mark.timeout(900)]
REPO = Path(__file__).resolve().parents[1]
NODES = ("head", "worker_a", "worker_b")  # each node carries a custom resource named after it


@pytest.fixture(scope="module")
def cluster():
    from ray.cluster_utils import Cluster

    saved = {k: os.environ.get(k) for k in ("RAY_AUTH_MODE", "RAY_ADDRESS")}
    os.environ["RAY_AUTH_MODE"] = "disabled"  # loopback-only test cluster: no token to hand around
    os.environ.pop("RAY_ADDRESS", None)
    temp_dir = tempfile.mkdtemp(prefix="cdra-mn-", dir="/tmp")  # own session dir: no other Ray finds it
    common = {"num_cpus": 4, "object_store_memory": 256 << 20, "temp_dir": temp_dir}
    dash = free_port()
    c = Cluster(initialize_head=True, head_node_args={
        **common, "resources": {NODES[0]: 1.0},
        "include_dashboard": True, "dashboard_host": "127.0.0.1", "dashboard_port": dash,
        "dashboard_agent_listen_port": free_port()})
    for name in NODES[1:]:
        c.add_node(**common, resources={name: 1.0})
    c.wait_for_nodes()
    c.dashboard_url = f"http://127.0.0.1:{dash}"
    try:
        yield c
    finally:
        import ray

        ray.shutdown()
        c.shutdown()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _node_names() -> dict[str, str]:
    """node id -> the custom resource that names it."""
    import ray

    return {n["NodeID"]: next(r for r in NODES if r in n["Resources"]) for n in ray.nodes() if n["Alive"]}


def _node_of(actor) -> str:
    import ray

    return ray.get(actor.__ray_call__.remote(lambda self: ray.get_runtime_context().get_node_id()))


def _strip(ids: list[int], eos: int) -> list[int]:
    return ids[: ids.index(eos)] if eos in ids else ids


def test_grpo_spreads_over_three_nodes_and_weights_cross_them(tmp_path, r1_model, cluster):
    import ray

    from cdra.config import load_config
    from cdra.recipes import grpo
    from cdra.runtime.rollout import SamplingConfig

    config = load_config(grpo.GRPOConfig, [
        f"model_path={r1_model}", "steps=2", "rollout_batch_size=16", "group_size=4", "train_batch_size=16",
        "num_rollout_workers=1", "rollout.kv_cache_gb=1", "learner.num_ranks=2", "learner.lr=1e-3",
        "num_scorers=1", "eval_data.num_examples=4", "eval_samples=0", "run.eval_every=2",
        "run.placement_strategy=SPREAD", f"run.ray_address={cluster.address}",
        f"run.output_dir={tmp_path / 'run'}", "run.use_wandb=false",
    ])
    session = grpo.start_session(config)
    try:
        names = _node_names()
        assert sorted(names.values()) == sorted(NODES)  # the driver joined the 3-node cluster
        engine_node = names[_node_of(session.rollouts.workers[0])]
        learner_nodes = [names[_node_of(w)] for w in session.learners.workers]
        # SPREAD: one engine and two learner ranks, three bundles, three different nodes
        assert len({engine_node, *learner_nodes}) == 3, (engine_node, learner_nodes)

        base_checksum = ray.get(session.rollouts.workers[0].param_checksum.remote())
        grpo.train(session, config)
        assert session.rollouts.versions() == [2]
        assert ray.get(session.rollouts.workers[0].param_checksum.remote()) != pytest.approx(base_checksum, rel=1e-9)

        # the engine on one node decodes exactly what the learners' weights (two other nodes) decode
        prompts = [session.encode(session.prompt("r1_short", e)) for e in grpo.load_examples(config.eval_data, "eval")[:4]]
        engine_out = session.rollouts.generate(prompts, SamplingConfig(temperature=0.0, max_tokens=48, logprobs=False), n=1)
        session.learners.save_pretrained(str(tmp_path / "hf"), session.model_path)
        from transformers import AutoModelForCausalLM

        hf = AutoModelForCausalLM.from_pretrained(tmp_path / "hf", dtype=torch.float32).eval()
        for ids, group in zip(prompts, engine_out):
            ref = hf.generate(torch.tensor([ids]), max_new_tokens=48, do_sample=False, pad_token_id=session.pad_id)[0, len(ids):].tolist()
            assert _strip(group[0].response_ids, session.eos_id) == _strip(ref, session.eos_id)
    finally:
        session.close()
        ray.shutdown()  # the next test's job is its own driver
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["policy/version"] == 2.0


def test_job_submit_to_the_three_node_cluster(tmp_path, r1_model, cluster):
    out = tmp_path / "job"
    submit = [str(Path(sys.executable).parent / "ray"), "job", "submit", f"--address={cluster.dashboard_url}", "--",
              sys.executable, str(REPO / "jobs" / "grpo.py"), f"model_path={r1_model}", "steps=1",
              "rollout_batch_size=8", "group_size=4", "train_batch_size=8", "num_rollout_workers=1",
              "rollout.kv_cache_gb=1", "learner.num_ranks=2", "num_scorers=1", "eval_data.num_examples=4",
              "eval_samples=0", "run.placement_strategy=SPREAD", f"run.output_dir={out}", "run.use_wandb=false"]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    deadline = time.time() + 300  # the head's job agent registers late on a loaded 2-core machine
    while True:
        result = subprocess.run(submit, env=env, capture_output=True, text=True, timeout=800)
        # the head's job agent registers a little after the dashboard answers; nothing was submitted yet
        if "No available agent to submit job" not in result.stderr or time.time() > deadline:
            break
        time.sleep(5)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "succeeded" in (result.stdout + result.stderr).lower()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["policy/version"] == 1.0

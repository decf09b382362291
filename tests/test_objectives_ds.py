"""The learner objectives on 2 real DeepSpeed ranks (Ray actors), against a single process.

For sft, policy_gradient, dpo, ppo and prm: the gradient of one micro-batched 2-rank step on an
uneven batch (one rank's shard topped up with a zero-weight filler) equals the gradient of the
whole batch in one process within 1e-5; the loss falls on a fixed batch; the exported heads load
back in transformers and compute what the learner computes.
"""

from __future__ import annotations

import pytest
import ray
import torch

from cdra.algos.dpo import attach_reference_logprobs
from cdra.algos.experience import IGNORE_LABEL, Sample, collate
from cdra.models import heads
from cdra.runtime import objectives
from cdra.runtime.groups import LearnerGroup
from cdra.runtime.learner import LearnerConfig
from cdra.runtime.objectives import Objective

pytestmark = [pytest.mark.integration, pytest.mark.timeout(1200)]

NUM_LABELS = 3  # PRM classes 0..2


@pytest.fixture(scope="module")
def tiny_model() -> str:
    from cdra.models.tiny import build_tiny_model

    return str(build_tiny_model())


def _group(path: str, head: str, **overrides) -> LearnerGroup:
    # no gradient clipping: the captured gradient is then the one the loss defines
    config = LearnerConfig(model_path=path, num_ranks=2, micro_batch_size=2, lr=2e-3, grad_clip=0.0, head=head,
                           num_labels=NUM_LABELS, **overrides)
    group = LearnerGroup(config, pad_id=0)

    def install_capture(actor) -> None:
        """Inside a learner rank: copy the (rank-reduced) gradients as the optimizer is about to step."""
        worker = actor.worker

        def capture(optimizer, args, kwargs) -> None:
            worker.captured = {n: p.grad.detach().clone() for n, p in worker.engine.module.named_parameters() if p.grad is not None}

        worker.optimizer.register_step_pre_hook(capture)

    ray.get([w.__ray_call__.remote(install_capture) for w in group.workers])
    return group


@pytest.fixture(scope="module")
def groups(tiny_model, ray_local):
    made: dict[str, LearnerGroup] = {}

    def get(head: str) -> LearnerGroup:
        if head not in made:
            made[head] = _group(tiny_model, head)
        return made[head]

    yield get
    for group in made.values():
        for w in group.workers:
            ray.kill(w)


def _sequences() -> list[tuple[list[int], list[int]]]:
    # five samples of different lengths: shards of 3 and 2 (+ one filler) on 2 ranks, micro-batches of 2
    return [([5, 6, 7], [9, 10, 11, 12]), ([5, 8], [20, 21]), ([40, 41, 42, 43], [50]),
            ([7], [60, 61, 62, 63, 64, 65]), ([30, 31], [70, 71, 72])]


def _pg_samples() -> list[Sample]:
    return [Sample(prompt_ids=p, response_ids=r, advantage=a, reward=a)
            for (p, r), a in zip(_sequences(), [1.0, -0.5, 0.25, -1.0, 0.75])]


def _ppo_samples() -> list[Sample]:
    samples = [Sample(prompt_ids=p, response_ids=r, reward=x) for (p, r), x in zip(_sequences(), [1.0, 0.0, 1.0, 0.0, 1.0])]
    samples[3].token_rewards = [0.0, 0.5, 0.0, 0.0, 0.0, -0.5]  # a dense-reward sample beside outcome ones
    for s in samples:
        if s.token_rewards is None:
            s.token_rewards = [0.0] * (len(s.response_ids) - 1) + [s.reward]
    return samples


def _dpo_pairs(group: LearnerGroup) -> list[Sample]:
    rejected = [[9, 10, 13], [22, 23, 24, 25], [51, 52], [60, 61, 66], [80]]
    pairs = [Sample(prompt_ids=p, response_ids=r, rejected_ids=x) for (p, r), x in zip(_sequences(), rejected)]
    return attach_reference_logprobs(pairs, group.logprobs)


def _prm_samples() -> list[Sample]:
    labels = [[IGNORE_LABEL, 2, IGNORE_LABEL, 0], [IGNORE_LABEL, 1], [2], [IGNORE_LABEL, IGNORE_LABEL, 1, IGNORE_LABEL, IGNORE_LABEL, 0],
              [IGNORE_LABEL, IGNORE_LABEL, 2]]
    return [Sample(prompt_ids=p, response_ids=r, token_labels=y) for (p, r), y in zip(_sequences(), labels)]


def _reference_gradient(path: str, group: LearnerGroup, samples: list[Sample], objective: Objective) -> dict[str, torch.Tensor]:
    """The whole batch in one process, from the learner's current weights."""
    model = heads.load_model(path, objective.head, num_labels=NUM_LABELS)
    model.load_state_dict(group.call_all("named_weights")[0], strict=False)
    batch = collate(samples, 0)
    with torch.no_grad():
        if objective.needs_old_logprobs:
            batch["old_logprobs"] = objectives.label_logprobs(model, batch)
        if objective.kind == "ppo":
            batch.update(objectives.ppo_targets(batch, objectives.label_values(model, batch), objective))
    loss, _ = objectives.compute_loss(model, batch, objective)
    (loss / objectives.loss_units(batch, objective)).backward()
    return {n: p.grad for n, p in model.named_parameters() if p.grad is not None}


def _assert_same_gradient(path: str, group: LearnerGroup, samples: list[Sample], objective: Objective) -> None:
    expected = _reference_gradient(path, group, samples, objective)
    group.train(samples, objective)
    got = ray.get(group.workers[0].__ray_call__.remote(lambda a: a.worker.captured))
    assert set(got) == set(expected)
    worst = max(float((got[n] - expected[n]).abs().max()) for n in expected)
    assert worst < 1e-5, f"{objective.kind}: largest gradient difference {worst:.3g}"
    assert max(float(g.abs().max()) for g in expected.values()) > 1e-3  # a real gradient, not zeros on both sides


@pytest.mark.parametrize("objective", [
    Objective(kind="sft", length_normalization="token_mean", shuffle=False),
    Objective(kind="policy_gradient", loss_type="reinforce_with_baseline"),
    Objective(kind="policy_gradient", loss_type="grpo_clip", length_normalization="constant", normalize_constant=4.0),
], ids=["sft", "policy_gradient", "policy_gradient_clip"])
def test_lm_gradients_match_one_process(objective, tiny_model, groups):
    _assert_same_gradient(tiny_model, groups("lm"), _pg_samples(), objective)


def test_dpo_gradient_matches_and_loss_falls(tiny_model, groups):
    group = groups("lm")
    pairs = _dpo_pairs(group)
    for shared_prefix in ("score", "skip"):
        _assert_same_gradient(tiny_model, group, pairs, Objective(kind="dpo", beta=0.5, shared_prefix=shared_prefix))
    objective = Objective(kind="dpo", beta=0.5)
    losses = [group.train(pairs, objective)["learner/loss"] for _ in range(8)]
    assert losses[-1] < 0.5 * losses[0], losses


def test_ppo_gradient_matches_loss_falls_and_critic_is_saved(tiny_model, groups, tmp_path):
    from transformers import AutoModelForCausalLM, AutoModelForTokenClassification

    group = groups("lm+value")
    # rollout engines receive the policy alone, under the causal LM's own parameter names
    layout = group.get([group.workers[0].call.remote("weight_layout")], "weight layout")[0]
    policy_names = [n for n, _ in AutoModelForCausalLM.from_pretrained(tiny_model).named_parameters()]
    assert [t.name for bucket in layout for t in bucket.tensors] == policy_names
    samples = _ppo_samples()
    objective = Objective(kind="ppo", length_normalization="token_mean", vf_coef=1.0, value_clip=0.5)
    _assert_same_gradient(tiny_model, group, samples, objective)
    value_losses = [group.train(samples, objective)["learner/value_loss"] for _ in range(8)]
    assert value_losses[-1] < 0.5 * value_losses[0], value_losses

    # the DeepSpeed checkpoint holds the critic: a step after saving is undone by loading
    group.save_checkpoint(str(tmp_path / "ckpt"), "t", {"version": 1})
    saved = group.call_all("state_checksum")[0]
    group.train(samples, objective)
    assert group.call_all("state_checksum")[0] != pytest.approx(saved, rel=1e-9)
    group.load_checkpoint(str(tmp_path / "ckpt"), "t")
    assert group.call_all("state_checksum")[0] == pytest.approx(saved, rel=1e-12)

    # the HF export holds it too, as a token classifier computing the learner's values
    group.save_pretrained(str(tmp_path / "hf"), tiny_model)
    critic = AutoModelForTokenClassification.from_pretrained(tmp_path / "hf" / heads.CRITIC_DIR).eval()
    batch = collate(samples, 0)
    learner_values = ray.get(group.workers[0].__ray_call__.remote(lambda a, b: a.worker.values_of_batch(b), batch))
    with torch.no_grad():
        exported = critic(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.squeeze(-1)
    mask = batch["attention_mask"].bool()
    assert torch.allclose(exported[mask], learner_values[mask], atol=1e-5)


def test_prm_gradient_matches_loss_falls_and_export_loads_back(tiny_model, groups, tmp_path):
    from transformers import AutoModelForTokenClassification

    group = groups("classifier")
    samples = _prm_samples()
    objective = Objective(kind="prm")
    _assert_same_gradient(tiny_model, group, samples, objective)
    losses = [group.train(samples, objective)["learner/loss"] for _ in range(8)]
    assert losses[-1] < 0.5 * losses[0], losses

    group.save_pretrained(str(tmp_path / "prm"), tiny_model)
    loaded = AutoModelForTokenClassification.from_pretrained(tmp_path / "prm").eval()
    assert loaded.config.num_labels == NUM_LABELS
    batch = collate(samples, 0)
    learner_logits = ray.get(group.workers[0].__ray_call__.remote(
        lambda a, b: objectives.prm_logits(a.worker.engine.module.eval(), b).detach(), batch))
    for i, s in enumerate(samples):  # each full sequence on its own, as a served PRM would read it
        ids = torch.tensor([s.prompt_ids + s.response_ids])
        with torch.no_grad():
            logits = loaded(input_ids=ids).logits[0, len(s.prompt_ids):]
        start = len(s.prompt_ids) - 1
        assert torch.allclose(logits, learner_logits[i, start : start + len(s.response_ids)], atol=1e-5)

"""Critique-RL rewards, stage schedule and advantages (pure logic, hand-computed values)."""

from __future__ import annotations

import math

import pytest

from cdra.algos.critique import critique_advantages
from cdra.algos.kl_shaping import kl_shaped_advantages
from cdra.recipes.critique_rl import anchor_action, stage_of_step, step_metrics
from cdra.rewards import critique_reward

# transitions (original correct, refined correct)
TRANSITIONS = {"c->c": (True, True), "c->i": (True, False), "i->c": (False, True), "i->i": (False, False)}
# verdict kinds: right (matches the original's correctness), wrong (the opposite), None (unparsed)
VERDICTS = ("right", "wrong", "none")

# expected Stage II reward per (combine, rf_mode): transition -> [right, wrong, none]
EXPECTED = {
    ("code_override", "r_refine"): {"c->c": [1.2, -1, -1], "c->i": [0.2, -1, -1], "i->c": [1.2, -1, -1], "i->i": [0.2, -1, -1]},
    ("code_override", "r_delta"): {"c->c": [0.2, -1, -1], "c->i": [-0.8, -1, -1], "i->c": [1.2, -1, -1], "i->i": [0.2, -1, -1]},
    ("code_override", "r_correct"): {"c->c": [0.4, -1, -1], "c->i": [0.2, -1, -1], "i->c": [1.2, -1, -1], "i->i": [0.2, -1, -1]},
    ("paper_additive", "r_refine"): {"c->c": [1.2, 1, 1], "c->i": [0.2, 0, 0], "i->c": [1.2, 1, 1], "i->i": [0.2, 0, 0]},
    ("paper_additive", "r_delta"): {"c->c": [0.2, 0, 0], "c->i": [-0.8, -1, -1], "i->c": [1.2, 1, 1], "i->i": [0.2, 0, 0]},
    ("paper_additive", "r_correct"): {"c->c": [0.4, 0.2, 0.2], "c->i": [0.2, 0, 0], "i->c": [1.2, 1, 1], "i->i": [0.2, 0, 0]},
}


def _verdict(kind: str, original: bool) -> bool | None:
    return {"right": original, "wrong": not original, "none": None}[kind]


@pytest.mark.parametrize("combine, rf_mode", sorted(EXPECTED))
@pytest.mark.parametrize("transition", sorted(TRANSITIONS))
@pytest.mark.parametrize("verdict_index", range(3))
def test_stage2_reward_table(combine, rf_mode, transition, verdict_index):
    original, refined = TRANSITIONS[transition]
    verdict = _verdict(VERDICTS[verdict_index], original)
    got = critique_reward(verdict, original, refined, "helpfulness", rf_mode=rf_mode, combine=combine)
    assert got == pytest.approx(EXPECTED[(combine, rf_mode)][transition][verdict_index])


@pytest.mark.parametrize("original", [True, False])
def test_stage1_reward_ignores_refinement(original):
    # paper values 1 / 0 and released-code values 1 / -1; an unparsed verdict is a wrong one
    for values, (right, wrong) in (((1.0, 0.0), (1.0, 0.0)), ((1.0, -1.0), (1.0, -1.0))):
        for refined in (None, True, False):
            kw = dict(stage="discrimination", dis_reward_values=values)
            assert critique_reward(original, original, refined, **kw) == right
            assert critique_reward(not original, original, refined, **kw) == wrong
            assert critique_reward(None, original, refined, **kw) == wrong


def test_stage_of_step_two_stage_run():
    assert [stage_of_step(s, 2, "both") for s in range(1, 6)] == ["discrimination"] * 2 + ["helpfulness"] * 3
    assert [stage_of_step(s, 0, "both") for s in (1, 2)] == ["helpfulness"] * 2
    assert {stage_of_step(s, 2, "1") for s in range(1, 6)} == {"discrimination"}
    assert {stage_of_step(s, 2, "2") for s in range(1, 6)} == {"helpfulness"}
    with pytest.raises(ValueError, match="1-based"):
        stage_of_step(0, 2, "both")
    with pytest.raises(ValueError, match="stage must be"):
        stage_of_step(1, 2, "3")


def _actions(first_step: int, last_step: int, d: int, stage: str) -> list[str]:
    """The anchor actions a loop requests, feeding back whether it already moved the anchor."""
    anchored, out = False, []
    for step in range(first_step, last_step + 1):
        action = anchor_action(step, d, stage, anchored)
        anchored = anchored or action != "none"
        out.append(action)
    return out


def test_anchor_swapped_exactly_once_at_the_switch():
    assert _actions(1, 6, 3, "both") == ["none", "none", "none", "snapshot", "none", "none"]
    assert _actions(1, 2, 1, "both") == ["none", "snapshot"]
    # a run resumed after step 3 (switch at 4 is next): the snapshot is taken, not reloaded
    assert _actions(4, 6, 3, "both") == ["snapshot", "none", "none"]
    # resumed past the switch: the anchor is reloaded from the stored snapshot, once
    assert _actions(5, 7, 3, "both") == ["reload", "none", "none"]
    # single-stage runs and D = 0 never move the anchor; nor does a run that stops before D + 1
    assert set(_actions(1, 6, 3, "1")) == set(_actions(1, 6, 3, "2")) == set(_actions(1, 6, 0, "both")) == {"none"}
    assert set(_actions(1, 3, 3, "both")) == {"none"}


def test_critique_advantages_rloo_then_whitened():
    rewards = [1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0]
    # RLOO: r_i - mean of the other three in its group of 4
    rloo = [1.0, -1 / 3, -1 / 3, -1 / 3, 2 / 3, 2 / 3, -2 / 3, -2 / 3]
    assert critique_advantages(rewards, 4, whiten=False) == pytest.approx(rloo)
    # batch mean of rloo is 0; population variance (1 + 3/9 + 4 * 4/9) / 8 = 7/18
    std = math.sqrt(7 / 18)
    assert critique_advantages(rewards, 4) == pytest.approx([a / std for a in rloo], rel=1e-5)
    # all critiques of the batch equally good: no signal
    assert critique_advantages([0.2] * 8, 4) == pytest.approx([0.0] * 8)
    with pytest.raises(ValueError):
        critique_advantages([1.0, 0.0, 1.0], 2)


def test_kl_shaped_advantages_subtract_the_kl_to_go():
    # k1 per token = logp - ref: [0.5, -1.0, 0.0] and [0.2]; with kl_coef 0.1 the token rewards
    # are [-0.05, 0.1, 0.0] and [-0.02], summed from each token to the end
    shaped, kl_means = kl_shaped_advantages([1.0, -0.5], [[-1.0, -2.0, -0.5], [-0.1]], [[-1.5, -1.0, -0.5], [-0.3]], 0.1)
    assert shaped[0] == pytest.approx([1.0 + 0.05, 1.0 + 0.1, 1.0])
    assert shaped[1] == pytest.approx([-0.52])
    assert kl_means == pytest.approx([-0.5 / 3, 0.2])
    # k3 = exp(ref - logp) - (ref - logp) - 1 >= 0: a pure penalty
    shaped, _ = kl_shaped_advantages([0.0], [[-1.0]], [[-1.5]], 1.0, "k3")
    assert shaped[0] == pytest.approx([-(math.exp(-0.5) + 0.5 - 1)])
    # at the anchor itself there is nothing to pay
    assert kl_shaped_advantages([0.3], [[-0.7, -0.2]], [[-0.7, -0.2]], 0.5)[0] == [[0.3, 0.3]]
    with pytest.raises(ValueError, match="2 logprobs and 1 reference"):
        kl_shaped_advantages([0.0], [[-1.0, -1.0]], [[-1.0]], 0.1)


def test_k1_in_the_loss_is_rejected():
    from cdra.config import ConfigError, load_config
    from cdra.recipes.critique_rl import CritiqueRLConfig, objective_of
    from cdra.recipes.grpo import GRPOConfig

    # default: KL in the reward, so the loss carries none
    assert objective_of(load_config(CritiqueRLConfig, [])).kl_coef == 0.0
    loss = objective_of(load_config(CritiqueRLConfig, ["kl_in=loss", "kl_kind=k3"]))
    assert (loss.kl_coef, loss.kl_kind) == (0.01, "k3")
    with pytest.raises(ConfigError, match="k1 as a loss term"):
        load_config(CritiqueRLConfig, ["kl_in=loss"])
    with pytest.raises(ConfigError, match="k1 as a loss term"):
        load_config(GRPOConfig, ["kl_coef=0.05", "kl_kind=k1"])
    load_config(GRPOConfig, ["kl_coef=0.0", "kl_kind=k1"])  # no KL at all: nothing to reject
    # the loss itself refuses it too, whichever recipe builds the objective
    from cdra.runtime.objectives import Objective

    with pytest.raises(ValueError, match="k1 as a loss term"):
        Objective(kl_coef=0.01, kl_kind="k1")
    assert Objective(kl_coef=0.01, kl_kind="k2").kl_kind == "k2"


def test_step_metrics():
    original = [True, True, False, False]
    verdicts = [True, None, True, False]
    m = step_metrics("discrimination", original, verdicts, [None] * 4, [1.0, 0.0, 0.0, 1.0])
    assert m["train/acc_dis"] == 0.5 and m["train/verdict_rate"] == 0.75 and m["train/attempt_acc"] == 0.5
    assert m["stage"] == 1.0 and "train/refine_acc" not in m
    m = step_metrics("helpfulness", original, verdicts, [True, False, True, False], [1.2, -1.0, -1.0, 0.2])
    assert m["stage"] == 2.0 and m["reward/mean"] == pytest.approx(-0.15)
    assert (m["train/refine_acc"], m["train/delta_c_to_i"], m["train/delta_i_to_c"]) == (0.5, 0.25, 0.25)


def test_evaluation_columns_before_switch_after():
    from cdra.config import load_config
    from cdra.recipes.critique_rl import CritiqueRLConfig, evaluation_columns

    summary = {"eval/acc": 0.7, "eval/acc_before": 0.5, "eval/acc_dis_before": 0.6, "eval/acc_dis": 0.8, "reward/mean": 0.1}
    rows = [{"step": 1, "reward/mean": 0.0}, {"step": 2, "eval/acc": 0.6, "eval/acc_dis": 0.75}, {"step": 3}]
    config = load_config(CritiqueRLConfig, ["steps=3", "discrimination_only_step=2"])
    columns = evaluation_columns(summary, rows, config)
    assert list(columns) == ["before", "stage I (step 2)", "after"]
    assert columns["before"] == {"eval/acc": 0.5, "eval/acc_dis": 0.6}
    assert columns["stage I (step 2)"] == {"eval/acc": 0.6, "eval/acc_dis": 0.75}
    assert columns["after"] == {"eval/acc": 0.7, "eval/acc_dis": 0.8}
    # no eval at the switch, or a single-stage run: before and after only
    assert list(evaluation_columns(summary, rows[:1], config)) == ["before", "after"]
    single = load_config(CritiqueRLConfig, ["steps=3", "stage=1"])
    assert list(evaluation_columns(summary, rows, single)) == ["before", "after"]


def _prompts(marks: list[bool]):
    from cdra.data.example import TaskExample
    from cdra.recipes.critique_rl import CritiquePrompt

    example = TaskExample(id="q", question="Start with 1. Add 1.", answer="2", solution="", source="synthetic", kind="gsm8k")
    return [CritiquePrompt(f"q/attempt-{i}", example, f"attempt {i}", ok) for i, ok in enumerate(marks)]


def test_balance_by_correctness_keeps_equal_classes():
    from cdra.recipes.critique_rl import balance_by_correctness

    prompts = _prompts([True] * 3 + [False] * 7)
    kept = balance_by_correctness(prompts, seed=0)
    assert len(kept) == 6 and sum(p.correct for p in kept) == 3
    assert {p.id for p in kept if p.correct} == {"q/attempt-0", "q/attempt-1", "q/attempt-2"}
    assert {p.id for p in kept} <= {p.id for p in prompts} and len({p.id for p in kept}) == 6
    assert [p.id for p in balance_by_correctness(prompts, seed=0)] == [p.id for p in kept]  # seeded
    assert [p.correct for p in kept] != [True] * 3 + [False] * 3  # shuffled, not grouped by class


def test_balance_by_correctness_single_class_keeps_all_and_warns():
    from cdra.recipes.critique_rl import balance_by_correctness

    prompts = _prompts([False] * 4)
    with pytest.warns(UserWarning, match="all 4 attempts are wrong"):
        assert balance_by_correctness(prompts, seed=0) == prompts


@pytest.mark.parametrize("transition, expected", [("c->c", 1.0), ("c->i", 0.0), ("i->c", 1.0), ("i->i", 0.0)])
def test_embedded_default_stage2_reward_is_helpfulness_alone(transition, expected):
    """The recipe's default (docs/results/critique_rl.md): r_refine, the verdict neither paid nor
    charged, so a wrong or missing verdict that got an attempt fixed earns as much as a right one."""
    from cdra.recipes.critique_rl import CritiqueRLConfig

    config = CritiqueRLConfig()
    original, refined = TRANSITIONS[transition]
    for kind in VERDICTS:
        got = critique_reward(_verdict(kind, original), original, refined, "helpfulness", rf_mode=config.rf_mode,
                              combine=config.combine, dis_weight=config.dis_weight,
                              dis_reward_values=tuple(config.dis_reward_values))
        assert got == pytest.approx(expected), (transition, kind)

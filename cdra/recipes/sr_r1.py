"""SR-R1: GRPO on Elo rewards from the policy judging its own samples (ALGORITHMS.md §3).

Each step: `group_size` samples per prompt on the policy's engines -> every unordered pair of a
group judged by the policy itself on those same engines (a seeded coin, `shows_first`, picks
which completion is "Response A"; the verdict ends "Winner: response A|B"; unparsed verdicts are
dropped and counted) -> Elo per group (start 0, K 16, 10 passes) scaled to [0, 3] -> summed with
the weighted accuracy (math-verify 0/1), format and tag-count terms -> advantages
(r - mean) / (std + 1e-4) per group -> policy-gradient update -> the new weights go to the
engines, so the next step's judge is the updated policy. ``judge=frozen`` judges on engines of a
fixed model instead; ``accuracy_weight=0`` is pure self-reward, and ``elo_weight=0`` with the
format terms at 0 is accuracy-only GRPO on the same loop (the side-by-side baseline).

The synthetic task knows which completion is right, so every step measures the judge against
that oracle on the pairs where exactly one completion is correct, and evaluation judges fixed
held-out pairs (a right solution and a slipped one) greedily, before and after training.
"""

from __future__ import annotations

import dataclasses
import math
import random
import statistics
import time
from dataclasses import dataclass, field
from typing import Literal

from cdra.algos.experience import Sample
from cdra.config import check
from cdra.data.example import TaskExample
from cdra.data.loaders import DatasetSpec
from cdra.data.prompts import get_prompt, render_pair_judge
from cdra.data.synthetic import corrupt_steps, format_sr_r1_solution, problem_from_question
from cdra.recipes.common import (
    Prepared,
    RunConfig,
    check_dataset,
    check_engine,
    check_learner,
    check_model_path,
    check_positive,
    check_sampling,
    check_template,
    check_verifier,
    load_examples,
    resolve_model,
    synthetic_spec,
)
from cdra.recipes.session import Session
from cdra.rewards.elo import (
    group_elo_rewards,
    pair_winner,
    parse_winner,
    shows_first,
    sr_r1_advantages,
    sr_r1_format_reward,
    sr_r1_rewards,
    tag_count_reward,
)
from cdra.rewards.judging import Judgement
from cdra.runtime.judge import JudgePool, JudgeSettings, PairJudge, PromptScore
from cdra.runtime.learner import LearnerConfig
from cdra.runtime.objectives import Objective
from cdra.runtime.roles import FrozenEngines, Learners, PolicyEngines, RoleSpec, RuleVerifiers, plan
from cdra.runtime.rollout import Completion, EngineConfig, SamplingConfig
from cdra.runtime.scorer import ScoreItem

JUDGE_ROLE = "judge"
ZOO_CHECKPOINT = "sr_r1"


def _default_sampling() -> SamplingConfig:
    return SamplingConfig(temperature=0.7, max_tokens=96, min_tokens=4, stop=["</answer>"])


@dataclass
class SRR1Config:
    run: RunConfig = field(default_factory=lambda: RunConfig(output_dir="outputs/sr_r1", eval_every=5))
    model_path: str = field(default="", metadata={"help": "HF dir of the policy; empty: the zoo sr_r1 policy, which answers and judges pairs"})
    judge: Literal["self", "frozen"] = field(default="self", metadata={"help": "self: the policy judges on its own engines (synced every update); frozen: a fixed judge_path model on engines of its own"})
    judge_path: str = field(default="", metadata={"help": "HF dir of the frozen judge (judge=frozen); empty: the zoo sr_r1 checkpoint"})
    train_data: DatasetSpec = field(default_factory=lambda: synthetic_spec("train", 1024))
    eval_data: DatasetSpec = field(default_factory=lambda: synthetic_spec("test", 128))
    prompt_template: str = "sr_r1_short"
    judge_template: str = field(default="sr_r1_judge_solve", metadata={"help": "pair prompt over question, response_a, response_b; sr_r1_judge: the 6-point rubric (paper scale)"})
    verifier: str = field(default="cdra.rewards.elo:sr_r1_accuracy", metadata={"help": "the accuracy term and evaluation's answer checker"})
    verifier_timeout_s: float = 10.0
    num_scorers: int = 1
    num_rollout_workers: int = 1
    num_judge_workers: int = field(default=1, metadata={"help": "judge=frozen: engines of the judge"})
    rollout: EngineConfig = field(default_factory=lambda: EngineConfig(max_model_len=512))
    judge_engine: EngineConfig = field(default_factory=lambda: EngineConfig(max_model_len=512))
    sampling: SamplingConfig = field(default_factory=_default_sampling)
    judge_temperature: float = 0.5
    # 500 at paper scale; the tiny judge's verdict ("... A: 14. B: 15.\nWinner: response A") is ~80 tokens
    judge_max_tokens: int = 128
    judge_time_limit_s: float = 120.0
    eval_samples: int = field(default=4, metadata={"help": "samples per held-out problem at the rollout temperature (eval/sampled_reward); 0: greedy only"})
    eval_pairs: int = field(default=128, metadata={"help": "held-out questions whose pair (a right and a slipped solution) is judged greedily at each evaluation; 0: none"})
    steps: int = 20
    group_size: int = 5
    rollout_batch_size: int = field(default=40, metadata={"help": "responses per step (prompts x group_size)"})
    elo_k: float = 16.0
    elo_passes: int = 10
    elo_weight: float = 1.0
    accuracy_weight: float = field(default=1.0, metadata={"help": "0: pure self-reward (no answer checker in the reward)"})
    format_weight: float = 1.0
    tag_count_weight: float = 1.0
    advantage_eps: float = 1e-4
    learner: LearnerConfig = field(default_factory=lambda: LearnerConfig(num_ranks=1, lr=1e-5, micro_batch_size=40, zero_stage=2))
    cliprange: float = 0.2
    epochs: int = 1

    def validate(self) -> None:
        check_positive(self, "steps", "num_rollout_workers", "num_judge_workers", "num_scorers", "rollout_batch_size",
                       "judge_max_tokens", "judge_time_limit_s", "elo_k", "elo_passes", "epochs", "cliprange", "verifier_timeout_s")
        check(self.group_size >= 2, f"group_size must be >= 2 (pairs and advantages are within a group), got {self.group_size}")
        check(self.rollout_batch_size % self.group_size == 0, "rollout_batch_size must be a multiple of group_size")
        weights = {k: getattr(self, k) for k in ("elo_weight", "accuracy_weight", "format_weight", "tag_count_weight")}
        check(all(w >= 0 for w in weights.values()), f"reward weights must be >= 0, got {weights}")
        check(any(w > 0 for w in weights.values()), "at least one reward weight must be > 0 (nothing to learn from)")
        check(self.judge == "frozen" or not self.judge_path, "judge_path is the frozen judge's model; set judge=frozen or leave it empty")
        check(self.judge_temperature >= 0, f"judge_temperature must be >= 0, got {self.judge_temperature}")
        check(self.eval_pairs >= 0 and self.eval_samples >= 0, "eval_pairs and eval_samples must be >= 0")
        check(self.advantage_eps >= 0, f"advantage_eps must be >= 0, got {self.advantage_eps}")
        for name in ("prompt_template", "judge_template"):
            check_template(getattr(self, name), name)
        missing = {"question", "response_a", "response_b"} - set(get_prompt(self.judge_template).fields)
        check(not missing, f"judge_template {self.judge_template!r} lacks the pair fields {sorted(missing)}")
        check_engine(self.rollout, "rollout")
        check_engine(self.judge_engine, "judge_engine")
        check_sampling(self.sampling, "sampling")
        check_learner(self.learner, "learner")
        check_dataset(self.train_data, "train_data")
        check_dataset(self.eval_data, "eval_data")

    @property
    def weights(self) -> tuple[float, float, float, float]:
        return self.elo_weight, self.accuracy_weight, self.format_weight, self.tag_count_weight


def objective_of(config: SRR1Config) -> Objective:
    return Objective(kind="policy_gradient", loss_type="grpo_clip", cliprange=config.cliprange, length_normalization="mean",
                     epochs=config.epochs)


def roles_of(config: SRR1Config) -> list[RoleSpec]:
    """The policy's engines (which also judge, unless judge=frozen) and learners, the answer
    checker, and with judge=frozen the judge's own engines."""
    roles: list[RoleSpec] = [PolicyEngines(config.rollout, config.num_rollout_workers), Learners(config.learner),
                             RuleVerifiers(config.verifier, config.num_scorers, config.verifier_timeout_s)]
    if config.judge == "frozen":
        roles.append(FrozenEngines(JUDGE_ROLE, resolve_model(config.judge_path, ZOO_CHECKPOINT), config.judge_engine,
                                   config.num_judge_workers))
    return roles


def prepare(config: SRR1Config) -> Prepared:
    """Everything checked and loaded before any actor starts."""
    check_model_path(config.model_path, "model_path")
    check_model_path(config.judge_path, "judge_path")
    check_verifier(config.verifier, "verifier")
    data = {"train_data": load_examples(config.train_data, "train_data"),
            "eval_data": load_examples(config.eval_data, "eval_data")}
    return Prepared(data, plan(roles_of(config), gpu=True))


def heldout_pairs(examples: list[TaskExample], n: int, seed: int) -> list[tuple[str, str, str, str]]:
    """Up to `n` (question, response A, response B, right letter) of synthetic held-out problems:
    the right solution and one with a carried slip, the right one first every other pair."""
    rng = random.Random(f"sr-r1-eval-pairs:{seed}")
    out = []
    for example in examples:
        problem = problem_from_question(example.question)
        if problem is None or len(out) >= n:
            continue
        right, slipped = format_sr_r1_solution(problem), format_sr_r1_solution(problem, corrupt_steps(problem, rng)[0])
        out.append((example.question, right, slipped, "A") if len(out) % 2 == 0 else (example.question, slipped, right, "B"))
    return out


def run(config: SRR1Config, prepared: Prepared | None = None) -> dict[str, float]:
    """Train; returns the final metrics (incl. eval before/after)."""
    session = Session.start(config.run, config, model_path=config.model_path, zoo_checkpoint=ZOO_CHECKPOINT, roles=roles_of(config),
                            prepared=prepared or prepare(config))
    try:
        judge = start_judge(session, config)
        train(session, config, judge)
    finally:
        summary = session.close()
    for key in ("eval/accuracy", "eval/sampled_reward", "eval/judge_agreement"):
        if key in summary and f"{key}_before" in summary:
            print(f"[cdra] sr_r1 {key}: before {summary[f'{key}_before']:.3f}, after {summary[key]:.3f}")
    return summary


# ----------------------------------------------------------------------------- the judge


def start_judge(session: Session, config: SRR1Config) -> JudgePool:
    """The policy's own engines (their version is the policy's: synced by every update), or a
    frozen model's engines."""
    settings = JudgeSettings(SamplingConfig(temperature=config.judge_temperature, max_tokens=config.judge_max_tokens, logprobs=False),
                             time_limit_s=config.judge_time_limit_s)
    if config.judge == "self":
        return JudgePool(session.rollouts, session.tokenizer, settings)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(resolve_model(config.judge_path, ZOO_CHECKPOINT))
    return JudgePool(session.roles[JUDGE_ROLE], tokenizer, settings, policy_tokenizer=session.tokenizer)


def verdict_parser(template: str):
    """A judgement's letter: 1.0 "A", 0.0 "B", None unparsed. The prompt's last line is read
    in front of the judgement, so a template ending "Winner: response" parses a bare " A"."""
    tail = get_prompt(template).template.rsplit("\n", 1)[-1]

    def parse(judgement: Judgement) -> float | None:
        letter = parse_winner(tail + judgement.text)
        return None if letter is None else float(letter == "A")
    return parse


def only_verdict(parsed: list[float | None]) -> float:
    """One judgement per pair; unparsed stays visible as NaN (not a vote for B)."""
    return math.nan if parsed[0] is None else parsed[0]


def verdict_of(score: PromptScore) -> Literal["A", "B"] | None:
    if score.error or math.isnan(score.score):
        return None
    return "A" if score.score == 1.0 else "B"


def pair_judge(config: SRR1Config) -> PairJudge:
    def build_prompt(group: list[ScoreItem], i: int, j: int) -> str:
        first, second = (group[i], group[j]) if group[i].metadata["shows_first"][(i, j)] else (group[j], group[i])
        return render_pair_judge(config.judge_template, group[i].metadata["question"], first.response, second.response)
    return PairJudge(build_prompt, verdict_parser(config.judge_template), only_verdict)


# ----------------------------------------------------------------------------- the loop


def train(session: Session, config: SRR1Config, judge: JudgePool) -> None:
    spec = pair_judge(config)
    objective = objective_of(config)
    stream = session.prompt_stream(session.prepared.data["train_data"])
    pairs = heldout_pairs(session.prepared.data["eval_data"], config.eval_pairs, config.run.seed)
    evaluation = lambda: evaluate(session, config, judge, pairs)  # noqa: E731
    if session.step == 0:
        evaluation()
    for step in session.steps(config.steps):
        examples = stream.next(config.rollout_batch_size // config.group_size)
        sampling = dataclasses.replace(config.sampling, seed=config.run.seed * 1_000_003 + step * 10_007)
        groups = session.rollouts.generate([session.encode(session.prompt(config.prompt_template, e)) for e in examples],
                                           sampling, config.group_size)
        metrics = dict(session.rollouts.last_stats)
        samples, step_metrics = score(session, config, judge, spec, examples, groups, step)
        metrics.update(step_metrics)
        metrics.update(judge.stats())
        metrics.update(session.learn(samples, objective))
        session.finish_step(metrics, evaluation=evaluation)


def score(session: Session, config: SRR1Config, judge: JudgePool, spec: PairJudge, examples: list[TaskExample],
          groups: list[list[Completion]], step: int) -> tuple[list[Sample], dict[str, float]]:
    """Accuracy, format and tag count of every completion; every pair judged; Elo; advantages."""
    g = config.group_size
    group_ids = [step * 100_000 + n for n in range(len(groups))]
    coins = [{(i, j): shows_first(config.run.seed, gid, i, j) for i in range(g) for j in range(i + 1, g)} for gid in group_ids]
    items = [[ScoreItem(c.text, e.answer, metadata={"question": e.question, "id": e.id, "shows_first": coin}) for c in group]
             for e, group, coin in zip(examples, groups, coins)]
    flat_items = [item for group in items for item in group]
    accuracy = [r.score for r in session.scorers.score(flat_items)]
    started = time.perf_counter()
    settings = dataclasses.replace(judge.settings, sampling=dataclasses.replace(judge.settings.sampling, seed=config.run.seed * 1_000_003 + step))
    judged = judge.score_pairs(items, spec, settings)
    judge_seconds = time.perf_counter() - started
    samples, verdicts, elo_all, dropped = [], [], [], 0
    for n, (example, group, coin, pairs) in enumerate(zip(examples, groups, coins, judged)):
        correct = accuracy[n * g:(n + 1) * g]
        winners = {}
        for (i, j), s in pairs.items():
            letter = verdict_of(s)
            winners[(i, j)] = pair_winner(letter, i, j, coin[(i, j)])
            verdicts.append((letter, correct[i], correct[j], winners[(i, j)], i, j))
        elo, lost = group_elo_rewards(g, winners, config.elo_k, config.elo_passes)
        dropped += lost
        fmt = [sr_r1_format_reward(c.text) for c in group]
        tags = [tag_count_reward(c.text) for c in group]
        rewards = sr_r1_rewards(elo, correct, fmt, tags, config.weights)
        advantages = sr_r1_advantages(rewards, config.advantage_eps)
        elo_all += list(zip(elo, correct))
        samples += [Sample(
            prompt_ids=c.prompt_ids, response_ids=c.response_ids or [session.eos_id],
            rollout_logprobs=c.logprobs if c.response_ids else [0.0],
            reward=rewards[k], advantage=advantages[k], prompt_id=example.id, group_id=group_ids[n],
            policy_version=c.policy_version, scorer_version=judge.version,
            metadata={"correct": correct[k], "elo_reward": elo[k], "format_reward": fmt[k], "tag_count_reward": tags[k],
                      "response_text": c.text, "sample_index": k},
        ) for k, c in enumerate(group)]
    metrics = judge_metrics(verdicts, elo_all, dropped)
    metrics.update({
        "judge/seconds": judge_seconds,
        "reward/mean": sum(s.reward for s in samples) / len(samples),
        "reward/accuracy": sum(accuracy) / len(accuracy),
        "reward/format": sum(s.metadata["format_reward"] for s in samples) / len(samples),
        "reward/tag_count": sum(s.metadata["tag_count_reward"] for s in samples) / len(samples),
        "rollout/response_tokens_mean": sum(len(s.response_ids) for s in samples) / len(samples),
    })
    return samples, metrics


def judge_metrics(verdicts: list[tuple[str | None, float, float, int | None, int, int]], elo_and_correct: list[tuple[float, float]],
                  dropped: int) -> dict[str, float]:
    """Agreement with the oracle on pairs where exactly one completion is correct (an unparsed
    verdict counts as a disagreement), position bias (share of parsed verdicts naming A), the
    unparsed count, and the correlation of the Elo term with correctness."""
    parsed = [v for v in verdicts if v[0] is not None]
    oracle = [v for v in verdicts if (v[1] > 0.5) != (v[2] > 0.5)]
    out = {"judge/pairs": float(len(verdicts)), "judge/dropped_verdicts": float(dropped),
           "judge/parse_failure_rate": dropped / max(1, len(verdicts)),
           "judge/oracle_pairs": float(len(oracle))}
    if parsed:
        out["judge/position_bias_a"] = sum(v[0] == "A" for v in parsed) / len(parsed)
    if oracle:
        out["judge/agreement"] = sum(w is not None and w == (i if ci > 0.5 else j) for _, ci, _, w, i, j in oracle) / len(oracle)
    try:
        out["reward/elo_correct_corr"] = statistics.correlation([e for e, _ in elo_and_correct], [c for _, c in elo_and_correct])
    except statistics.StatisticsError:  # either side constant (or too few pairs): no correlation
        pass
    return out


# ----------------------------------------------------------------------------- evaluation


def judge_heldout(config: SRR1Config, judge: JudgePool, pairs: list[tuple[str, str, str, str]]) -> dict[str, dict[str, float]]:
    """The judge, greedy, on fixed held-out pairs: per question, whether it named the right
    letter (an unparsed verdict counts as wrong), whether it parsed, whether it named A."""
    if not pairs:
        return {}
    greedy = dataclasses.replace(judge.settings, sampling=dataclasses.replace(judge.settings.sampling, temperature=0.0, seed=None))
    prompts = [render_pair_judge(config.judge_template, q, a, b) for q, a, b, _ in pairs]
    scores = judge.score_prompts(prompts, verdict_parser(config.judge_template), only_verdict, greedy)
    out = {}
    for (question, _, _, right), s in zip(pairs, scores):
        letter = verdict_of(s)
        out[question] = {"judge_agreement": float(letter == right), "judge_parsed": float(letter is not None),
                         "judge_named_a": float(letter == "A")}
    return out


def evaluate(session: Session, config: SRR1Config, judge: JudgePool, pairs: list[tuple[str, str, str, str]]) -> dict[str, float]:
    """Greedy held-out accuracy, and the judge's verdicts on each held-out question's pair as
    fields of that question's record (``eval/judge_agreement``: their mean), so `python -m cdra.recipes.compare`
    pairs both per question across runs."""
    session.sync_engines()  # a self-judge is the current policy
    verdicts = judge_heldout(config, judge, pairs)
    return session.evaluate(session.prepared.data["eval_data"], config.prompt_template, config.sampling, samples=config.eval_samples,
                            record_fields=lambda record: verdicts.get(record["question"], {}))

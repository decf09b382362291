"""The smallest complete cdra recipe (docs/recipes.md): REINFORCE with a group-mean baseline.

    python docs/examples/min_recipe.py steps=2          # --help lists every key

Each step: sample `group_size` responses for `prompts_per_step` training questions on the
rollout engine, score them with the verifier pool, turn rewards into group-relative
advantages, and hand the samples to the learner; the session broadcasts the new weights,
logs, evaluates, checkpoints and resumes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import torch

from cdra.algos import group_normalize
from cdra.algos.experience import Sample
from cdra.config import check, load_config
from cdra.data.loaders import DatasetSpec
from cdra.recipes.common import RunConfig, load_examples, synthetic_spec
from cdra.recipes.session import Session
from cdra.runtime.learner import LearnerConfig
from cdra.runtime.objectives import Objective
from cdra.runtime.roles import Learners, PolicyEngines, RuleVerifiers
from cdra.runtime.rollout import EngineConfig, SamplingConfig
from cdra.runtime.scorer import ScoreItem


@dataclass
class MinRecipeConfig:
    run: RunConfig = field(default_factory=lambda: RunConfig(output_dir="outputs/min_recipe"))
    model_path: str = field(default="", metadata={"help": "HF model dir; empty: the embedded warm-started tiny model"})
    train_data: DatasetSpec = field(default_factory=lambda: synthetic_spec("train", 256))
    eval_data: DatasetSpec = field(default_factory=lambda: synthetic_spec("test", 32))
    prompt_template: str = "r1_short"
    verifier: str = "r1_zero"
    rollout: EngineConfig = field(default_factory=lambda: EngineConfig(max_model_len=512))
    sampling: SamplingConfig = field(default_factory=lambda: SamplingConfig(temperature=1.0, max_tokens=96, min_tokens=4, stop=["</answer>"]))
    learner: LearnerConfig = field(default_factory=lambda: LearnerConfig(lr=3e-5, micro_batch_size=32))
    steps: int = 10
    prompts_per_step: int = 8
    group_size: int = 4

    def validate(self) -> None:
        check(self.group_size >= 2, "group_size must be >= 2 (the baseline is the group's mean)")


def run(config: MinRecipeConfig) -> dict[str, float]:
    roles = [PolicyEngines(config.rollout, 1), Learners(config.learner), RuleVerifiers(config.verifier, 1)]
    session = Session.start(config.run, config, model_path=config.model_path, zoo_checkpoint="r1", roles=roles)
    stream = session.prompt_stream(load_examples(config.train_data, "train_data"))
    held_out = load_examples(config.eval_data, "eval_data")
    objective = Objective(kind="policy_gradient", loss_type="reinforce_with_baseline")

    def evaluate() -> dict[str, float]:
        return session.evaluate(held_out, config.prompt_template, config.sampling)

    if session.step == 0:  # a resumed run has its first evaluation already
        evaluate()
    for step in session.steps(config.steps):
        examples = stream.next(config.prompts_per_step)
        prompts = [session.encode(session.prompt(config.prompt_template, e)) for e in examples]
        groups = session.rollouts.generate(prompts, config.sampling, n=config.group_size)
        pairs = [(e, c) for e, group in zip(examples, groups) for c in group]
        results = session.scorers.score([ScoreItem(c.text, e.answer) for e, c in pairs])
        rewards = torch.tensor([r.score for r in results])
        advantages = group_normalize(rewards, config.group_size, 1e-6, normalize_by_std=False)
        samples = [
            Sample(prompt_ids=c.prompt_ids, response_ids=c.response_ids or [session.eos_id],
                   reward=float(rewards[i]), advantage=float(advantages[i]), prompt_id=e.id,
                   group_id=step * 100_000 + i // config.group_size, policy_version=c.policy_version)
            for i, (e, c) in enumerate(pairs)
        ]
        metrics = {"reward/mean": float(rewards.mean())}
        metrics.update(session.learn(samples, objective))
        session.finish_step(metrics, evaluation=evaluate)
    return session.close()


if __name__ == "__main__":
    print(json.dumps(run(load_config(MinRecipeConfig)), indent=2, sort_keys=True))

"""The judge service: generative judges served by vLLM engines, with fan-out and fan-in.

A `JudgePool` runs on a `RolloutPool`: its own (`JudgePool.start`), which a `WeightSync` can
feed like any rollout pool, or the policy's (self-judging). Its scorer `version` is the
engines' weight version, so it advances with every sync. Every call is time-limited; a
prompt that times out, whose engine fails, or whose recipe callable raises scores 0 and is
counted in `stats()`, never raised.

Fan-out / fan-in, the recipe supplying the callables:
- `score_prompts`: N sampled judgements per prompt -> `parse` each -> `aggregate` to one score;
- `score_steps`: one response -> one prompt per step (`StepJudge`), the step scores returned
  with token spans of the policy's own response ids;
- `score_pairs`: one group -> every unordered pair (`PairJudge`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from cdra.rewards.judging import JudgeError, Judgement, incremental_offsets, mean_unparsed_zero, token_spans, unordered_pairs
from cdra.runtime.groups import RolloutPool
from cdra.runtime.rollout import EngineConfig, SamplingConfig
from cdra.runtime.scorer import ScoreItem, ScoreResult

Prompt = str | list[int]  # judge prompt text (encoded with the judge's tokenizer) or its token ids
Parse = Callable[[Judgement], float | None]  # None: unparsed (counted)
Aggregate = Callable[[list[float | None]], float]  # the N parsed judgements of one prompt -> its score


def _greedy() -> SamplingConfig:
    return SamplingConfig(temperature=0.0, max_tokens=64, logprobs=False)


@dataclass
class JudgeSettings:
    """How each judge prompt is sampled: `n` judgements, top-`top_logprobs` log-probs at every
    generated position (0: none), one `time_limit_s` per engine call."""

    sampling: SamplingConfig = field(default_factory=_greedy)
    n: int = 1
    top_logprobs: int = 0
    time_limit_s: float = 60.0

    def validate(self) -> None:
        self.sampling.validate()
        if self.n < 1:
            raise ValueError(f"judge n must be >= 1, got {self.n}")
        if self.top_logprobs < 0:
            raise ValueError(f"judge top_logprobs must be >= 0, got {self.top_logprobs}")
        if self.time_limit_s <= 0:
            raise ValueError(f"judge time_limit_s must be > 0, got {self.time_limit_s}")


@dataclass
class StepJudge:
    """A process judge: `split(response_text)` gives each step's character span,
    `build_prompt(item, steps, k)` the judge prompt for step k (steps: every step's text),
    `combine(step_scores)` the response's score (default: the mean; 0 without steps)."""

    split: Callable[[str], Sequence[tuple[int, int]]]
    build_prompt: Callable[[ScoreItem, list[str], int], Prompt]
    parse: Parse
    aggregate: Aggregate = mean_unparsed_zero
    combine: Callable[[list[float]], float] = mean_unparsed_zero


@dataclass
class PairJudge:
    """A pairwise judge: `build_prompt(group, i, j)` the prompt comparing responses i < j, whose
    parsed score is the recipe's (e.g. P(the response shown first wins)). A recipe that shows
    pairs in a random order flips the score itself; it knows its own coin."""

    build_prompt: Callable[[list[ScoreItem], int, int], Prompt]
    parse: Parse
    aggregate: Aggregate = mean_unparsed_zero


@dataclass
class PromptScore:
    score: float
    judgements: list[Judgement]
    error: str | None = None


class JudgePool:
    """Driver-side judge on a `RolloutPool`; `tokenizer` encodes text prompts for the judge
    model and, for `score_steps`, `policy_tokenizer` decodes the policy's response ids."""

    def __init__(self, engines: RolloutPool, tokenizer: Any, settings: JudgeSettings | None = None,
                 policy_tokenizer: Any | None = None, owns_engines: bool = False) -> None:
        self.settings = settings or JudgeSettings()
        self.settings.validate()
        self.engines = engines
        self.tokenizer = tokenizer
        self.policy_tokenizer = policy_tokenizer or tokenizer
        self.owns_engines = owns_engines
        self.counts = {"prompts": 0, "judgements": 0, "errors": 0, "timeouts": 0, "unparsed": 0}

    @classmethod
    def start(cls, config: EngineConfig, num_workers: int = 1, settings: JudgeSettings | None = None,
              policy_tokenizer: Any | None = None, actor_options: list[dict] | None = None, max_restarts: int = 3) -> JudgePool:
        """A judge on engines of its own (`config.model_path`: the judge model)."""
        from transformers import AutoTokenizer

        engines = RolloutPool(config, num_workers, actor_options, max_restarts=max_restarts)
        return cls(engines, AutoTokenizer.from_pretrained(config.model_path), settings, policy_tokenizer, owns_engines=True)

    @property
    def version(self) -> int:
        """The scorer version: the weight version every judge engine holds."""
        return self.engines.version

    def encode(self, prompt: Prompt) -> list[int]:
        return list(prompt) if isinstance(prompt, list) else self.tokenizer(prompt, add_special_tokens=False).input_ids

    def judge(self, prompts: list[Prompt], settings: JudgeSettings | None = None) -> list[list[Judgement] | JudgeError]:
        """Raw judgements (`settings.n` per prompt) or the reason a prompt has none (counted)."""
        s = settings or self.settings
        out = self.engines.judge([self.encode(p) for p in prompts], s.sampling, s.n, s.top_logprobs, s.time_limit_s)
        self.counts["prompts"] += len(prompts)
        for r in out:
            if isinstance(r, JudgeError):
                self.counts["timeouts" if r.kind == "timeout" else "errors"] += 1
            else:
                self.counts["judgements"] += len(r)
        return out

    def score_prompts(self, prompts: list[Prompt | JudgeError], parse: Parse, aggregate: Aggregate = mean_unparsed_zero,
                      settings: JudgeSettings | None = None) -> list[PromptScore]:
        """One score per prompt: its N judgements parsed and aggregated. A prompt given as a
        `JudgeError` (its builder raised), judged with an error, or whose parse or aggregate
        raises scores 0 with the error; the failure is counted."""
        todo = [i for i, p in enumerate(prompts) if not isinstance(p, JudgeError)]
        judged = dict(zip(todo, self.judge([prompts[i] for i in todo], settings)))
        out = []
        for i, p in enumerate(prompts):
            r = judged.get(i, p)
            if isinstance(r, JudgeError):
                out.append(PromptScore(0.0, [], f"{r.kind}: {r.message}"))
                continue
            try:
                parsed = [parse(j) for j in r]
                self.counts["unparsed"] += sum(v is None for v in parsed)
                out.append(PromptScore(float(aggregate(parsed)), r))
            except Exception as e:  # noqa: BLE001 - a recipe's parse bug scores 0 and is counted, not raised
                self.counts["errors"] += 1
                out.append(PromptScore(0.0, r, f"error: parse/aggregate raised {type(e).__name__}: {e}"))
        return out

    def _built(self, build: Callable[[], Prompt]) -> Prompt | JudgeError:
        try:
            return build()
        except Exception as e:  # noqa: BLE001 - counted with the prompt's score of 0 (see score_prompts)
            self.counts["prompts"] += 1
            self.counts["errors"] += 1
            return JudgeError("error", f"build_prompt raised {type(e).__name__}: {e}")

    def step_spans(self, item: ScoreItem, spec: StepJudge) -> tuple[list[str], list[tuple[int, int]]]:
        """Each step's text and token span in `item.response_ids`, from the policy tokenizer's
        incremental decode of those ids (the text is never re-tokenized)."""
        if item.response_ids is None:
            raise ValueError("step judging needs ScoreItem.response_ids (the policy's response tokens)")
        text, offsets = incremental_offsets(item.response_ids, self._decode)
        chars = list(spec.split(text))
        return [text[a:b] for a, b in chars], token_spans(offsets, chars)

    def _decode(self, ids: list[int]) -> str:
        return self.policy_tokenizer.decode(ids, skip_special_tokens=True)

    def score_steps(self, items: list[ScoreItem], spec: StepJudge, settings: JudgeSettings | None = None) -> list[ScoreResult]:
        """One judge prompt per step of every response, all in one engine call."""
        split = [self.step_spans(item, spec) for item in items]
        prompts = [self._built(lambda item=item, steps=steps, k=k: spec.build_prompt(item, steps, k))
                   for item, (steps, _) in zip(items, split) for k in range(len(steps))]
        scored = iter(self.score_prompts(prompts, spec.parse, spec.aggregate, settings))
        results = []
        for steps, spans in split:
            mine = [next(scored) for _ in steps]
            step_scores = [s.score for s in mine]
            errors = [s.error for s in mine if s.error]
            results.append(ScoreResult(float(spec.combine(step_scores)), {"steps": float(len(steps)), "judge_version": float(self.version),
                                                                          "judge_errors": float(len(errors))},
                                       step_scores, spans, errors[0] if errors else None))
        return results

    def score_pairs(self, groups: list[list[ScoreItem]], spec: PairJudge,
                    settings: JudgeSettings | None = None) -> list[dict[tuple[int, int], PromptScore]]:
        """Every unordered pair (i, j), i < j, of every group, in one engine call."""
        keys, prompts = [], []
        for g, group in enumerate(groups):
            for i, j in unordered_pairs(len(group)):
                keys.append((g, i, j))
                prompts.append(self._built(lambda group=group, i=i, j=j: spec.build_prompt(group, i, j)))
        out: list[dict[tuple[int, int], PromptScore]] = [{} for _ in groups]
        for (g, i, j), s in zip(keys, self.score_prompts(prompts, spec.parse, spec.aggregate, settings)):
            out[g][(i, j)] = s
        return out

    def stats(self) -> dict[str, float]:
        return {**{f"judge/{k}": float(v) for k, v in self.counts.items()}, "judge/version": float(self.version)}

    def close(self) -> None:
        """Stop engines this judge started; a self-judge leaves the policy's engines alone."""
        import ray

        if self.owns_engines:
            for w in self.engines.workers:
                ray.kill(w)

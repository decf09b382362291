"""Pure parts of the judge service: token offsets and step spans, pairs, P(Yes) from top-k,
and the fan-out / fan-in bookkeeping and failure counts of `JudgePool` (over a stub engine
pool; the real engines are in tests/test_judge_engines.py)."""

from __future__ import annotations

import math

import pytest

from cdra.models.tokenizer import build_byte_tokenizer
from cdra.rewards.judging import (
    JudgeError,
    Judgement,
    incremental_offsets,
    mean_unparsed_zero,
    steps_splitter,
    token_spans,
    unordered_pairs,
    yes_probability_at,
)
from cdra.runtime.judge import JudgePool, JudgeSettings, PairJudge, StepJudge
from cdra.runtime.scorer import ScoreItem

TOK = build_byte_tokenizer()


def _decode(ids: list[int]) -> str:
    return TOK.decode(ids, skip_special_tokens=True)


def test_offsets_of_a_byte_tokenizer_cover_the_text_and_multibyte_characters_share_a_start():
    text = "Step 1: 2×3=6\nStep 2: é"
    ids = TOK(text, add_special_tokens=False).input_ids + [TOK.eos_token_id]
    decoded, offsets = incremental_offsets(ids, _decode)
    assert decoded == text == _decode(ids)
    times = text.index("×")
    i = len(TOK(text[:times], add_special_tokens=False).input_ids)  # "×" is two byte tokens
    assert offsets[i : i + 2] == [(times, times), (times, times + 1)]
    assert offsets[-1] == (len(text), len(text))  # the skipped EOS emits nothing
    assert "".join(decoded[s:e] for s, e in offsets) == text  # the spans tile the text, in order
    assert all(decoded[s:e] == _decode([t]) for t, (s, e) in zip(ids, offsets) if _decode([t]).isascii())


class _WordTokenizer:
    """Whole words with a leading space glued on (like BPE's " Step"), decoded by joining."""

    vocab = ["Step", " 1:", " a", "\n", " Step", " 2:", " b"]

    def decode(self, ids: list[int]) -> str:
        return "".join(self.vocab[i] for i in ids)


def test_a_token_straddling_a_step_marker_goes_with_the_step_it_ends_in():
    ids = [0, 1, 2, 4, 5, 6]  # "Step 1: a Step 2: b"
    text, offsets = incremental_offsets(ids, _WordTokenizer().decode)
    assert text == "Step 1: a Step 2: b"
    chars = steps_splitter()(text)
    assert chars == [(0, 10), (10, 19)]
    assert token_spans(offsets, chars) == [(0, 3), (3, 6)]  # " Step" (chars 9-13) is step 2's


def test_step_spans_index_the_response_ids_and_skip_preamble_and_eos():
    response = " ok Step 1: 1+1=2\nStep 2: 2+2=4\nThe answer is 4."
    ids = TOK(response, add_special_tokens=False).input_ids + [TOK.eos_token_id]
    text, offsets = incremental_offsets(ids, _decode)
    chars = steps_splitter()(text)
    spans = token_spans(offsets, chars)
    assert [_decode(ids[a:b]) for a, b in spans] == ["Step 1: 1+1=2\n", "Step 2: 2+2=4\nThe answer is 4."]
    assert spans[0][0] == 4 and spans[-1][1] == len(ids) - 1  # " ok " and EOS belong to no step


def test_a_span_without_tokens_is_empty_at_its_place_and_bad_spans_are_rejected():
    assert token_spans([(0, 1), (1, 2)], [(0, 1), (1, 1), (1, 2)]) == [(0, 1), (1, 1), (1, 2)]
    with pytest.raises(ValueError, match="bad character span"):
        token_spans([(0, 1)], [(2, 1)])


def test_unordered_pairs():
    assert unordered_pairs(4) == [(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)]
    assert unordered_pairs(1) == []


def test_yes_probability_from_top_k_sums_variants_and_handles_absent_tokens():
    j = Judgement("Yes", [1], [{1: math.log(0.3), 2: math.log(0.1), 3: math.log(0.2)}])
    assert yes_probability_at(j, [1], [3]) == pytest.approx(0.3 / 0.5)
    assert yes_probability_at(j, [1, 2], [3]) == pytest.approx(0.4 / 0.6)
    assert yes_probability_at(j, [1], [9]) == 1.0 and yes_probability_at(j, [8], [9]) == 0.5
    assert yes_probability_at(j, [1], [3], position=-1) == pytest.approx(0.6)
    assert yes_probability_at(j, [1], [3], position=1) is None
    assert yes_probability_at(Judgement("Yes", [1]), [1], [3]) is None


def test_mean_unparsed_zero():
    assert mean_unparsed_zero([1.0, None, 0.5]) == pytest.approx(0.5)
    assert mean_unparsed_zero([]) == 0.0


class _StubEngines:
    """Stands in for a RolloutPool: answers `judge` with one byte of the prompt as text."""

    version = 3

    def __init__(self, pick: int = -1, fail: dict[int, JudgeError] | None = None) -> None:
        self.pick = pick
        self.fail = fail or {}
        self.calls: list[list[list[int]]] = []

    def judge(self, prompts, sampling, n, top_logprobs, time_limit_s):
        self.calls.append(prompts)
        return [self.fail.get(i) or [Judgement(TOK.decode([p[self.pick]]), [p[self.pick]]) for _ in range(n)] for i, p in enumerate(prompts)]


def _digit(j: Judgement) -> float | None:
    return float(j.text) if j.text.isdigit() else None


def test_step_fan_out_builds_one_prompt_per_step_and_fans_back_in():
    engines = _StubEngines()
    judge = JudgePool(engines, TOK, JudgeSettings(n=2), policy_tokenizer=TOK)
    items = [ScoreItem("", "", response_ids=TOK("Step 1: a\nStep 2: b", add_special_tokens=False).input_ids),
             ScoreItem("", "", response_ids=TOK("no steps", add_special_tokens=False).input_ids)]
    spec = StepJudge(split=steps_splitter(), build_prompt=lambda item, steps, k: f"{steps[k]}|{k + 1}", parse=_digit, combine=min)
    results = judge.score_steps(items, spec)
    assert [TOK.decode(p) for p in engines.calls[0]] == ["Step 1: a\n|1", "Step 2: b|2", "no steps|1"]
    assert [r.step_scores for r in results] == [[1.0, 2.0], [1.0]]
    assert [r.score for r in results] == [1.0, 1.0]
    assert [r.step_spans for r in results] == [[(0, 10), (10, 19)], [(0, 8)]]
    assert all(r.details["judge_version"] == 3.0 for r in results)
    assert judge.stats()["judge/judgements"] == 6.0


def test_failures_score_zero_and_are_counted_by_kind():
    engines = _StubEngines(pick=0, fail={1: JudgeError("timeout", "judge timed out after 1s"), 2: JudgeError("error", "engine raised")})

    def parse(j: Judgement) -> float | None:
        if j.text == "x":
            raise RuntimeError("parser bug")
        return _digit(j)

    def build(group, i, j):
        if (i, j) == (1, 2):
            raise KeyError("builder bug")
        return group[i].response + group[j].response

    judge = JudgePool(engines, TOK)
    group = [ScoreItem(r, "") for r in ("1", "?", "x", "5")]
    pairs = judge.score_pairs([group], PairJudge(build_prompt=build, parse=parse))[0]
    assert list(pairs) == [(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)]
    # prompts sent: all but (1, 2); the stub fails the 2nd and 3rd of them
    assert [TOK.decode(p) for p in engines.calls[0]] == ["1?", "1x", "15", "?5", "x5"]
    assert {k: v.score for k, v in pairs.items()} == {(0, 1): 1.0, (0, 2): 0.0, (0, 3): 0.0, (1, 2): 0.0, (1, 3): 0.0, (2, 3): 0.0}
    assert pairs[(1, 3)].error is None  # "?" parses to None: unparsed, scored 0 by the mean
    assert pairs[(0, 2)].error.startswith("timeout") and pairs[(0, 3)].error.startswith("error: engine")
    assert "KeyError" in pairs[(1, 2)].error and "parser bug" in pairs[(2, 3)].error
    assert judge.counts == {"prompts": 6, "judgements": 3, "errors": 3, "timeouts": 1, "unparsed": 1}


def test_bad_settings_fail_with_one_line():
    with pytest.raises(ValueError, match="judge n must be >= 1"):
        JudgeSettings(n=0).validate()
    with pytest.raises(ValueError, match="time_limit_s must be > 0"):
        JudgeSettings(time_limit_s=0).validate()

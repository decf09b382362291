import pytest

from cdra.rewards.steps import StepSpan, split_steps


def _check_spans(text, spans):
    for s in spans:
        assert text[s.start : s.end] == s.text


def test_basic_split():
    text = "Step 1: add 3+4=7. Step 2: double it, 14. Step 3: answer 14."
    spans = split_steps(text)
    assert spans == [
        StepSpan(0, 0, 19, "Step 1: add 3+4=7. "),
        StepSpan(1, 19, 42, "Step 2: double it, 14. "),
        StepSpan(2, 42, len(text), "Step 3: answer 14."),
    ]
    _check_spans(text, spans)
    assert spans[-1].end == len(text)


def test_preamble_and_include_preamble():
    text = "Let us think.\nStep 1: a\nStep 2: b"
    spans = split_steps(text)
    assert [(s.start, s.end) for s in spans] == [(14, 24), (24, len(text))]
    assert spans[0].text == "Step 1: a\n"
    spans = split_steps(text, include_preamble=True)
    assert spans[0] == StepSpan(0, 0, 24, "Let us think.\nStep 1: a\n")


def test_max_steps_last_step_extends_to_end():
    text = "".join(f"Step {i}: s{i}. " for i in range(1, 8))
    spans = split_steps(text, max_steps=5)
    assert len(spans) == 5
    assert spans[4].start == text.index("Step 5:")
    assert spans[4].end == len(text)
    assert spans[4].text == "Step 5: s5. Step 6: s6. Step 7: s7. "
    assert split_steps(text, max_steps=2)[1].text.startswith("Step 2: s2. Step 3:")


def test_gap_and_repeat_end_the_run():
    gap = "Step 1: a Step 2: b Step 4: d Step 5: e"
    spans = split_steps(gap)
    assert len(spans) == 2 and spans[1].text == "Step 2: b Step 4: d Step 5: e"
    rep = "Step 1: a Step 2: b (as in Step 1: a) Step 3: c"
    spans = split_steps(rep)
    assert len(spans) == 2 and spans[1].end == len(rep)


def test_run_starts_at_step_1():
    text = "Step 3: x. Then Step 1: a Step 2: b"
    spans = split_steps(text)
    assert [s.text for s in spans] == ["Step 1: a ", "Step 2: b"]


def test_no_marker_and_empty():
    assert split_steps("just an answer 42") == [StepSpan(0, 0, 17, "just an answer 42")]
    assert split_steps("Step 2: only two") == [StepSpan(0, 0, 16, "Step 2: only two")]
    assert split_steps("Substep 1: not a marker") == [StepSpan(0, 0, 23, "Substep 1: not a marker")]
    assert split_steps("") == []


def test_marker_variants():
    text = "**Step 1:** a\n**Step 2 :** b"
    spans = split_steps(text)
    assert [s.start for s in spans] == [2, 16]
    _check_spans(text, spans)
    with pytest.raises(ValueError):
        split_steps("Step 1: a", max_steps=0)

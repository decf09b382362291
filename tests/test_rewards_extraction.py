import time

import pytest

from cdra.rewards.extraction import (
    extract_answer,
    extract_aqua_answer,
    extract_gsm8k_answer,
    extract_math_answer,
    gsm8k_gold_answer,
    last_boxed_only_string,
    normalize_math_answer,
    normalize_number,
    remove_boxed,
)


@pytest.mark.parametrize(
    "text, expected",
    [
        (r"so $\boxed{\frac{1}{2}}$.", r"\boxed{\frac{1}{2}}"),
        (r"\boxed{1} then \boxed{\sqrt{\frac{a}{b}}}", r"\boxed{\sqrt{\frac{a}{b}}}"),
        (r"\fbox{7} done", r"\fbox{7}"),
        (r"\boxed{3} and \fbox{4}", r"\fbox{4}"),
        (r"$\boxed 5$.", r"\boxed 5"),
        (r"\boxed {12}", r"\boxed{12}"),
        (r"\boxed{\{1,2\}}", r"\boxed{\{1,2\}}"),
        (r"\boxed{\left\{ x \right.}", r"\boxed{\left\{ x \right.}"),  # escaped brace ignored
        ("no box here", None),
        ("", None),
        (r"\boxed{unclosed {", None),
        (r"\boxed{1} but then \boxed{", None),  # the last box decides
    ],
)
def test_last_boxed_only_string(text, expected):
    assert last_boxed_only_string(text) == expected


def test_last_boxed_only_string_is_linear_on_adversarial_braces():
    t0 = time.monotonic()
    assert last_boxed_only_string("\\boxed{" + "{" * 200_000) is None
    assert last_boxed_only_string("\\boxed{" * 50_000) is None
    assert time.monotonic() - t0 < 2.0


def test_remove_boxed():
    assert remove_boxed(r"\boxed{\frac{1}{2}}") == r"\frac{1}{2}"
    assert remove_boxed(r"\boxed 5") == "5"
    assert remove_boxed(r"\fbox{x}") == "x"
    assert remove_boxed(r"\boxed {x+1}") == "x+1"
    assert remove_boxed(None) is None
    assert remove_boxed(" 42 ") == "42"


@pytest.mark.parametrize(
    "s, expected",
    [
        ("1,234", "1234"),
        ("$1,234.50", "1234.5"),
        ("\\$5", "5"),
        ("14.0", "14"),
        ("14.", "14"),
        ("5.", "5"),
        ("+07", "7"),
        ("-0.0", "0"),
        ("-3.50", "-3.5"),
        (".5", "0.5"),
        ("1{,}000", "1000"),
        ("10,\\!000", "10000"),
        (" 42 ", "42"),
        ("1,23", None),  # not thousands grouping
        ("(1,2)", None),
        ("1/2", None),
        ("1e5", None),
        ("5 cm", None),
        (".", None),
        ("", None),
        ("-", None),
    ],
)
def test_normalize_number(s, expected):
    assert normalize_number(s) == expected


@pytest.mark.parametrize(
    "text, expected",
    [
        ("The answer is 5.", "5"),
        ("We get 3 apples and 4 pears. The answer is 5. Check: 2+3=5, so 7 is wrong.", "5"),
        ("First 3, then 4, finally 12", "12"),  # no trigger: last number
        ("It costs $1,234 in total.", "1234"),
        ("The answer is 1,234, which is large", "1234"),
        ("The answer is -3.5 degrees", "-3.5"),
        ("the answer is 12", "12"),  # case-insensitive trigger
        ("The answer is 1. No wait. The answer is 2. Final: 9", "2"),  # last trigger
        ("The answer is unknown, but 42 overall", "42"),
        ("The answer is unknown", None),
        ("from 3-5 people", "5"),  # the dash of a range is no minus sign
        ("GSM8K x2 has 7", "7"),  # digits glued to letters are not numbers
        ("", None),
    ],
)
def test_extract_gsm8k_answer(text, expected):
    assert extract_gsm8k_answer(text) == expected


def test_gsm8k_gold_answer():
    assert gsm8k_gold_answer("She has 3+4=<<3+4=7>>7 apples.\n#### 7") == "7"
    assert gsm8k_gold_answer("...\n#### 1,234") == "1234"
    assert gsm8k_gold_answer("#### -5") == "-5"
    assert gsm8k_gold_answer("no marker 5") is None


@pytest.mark.parametrize(
    "text, expected",
    [
        ("The answer is (c).", "C"),
        ("So the answer is B. Option (D) was tempting.", "B"),
        ("The answer is: E) 42", "E"),
        ("Options: (A) 1 (B) 2 (C) 3. I pick (D)", "D"),
        ("Looking at it, C) is right", "C"),
        (r"Thus \boxed{D}", "D"),
        (r"Thus \boxed{\text{(B)}}", "B"),
        ("The answer is J", "J"),
        ("no option at all", None),
        ("A cat and I went home", None),  # bare letters without trigger are not options
        ("", None),
    ],
)
def test_extract_aqua_answer(text, expected):
    assert extract_aqua_answer(text) == expected


@pytest.mark.parametrize(
    "text, expected",
    [
        (r"so $\boxed{\dfrac{1}{2}}$.", r"\frac{1}{2}"),
        (r"\boxed{\tfrac{3}{4}}", r"\frac{3}{4}"),
        (r"\boxed{\left( 3, \frac{\pi}{2} \right)}", r"(3,\frac{\pi}{2})"),
        (r"\boxed{\left\{ 1, 2 \right\}}", r"\{1,2\}"),
        (r"\boxed{5\text{ cm}}", "5"),
        (r"\boxed{\frac{1}{2}\text{ inch}}", r"\frac{1}{2}"),
        (r"\boxed{90^\circ}", "90"),
        (r"\boxed{90^{\circ}}", "90"),
        (r"\boxed{50\%}", "50"),
        (r"\boxed{\text{(C)}}", "(C)"),
        (r"\boxed{\$18.90}", "18.90"),
        (r"\boxed{10,\!000}", "10,000"),
        (r"\boxed{2\pi r}", r"2\pi r"),  # no "\pir"
        (r"\boxed{x + 1 .}", "x+1"),
        (r"\boxed{\sqrt{2}\,\text{m}}", r"\sqrt{2}"),
        (r"\boxed 7$", "7"),
        (r"\boxed{a \rightarrow b}", r"a\rightarrow b"),  # \right inside \rightarrow kept
        ("The answer is $x=3$.", "x=3"),  # no box: line after the trigger
        ("nothing here", None),
        (r"\boxed{}", None),
    ],
)
def test_extract_math_answer(text, expected):
    assert extract_math_answer(text) == expected


def test_normalize_math_answer_idempotent():
    for s in [r"\frac{1}{2}", r"(3,\frac{\pi}{2})", r"2\pi r", "x+1"]:
        assert normalize_math_answer(s) == s


def test_extract_answer_dispatch():
    assert extract_answer("The answer is 1,000.", "gsm8k") == "1000"
    assert extract_answer(r"\boxed{\dfrac12}", "math") == r"\frac12"
    assert extract_answer("The answer is (b)", "aqua") == "B"
    assert extract_answer("The answer is (b)", "mcq") == "B"
    with pytest.raises(ValueError):
        extract_answer("x", "nope")  # type: ignore[arg-type]


@pytest.mark.parametrize("text", ["The answer is 42 or 41", "The answer is 41 or 42.", "The answer is not 42.",
                                  "The answer is: 42, maybe 41", "The answer is 42 (or 41)"])
def test_gsm8k_hedged_answers_extract_nothing_unless_lenient(text):
    assert extract_gsm8k_answer(text) is None
    assert extract_gsm8k_answer(text, strict=False) in ("42", "41")


@pytest.mark.parametrize("text, expected", [
    ("The answer is 42. Check: 6*7=42, not 41.", "42"),  # the answer sentence ends at its period
    ("The answer is 42 (that is 42)", "42"),  # the same value twice is one value
    ("The answer is: 1,234", "1234"),
    ("values 1,23 and 7", "7"),  # not a thousands grouping: split at commas
    ("The answer is 1,23", None),  # ...so the answer names two values
])
def test_gsm8k_answer_sentence(text, expected):
    assert extract_gsm8k_answer(text) == expected


def _time(fn, text: str) -> float:
    import time

    best = float("inf")
    for _ in range(5):  # best of 5: the machine is shared
        started = time.perf_counter()
        fn(text)
        best = min(best, time.perf_counter() - started)
    return best


@pytest.mark.parametrize("make", [
    lambda n: "The answer is " + ",".join(["1"] * (n // 2)),  # one huge comma run after the trigger
    lambda n: "x " + "1," * (n // 2),  # no trigger: the last-number scan
    lambda n: "The answer is " + "12," * (n // 3) + "5",
])
def test_gsm8k_extraction_is_linear_on_long_comma_digit_strings(make):
    small, large = _time(extract_gsm8k_answer, make(80_000)), _time(extract_gsm8k_answer, make(160_000))
    assert large < 2.0  # 48 s at 160 kB when quadratic
    assert large < 3 * small + 0.25  # doubling the input ~doubles the time (quadratic: 4x, 12 s -> 48 s)

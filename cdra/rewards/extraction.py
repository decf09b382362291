"""Answer extraction from model responses (GSM8K numbers, AQuA letters, MATH boxed content).

Everything here is linear-time string scanning or simple regexes: model output can be
adversarial (unbalanced braces, huge strings) and must never hang the extractor.
"""

from __future__ import annotations

import re
from typing import Literal

__all__ = [
    "last_boxed_only_string",
    "remove_boxed",
    "normalize_math_answer",
    "normalize_number",
    "extract_gsm8k_answer",
    "extract_aqua_answer",
    "extract_math_answer",
    "extract_answer",
    "gsm8k_gold_answer",
    "ANSWER_TRIGGER",
]

ANSWER_TRIGGER = "The answer is"
_TRIGGER_RE = re.compile(re.escape(ANSWER_TRIGGER), re.IGNORECASE)

_BOX_COMMANDS = ("\\boxed", "\\fbox")


# --------------------------------------------------------------------------- boxed


def last_boxed_only_string(text: str | None) -> str | None:
    """Return the last ``\\boxed{...}`` / ``\\fbox{...}`` / ``\\boxed X`` expression in `text`.

    The whole expression (command included) is returned, e.g. ``"\\boxed{\\frac{1}{2}}"``.
    Braces are matched with nesting; escaped braces (``\\{``, ``\\}``) are not counted. The last
    box command decides: if its braces never close, the result is None. The space form
    ``\\boxed 5`` runs to the next ``$`` or newline.
    """
    if not text:
        return None
    idx, cmd = -1, ""
    for c in _BOX_COMMANDS:
        i = text.rfind(c)
        if i > idx:
            idx, cmd = i, c
    if idx < 0:
        return None
    n = len(text)
    start = idx + len(cmd)
    pos = start
    # Allow whitespace between the command and its brace: "\boxed {5}".
    while pos < n and text[pos] in " \t":
        pos += 1
    if pos >= n or text[pos] != "{":
        if cmd == "\\boxed" and pos > start:
            # "\boxed 5" form: content runs to the next "$" or newline.
            j = pos
            while j < n and text[j] not in "$\n":
                j += 1
            content = text[pos:j].strip()
            return ("\\boxed " + content) if content else None
        return None
    depth = 0
    i = pos
    while i < n:
        ch = text[i]
        if ch == "\\":
            i += 2  # skip the escaped character (\{, \}, \\)
            continue
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return cmd + text[pos : i + 1]
        i += 1
    return None


def remove_boxed(s: str | None) -> str | None:
    """Strip the box command: ``"\\boxed{x}"`` -> ``"x"``, ``"\\boxed 5"`` -> ``"5"``.

    None stays None; a string that is not a box expression is returned stripped, unchanged.
    """
    if s is None:
        return None
    s = s.strip()
    for cmd in _BOX_COMMANDS:
        head = cmd + "{"
        if s.startswith(head) and s.endswith("}"):
            return s[len(head) : -1]
        # "\boxed {x}"
        if s.startswith(cmd):
            rest = s[len(cmd) :].lstrip(" \t")
            if rest.startswith("{") and rest.endswith("}"):
                return rest[1:-1]
    if s.startswith("\\boxed "):
        return s[len("\\boxed ") :].strip()
    return s


# ------------------------------------------------------------------ normalization

_TEXT_CMD = r"\\(?:text|textbf|textrm|mathrm|mbox)\s*\{([^{}]*)\}"
_TRAILING_UNIT_RE = re.compile(r"(?<=[0-9}\)\]])\s*" + _TEXT_CMD + r"\s*$")
_TEXT_RE = re.compile(_TEXT_CMD)
_CIRC_RE = re.compile(r"\^\s*\{?\s*\\circ\s*\}?|\\circ|°")
_LEFT_RIGHT_NULL_RE = re.compile(r"\\(?:left|right)\.")
_LEFT_RIGHT_RE = re.compile(r"\\(?:left|right)(?![A-Za-z])")
_THIN_SPACE_RE = re.compile(r"\\[!,;:]|\\\s")
_CMD_SPACE_RE = re.compile(r"(\\[A-Za-z]+)\s+(?=[A-Za-z])")
_WS_RE = re.compile(r"\s+")


def normalize_math_answer(s: str) -> str:
    """Light, meaning-preserving normalization of a MATH-style answer string.

    Removes ``\\left``/``\\right``, thin spaces (``\\!``, ``\\,``), ``$`` signs, degree marks,
    percent signs and trailing ``\\text{...}`` units; unwraps other ``\\text{X}``; maps
    ``\\dfrac``/``\\tfrac`` to ``\\frac``; drops whitespace (keeping one space where removing it
    would glue a command to a letter, as in ``\\pi r``) and trailing periods.
    """
    s = s.strip()
    s = _THIN_SPACE_RE.sub("", s)
    s = _LEFT_RIGHT_NULL_RE.sub("", s)
    s = _LEFT_RIGHT_RE.sub("", s)
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    s = _CIRC_RE.sub("", s)
    s = s.replace("\\%", "").replace("%", "")
    s = s.replace("\\$", "").replace("$", "")
    s = s.strip()
    s = _TRAILING_UNIT_RE.sub("", s)
    s = _TEXT_RE.sub(lambda m: m.group(1), s)
    s = _CMD_SPACE_RE.sub("\\1\x00", s)
    s = _WS_RE.sub("", s).replace("\x00", " ")
    s = s.rstrip(".")
    return s


# ---------------------------------------------------------------------- numbers

_NUMBER_FULL_RE = re.compile(r"([+-]?)(\d{1,3}(?:,\d{3})+|\d*)(?:\.(\d*))?")


def normalize_number(s: str | None) -> str | None:
    """Canonical decimal string for a plain number, or None if `s` is not one.

    Strips whitespace, ``$`` / ``\\$``, thousands commas ("1,234", also "1{,}234"), a
    trailing "." and redundant zeros: "$1,234.50" -> "1234.5", "14.0" -> "14", "+07" -> "7",
    "-0.0" -> "0". Only proper thousands grouping counts ("1,23" and "(1,2)" are not numbers);
    no exponents, fractions or units.
    """
    if s is None:
        return None
    t = s.strip().replace("\\$", "").replace("$", "")
    t = t.replace("{,}", ",").replace("\\!", "").replace("\\,", "").strip()
    m = _NUMBER_FULL_RE.fullmatch(t)
    if m is None:
        return None
    sign, intpart, frac = m.group(1), m.group(2), m.group(3) or ""
    if not intpart and not frac:
        return None
    intpart = intpart.replace(",", "").lstrip("0") or "0"
    frac = frac.rstrip("0")
    out = intpart + ("." + frac if frac else "")
    return "-" + out if sign == "-" and out != "0" else out


# A run of digits and commas (starting and ending with a digit) with optional decimals, or ".5";
# an optional minus (not right after a word char / dot, so "3-5" gives 3 and 5); not inside
# words ("x2"). Runs never overlap, so finditer is linear even on a 160 kB "1,2,3,...": the
# split into numbers happens per run (`_run_numbers`), with no backtracking regex.
_RUN_RE = re.compile(r"(?<![\w.])(?:-(?=[\d.]))?(?:\d(?:[\d,]*\d)?(?:\.\d+)?|\.\d+)")
_GROUPED_RE = re.compile(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?")
# where the answer sentence after the trigger ends, and words that hedge or negate it
_SENTENCE_END_RE = re.compile(r"[.!?](?=\s|$)|\n")
_HEDGE_RE = re.compile(r"\b(?:not|isn't|never|neither|nor|except|instead of|rather than)\b", re.IGNORECASE)


def _run_numbers(run: str) -> list[str]:
    """The numbers of one run: a proper thousands grouping is one number ("1,234.5" -> 1234.5),
    anything else splits at its commas ("1,23" -> 1 and 23; the sign stays on the first)."""
    if "," not in run or _GROUPED_RE.fullmatch(run):
        return [run.replace(",", "")]
    return [piece for piece in run.split(",") if piece]


def _numbers(text: str, start: int = 0, end: int | None = None) -> list[str]:
    end = len(text) if end is None else end
    return [n for m in _RUN_RE.finditer(text, start, end) for n in _run_numbers(m.group(0))]


def extract_gsm8k_answer(text: str | None, strict: bool = True) -> str | None:
    """First number after the last "The answer is" (case-insensitive); else the last number.

    Commas inside numbers are removed ("1,234" -> "1234"); negatives and decimals are kept as
    written ("-3.5"); a sentence-final period is not part of the number. ``strict`` (default):
    an answer sentence after the trigger that names two different values ("42 or 41") or
    hedges ("not 42") gives None, so a hedged answer earns nothing; ``strict=False`` takes its
    first number as upstream does. Linear time in ``len(text)``.
    """
    if not text:
        return None
    last = None
    for m in _TRIGGER_RE.finditer(text):
        last = m
    if last is not None:
        begin = last.end()
        while begin < len(text) and text[begin] in " \t\n:":
            begin += 1
        stop = _SENTENCE_END_RE.search(text, begin)
        sentence_end = stop.start() if stop else len(text)
        in_sentence = _numbers(text, begin, sentence_end)
        if in_sentence:
            if strict and (len({normalize_number(n) for n in in_sentence}) > 1 or _HEDGE_RE.search(text, begin, sentence_end)):
                return None
            return in_sentence[0]
        m = _RUN_RE.search(text, begin)
        if m:
            return _run_numbers(m.group(0))[0]
    nums = _numbers(text)
    return nums[-1] if nums else None


# ---------------------------------------------------------------------- letters

_PAREN_LETTER_RE = re.compile(r"\(\s*([A-Ja-j])\s*\)")
_BARE_LETTER_RE = re.compile(r"(?<![A-Za-z0-9\\])([A-J])(?![A-Za-z0-9])")
_OPTION_RE = re.compile(r"(?<![A-Za-z0-9\\])\(?([A-J])\)")
_BOXED_LETTER_RE = re.compile(r"^\s*(?:\\text\{)?\s*\(?([A-Ja-j])\)?\s*\}?\s*\.?\s*$")


def extract_aqua_answer(text: str | None) -> str | None:
    """Option letter A-J (upper case) from a multiple-choice response.

    Order: after the last "The answer is": a parenthesized letter "(c)" or else the first
    standalone capital letter; then a boxed letter; then the last option-like "(C)" / "C)" in
    the whole text. None if nothing is found.
    """
    if not text:
        return None
    last = None
    for m in _TRIGGER_RE.finditer(text):
        last = m
    if last is not None:
        tail = text[last.end() :]
        m = _PAREN_LETTER_RE.search(tail)
        m2 = _BARE_LETTER_RE.search(tail)
        # Prefer whichever comes first, so "is B (not (C))" gives B.
        cands = [x for x in (m, m2) if x is not None]
        if cands:
            return min(cands, key=lambda x: x.start()).group(1).upper()
    boxed = remove_boxed(last_boxed_only_string(text))
    if boxed is not None:
        m = _BOXED_LETTER_RE.match(boxed)
        if m:
            return m.group(1).upper()
    opts = _OPTION_RE.findall(text)
    return opts[-1].upper() if opts else None


# ------------------------------------------------------------------------- MATH


def extract_math_answer(text: str | None) -> str | None:
    """Normalized content of the last boxed expression (see `normalize_math_answer`).

    Without a box, falls back to the rest of the line after the last "The answer is".
    None when nothing is found or the answer is empty.
    """
    if not text:
        return None
    content = remove_boxed(last_boxed_only_string(text))
    if content is None:
        last = None
        for m in _TRIGGER_RE.finditer(text):
            last = m
        if last is None:
            return None
        content = text[last.end() :].split("\n", 1)[0].lstrip(" :")
    out = normalize_math_answer(content)
    return out or None


def extract_answer(
    text: str | None, kind: Literal["gsm8k", "math", "aqua", "mcq"]
) -> str | None:
    """Dispatch on the dataset kind."""
    if kind == "gsm8k":
        return extract_gsm8k_answer(text)
    if kind == "math":
        return extract_math_answer(text)
    if kind in ("aqua", "mcq"):
        return extract_aqua_answer(text)
    raise ValueError(f"unknown answer kind {kind!r}")


def gsm8k_gold_answer(answer_field: str) -> str | None:
    """Gold answer from a GSM8K ``answer`` field: the text after the last "####", commas
    removed and the number canonicalized ("1,234" -> "1234"). None without "####"."""
    if answer_field is None or "####" not in answer_field:
        return None
    raw = answer_field.rsplit("####", 1)[1].strip()
    num = normalize_number(raw)
    return num if num is not None else raw.replace(",", "")

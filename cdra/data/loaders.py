"""Dataset readers from local files (nothing is downloaded).

Supported storage: ``.jsonl``, ``.json`` (a list of objects, or an object holding exactly one
such list), ``.csv``, ``.parquet``, a Hugging Face ``datasets`` directory written by
``save_to_disk`` (``Dataset`` or ``DatasetDict``; the ``split`` picks from a ``DatasetDict``),
or a plain directory holding split files such as ``test.jsonl`` or
``train-00000-of-00001.parquet`` (files whose name starts with the split, concatenated in name
order).

Error design: every loader returns a :class:`LoadResult`, which *is* the ``list`` of
:class:`TaskExample` (a ``list`` subclass) and also carries ``skipped`` (number of malformed
rows dropped) and ``errors`` (their messages). With ``on_error="raise"`` (default) the first
malformed row raises :class:`DataError` naming the file and its 1-based row number (for
``.jsonl`` the line number); with ``on_error="skip"`` such rows are dropped, counted and a
warning is logged. A missing path raises ``FileNotFoundError`` naming it.

``limit`` stops reading after that many good rows, so malformed rows past the limit are never
seen.
"""

from __future__ import annotations

import csv
import json
import logging
import random
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from cdra.data.example import CHOICE_LETTERS, KINDS, TaskExample

logger = logging.getLogger(__name__)

ON_ERROR = ("raise", "skip")
_FILE_SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")
_MAX_STORED_ERRORS = 1000


class DataError(ValueError):
    """A malformed dataset row (or file). ``path`` and 1-based ``row`` say where."""

    def __init__(self, path, row: int | None, message: str):
        self.path = str(path)
        self.row = row
        self.reason = message
        where = self.path if row is None else f"{self.path}, row {row}"
        super().__init__(f"{where}: {message}")

    def __reduce__(self):  # keep it picklable (Ray ships exceptions between processes)
        return (type(self), (self.path, self.row, self.reason))


class LoadResult(list):
    """The loaded examples (this object is the list) plus a report of dropped rows."""

    def __init__(self, examples=(), skipped: int = 0, errors: list[str] | None = None):
        super().__init__(examples)
        self.skipped = skipped
        self.errors = list(errors or [])

    @property
    def examples(self) -> list[TaskExample]:
        return list(self)

    def __repr__(self) -> str:
        return f"LoadResult({len(self)} examples, skipped={self.skipped})"


class _RowError(Exception):
    """Raised by a row parser; turned into a DataError with file and row."""


# ----------------------------------------------------------------------------------------------
# Reading rows


@dataclass
class _BadRow:
    message: str


def _check_on_error(on_error: str) -> None:
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")


def _is_saved_dataset(path: Path) -> bool:
    return any((path / name).exists() for name in ("dataset_dict.json", "state.json"))


def _resolve_files(path: Path, split: str | None) -> list[Path]:
    """The data files to read for ``path`` (a file, or a directory of split files)."""
    if not path.exists():
        raise FileNotFoundError(f"dataset path not found: {path}")
    if path.is_file():
        if path.suffix not in _FILE_SUFFIXES:
            raise ValueError(f"unsupported dataset file type {path.suffix!r} ({path}); expected one of {_FILE_SUFFIXES}")
        return [path]
    split = split or "train"
    files = sorted(
        p for p in path.iterdir() if p.is_file() and p.suffix in _FILE_SUFFIXES and p.name.startswith(split)
    )
    if not files:
        raise FileNotFoundError(
            f"no {split!r} data files ({'/'.join(_FILE_SUFFIXES)}) and no saved dataset in directory {path}"
        )
    return files


def _iter_file(path: Path) -> Iterator[tuple[int, Any]]:
    suffix = path.suffix
    if suffix == ".jsonl":
        with open(path, encoding="utf-8") as f:
            for lineno, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    yield lineno, json.loads(line)
                except json.JSONDecodeError as e:
                    yield lineno, _BadRow(f"invalid JSON ({e.msg} at column {e.colno})")
    elif suffix == ".json":
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
        except json.JSONDecodeError as e:
            raise DataError(path, None, f"invalid JSON ({e.msg} at line {e.lineno})") from None
        if isinstance(data, dict):
            lists = [v for v in data.values() if isinstance(v, list)]
            if len(lists) != 1:
                raise DataError(path, None, "expected a JSON list of rows or an object holding one list")
            data = lists[0]
        if not isinstance(data, list):
            raise DataError(path, None, "expected a JSON list of rows")
        yield from enumerate(data, start=1)
    elif suffix == ".csv":
        with open(path, encoding="utf-8", newline="") as f:
            yield from enumerate(csv.DictReader(f), start=1)
    elif suffix == ".parquet":
        import pyarrow.parquet as pq

        try:
            parquet = pq.ParquetFile(path)
        except Exception as e:  # pyarrow raises ArrowInvalid and friends
            raise DataError(path, None, f"cannot read parquet: {e}") from None
        row = 0
        for batch in parquet.iter_batches(batch_size=1024):
            for record in batch.to_pylist():
                row += 1
                yield row, record
    else:  # pragma: no cover - guarded by _resolve_files
        raise ValueError(f"unsupported dataset file type {suffix!r} ({path})")


def _iter_rows(path, split: str | None) -> Iterator[tuple[Path, int, Any]]:
    path = Path(path)
    if path.is_dir() and _is_saved_dataset(path):
        import datasets

        ds = datasets.load_from_disk(str(path))
        if isinstance(ds, datasets.DatasetDict):
            names = list(ds.keys())
            if split is None:
                split = "train" if "train" in ds else (names[0] if len(names) == 1 else None)
            if split not in ds:
                raise ValueError(f"split {split!r} not in saved dataset {path}; available: {names}")
            ds = ds[split]
        for row, record in enumerate(ds, start=1):
            yield path, row, record
        return
    for file in _resolve_files(path, split):
        for row, record in _iter_file(file):
            yield file, row, record


def _load(
    path,
    parse: Callable[[dict, Path, int], TaskExample],
    *,
    on_error: str,
    limit: int | None,
    split: str | None,
) -> LoadResult:
    _check_on_error(on_error)
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0 or None, got {limit}")
    result = LoadResult()
    if limit == 0:
        return result
    for file, row, record in _iter_rows(path, split):
        try:
            if isinstance(record, _BadRow):
                raise _RowError(record.message)
            if not isinstance(record, dict):
                raise _RowError(f"expected an object, got {type(record).__name__}")
            example = parse(record, file, row)
        except _RowError as e:
            error = DataError(file, row, str(e))
            if on_error == "raise":
                raise error from None
            result.skipped += 1
            if len(result.errors) < _MAX_STORED_ERRORS:
                result.errors.append(str(error))
            continue
        result.append(example)
        if limit is not None and len(result) >= limit:
            break
    if result.skipped:
        logger.warning("skipped %d malformed rows in %s (first: %s)", result.skipped, path, result.errors[0])
    return result


def _get_str(record: dict, key: str) -> str:
    if key not in record or record[key] is None:
        raise _RowError(f"missing field {key!r}")
    value = record[key]
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise _RowError(f"field {key!r} must be a string or number, got {type(value).__name__}")
    text = str(value).strip() if isinstance(value, str) else _number_text(value)
    if not text:
        raise _RowError(f"field {key!r} is empty")
    return text


def _number_text(value: int | float) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _row_id(record: dict, prefix: str, file: Path, row: int, id_key: str | None = None) -> str:
    if id_key is not None:
        return _get_str(record, id_key)
    for key in ("id", "unique_id"):
        value = record.get(key)
        if isinstance(value, (str, int)) and not isinstance(value, bool) and str(value) != "":
            return str(value)
    stem = file.name.split(".")[0]
    return f"{prefix}-{stem}-{row - 1}"


# ----------------------------------------------------------------------------------------------
# Format-specific loaders


def load_gsm8k(path, on_error: str = "raise", *, limit: int | None = None, split: str | None = None) -> LoadResult:
    """GSM8K rows ``{"question", "answer"}``; gold = text after the last ``####`` with commas
    removed; solution = the text before it."""

    def parse(record: dict, file: Path, row: int) -> TaskExample:
        question = _get_str(record, "question")
        answer = _get_str(record, "answer")
        if "####" not in answer:
            raise _RowError("answer has no '####' marker")
        solution, _, gold = answer.rpartition("####")
        gold = gold.strip().replace(",", "")
        if not gold:
            raise _RowError("nothing after '####' in answer")
        return TaskExample(
            id=_row_id(record, "gsm8k", file, row),
            question=question,
            answer=gold,
            solution=solution.strip() or None,
            source="gsm8k",
            kind="gsm8k",
        )

    return _load(path, parse, on_error=on_error, limit=limit, split=split)


def _last_boxed_only_string(text: str) -> str | None:
    """Fallback for ``cdra.rewards.extraction.last_boxed_only_string`` (same behaviour): the
    last ``\\boxed{...}``/``\\fbox{...}`` with nested braces matched (escaped braces not
    counted), or the space form ``\\boxed 5`` running to the next ``$`` or newline."""
    idx, cmd = -1, ""
    for c in ("\\boxed", "\\fbox"):
        i = text.rfind(c)
        if i > idx:
            idx, cmd = i, c
    if idx < 0:
        return None
    pos = idx + len(cmd)
    if text.startswith(" ", pos) and cmd == "\\boxed":
        content = re.split(r"[$\n]", text[pos + 1 :], maxsplit=1)[0].strip()
        return "\\boxed " + content if content else None
    while pos < len(text) and text[pos] in " \t":
        pos += 1
    if pos >= len(text) or text[pos] != "{":
        return None
    depth, i = 0, pos
    while i < len(text):
        if text[i] == "\\":
            i += 2
            continue
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return cmd + text[pos : i + 1]
        i += 1
    return None


def _remove_boxed(boxed: str) -> str:
    if boxed.startswith("\\boxed "):
        return boxed[len("\\boxed ") :]
    return boxed[boxed.index("{") + 1 : -1]


try:  # one implementation with the reward extractors, so gold and prediction agree
    from cdra.rewards.extraction import last_boxed_only_string as _last_boxed
    from cdra.rewards.extraction import remove_boxed as _unbox
except ImportError:  # pragma: no cover - rewards not installed alongside
    _last_boxed, _unbox = _last_boxed_only_string, _remove_boxed


def boxed_answer(text: str) -> str | None:
    """Content of the last ``\\boxed{}`` in ``text`` (braces matched), or None."""
    boxed = _last_boxed(text)
    if boxed is None:
        return None
    content = (_unbox(boxed) or "").strip()
    return content or None


def load_math(path, on_error: str = "raise", *, limit: int | None = None, split: str | None = None) -> LoadResult:
    """MATH rows ``{"problem", "solution"}``; gold = content of the last ``\\boxed{}`` in the
    solution (falling back to an ``answer`` field when the solution has no box)."""

    def parse(record: dict, file: Path, row: int) -> TaskExample:
        problem = _get_str(record, "problem")
        solution = _get_str(record, "solution")
        gold = boxed_answer(solution)
        if gold is None and record.get("answer") not in (None, ""):
            gold = _get_str(record, "answer")
        if gold is None:
            raise _RowError("solution has no \\boxed{} answer")
        return TaskExample(
            id=_row_id(record, "math", file, row),
            question=problem,
            answer=gold,
            solution=solution,
            source="math",
            kind="math",
        )

    return _load(path, parse, on_error=on_error, limit=limit, split=split)


_OPTION_RE = re.compile(r"^\s*\(?([A-Ja-j])\s*[).:]\s*(.*)$", re.DOTALL)


def _parse_options(options: Any) -> tuple[str, ...]:
    if not isinstance(options, (list, tuple)) or not options:
        raise _RowError("field 'options' must be a non-empty list")
    if len(options) > len(CHOICE_LETTERS):
        raise _RowError(f"at most {len(CHOICE_LETTERS)} options are supported, got {len(options)}")
    texts = []
    for i, option in enumerate(options):
        if not isinstance(option, str):
            raise _RowError(f"option {i + 1} is not a string")
        match = _OPTION_RE.match(option)
        if match is not None:
            if match.group(1).upper() != CHOICE_LETTERS[i]:
                raise _RowError(f"option {i + 1} is labelled {match.group(1)!r}, expected {CHOICE_LETTERS[i]!r}")
            option = match.group(2)
        texts.append(option.strip())
    return tuple(texts)


def format_options(choices: tuple[str, ...], label: str = "Answer Choices:") -> str:
    """``"Answer Choices: (A) 12 (B) 14"``."""
    return " ".join([label] + [f"({CHOICE_LETTERS[i]}) {c}" for i, c in enumerate(choices)])


def load_aqua(
    path,
    on_error: str = "raise",
    *,
    limit: int | None = None,
    split: str | None = None,
    include_options: bool = True,
) -> LoadResult:
    """AQuA-RAT rows ``{"question", "options": ["A)12", ...], "correct": "A", "rationale"?}``.

    The question text gets ``"\\nAnswer Choices: (A) 12 (B) ..."`` appended (unless
    ``include_options`` is False); ``choices`` holds the option texts without letters and the
    gold is the letter; ``rationale`` becomes the solution.
    """

    def parse(record: dict, file: Path, row: int) -> TaskExample:
        question = _get_str(record, "question")
        if "options" not in record or record["options"] is None:
            raise _RowError("missing field 'options'")
        choices = _parse_options(record["options"])
        correct = _get_str(record, "correct").strip("() ").upper()
        if len(correct) != 1 or correct not in CHOICE_LETTERS[: len(choices)]:
            raise _RowError(f"correct answer {record['correct']!r} is not one of the option letters")
        rationale = record.get("rationale")
        if include_options:
            question = f"{question}\n{format_options(choices)}"
        return TaskExample(
            id=_row_id(record, "aqua", file, row),
            question=question,
            answer=correct,
            solution=rationale.strip() if isinstance(rationale, str) and rationale.strip() else None,
            choices=choices,
            source="aqua",
            kind="aqua",
        )

    return _load(path, parse, on_error=on_error, limit=limit, split=split)


def load_table(
    path,
    question_key: str,
    answer_key: str,
    id_key: str | None = None,
    solution_key: str | None = None,
    kind: str = "gsm8k",
    on_error: str = "raise",
    *,
    choices_key: str | None = None,
    limit: int | None = None,
    split: str | None = None,
    source: str | None = None,
) -> LoadResult:
    """Any table with a question and an answer column (see the module docstring for formats).

    Numbers are turned into text (``3.0`` -> ``"3"``). ``choices_key`` names a list column of
    option texts (letters stripped if present) for "aqua"/"mcq" kinds; the question is used
    as is.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    source = source if source is not None else Path(path).name.split(".")[0]

    def parse(record: dict, file: Path, row: int) -> TaskExample:
        question = _get_str(record, question_key)
        answer = _get_str(record, answer_key)
        solution = None
        if solution_key is not None:
            solution = _get_str(record, solution_key)
        choices = None
        if choices_key is not None:
            if choices_key not in record or record[choices_key] is None:
                raise _RowError(f"missing field {choices_key!r}")
            choices = _parse_options(record[choices_key])
        return TaskExample(
            id=_row_id(record, source, file, row, id_key),
            question=question,
            answer=answer,
            solution=solution,
            choices=choices,
            source=source,
            kind=kind,
        )

    return _load(path, parse, on_error=on_error, limit=limit, split=split)


# ----------------------------------------------------------------------------------------------
# Specs

FORMATS = ("synthetic", "synthetic_mcq", "gsm8k", "math", "aqua", "table")


@dataclass(frozen=True)
class DatasetSpec:
    """What to load. ``format`` picks the reader; the other fields apply where they make sense.

    - file formats (gsm8k, math, aqua, table): ``path`` (required), ``split`` (a split of a
      saved ``DatasetDict`` or of a directory of split files; ignored for a single file),
      ``on_error``; table also uses the ``*_key`` column mapping and ``kind``.
    - synthetic, synthetic_mcq: ``num_examples`` problems of ``split`` from ``seed`` with the
      difficulty knobs ``num_steps``, ``max_operand``, ``ops``, ``max_value``
      (``num_choices`` for MCQ).
    - all: ``shuffle`` (deterministic with ``seed``) then ``limit`` (keep the first N).
    """

    format: str = "synthetic"
    path: str | None = None
    split: str = "train"
    limit: int | None = None
    on_error: str = "raise"
    shuffle: bool = False
    seed: int = 0
    # table column mapping
    question_key: str = "question"
    answer_key: str = "answer"
    id_key: str | None = None
    solution_key: str | None = None
    choices_key: str | None = None
    kind: str = "gsm8k"
    # synthetic task
    num_examples: int = 1000
    num_steps: int = 2
    max_operand: int = 9
    ops: tuple[str, ...] = ("+", "-", "*")
    max_value: int = 99
    num_choices: int = 5

    def __post_init__(self) -> None:
        object.__setattr__(self, "ops", tuple(self.ops))
        if self.format not in FORMATS:
            raise ValueError(f"dataset format must be one of {FORMATS}, got {self.format!r}")
        _check_on_error(self.on_error)
        if self.format not in ("synthetic", "synthetic_mcq") and not self.path:
            raise ValueError(f"dataset format {self.format!r} needs a path")
        if self.limit is not None and self.limit < 0:
            raise ValueError(f"limit must be >= 0 or None, got {self.limit}")
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")

    @classmethod
    def from_dict(cls, data: dict) -> DatasetSpec:
        valid = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - valid)
        if unknown:
            raise ValueError(f"unknown dataset spec keys {unknown}; valid keys: {sorted(valid)}")
        return cls(**data)

    def synthetic_config(self):
        from cdra.data.synthetic import SyntheticConfig

        return SyntheticConfig(
            num_steps=self.num_steps, max_operand=self.max_operand, ops=self.ops, max_value=self.max_value
        )


def load_dataset_spec(spec: dict | DatasetSpec) -> LoadResult:
    """Load what ``spec`` describes (a :class:`DatasetSpec` or a dict of its fields)."""
    if isinstance(spec, dict):
        spec = DatasetSpec.from_dict(spec)
    # With shuffling the whole file is read before the limit applies.
    read_limit = None if spec.shuffle else spec.limit
    if spec.format in ("synthetic", "synthetic_mcq"):
        from cdra.data import synthetic

        n = spec.num_examples if read_limit is None else min(spec.num_examples, read_limit)
        if spec.format == "synthetic":
            examples = synthetic.make_examples(n, spec.seed, spec.synthetic_config(), spec.split)
        else:
            examples = synthetic.make_mcq_examples(
                n, spec.seed, spec.synthetic_config(), spec.split, num_choices=spec.num_choices
            )
        result = LoadResult(examples)
    elif spec.format == "table":
        result = load_table(
            spec.path,
            spec.question_key,
            spec.answer_key,
            id_key=spec.id_key,
            solution_key=spec.solution_key,
            kind=spec.kind,
            on_error=spec.on_error,
            choices_key=spec.choices_key,
            limit=read_limit,
            split=spec.split,
        )
    else:
        loader = {"gsm8k": load_gsm8k, "math": load_math, "aqua": load_aqua}[spec.format]
        result = loader(spec.path, spec.on_error, limit=read_limit, split=spec.split)
    if spec.shuffle:
        random.Random(f"cdra-dataset-shuffle:{spec.seed}").shuffle(result)
    if spec.limit is not None and len(result) > spec.limit:
        del result[spec.limit :]
    return result

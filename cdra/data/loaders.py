"""Dataset readers from local files (nothing is downloaded).

Files are read by Hugging Face ``datasets``: ``.jsonl`` / ``.json`` (a list of objects, or an
object holding exactly one such list), ``.csv`` and ``.parquet``
through ``load_dataset``, a directory written by ``save_to_disk`` (``Dataset`` or
``DatasetDict``; ``split`` picks from a ``DatasetDict``) through ``load_from_disk``, or a plain
directory of split files such as ``test.jsonl`` or ``train-00000-of-00001.parquet`` (files
whose name starts with the split, concatenated in name order). The Hub is never contacted
(``HF_DATASETS_OFFLINE=1`` unless set otherwise) and the Arrow copies ``load_dataset`` makes
go to a temporary directory that is removed after loading, never next to the data.

This module keeps what ``datasets`` does not do: the format-specific parsing (GSM8K ``####``,
MATH ``\\boxed{}``, AQuA options) and errors that name the row. Every loader returns a
:class:`LoadResult`, which *is* the ``list`` of :class:`TaskExample` (a ``list`` subclass) and
also carries ``skipped`` (number of malformed rows dropped) and ``errors`` (their messages).
With ``on_error="raise"`` (default) the first malformed row raises :class:`DataError` naming
the file and its 1-based row number (for ``.jsonl`` the line number); with ``on_error="skip"``
such rows are dropped, counted and a warning is logged. A line of a ``.jsonl`` file that is not
UTF-8, not JSON or not an object is such a row. A missing path raises ``FileNotFoundError``
naming it; a file that cannot be read at all raises ``DataError`` naming it.

``limit`` stops parsing after that many good rows, so malformed rows past the limit are never
reported.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import re
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

# Read when `datasets` is first imported: local files only, the Hub is never asked.
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

from cdra.data.example import CHOICE_LETTERS, KINDS, TaskExample  # noqa: E402
from cdra.rewards.extraction import last_boxed_only_string, remove_boxed  # noqa: E402

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

_BUILDERS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}


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


@contextlib.contextmanager
def _datasets():
    """`datasets` without its progress bars and its log line for a file it fails on (we raise a
    DataError naming the file instead); both settings are restored afterwards."""
    import datasets

    bars = datasets.is_progress_bar_enabled()
    lib_logger = logging.getLogger("datasets")
    level = lib_logger.level
    datasets.disable_progress_bars()
    lib_logger.setLevel(logging.CRITICAL)
    try:
        yield datasets
    finally:
        lib_logger.setLevel(level)
        if bars:
            datasets.enable_progress_bars()


def _load_file(file: Path, **options: Any):
    """One file as an in-memory ``datasets.Dataset``; its Arrow cache lives only in a temporary dir."""
    try:
        with _datasets() as datasets, tempfile.TemporaryDirectory(prefix="cdra-datasets-") as cache:
            return datasets.load_dataset(_BUILDERS[file.suffix], data_files=str(file), split="train",
                                         cache_dir=cache, keep_in_memory=True, **options)
    except Exception as e:  # datasets wraps pyarrow, pandas and decoding errors differently per format
        raise DataError(file, None, f"cannot read: {_root_cause(e)}") from None


def _root_cause(error: BaseException) -> str:
    while error.__cause__ is not None or (error.__context__ is not None and not error.__suppress_context__):
        error = error.__cause__ or error.__context__
    return " ".join(str(error).split()) or type(error).__name__


def _single_list_field(ds) -> str | None:
    """The field of a ``.json`` object that holds the rows (``{"data": [{...}, ...]}``), if that is its shape."""
    if ds.num_rows != 1 or len(ds.column_names) != 1:
        return None
    name = ds.column_names[0]
    value = ds[0][name]
    return name if isinstance(value, list) and all(isinstance(v, dict) for v in value) else None


def _scan_jsonl(file: Path) -> tuple[list[int], list[tuple[int, str]]]:
    """(line numbers of the good lines, (line number, reason) of each bad one); blank lines are neither.

    `datasets` reports a bad line, if at all, for the whole file (pyarrow even passes a latin-1
    byte through to the first read of that row); this names the lines, so they can be reported
    or skipped one by one.
    """
    good, bad = [], []
    with open(file, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            try:
                value = json.loads(raw.decode("utf-8"))
            except UnicodeDecodeError as e:
                bad.append((lineno, f"not UTF-8 (byte 0x{raw[e.start]:02x} at column {e.start + 1}); re-encode the file as UTF-8"))
                continue
            except json.JSONDecodeError as e:
                bad.append((lineno, f"invalid JSON ({e.msg} at column {e.colno})"))
                continue
            if isinstance(value, dict):
                good.append(lineno)
            else:
                bad.append((lineno, f"expected an object, got {type(value).__name__}"))
    return good, bad


def _jsonl_with_bad_lines(file: Path, good: list[int], bad: list[tuple[int, str]]) -> list[tuple[int, Any]]:
    """The good lines loaded from a copy that holds only them, the bad ones as `_BadRow`s, in line
    order (so ``limit`` and ``on_error`` act on them as on any row)."""
    rows: list[tuple[int, Any]] = [(line, _BadRow(reason)) for line, reason in bad]
    if good:
        keep = set(good)
        with tempfile.TemporaryDirectory(prefix="cdra-jsonl-") as tmp:
            copy = Path(tmp) / file.name
            with open(file, "rb") as src, open(copy, "wb") as dst:
                dst.writelines(raw for lineno, raw in enumerate(src, start=1) if lineno in keep)
            try:
                rows += zip(good, _load_file(copy))
            except DataError as e:
                raise DataError(file, None, e.reason) from None
    return sorted(rows, key=lambda row: row[0])


def _file_rows(file: Path) -> Iterator[tuple[int, Any]]:
    """(1-based row, record) of one data file; for ``.jsonl`` the row is the line number."""
    if file.suffix == ".jsonl":
        good, bad = _scan_jsonl(file)
        if bad:
            yield from _jsonl_with_bad_lines(file, good, bad)
            return
    ds = _load_file(file)
    if file.suffix == ".json" and (name := _single_list_field(ds)) is not None:
        ds = _load_file(file, field=name)
    rows = good if file.suffix == ".jsonl" else range(1, ds.num_rows + 1)
    yield from zip(rows, ds)


def _iter_rows(path, split: str | None) -> Iterator[tuple[Path, int, Any]]:
    path = Path(path)
    if path.is_dir() and _is_saved_dataset(path):
        with _datasets() as datasets:
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
        for row, record in _file_rows(file):
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


def boxed_answer(text: str) -> str | None:
    """Content of the last ``\\boxed{}`` in ``text`` (braces matched), or None; the reward extractors' rule, so
    gold and prediction agree."""
    boxed = last_boxed_only_string(text)
    if boxed is None:
        return None
    content = (remove_boxed(boxed) or "").strip()
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

FORMATS = ("synthetic", "synthetic_mcq", "gsm8k", "math", "aqua", "table", "prm800k", "math_shepherd")


@dataclass(frozen=True)
class DatasetSpec:
    """What to load. ``format`` picks the reader; the other fields apply where they make sense.

    - file formats (gsm8k, math, aqua, table): ``path`` (required), ``split`` (a split of a
      saved ``DatasetDict`` or of a directory of split files; ignored for a single file),
      ``on_error``; table also uses the ``*_key`` column mapping and ``kind``.
    - step-labelled files (prm800k, math_shepherd; `cdra.data.step_labels`): one example per
      labelled step, ``question`` the generative step judge's prompt for it, ``solution`` the
      judge's target " **SCORE:** s" (for `jobs/sft.py` with ``prompt_template=question_only``);
      ``limit`` counts steps.
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
        if self.limit is not None and self.limit < 0:
            raise ValueError(f"limit must be >= 0 or None, got {self.limit}")
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")

    def validate(self) -> None:
        """Checks across fields, run by the config loader once every override is applied (so
        ``train_data.format=gsm8k train_data.path=...`` works in either order) and before loading."""
        if self.format not in ("synthetic", "synthetic_mcq") and not self.path:
            raise ValueError(f"dataset format {self.format!r} needs a path")

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
    spec.validate()
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
    elif spec.format in ("prm800k", "math_shepherd"):
        from cdra.data.step_labels import step_judge_examples

        result = step_judge_examples(spec.path, spec.format, spec.on_error, split=spec.split)
    else:
        loader = {"gsm8k": load_gsm8k, "math": load_math, "aqua": load_aqua}[spec.format]
        result = loader(spec.path, spec.on_error, limit=read_limit, split=spec.split)
    if spec.shuffle:
        random.Random(f"cdra-dataset-shuffle:{spec.seed}").shuffle(result)
    if spec.limit is not None and len(result) > spec.limit:
        del result[spec.limit :]
    return result

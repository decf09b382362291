import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cdra.data import (
    DataError,
    DatasetSpec,
    LoadResult,
    SyntheticConfig,
    TaskExample,
    boxed_answer,
    load_aqua,
    load_dataset_spec,
    load_gsm8k,
    load_math,
    load_table,
    make_examples,
    make_mcq_examples,
)

GSM8K_ROWS = [
    {"question": "Tom has 3 apples and buys 4. How many?", "answer": "3+4=<<3+4=7>>7\n#### 7"},
    {"question": "A farm has 1,200 cows and sells none.", "answer": "Nothing changes.\n#### 1,200"},
]
MATH_ROWS = [
    {"problem": "What is $1+1$?", "solution": "We have $1+1=\\boxed{2}$."},
    {
        "problem": "Simplify $\\frac{2}{4}$.",
        "solution": "First \\boxed{x}, then $\\boxed{\\frac{1}{2}}$.",
        "level": "Level 1",
    },
]
AQUA_ROWS = [
    {
        "question": "What is 2+3?",
        "options": ["A)4", "B)5", "C)6", "D)7", "E)8"],
        "rationale": "2+3=5\nANSWER: B",
        "correct": "B",
    },
    {"question": "What is 3*3?", "options": ["A) 6", "B) 9"], "rationale": "", "correct": "b"},
]


def write_jsonl(path, rows, extra_lines=()):
    lines = [json.dumps(r) for r in rows] + list(extra_lines)
    path.write_text("\n".join(lines) + "\n")
    return path


def write_parquet(path, rows):
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


@pytest.fixture(params=["jsonl", "parquet"])
def fmt(request):
    return request.param


def write(tmp_path, name, rows, fmt):
    if fmt == "jsonl":
        return write_jsonl(tmp_path / f"{name}.jsonl", rows)
    return write_parquet(tmp_path / f"{name}.parquet", rows)


def test_load_gsm8k(tmp_path, fmt):
    path = write(tmp_path, "test", GSM8K_ROWS, fmt)
    result = load_gsm8k(path)
    assert isinstance(result, LoadResult) and isinstance(result, list)
    assert result.skipped == 0 and result.errors == []
    assert result == [
        TaskExample("gsm8k-test-0", GSM8K_ROWS[0]["question"], "7", "3+4=<<3+4=7>>7", source="gsm8k"),
        TaskExample("gsm8k-test-1", GSM8K_ROWS[1]["question"], "1200", "Nothing changes.", source="gsm8k"),
    ]
    assert load_gsm8k(path, limit=1).examples == result[:1]


def test_load_math(tmp_path, fmt):
    path = write(tmp_path, "math", MATH_ROWS, fmt)
    result = load_math(path)
    assert [e.answer for e in result] == ["2", "\\frac{1}{2}"]
    assert all(e.kind == "math" and e.source == "math" for e in result)
    assert result[0].question == "What is $1+1$?"
    assert result[1].solution == MATH_ROWS[1]["solution"]


BOXED_CASES = [
    ("a \\boxed{1} b \\boxed{\\frac{a}{b}} c", "\\frac{a}{b}"),
    ("\\fbox{3}", "3"),
    ("so \\boxed 5$.", "5"),
    ("\\boxed{\\{1, 2\\}}", "\\{1, 2\\}"),
    ("no box", None),
    ("\\boxed{unclosed", None),
]


@pytest.mark.parametrize("text,expected", BOXED_CASES)
def test_boxed_answer(text, expected):
    assert boxed_answer(text) == expected


def test_load_aqua(tmp_path, fmt):
    path = write(tmp_path, "aqua", AQUA_ROWS, fmt)
    result = load_aqua(path)
    first, second = result
    assert first.answer == "B" and second.answer == "B"
    assert first.choices == ("4", "5", "6", "7", "8")
    assert first.question == "What is 2+3?\nAnswer Choices: (A) 4 (B) 5 (C) 6 (D) 7 (E) 8"
    assert first.solution == "2+3=5\nANSWER: B"
    assert second.solution is None and second.choices == ("6", "9")
    assert first.kind == "aqua"
    assert load_aqua(path, include_options=False)[0].question == "What is 2+3?"


def test_load_table_formats(tmp_path):
    rows = [
        {"uid": "a", "q": "1+1?", "a": 2, "why": "one and one"},
        {"uid": "b", "q": "2+2?", "a": 4.0, "why": "two and two"},
    ]
    expected = [
        TaskExample("a", "1+1?", "2", "one and one", source="t"),
        TaskExample("b", "2+2?", "4", "two and two", source="t"),
    ]
    jsonl = write_jsonl(tmp_path / "t.jsonl", rows)
    parquet = write_parquet(tmp_path / "t.parquet", rows)
    js = tmp_path / "t.json"
    js.write_text(json.dumps({"data": rows}))
    csv_path = tmp_path / "t.csv"
    csv_path.write_text("uid,q,a,why\na,1+1?,2,one and one\nb,2+2?,4,two and two\n")
    for path in (jsonl, parquet, js, csv_path):
        got = load_table(path, "q", "a", id_key="uid", solution_key="why")
        assert got == expected, path
    # default ids and the kind
    got = load_table(jsonl, "q", "a", kind="math")
    assert [e.id for e in got] == ["t-t-0", "t-t-1"] and got[0].kind == "math"
    with pytest.raises(ValueError, match="kind"):
        load_table(jsonl, "q", "a", kind="bogus")


def test_load_table_choices(tmp_path):
    rows = [{"question": "Pick", "label": "C", "opts": ["x", "y", "z"]}]
    path = write_jsonl(tmp_path / "mcq.jsonl", rows)
    (ex,) = load_table(path, "question", "label", kind="mcq", choices_key="opts")
    assert ex.choices == ("x", "y", "z") and ex.answer == "C" and ex.kind == "mcq"


def test_load_saved_hf_dataset(tmp_path):
    datasets = pytest.importorskip("datasets")
    rows = {"question": ["1+1?", "2+3?"], "answer": ["x\n#### 2", "y\n#### 5"]}
    single = tmp_path / "single"
    datasets.Dataset.from_dict(rows).save_to_disk(str(single))
    got = load_table(single, "question", "answer")
    assert [e.answer for e in got] == ["x\n#### 2", "y\n#### 5"]
    assert [e.answer for e in load_gsm8k(single)] == ["2", "5"]
    dd = tmp_path / "dict"
    datasets.DatasetDict(
        train=datasets.Dataset.from_dict(rows),
        test=datasets.Dataset.from_dict({"question": ["9?"], "answer": ["#### 9"]}),
    ).save_to_disk(str(dd))
    assert [e.answer for e in load_gsm8k(dd)] == ["2", "5"]
    assert [e.answer for e in load_gsm8k(dd, split="test")] == ["9"]
    spec = load_dataset_spec({"format": "gsm8k", "path": str(dd), "split": "test"})
    assert [e.answer for e in spec] == ["9"]
    with pytest.raises(ValueError, match="available"):
        load_gsm8k(dd, split="validation")


def test_directory_of_split_files(tmp_path):
    d = tmp_path / "gsm8k"
    d.mkdir()
    write_parquet(d / "train-00000-of-00001.parquet", GSM8K_ROWS)
    write_jsonl(d / "test.jsonl", GSM8K_ROWS[:1])
    assert len(load_gsm8k(d)) == 2
    assert len(load_gsm8k(d, split="test")) == 1
    with pytest.raises(FileNotFoundError, match="validation"):
        load_gsm8k(d, split="validation")


def test_missing_path(tmp_path):
    missing = tmp_path / "nope.jsonl"
    for loader in (load_gsm8k, load_math, load_aqua):
        with pytest.raises(FileNotFoundError, match="nope.jsonl"):
            loader(missing)
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        load_table(missing, "q", "a")
    with pytest.raises(ValueError, match="unsupported"):
        load_table(write_jsonl(tmp_path / "x.txt", []), "q", "a")


def test_malformed_jsonl_rows(tmp_path):
    path = write_jsonl(
        tmp_path / "bad.jsonl",
        GSM8K_ROWS[:1],
        extra_lines=[
            "{not json",  # row 2
            json.dumps({"question": "no marker", "answer": "7"}),  # row 3
            json.dumps({"answer": "#### 1"}),  # row 4: missing question
            json.dumps(GSM8K_ROWS[1]),  # row 5: fine
            json.dumps([1, 2]),  # row 6: not an object
        ],
    )
    with pytest.raises(DataError) as info:
        load_gsm8k(path)
    err = info.value
    assert isinstance(err, ValueError)
    assert err.row == 2 and "bad.jsonl" in str(err) and "row 2" in str(err)
    result = load_gsm8k(path, on_error="skip")
    assert [e.answer for e in result] == ["7", "1200"]
    assert result.skipped == 4
    assert len(result.errors) == 4
    assert ["row 2" in result.errors[0], "row 3" in result.errors[1], "row 4" in result.errors[2]] == [True] * 3
    assert "'####'" in result.errors[1] and "'question'" in result.errors[2] and "row 6" in result.errors[3]
    with pytest.raises(ValueError, match="on_error"):
        load_gsm8k(path, on_error="ignore")


def test_malformed_parquet_rows(tmp_path):
    rows = MATH_ROWS + [{"problem": "no box", "solution": "it is 3"}, {"problem": None, "solution": "\\boxed{1}"}]
    path = write_parquet(tmp_path / "m.parquet", rows)
    with pytest.raises(DataError, match=r"m\.parquet, row 3: .*boxed"):
        load_math(path)
    result = load_math(path, on_error="skip")
    assert len(result) == 2 and result.skipped == 2
    assert "row 4" in result.errors[1] and "'problem'" in result.errors[1]


def test_malformed_aqua_rows(tmp_path):
    rows = [
        {"question": "q", "options": ["A)1", "B)2"], "correct": "C"},
        {"question": "q", "options": ["A)1", "C)2"], "correct": "A"},
        {"question": "q", "correct": "A"},
    ]
    path = write_jsonl(tmp_path / "aq.jsonl", rows)
    with pytest.raises(DataError, match=r"aq\.jsonl, row 1: .*option letters"):
        load_aqua(path)
    result = load_aqua(path, on_error="skip")
    assert len(result) == 0 and result.skipped == 3


def test_limit_stops_before_bad_rows(tmp_path):
    path = write_jsonl(tmp_path / "g.jsonl", GSM8K_ROWS, extra_lines=["{broken"])
    assert len(load_gsm8k(path, limit=2)) == 2
    with pytest.raises(DataError, match="row 3"):
        load_gsm8k(path)


def test_dataset_spec_dispatch(tmp_path):
    gsm = write_jsonl(tmp_path / "gsm.jsonl", GSM8K_ROWS)
    math = write_parquet(tmp_path / "math.parquet", MATH_ROWS)
    aqua = write_jsonl(tmp_path / "aqua.jsonl", AQUA_ROWS)
    assert load_dataset_spec({"format": "gsm8k", "path": str(gsm)}) == load_gsm8k(gsm)
    assert load_dataset_spec(DatasetSpec(format="math", path=str(math), limit=1)) == load_math(math)[:1]
    assert load_dataset_spec({"format": "aqua", "path": str(aqua)}) == load_aqua(aqua)
    table = load_dataset_spec(
        {"format": "table", "path": str(gsm), "question_key": "question", "answer_key": "answer", "kind": "math"}
    )
    assert table[0].answer == GSM8K_ROWS[0]["answer"] and table[0].kind == "math"

    synth = load_dataset_spec({"format": "synthetic", "num_examples": 30, "split": "test", "seed": 3, "num_steps": 3})
    assert synth == make_examples(30, 3, SyntheticConfig(num_steps=3), "test")
    limited = load_dataset_spec({"format": "synthetic", "num_examples": 30, "limit": 5})
    assert limited == make_examples(5, 0)
    mcq = load_dataset_spec({"format": "synthetic_mcq", "num_examples": 4, "num_choices": 3, "ops": ["+", "-"]})
    assert mcq == make_mcq_examples(4, 0, SyntheticConfig(ops=("+", "-")), "train", num_choices=3)

    shuffled = load_dataset_spec({"format": "synthetic", "num_examples": 50, "shuffle": True, "seed": 1, "limit": 10})
    again = load_dataset_spec({"format": "synthetic", "num_examples": 50, "shuffle": True, "seed": 1, "limit": 10})
    assert shuffled == again and len(shuffled) == 10
    assert shuffled != make_examples(50, 1)[:10]

    bad = write_jsonl(tmp_path / "bad.jsonl", GSM8K_ROWS, extra_lines=["{x"])
    skipped = load_dataset_spec({"format": "gsm8k", "path": str(bad), "on_error": "skip"})
    assert len(skipped) == 2 and skipped.skipped == 1


def test_dataset_spec_validation():
    with pytest.raises(ValueError, match="unknown dataset spec keys"):
        load_dataset_spec({"format": "gsm8k", "path": "x", "colums": {}})
    with pytest.raises(ValueError, match="format"):
        DatasetSpec(format="csv")
    with pytest.raises(ValueError, match="needs a path"):
        DatasetSpec(format="gsm8k").validate()
    with pytest.raises(ValueError, match="needs a path"):
        load_dataset_spec({"format": "gsm8k"})
    with pytest.raises(ValueError, match="on_error"):
        DatasetSpec(on_error="warn")


def test_results_and_errors_pickle():
    import pickle

    result = LoadResult(make_examples(2, 0), skipped=1, errors=["f, row 2: bad"])
    back = pickle.loads(pickle.dumps(result))
    assert back == result and back.skipped == 1 and back.errors == result.errors
    err = pickle.loads(pickle.dumps(DataError("f.jsonl", 3, "bad row")))
    assert (err.path, err.row, str(err)) == ("f.jsonl", 3, "f.jsonl, row 3: bad row")


def test_latin1_byte_names_file_and_row_or_is_skipped(tmp_path):
    path = tmp_path / "latin.jsonl"
    lines = [json.dumps(r).encode() for r in GSM8K_ROWS]
    latin = json.dumps({"question": "Un café coûte 3 euros. Combien pour 2?", "answer": "#### 6"}, ensure_ascii=False)
    path.write_bytes(b"\n".join([lines[0], latin.encode("latin-1"), lines[1]]) + b"\n")
    with pytest.raises(DataError) as info:
        load_gsm8k(path)
    message = str(info.value)
    assert info.value.row == 2 and "\n" not in message
    assert message.startswith(f"{path}, row 2: not UTF-8 (byte 0xe9 at column 21)")
    result = load_gsm8k(path, on_error="skip")
    assert [e.answer for e in result] == ["7", "1200"] and result.skipped == 1
    assert [e.id for e in result] == ["gsm8k-latin-0", "gsm8k-latin-2"]  # rows keep their line numbers
    assert len(load_gsm8k(path, limit=1)) == 1  # the bad row lies past the limit


def test_unreadable_file_is_named(tmp_path):
    path = tmp_path / "broken.parquet"
    path.write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(DataError, match=r"broken\.parquet: cannot read") as info:
        load_math(path)
    assert info.value.row is None and "\n" not in str(info.value)


def test_loading_writes_nothing_next_to_the_data(tmp_path, fmt):
    data = tmp_path / "data"
    data.mkdir()
    write(data, "train", GSM8K_ROWS, fmt)
    write_jsonl(data / "test.jsonl", GSM8K_ROWS, extra_lines=["{broken"])  # also the path that rereads good lines
    before = sorted(p.relative_to(data) for p in data.rglob("*"))
    assert len(load_gsm8k(data)) == 2
    assert len(load_gsm8k(data, split="test", on_error="skip")) == 2
    assert sorted(p.relative_to(data) for p in data.rglob("*")) == before


def test_datasets_is_offline_once_the_loaders_are_imported():
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k not in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE")}
    code = "import cdra.data.loaders, datasets; assert datasets.config.HF_HUB_OFFLINE, 'online'"
    subprocess.run([sys.executable, "-c", code], check=True, env=env)


def test_latin1_in_json_or_csv_names_the_file(tmp_path):
    js = tmp_path / "l.json"
    js.write_bytes(json.dumps([{"q": "café", "a": "1"}], ensure_ascii=False).encode("latin-1"))
    cs = tmp_path / "l.csv"
    cs.write_bytes("q,a\ncafé,1\n".encode("latin-1"))
    for path in (js, cs):
        with pytest.raises(DataError, match=rf"{path.name}: cannot read: .*UTF-?8"):
            load_table(path, "q", "a")


def test_dataset_overrides_apply_in_any_order():
    from cdra.config import ConfigError, load_config
    from cdra.recipes.grpo import GRPOConfig

    for argv in (["train_data.format=gsm8k", "train_data.path=data/gsm8k"], ["train_data.path=data/gsm8k", "train_data.format=gsm8k"]):
        spec = load_config(GRPOConfig, argv).train_data
        assert (spec.format, spec.path) == ("gsm8k", "data/gsm8k")
    with pytest.raises(ConfigError, match="train_data: dataset format 'gsm8k' needs a path"):
        load_config(GRPOConfig, ["train_data.format=gsm8k"])

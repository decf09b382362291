from __future__ import annotations  # the schemas below must still resolve their annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional

import pytest
import yaml

from cdra.config import (
    ConfigError,
    apply_overrides,
    check,
    config_from_dict,
    load_config,
    save_config,
    to_dict,
)


@dataclass
class Optim:
    lr: float = field(default=1e-3, metadata={"help": "peak learning rate of AdamW"})
    betas: tuple[float, float] = (0.9, 0.999)

    def validate(self):
        check(self.lr > 0, "lr must be positive")


@dataclass
class Train:
    steps: int = field(default=10, metadata={"help": "number of training steps"})
    learning_rate: float = 1e-5
    loss: Literal["no_baseline", "reinforce_with_baseline", "grpo_clip"] = "grpo_clip"
    optim: Optim = field(default_factory=Optim)

    def validate(self):
        if self.steps <= 0:
            raise ValueError("steps must be > 0")


@dataclass
class Judge:
    model: str = "tiny"
    temperature: float = 0.0


@dataclass
class Config:
    name: str = "run"
    seed: Optional[int] = None  # noqa: UP045 -- the parser must accept typing.Optional too
    max_tokens: int | None = 64
    debug: bool = False
    output_dir: Path = Path("outputs")
    ops: list[str] = field(default_factory=lambda: ["+", "-"])
    sizes: tuple[int, ...] = (1, 2)
    weights: dict[str, float] = field(default_factory=lambda: {"acc": 1.0})
    train: Train = field(default_factory=Train)
    judge: Judge | None = None

    def validate(self):
        check(self.name != "forbidden", "name may not be 'forbidden'")


@dataclass
class NeedsModel:
    model: str
    n: int = 1


def write_yaml(tmp_path, data) -> str:
    path = tmp_path / "cfg.yaml"
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return str(path)


# ----------------------------------------------------------------------------- loading


def test_defaults():
    assert load_config(Config, []) == Config()


def test_yaml_then_overrides_left_to_right(tmp_path):
    path = write_yaml(tmp_path, {"name": "from-yaml", "train": {"steps": 5, "optim": {"lr": 0.5}}})
    cfg = load_config(Config, ["train.steps=7", "--config", path, "seed=1", "seed=2"])
    assert cfg.name == "from-yaml"  # YAML over default
    assert cfg.train.steps == 7  # override over YAML, wherever it stands
    assert cfg.train.optim.lr == 0.5 and cfg.train.learning_rate == 1e-5  # untouched keys keep defaults
    assert cfg.seed == 2  # later override wins
    assert load_config(Config, [f"--config={path}"]).train.steps == 5


def test_yaml_values_are_coerced(tmp_path):
    # PyYAML reads 1e-3 as a string; steps as int; flags as YAML booleans
    path = write_yaml(tmp_path, "train:\n  learning_rate: 1e-3\n  steps: 3\ndebug: yes\nsizes: [4, 5]\n")
    cfg = load_config(Config, ["--config", path])
    assert cfg.train.learning_rate == 1e-3 and cfg.debug is True and cfg.sizes == (4, 5)


def test_empty_yaml_section_keeps_defaults(tmp_path):
    assert load_config(Config, ["--config", write_yaml(tmp_path, "train:\n")]) == Config()


@pytest.mark.parametrize(
    "token, get, expected",
    [
        ("train.steps=10", lambda c: c.train.steps, 10),
        ("train.learning_rate=3", lambda c: c.train.learning_rate, 3.0),
        ("train.learning_rate=2e-5", lambda c: c.train.learning_rate, 2e-5),
        ("debug=true", lambda c: c.debug, True),
        ("debug=YES", lambda c: c.debug, True),
        ("debug=on", lambda c: c.debug, True),
        ("debug=1", lambda c: c.debug, True),
        ("debug=False", lambda c: c.debug, False),
        ("debug=off", lambda c: c.debug, False),
        ("debug=0", lambda c: c.debug, False),
        ("name=null", lambda c: c.name, "null"),  # a plain str keeps the text
        ("name=", lambda c: c.name, ""),
        ("seed=5", lambda c: c.seed, 5),
        ("max_tokens=null", lambda c: c.max_tokens, None),
        ("max_tokens=None", lambda c: c.max_tokens, None),
        ("output_dir=/tmp/x", lambda c: c.output_dir, Path("/tmp/x")),
        ("train.loss=no_baseline", lambda c: c.train.loss, "no_baseline"),
        ("ops=[+,-,*]", lambda c: c.ops, ["+", "-", "*"]),
        ("ops=[]", lambda c: c.ops, []),
        ("sizes=[3,4,5]", lambda c: c.sizes, (3, 4, 5)),
        ("train.optim.betas=[0.5, 1]", lambda c: c.train.optim.betas, (0.5, 1.0)),
        ("weights={acc: 2, format: 0.5}", lambda c: c.weights, {"acc": 2.0, "format": 0.5}),
        ("judge.model=big", lambda c: c.judge, Judge(model="big")),  # creates the optional section
        ("judge={temperature: 0.7}", lambda c: c.judge, Judge(temperature=0.7)),
        ("train={steps: 3}", lambda c: (c.train.steps, c.train.loss), (3, "grpo_clip")),
    ],
)
def test_override_coercion(token, get, expected):
    value = get(load_config(Config, [token]))
    assert value == expected and type(value) is type(expected)


@pytest.mark.parametrize(
    "token, message",
    [
        ("train.steps=1.5", r"train\.steps: expected int, got '1\.5'"),
        ("train.steps=abc", r"train\.steps: expected int"),
        ("train.learning_rate=fast", r"train\.learning_rate: expected float, got 'fast'"),
        ("debug=maybe", r"debug: expected bool, got 'maybe'"),
        ("seed=many", r"seed: expected int, got 'many'"),
        ("sizes=[1,x]", r"sizes\[1\]: expected int, got 'x'"),
        ("sizes=3", r"sizes: expected tuple\[int, \.\.\.\], got '3'"),
        ("ops=[a, 1]", r"ops\[1\]: expected str, got 1"),
        ("ops=[a", r"ops: cannot parse"),
        ("train.optim.betas=[0.5]", r"train\.optim\.betas: expected tuple\[float, float\].*1 items"),
        ("weights=[1]", r"weights: expected dict\[str, float\]"),
        ("weights={acc: high}", r"weights\.acc: expected float, got 'high'"),
        ("train=5", r"train: expected a mapping for Train"),
        ("train.steps.x=1", r"'train\.steps' is a int, not a section"),
    ],
)
def test_override_coercion_errors(token, message):
    with pytest.raises(ConfigError, match=message):
        load_config(Config, [token])


@pytest.mark.parametrize(
    "data, message",
    [
        ({"train": {"steps": 1.5}}, r"train\.steps: expected int, got 1\.5"),
        ({"train": {"steps": True}}, r"train\.steps: expected int, got True"),
        ({"debug": 2}, r"debug: expected bool, got 2"),
        ({"name": 123}, r"name: expected str, got 123"),
        ({"train": {"learning_rate": False}}, r"train\.learning_rate: expected float"),
        ({"train": [1, 2]}, r"train: expected a mapping"),
    ],
)
def test_yaml_coercion_errors(tmp_path, data, message):
    with pytest.raises(ConfigError, match=message):
        load_config(Config, ["--config", write_yaml(tmp_path, data)])


def test_float_accepts_int_from_yaml(tmp_path):
    cfg = load_config(Config, ["--config", write_yaml(tmp_path, {"train": {"learning_rate": 1}})])
    assert cfg.train.learning_rate == 1.0 and isinstance(cfg.train.learning_rate, float)


def test_literal_error_lists_choices():
    with pytest.raises(ConfigError, match="train.loss") as info:
        load_config(Config, ["train.loss=ppo"])
    for choice in ("no_baseline", "reinforce_with_baseline", "grpo_clip"):
        assert choice in str(info.value)


def test_unknown_override_key_suggests_close_match():
    with pytest.raises(ConfigError, match=r"unknown key 'train\.learnig_rate'") as info:
        load_config(Config, ["train.learnig_rate=0.1"])
    message = str(info.value)
    assert "did you mean 'train.learning_rate'" in message
    assert "steps" in message and "optim" in message  # the valid keys at that level


def test_unknown_yaml_key(tmp_path):
    path = write_yaml(tmp_path, {"train": {"optim": {"lrr": 0.1}}})
    with pytest.raises(ConfigError, match=r"unknown key 'train\.optim\.lrr'.*'train\.optim\.lr'"):
        load_config(Config, ["--config", path])
    with pytest.raises(ConfigError, match="unknown key 'bogus'.*top level"):
        load_config(Config, ["bogus=1"])


@pytest.mark.parametrize("argv", [["train.steps"], ["--config"], ["--verbose"], ["=3"], ["train..steps=1"]])
def test_malformed_arguments(argv):
    with pytest.raises(ConfigError):
        load_config(Config, argv)


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="nope.yaml"):
        load_config(Config, ["--config", str(tmp_path / "nope.yaml")])
    with pytest.raises(ConfigError, match="mapping"):
        load_config(Config, ["--config", write_yaml(tmp_path, "- a\n- b\n")])
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_config(Config, ["--config", write_yaml(tmp_path, "a: [1,\n")])


def test_required_field():
    assert config_from_dict(NeedsModel, {"model": "m"}) == NeedsModel("m")
    with pytest.raises(ConfigError, match="missing required key.*model"):
        config_from_dict(NeedsModel, {"n": 2})


# ----------------------------------------------------------------------------- validation


def test_validate_errors_carry_the_path():
    with pytest.raises(ConfigError, match=r"^train: steps must be > 0"):
        load_config(Config, ["train.steps=0"])
    with pytest.raises(ConfigError, match=r"^train\.optim: lr must be positive"):
        load_config(Config, ["train.optim.lr=-1"])
    with pytest.raises(ConfigError, match=r"^Config: name may not be 'forbidden'"):
        load_config(Config, ["name=forbidden"])


def test_validate_runs_after_all_overrides():
    # steps=0 alone would fail; the later override fixes it before validation
    assert load_config(Config, ["train.steps=0", "train.steps=4"]).train.steps == 4


def test_check():
    check(True, "fine")
    with pytest.raises(ConfigError, match="boom"):
        check(False, "boom")


# ----------------------------------------------------------------------------- round trip and overrides


def test_round_trip(tmp_path):
    cfg = load_config(Config, ["seed=3", "sizes=[7,8]", "judge.model=big", "train.optim.betas=[0.1,0.2]"])
    plain = to_dict(cfg)
    assert plain["sizes"] == [7, 8] and plain["train"]["optim"]["betas"] == [0.1, 0.2]
    assert plain["output_dir"] == "outputs"
    assert yaml.safe_load(yaml.safe_dump(plain)) == plain
    assert config_from_dict(Config, plain) == cfg
    path = save_config(cfg, tmp_path / "run" / "config.yaml")
    assert load_config(Config, ["--config", str(path)]) == cfg


def test_apply_overrides_returns_new_config():
    cfg = Config()
    new = apply_overrides(cfg, ["train.steps=20", "debug=true"])
    assert new.train.steps == 20 and new.debug is True
    assert cfg == Config()  # the original is untouched
    with pytest.raises(ConfigError, match="train"):
        apply_overrides(cfg, ["train.steps=-1"])


def test_frozen_dataclasses():
    @dataclass(frozen=True)
    class Frozen:
        a: int = 1

    assert apply_overrides(Frozen(), ["a=2"]) == Frozen(a=2)


# ----------------------------------------------------------------------------- help


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_help(flag, capsys):
    with pytest.raises(SystemExit) as info:
        load_config(Config, ["train.steps=oops", flag])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for text in (
        "train.steps: int = 10",
        "number of training steps",
        "train.optim.lr: float = 0.001",
        "peak learning rate of AdamW",
        "grpo_clip",
        "judge.model: str = 'tiny'",
        "seed: int | None = None",
    ):
        assert text in out


@dataclass(frozen=True)
class Spec:
    format: str = "synthetic"
    path: str | None = None

    def __post_init__(self):
        if self.format != "synthetic" and not self.path:
            raise ValueError(f"format {self.format!r} needs a path")


@dataclass
class WithSpec:
    data: Spec = field(default_factory=Spec)
    rate: float = 0.5


def test_post_init_checks_run_after_all_overrides_so_order_does_not_matter():
    a = load_config(WithSpec, ["data.format=gsm8k", "data.path=F"])
    b = load_config(WithSpec, ["data.path=F", "data.format=gsm8k"])
    assert a == b == WithSpec(Spec("gsm8k", "F"))
    with pytest.raises(ConfigError, match=r"^data: format 'gsm8k' needs a path$"):
        load_config(WithSpec, ["data.format=gsm8k"])


@pytest.mark.parametrize("text", ["nan", "inf", "-inf", "NaN", "1e999"])
def test_non_finite_numbers_are_rejected(text):
    with pytest.raises(ConfigError, match=r"^rate: expected a finite number"):
        load_config(WithSpec, [f"rate={text}"])
    with pytest.raises(ConfigError, match=r"^rate: expected a finite number"):
        config_from_dict(WithSpec, {"rate": float(text)})


def test_run_job_resumes_a_recoverable_fault_within_max_job_restarts(capsys):
    """`run.max_job_restarts=N`: a RecoverableFault is reported in one line and the run is called
    again with run.resume=true, at most N more times; past that the job exits with status 1."""
    from cdra.config import RecoverableFault, run_job
    from cdra.recipes.grpo import GRPOConfig

    calls: list[bool] = []

    def flaky(config, prepared):
        calls.append(config.run.resume)
        if len(calls) <= 2:
            raise RecoverableFault("learner rank 0 died during train")
        return {"policy/version": 1.0}

    run_job(GRPOConfig, lambda c: None, flaky, ["run.max_job_restarts=2"])
    out, err = capsys.readouterr()
    assert calls == [False, True, True]
    assert err.splitlines() == ["error: learner rank 0 died during train",
                                "[cdra] run.max_job_restarts: resuming from the last checkpoint (restart 1 of 2)",
                                "error: learner rank 0 died during train",
                                "[cdra] run.max_job_restarts: resuming from the last checkpoint (restart 2 of 2)"]
    assert '"policy/version": 1.0' in out

    calls.clear()
    with pytest.raises(SystemExit) as stopped:
        run_job(GRPOConfig, lambda c: None, flaky, ["run.max_job_restarts=1"])
    assert stopped.value.code == 1 and calls == [False, True]
    assert capsys.readouterr().err.splitlines()[-1] == "error: learner rank 0 died during train"

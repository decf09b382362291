"""The README and the guides show only what works: every `python jobs/X.py key=value ...` command
they print is accepted by that job's config loader, every key the README's tables name exists in
its job's schema, every repository path the README names exists, and every `ray job submit`
ships the working directory. Nothing is started."""

from __future__ import annotations

import dataclasses
import re
import shlex

import pytest
from jobschema import REPO, job_schema

from cdra.config import _hints, load_config

README = REPO / "README.md"
DOCUMENTS = [README, *sorted((REPO / "docs").rglob("*.md"))]
TRAINING_JOBS = ["jobs/critique_rl.py", "jobs/grpo.py", "jobs/sft.py", "jobs/expert_iteration.py"]
_TOP_DIRS = ("cdra", "jobs", "tests", "docs", "configs", "cluster", "benchmarks", ".ci")


def _shell_snippets(text: str) -> list[str]:
    """Lines of ```bash blocks, and inline code spans (which may wrap a line)."""
    blocks = re.findall(r"```bash\n(.*?)```", text, re.DOTALL)
    lines = [line for block in blocks for line in block.splitlines()]
    without_blocks = re.sub(r"```.*?```", "", text, flags=re.DOTALL)
    return lines + [span.replace("\n", " ") for span in re.findall(r"`([^`]+)`", without_blocks)]


def job_commands(text: str) -> list[tuple[str, list[str], str]]:
    """(job script, its arguments, the snippet) of every `python jobs/<job>.py ...` shown."""
    found = []
    for snippet in _shell_snippets(text):
        snippet = re.sub(r"\$\{?\w+\}?", "0", snippet)  # shell loop variables: $S, ${S}
        try:
            tokens = shlex.split(snippet, comments=True)
        except ValueError:  # not a shell line (e.g. a Python fragment)
            continue
        for i, token in enumerate(tokens[:-1]):
            if token == "python" and re.fullmatch(r"jobs/\w+\.py", tokens[i + 1]):
                args = []
                for arg in tokens[i + 2:]:
                    if arg in (";", "&&", "|") or arg.endswith(";"):
                        break
                    args.append(arg)
                found.append((tokens[i + 1], args, snippet))
    return found


def _has_key(schema: type, dotted: str) -> bool:
    """`a.b` is a field path of `schema`; `a.*` names a section (a nested dataclass)."""
    parts = dotted.split(".")
    cls = schema
    for i, part in enumerate(parts):
        if part == "*" and i == len(parts) - 1:
            return True
        fields = {f.name for f in dataclasses.fields(cls) if f.init}
        if not dataclasses.is_dataclass(cls) or part not in fields:
            return False
        tp = _hints(cls)[part]
        if i < len(parts) - 1:
            if not dataclasses.is_dataclass(tp):
                return False
            cls = tp
    return True


COMMANDS = [(doc, *cmd) for doc in DOCUMENTS for cmd in job_commands(doc.read_text())]


def test_the_readme_shows_the_main_commands():
    shown = {(job, tuple(args)) for doc, job, args, _ in COMMANDS if doc == README}
    assert ("jobs/critique_rl.py", ()) in shown
    assert ("jobs/grpo.py", ("--config", "configs/grpo_math_qwen2.5-math-1.5b.yaml")) in shown
    text = README.read_text()
    assert 'python -m pytest -m "not integration" tests' in text
    ci = next(line for line in (REPO / ".ci" / "run").read_text().splitlines() if line.startswith("python -m pytest"))
    assert ci.split("#")[0].replace(" -q", "").strip() in text  # CI runs the README's test command
    assert "integration:" in (REPO / "pytest.ini").read_text()


@pytest.mark.parametrize("doc, job, args, snippet", COMMANDS, ids=[f"{d.name}:{' '.join([j, *a])[:70]}" for d, j, a, _ in COMMANDS])
def test_every_job_command_is_accepted_by_its_config(doc, job, args, snippet, monkeypatch):
    monkeypatch.chdir(REPO)  # --config paths are relative to the repository root
    assert not any(a.startswith("learner.seed=") for a in args), "learner.seed is overwritten by run.seed"
    load_config(job_schema(job), args)


def test_ray_job_submit_ships_the_working_directory():
    lines = [s for doc in DOCUMENTS for s in _shell_snippets(doc.read_text()) if "ray job submit -" in s]
    assert lines
    for line in lines:
        assert "--working-dir ." in line, line


def _jobs_table(text: str) -> list[tuple[str, list[str]]]:
    rows = re.findall(r"^\| `(jobs/\w+\.py)` \|[^|]*\|([^|]*)\|\s*$", text, re.MULTILINE)
    return [(job, re.findall(r"`([^`]+)`", keys)) for job, keys in rows]


def test_jobs_table_names_only_keys_of_its_job():
    table = _jobs_table(README.read_text())
    assert {job for job, _ in table} == {p.relative_to(REPO).as_posix() for p in (REPO / "jobs").glob("*.py")}
    for job, keys in table:
        schema = job_schema(job)
        assert keys and [k for k in keys if not _has_key(schema, k)] == [], job


def test_shared_keys_belong_to_every_training_job():
    sentence = re.search(r"Shared keys:(.*?)\.\s", README.read_text(), re.DOTALL).group(1)
    keys = re.findall(r"`([^`]+)`", sentence)
    assert len(keys) >= 10
    for job in TRAINING_JOBS:
        assert [k for k in keys if not _has_key(job_schema(job), k)] == [], job


def test_has_key_tells_keys_from_non_keys():
    schema = job_schema("jobs/evaluate.py")
    assert _has_key(schema, "eval.rounds") and _has_key(schema, "eval.pass_k") and _has_key(schema, "data.*")
    assert not _has_key(schema, "rounds") and not _has_key(schema, "pass_k") and not _has_key(schema, "eval.rounds.x")


def repository_paths(text: str) -> set[str]:
    """Paths the README names under the repository's top-level directories (URLs left out)."""
    text = re.sub(r"https?://\S+", "", text)
    tops = "|".join(re.escape(t) for t in _TOP_DIRS)
    return {m.rstrip(".,;:)") for m in re.findall(rf"(?<![\w./-])((?:{tops})/[\w./*-]*)", text)}


def test_every_path_the_readme_names_exists():
    paths = repository_paths(README.read_text())
    assert {"cluster/install.sh", "configs/critique_rl_gsm8k.yaml", "docs/rewards.md"} <= paths
    missing = [p for p in sorted(paths) if not list(REPO.glob(p.rstrip("/")))]
    assert missing == []


def test_path_extraction():
    text = "see `docs/data.md`, [x](docs/results/grpo.md) and http://host/docs/nothing, `jobs/*.py` and outputs/x"
    assert repository_paths(text) == {"docs/data.md", "docs/results/grpo.md", "jobs/*.py"}

"""The zoo's job-built lpr_prm: its card matches its build (digest, command), it resolves as the
embedded default PRM, and it loads as a (K+1)-class token classifier."""

from __future__ import annotations

import pytest

from cdra.models.zoo import JOB_BUILDS, checkpoint_path, read_card


@pytest.mark.parametrize("name", list(JOB_BUILDS))
def test_job_built_card_matches_its_build(name):
    """A changed default of a building job without a rebuilt checkpoint fails here: rebuild it
    with the card's build command."""
    card = read_card(name)
    build = JOB_BUILDS[name]
    assert card["digest"] == build.digest(), f"zoo {name}: stale checkpoint; run {card['build_command']}"
    assert card["build_command"] == build.build_command and card["base"] == build.base
    assert card["final_loss"] < card["initial_loss"]


def test_lpr_prm_resolves_and_loads_as_a_token_classifier():
    import torch
    from transformers import AutoModelForTokenClassification

    from cdra.recipes.common import resolve_model

    path = resolve_model("", "lpr_prm")
    assert path == checkpoint_path("lpr_prm")
    model = AutoModelForTokenClassification.from_pretrained(path, dtype=torch.float32)
    assert model.config.num_labels == 4  # K = 3 completions per prefix
    assert all(p.dtype == torch.float32 and torch.isfinite(p).all() for p in model.parameters())
    card = read_card("lpr_prm")
    assert 0.5 < card["heldout"]["prm/auc"] <= 1.0  # separates right from wrong held-out steps


def test_a_changed_default_changes_the_digest(monkeypatch):
    import dataclasses

    from cdra.recipes import train_prm

    before = JOB_BUILDS["lpr_prm"].digest()
    changed = dataclasses.make_dataclass("TrainPRMConfig", [("steps", int, 1)])
    monkeypatch.setattr(train_prm, "TrainPRMConfig", changed)
    assert JOB_BUILDS["lpr_prm"].digest() != before

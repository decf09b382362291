"""The shipped zoo: every card matches its recipe, every checkpoint loads, and the builder
(the SFT recipe on the learner group) still produces a model whose loss falls."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from cdra.models.zoo import RECIPES, ZOO_ROOT, checkpoint_path, read_card


@pytest.mark.parametrize("name", list(RECIPES))
def test_shipped_card_matches_its_recipe(name):
    """A recipe changed in code without a rebuilt checkpoint fails here: rebuild it with the
    card's build command (`python -m cdra.models.zoo build NAME`)."""
    card = read_card(name)
    recipe = RECIPES[name]
    assert card["digest"] == recipe.digest(), f"zoo {name}: stale checkpoint; run {card['build_command']}"
    assert card["recipe"] == json.loads(json.dumps(dataclasses.asdict(recipe)))
    assert card["build_command"] == f"python -m cdra.models.zoo build {name}"
    assert card["final_loss"] < card["initial_loss"]
    assert 0.0 < card["heldout"]["accuracy"] < 1.0


@pytest.mark.parametrize("name", list(RECIPES))
def test_shipped_checkpoint_loads_as_an_hf_model(name):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = checkpoint_path(name)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(path)
    assert model.config.hidden_size == RECIPES[name].model.hidden_size
    assert tokenizer.eos_token_id == model.config.eos_token_id
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_zoo_is_small():
    size = sum(f.stat().st_size for f in ZOO_ROOT.rglob("*") if f.is_file())
    assert size < 100 * 2**20, f"the zoo is {size / 2**20:.1f} MiB"


@pytest.mark.integration
@pytest.mark.timeout(600)
def test_builder_trains_through_the_learner_group(tmp_path: Path):
    from transformers import AutoModelForCausalLM

    from cdra.models.zoo.build import build

    path = build("steps", tmp_path, steps=12, eval_problems=16)
    card = read_card("steps", tmp_path)
    assert card["trained_steps"] == 12 and card["recipe"]["steps"] == 12 and card["recipe"]["eval_problems"] == 16
    assert card["digest"] != RECIPES["steps"].digest()  # a shortened build is not the shipped one
    assert card["loss_curve"][-1] < 0.75 * card["initial_loss"]
    assert AutoModelForCausalLM.from_pretrained(path).config.num_hidden_layers == RECIPES["steps"].model.num_layers

"""Which reading (the paper's / the authors' code's) each setting of a run follows, recorded in the run."""

from __future__ import annotations

import pytest

from csfgan import readings
from csfgan.config import LossConfig, ModelConfig, TrainConfig, resolve_config


def test_defaults_follow_the_rule():
    """Every dataclass default is the paper's value where it is explicit, else the authors' code's."""
    defaults = {"model": ModelConfig(), "loss": LossConfig(), "train": TrainConfig()}
    for key, r in readings.READINGS.items():
        section, name = key.split(".")
        assert getattr(defaults[section], name) == r.default, key
        assert (r.paper is None) == (r.basis == "silent"), key


@pytest.mark.parametrize("variant", ["full", "baseline", "sfm", "wld"])
def test_shipped_ablations_are_the_paper_reading(variant):
    cfg, _ = resolve_config("default", variant)
    assert readings.summary(cfg) == "paper"
    assert all(r["follows"] == "default" for r in readings.run_readings(cfg).values())


def test_authors_code_variant_is_the_code_reading_throughout():
    cfg, _ = resolve_config("default", "authors-code")
    assert readings.summary(cfg) == "authors-code"
    follows = {k: v["follows"] for k, v in readings.run_readings(cfg).items()}
    # Where the paper is silent or its figures decide, the code's value is the default already.
    assert {k for k, v in follows.items() if v == "authors-code"} == {
        k for k, r in readings.READINGS.items() if r.basis == "paper"}


def test_a_variant_that_mixes_readings_is_named_as_such():
    cfg, _ = resolve_config("default", "full", ["loss.style=3.0", "model.block_order=prose", "loss.per=0.3"])
    got = readings.summary(cfg)
    assert got.startswith("mixed (")
    assert "loss.style: authors-code" in got and "model.block_order: paper" in got and "loss.per: other" in got


def test_training_records_the_readings(smoke_pipeline, tmp_path):
    import json

    from csfgan.train import train

    train(smoke_pipeline["data"], smoke_pipeline["text_encoder"], "authors-code", "smoke", tmp_path / "run",
          seed=0, overrides=["loss.style=0.0"], progress=False)
    options = json.loads((tmp_path / "run" / "config.json").read_text())
    # Every setting but the style weight as the code has it: mixed, listing the code's departures from
    # the default and not the style weight, which is back at the paper's.
    assert options["reading"].startswith("mixed (") and "loss.gan_form: authors-code" in options["reading"]
    assert "loss.style" not in options["reading"] and options["readings"]["loss.style"]["follows"] == "default"
    assert options["readings"]["loss.gan_form"] == {"value": "relativistic-ls", "follows": "authors-code",
                                                    "basis": "paper"}


@pytest.mark.parametrize("override", ["data.mask=irregular", "data.hole_fraction=0.25"])
def test_centre_mean_word_discriminator_refuses_a_hole_it_does_not_judge(override):
    """The authors' centre-mean WLD crops the fixed centre half: with another hole it would judge
    pixels that are not the hole, so the config is refused, naming both keys."""
    from csfgan.config import ConfigError

    with pytest.raises(ConfigError, match="word_discriminator_regions 'centre-mean'.*data.mask"):
        resolve_config("smoke", "authors-code", [override])
    resolve_config("smoke", "full", [override])  # the paper's hole-grid follows any hole

"""The variance budget (csfgan/variance.py): the decomposition recovers known components, the image
bootstrap of each metric is the metric recomputed on resampled images, and `csfgan variance` runs
end to end through the real evaluation path, caching each snapshot's evaluation."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
import torch_fidelity.metric_fid as tfm
import torch_fidelity.metric_kid as tfk
from scipy import stats as scipy_stats

from csfgan import variance as var
from csfgan.models.damsm import r_precision, r_precision_hits
from csfgan.report import stats


def _synthetic_arm(rng, seeds, steps, reps, *, sd_seed, sd_ckpt, sd_common, sd_interaction, trend=0.0):
    """values[s, t] = 10 + trend·t + a_s + b_st; replicates = values + c_tr (every seed) + u_str."""
    a = rng.normal(0, sd_seed, (seeds, 1))
    b = rng.normal(0, sd_ckpt, (seeds, steps))
    values = 10 + trend * np.arange(steps) + a + b
    c = rng.normal(0, sd_common, (1, steps, reps))
    u = rng.normal(0, sd_interaction, (seeds, steps, reps))
    return values, values[:, :, None] + c + u


def test_decompose_recovers_known_components():
    rng = np.random.default_rng(1)
    values, reps = _synthetic_arm(rng, 400, 6, 600, sd_seed=2.0, sd_ckpt=0.5, sd_common=1.0, sd_interaction=0.3)
    parts = var.decompose(values, reps, last=4, per_image_metric=False)
    assert list(parts["window"]) == [1, 2, 3, 4, 4, 4]
    assert np.isnan(parts["sd_checkpoint"][0]) and np.isnan(parts["sd_seed_beyond_checkpoint"][0])
    last = {k: float(v[-1]) for k, v in parts.items()}
    assert last["sd_test_sample"] == pytest.approx(math.hypot(1.0, 0.3), rel=0.05)
    assert last["sd_seed_x_image"] == pytest.approx(0.3, rel=0.1)
    assert last["se_images"] == pytest.approx(1.0, rel=0.1)  # the common part does not average over seeds
    assert last["sd_checkpoint"] == pytest.approx(0.5, rel=0.06)
    assert last["sd_seed"] == pytest.approx(math.hypot(2.0, 0.5), rel=0.1)
    assert last["sd_seed_beyond_checkpoint"] == pytest.approx(2.0, rel=0.1)
    # With no seed effect, the seed SD is the checkpoint noise and nothing lies beyond it.
    values, reps = _synthetic_arm(rng, 400, 4, 50, sd_seed=0.0, sd_ckpt=0.5, sd_common=0.1, sd_interaction=0.1)
    parts = var.decompose(values, reps, last=4, per_image_metric=False)
    assert parts["sd_seed"][-1] == pytest.approx(0.5, rel=0.1)
    assert parts["sd_seed_beyond_checkpoint"][-1] < 0.1


def test_checkpoint_spread_includes_drift_over_the_window():
    # No noise at all, a trend of 1 per snapshot: the window [1, 2, 3] has SD 1.
    values = np.tile(np.arange(5.0), (3, 1))
    parts = var.decompose(values, np.repeat(values[:, :, None], 20, axis=2), last=3, per_image_metric=False)
    assert parts["sd_checkpoint"][2:] == pytest.approx([1.0, 1.0, 1.0])
    assert parts["sd_seed"] == pytest.approx(np.zeros(5))
    assert parts["sd_test_sample"] == pytest.approx(np.zeros(5))


def test_ci_half_width_agrees_with_the_tables_standard_error():
    """With 3 seeds, the paired arm's standard error from the bootstrap components is the one stats.py
    computes for Table 3 in closed form (seeds x images for an accuracy, paired t for FID)."""
    rng = np.random.default_rng(2)
    n = 400
    checks_a, checks_b = rng.integers(1, 4, (3, n)), rng.integers(1, 4, (3, n))
    p_a = (0.2 + 0.5 * rng.random(n))[None, :]  # how easy each image is, for every seed
    gain = rng.uniform(-0.3, 0.3, n)  # an image's own difference between the arms, the same for every seed
    p_b = np.clip(p_a + np.array([[0.05], [0.07], [0.04]]) + gain, 0, 1)
    hits_a, hits_b = rng.binomial(checks_a, p_a), rng.binomial(checks_b, p_b)
    w = var.bootstrap_weights(n, 2000)
    ones = np.ones((1, n))

    def per_seed(h, c):
        return np.array([var.ratio_replicates(h[s], c[s], ones)[0] for s in range(3)])

    def reps(h, c):
        return np.stack([var.ratio_replicates(h[s], c[s], w) for s in range(3)])

    diff = per_seed(hits_b, checks_b) - per_seed(hits_a, checks_a)
    boot = reps(hits_b, checks_b) - reps(hits_a, checks_a)
    parts = var.decompose(diff[:, None], boot[:, None, :], last=2, per_image_metric=True)
    table = stats.paired_seeds_images(hits_a, hits_b, checks_a, checks_b)
    assert parts["mean"][0] == pytest.approx(table.estimate)
    t2 = scipy_stats.t.ppf(0.975, 2)
    assert parts["ci95_half_width_3seeds"][0] / t2 == pytest.approx(table.se, rel=0.1)
    assert parts["sd_image_shared"][0] > 0.3 * parts["sd_seed"][0] / math.sqrt(3)  # the image term matters here
    # A per-run metric (FID): the paired t over seeds alone.
    fid_a, fid_b = np.array([30.0, 34.0, 31.0]), np.array([28.0, 33.5, 27.0])
    parts = var.decompose((fid_b - fid_a)[:, None], np.zeros((3, 1, 30)), last=2, per_image_metric=False)
    assert parts["ci95_half_width_3seeds"][0] == pytest.approx(stats.paired_t(fid_a, fid_b).half_width)


def test_accuracy_bootstrap_is_the_binomial_sd():
    rng = np.random.default_rng(3)
    n, p = 400, 0.3
    hits = (rng.random(n) < p).astype(float)
    sd = var.ratio_replicates(hits, np.ones(n), var.bootstrap_weights(n, 4000)).std(ddof=1)
    p_hat = hits.mean()
    assert sd == pytest.approx(math.sqrt(p_hat * (1 - p_hat) / n), rel=0.05)
    # Two checks per image that always agree: the image, not the check, is the unit -> the same SD.
    sd2 = var.ratio_replicates(2 * hits, np.full(n, 2.0), var.bootstrap_weights(n, 4000)).std(ddof=1)
    assert sd2 == pytest.approx(sd, rel=1e-9)


def test_fid_and_kid_replicates_are_torch_fidelity_on_the_resampled_rows():
    rng = np.random.default_rng(4)
    real = rng.normal(size=(40, 6)).astype(np.float32)
    fake = (real + rng.normal(0.3, 0.8, size=real.shape)).astype(np.float32)
    w = var.bootstrap_weights(40, 5)
    fid = var.fid_replicates(fake, real, np.vstack([np.ones(40), w]))
    kid = var.kid_replicates(fake, real, np.vstack([np.ones(40), w]))
    for r, weights in enumerate([np.ones(40), *w]):
        rows = np.repeat(np.arange(40), weights.astype(int))  # image i's fake and real rows together
        f, g = torch.from_numpy(fake[rows]), torch.from_numpy(real[rows])
        expect = tfm.fid_statistics_to_metric(tfm.fid_features_to_statistics(f), tfm.fid_features_to_statistics(g),
                                              False)["frechet_inception_distance"]
        assert fid[r] == pytest.approx(expect, rel=1e-4)
        expect = tfk.kid_features_to_metric(f, g, kid_subsets=1, kid_subset_size=len(rows), verbose=False)
        assert kid[r] == pytest.approx(expect["kernel_inception_distance_mean"], rel=1e-4, abs=1e-7)
    assert np.ptp(fid[1:]) > 0  # the resamples differ


def test_r_precision_hits_are_each_images_strict_win():
    """Each image's hit, checked by a plain loop over its candidates; R-precision is their mean."""
    torch.manual_seed(0)
    image, text = torch.randn(30, 8), torch.randn(30, 8)
    image[:15] += 2 * text[:15]  # half the images match their caption
    candidates = torch.stack([torch.tensor([(i + k) % 30 for k in range(1, 6)]) for i in range(30)])
    hits = r_precision_hits(image, text, torch.arange(30), candidates)

    def cos(a, b):
        return float(a @ b / (a.norm() * b.norm()))

    expect = [all(cos(image[i], text[i]) > cos(image[i], text[j]) for j in candidates[i]) for i in range(30)]
    assert hits.tolist() == expect and 0 < sum(expect) < 30
    assert r_precision(image, text, torch.arange(30), candidates) == pytest.approx(sum(expect) / 30)


# ------------------------------------------------------------------------------------------- end to end

SNAPSHOTS = ["train.snapshot_every=2", "train.ema_half_life_images=16", "train.ema_rampup=0"]


@pytest.fixture(scope="module")
def runs(smoke_pipeline, tmp_path_factory):
    """RUNS/synth-birds/{full,baseline}/seed{0,1}: smoke runs of 4 steps with snapshots at 2 and 4."""
    from csfgan.train import train

    root = tmp_path_factory.mktemp("variance") / "runs"
    for variant in ("full", "baseline"):
        for seed in (0, 1):
            train(smoke_pipeline["data"], smoke_pipeline["text_encoder"], variant, "smoke",
                  root / "synth-birds" / variant / f"seed{seed}", seed=seed, overrides=SNAPSHOTS, progress=False)
    return root


def _cli(runs, out, nets, *extra):
    from csfgan.cli import main

    return main(["variance", "--runs", str(runs), "--dataset", "synth-birds", "--variants", "full", "baseline",
                 "--last", "2", "--bootstrap", "50", "--feature-net", str(nets["feature_net"]),
                 "--eval-text-encoder", str(nets["eval_text_encoder"]), "--out", str(out), *extra])


def test_variance_command_end_to_end_and_cached(runs, smoke_metric_nets, tmp_path, monkeypatch, capsys):
    out = tmp_path / "budget" / "synth-birds"
    assert _cli(runs, out, smoke_metric_nets) == 0
    table = pd.read_csv(f"{out}.csv")
    assert set(table["arm"]) == {"full", "baseline", "full - baseline"}
    assert set(table["weights"]) == {"raw"} and set(table["step"]) == {2, 4}
    assert set(table["metric"]) == set(var.METRICS)
    assert len(table) == 5 * 3 * 2
    assert (table["seeds"] == 2).all() and (table["images"] > 0).all()
    last = table[table["step"] == 4]
    assert np.isfinite(last[["sd_test_sample", "sd_checkpoint", "sd_seed", "ci95_half_width_3seeds"]]).all().all()
    assert table[table["step"] == 2]["sd_checkpoint"].isna().all()  # one snapshot in the window
    fid = table[table["metric"] == "fid"]
    assert (fid["sd_test_sample"] > 0).all()
    run = runs / "synth-birds" / "full" / "seed0"
    cached = json.loads((run / "variance" / "val-step000004-raw.json").read_text())
    assert cached["split"] == "val" and cached["weights"] == "raw" and cached["step"] == 4
    assert cached["checkpoint"] == "generator-step000004.pt"
    assert (run / "variance" / "val-step000004-raw.npz").is_file()
    assert not (run / "eval_variance" / "images").exists()  # save_images=False
    assert not (run / "metrics_val.json").exists() and not (run / "eval_val").exists()

    # The arms' means are the evaluations' own numbers; the difference is the difference of the arms.
    def mean(arm):
        return fid[(fid["arm"] == arm) & (fid["step"] == 4)]["mean"].item()

    seeds = [json.loads((runs / "synth-birds" / "full" / f"seed{s}" / "variance" / "val-step000004-raw.json")
                        .read_text())["fid"] for s in (0, 1)]
    assert mean("full") == pytest.approx(np.mean(seeds), rel=1e-3)
    assert mean("full - baseline") == pytest.approx(mean("full") - mean("baseline"), abs=1e-4)
    md = (tmp_path / "budget" / "synth-birds.md").read_text()
    assert "full - baseline" in md and "SD seed beyond checkpoint" in md and "val split" in md
    for ext in ("png", "pdf"):
        assert (tmp_path / "budget" / f"synth-birds.{ext}").stat().st_size > 1000
    err = capsys.readouterr().err
    assert err.count("evaluated") == 8 and "cached" not in err

    # EMA weights of one run: its raw evaluations come from the cache, the EMA ones are new.
    assert _cli(runs, tmp_path / "ema", smoke_metric_nets, "--variants", "full", "--seeds", "0",
                "--weights", "raw", "ema") == 0
    err = capsys.readouterr().err
    assert err.count("cached") == 2 and err.count("evaluated") == 2
    ema = pd.read_csv(tmp_path / "ema.csv")
    assert set(ema["weights"]) == {"raw", "ema"} and set(ema["arm"]) == {"full"}
    assert ema["sd_seed"].isna().all()  # one seed: no seed spread
    assert json.loads((run / "variance" / "val-step000004-ema.json").read_text())["weights"] == "ema"

    # A re-run evaluates nothing: every evaluation comes from RUN/variance/.
    import csfgan.evaluate

    def refuse(*args, **kwargs):
        raise AssertionError("re-run evaluated a snapshot again")

    monkeypatch.setattr(csfgan.evaluate, "evaluate", refuse)
    assert _cli(runs, tmp_path / "again", smoke_metric_nets) == 0
    assert capsys.readouterr().err.count("cached") == 8
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "again.csv"), table)
    # Another checkpoint under the same name (a retrained run) is not the cached one.
    ckpt = runs / "synth-birds" / "baseline" / "seed1" / "checkpoints" / "generator-step000002.pt"
    original = ckpt.read_bytes()
    try:
        ckpt.write_bytes(original + b"\0")
        with pytest.raises(AssertionError, match="evaluated a snapshot again"):
            _cli(runs, tmp_path / "third", smoke_metric_nets)
    finally:
        ckpt.write_bytes(original)


def test_variance_refuses_the_test_split_and_names_what_is_missing(runs, smoke_metric_nets, tmp_path, capsys):
    assert _cli(runs, tmp_path / "x", smoke_metric_nets, "--split", "test") == 2
    err = capsys.readouterr().err
    assert "--split test" in err and "val" in err and "choices" in err
    assert _cli(runs, tmp_path / "x", smoke_metric_nets, "--seeds", "0", "7") == 2
    assert "seed7" in capsys.readouterr().err
    bare = tmp_path / "bare" / "synth-birds" / "full" / "seed0"
    bare.mkdir(parents=True)
    (bare.parent.parent / "baseline" / "seed0").mkdir(parents=True)
    assert _cli(tmp_path / "bare", tmp_path / "x", smoke_metric_nets) == 2
    err = capsys.readouterr().err
    assert str(bare) in err and "snapshot_every" in err
    # EMA weights asked of runs trained without an average: refused before any evaluation, naming the run.
    for variant in ("full", "baseline"):
        run = tmp_path / "bare" / "synth-birds" / variant / "seed0"
        (run / "checkpoints").mkdir()
        (run / "checkpoints" / "generator-step000002.pt").write_bytes(b"")
        (run / "config.json").write_text(json.dumps({"config": {"train": {"ema_half_life_images": 0.0}}}))
    assert _cli(tmp_path / "bare", tmp_path / "x", smoke_metric_nets, "--weights", "raw", "ema") == 2
    err = capsys.readouterr().err
    assert "ema_half_life_images" in err and str(bare) in err
    assert not list(tmp_path.glob("x.*"))  # nothing written

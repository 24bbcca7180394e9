"""The report's statistics on simulated metrics of known truth (issue 26, item 4).

Every simulation uses a fixed RNG, so each test is deterministic; the bounds are the properties the
method claims (coverage 93-97 %, error rates at most 2.5 % or 5 %), and each test also checks that the
simulation is able to fail (the unadjusted rule errs too often, a planted effect is found, ...).
Per-image intervals are computed in closed form by the same vectorised functions
:func:`paired_seeds_images` calls (checked against it on a few experiments).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from csfgan.report.claims import Comparison, judge
from csfgan.report.render import Column, Stat, Table, mark_best, mark_differences
from csfgan.report.stats import (
    ALPHA_SIDE,
    crossed_mean_squares,
    crossed_se,
    linearised,
    minimum_detectable,
    minimum_tolerance,
    paired_seeds_images,
    paired_t,
    pooled_noise,
)

S, N, SIMS = 3, 1000, 2000


def _coverage(d: np.ndarray, truth: float) -> tuple[float, np.ndarray, np.ndarray, np.ndarray]:
    """Coverage of the 95 % interval over experiments d (R, S, N); also the estimates and half-widths."""
    grand, ms_s, ms_i, ms_r = crossed_mean_squares(d)
    se, df = crossed_se(ms_s, ms_i, ms_r, d.shape[1], d.shape[2])
    half = stats.t.ppf(0.975, df) * se
    return float(np.mean(np.abs(grand - truth) <= half)), grand, half, ms_s


# Shares of Var(d̄) from the seed, image and interaction components (the true SE of d̄ is 1).
MIXES = {"seed-dominated": (0.8, 0.1, 0.1), "image-dominated": (0.1, 0.8, 0.1),
         "interaction-dominated": (0.1, 0.1, 0.8)}


@pytest.mark.parametrize("mix", list(MIXES))
def test_mean_metric_interval_covers_95_percent_for_each_variance_mix(mix):
    """d[s, i] = δ + a_s + b_i + e_si with normal components; 2000 experiments of 3 seeds × 1000 images."""
    f_seed, f_image, f_res = MIXES[mix]
    rng = np.random.default_rng(list(MIXES).index(mix))
    delta = 0.7
    d = (delta + rng.normal(size=(SIMS, S, 1)) * math.sqrt(f_seed * S)
         + rng.normal(size=(SIMS, 1, N)) * math.sqrt(f_image * N)
         + rng.normal(size=(SIMS, S, N)) * math.sqrt(f_res * S * N))
    coverage, grand, half, ms_s = _coverage(d, delta)
    assert 0.93 <= coverage <= 0.97, f"{mix}: coverage {coverage:.3f}"
    # No wider than it must be: near the oracle's 1.96 × true SE where images dominate (the earlier
    # interval, which counted the interaction twice on 2 df, was 2-3 times that), and no wider than the
    # exact t(2) interval of the per-seed means where seeds dominate.
    if mix == "image-dominated":
        assert np.median(half) <= 1.15 * 1.96
    if mix == "seed-dominated":
        seed_means_half = stats.t.ppf(0.975, S - 1) * np.sqrt(ms_s / (S * N))
        assert np.median(half) <= 1.1 * np.median(seed_means_half)
    # The same numbers come out of the entry point the reports call.
    for k in range(3):
        one = paired_seeds_images(np.zeros((S, N)), d[k])
        assert one.estimate == pytest.approx(grand[k]) and one.half_width == pytest.approx(half[k])
        assert one.covers == "seeds+images" and one.decided


def _ratio_arms(rng, mix: str, delta: float, sims: int = SIMS):
    """Hits and checks of two arms (sims, S, N): hit probabilities additive in the arm, seed, image
    and interaction effects and independent of the checks, so the true difference of Σ hits / Σ checks
    is δ exactly; binomial noise is the residual."""
    checks = np.broadcast_to(rng.integers(2, 9, size=(sims, 1, N)), (sims, S, N))
    if mix == "seed-dominated":
        p_a = np.broadcast_to(rng.uniform(0.35, 0.6, (sims, 1, N)), (sims, S, N))
        p_b = p_a + delta + rng.normal(size=(sims, S, 1)) * 0.05
    elif mix == "image-dominated":  # each image has its own difference between the arms
        p_a = np.broadcast_to(rng.uniform(0.1, 0.9, (sims, 1, N)), (sims, S, N))
        p_b = rng.uniform(0.1 + delta, 0.9 + delta, (sims, 1, N)) + rng.normal(size=(sims, S, 1)) * 0.002
    else:  # seed × image interaction and binomial noise only
        p_a = np.broadcast_to(rng.uniform(0.35, 0.6, (sims, 1, N)), (sims, S, N))
        p_b = p_a + delta + rng.uniform(-0.15, 0.15, (sims, S, N))
    assert 0 <= p_b.min() and p_b.max() <= 1  # no clipping: the truth stays δ
    return rng.binomial(checks, p_a).astype(float), rng.binomial(checks, p_b).astype(float), checks.astype(float)


@pytest.mark.parametrize("mix", list(MIXES))
def test_ratio_metric_interval_covers_95_percent_for_each_variance_mix(mix):
    rng = np.random.default_rng(10 + list(MIXES).index(mix))
    delta = 0.05
    hits_a, hits_b, checks = _ratio_arms(rng, mix, delta)
    d = linearised(hits_b, checks) - linearised(hits_a, checks)
    coverage, grand, half, _ = _coverage(d, delta)
    assert 0.93 <= coverage <= 0.97, f"{mix}: coverage {coverage:.3f}"
    # The point estimate is the mean over seeds of each seed's Σ hits / Σ checks difference, exactly.
    per_seed = (hits_b.sum(-1) - hits_a.sum(-1)) / checks.sum(-1)
    np.testing.assert_allclose(grand, per_seed.mean(-1), rtol=0, atol=1e-12)
    for k in range(3):
        one = paired_seeds_images(hits_a[k], hits_b[k], checks[k], checks[k])
        assert one.estimate == pytest.approx(grand[k]) and one.half_width == pytest.approx(half[k])


def test_the_plain_satterthwaite_df_would_undercover_where_the_module_says():
    """Why crossed_se evaluates the df at an upper bound of MS_seed: with the plain plug-in df the
    seed-dominated mix with a 10 % image share covers clearly less than 95 %."""
    rng = np.random.default_rng(20)
    f_seed, f_image = 0.9, 0.1
    d = (rng.normal(size=(SIMS, S, 1)) * math.sqrt(f_seed * S) + rng.normal(size=(SIMS, 1, N)) * math.sqrt(f_image * N)
         + rng.normal(size=(SIMS, S, N)) * 1e-3)
    grand, ms_s, ms_i, ms_r = crossed_mean_squares(d)
    image = np.clip(ms_i - ms_r, 0, None)
    plain_df = (ms_s + image) ** 2 / (ms_s**2 / (S - 1) + np.where(image > 0, ms_i**2 / (N - 1), 0))
    se = np.sqrt((ms_s + image) / (S * N))
    plain = np.mean(np.abs(grand) <= stats.t.ppf(0.975, plain_df) * se)
    ours, *_ = _coverage(d, 0.0)
    assert plain < 0.935 and 0.94 <= ours <= 0.97


# --------------------------------------------------------------------------------------------
# Item 2: one seed decides nothing.


def test_one_seed_decides_nothing_under_the_null():
    rng = np.random.default_rng(30)
    better = Comparison("b", "a", "better")
    decided = 0
    image_only_significant = 0
    for _ in range(SIMS):
        seed_effect = rng.normal()  # the one seed's shift: invisible to an image-only interval
        per_run = paired_t([30.0], [30.0 + seed_effect])
        per_image = paired_seeds_images(rng.normal(size=(1, 200)), seed_effect * 0.2 + rng.normal(size=(1, 200)))
        image_only_significant += per_image.low > 0 or per_image.high < 0
        verdicts = [j.verdict for j in judge([(per_run, better, "lower", 30.0), (per_image, better, "higher", 0.0)])]
        decided += any(v in ("reproduced", "contradicted") for v in verdicts)
        assert all(v == "inconclusive (one seed)" for v in verdicts)
        assert per_image.covers == "images" and per_image.low is not None  # shown, labelled, not decided
    assert decided == 0
    assert image_only_significant / SIMS > 0.10  # what an image-only interval alone would have "decided"


# --------------------------------------------------------------------------------------------
# Item 3: a claim's false contradictions, Holm over comparisons and datasets.


def _fid_runs(rng, arms: int, seeds: int = S, effects=None) -> np.ndarray:
    """Per-run FID (arms, seeds): a shared seed effect (same data order) plus arm × seed noise."""
    effects = np.zeros(arms) if effects is None else np.asarray(effects, float)
    return 30 + effects[:, None] + rng.normal(size=(1, seeds)) * 2.0 + rng.normal(size=(arms, seeds)) * 1.5


CLAIMS = {  # (row, than) index pairs over the arms
    "edge-0.5-is-best": [(3, 0), (3, 1), (3, 2), (3, 4)],  # 0.5 against 0, 0.1, 0.2, 1
    "components-improve-fid": [(1, 0), (2, 0), (3, 1), (3, 2)],  # sfm, wld vs baseline; full vs sfm, wld
}


CLAIM_SIMS = 4000
# Monte Carlo slack: 2 binomial standard deviations at 2.5 %. With 200,000 simulations the Holm rates
# are 0.024 for both claims (Holm's bound is nearly attained: the one-sided tests of "full < sfm" and
# "sfm < baseline" err in opposite directions); the unadjusted rates 0.17 and 0.18.
CLAIM_SLACK = 2 * math.sqrt(0.025 * 0.975 / CLAIM_SIMS)


def test_false_contradictions_of_a_claim_over_two_datasets_stay_under_2_5_percent():
    """All arms equal (true differences 0): a 4-comparison claim on 2 datasets (8 tests) is falsely
    contradicted at most 2.5 % of the time with Holm; the unadjusted rule (any 95 % CI on the wrong
    side) errs far more. Both claims are judged on the same simulated runs."""
    rng = np.random.default_rng(40)
    holm_errors = dict.fromkeys(CLAIMS, 0)
    unadjusted_errors = dict.fromkeys(CLAIMS, 0)
    for _ in range(CLAIM_SIMS):
        runs = [_fid_runs(rng, 5) for _dataset in range(2)]
        for claim, pairs in CLAIMS.items():
            items = [(paired_t(fid[than], fid[row]), Comparison("r", "t", "better"), "lower", 30.0)
                     for fid in runs for row, than in pairs]
            judged = judge(items)
            assert {j.family for j in judged} == {8}
            holm_errors[claim] += any(j.verdict == "contradicted" for j in judged)
            unadjusted_errors[claim] += any(j.p_against <= ALPHA_SIDE for j in judged)
    for claim in CLAIMS:
        assert holm_errors[claim] / CLAIM_SIMS <= 0.025 + CLAIM_SLACK, claim
        assert unadjusted_errors[claim] / CLAIM_SIMS > 0.12, claim


def test_holm_still_finds_a_real_contradiction():
    """λ_edge 0.2 truly better than 0.5 by twice the MDE: the claim "0.5 is best" is contradicted."""
    rng = np.random.default_rng(45)
    noise_se = 1.5 * math.sqrt(2 / S)
    effects = [0.0, 0.0, -2 * minimum_detectable(noise_se, S - 1), 0.0, 0.0]
    found = 0
    for _ in range(400):
        fid = _fid_runs(rng, 5, effects=effects)
        judged = judge([(paired_t(fid[than], fid[row]), Comparison("r", "t", "better"), "lower", 30.0)
                        for row, than in CLAIMS["edge-0.5-is-best"]])
        found += judged[2].verdict == "contradicted"
    assert found / 400 > 0.6


def test_within_claims_false_contradiction_at_the_tolerance_and_tost_power():
    """Equivalence: at a true difference on the tolerance, "contradicted" (|δ| > τ) stays under 2.5 %
    over 4 comparisons; at a true difference of 0 with τ = minimum_tolerance, TOST establishes it with
    the stated 80 % power."""
    rng = np.random.default_rng(50)
    se_true = 1.5 * math.sqrt(2 / S)  # the SE of one paired difference of _fid_runs
    within = Comparison("r", "t", "within", tolerance=2.0)
    errors = 0
    for _ in range(SIMS):
        fid = _fid_runs(rng, 5, effects=[2.0, 2.0, 2.0, 0.0, 2.0])  # every row exactly at +τ from 0.5's
        judged = judge([(paired_t(fid[3], fid[k]), within, "lower", 30.0) for k in (0, 1, 2, 4)])
        errors += any(j.verdict == "contradicted" for j in judged)
    assert errors / SIMS <= 0.025
    rng = np.random.default_rng(55)
    tol = minimum_tolerance(se_true, S - 1)
    equal = Comparison("r", "t", "within", tolerance=tol)
    reproduced = 0
    for _ in range(SIMS):
        fid = _fid_runs(rng, 2)
        reproduced += judge([(paired_t(fid[0], fid[1]), equal, "lower", 30.0)])[0].verdict == "reproduced"
    assert abs(reproduced / SIMS - 0.80) < 3 * math.sqrt(0.8 * 0.2 / SIMS)  # minimum_tolerance's 80 % power



# --------------------------------------------------------------------------------------------
# Item 4: bold and † under the null.


def _block_table(values: np.ndarray, datasets: int = 1) -> tuple[Table, dict]:
    """A table of arms (datasets × arms, seeds) of one FID column; rows carry their per-seed values."""
    t = Table("table3", "t", [Column("method", "Method"), Column("seeds", "Seeds"),
                              Column("fid", "FID", "stat", 2, "lower")])
    per_seed = {}
    for d in range(datasets):
        for a, v in enumerate(values[d]):
            run = f"arm{a}"
            row = {"method": run, "seeds": len(v), "fid": Stat(float(v.mean()), 1.0, len(v)), "_run": run,
                   "_dataset": f"d{d}"}
            per_seed[(f"d{d}", run)] = v
            t.add(row, {}, f"d{d}")
    return t, per_seed


def _pairwise(per_seed):
    return lambda row, other, key: paired_t(per_seed[(other["_dataset"], other["_run"])],
                                            per_seed[(row["_dataset"], row["_run"])])


def test_bold_under_the_null_is_rare_and_a_real_best_is_bold():
    rng = np.random.default_rng(60)
    bold = 0
    for _ in range(SIMS):
        t, per_seed = _block_table(_fid_runs(rng, 4)[None])
        mark_best(t, _pairwise(per_seed))
        bold += any("fid" in r["_best"] for r in t.rows)
    assert bold / SIMS <= 0.05  # the point-estimate rule bolded one row of every such table
    found = 0
    for _ in range(200):
        t, per_seed = _block_table(_fid_runs(rng, 4, effects=[0, 0, -16.0, 0])[None])
        mark_best(t, _pairwise(per_seed))
        found += "fid" in t.rows[2]["_best"] and not any("fid" in r["_best"] for k, r in enumerate(t.rows) if k != 2)
    assert found / 200 > 0.7


def test_daggers_under_the_null_are_holm_controlled_per_column():
    """Three rows against the reference on two datasets (6 tests in the column): any † or ‡ in at most 5 %
    of null tables; each unadjusted 95 % CI alone would mark far more."""
    rng = np.random.default_rng(70)
    marked = unadjusted = 0
    for _ in range(SIMS):
        t, per_seed = _block_table(np.stack([_fid_runs(rng, 4) for _ in range(2)]), datasets=2)
        for row in t.rows:
            if row["_run"] != "arm0":
                row["_diff"] = {"fid": paired_t(per_seed[(row["_dataset"], "arm0")],
                                                per_seed[(row["_dataset"], row["_run"])])}
        mark_differences(t)
        marked += any(r["_mark"] for r in t.rows)
        unadjusted += any(r.get("_diff", {}).get("fid") is not None and r["_diff"]["fid"].significant for r in t.rows)
    assert marked / SIMS <= 0.05
    assert unadjusted / SIMS > 0.10


def test_dagger_carries_the_sign():
    rng = np.random.default_rng(75)
    t, per_seed = _block_table(_fid_runs(rng, 3, effects=[0, -20.0, 20.0])[None])
    for row in t.rows[1:]:
        row["_diff"] = {"fid": paired_t(per_seed[("d0", "arm0")], per_seed[("d0", row["_run"])])}
    mark_differences(t)
    assert t.rows[1]["_mark"] == {"fid": "better"} and t.rows[2]["_mark"] == {"fid": "worse"}
    assert "†" in t.markdown() and "‡" in t.markdown()


# --------------------------------------------------------------------------------------------
# Item 7: the detectable effect from the noise pooled over a block's arms.


def test_pooled_noise_gives_a_detectable_effect_close_to_the_truth():
    """5 arms × 3 seeds, arm × seed noise σ: the true MDE of a paired comparison is
    minimum_detectable(σ√(2/S), S−1). One comparison's own SE (2 df) puts the estimate anywhere in
    0.16-1.92× the truth; pooled over the 5 arms (8 df), within about 0.5-1.5×."""
    rng = np.random.default_rng(80)
    sigma = 1.5
    truth = minimum_detectable(sigma * math.sqrt(2 / S), S - 1)
    own, pooled = [], []
    for _ in range(SIMS):
        fid = _fid_runs(rng, 5)
        own.append(paired_t(fid[0], fid[1]).mde / truth)
        pooled.append(pooled_noise(fid).mde / truth)
    own_range, pooled_range = np.percentile(own, [2.5, 97.5]), np.percentile(pooled, [2.5, 97.5])
    assert 0.45 <= pooled_range[0] and pooled_range[1] <= 1.6
    assert own_range[0] < 0.25 and own_range[1] > 1.8
    assert 0.9 <= np.median(pooled) <= 1.05  # √(χ²₈/8) has median 0.96


def test_pooled_noise_of_a_per_image_metric_matches_the_pairs_standard_error():
    """arm × seed × image noise: the pooled SE of one pair estimates the true one, with a narrower spread
    than the pair's own crossed SE."""
    rng = np.random.default_rng(85)
    arms, images, sims = 5, 200, 300
    s_as, s_ai, s_asi = 0.05, 0.3, 0.5
    truth = math.sqrt(2 * (s_as**2 / S + s_ai**2 / images + s_asi**2 / (S * images)))
    own, pooled = [], []
    for _ in range(sims):
        y = (rng.normal(size=(1, S, 1)) + rng.normal(size=(1, 1, images)) + rng.normal(size=(1, S, images))
             + rng.normal(size=(arms, S, 1)) * s_as + rng.normal(size=(arms, 1, images)) * s_ai
             + rng.normal(size=(arms, S, images)) * s_asi)
        own.append(paired_seeds_images(y[0], y[1]).se / truth)
        pooled.append(pooled_noise(y).se / truth)
    assert 0.93 <= np.median(pooled) <= 1.05
    assert np.subtract(*np.percentile(pooled, [97.5, 2.5])) < 0.6 * np.subtract(*np.percentile(own, [97.5, 2.5]))

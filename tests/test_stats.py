"""Paired differences and their intervals against hand computations and known cases: planted effects
are found at the stated power, null effects are declared at most at the stated rate (fixed RNGs).
The coverage, multiplicity and pooling simulations of issue 26 are in tests/test_stats_simulation.py."""

import math

import numpy as np
import pytest
from scipy import stats

from csfgan.report.stats import (
    Difference,
    better_than_all,
    compare,
    crossed_mean_squares,
    crossed_se,
    holm,
    linearised,
    minimum_detectable,
    minimum_tolerance,
    noise_of,
    paired_seeds_images,
    paired_t,
    pooled_noise,
)

SIMS = 300
S, N = 3, 100
# Monte Carlo slack: 2.5 binomial standard deviations at the stated rate.
SLACK = 2.5 * math.sqrt(0.05 * 0.95 / SIMS)


def crossed(rng, delta, seed_sd, image_sd=1.0, noise_sd=2.0, seeds=S, images=N):
    """Two paired arms, (seeds, images): b − a = δ + seed effect + image effect + interaction."""
    base = rng.normal(size=(seeds, images)) * 3
    d = (delta + rng.normal(size=(seeds, 1)) * seed_sd + rng.normal(size=(1, images)) * image_sd
         + rng.normal(size=(seeds, images)) * noise_sd)
    return base, base + d


def true_se(seed_sd, image_sd=1.0, noise_sd=2.0, seeds=S, images=N):
    return math.sqrt(seed_sd**2 / seeds + image_sd**2 / images + noise_sd**2 / (seeds * images))


def test_paired_t_is_students_interval_on_the_differences():
    d = paired_t([10.0, 12.0, 14.0], [7.0, 8.0, 12.0])  # differences −3, −4, −2
    assert d.estimate == pytest.approx(-3.0)
    half = stats.t.ppf(0.975, 2) * 1.0 / math.sqrt(3)
    assert (d.low, d.high) == (pytest.approx(-3 - half), pytest.approx(-3 + half))
    assert d.significant and d.decided and d.seeds == 3 and d.covers == "seeds" and d.reason is None
    assert d.p_below() == pytest.approx(stats.t.cdf(-3 / (1 / math.sqrt(3)), 2))
    assert d.p_two_sided == pytest.approx(2 * d.p_below())
    one = paired_t([10.0], [7.0])
    assert (one.estimate, one.low, one.high, one.mde, one.covers, one.reason) == (-3.0, None, None, None, "none",
                                                                                  "one seed")
    assert not one.significant and not one.decided and one.p_above() is None
    two = paired_t([10.0, 12.0], [7.0, 8.0])  # two seeds decide: t with 1 df
    assert two.decided and two.df == 1.0


def test_identical_per_seed_differences_give_no_decision():
    zero = paired_t([10.0, 12.0, 14.0], [16.0, 18.0, 20.0])  # +6 for every seed
    assert zero.se == 0 and zero.reason == "zero standard error"
    assert not zero.decided and not zero.significant and zero.mde is None
    almost = paired_t([0.1, 0.2, 0.3], [0.4, 0.5, 0.6])  # +0.3 up to floating-point rounding
    assert almost.reason == "zero standard error"


def test_paired_t_null_rate_and_power_at_the_mde():
    rng = np.random.default_rng(0)
    sims = 4000
    null = [paired_t(a, a + rng.normal(size=S)).significant for a in rng.normal(size=(sims, S))]
    assert abs(np.mean(null) - 0.05) < 2.5 * math.sqrt(0.05 * 0.95 / sims)  # exact level
    mde = minimum_detectable(1 / math.sqrt(S), S - 1)  # sd 1 per seed
    planted = [paired_t(a, a + mde + rng.normal(size=S)).significant for a in rng.normal(size=(sims, S))]
    assert abs(np.mean(planted) - 0.80) < 2.5 * math.sqrt(0.8 * 0.2 / sims)  # exact power


def test_mde_and_tolerance_match_the_normal_shortcut_for_many_df():
    z = stats.norm.ppf(0.975)
    assert minimum_detectable(1.0, 1e5) == pytest.approx(z + stats.norm.ppf(0.8), rel=1e-3)
    assert minimum_detectable(1.0, 2) > 5  # 3 seeds: a t(2) test needs a far larger effect
    assert minimum_tolerance(1.0, 1e6) == pytest.approx(z + stats.norm.ppf(0.9), rel=1e-3)  # 2Φ(k − z) − 1 = 0.8
    assert minimum_tolerance(2.0, 8) == pytest.approx(2 * minimum_tolerance(1.0, 8))
    assert minimum_tolerance(1.0, 2) > minimum_tolerance(1.0, 8) > minimum_tolerance(1.0, 1e6)


def test_crossed_mean_squares_by_hand():
    d = np.array([[1.0, 2.0, 6.0], [3.0, 5.0, 4.0]])  # 2 seeds × 3 images
    grand, ms_s, ms_i, ms_r = crossed_mean_squares(d)
    assert grand == pytest.approx(3.5)
    assert ms_s == pytest.approx(3 * ((3 - 3.5) ** 2 + (4 - 3.5) ** 2) / 1)  # seed means 3, 4
    assert ms_i == pytest.approx(2 * ((2 - 3.5) ** 2 + (3.5 - 3.5) ** 2 + (5 - 3.5) ** 2) / 2)  # image means 2, 3.5, 5
    resid = d - np.array([[3.0], [4.0]]) - np.array([[2.0, 3.5, 5.0]]) + 3.5
    assert ms_r == pytest.approx((resid**2).sum() / 2)
    se, df = crossed_se(ms_s, ms_i, ms_r, 2, 3)
    assert se == pytest.approx(math.sqrt((ms_s + (ms_i - ms_r)) / 6))  # the image component is positive here
    # A negative image component is dropped: the seed-means variance alone, on S − 1 df.
    se, df = crossed_se(4.0, 1.0, 2.0, 3, 100)
    assert se == pytest.approx(math.sqrt(4.0 / 300)) and df == pytest.approx(2.0)
    # Images dominate: many df.
    assert crossed_se(1.0, 500.0, 1.0, 3, 1000)[1] > 100


def test_seeds_images_without_image_effect_is_the_t_interval_of_the_seed_means():
    rng = np.random.default_rng(6)
    a = rng.normal(size=(S, N))
    noise = rng.normal(size=(S, N))
    b = a + rng.normal(size=(S, 1)) + 0.1 * (noise - noise.mean(axis=0))  # every image mean the same
    d = b - a
    grand, ms_s, ms_i, ms_r = crossed_mean_squares(d)
    assert ms_i < ms_r  # no image component
    diff = paired_seeds_images(a, b)
    seed_means = d.mean(axis=1)
    assert diff.se == pytest.approx(seed_means.std(ddof=1) / math.sqrt(S))
    assert diff.df == pytest.approx(S - 1)


@pytest.mark.parametrize("seed_sd", [1.0, 0.3])
def test_seeds_images_null_is_rarely_significant(seed_sd):
    rng = np.random.default_rng(1)
    results = [paired_seeds_images(*crossed(rng, 0.0, seed_sd)) for _ in range(SIMS)]
    assert np.mean([r.significant for r in results]) <= 0.05 + SLACK
    assert all(r.covers == "seeds+images" and r.seeds == S and r.images == N and r.decided for r in results)


def test_seeds_images_planted_effect_is_found_at_the_stated_power():
    """Seeds dominate (as FID's seed spread does): at δ = MDE of the true SE, about 80 % are found."""
    rng = np.random.default_rng(2)
    delta = minimum_detectable(true_se(1.0), S - 1)
    results = [paired_seeds_images(*crossed(rng, delta, 1.0)) for _ in range(SIMS)]
    found = np.mean([r.significant and r.estimate > 0 for r in results])
    assert found >= 0.80 - 2.5 * math.sqrt(0.8 * 0.2 / SIMS)
    assert np.mean([r.low <= delta <= r.high for r in results]) >= 0.95 - SLACK
    big = [paired_seeds_images(*crossed(rng, 2 * delta, 1.0)).significant for _ in range(100)]
    assert np.mean(big) > 0.95


def test_one_seed_covers_images_only_and_decides_nothing():
    rng = np.random.default_rng(3)
    # With one seed, the seed effect is a constant shift the interval cannot see: test image noise only.
    results = [paired_seeds_images(*crossed(rng, 0.0, 0.0, seeds=1)) for _ in range(SIMS)]
    assert all(r.covers == "images" and r.seeds == 1 and r.reason == "one seed" for r in results)
    assert abs(np.mean([r.low <= 0 <= r.high for r in results]) - 0.95) <= SLACK  # right for the images
    planted = [paired_seeds_images(*crossed(rng, 1.5, 0.0, seeds=1)) for _ in range(100)]
    assert all(r.low > 0 for r in planted)  # SE = √(1 + 4)/10 ≈ 0.22, so δ = 1.5 is 6.7 SE
    assert not any(r.significant or r.decided for r in results + planted)


def test_ratio_metric_point_estimate_and_linearisation():
    hits_a = np.array([[1, 0, 2, 1], [2, 0, 1, 1]])
    hits_b = np.array([[2, 1, 2, 1], [2, 1, 2, 2]])
    checks = np.array([[2, 1, 2, 3], [2, 1, 2, 3]])
    d = paired_seeds_images(hits_a, hits_b, checks, checks)
    assert d.estimate == pytest.approx(((6 - 4) / 8 + (7 - 4) / 8) / 2)  # mean of the seeds' ratio differences
    z = linearised(hits_a, checks)
    np.testing.assert_allclose(z.mean(axis=1), hits_a.sum(1) / checks.sum(1))
    # seed 0: r = 4/8, c̄ = 2: z_i = 0.5 + (h_i − 0.5 c_i) / 2
    np.testing.assert_allclose(z[0], 0.5 + (hits_a[0] - 0.5 * checks[0]) / 2)
    diff = linearised(hits_b, checks) - z
    se, df = crossed_se(*crossed_mean_squares(diff)[1:], 2, 4)
    assert d.se == pytest.approx(float(se)) and d.df == pytest.approx(float(df))


def test_ratio_metric_null_and_planted():
    rng = np.random.default_rng(4)

    def arms(p_diff):
        checks = np.repeat(rng.integers(1, 4, (1, N)), S, axis=0)  # the same checks for every seed and arm
        p_a = np.clip(0.5 + rng.normal(size=(S, 1)) * 0.05 + rng.normal(size=(1, N)) * 0.1, 0, 1)
        p_b = np.clip(p_a + p_diff + rng.normal(size=(S, 1)) * 0.03, 0, 1)
        return rng.binomial(checks, p_a), rng.binomial(checks, p_b), checks, checks

    assert np.mean([paired_seeds_images(*arms(0.0)).significant for _ in range(SIMS)]) <= 0.05 + SLACK
    assert np.mean([paired_seeds_images(*arms(0.3)).significant for _ in range(100)]) > 0.9


def test_holm_by_hand():
    assert holm([0.01, 0.04, 0.03, None]) == [pytest.approx(0.03), pytest.approx(0.06), pytest.approx(0.06), None]
    assert holm([0.5, 0.9]) == [pytest.approx(1.0), pytest.approx(1.0)]  # capped, monotone
    assert holm([]) == []


def test_better_than_all_needs_every_comparison_after_holm():
    def diff(est, se=1.0, df=50.0, reason=None):
        return Difference(est, est - 2 * se, est + 2 * se, se, df, 3, None, "seeds", reason)

    assert better_than_all([diff(-5.0), diff(-6.0)], "lower")
    # One-sided p of −2.2 SE on 50 df is 0.016: enough alone (Holm's largest p is compared with 0.025),
    # beside a far smaller p too, but not twice (the smaller of two is compared with 0.0125).
    assert better_than_all([diff(-2.2)], "lower") and better_than_all([diff(-5.0), diff(-2.2)], "lower")
    assert not better_than_all([diff(-2.2), diff(-2.2)], "lower")
    assert better_than_all([diff(5.0), diff(6.0)], "higher") and not better_than_all([diff(5.0), diff(6.0)], "lower")
    assert not better_than_all([diff(-5.0), diff(-6.0, reason="one seed")], "lower")
    assert not better_than_all([diff(-5.0), None], "lower") and not better_than_all([], "lower")


def test_pooled_noise_of_two_arms_is_the_pairs_own():
    rng = np.random.default_rng(7)
    runs = rng.normal(size=(2, S))
    own = paired_t(runs[0], runs[1])
    noise = pooled_noise(runs)
    assert noise.se == pytest.approx(own.se) and noise.df == S - 1 and noise.arms == 2
    assert noise.mde == pytest.approx(own.mde)
    images = rng.normal(size=(2, S, N)) + rng.normal(size=(1, 1, N))
    own = paired_seeds_images(images[0], images[1])
    noise = pooled_noise(images)
    assert noise.se == pytest.approx(own.se) and noise.df == pytest.approx(own.df)
    assert pooled_noise(runs[:1]) is None and pooled_noise(runs[:, :1]) is None


def test_compare_leaves_a_missing_seed_out_and_names_it():
    d = compare("fid", [30.0, 31.0, 35.0], [10.0, float("nan"), 14.0], seeds=[0, 1, 2])
    assert d.estimate == pytest.approx(-20.5) and d.seeds == 2 and d.seed_ids == (0, 2)
    assert d.reason == "seed 1 missing" and not d.decided and d.low is not None
    d = compare("fid", [None, 31.0, None], [10.0, 12.0, 14.0], seeds=[4, 5, 6])
    assert d.reason == "seeds 4, 6 missing" and d.seeds == 1
    empty = compare("fid", [None, float("nan")], [float("nan"), 1.0])
    assert empty.seeds == 0 and math.isnan(empty.estimate) and empty.reason == "seeds 0, 1 missing"
    assert compare("attribute_accuracy", [None, None], [None, None]) is None  # the metric does not exist here
    assert noise_of("fid", [[1.0, 2.0, 3.0], [2.0, 3.0, 4.0]]) is None  # the arms move together: no noise
    assert noise_of("fid", [[1.0, None, 3.0], [2.0, 2.5, 5.0]]).seeds == 2  # the seeds every arm has
    assert noise_of("fid", [[1.0, None, None], [2.0, 2.5, 5.0]]) is None  # one seed left


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="not paired"):
        paired_seeds_images(np.zeros((3, 10)), np.zeros((3, 9)))
    with pytest.raises(ValueError, match="equal-length"):
        paired_t([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="finite"):
        paired_t([1.0, float("nan")], [1.0, 2.0])
    with pytest.raises(ValueError, match="per-image values must be finite"):
        paired_seeds_images(np.zeros((3, 10)), np.full((3, 10), np.inf))
    with pytest.raises(ValueError, match="no checks"):
        paired_seeds_images(np.zeros((2, 3)), np.zeros((2, 3)), np.zeros((2, 3)), np.zeros((2, 3)))
    with pytest.raises(ValueError, match="at least 2 images"):
        paired_seeds_images(np.zeros((3, 1)), np.ones((3, 1)))
    with pytest.raises(ValueError, match="both arms or for neither"):
        paired_seeds_images(np.zeros((2, 3)), np.zeros((2, 3)), np.ones((2, 3)))
    with pytest.raises(ValueError, match="seed names"):
        compare("fid", [1.0, 2.0], [1.0, 2.0], seeds=[0])


def test_rows_on_different_test_images_are_neither_paired_nor_pooled():
    def images(keys):
        return {"keys": np.array(keys), "psnr": np.arange(len(keys), dtype=float)}

    same, other = [images(["a", "b", "c"])] * 2, [images(["a", "b", "d"])] * 2
    with pytest.raises(ValueError, match="different test images; cannot pair"):
        compare("psnr", [1.0, 2.0], [1.0, 2.0], same, other)
    with pytest.raises(ValueError, match="different test images; cannot pool"):
        noise_of("psnr", [[1.0, 2.0], [1.0, 2.0]], [same, other])

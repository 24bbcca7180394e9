"""Paired differences between two table rows, their 95 % intervals and tests, and what a run could detect.

Two rows of a table are two arms trained with the same seeds on the same data order and evaluated on
the same test images with the same captions, so every comparison is paired: seed k of one arm
against seed k of the other, image i against image i. ``b − a`` is the difference throughout.

**Per-run metrics** (FID, KID, R-precision: one number per run) -- :func:`paired_t`: the per-seed
differences ``d_k`` and Student's t, ``mean ± t(0.975, S−1) · sd / √S``. Two seeds give t with 1 df.

**Per-image metrics** (PSNR/SSIM whole and hole: means over images; attribute and counterfactual
accuracy: ratios Σ hits / Σ checks per seed) -- :func:`paired_seeds_images`. Seeds and test images are
crossed (every seed sees every image) and both are random: a new seed changes the weights, a new test
set the images. The paired differences ``d[s, i]`` follow the two-way crossed random-effects model
without replication, ``d[s, i] = δ + a_s + b_i + e_si`` (seed, image, and seed × image interaction
with the residual), whose grand mean has

    Var(d̄) = σ²_seed / S + σ²_image / N + σ²_res / (S·N) = (E MS_seed + E MS_image − E MS_res) / (S·N)

with the ANOVA mean squares MS_seed (S−1 df), MS_image (N−1 df) and MS_res ((S−1)(N−1) df); each
component is counted once. Its method-of-moments estimate, :func:`crossed_se`:

* the image component ``(MS_image − MS_res) / S`` is truncated at 0 (dropped when negative); it rests
  on N−1 df, so dropping a negative estimate costs nothing measurable;
* the seed part ``MS_seed`` (= σ²_res + N σ²_seed in expectation) is used as it is, never replaced by
  MS_res when the seed component's estimate ``(MS_seed − MS_res)/N`` is negative. That replacement
  (truncating σ²_seed at 0, i.e. pooling the seed and residual lines) rests on 2 df with 3 seeds and
  is wrong often: with a seed variance worth 90 % of Var(d̄) the three seed means look alike one run
  in ten, and its 95 % interval covered 0.93 and less (down to 0.92 in intermediate mixes). Kept,
  the interval with σ²_image = 0 is exactly the t interval of the per-seed means;
* degrees of freedom: Satterthwaite's for ``MS_seed + (MS_image − MS_res)``, with MS_seed taken at its
  upper 70 % confidence bound ``MS_seed · (S−1) / χ²(0.30; S−1)`` *in the df only* (the SE uses
  MS_seed), and at least S−1. The plain plug-in df grows exactly when the sampled seed spread is
  small (a Behrens–Fisher problem with 2 df on one side) and covered 0.92 when the image term is
  10–20 % of Var(d̄); the bound keeps coverage within 0.945–0.960 for every mix with 3 seeds
  (0.933–0.968 with 2, 0.948–0.956 with 4), by exact integration of that problem, and the
  simulations of tests/test_stats_simulation.py agree.

Coverage of the 95 % interval, S = 3 seeds × N = 1000 images, simulated (tests/test_stats_simulation.py,
2000 experiments per mix): 0.947 / 0.960 / 0.958 for seed-, image- and interaction-dominated mixes (80 %
of Var(d̄) from that component) of a mean metric, 0.95–0.96 for a ratio metric; the earlier interval
(s²_seeds/S + SE²_images on S−1 df) covered 0.98–1.00 and was 1.2–2.2× as wide. Where images
dominate the width is within 4 % of an interval that knew the true SE (1.96 SE). Where seeds or the
interaction dominate it is the t(S−1) width of the per-seed means, about 1.7–1.8× that: with 3 seeds
the data cannot tell σ²_seed = 0 from σ²_seed ≈ σ²_res / N, and an interval that assumed the former
undercovers wherever the latter holds. The t interval also assumes roughly normal seed effects: with
uniform ones a 3-seed t interval covers 0.92.

Ratio metrics are linearised (delta method): seed s's ratio ``r_s = Σ_i h_si / Σ_i c_si`` has the
per-image influence ``u_si = (h_si − r_s c_si) / c̄_s`` (c̄_s: the mean checks per image), and the
pseudo-values ``z_si = r_s + u_si`` average to ``r_s`` exactly, so the crossed analysis of
``z_b − z_a`` has the point estimate unchanged: the mean over seeds of each seed's ratio difference.

**One seed decides nothing.** A comparison needs :data:`MIN_SEEDS` = 2 seeds to be decided (t with
1 df for a per-run metric). With one seed a per-run metric has the difference and no interval; a
per-image metric has an interval over test images only (SE² = s²_images / N, t with N−1 df), which
does not cover seed-to-seed variation: it is shown, labelled so (``covers = "images"``), and never
decides (``Difference.decided`` is False, ``reason = "one seed"``). The image bootstrap of earlier
versions is gone: the closed form is the same interval without resampling noise.

**Missing seeds and zero width.** A seed whose value is missing or not finite in either arm is left
out of that comparison (the difference is over the seeds present, ``seeds`` says how many) and the
comparison is not decided: ``reason = "seed k missing"`` (a run that failed may not be missing at
random). A standard error of 0 (identical per-seed differences, e.g. a metric that did not move)
gives no test either: ``reason = "zero standard error"``.

**Tests.** :meth:`Difference.p_above` / :meth:`Difference.p_below` are one-sided t p-values
(``t = (estimate − x) / se`` on the comparison's df); a 95 % two-sided interval excluding 0 is each
one-sided test at :data:`ALPHA_SIDE` = 2.5 %. :func:`holm` adjusts a family of p-values (Holm's
step-down; ``csfgan.report.claims`` and the tables' † use it).

**Detectable effects.** :func:`minimum_detectable` is the true difference a two-sided level-0.05 t
test with this SE and df detects with 80 % power (noncentral t). From a comparison's own SE with 3
seeds that plug-in is itself a 2-df estimate (its 95 % range is 0.16–1.92× the truth), so the
reports use :func:`pooled_noise`: the arm × seed (× image) ANOVA of every arm of a table block on one
dataset, whose interaction mean squares pool the seed-to-seed noise of all arms ((A−1)(S−1) df for
the seed line instead of S−1), assuming the arms share it. The detectable effect is then
``minimum_detectable`` of the pooled SE of one paired difference, at the df that comparison's own
test has. :func:`minimum_tolerance` is the equivalence counterpart: the smallest tolerance that
two one-sided tests at 2.5 % each (the 95 % interval inside ±tolerance) establish with 80 % power
when the true difference is 0.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import optimize, stats

LEVEL = 0.95
ALPHA_SIDE = (1 - LEVEL) / 2  # 0.025: each one-sided test; the 95 % interval is both
POWER = 0.80
MIN_SEEDS = 2  # a comparison with fewer seeds is never decided
DF_CONFIDENCE = 0.70  # MS_seed's upper confidence bound used in the Satterthwaite df (module docstring)
_ZERO = 1e-10  # a standard error below this fraction of the values' size is zero (floating-point noise)

# What an interval covers, as table notes and the claims report say it.
COVERS = {
    "seeds": "paired Student t over seeds",
    "seeds+images": "seeds and test images (crossed seed × image variance components, each counted once; "
                    "Satterthwaite df)",
    "images": "test images only (one seed: seed-to-seed variation is not covered, and nothing is decided)",
    "none": "no interval: one seed and a per-run metric",
}


@dataclass(frozen=True)
class Difference:
    """``b − a`` over paired seeds (and images), with its 95 % interval where the data allow one.

    ``seeds`` is the number of seeds used; ``reason`` says why the comparison decides nothing (one
    seed, a seed missing, a zero standard error), None when it is decided.
    """

    estimate: float
    low: float | None
    high: float | None
    se: float | None
    df: float | None
    seeds: int
    images: int | None
    covers: str  # a key of COVERS
    reason: str | None = None
    seed_ids: tuple = field(default=(), compare=False)

    @property
    def decided(self) -> bool:
        """Whether any test is made: at least MIN_SEEDS seeds, none missing, a positive standard error."""
        return (self.reason is None and self.seeds >= MIN_SEEDS and self.se is not None and self.se > 0
                and self.df is not None)

    @property
    def significant(self) -> bool:
        """Decided, and the 95 % interval excludes zero (unadjusted: the reports adjust, see holm)."""
        return self.decided and (self.low > 0 or self.high < 0)

    @property
    def half_width(self) -> float | None:
        return None if self.low is None else (self.high - self.low) / 2

    @property
    def mde(self) -> float | None:
        """Smallest |difference| detected with 80 % power at two-sided α = 0.05 from this comparison's
        own SE (the reports use the pooled one, :func:`pooled_noise`)."""
        if not self.decided:
            return None
        return minimum_detectable(self.se, self.df)

    def p_above(self, x: float = 0.0) -> float | None:
        """One-sided p-value for "the true difference exceeds x"; None when not decided."""
        if not self.decided:
            return None
        return float(stats.t.sf((self.estimate - x) / self.se, self.df))

    def p_below(self, x: float = 0.0) -> float | None:
        """One-sided p-value for "the true difference is below x"; None when not decided."""
        if not self.decided:
            return None
        return float(stats.t.cdf((self.estimate - x) / self.se, self.df))

    @property
    def p_two_sided(self) -> float | None:
        if not self.decided:
            return None
        return min(1.0, 2 * min(self.p_above(), self.p_below()))


def minimum_detectable(se: float, df: float) -> float:
    """The true difference that a two-sided level-0.05 t test with this SE and df detects with 80 % power.

    Exact under the t model (scipy.stats.nct), not the normal shortcut, because with 3 seeds the two
    differ by a third.
    """
    if se == 0:
        return 0.0
    crit = stats.t.ppf(0.5 + LEVEL / 2, df)

    def power_gap(nc: float) -> float:
        # The far tail (a significant difference of the wrong sign) is ~0 and scipy returns NaN there.
        wrong_sign = float(np.nan_to_num(stats.nct.cdf(-crit, df, nc)))
        return float(stats.nct.sf(crit, df, nc)) + wrong_sign - POWER

    high = 50.0
    while power_gap(high) < 0:
        high *= 2
    return float(optimize.brentq(power_gap, 0.0, high) * se)


# Gauss-Legendre nodes on (0, 1): the chi-square quantiles minimum_tolerance integrates over.
_NODES, _WEIGHTS = np.polynomial.legendre.leggauss(400)
_U, _W = (_NODES + 1) / 2, _WEIGHTS / 2


def minimum_tolerance(se: float, df: float) -> float:
    """The smallest tolerance τ that TOST at 2.5 % per side (the 95 % interval inside ±τ) establishes
    with 80 % power when the true difference is 0, for a t-based interval with this SE and df.

    Power(τ) = P(|d̂| + t(0.975, ν)·SE^ ≤ τ) with d̂ ~ N(0, SE²) and SE^² ~ SE²·χ²_ν/ν, integrated over
    the chi-square quantiles (400-node Gauss–Legendre).
    """
    if se == 0:
        return 0.0
    crit = stats.t.ppf(0.5 + LEVEL / 2, df)
    scale = np.sqrt(stats.chi2.ppf(_U, df) / df)

    def power_gap(k: float) -> float:
        inside = np.clip(2 * stats.norm.cdf(k - crit * scale) - 1, 0, None)
        return float((_W * inside).sum()) - POWER

    high = crit + 2.0
    while power_gap(high) < 0:
        high *= 2
    return float(optimize.brentq(power_gap, crit, high) * se)


def _interval(estimate: float, se: float, df: float) -> tuple[float, float]:
    half = float(stats.t.ppf(0.5 + LEVEL / 2, df) * se)
    return estimate - half, estimate + half


def _is_zero(se: float, *values: np.ndarray) -> bool:
    size = max((float(np.abs(v).max()) for v in values if np.size(v)), default=0.0)
    return se <= _ZERO * max(size, 1e-300)


def paired_t(a, b, seed_ids: Sequence | None = None) -> Difference:
    """Per-run metric: ``b[k] − a[k]`` over seeds k, Student t interval (none for one seed)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    if a.shape != b.shape or a.ndim != 1 or len(a) == 0:
        raise ValueError(f"paired_t needs two equal-length 1-D arrays of per-seed values; got {a.shape}, {b.shape}")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("paired_t needs finite values (leave missing seeds out: compare() does)")
    ids = tuple(range(len(a))) if seed_ids is None else tuple(seed_ids)
    d = b - a
    s = len(d)
    if s == 1:
        return Difference(float(d[0]), None, None, None, None, 1, None, "none", "one seed", ids)
    se = float(d.std(ddof=1) / math.sqrt(s))
    estimate = float(d.mean())
    if _is_zero(se, a, b):
        return Difference(estimate, estimate, estimate, 0.0, float(s - 1), s, None, "seeds", "zero standard error",
                          ids)
    low, high = _interval(estimate, se, s - 1)
    return Difference(estimate, low, high, se, float(s - 1), s, None, "seeds", None, ids)


# --------------------------------------------------------------------------------------------
# The crossed seed × image analysis (vectorised over leading axes, so simulations use it as is).


def crossed_mean_squares(d: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Grand mean, MS_seed, MS_image and MS_res of ``d`` (..., S seeds, N images), two-way ANOVA."""
    d = np.asarray(d, float)
    s, n = d.shape[-2:]
    if s < 2 or n < 2:
        raise ValueError(f"the crossed analysis needs at least 2 seeds and 2 images; got {s} × {n}")
    grand = d.mean(axis=(-2, -1))
    seed_means, image_means = d.mean(axis=-1), d.mean(axis=-2)
    ms_seed = n * ((seed_means - grand[..., None]) ** 2).sum(axis=-1) / (s - 1)
    ms_image = s * ((image_means - grand[..., None]) ** 2).sum(axis=-1) / (n - 1)
    resid = d - seed_means[..., :, None] - image_means[..., None, :] + grand[..., None, None]
    ms_res = (resid**2).sum(axis=(-2, -1)) / ((s - 1) * (n - 1))
    return grand, ms_seed, ms_image, ms_res


def crossed_se(ms_seed, ms_image, ms_res, seeds: int, images: int) -> tuple[np.ndarray, np.ndarray]:
    """SE of the grand mean and its df from the mean squares (arrays broadcast), as the module says:

    SE² = (MS_seed + max(MS_image − MS_res, 0)) / (S·N); df Satterthwaite's for that combination,
    with MS_seed at its upper :data:`DF_CONFIDENCE` bound in the df only, and never below the seed
    line's S−1 (with a tiny seed part, Satterthwaite's df of a sum containing ``MS_image − MS_res`` can
    fall below every part's own; the floor moved simulated coverage by less than 0.003).
    """
    ms_seed, ms_image, ms_res = (np.asarray(x, float) for x in (ms_seed, ms_image, ms_res))
    df_s, df_i, df_r = seeds - 1, images - 1, (seeds - 1) * (images - 1)
    image_part = np.clip(ms_image - ms_res, 0, None)
    with_image = image_part > 0
    var = (ms_seed + image_part) / (seeds * images)
    inflate = df_s / stats.chi2.ppf(1 - DF_CONFIDENCE, df_s)
    ms_hi = inflate * ms_seed
    num = (ms_hi + image_part) ** 2
    den = ms_hi**2 / df_s + np.where(with_image, ms_image**2 / df_i + ms_res**2 / df_r, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        df = np.where(den > 0, num / den, df_s)
    return np.sqrt(var), np.maximum(df, df_s)


def linearised(hits: np.ndarray, checks: np.ndarray) -> np.ndarray:
    """Per-image pseudo-values of a ratio metric (..., S, N): ``r_s + (h_si − r_s c_si) / c̄_s``.

    Their mean over images is each seed's ratio ``Σ h / Σ c`` exactly; their spread is the ratio's
    first-order (delta-method) influence of each image.
    """
    hits, checks = np.asarray(hits, float), np.asarray(checks, float)
    total = checks.sum(axis=-1, keepdims=True)
    if (total <= 0).any():
        raise ValueError("a seed has no checks (zero counts): the ratio metric is undefined")
    ratio = hits.sum(axis=-1, keepdims=True) / total
    return ratio + (hits - ratio * checks) / (total / checks.shape[-1])


def _check_arms(a, b, a_counts, b_counts):
    a, b = np.atleast_2d(np.asarray(a, float)), np.atleast_2d(np.asarray(b, float))
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"arms are not paired: shapes {a.shape} and {b.shape} (seeds, images)")
    if (a_counts is None) != (b_counts is None):
        raise ValueError("give counts for both arms or for neither")
    if a_counts is not None:
        a_counts, b_counts = np.atleast_2d(np.asarray(a_counts, float)), np.atleast_2d(np.asarray(b_counts, float))
        if a_counts.shape != a.shape or b_counts.shape != b.shape:
            raise ValueError("counts must have the shape of the hits (seeds, images)")
    for x in (a, b, a_counts, b_counts):
        if x is not None and not np.isfinite(x).all():
            raise ValueError("per-image values must be finite")
    return a, b, a_counts, b_counts


def paired_seeds_images(a: np.ndarray, b: np.ndarray, a_counts: np.ndarray | None = None,
                        b_counts: np.ndarray | None = None, seed_ids: Sequence | None = None) -> Difference:
    """Per-image metric: the difference of ``b`` and ``a``, each (S seeds, N images), paired by seed and image.

    Without counts the metric is the mean over images; with counts (``hits``, ``checks`` per image)
    it is ``Σ hits / Σ checks`` per seed, as attribute accuracy is, analysed through
    :func:`linearised`. Two or more seeds: the crossed seed × image interval (:func:`crossed_se`);
    one seed: the image-only interval, not decided.
    """
    a, b, a_counts, b_counts = _check_arms(a, b, a_counts, b_counts)
    s, n = a.shape
    if n < 2:
        raise ValueError(f"a per-image metric needs at least 2 images; got {n}")
    ids = tuple(range(s)) if seed_ids is None else tuple(seed_ids)
    if a_counts is not None:
        a, b = linearised(a, a_counts), linearised(b, b_counts)
    d = b - a
    estimate = float(d.mean())
    if s == 1:
        se = float(d[0].std(ddof=1) / math.sqrt(n))
        low, high = _interval(estimate, se, n - 1)
        return Difference(estimate, low, high, se, float(n - 1), 1, n, "images", "one seed", ids)
    _, ms_seed, ms_image, ms_res = crossed_mean_squares(d)
    se, df = (float(x) for x in crossed_se(ms_seed, ms_image, ms_res, s, n))
    if _is_zero(se, a, b):
        return Difference(estimate, estimate, estimate, 0.0, df, s, n, "seeds+images", "zero standard error", ids)
    low, high = _interval(estimate, se, df)
    return Difference(estimate, low, high, se, df, s, n, "seeds+images", None, ids)


# --------------------------------------------------------------------------------------------
# The noise of a metric pooled over the arms of a table block (for detectable effects).


@dataclass(frozen=True)
class Noise:
    """The standard error of one paired difference between two arms, pooled over ``arms`` arms, and
    the df that one comparison's own test has at these mean squares."""

    se: float
    df: float
    arms: int
    seeds: int

    @property
    def mde(self) -> float:
        return minimum_detectable(self.se, self.df)

    @property
    def tolerance(self) -> float:
        return minimum_tolerance(self.se, self.df)


def pooled_noise(values: np.ndarray, counts: np.ndarray | None = None) -> Noise | None:
    """Pooled noise of a metric from every arm of a block: ``values`` (A arms, S seeds) for a per-run
    metric, (A, S, N) per image (with ``counts`` for a ratio metric: hits and checks).

    Per-run: the arm × seed ANOVA's interaction mean square MS_AS ((A−1)(S−1) df) estimates half the
    variance of a paired per-seed difference, so SE = √(2·MS_AS / S) at the t test's S−1 df.
    Per-image: the arm × seed × image ANOVA; twice its MS_AS, MS_AI and MS_ASI are what one pair's
    MS_seed, MS_image and MS_res estimate, combined by :func:`crossed_se` at one pair's df.
    None with fewer than 2 arms or 2 seeds.
    """
    values = np.asarray(values, float)
    if values.ndim not in (2, 3):
        raise ValueError(f"pooled_noise needs (arms, seeds) or (arms, seeds, images); got shape {values.shape}")
    arms, seeds = values.shape[:2]
    if arms < 2 or seeds < 2:
        return None
    if not np.isfinite(values).all():
        raise ValueError("pooled_noise needs finite values for every arm and seed")
    if values.ndim == 2:
        resid = values - values.mean(axis=1, keepdims=True) - values.mean(axis=0, keepdims=True) + values.mean()
        ms_as = float((resid**2).sum() / ((arms - 1) * (seeds - 1)))
        return Noise(math.sqrt(2 * ms_as / seeds), float(seeds - 1), arms, seeds)
    if counts is not None:
        values = linearised(values, np.asarray(counts, float))
    n = values.shape[2]
    # Remove the arm main effect and everything that does not involve the arm (seed, image, seed × image).
    centred = values - values.mean(axis=0, keepdims=True)
    arm_seed = centred.mean(axis=2)  # (A, S)
    arm_image = centred.mean(axis=1)  # (A, N)
    arm = centred.mean(axis=(1, 2))  # (A,)
    as_eff = arm_seed - arm[:, None]
    ai_eff = arm_image - arm[:, None]
    resid = centred - arm[:, None, None] - as_eff[:, :, None] - ai_eff[:, None, :]
    ms_as = n * float((as_eff**2).sum()) / ((arms - 1) * (seeds - 1))
    ms_ai = seeds * float((ai_eff**2).sum()) / ((arms - 1) * (n - 1))
    ms_asi = float((resid**2).sum()) / ((arms - 1) * (seeds - 1) * (n - 1))
    se, df = crossed_se(2 * ms_as, 2 * ms_ai, 2 * ms_asi, seeds, n)
    return Noise(float(se), float(df), arms, seeds)


def holm(pvalues: Sequence[float | None]) -> list[float | None]:
    """Holm's step-down adjusted p-values (None stays None and is not counted in the family)."""
    present = [(p, i) for i, p in enumerate(pvalues) if p is not None]
    m = len(present)
    out: list[float | None] = [None] * len(pvalues)
    running = 0.0
    for rank, (p, i) in enumerate(sorted(present)):
        running = max(running, min(1.0, (m - rank) * p))
        out[i] = running
    return out


def better_than_all(diffs: Sequence[Difference | None], better: str) -> bool:
    """Whether a row is better than each of the others: ``diffs`` are row − other, each tested one-sided
    at 2.5 % toward ``better`` ("lower" or "higher"), Holm-adjusted over the row's comparisons; any
    comparison that decides nothing (one seed, a seed missing, zero SE) or is missing means no."""
    if not diffs or any(d is None or not d.decided for d in diffs):
        return False
    p = [d.p_below() if better == "lower" else d.p_above() for d in diffs]
    return max(holm(p)) <= ALPHA_SIDE


# --------------------------------------------------------------------------------------------
# Two rows of a table: which test applies to which metric.


def _finite(v) -> bool:
    try:
        return v is not None and math.isfinite(float(v))
    except (TypeError, ValueError):
        return False


def _missing_reason(missing: list) -> str:
    names = ", ".join(str(s) for s in missing)
    return f"seed{'s' if len(missing) > 1 else ''} {names} missing"


def compare(metric: str, a_values: list, b_values: list, a_images: list[dict] | None = None,
            b_images: list[dict] | None = None, seeds: Sequence | None = None) -> Difference | None:
    """Row ``b`` minus row ``a`` for one metric, paired by seed (lists in seed order; ``seeds`` names them).

    ``*_values``: the per-seed metric from metrics.json; ``*_images``: each seed's per-image arrays
    (:mod:`csfgan.metrics.per_image`) or None. A metric with per-image data in both rows gets the
    crossed seeds-and-images analysis, any other the paired t over seeds. A seed missing (None or not
    finite) in either row is left out and named in ``reason``; None where neither row has the metric.
    """
    from csfgan.metrics.per_image import per_image_values

    if len(a_values) != len(b_values):
        raise ValueError(f"{metric}: rows have {len(a_values)} and {len(b_values)} seeds; pairing needs equal seeds")
    seeds = list(range(len(a_values))) if seeds is None else list(seeds)
    if len(seeds) != len(a_values):
        raise ValueError(f"{metric}: {len(seeds)} seed names for {len(a_values)} seeds")
    if all(v is None for v in [*a_values, *b_values]):
        return None  # the metric does not exist here (attribute accuracy on real images)
    keep = [k for k in range(len(seeds)) if _finite(a_values[k]) and _finite(b_values[k])]
    missing = [seeds[k] for k in range(len(seeds)) if k not in keep]
    reason = _missing_reason(missing) if missing else None
    used = tuple(seeds[k] for k in keep)
    if not keep:
        return Difference(math.nan, None, None, None, None, 0, None, "none", reason, used)
    diff = None
    if a_images is not None and b_images is not None:
        a_arrays = [per_image_values(a_images[k], metric) for k in keep]
        b_arrays = [per_image_values(b_images[k], metric) for k in keep]
        if all(x is not None for x in a_arrays + b_arrays):
            keys = {tuple(a_images[k]["keys"]) for k in keep} | {tuple(b_images[k]["keys"]) for k in keep}
            if len(keys) != 1:
                raise ValueError(f"{metric}: the rows were evaluated on different test images; cannot pair them")
            a_v, a_c = (np.stack(x) if x[0] is not None else None for x in zip(*a_arrays, strict=True))
            b_v, b_c = (np.stack(x) if x[0] is not None else None for x in zip(*b_arrays, strict=True))
            diff = paired_seeds_images(a_v, b_v, a_c, b_c, seed_ids=used)
    if diff is None:
        diff = paired_t([float(a_values[k]) for k in keep], [float(b_values[k]) for k in keep], seed_ids=used)
    if reason is not None:
        diff = Difference(diff.estimate, diff.low, diff.high, diff.se, diff.df, diff.seeds, diff.images, diff.covers,
                          reason, used)
    return diff


def noise_of(metric: str, arm_values: list[list], arm_images: list[list[dict]] | None = None) -> Noise | None:
    """:func:`pooled_noise` of a metric from several arms' per-seed values (and per-image arrays), over
    the seeds every arm has; None when fewer than 2 arms or 2 seeds remain, or the noise is zero."""
    from csfgan.metrics.per_image import per_image_values

    if len(arm_values) < 2:
        return None
    n_seeds = len(arm_values[0])
    keep = [k for k in range(n_seeds) if all(_finite(v[k]) for v in arm_values)]
    if len(keep) < 2:
        return None
    if arm_images is not None:
        arrays = [[per_image_values(images[k], metric) for k in keep] for images in arm_images]
        if all(x is not None for arm in arrays for x in arm):
            if len({tuple(images[k]["keys"]) for images in arm_images for k in keep}) != 1:
                raise ValueError(f"{metric}: the rows were evaluated on different test images; cannot pool them")
            values = np.stack([np.stack([x[0] for x in arm]) for arm in arrays])
            counts = None if arrays[0][0][1] is None else np.stack([np.stack([x[1] for x in arm]) for arm in arrays])
            return _measured(pooled_noise(values, counts), values)
    values = np.array([[float(v[k]) for k in keep] for v in arm_values])
    return _measured(pooled_noise(values), values)


def _measured(noise: Noise | None, values: np.ndarray) -> Noise | None:
    """None for a pooled noise of zero (every arm moved identically): it measures nothing."""
    return None if noise is None or _is_zero(noise.se, values) else noise


def covers_note(diffs: dict[str, list[Difference]], headers: dict[str, str]) -> str:
    """One sentence naming, for each kind of interval, the metrics that got it."""
    by: dict[str, list[str]] = {}
    for key, items in diffs.items():
        for kind in sorted({d.covers for d in items}):
            by.setdefault(kind, []).append(headers.get(key, key))
    return "; ".join(f"{', '.join(names)}: {COVERS[kind]}" for kind, names in by.items())


__all__ = ["ALPHA_SIDE", "COVERS", "LEVEL", "MIN_SEEDS", "Difference", "Noise", "better_than_all", "compare",
           "covers_note", "crossed_mean_squares", "crossed_se", "holm", "linearised", "minimum_detectable",
           "minimum_tolerance", "noise_of", "paired_seeds_images", "paired_t", "pooled_noise"]

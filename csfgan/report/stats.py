"""Paired differences between two table rows with 95 % confidence intervals, and what a run could detect.

Two rows of a table are two arms trained with the same seeds on the same data order and evaluated on
the same test images with the same captions, so every comparison is paired: seed k of one arm
against seed k of the other, image i against image i.

* Per-run metrics (FID, KID, R-precision: one number per run) -- :func:`paired_t`: the per-seed
  differences ``d_k`` and Student's t interval ``mean ± t(0.975, S−1) · sd / √S`` (scipy.stats.t).
  One seed gives the difference and no interval.
* Per-image metrics (PSNR/SSIM whole and hole: means over images; attribute and counterfactual
  accuracy: ratios hits / checks over images) -- :func:`paired_seeds_images`. Seeds and test images
  are crossed (every seed sees every image), and both vary: a new seed changes the weights, a new
  test set changes the images. The standard error combines the two levels,

      SE² = s²_seeds / S + SE²_images,

  ``s²_seeds`` the variance of the per-seed paired differences (seed-to-seed spread, Student t) and
  ``SE²_images`` the variance of a paired bootstrap over test images (the same resampled indices for
  both arms and every seed; ratio metrics are recomputed as ratios of resampled sums), and the
  interval is ``estimate ± t(0.975, S−1) · SE``. The degrees of freedom are the seeds': with 3
  seeds the seed variance rests on 2 df, and a Welch–Satterthwaite df (which grows whenever the
  sampled seed spread happens to be small) covered the truth 92 % of the time in simulation, not 95.
  The seed-by-image interaction enters both terms, so the interval errs wide when seeds matter
  little. Why not a plain two-level percentile bootstrap: with 3 seeds, resampling seeds has 10
  distinct outcomes and a variance (S−1)/S of the truth; its 95 % intervals covered the true
  difference 84 % of the time (tests/test_stats.py shows the rates). With one seed the interval
  covers test-image resampling only (df N−1), and says so.

A difference's ``mde`` is the smallest true difference this design would detect with 80 % power at
α = 0.05 (two-sided) with this standard error: the noncentrality of a t(ν) test with 80 % power, times SE.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
from scipy import optimize, stats

LEVEL = 0.95
POWER = 0.80
BOOTSTRAP_REPS = 2000
BOOTSTRAP_SEED = 0  # tables are reproducible: the same resamples every time

# What an interval covers, as table notes and the claims report say it.
COVERS = {
    "seeds": "paired Student t over seeds",
    "seeds+images": "seeds and test images (per-seed spread plus a paired bootstrap over images, t with S−1 df)",
    "images": "test images only (paired bootstrap; one seed, so seed-to-seed variation is not covered)",
    "none": "no interval: one seed and a per-run metric",
}


@dataclass(frozen=True)
class Difference:
    """``b − a`` over paired seeds (and images), with its 95 % interval where the data allow one."""

    estimate: float
    low: float | None
    high: float | None
    se: float | None
    df: float | None
    seeds: int
    images: int | None
    covers: str  # a key of COVERS

    @property
    def significant(self) -> bool:
        """The 95 % interval excludes zero."""
        return self.low is not None and (self.low > 0 or self.high < 0)

    @property
    def half_width(self) -> float | None:
        return None if self.low is None else (self.high - self.low) / 2

    @property
    def mde(self) -> float | None:
        """Smallest |difference| detected with 80 % power at two-sided α = 0.05 by this design."""
        if self.se is None or self.df is None:
            return None
        return minimum_detectable(self.se, self.df)


def minimum_detectable(se: float, df: float) -> float:
    """The true difference that a two-sided level-α t test with this SE and df detects with 80 % power.

    Exact under the t model (noncentral t, scipy.stats.nct), not the normal shortcut, because with
    3 seeds the two differ by a third.
    """
    if se == 0:
        return 0.0
    crit = stats.t.ppf(0.5 + LEVEL / 2, df)

    def power_gap(nc: float) -> float:
        # The far tail (a significant difference of the wrong sign) is ~0 and scipy returns NaN there.
        wrong_sign = float(np.nan_to_num(stats.nct.cdf(-crit, df, nc)))
        return float(stats.nct.sf(crit, df, nc)) + wrong_sign - POWER

    return float(optimize.brentq(power_gap, 0.0, 50.0) * se)


def _interval(estimate: float, se: float, df: float) -> tuple[float, float]:
    half = float(stats.t.ppf(0.5 + LEVEL / 2, df) * se)
    return estimate - half, estimate + half


def paired_t(a, b) -> Difference:
    """Per-run metric: ``b[k] − a[k]`` over seeds k, Student t interval (none for one seed)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    if a.shape != b.shape or a.ndim != 1 or len(a) == 0:
        raise ValueError(f"paired_t needs two equal-length 1-D arrays of per-seed values; got {a.shape}, {b.shape}")
    d = b - a
    s = len(d)
    if s == 1:
        return Difference(float(d[0]), None, None, None, None, 1, None, "none")
    se = float(d.std(ddof=1) / math.sqrt(s))
    low, high = _interval(float(d.mean()), se, s - 1)
    return Difference(float(d.mean()), low, high, se, float(s - 1), s, None, "seeds")


def image_weights(n_images: int, reps: int = BOOTSTRAP_REPS, seed: int = BOOTSTRAP_SEED) -> np.ndarray:
    """(reps, n) multiplicities of a bootstrap resample of n images (each row sums to n)."""
    rng = np.random.default_rng(seed)
    return rng.multinomial(n_images, np.full(n_images, 1.0 / n_images), size=reps).astype(np.float64)


def _per_seed(values: np.ndarray, counts: np.ndarray | None, weights: np.ndarray) -> np.ndarray:
    """Per-seed statistic under image weights: (S, N) data, (R, N) weights -> (S, R)."""
    if counts is None:
        return values @ weights.T / weights.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (values @ weights.T) / (counts @ weights.T)


def paired_seeds_images(a: np.ndarray, b: np.ndarray, a_counts: np.ndarray | None = None,
                        b_counts: np.ndarray | None = None, *, weights: np.ndarray | None = None) -> Difference:
    """Per-image metric: the difference of ``b`` and ``a``, each (S seeds, N images), paired by seed and image.

    Without counts the metric is the mean over images; with counts (``hits``, ``checks`` per image)
    it is ``Σ hits / Σ checks`` per seed, as attribute accuracy is. ``weights`` (R, N): the image
    resamples (default :func:`image_weights`), shared by both arms, so the bootstrap is paired.
    """
    a, b = np.atleast_2d(np.asarray(a, float)), np.atleast_2d(np.asarray(b, float))
    if a.shape != b.shape:
        raise ValueError(f"arms are not paired: shapes {a.shape} and {b.shape} (seeds, images)")
    if (a_counts is None) != (b_counts is None):
        raise ValueError("give counts for both arms or for neither")
    if a_counts is not None:
        a_counts, b_counts = np.atleast_2d(np.asarray(a_counts, float)), np.atleast_2d(np.asarray(b_counts, float))
        if a_counts.shape != a.shape or b_counts.shape != b.shape:
            raise ValueError("counts must have the shape of the hits (seeds, images)")
    s, n = a.shape
    full = np.ones((1, n))
    per_seed = (_per_seed(b, b_counts, full) - _per_seed(a, a_counts, full))[:, 0]  # (S,)
    if not np.isfinite(per_seed).all():
        raise ValueError("a seed has no checks (zero counts): the ratio metric is undefined")
    estimate = float(per_seed.mean())
    w = image_weights(n) if weights is None else weights
    replicates = (_per_seed(b, b_counts, w) - _per_seed(a, a_counts, w)).mean(axis=0)  # (R,)
    replicates = replicates[np.isfinite(replicates)]  # a resample without a single check has no ratio
    var_images = float(replicates.var(ddof=1))
    if s == 1:
        se = math.sqrt(var_images)
        low, high = _interval(estimate, se, n - 1)
        return Difference(estimate, low, high, se, float(n - 1), 1, n, "images")
    var_seeds = float(per_seed.var(ddof=1)) / s
    se = math.sqrt(var_seeds + var_images)
    if se == 0:
        return Difference(estimate, estimate, estimate, 0.0, float(s - 1), s, n, "seeds+images")
    df = float(s - 1)
    low, high = _interval(estimate, se, df)
    return Difference(estimate, low, high, se, float(df), s, n, "seeds+images")


# --------------------------------------------------------------------------------------------
# Two rows of a table: which test applies to which metric.


@functools.lru_cache(maxsize=8)
def _cached_weights(n_images: int) -> np.ndarray:
    w = image_weights(n_images)
    w.setflags(write=False)
    return w


def compare(metric: str, a_values: list, b_values: list, a_images: list[dict] | None = None,
            b_images: list[dict] | None = None) -> Difference | None:
    """Row ``b`` minus row ``a`` for one metric, paired by seed (lists in seed order).

    ``*_values``: the per-seed metric from metrics.json; ``*_images``: each seed's per-image arrays
    (:mod:`csfgan.metrics.per_image`) or None. A metric with per-image data in both rows gets the
    seeds-and-images interval, any other the paired t over seeds; None where a seed lacks the metric.
    """
    from csfgan.metrics.per_image import per_image_values

    if len(a_values) != len(b_values):
        raise ValueError(f"{metric}: rows have {len(a_values)} and {len(b_values)} seeds; pairing needs equal seeds")
    if any(v is None or not math.isfinite(float(v)) for v in [*a_values, *b_values]):
        return None
    if a_images is not None and b_images is not None:
        a_arrays = [per_image_values(x, metric) for x in a_images]
        b_arrays = [per_image_values(x, metric) for x in b_images]
        if all(x is not None for x in a_arrays + b_arrays):
            keys = {tuple(x["keys"]) for x in [*a_images, *b_images]}
            if len(keys) != 1:
                raise ValueError(f"{metric}: the rows were evaluated on different test images; cannot pair them")
            a_v, a_c = (np.stack(x) if x[0] is not None else None for x in zip(*a_arrays, strict=True))
            b_v, b_c = (np.stack(x) if x[0] is not None else None for x in zip(*b_arrays, strict=True))
            return paired_seeds_images(a_v, b_v, a_c, b_c, weights=_cached_weights(a_v.shape[1]))
    return paired_t([float(v) for v in a_values], [float(v) for v in b_values])


def covers_note(diffs: dict[str, list[Difference]], headers: dict[str, str]) -> str:
    """One sentence naming, for each kind of interval, the metrics that got it."""
    by: dict[str, list[str]] = {}
    for key, items in diffs.items():
        for kind in sorted({d.covers for d in items}):
            by.setdefault(kind, []).append(headers.get(key, key))
    return "; ".join(f"{', '.join(names)}: {COVERS[kind]}" for kind, names in by.items())

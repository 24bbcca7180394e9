"""The variance budget of a comparison: where the spread of each metric comes from (issue 26, item 1).

``csfgan variance`` evaluates every generator snapshot (``train.snapshot_every``) of the runs of two
variants (e.g. full and baseline) over several seeds, on the **val** split only (choices are made on
val; the test split gives the final numbers and is never looked at here), and splits the spread of
FID, KID, R-precision, caption-attribute and counterfactual accuracy into

    sd_test_sample    SD of one evaluation's number under a bootstrap over the val images: another
                      draw of as many images. FID and KID are recomputed from the resampled rows of
                      the fake and real features together (image i's inpainting with image i),
                      R-precision from per-image hits, the accuracies as resampled hits / checks.
                      RMS over the seeds at that step.
    sd_seed_x_image   the part of sd_test_sample that differs from seed to seed (the seed x image
                      interaction, from the same resamples applied to every seed). Every evaluation
                      uses the same images and captions, so only this part is inside sd_seed and
                      sd_checkpoint; the rest is shared by all of them and cancels from their spread.
    sd_checkpoint     SD across the last K snapshots of one run (the window ending at that step),
                      pooled over seeds. On the fixed val images; it includes any drift over the window.
    sd_seed           SD across seeds of one snapshot each at that step: what Table 3's intervals
                      rest on. It includes one snapshot's checkpoint noise and the seed x image part.
    sd_seed_beyond_checkpoint   the seed-to-seed SD once checkpoint noise is removed: one-way ANOVA
                      over the window, sqrt(max(0, var(per-seed window means) - sd_checkpoint^2 / K)).
    ci95_half_width_3seeds      the 95 % half-width these components imply with 3 seeds, with the
                      standard error the tables use (csfgan/report/stats.py): sd_seed^2 / 3 for FID, KID
                      and R-precision (paired t over seeds), plus the image noise shared by all seeds
                      (sd_test_sample^2 - sd_seed_x_image^2) for the accuracies (seeds x images), times
                      t(0.975, 2). The tables give the accuracies a Satterthwaite df >= 2, so their
                      intervals are at most this wide. For the arm ``A - B`` it is the paired
                      comparison's half-width; for a single arm, the +- of a 3-seed mean.

for each variant and for the paired difference first - second (seed k against seed k, image i against
image i: the same resamples for both arms), for raw and/or EMA weights, at every snapshot step.

Per evaluation, cached under the run so that a re-run recomputes nothing:

    RUN/variance/<split>-step<N>-<weights>.json   the metrics ``csfgan evaluate`` wrote for that snapshot
    RUN/variance/<split>-step<N>-<weights>.npz    what the bootstrap needs (FID feature rows of fakes and
                                                  reals, R-precision hits, attribute / counterfactual
                                                  hits and checks per image) and the identity the cache
                                                  is checked against (checkpoint and metric networks' sha256)
    RUN/eval_variance/                            evaluate's per-image folder of the latest evaluation

Outputs: ``OUT.csv`` (one row per metric, arm, weights and step), ``OUT.md`` (the same for a reader,
with the method), ``OUT.png`` / ``OUT.pdf`` (:mod:`csfgan.report.variance_figure`).
"""

from __future__ import annotations

import json
import math
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as scipy_stats

from csfgan.errors import UserError
from csfgan.io import write_json, write_text
from csfgan.lock import command_line, output_lock
from csfgan.metrics import per_image
from csfgan.provenance import file_sha256

METRICS = {"fid": "FID", "kid_mean": "KID", "r_precision": "R-precision",
           "attribute_accuracy": "attribute accuracy", "counterfactual_accuracy": "counterfactual accuracy"}
LOWER_IS_BETTER = ("fid", "kid_mean")
# The tables' intervals cover test images too for these (stats.paired_seeds_images); FID, KID and
# R-precision get the paired t over seeds only (stats.paired_t).
PER_IMAGE_METRICS = ("attribute_accuracy", "counterfactual_accuracy")
WEIGHTS = ("raw", "ema")
FOLDER = "variance"  # RUN/variance/: the cached evaluations
SCRATCH = "eval_variance"  # evaluate's per-image folder, overwritten by each evaluation
SNAPSHOT = re.compile(r"^generator-step(\d+)\.pt$")
CACHE_FORMAT = 1
BOOTSTRAP_SEED = 0
CI_SEEDS = 3
COMPONENTS = ("sd_test_sample", "sd_seed_x_image", "sd_checkpoint", "sd_seed", "sd_seed_beyond_checkpoint")


class VarianceError(UserError):
    """A run, snapshot, seed or metric network the variance budget needs is missing or inconsistent."""


# ----------------------------------------------------------------------------------------- bootstrap


def bootstrap_weights(n: int, reps: int, seed: int = BOOTSTRAP_SEED) -> np.ndarray:
    """(reps, n) multiplicities of resamples of n images with replacement (each row sums to n), seeded:
    the same resamples for every run, step and weights, so differences are paired."""
    rng = np.random.default_rng(seed)
    return rng.multinomial(n, np.full(n, 1.0 / n), size=reps).astype(np.float64)


def ratio_replicates(hits: np.ndarray, checks: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Σ hits / Σ checks of each resample: (R,), NaN where a resample has no check."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return (weights @ np.asarray(hits, float)) / (weights @ np.asarray(checks, float))


def mean_replicates(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    return weights @ np.asarray(values, float) / weights.sum(axis=1)


def _weighted_moments(features: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance (ddof 1) of the resampled set with multiplicities ``w``: np.cov's fweights."""
    n = w.sum()
    mu = w @ features / n
    centred = features - mu
    return mu, (centred.T * w) @ centred / (n - 1)


def frechet_distance(mu1: np.ndarray, s1: np.ndarray, mu2: np.ndarray, s2: np.ndarray) -> float:
    """||mu1 - mu2||² + tr(S1 + S2 - 2 (S1 S2)^½), the trace of the root from the eigenvalues of the
    symmetric S1^½ S2 S1^½ (similar to S1 S2): the value torch-fidelity's sqrtm gives, faster."""
    evals, evecs = np.linalg.eigh(s1)
    root = (evecs * np.sqrt(np.clip(evals, 0, None))) @ evecs.T
    product = np.linalg.eigvalsh(root @ s2 @ root)
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * np.sqrt(np.clip(product, 0, None)).sum())


def fid_replicates(fake: np.ndarray, real: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """FID of each resample, fake and real rows resampled together: (R,)."""
    fake, real = np.asarray(fake, np.float64), np.asarray(real, np.float64)
    out = np.empty(len(weights))
    for r, w in enumerate(weights):
        out[r] = frechet_distance(*_weighted_moments(fake, w), *_weighted_moments(real, w))
    return out


def _poly_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    # torch-fidelity's KID kernel: (x·y / d + 1)³
    return (x @ y.T / x.shape[1] + 1.0) ** 3


def kid_replicates(fake: np.ndarray, real: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """KID (torch-fidelity's unbiased MMD² with its polynomial kernel, all images in one subset) of
    each resample, fake and real rows resampled together, as if the resampled rows were the set: (R,)."""
    fake, real = np.asarray(fake, np.float64), np.asarray(real, np.float64)
    k_xx, k_yy, k_xy = _poly_kernel(fake, fake), _poly_kernel(real, real), _poly_kernel(fake, real)
    w = np.asarray(weights, np.float64)
    m = w.sum(axis=1)

    def quadratic(k: np.ndarray) -> np.ndarray:  # wᵣᵀ K wᵣ for every resample r, as one matrix product
        return ((w @ k) * w).sum(axis=1)

    def within(k: np.ndarray) -> np.ndarray:  # Σ over pairs of distinct resampled rows
        return quadratic(k) - w @ np.diag(k)

    cross = quadratic(k_xy)
    return (within(k_xx) + within(k_yy)) / (m * (m - 1)) - 2 * cross / (m * m)


# ----------------------------------------------------------------------------------------- one evaluation


@dataclass
class Evaluation:
    """One snapshot's val evaluation and the per-image data its bootstrap needs."""

    metrics: dict[str, Any]
    keys: np.ndarray
    fake_features: np.ndarray
    real_features: np.ndarray
    r_precision_hits: np.ndarray
    ratios: dict[str, tuple[np.ndarray, np.ndarray]]  # accuracy -> (hits, checks) per image

    @property
    def images(self) -> int:
        return len(self.keys)

    def has(self, metric: str) -> bool:
        if metric in ("fid", "kid_mean", "r_precision"):
            return True
        return metric in self.ratios

    def replicates(self, metric: str, weights: np.ndarray) -> np.ndarray:
        """The metric on each image resample (rows of ``weights``); ``np.ones((1, N))`` gives its value."""
        if metric == "fid":
            return fid_replicates(self.fake_features, self.real_features, weights)
        if metric == "kid_mean":
            return kid_replicates(self.fake_features, self.real_features, weights)
        if metric == "r_precision":
            return mean_replicates(self.r_precision_hits, weights)
        hits, checks = self.ratios[metric]
        return ratio_replicates(hits, checks, weights)

    def value(self, metric: str) -> float:
        return float(self.replicates(metric, np.ones((1, self.images)))[0])


def check_reproduces(ev: Evaluation, where: str) -> None:
    """The per-image data must give back the evaluation's own numbers, else the bootstrap would not be
    of what was measured (e.g. evaluate changed how it computes a metric)."""
    for metric in METRICS:
        recorded = ev.metrics.get(metric)
        if recorded is None or not ev.has(metric):
            continue
        if metric == "kid_mean" and ev.metrics.get("fid_details", {}).get("kid_subset_size", ev.images) < ev.images:
            continue  # evaluate's KID averaged subsets of fewer images; the bootstrap uses all of them
        ours = ev.value(metric)
        if not math.isclose(ours, float(recorded), rel_tol=1e-3, abs_tol=1e-4 if metric == "kid_mean" else 1e-3):
            raise VarianceError(
                f"{where}: {metric} from the saved per-image data is {ours:.6g}, the evaluation's {recorded:.6g}; "
                f"the bootstrap would not be of the measured number (delete {where} and run again; if it "
                f"persists, csfgan.evaluate computes {metric} differently from csfgan.variance)"
            )


def snapshots(run: Path) -> dict[int, Path]:
    """step -> RUN/checkpoints/generator-step<N>.pt."""
    folder = Path(run) / "checkpoints"
    found = {}
    if folder.is_dir():
        for path in folder.iterdir():
            match = SNAPSHOT.match(path.name)
            if match:
                found[int(match.group(1))] = path
    if not found:
        raise VarianceError(
            f"{run}: no generator snapshots ({folder}/generator-step<N>.pt); train the run with "
            f"train.snapshot_every > 0 (e.g. --set train.snapshot_every=100)"
        )
    return dict(sorted(found.items()))


def cache_paths(run: Path, split: str, step: int, weights: str) -> tuple[Path, Path]:
    stem = Path(run) / FOLDER / f"{split}-step{step:06d}-{weights}"
    return stem.with_suffix(".json"), stem.with_suffix(".npz")


def _read_cache(run: Path, split: str, step: int, weights: str, identity: dict[str, Any]) -> Evaluation | None:
    metrics_file, arrays_file = cache_paths(run, split, step, weights)
    if not (metrics_file.is_file() and arrays_file.is_file()):
        return None
    try:
        with np.load(arrays_file, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        metrics = json.loads(metrics_file.read_text())
        cached_identity = json.loads(str(arrays["identity"]))
    except (OSError, ValueError, KeyError, json.JSONDecodeError):
        return None  # damaged or foreign: evaluated again
    if cached_identity != identity:
        return None  # another checkpoint (retrained run) or other metric networks
    return _evaluation(metrics, arrays)


def _evaluation(metrics: dict[str, Any], arrays: dict[str, np.ndarray]) -> Evaluation:
    ratios = {}
    for metric, prefix in per_image.RATIO_METRICS.items():
        if f"{prefix}_image" in arrays:
            ratios[metric] = per_image.per_image_values(arrays, metric)
    return Evaluation(metrics, arrays["keys"], arrays["fake_features"], arrays["real_features"],
                      arrays["r_precision_hits"], ratios)


def evaluate_snapshot(run: Path, step: int, checkpoint: Path, weights: str, *, split: str, identity: dict[str, Any],
                      feature_net: Path | None, eval_text_encoder: Path, device: str = "cpu",
                      batch_size: int | None = None, progress: bool = True) -> tuple[Evaluation, bool]:
    """One snapshot's evaluation, from the cache when it holds this checkpoint under these metric
    networks; returns it and whether it was cached."""
    from csfgan.evaluate import evaluate

    cached = _read_cache(run, split, step, weights, identity)
    if cached is not None:
        return cached, True
    metrics_file, arrays_file = cache_paths(run, split, step, weights)
    metrics = evaluate(run, metrics_file, checkpoint=checkpoint, weights=weights, folder=SCRATCH, split=split,
                       save_images=False, progress=progress, feature_net=feature_net,
                       eval_text_encoder=eval_text_encoder, device=device, batch_size=batch_size)
    scratch = Path(run) / SCRATCH / per_image.FILE
    try:
        with np.load(scratch, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError) as exc:
        raise VarianceError(f"{scratch}: evaluate's per-image metrics are unreadable ({exc})") from exc
    # evaluate keeps the rows FID/KID and R-precision were computed from (per_image.npz).
    missing = {"fid_fake_features", "fid_real_features", "r_precision_hit"} - set(arrays)
    if missing:
        raise VarianceError(f"{scratch}: no {sorted(missing)}; it was written by an older csfgan evaluate")
    arrays.update(fake_features=arrays.pop("fid_fake_features"), real_features=arrays.pop("fid_real_features"),
                  r_precision_hits=arrays.pop("r_precision_hit").astype(bool),
                  identity=np.asarray(json.dumps(identity, sort_keys=True)))
    result = _evaluation(metrics, arrays)
    check_reproduces(result, str(metrics_file))
    _write_npz(arrays_file, arrays)
    return result, False


def _write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    from csfgan.io import atomic_path, writing

    with writing(path):
        tmp, commit = atomic_path(path)
        try:
            with open(tmp, "wb") as fh:
                np.savez_compressed(fh, **arrays)
            commit()
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise


# ----------------------------------------------------------------------------------------- the decomposition


def _sd(x: np.ndarray, axis: int | None = None) -> np.ndarray:
    """Sample SD (ddof 1) over the finite values, NaN where fewer than two."""
    x = np.asarray(x, float)
    finite = np.isfinite(x)
    count = finite.sum(axis=axis)
    filled = np.where(finite, x, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = filled.sum(axis=axis, keepdims=True) / finite.sum(axis=axis, keepdims=True)
        ss = (np.where(finite, x - mean, 0.0) ** 2).sum(axis=axis)
        return np.where(count >= 2, np.sqrt(ss / np.maximum(count - 1, 1)), np.nan)


def decompose(values: np.ndarray, replicates: np.ndarray, *, last: int, per_image_metric: bool,
              ci_seeds: int = CI_SEEDS) -> dict[str, np.ndarray]:
    """The components at every step from one arm's numbers.

    ``values`` (S seeds, T steps): the metric of each snapshot; ``replicates`` (S, T, R): its value on
    R image resamples (the same resamples for every seed and step). Returns arrays (T,) named as the
    module docstring describes, plus ``mean`` (over seeds), ``se_images`` (bootstrap SD of the seed
    mean), ``sd_image_shared`` (the part of the image noise common to every seed, which the seed SD
    does not contain: the image term of the tables' per-image intervals) and ``window`` (snapshots in
    the checkpoint window).
    """
    values = np.asarray(values, float)
    replicates = np.asarray(replicates, float)
    s, t = values.shape
    if replicates.shape[:2] != (s, t):
        raise ValueError(f"replicates {replicates.shape} do not match values {values.shape} (seeds, steps)")
    if last < 2:
        raise ValueError(f"the checkpoint window needs at least 2 snapshots; got last={last}")
    with np.errstate(invalid="ignore"):
        var_one = _sd(replicates, axis=2) ** 2  # (S, T): image variance of one evaluation
        var_seed_mean = _sd(np.nanmean(replicates, axis=0), axis=1) ** 2  # (T,)
        sd_test = np.sqrt(np.nanmean(var_one, axis=0)) if s else np.full(t, np.nan)
        # rep[s, r] = v_s + c_r + u_sr: var(one) = c² + u², var(seed mean) = c² + u²/S
        interaction = (np.nanmean(var_one, axis=0) - var_seed_mean) * s / (s - 1) if s >= 2 else np.full(t, np.nan)
        shared = var_seed_mean - np.clip(interaction, 0, None) / s if s >= 2 else var_seed_mean
    out: dict[str, np.ndarray] = {
        "mean": values.mean(axis=0),
        "sd_test_sample": sd_test,
        "sd_seed_x_image": np.sqrt(np.clip(interaction, 0, None)),
        "se_images": np.sqrt(var_seed_mean),
        "sd_image_shared": np.sqrt(np.clip(shared, 0, None)),
        "sd_seed": _sd(values, axis=0) if s >= 2 else np.full(t, np.nan),
        "sd_checkpoint": np.full(t, np.nan),
        "sd_seed_beyond_checkpoint": np.full(t, np.nan),
        "window": np.zeros(t, dtype=int),
    }
    for j in range(t):
        window = values[:, max(0, j - last + 1): j + 1]
        k = window.shape[1]
        out["window"][j] = k
        if k < 2:
            continue
        within = float(np.mean(_sd(window, axis=1) ** 2))
        out["sd_checkpoint"][j] = math.sqrt(within)
        if s >= 2:
            between = float(_sd(window.mean(axis=1)) ** 2)
            out["sd_seed_beyond_checkpoint"][j] = math.sqrt(max(0.0, between - within / k))
    t_crit = float(scipy_stats.t.ppf(0.975, ci_seeds - 1))
    # The seed SD holds the seed x image part already; the shared image part is added once (per-image metrics).
    var_ci = out["sd_seed"] ** 2 / ci_seeds + (out["sd_image_shared"] ** 2 if per_image_metric else 0.0)
    out["ci95_half_width_3seeds"] = t_crit * np.sqrt(var_ci)
    return out


# ----------------------------------------------------------------------------------------- the command


def _identity(checkpoint: Path, split: str, weights: str, feature_net_sha: str | None, eval_text_sha: str) -> dict:
    return {"format": CACHE_FORMAT, "split": split, "weights": weights, "checkpoint": checkpoint.name,
            "checkpoint_sha256": file_sha256(checkpoint), "feature_net_sha256": feature_net_sha,
            "eval_text_encoder_sha256": eval_text_sha}


def find_runs(runs: Path, dataset: str, variants: Sequence[str],
              seeds: Sequence[int] | None) -> dict[str, dict[int, Path]]:
    """variant -> seed -> run directory, ``RUNS/<dataset>/<variant>/seed<k>`` (the DAG's layout)."""
    root = Path(runs) / dataset
    if not root.is_dir():
        raise VarianceError(f"{root}: no runs of {dataset} (runs are RUNS/<dataset>/<variant>/seed<k>)")
    if seeds is None:
        first = root / variants[0]
        seeds = sorted(int(m.group(1)) for p in (first.iterdir() if first.is_dir() else [])
                       if (m := re.fullmatch(r"seed(\d+)", p.name)) and p.is_dir())
        if not seeds:
            raise VarianceError(f"{first}: no seed<k> run folders of variant {variants[0]}")
    found: dict[str, dict[int, Path]] = {}
    for variant in variants:
        found[variant] = {}
        for seed in seeds:
            run = root / variant / f"seed{seed}"
            if not run.is_dir():
                raise VarianceError(f"{run}: seed {seed} of {variant} is missing (train it, or leave seed {seed} "
                                    f"out with --seeds)")
            found[variant][seed] = run
    return found


def _check_ema(run: Path) -> None:
    config = run / "config.json"
    try:
        half_life = json.loads(config.read_text())["config"]["train"].get("ema_half_life_images", 0)
    except (OSError, ValueError, KeyError, TypeError):
        return  # evaluate says what is wrong with the checkpoint itself
    if not half_life:
        raise VarianceError(f"{run}: trained without an averaged generator (train.ema_half_life_images is 0 in "
                            f"{config}), so it has no EMA weights; ask for --weights raw, or train with "
                            f"train.ema_half_life_images > 0")


def _metric_file(path: str | Path | None, dataset: str, what: str, flag: str) -> Path | None:
    if path is None or str(path) == "":
        return None  # '' for --feature-net: FID on TF-Inception, whose weights are here
    path = Path(str(path).format(dataset=dataset))
    if not path.is_file():
        raise VarianceError(f"{flag} {path}: no such file ({what})")
    return path


def _say(progress: bool, text: str) -> None:
    if progress:
        print(f"csfgan variance: {text}", file=sys.stderr, flush=True)


def variance(runs: Path, dataset: str, variants: Sequence[str], out: Path, *, seeds: Sequence[int] | None = None,
             split: str = "val", last: int = 3, weights: Sequence[str] = ("raw",),
             feature_net: str | Path | None = "results/feature_net/{dataset}.pt",
             eval_text_encoder: str | Path = "results/text_encoder/{dataset}.eval.pt", device: str = "cpu",
             batch_size: int | None = None, bootstrap: int = 500, progress: bool = True) -> list[Path]:
    """Evaluate every snapshot, decompose, and write OUT.csv, OUT.md, OUT.png and OUT.pdf; returns them.

    ``variants``: one or two names; with two, the arm ``first - second`` is added (paired by seed and
    image). ``feature_net`` / ``eval_text_encoder`` may contain ``{dataset}``.
    """
    if split == "test":
        raise VarianceError(
            "--split test: the variance budget informs choices (how many seeds and steps, which checkpoint and "
            "weights), and choices are made on the val split; the test split gives the final numbers only. "
            "Use --split val"
        )
    if split != "val":
        raise VarianceError(f"--split {split!r}: the variance budget measures the val split")
    variants = list(variants)
    if not 1 <= len(variants) <= 2 or len(set(variants)) != len(variants):
        raise VarianceError(f"--variants {' '.join(variants)}: give one variant, or two distinct ones to compare "
                            f"(first - second)")
    bad = [w for w in weights if w not in WEIGHTS]
    if bad or not weights:
        raise VarianceError(f"--weights {' '.join(weights)}: choose from {', '.join(WEIGHTS)}")
    if last < 2:
        raise VarianceError(f"--last {last}: the checkpoint spread needs at least 2 snapshots")
    if bootstrap < 20:
        raise VarianceError(f"--bootstrap {bootstrap}: use at least 20 resamples (500 is the default)")
    feature_path = _metric_file(feature_net, dataset, "the FID/KID feature network, `csfgan train-features`",
                                "--feature-net")
    text_path = _metric_file(eval_text_encoder, dataset, "R-precision's DAMSM pair, `csfgan pretrain-text --seed 1`",
                             "--eval-text-encoder")
    if text_path is None:
        raise VarianceError("--eval-text-encoder is required (R-precision's DAMSM pair, "
                            "`csfgan pretrain-text --seed 1`)")

    found = find_runs(runs, dataset, variants, seeds)
    seeds = sorted(next(iter(found.values())))
    run_steps = {run: snapshots(run) for per_seed in found.values() for run in per_seed.values()}
    steps = sorted(set.intersection(*(set(s) for s in run_steps.values())))
    if not steps:
        listing = "; ".join(f"{run}: {sorted(s)}" for run, s in run_steps.items())
        raise VarianceError(f"the runs share no snapshot step ({listing}); train them with the same "
                            f"train.snapshot_every")
    dropped = sorted(set().union(*(set(s) for s in run_steps.values())) - set(steps))
    if "ema" in weights:
        for run in run_steps:
            _check_ema(run)

    feature_sha = file_sha256(feature_path) if feature_path is not None else None
    text_sha = file_sha256(text_path)
    evaluations: dict[tuple[str, int, int, str], Evaluation] = {}
    total = len(run_steps) * len(steps) * len(weights)
    done = 0
    for variant, per_seed in found.items():
        for seed, run in per_seed.items():
            with output_lock(run / FOLDER, command_line()):
                for step in steps:
                    for w in weights:
                        done += 1
                        identity = _identity(run_steps[run][step], split, w, feature_sha, text_sha)
                        ev, cached = evaluate_snapshot(run, step, run_steps[run][step], w, split=split,
                                                       identity=identity, feature_net=feature_path,
                                                       eval_text_encoder=text_path, device=device,
                                                       batch_size=batch_size, progress=False)
                        evaluations[variant, seed, step, w] = ev
                        _say(progress, f"[{done}/{total}] {run} step {step} {w}: "
                                       f"{'cached' if cached else 'evaluated'} (FID {ev.metrics['fid']:.3f})")

    table = budget_table(evaluations, dataset=dataset, variants=variants, seeds=seeds, steps=steps, weights=weights,
                         last=last, bootstrap=bootstrap)
    context = {"dataset": dataset, "runs": str(runs), "variants": variants, "seeds": seeds, "steps": steps,
               "dropped_steps": dropped, "weights": list(weights), "split": split, "last": last,
               "bootstrap": bootstrap, "images": int(table["images"].iloc[0]),
               "fid_features": next(iter(evaluations.values())).metrics.get("fid_features")}
    return write_budget(table, Path(out), context)


def arm_name(variants: Sequence[str]) -> list[str]:
    return list(variants) + ([f"{variants[0]} - {variants[1]}"] if len(variants) == 2 else [])


def budget_table(evaluations: dict[tuple[str, int, int, str], Evaluation], *, dataset: str, variants: Sequence[str],
                 seeds: Sequence[int], steps: Sequence[int], weights: Sequence[str], last: int,
                 bootstrap: int) -> pd.DataFrame:
    """One row per metric, arm, weights and step: the decomposition of :func:`decompose`."""
    first = next(iter(evaluations.values()))
    for key, ev in evaluations.items():
        if not np.array_equal(ev.keys, first.keys):
            raise VarianceError(f"{ev.metrics.get('run')} (step {key[2]}, {key[3]}) was evaluated on other val images "
                                f"than {first.metrics.get('run')}: a paired budget needs runs trained on the same "
                                f"prepared data")
    n = first.images
    resamples = bootstrap_weights(n, bootstrap)
    metrics = [m for m in METRICS if all(ev.has(m) for ev in evaluations.values())]
    rows = []
    for w in weights:
        for metric in metrics:
            values, reps = {}, {}
            for variant in variants:
                values[variant] = np.array([[evaluations[variant, s, t, w].value(metric) for t in steps]
                                            for s in seeds])
                reps[variant] = np.array([[evaluations[variant, s, t, w].replicates(metric, resamples) for t in steps]
                                          for s in seeds])
            arms = {v: (values[v], reps[v]) for v in variants}
            if len(variants) == 2:
                a, b = variants
                arms[f"{a} - {b}"] = (values[a] - values[b], reps[a] - reps[b])
            for arm, (v, r) in arms.items():
                parts = decompose(v, r, last=last, per_image_metric=metric in PER_IMAGE_METRICS)
                for j, step in enumerate(steps):
                    rows.append({"dataset": dataset, "metric": metric, "arm": arm, "weights": w, "step": step,
                                 "seeds": len(seeds), "images": n, "window": int(parts["window"][j]),
                                 "mean": parts["mean"][j], **{c: parts[c][j] for c in COMPONENTS},
                                 "sd_image_shared": parts["sd_image_shared"][j],
                                 "ci95_half_width_3seeds": parts["ci95_half_width_3seeds"][j]})
    rank = {name: i for i, name in enumerate([*METRICS, *arm_name(variants), *weights])}

    def in_order(column: pd.Series) -> pd.Series:  # metrics, arms and weights as given; steps ascending
        return column if column.name == "step" else column.map(rank)

    frame = pd.DataFrame(rows)
    return frame.sort_values(["metric", "arm", "weights", "step"], key=in_order, kind="stable").reset_index(drop=True)


def largest_component(row: pd.Series) -> str:
    """Which of the three separable sources is largest in a row: test sample, checkpoint or seed."""
    candidates = {"test sample": row["sd_test_sample"], "checkpoint": row["sd_checkpoint"],
                  "seed": row["sd_seed_beyond_checkpoint"]}
    finite = {k: v for k, v in candidates.items() if v is not None and np.isfinite(v)}
    if not finite or max(finite.values()) == 0:
        return "—"
    return max(finite, key=finite.get)


def _fmt(x: float, metric: str) -> str:
    if x is None or not np.isfinite(x):
        return "—"
    digits = 5 if metric == "kid_mean" else (3 if metric in ("fid",) else 4)
    return f"{x:.{digits}f}"


def _md_table(frame: pd.DataFrame, columns: list[tuple[str, str]]) -> list[str]:
    lines = ["| " + " | ".join(title for _, title in columns) + " |",
             "| " + " | ".join(":---" if key in ("metric", "arm", "weights", "largest") else "---:"
                               for key, _ in columns) + " |"]
    for _, row in frame.iterrows():
        cells = []
        for key, _ in columns:
            value = row[key]
            if key == "metric":
                cells.append(METRICS[value])
            elif key in ("arm", "weights", "largest"):
                cells.append(str(value))
            elif key in ("step", "window", "seeds", "images"):
                cells.append(str(int(value)))
            else:
                cells.append(_fmt(value, row["metric"]))
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def render_markdown(table: pd.DataFrame, context: dict[str, Any]) -> str:
    c = context
    arms = list(dict.fromkeys(table["arm"]))
    final = table[table["step"] == max(c["steps"])].copy()
    final["largest"] = final.apply(largest_component, axis=1)
    components = [("sd_test_sample", "SD test sample"), ("sd_seed_x_image", "of which seed × image"),
                  ("sd_checkpoint", "SD checkpoint"), ("sd_seed", "SD seed"),
                  ("sd_seed_beyond_checkpoint", "SD seed beyond checkpoint"),
                  ("ci95_half_width_3seeds", "95 % CI ± (3 seeds)")]
    lines = [
        f"# Variance budget: {c['dataset']}, {c['split']} split",
        "",
        f"Runs `{c['runs']}/{c['dataset']}/<variant>/seed<k>`; arms {', '.join(arms)}; seeds "
        f"{', '.join(map(str, c['seeds']))}; snapshot steps {', '.join(map(str, c['steps']))}"
        + (f" (steps not in every run, left out: {', '.join(map(str, c['dropped_steps']))})" if c["dropped_steps"]
           else "")
        + f"; weights {', '.join(c['weights'])}; {c['images']} val images; checkpoint window the last "
        f"{c['last']} snapshots; {c['bootstrap']} image resamples. FID and KID on {c['fid_features']} features. "
        f"Evaluated on the val split only: choices are made there, never on test.",
        "",
        "What each column holds (`csfgan/variance.py`):",
        "",
        "- **SD test sample**: the SD of one evaluation's number under a bootstrap over the val images "
        "(FID/KID recomputed from the fake and real feature rows resampled together, R-precision from "
        "per-image hits, the accuracies as resampled hits / checks), RMS over seeds: what another draw of "
        "as many images would move it by. For an `A - B` arm the same resamples serve both arms (paired).",
        "- **of which seed × image**: the part of it that differs between seeds. Every evaluation uses the same "
        "images and captions, so only this part is inside the checkpoint and seed SDs; the rest is common to "
        "all evaluations and cancels from their spread.",
        f"- **SD checkpoint**: the SD across the last {c['last']} snapshots of one run (up to that step), pooled "
        "over seeds; on the fixed images, and including any drift over the window.",
        "- **SD seed**: the SD across seeds of one snapshot each at that step (what the tables' intervals rest "
        "on); it includes one snapshot's checkpoint noise and the seed × image part.",
        "- **SD seed beyond checkpoint**: seed-to-seed SD with the checkpoint noise removed (one-way ANOVA over "
        "the window: var of the per-seed window means minus SD checkpoint² / window, floored at 0). It rests on "
        "the window's means, not on the one step, so with few seeds it can exceed SD seed by chance.",
        "- **95 % CI ± (3 seeds)**: t(0.975, 2) · √(SD seed² / 3 [+ the image noise shared by every seed, "
        "SD test sample² − (seed × image)², for the accuracies]): the standard error the tables use "
        "(`csfgan/report/stats.py`: paired t over seeds for FID, KID and R-precision, seeds × images for the "
        "accuracies, whose Satterthwaite df ≥ 2 makes their intervals at most this wide). For an `A - B` arm "
        "the paired comparison's half-width (what Table 3's † needs to exclude 0), for one arm the ± of its "
        "3-seed mean. FID, KID and R-precision intervals do not cover another draw of test images: that is "
        "SD test sample.",
        "",
        f"With {len(c['seeds'])} seeds, SDs across seeds rest on {len(c['seeds']) - 1} degree(s) of freedom: "
        "read them as orders of magnitude.",
        "",
        f"## At the last step ({max(c['steps'])})",
        "",
        *_md_table(final, [("metric", "metric"), ("arm", "arm"), ("weights", "weights"), ("mean", "mean"),
                           *components, ("largest", "largest source")]),
        "",
        "## Every step",
        "",
    ]
    for metric in dict.fromkeys(table["metric"]):
        lines += [f"### {METRICS[metric]}", "",
                  *_md_table(table[table["metric"] == metric],
                             [("arm", "arm"), ("weights", "weights"), ("step", "step"), ("mean", "mean"),
                              *components]), ""]
    return "\n".join(lines)


def write_budget(table: pd.DataFrame, out: Path, context: dict[str, Any]) -> list[Path]:
    from csfgan.report.variance_figure import budget_figure

    out = Path(out)
    csv_path, md_path, json_path = (Path(f"{out}.{ext}") for ext in ("csv", "md", "json"))
    write_text(csv_path, table.to_csv(index=False, float_format="%.6g"))
    write_text(md_path, render_markdown(table, context) + "\n")
    write_json(json_path, context)
    return [csv_path, md_path, json_path, *budget_figure(table, out, context)]

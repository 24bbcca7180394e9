"""The FID/KID feature network when there are no Inception weights: a species classifier that no loss uses.

FID is only meaningful on features the generator was not optimised towards. Offline, the DAMSM image
encoder is what the perceptual loss falls back to (and what trains the text encoder the generator is
conditioned on), so FID on its features is partly the training objective. This module trains a
separate small CNN, from scratch and for classification only, on the dataset's train split:

* species (every dataset);
* on the synthetic sets also every part colour (``manifest["colour_attributes"]``), one head each,
  so the features must see the colours the captions talk about, not only what separates species.

Its global-average-pooled penultimate layer (:meth:`SpeciesClassifier.global_features`) is the FID/KID
feature, as Inception's pool3 is. Test species are disjoint from train species, so species accuracy
is measured on images of train species held out from training (a seeded eighth per species); the
colour heads are also scored on the test split, whose colours are all seen in training.

``csfgan train-features`` writes one self-describing checkpoint (tensors and plain data only, read
with ``torch.load(weights_only=True)``, on the CPU whatever ``--device`` trained it) and a metrics JSON
beside it. Its resumable state is kept beside the checkpoint (:mod:`csfgan.job_state`), saved by time
and on SIGTERM, SIGUSR1 or Ctrl-C: a job killed at its time limit continues when submitted again, to
the weights (on CPU bit for bit) an uninterrupted run ends with.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import csfgan
from csfgan.checkpoint import save_checkpoint
from csfgan.config import ScaleConfig
from csfgan.data.prepared import PreparedData, PreparedDataError
from csfgan.errors import UserError
from csfgan.io import remove_stale_temporaries, write_json
from csfgan.job_state import StateSaver, load_state, random_state, save_state, set_random_state, state_path, to_cpu
from csfgan.lock import command_line, output_lock
from csfgan.signals import deferred_stop

KIND = "csfgan-feature-net"
STATE_KIND = "csfgan-feature-net-state"
COMMAND = "train-features"
NAME = "species-classifier"  # the ``fid_features`` label of FIDs measured on this network
HELD_OUT_FRACTION = 1 / 8
# Measured on synth-birds at 64 px, 1 thread: see README ("Honest labels") for time and accuracy.
EPOCHS = 3
MIN_STEPS = 150  # tiny (smoke) sets: enough updates to learn the colour heads
BATCH_SIZE = 64
LR = 2e-3


class FeatureNetError(UserError, RuntimeError):
    """A feature-network checkpoint is missing, unreadable, or made for other data."""


def _block(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


class SpeciesClassifier(nn.Module):
    """A small CNN: stride-2 stages from the input resolution down to 4×4, pooled, and linear heads.

    ``heads`` maps a head name (``species``, ``<attribute>``) to its number of classes. Widths double
    per stage from ``width`` up to ``8 * width``; the pooled feature has ``feature_dim`` channels.
    Images are in [−1, 1].
    """

    def __init__(self, resolution: int, heads: dict[str, int], width: int = 16):
        super().__init__()
        if resolution < 16 or resolution & (resolution - 1):
            raise ValueError(f"the feature network needs a power-of-two resolution >= 16, got {resolution}")
        self.resolution, self.width, self.heads = resolution, width, dict(heads)
        stages = int(math.log2(resolution // 4))
        layers, cin = [], 3
        for k in range(stages):
            cout = min(width << k, 8 * width)
            layers += [_block(cin, cout, 2), _block(cout, cout, 1)] if k else [_block(cin, cout, 2)]
            cin = cout
        self.trunk = nn.Sequential(*layers)
        self.feature_dim = cin
        self.classifiers = nn.ModuleDict({name: nn.Linear(cin, n) for name, n in self.heads.items()})

    def config(self) -> dict[str, Any]:
        return {"resolution": self.resolution, "heads": dict(self.heads), "width": self.width}

    def global_features(self, images: torch.Tensor) -> torch.Tensor:
        """The FID/KID feature: the pooled last stage, ``(B, feature_dim)``."""
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be (batch, 3, H, W), got shape {tuple(images.shape)}")
        return self.trunk(images).mean(dim=(2, 3))

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self.global_features(images)
        return {name: head(features) for name, head in self.classifiers.items()}


# --------------------------------------------------------------------------------------------
# Labels and the held-out split.


def _labels(data: PreparedData, split: str) -> tuple[dict[str, np.ndarray], dict[str, list[str]]]:
    """Integer labels per head for ``split`` and, for the colour heads, their value names.

    Species are numbered over the train split's classes; on the test split only the colour heads
    have labels (test species are new).
    """
    s = data.split(split)
    labels: dict[str, np.ndarray] = {}
    if split == "train":
        classes = np.unique(data.split("train").class_ids)
        labels["species"] = np.searchsorted(classes, s.class_ids).astype(np.int64)
    values: dict[str, list[str]] = {}
    if "colour_attributes" in data.manifest:
        attributes = s.attributes
        for attribute in sorted(data.manifest["colour_attributes"]):
            names = list(data.manifest["attribute_values"][attribute])
            index = {v: i for i, v in enumerate(names)}
            labels[attribute] = np.array([index[a[attribute]] for a in attributes], dtype=np.int64)
            values[attribute] = names
    return labels, values


def held_out_split(class_ids: np.ndarray, seed: int,
                   fraction: float = HELD_OUT_FRACTION) -> tuple[np.ndarray, np.ndarray]:
    """(fit, held-out) indices: a seeded ``fraction`` of each species' images held out (at least one
    where a species has two or more images), so held-out accuracy is on species seen in training."""
    rng = np.random.default_rng(seed)
    fit, held = [], []
    for c in np.unique(class_ids):
        idx = rng.permutation(np.flatnonzero(class_ids == c))
        k = min(len(idx) - 1, max(1, round(fraction * len(idx)))) if len(idx) > 1 else 0
        held.append(idx[:k])
        fit.append(idx[k:])
    return np.sort(np.concatenate(fit)), np.sort(np.concatenate(held))


def _images(split_images: np.ndarray, idx: np.ndarray) -> torch.Tensor:
    """uint8 (N, H, W, 3) rows ``idx`` (sorted, for the memory map) -> float (N, 3, H, W) in [−1, 1]."""
    batch = torch.from_numpy(np.ascontiguousarray(split_images[idx]))
    return batch.permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)


@torch.no_grad()
def accuracies(net: SpeciesClassifier, images: np.ndarray, idx: np.ndarray, labels: dict[str, np.ndarray],
               batch_size: int = 256) -> dict[str, float]:
    """Top-1 accuracy of each head in ``labels`` on rows ``idx``, on the device ``net`` is on."""
    dev = next(net.parameters()).device
    was = net.training
    net.eval()
    correct = {name: 0 for name in labels}
    try:
        for start in range(0, len(idx), batch_size):
            rows = idx[start:start + batch_size]
            logits = net(_images(images, rows).to(dev))
            for name in labels:
                correct[name] += int((logits[name].argmax(1).cpu().numpy() == labels[name][rows]).sum())
    finally:
        net.train(was)
    return {name: correct[name] / max(1, len(idx)) for name in labels}


# --------------------------------------------------------------------------------------------
# Training.


def _check_data(data: PreparedData, scale: ScaleConfig) -> None:
    if data.resolution != scale.resolution:
        raise PreparedDataError(
            f"{data.root} holds {data.resolution} px images but scale {scale.name!r} is {scale.resolution} px: "
            f"prepare the dataset with this scale, or pass the scale it was prepared with"
        )
    if len(data.split("train")) < 2:
        raise PreparedDataError(f"{data.root}: the feature network needs at least 2 training images")


def train_feature_net(data_root: Path, scale: ScaleConfig, out: Path, *, seed: int = 0, epochs: int | None = None,
                      progress: bool = True, device: str = "cpu", save_every_minutes: float = 10.0) -> dict[str, Any]:
    """Train the classifier on ``data_root``'s train split; write ``out`` and ``<out stem>.metrics.json``.

    ``device`` is what ``--device`` takes (auto, cpu, cuda, cuda:N). The resumable state
    ``.<out name>.state.pt`` is saved every ``save_every_minutes`` (0: never by time) and at SIGTERM,
    SIGUSR1 or Ctrl-C (then the command stops with 128 + the signal's number); a call with the same
    data, settings, seed and device type continues from it, and writing ``out`` removes it. Holds the
    lock of ``out`` throughout. Returns the metrics: held-out accuracy per head, chance per head,
    test-split colour accuracy (synthetic sets), the training schedule and wall time.
    """
    from csfgan.runtime import resolve_device

    epochs = EPOCHS if epochs is None else epochs
    if epochs < 1:
        raise UserError(f"--epochs must be at least 1, got {epochs}")
    if save_every_minutes < 0:
        raise UserError(f"--save-every-minutes {save_every_minutes:g}: must be 0 (never by time) or positive")
    data = PreparedData(Path(data_root))
    _check_data(data, scale)
    out = Path(out)
    if out.is_dir():
        raise UserError(f"--out {out} is a folder: give the checkpoint file to write, e.g. {out / 'feature_net.pt'}")
    dev = resolve_device(device)
    with output_lock(out, command_line()):
        remove_stale_temporaries(out.parent, (out.name, metrics_path(out).name, state_path(out).name))
        return _train_locked(data, scale, out, seed, epochs, progress, dev, save_every_minutes)


@dataclass
class _Position:
    """Where training stands at a step boundary: what its state saves besides network, optimiser, schedule
    and random streams. Batches are consecutive slices of a seeded order of the fit images, drawn anew
    when the next slice would not fit (a pass, "epoch" in messages)."""

    step: int = 0  # steps finished
    cycle: int = 0  # passes begun
    order: torch.Tensor | None = None  # the pass under way's order (None before the first)
    pos: int = 0  # images of it used
    seconds: float = 0.0  # training time of the calls before this one


def _train_locked(data: PreparedData, scale: ScaleConfig, out: Path, seed: int, epochs: int, progress: bool,
                  dev: torch.device, save_every_minutes: float) -> dict[str, Any]:
    from tqdm import tqdm

    train = data.split("train")
    labels, values = _labels(data, "train")
    fit, held = held_out_split(train.class_ids, seed)
    heads = {"species": int(labels["species"].max()) + 1, **{a: len(v) for a, v in values.items()}}

    torch.manual_seed(seed)
    net = SpeciesClassifier(data.resolution, heads).to(dev)
    batch_size = min(BATCH_SIZE, len(fit))
    steps = max(MIN_STEPS, epochs * (len(fit) // batch_size))
    optimizer = torch.optim.Adam(net.parameters(), lr=LR)
    # Linear decay to zero: a short schedule ends on its best weights without tuning a step size.
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1 - s / steps)
    rng = np.random.default_rng(seed)
    flips = torch.Generator().manual_seed(seed)
    # Everything that decides the weights: a saved state of another job is not resumed.
    identity = {"data_manifest_sha256": data.manifest_sha256, "network": NAME, "config": net.config(),
                "settings": {"steps": steps, "batch_size": batch_size, "lr": LR,
                             "held_out_fraction": HELD_OUT_FRACTION},
                "seed": seed, "resolution": data.resolution, "device_type": dev.type}
    where = state_path(out)
    at, resumed_from = _Position(), []
    state = load_state(where, STATE_KIND, identity,
                       ("net", "optimizer", "schedule", "order_rng", "flip_rng", "random", "position"), COMMAND)
    if state is not None:
        net.load_state_dict(state["net"])
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        rng.bit_generator.state = state["order_rng"]
        flips.set_state(state["flip_rng"])
        set_random_state(state["random"], dev)
        at = _Position(**state["position"])
        resumed_from = [*state.get("resumed_from", []), _describe(at, batch_size)]
        print(f"csfgan {COMMAND}: resuming from {resumed_from[-1]} (step {at.step} of {steps}) saved in {where}",
              file=sys.stderr, flush=True)
    saver = StateSaver(COMMAND, where, save_every_minutes)
    started = time.perf_counter()

    def save() -> float:
        position = {"step": at.step, "cycle": at.cycle, "order": at.order, "pos": at.pos,
                    "seconds": at.seconds + time.perf_counter() - started}
        return save_state(where, STATE_KIND, identity, {
            "net": net.state_dict(), "optimizer": optimizer.state_dict(), "schedule": schedule.state_dict(),
            "order_rng": rng.bit_generator.state, "flip_rng": flips.get_state(), "random": random_state(dev),
            "position": position, "resumed_from": resumed_from})

    net.train()
    bar = tqdm(total=steps, initial=at.step, desc=f"feature net {data.name}", unit="step", disable=not progress,
               dynamic_ncols=True)
    with bar, deferred_stop() as stop:
        while at.step < steps:
            if at.order is None or at.pos + batch_size > len(at.order):
                at.order, at.pos, at.cycle = torch.from_numpy(rng.permutation(fit)), 0, at.cycle + 1
            rows = np.sort(at.order[at.pos:at.pos + batch_size].numpy())
            at.pos += batch_size
            images = _images(train.images, rows)
            # Mirror half the batch: birds and flowers face either way; colours, what FID must see, stay.
            # On the CPU, where the flip draws are made; then one synchronous copy (nothing is pinned).
            flip = torch.rand(len(rows), generator=flips) < 0.5
            images[flip] = images[flip].flip(-1)
            logits = net(images.to(dev))
            loss = sum(F.cross_entropy(logits[name], torch.from_numpy(labels[name][rows]).to(dev)) for name in heads)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            at.step += 1
            bar.update()
            saver.step_done(stop, save, lambda: _describe(at, batch_size))
    train_seconds = at.seconds + time.perf_counter() - started
    net.eval().requires_grad_(False)

    held_acc = accuracies(net, train.images, held, labels)
    metrics: dict[str, Any] = {
        "network": NAME,
        "dataset": data.name,
        "scale": scale.name,
        "seed": seed,
        "heads": heads,
        "feature_dim": net.feature_dim,
        "fit_images": len(fit),
        "held_out_images": len(held),
        "held_out_accuracy": held_acc,
        "chance": {name: 1.0 / n for name, n in heads.items()},
        "steps": steps,
        "epochs": round(steps * batch_size / len(fit), 2),
        "batch_size": batch_size,
        "lr": LR,
        "threads": torch.get_num_threads(),
        "device": str(dev),
        "train_seconds": round(train_seconds, 2),
        "resumed_from": resumed_from,
    }
    if values:
        test = data.split("test")
        test_labels, _ = _labels(data, "test")
        metrics["test_split_colour_accuracy"] = accuracies(net, test.images, np.arange(len(test)), test_labels)
    checkpoint = {
        "kind": KIND,
        "network": NAME,
        "state_dict": to_cpu(net.state_dict()),
        "config": net.config(),
        "head_values": values,
        "dataset": data.name,
        "resolution": data.resolution,
        "data_manifest_sha": data.manifest_sha256,
        "scale": scale.name,
        "seed": seed,
        "metrics": metrics,
        "versions": {"torch": str(torch.__version__), "csfgan": csfgan.__version__},
    }
    save_checkpoint(checkpoint, out)
    write_json(metrics_path(out), metrics)
    where.unlink(missing_ok=True)  # the result is written: the intermediate state has done its job
    return metrics


def _describe(at: _Position, batch_size: int) -> str:
    """"epoch E step S": S steps of pass E done."""
    return f"epoch {at.cycle} step {at.pos // batch_size}"


def metrics_path(checkpoint: Path) -> Path:
    checkpoint = Path(checkpoint)
    return checkpoint.with_name(f"{checkpoint.stem}.metrics.json")


# --------------------------------------------------------------------------------------------
# Loading.


def load_feature_net(path: Path, data: PreparedData | None = None) -> tuple[SpeciesClassifier, dict[str, Any]]:
    """The trained network (eval mode, gradients off) and its checkpoint dict.

    With ``data``, the checkpoint must have been trained on that dataset at its resolution.
    """
    path = Path(path)
    if not path.is_file():
        raise FeatureNetError(f"{path}: no such feature-network checkpoint: train one with `csfgan train-features`")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for truncated, foreign or pickled-code files
        raise FeatureNetError(
            f"{path}: not a readable feature-network checkpoint ({type(exc).__name__}; only tensors and plain "
            f"data are loaded, never pickled code): delete it and run `csfgan train-features` again"
        ) from exc
    kind = ckpt.get("kind") if isinstance(ckpt, dict) else type(ckpt).__name__
    if kind != KIND:
        raise FeatureNetError(f"{path}: not a feature-network checkpoint (kind {kind!r}, expected {KIND!r})")
    if data is not None and (ckpt.get("dataset") != data.name or ckpt.get("resolution") != data.resolution):
        raise FeatureNetError(
            f"{path}: trained on {ckpt.get('dataset')!r} at {ckpt.get('resolution')} px, but the run's data is "
            f"{data.name!r} at {data.resolution} px: train the feature network on {data.root}"
        )
    try:
        net = SpeciesClassifier(**ckpt["config"])
        net.load_state_dict(ckpt["state_dict"])
    except (KeyError, RuntimeError, TypeError, ValueError) as exc:
        raise FeatureNetError(f"{path}: weights do not fit the recorded architecture ({exc})") from exc
    net.eval().requires_grad_(False)
    return net, ckpt


def describe(ckpt: dict[str, Any]) -> str:
    """How the network was trained, for metrics and tables: 'species-classifier (synth-birds train split, seed 0)'."""
    return f"{NAME} ({ckpt.get('dataset')} train split, seed {ckpt.get('seed')})"

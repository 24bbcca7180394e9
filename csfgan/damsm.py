"""DAMSM pretraining of the text encoder (AttnGAN's ``pretrain_DAMSM.py``), its checkpoint and R-precision.

``pretrain_text`` trains the BiLSTM text encoder jointly with the from-scratch DAMSM image encoder on
a prepared dataset's train split with the word and sentence matching losses, measures R-precision on
the test split, and writes one self-describing checkpoint that :func:`load_text_encoder` checks
against the dataset and config it is used with.

It trains on the ``--device`` it is given and keeps its resumable state beside the checkpoint
(:mod:`csfgan.job_state`): saved every ``--save-every-minutes`` and on SIGTERM, SIGUSR1 or Ctrl-C, so
a job killed at its time limit continues when submitted again, to the weights (on CPU bit for bit)
an uninterrupted run ends with. The checkpoint's tensors are on the CPU whatever the device.
"""

from __future__ import annotations

import json
import sys
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

import csfgan
from csfgan.checkpoint import safe_torch_load, save_checkpoint
from csfgan.config import ScaleConfig, TextConfig, flatten, from_dict
from csfgan.data.dataset import InpaintingDataset
from csfgan.data.prepared import PreparedData, PreparedDataError
from csfgan.data.text import Vocabulary
from csfgan.errors import UserError
from csfgan.io import remove_stale_temporaries, write_json, writing
from csfgan.job_state import StateSaver, load_state, random_state, save_state, set_random_state, state_path, to_cpu
from csfgan.lock import command_line, output_lock
from csfgan.models.damsm import DamsmImageEncoder, mismatched_candidates, r_precision, sent_loss, words_loss
from csfgan.models.text import TextEncoder, padding_mask
from csfgan.signals import deferred_stop

KIND = "csfgan-text-encoder"
STATE_KIND = "csfgan-text-encoder-state"
R_PRECISION_CANDIDATES = 99  # mismatched captions beside the true one: rank among 100 (AttnGAN)
R_PRECISION_REPETITIONS = 5
COMMAND = "pretrain-text"


class TextEncoderCheckpointError(UserError, RuntimeError):
    """A text-encoder checkpoint is missing, unreadable, or made for other data or config."""


@contextmanager
def _threads(n: int):
    before = torch.get_num_threads()
    torch.set_num_threads(max(1, n))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _manifest_sha(data: PreparedData) -> str:
    return data.manifest_sha256


def _check_data(data: PreparedData, scale: ScaleConfig) -> None:
    if data.resolution != scale.resolution:
        raise PreparedDataError(
            f"{data.root} holds {data.resolution} px images but scale {scale.name!r} is {scale.resolution} px: "
            f"prepare the dataset with this scale, or pass the scale it was prepared with"
        )
    if data.max_words != scale.text.max_words:
        raise PreparedDataError(
            f"{data.root} was tokenised with max_words {data.max_words} but scale {scale.name!r} says "
            f"{scale.text.max_words}: prepare the dataset with this scale"
        )
    if len(data.split("train")) < 2:
        raise PreparedDataError(f"{data.root}: DAMSM needs at least 2 training images (the batch is the negatives)")


def pretrain_text(data_root: Path, scale: ScaleConfig, out: Path, seed: int = 0, workers: int = 1, *,
                  device: str = "cpu", save_every_minutes: float = 10.0) -> dict[str, Any]:
    """Pretrain text + image encoders with DAMSM, measure R-precision, write ``out`` and its metrics.

    ``workers`` is the number of CPU threads torch may use; ``device`` is what ``--device`` takes
    (auto, cpu, cuda, cuda:N). The resumable state ``.<out name>.state.pt`` is saved every
    ``save_every_minutes`` (0: never by time) and at SIGTERM, SIGUSR1 or Ctrl-C (then the command stops
    with 128 + the signal's number); a call with the same data, text config, seed and device type
    continues from it, and the final checkpoint's writing removes it. Returns the metrics dict. Holds
    the lock of ``out`` throughout: one process at a time writes a text encoder.
    """
    from csfgan.runtime import resolve_device

    if save_every_minutes < 0:
        raise UserError(f"--save-every-minutes {save_every_minutes:g}: must be 0 (never by time) or positive")
    out = Path(out)
    if out.is_dir():
        raise UserError(f"--out {out} is a folder; give the checkpoint file to write, e.g. {out / 'text_encoder.pt'}")
    dev = resolve_device(device)  # --device cuda on a machine without it fails now, not after loading data
    with writing(out.parent):  # an unwritable place fails now, not after the training
        out.parent.mkdir(parents=True, exist_ok=True)
    with output_lock(out, command_line()):
        remove_stale_temporaries(out.parent, (out.name, metrics_path(out).name, state_path(out).name))
        return _pretrain_text_locked(data_root, scale, out, seed, workers, dev, save_every_minutes)


def _pretrain_text_locked(data_root: Path, scale: ScaleConfig, out: Path, seed: int, workers: int,
                          dev: torch.device, save_every_minutes: float) -> dict[str, Any]:
    data = PreparedData(Path(data_root))
    _check_data(data, scale)
    cfg = scale.text
    damsm = cfg.damsm
    # Everything that decides the weights: a saved state of another job is not resumed.
    identity = {"data_manifest_sha256": _manifest_sha(data), "text": asdict(cfg), "seed": seed,
                "resolution": scale.resolution, "device_type": dev.type}
    torch.manual_seed(seed)
    with _threads(workers):
        text_encoder = TextEncoder(len(data.vocab), cfg).to(dev)
        image_encoder = DamsmImageEncoder(data.resolution, cfg.hidden_dim, damsm.image_channels).to(dev)
        trained = _train(text_encoder, image_encoder, data, damsm, seed, state_file=state_path(out),
                         identity=identity, save_every_minutes=save_every_minutes)
        metrics = damsm_r_precision(
            text_encoder, image_encoder, data, caption_seed=scale.eval.caption_seed, batch_size=damsm.batch_size
        )
    history, train_seconds = trained.history, trained.seconds
    metrics.update(
        dataset=data.name,
        scale=scale.name,
        seed=seed,
        epochs=damsm.epochs,
        batch_size=min(damsm.batch_size, len(data.split("train"))),
        lr=damsm.lr,
        device=str(dev),
        train_seconds=round(train_seconds, 2),
        resumed_from=trained.resumed_from,
        final_losses=history[-1] if history else {},
        loss_history=history,
    )
    checkpoint = {
        "kind": KIND,
        "text_encoder": to_cpu(text_encoder.state_dict()),
        "image_encoder": to_cpu(image_encoder.state_dict()),
        "image_encoder_config": image_encoder.config(),
        "vocab": list(data.vocab.words),
        "text_config": asdict(cfg),
        "resolution": scale.resolution,
        "scale": scale.name,
        "seed": seed,
        "dataset": data.name,
        "data_manifest_sha": _manifest_sha(data),
        "metrics": metrics,
        "versions": {"torch": str(torch.__version__), "csfgan": csfgan.__version__},
    }
    save_checkpoint(checkpoint, out)
    write_json(metrics_path(out), metrics)
    state_path(out).unlink(missing_ok=True)  # the result is written: the intermediate state has done its job
    print(
        f"DAMSM R-precision on {data.name} test ({metrics['test_images']} images, "
        f"1 true of {metrics['candidates']}): {100 * metrics['r_precision']:.1f}% "
        f"± {100 * metrics['r_precision_std']:.1f} (chance {100 * metrics['chance']:.1f}%); "
        f"trained {train_seconds:.0f} s; wrote {out}"
    )
    return metrics


def metrics_path(checkpoint: Path) -> Path:
    checkpoint = Path(checkpoint)
    return checkpoint.with_name(f"{checkpoint.stem}.metrics.json")


@dataclass
class _Position:
    """Where DAMSM training stands at a step boundary: what its state saves, besides networks, optimiser and
    random streams. ``order`` and ``totals`` belong to the epoch under way (None between epochs)."""

    epoch: int = 0  # epochs finished
    step: int = 0  # steps finished in the epoch under way
    order: torch.Tensor | None = None  # that epoch's order of the training images
    totals: torch.Tensor | None = None  # its running sums of the four losses
    history: list[dict[str, float]] = field(default_factory=list)  # one row per finished epoch
    seconds: float = 0.0  # training time of the calls before this one


@dataclass
class _Trained:
    history: list[dict[str, float]]
    seconds: float  # over every call that trained this encoder
    resumed_from: list[str]  # "epoch E step S" of each state this run continued from


def _describe(at: _Position, epochs: int, steps_per_epoch: int) -> str:
    """"epoch E step S": S steps of epoch E (1-based) done; the end of training is the last epoch's last step."""
    if at.epoch >= epochs:
        return f"epoch {epochs} step {steps_per_epoch}"
    return f"epoch {at.epoch + 1} step {at.step}"


def _train(
    text_encoder: TextEncoder, image_encoder: DamsmImageEncoder, data: PreparedData, damsm, seed: int, *,
    state_file: Path, identity: dict[str, Any], save_every_minutes: float = 0.0,
) -> _Trained:
    """AttnGAN's DAMSM loop on the device the encoders are on, continuing from ``state_file`` when it holds
    this job's state (``identity``), saving it there at the step boundaries :class:`StateSaver` picks."""
    dev = next(text_encoder.parameters()).device
    train = InpaintingDataset(data, "train", captions="random", seed=seed)
    n = len(train)
    batch_size = min(damsm.batch_size, n)
    steps_per_epoch = n // batch_size  # drop_last, as AttnGAN: the batch is the set of negatives
    params = list(text_encoder.parameters()) + list(image_encoder.parameters())
    optimizer = torch.optim.Adam(params, lr=damsm.lr, betas=(0.5, 0.999))
    generator = torch.Generator().manual_seed(seed)
    at, resumed_from = _Position(), []
    state = load_state(state_file, STATE_KIND, identity,
                       ("text_encoder", "image_encoder", "optimizer", "batch_rng", "random", "position"), COMMAND)
    if state is not None:
        text_encoder.load_state_dict(state["text_encoder"])
        image_encoder.load_state_dict(state["image_encoder"])
        optimizer.load_state_dict(state["optimizer"])  # the lr schedule's position is the groups' lr
        generator.set_state(state["batch_rng"])
        set_random_state(state["random"], dev)
        at = _Position(**state["position"])
        if at.totals is not None:
            at.totals = at.totals.to(dev)
        resumed_from = [*state.get("resumed_from", []), _describe(at, damsm.epochs, steps_per_epoch)]
        print(f"csfgan {COMMAND}: resuming from {resumed_from[-1]} (of {damsm.epochs} epochs of {steps_per_epoch} "
              f"steps) saved in {state_file}", file=sys.stderr, flush=True)
    saver = StateSaver(COMMAND, state_file, save_every_minutes)
    started = time.perf_counter()

    def save() -> float:
        position = {"epoch": at.epoch, "step": at.step, "order": at.order, "totals": at.totals,
                    "history": at.history, "seconds": at.seconds + time.perf_counter() - started}
        return save_state(state_file, STATE_KIND, identity, {
            "text_encoder": text_encoder.state_dict(), "image_encoder": image_encoder.state_dict(),
            "optimizer": optimizer.state_dict(), "batch_rng": generator.get_state(), "random": random_state(dev),
            "position": position, "resumed_from": resumed_from})

    text_encoder.train()
    image_encoder.train()
    # A bar on a terminal (disable=None); in a job's log file one line per epoch instead.
    bar = tqdm(total=damsm.epochs * steps_per_epoch, initial=at.epoch * steps_per_epoch + at.step,
               desc=f"DAMSM {data.name}", unit="step", dynamic_ncols=True, disable=None)
    with bar, deferred_stop() as stop:
        while at.epoch < damsm.epochs:
            if at.order is None:
                at.order = torch.randperm(n, generator=generator)
                at.totals = torch.zeros(4, device=dev)
            batch = train.batch(at.order[at.step * batch_size : (at.step + 1) * batch_size].numpy())
            # Lengths stay on the CPU, where the LSTM's packing wants them; nothing is pinned, so the
            # copies are synchronous (the step needs the batch at once anyway).
            image, tokens, class_ids = (batch[k].to(dev) for k in ("image", "tokens", "class_id"))
            regions, code = image_encoder(image)  # the full, unmasked image
            words, sent = text_encoder(tokens, batch["length"])
            mask = padding_mask(tokens)
            w0, w1 = words_loss(regions, words, mask, class_ids, damsm.gamma1, damsm.gamma2, damsm.gamma3)
            s0, s1 = sent_loss(code, sent, class_ids, damsm.gamma3)
            loss = w0 + w1 + s0 + s1
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            # AttnGAN clips the RNN's gradient only (TRAIN.RNN_GRAD_CLIP = 0.25): LSTMs explode.
            torch.nn.utils.clip_grad_norm_(text_encoder.parameters(), damsm.grad_clip)
            optimizer.step()
            parts = torch.stack([w0, w1, s0, s1]).detach()
            at.totals += parts
            at.step += 1
            bar.update()
            bar.set_postfix(epoch=at.epoch + 1, w=f"{(w0 + w1).item():.2f}", s=f"{(s0 + s1).item():.2f}")
            if at.step == steps_per_epoch:
                _end_epoch(at, optimizer, damsm, steps_per_epoch, data.name, quiet=not bar.disable)
            saver.step_done(stop, save, lambda: _describe(at, damsm.epochs, steps_per_epoch))
    return _Trained(at.history, at.seconds + time.perf_counter() - started, resumed_from)


def _end_epoch(at: _Position, optimizer: torch.optim.Optimizer, damsm, steps_per_epoch: int, name: str, *,
               quiet: bool) -> None:
    """The epoch's mean losses into the history, AttnGAN's learning-rate decay, and on to the next epoch."""
    mean = (at.totals / max(1, steps_per_epoch)).tolist()
    at.history.append(
        {"epoch": at.epoch + 1, **dict(zip(("w_loss0", "w_loss1", "s_loss0", "s_loss1"), mean, strict=True))}
    )
    if not quiet:
        print(f"DAMSM {name}: epoch {at.epoch + 1}/{damsm.epochs} word loss {mean[0] + mean[1]:.3f} "
              f"sentence loss {mean[2] + mean[3]:.3f}", flush=True)
    # AttnGAN's schedule: lr x 0.98 per epoch while above a tenth of the initial rate.
    for group in optimizer.param_groups:
        if group["lr"] > damsm.lr / 10:
            group["lr"] *= 0.98
    at.epoch, at.step, at.order, at.totals = at.epoch + 1, 0, None, None


@torch.no_grad()
def damsm_r_precision(
    text_encoder: TextEncoder,
    image_encoder: DamsmImageEncoder,
    data: PreparedData,
    *,
    caption_seed: int,
    repetitions: int = R_PRECISION_REPETITIONS,
    candidates: int = R_PRECISION_CANDIDATES,
    batch_size: int = 64,
    split: str = "test",
) -> dict[str, Any]:
    """AttnGAN's R-precision with the DAMSM sentence-level cosine, on real test images.

    For each test image its caption (seeded choice, seed ``caption_seed + r`` in repetition r) is
    ranked among itself and ``candidates`` captions of other test images (seeded, other classes
    first); R-precision is the fraction ranked first. Reports mean and std over the repetitions.
    The encoders run on the device they are on; the ranking is done on the CPU.
    """
    dev = next(text_encoder.parameters()).device
    was = text_encoder.training, image_encoder.training
    text_encoder.eval()
    image_encoder.eval()
    try:
        runs = []
        image_feats = None
        for r in range(repetitions):
            ds = InpaintingDataset(data, split, captions="seeded", seed=caption_seed + r)
            n = len(ds)
            feats, sents = [], []
            for start in range(0, n, batch_size):
                batch = ds.batch(np.arange(start, min(n, start + batch_size)))
                if image_feats is None:
                    feats.append(image_encoder.global_features(batch["image"].to(dev)).cpu())
                sents.append(text_encoder(batch["tokens"].to(dev), batch["length"])[1].cpu())
            if image_feats is None:
                image_feats = torch.cat(feats)
            cand = mismatched_candidates(ds.split.class_ids, candidates, seed=caption_seed + r)
            runs.append(r_precision(image_feats, torch.cat(sents), torch.arange(n), torch.from_numpy(cand)))
    finally:
        text_encoder.train(was[0])
        image_encoder.train(was[1])
    k = cand.shape[1] + 1
    return {
        "r_precision": float(np.mean(runs)),
        "r_precision_std": float(np.std(runs, ddof=1)) if len(runs) > 1 else 0.0,
        "r_precision_runs": runs,
        "r_precision_split": split,
        "candidates": k,
        "chance": 1.0 / k,
        "test_images": n,
        "caption_seed": caption_seed,
        "similarity": "DAMSM sentence-level cosine (global image feature vs sentence vector)",
    }


# --------------------------------------------------------------------------------------------
# Loading.


ARCHITECTURE_KEYS = ("max_words", "embedding_dim", "hidden_dim")


def load_text_encoder(
    path: Path, vocab: Vocabulary | None = None, text_cfg: TextConfig | None = None
) -> tuple[TextEncoder, DamsmImageEncoder, Vocabulary, dict[str, Any]]:
    """Load a pretrained (text encoder, DAMSM image encoder, vocabulary, checkpoint dict).

    With ``vocab`` given, the checkpoint's vocabulary must be exactly it; with ``text_cfg``, the
    architecture keys (:data:`ARCHITECTURE_KEYS`) must agree. Both encoders come back in eval mode
    with gradients off: they are frozen after DAMSM.
    """
    path = Path(path)
    if not path.is_file():
        raise TextEncoderCheckpointError(
            f"{path}: no such text-encoder checkpoint: pretrain one with `csfgan pretrain-text` first"
        )
    ckpt = safe_torch_load(path, TextEncoderCheckpointError, "delete it and pretrain again (`csfgan pretrain-text`)",
                           what="torch checkpoint")
    kind = ckpt.get("kind") if isinstance(ckpt, dict) else type(ckpt).__name__
    if kind != KIND:
        raise TextEncoderCheckpointError(f"{path}: not a text-encoder checkpoint (kind {kind!r}, expected {KIND!r})")
    required = ("text_encoder", "image_encoder", "image_encoder_config", "vocab", "text_config")
    missing = [k for k in required if k not in ckpt]
    if missing:
        raise TextEncoderCheckpointError(f"{path}: incomplete text-encoder checkpoint (missing {', '.join(missing)})")
    ck_vocab = Vocabulary(ckpt["vocab"])
    if vocab is not None and vocab != ck_vocab:
        differ = sum(a != b for a, b in zip(vocab.words, ck_vocab.words, strict=False)) + abs(
            len(vocab) - len(ck_vocab)
        )
        raise TextEncoderCheckpointError(
            f"{path}: vocabulary mismatch: {differ} of {max(len(vocab), len(ck_vocab))} words differ (checkpoint "
            f"{len(ck_vocab)} words, dataset {len(vocab)}; trained on {ckpt.get('dataset')!r}): the text encoder "
            f"must be pretrained on this prepared dataset (`csfgan pretrain-text --data <its folder>`)"
        )
    if text_cfg is not None:
        # Only what shapes the encoder's inputs and outputs must agree; how it was pretrained
        # (text.damsm.*, dropout) is recorded in the checkpoint and in every run that uses it.
        have, want = flatten(ckpt["text_config"]), flatten(asdict(text_cfg))
        differ = sorted(k for k in ARCHITECTURE_KEYS if have.get(k) != want.get(k))
        if differ:
            detail = ", ".join(f"text.{k}: checkpoint {have.get(k)!r} vs config {want.get(k)!r}" for k in differ)
            raise TextEncoderCheckpointError(
                f"{path}: made with another text config ({detail}): pretrain the text encoder with this scale"
            )
    text_config = from_dict(TextConfig, ckpt["text_config"], f"{path}: text_config")
    try:
        text_encoder = TextEncoder(len(ck_vocab), text_config)
        text_encoder.load_state_dict(ckpt["text_encoder"])
        image_encoder = DamsmImageEncoder(**ckpt["image_encoder_config"])
        image_encoder.load_state_dict(ckpt["image_encoder"])
    except (RuntimeError, TypeError, ValueError) as exc:
        raise TextEncoderCheckpointError(f"{path}: weights do not fit the recorded architecture ({exc})") from exc
    for module in (text_encoder, image_encoder):
        module.eval().requires_grad_(False)
    return text_encoder, image_encoder, ck_vocab, ckpt


def read_metrics(checkpoint: Path) -> dict[str, Any]:
    """The metrics JSON written beside a checkpoint."""
    return json.loads(metrics_path(checkpoint).read_text())


__all__ = [
    "KIND",
    "TextEncoderCheckpointError",
    "damsm_r_precision",
    "load_text_encoder",
    "metrics_path",
    "pretrain_text",
    "read_metrics",
]

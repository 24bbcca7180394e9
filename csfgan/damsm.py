"""DAMSM pretraining of the text encoder (AttnGAN's ``pretrain_DAMSM.py``), its checkpoint and R-precision.

``pretrain_text`` trains the BiLSTM text encoder jointly with the from-scratch DAMSM image encoder on
a prepared dataset's train split with the word and sentence matching losses, measures R-precision on
the test split, and writes one self-describing checkpoint that :func:`load_text_encoder` checks
against the dataset and config it is used with.
"""

from __future__ import annotations

import json
import time
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

import csfgan
from csfgan.checkpoint import safe_torch_load
from csfgan.config import ScaleConfig, TextConfig, flatten, from_dict
from csfgan.data.dataset import InpaintingDataset
from csfgan.data.prepared import PreparedData, PreparedDataError
from csfgan.data.text import Vocabulary
from csfgan.errors import UserError
from csfgan.io import atomic_path, remove_stale_temporaries, write_json, writing
from csfgan.lock import command_line, output_lock
from csfgan.models.damsm import DamsmImageEncoder, mismatched_candidates, r_precision, sent_loss, words_loss
from csfgan.models.text import TextEncoder, padding_mask

KIND = "csfgan-text-encoder"
R_PRECISION_CANDIDATES = 99  # mismatched captions beside the true one: rank among 100 (AttnGAN)
R_PRECISION_REPETITIONS = 5


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


def pretrain_text(data_root: Path, scale: ScaleConfig, out: Path, seed: int = 0, workers: int = 1) -> dict[str, Any]:
    """Pretrain text + image encoders with DAMSM, measure R-precision, write ``out`` and its metrics.

    ``workers`` is the number of CPU threads torch may use. Returns the metrics dict. Holds the lock
    of ``out`` throughout: one process at a time writes a text encoder.
    """
    out = Path(out)
    if out.is_dir():
        raise UserError(f"--out {out} is a folder; give the checkpoint file to write, e.g. {out / 'text_encoder.pt'}")
    with writing(out.parent):  # an unwritable place fails now, not after the training
        out.parent.mkdir(parents=True, exist_ok=True)
    with output_lock(out, command_line()):
        remove_stale_temporaries(out.parent, (out.name, metrics_path(out).name))
        return _pretrain_text_locked(data_root, scale, out, seed, workers)


def _pretrain_text_locked(data_root: Path, scale: ScaleConfig, out: Path, seed: int, workers: int) -> dict[str, Any]:
    data = PreparedData(Path(data_root))
    _check_data(data, scale)
    cfg = scale.text
    damsm = cfg.damsm
    torch.manual_seed(seed)
    with _threads(workers):
        text_encoder = TextEncoder(len(data.vocab), cfg)
        image_encoder = DamsmImageEncoder(data.resolution, cfg.hidden_dim, damsm.image_channels)
        started = time.perf_counter()
        history = _train(text_encoder, image_encoder, data, damsm, seed)
        train_seconds = time.perf_counter() - started
        metrics = damsm_r_precision(
            text_encoder, image_encoder, data, caption_seed=scale.eval.caption_seed, batch_size=damsm.batch_size
        )
    metrics.update(
        dataset=data.name,
        scale=scale.name,
        seed=seed,
        epochs=damsm.epochs,
        batch_size=min(damsm.batch_size, len(data.split("train"))),
        lr=damsm.lr,
        train_seconds=round(train_seconds, 2),
        final_losses=history[-1] if history else {},
        loss_history=history,
    )
    checkpoint = {
        "kind": KIND,
        "text_encoder": text_encoder.state_dict(),
        "image_encoder": image_encoder.state_dict(),
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
    with writing(out):
        tmp, commit = atomic_path(out)
        try:
            with open(tmp, "wb") as f:  # a Python file: a full disk raises OSError, which `writing` names
                torch.save(checkpoint, f)
            commit()
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    write_json(metrics_path(out), metrics)
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


def _train(
    text_encoder: TextEncoder, image_encoder: DamsmImageEncoder, data: PreparedData, damsm, seed: int
) -> list[dict[str, float]]:
    train = InpaintingDataset(data, "train", captions="random", seed=seed)
    n = len(train)
    batch_size = min(damsm.batch_size, n)
    steps_per_epoch = n // batch_size  # drop_last, as AttnGAN: the batch is the set of negatives
    params = list(text_encoder.parameters()) + list(image_encoder.parameters())
    optimizer = torch.optim.Adam(params, lr=damsm.lr, betas=(0.5, 0.999))
    generator = torch.Generator().manual_seed(seed)
    text_encoder.train()
    image_encoder.train()
    history = []
    # A bar on a terminal (disable=None); in a job's log file one line per epoch instead.
    bar = tqdm(total=damsm.epochs * steps_per_epoch, desc=f"DAMSM {data.name}", unit="step", dynamic_ncols=True,
               disable=None)
    with bar:
        for epoch in range(damsm.epochs):
            order = torch.randperm(n, generator=generator).numpy()
            totals = torch.zeros(4)
            for step in range(steps_per_epoch):
                batch = train.batch(order[step * batch_size : (step + 1) * batch_size])
                regions, code = image_encoder(batch["image"])  # the full, unmasked image
                words, sent = text_encoder(batch["tokens"], batch["length"])
                mask = padding_mask(batch["tokens"])
                class_ids = batch["class_id"]
                w0, w1 = words_loss(regions, words, mask, class_ids, damsm.gamma1, damsm.gamma2, damsm.gamma3)
                s0, s1 = sent_loss(code, sent, class_ids, damsm.gamma3)
                loss = w0 + w1 + s0 + s1
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                # AttnGAN clips the RNN's gradient only (TRAIN.RNN_GRAD_CLIP = 0.25): LSTMs explode.
                torch.nn.utils.clip_grad_norm_(text_encoder.parameters(), damsm.grad_clip)
                optimizer.step()
                parts = torch.stack([w0, w1, s0, s1]).detach()
                totals += parts
                bar.update()
                bar.set_postfix(epoch=epoch + 1, w=f"{(w0 + w1).item():.2f}", s=f"{(s0 + s1).item():.2f}")
            mean = (totals / max(1, steps_per_epoch)).tolist()
            history.append(
                {"epoch": epoch + 1, **dict(zip(("w_loss0", "w_loss1", "s_loss0", "s_loss1"), mean, strict=True))}
            )
            if bar.disable:
                print(f"DAMSM {data.name}: epoch {epoch + 1}/{damsm.epochs} word loss {mean[0] + mean[1]:.3f} "
                      f"sentence loss {mean[2] + mean[3]:.3f}", flush=True)
            # AttnGAN's schedule: lr x 0.98 per epoch while above a tenth of the initial rate.
            for group in optimizer.param_groups:
                if group["lr"] > damsm.lr / 10:
                    group["lr"] *= 0.98
    return history


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
    """
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
                    feats.append(image_encoder.global_features(batch["image"]))
                sents.append(text_encoder(batch["tokens"], batch["length"])[1])
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

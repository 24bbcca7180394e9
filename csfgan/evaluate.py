"""Evaluate a finished run: inpaint the test split, then measure (README, "Evaluation protocol").

``split="val"`` measures the validation split instead (``RUN/metrics_val.json``, ``RUN/eval_val/``):
tuning and checkpoint choices are made there, and the test split gives the final numbers only.

One caption per test image, chosen by a seeded rule and recorded; the final checkpoint only (no
checkpoint picking on the test set). Everything is computed before anything is written, and the
outputs replace earlier ones by rename, so a failed evaluation leaves earlier results untouched.

    RUN/eval/images/<n>.png   composited outputs, numbered as the test split
    RUN/eval/captions.json    the caption chosen for each test image (index and text)
    RUN/eval/per_image.npz    per-image PSNR/SSIM and every attribute/counterfactual check
                              (csfgan.metrics.per_image), for the tables' paired intervals
    RUN/metrics.json          every metric, with what it was measured with

The metric networks are never what the generator was trained with: FID/KID use TF-Inception when its
weights are here, else the species classifier of ``csfgan train-features`` (``--feature-net``), and
R-precision uses a DAMSM text + image encoder pair pretrained independently of the run's
(``--eval-text-encoder``, e.g. ``csfgan pretrain-text --seed 1``), which evaluation checks.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from csfgan.checkpoint import GENERATOR_KIND, CheckpointError, load_checkpoint
from csfgan.config import ScaleConfig, from_dict
from csfgan.damsm import load_text_encoder
from csfgan.data.dataset import InpaintingDataset
from csfgan.data.prepared import PreparedData
from csfgan.data.text import Vocabulary
from csfgan.errors import UserError
from csfgan.io import remove_stale_temporaries, replace_dir, temporary_dir, write_json
from csfgan.lock import command_line, output_lock
from csfgan.metrics import per_image
from csfgan.metrics.feature_net import describe, load_feature_net
from csfgan.metrics.fid import FEATURE_NET, INCEPTION, fid_kid, inception_weights_available, module_weights_hash
from csfgan.metrics.pixel import pixel_metrics_per_image
from csfgan.models.damsm import DamsmImageEncoder, mismatched_candidates, r_precision_hits
from csfgan.models.generator import Generator, check_architecture
from csfgan.models.text import TextEncoder, empty_captions, padding_mask
from csfgan.provenance import file_sha256, provenance

R_PRECISION_CANDIDATES = 99


# Inference runs the generator in NHWC: oneDNN's convolutions are faster in that layout (default scale,
# fp32: 1.13x on 1 thread, 1.5x on 2); training stays NCHW, where bf16 autocast gains more without it.
INFERENCE_MEMORY_FORMAT = torch.channels_last


@torch.inference_mode()
def inference_forward(generator: Generator, image: torch.Tensor, mask: torch.Tensor, sent: torch.Tensor,
                      words: torch.Tensor, word_mask: torch.Tensor, *, amp: bool = False,
                      ) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """The generator's forward as evaluation runs it (the generator already in INFERENCE_MEMORY_FORMAT).

    ``amp`` (``eval.amp``): convolutions in bf16 autocast. The raw output then carries bf16's 8-bit
    mantissa, while ``image · (1 − M)`` stays fp32, so the known pixels of the composite are exact.
    """
    fmt = INFERENCE_MEMORY_FORMAT
    with torch.autocast(image.device.type, dtype=torch.bfloat16, enabled=amp):
        raw, composite, aux = generator(image.contiguous(memory_format=fmt), mask.contiguous(memory_format=fmt),
                                        sent, words, word_mask)
    return raw.float(), composite.float(), aux


class InpaintingModel:
    """A trained generator with its frozen text encoder, rebuilt from ``final.pt`` alone.

    ``weights``: "raw" (the optimiser's) or "ema" (the averaged generator, :mod:`csfgan.ema`); default
    the run's ``eval.weights``. ``self.weights`` says which were loaded.
    """

    def __init__(self, checkpoint: Path, device: str | torch.device = "cpu", weights: str | None = None):
        self.path = Path(checkpoint)
        ckpt = load_checkpoint(self.path, GENERATOR_KIND)
        check_architecture(ckpt.get("architecture"), str(self.path))
        self.checkpoint = ckpt
        self.run: dict[str, Any] = ckpt["run"]
        self.cfg: ScaleConfig = from_dict(ScaleConfig, self.run["config"], f"{self.path}: run.config")
        self.weights = self.cfg.eval.weights if weights is None else weights
        if self.weights not in ("raw", "ema"):
            raise UserError(f"weights {self.weights!r}: choose 'raw' or 'ema'")
        state = ckpt["generator"] if self.weights == "raw" else ckpt.get("generator_ema")
        if state is None:
            raise CheckpointError(f"{self.path} holds no averaged generator (trained with "
                                  f"train.ema_half_life_images 0); evaluate its raw weights (--weights raw)")
        self.ema = ckpt.get("ema") if self.weights == "ema" else None
        self.vocab = Vocabulary(ckpt["vocab"])
        from csfgan.runtime import resolve_device

        self.device = resolve_device(str(device))
        try:
            self.generator = Generator(self.cfg)
            self.generator.load_state_dict(state)
            self.text_encoder = TextEncoder(len(self.vocab), self.cfg.text)
            self.text_encoder.load_state_dict(ckpt["text_encoder"])
            self.image_encoder = DamsmImageEncoder(**ckpt["damsm_image_config"])
            self.image_encoder.load_state_dict(ckpt["damsm_image_encoder"])
        except (RuntimeError, KeyError, TypeError) as exc:
            raise CheckpointError(f"{self.path}: weights do not fit the recorded config ({exc})") from exc
        for m in (self.generator, self.text_encoder, self.image_encoder):
            m.to(self.device).eval().requires_grad_(False)
        self.generator.to(memory_format=INFERENCE_MEMORY_FORMAT)

    @property
    def resolution(self) -> int:
        return self.cfg.resolution

    @torch.inference_mode()
    def inpaint(self, image: torch.Tensor, mask: torch.Tensor, tokens: torch.Tensor, lengths: torch.Tensor,
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict]:
        """Composite ``I·(1−M) + G·M`` in [−1, 1] and the generator's aux (word attention).

        The generator's noise z and conditioning-augmentation draws use the global torch RNG; the
        caller seeds it so that evaluation is reproducible.
        """
        dev = self.device
        if not self.cfg.model.text_input:  # the no-text control never sees the caption
            tokens, lengths = empty_captions(tokens, lengths)
        words, sent = self.text_encoder(tokens.to(dev), lengths.to(dev))
        _, composite, aux = inference_forward(self.generator, image.to(dev), mask.to(dev), sent, words,
                                              padding_mask(tokens.to(dev)), amp=self.cfg.eval.amp)
        return composite.contiguous(), aux


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(B, 3, H, W) in [−1, 1] -> (B, H, W, 3) uint8, rounding as the prepared images were stored."""
    return ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def fid_cache_dir(data: PreparedData) -> Path:
    return data.root.parent / ".fid-cache"


def _check_data_identity(checkpoint: Path, record: dict[str, Any], data: PreparedData) -> None:
    """The prepared data must be the data the run was trained on, not a re-preparation at the same path."""
    recorded = record.get("data_manifest_sha256")
    if recorded is not None:
        same = recorded == data.manifest_sha256
    elif record.get("data_manifest") is not None:  # runs recorded before the manifest's sha256
        same = record["data_manifest"] == data.manifest
    else:
        raise CheckpointError(f"{checkpoint} records no data identity (made by an older csfgan): train it again")
    if not same:
        then = {k: v.get("count") for k, v in (record.get("data_manifest") or {}).get("splits", {}).items()}
        now = {k: v.get("count") for k, v in data.manifest.get("splits", {}).items()}
        counts = f" (images per split: trained on {then}, now {now})" if then != now else ""
        raise CheckpointError(
            f"{data.root} is not the prepared data {checkpoint} was trained on: its manifest changed since"
            f"{counts}. Prepare it again as it was, or train the run again on this data (csfgan train --restart)"
        )


EVAL_SPLITS = ("test", "val")


def _check_same_run(run: Path, checkpoint: Path, record: dict[str, Any]) -> None:
    """A checkpoint given by path must be this run's: its metrics are written into the run's folder."""
    from csfgan.resume import identity_differences

    config = run / "config.json"
    if not config.is_file():
        return  # a bare final.pt copied somewhere: it describes itself
    try:
        own = json.loads(config.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{config}: unreadable ({exc}); it should be the run's identity, written by "
                              f"train") from None
    diffs = identity_differences(own, record)
    if diffs:
        raise CheckpointError(f"{checkpoint} is not a checkpoint of {run} ({'; '.join(diffs[:3])}); "
                              f"evaluate it in its own run directory")


def metrics_path(run: Path, split: str = "test") -> Path:
    """Where ``evaluate`` writes a split's metrics by default: ``metrics.json`` for test (what the tables
    read), ``metrics_val.json`` for val."""
    return Path(run) / ("metrics.json" if split == "test" else f"metrics_{split}.json")


class MetricNetworkError(UserError):
    """A metric network is missing, or is one the generator was trained with."""


def evaluation_text_encoder(path: Path | None, model: InpaintingModel, data: PreparedData):
    """The R-precision pair (text encoder, image encoder) and what to record about it.

    It must be another DAMSM pair than the run's: R-precision on the encoders that conditioned the
    generator measures in part what it was trained towards.
    """
    if path is None:
        raise MetricNetworkError(
            "evaluate needs --eval-text-encoder: a DAMSM pair pretrained independently of the run's, e.g. "
            f"`csfgan pretrain-text --data {data.root} --seed 1 --out results/text_encoder/{data.name}.eval.pt`"
        )
    path = Path(path)
    text, image, _, ckpt = load_text_encoder(path, vocab=data.vocab)
    sha = file_sha256(path)
    if sha == model.run.get("text_encoder_sha256") or module_weights_hash(text) == module_weights_hash(
            model.text_encoder):
        raise MetricNetworkError(
            f"--eval-text-encoder {path} is the text encoder run {model.path.parent} was trained with: R-precision "
            f"needs a pair pretrained independently (`csfgan pretrain-text ... --seed 1`)"
        )
    run_seed = (model.checkpoint.get("text_metrics") or {}).get("seed")
    record = {"path": str(path), "sha256": sha, "dataset": ckpt.get("dataset"), "seed": ckpt.get("seed"),
              "description": f"DAMSM pair pretrained on {ckpt.get('dataset')} with seed {ckpt.get('seed')}, "
                             f"independently of the run's (seed {run_seed})",
              "run_text_encoder_seed": run_seed}
    return text.to(model.device), image.to(model.device), record


def evaluate(run: Path, out: Path | None = None, *, feature_net: Path | None = None,
             eval_text_encoder: Path | None = None, device: str = "cpu", batch_size: int | None = None,
             save_images: bool = True, progress: bool = True, split: str = "test", checkpoint: Path | None = None,
             weights: str | None = None, folder: str | None = None) -> dict[str, Any]:
    """Inpaint ``split`` of ``run`` and measure it; writes ``out`` (default RUN/metrics.json, or
    RUN/metrics_val.json for val), holding the run's lock (the one ``train`` takes): its weights cannot
    change underneath, and two evaluations do not interleave their outputs.

    ``checkpoint``: a generator checkpoint of this run (default RUN/final.pt; e.g. a snapshot
    RUN/checkpoints/generator-step<N>.pt); ``weights``: "raw" or "ema" (default the run's
    ``eval.weights``); ``folder``: the per-image output folder under RUN (default ``eval`` for test,
    ``eval_<split>`` otherwise). The metrics record which checkpoint and weights they measured.

    ``feature_net`` (from ``csfgan train-features``) is required unless TF-Inception weights are
    here; ``eval_text_encoder`` (another ``csfgan pretrain-text`` than the run's) always.
    """

    if split not in EVAL_SPLITS:
        raise UserError(f"--split {split!r}: evaluate measures one of {', '.join(EVAL_SPLITS)}")
    run = Path(run)
    out = Path(out) if out is not None else metrics_path(run, split)
    if not run.is_dir():
        raise CheckpointError(f"{run}: no such run directory (train it with `csfgan train --out {run}`)")
    folder = folder or ("eval" if split == "test" else f"eval_{split}")
    if Path(folder).name != folder or folder in ("", ".", ".."):
        raise UserError(f"folder {folder!r}: give a folder name inside the run directory, not a path")
    checkpoint = Path(checkpoint) if checkpoint is not None else run / "final.pt"
    with output_lock(run, command_line()):
        remove_stale_temporaries(run, (folder, out.name))
        remove_stale_temporaries(out.parent, (out.name,))
        return _evaluate_locked(run, out, feature_net=feature_net, eval_text_encoder=eval_text_encoder, device=device,
                                batch_size=batch_size, save_images=save_images, progress=progress, split=split,
                                checkpoint=checkpoint, weights=weights, folder=folder)


def _evaluate_locked(run: Path, out: Path, *, feature_net: Path | None, eval_text_encoder: Path | None, device: str,
                     batch_size: int | None, save_images: bool, progress: bool, split: str, checkpoint: Path,
                     weights: str | None, folder: str) -> dict[str, Any]:
    started = time.perf_counter()
    model = InpaintingModel(checkpoint, device, weights)
    _check_same_run(run, checkpoint, model.run)
    cfg = model.cfg
    data = PreparedData(Path(model.run["data"]))
    if data.vocab != model.vocab:
        raise CheckpointError(f"{checkpoint} was trained with another vocabulary than {data.root}")
    _check_data_identity(checkpoint, model.run, data)
    # Metric networks first: a missing one fails before minutes of inpainting.
    weights = inception_weights_available(cfg.eval.inception_weights_path)
    fid_net = fid_net_ckpt = None
    if weights is None:
        if feature_net is None:
            raise MetricNetworkError(
                "no TF-Inception weights here, so FID needs --feature-net: train it with `csfgan train-features "
                f"--data {data.root} --scale {cfg.name} --out results/feature_net/{data.name}.pt`"
            )
        fid_net, fid_net_ckpt = load_feature_net(Path(feature_net), data)
        fid_net.to(model.device)
    eval_text, eval_image, rp_record = evaluation_text_encoder(eval_text_encoder, model, data)
    test = InpaintingDataset(data, split, mask=cfg.data.mask, hole_fraction=cfg.data.hole_fraction,
                             captions="seeded", seed=cfg.eval.caption_seed)
    n = len(test)
    bs = batch_size or cfg.eval.batch_size
    torch.manual_seed(cfg.eval.caption_seed)
    fakes = np.empty((n, data.resolution, data.resolution, 3), dtype=np.uint8)
    holes = np.empty((n, data.resolution, data.resolution), dtype=bool)
    fake_codes, sent_codes = [], []
    for start in tqdm(range(0, n, bs), desc=f"inpaint {split} split", disable=None if progress else True,
                      dynamic_ncols=True):
        b = test.batch(np.arange(start, min(n, start + bs)))
        composite, _ = model.inpaint(b["image"], b["mask"], b["tokens"], b["length"])
        fakes[start:start + len(composite)] = to_uint8(composite)
        holes[start:start + len(composite)] = b["mask"][:, 0].numpy() > 0.5
        with torch.no_grad():
            fake_codes.append(eval_image.global_features(composite).cpu())
            sent_codes.append(eval_text(b["tokens"].to(model.device), b["length"].to(model.device))[1].cpu())
    real = np.asarray(test.split.images)

    metrics: dict[str, Any] = {"dataset": data.name, "split": split, f"{split}_images": n,
                               "resolution": data.resolution}
    per_image_arrays: dict[str, np.ndarray] = {"keys": np.asarray(test.split.keys, dtype=str),
                                               **pixel_metrics_per_image(real, fakes, holes)}
    metrics.update({k: float(per_image_arrays[k].mean()) for k in per_image.MEAN_METRICS})

    extractor = INCEPTION if weights else FEATURE_NET
    fid, per_image_arrays["fid_fake_features"], per_image_arrays["fid_real_features"] = fid_kid(
        real, fakes, extractor=extractor, network=fid_net, inception_weights=weights,
        cache_dir=fid_cache_dir(data), cache_key=f"{data.name}-{split}", return_features=True)
    metrics.update({k: fid[k] for k in ("fid", "kid_mean", "kid_std")})
    metrics["fid_features"] = fid["features"]
    metrics["fid_details"] = {k: v for k, v in fid.items() if k not in ("fid", "kid_mean", "kid_std")}
    if fid_net_ckpt is not None:
        net_metrics = fid_net_ckpt.get("metrics", {})
        metrics["fid_feature_net"] = {
            "description": describe(fid_net_ckpt), "path": str(feature_net), "sha256": file_sha256(Path(feature_net)),
            "used_in_training_losses": False,
            **{k: net_metrics.get(k) for k in ("held_out_accuracy", "chance", "steps", "train_seconds")},
        }

    candidates = mismatched_candidates(test.split.class_ids, R_PRECISION_CANDIDATES, seed=cfg.eval.caption_seed)
    hits = r_precision_hits(torch.cat(fake_codes), torch.cat(sent_codes), torch.arange(n),
                            torch.from_numpy(candidates))
    per_image_arrays["r_precision_hit"] = hits.numpy()
    metrics["r_precision"] = float(hits.float().mean())
    metrics["r_precision_candidates"] = R_PRECISION_CANDIDATES + 1
    metrics["r_precision_encoder"] = rp_record

    if data.manifest.get("generator_version") is not None and "parts" in data.manifest:
        from csfgan.metrics.attributes import attribute_metrics

        metrics.update(attribute_metrics(model, data, test, fakes, seed=cfg.eval.caption_seed, batch_size=bs,
                                         checks=per_image_arrays))

    chosen = test.caption_choice
    captions = [{"key": test.split.keys[i], "caption_index": int(chosen[i]),
                 "caption": test.split.captions[i][int(chosen[i])]} for i in range(n)]
    metrics.update({
        "run": str(run), "variant": model.run["variant"], "seed": model.run["seed"], "scale": cfg.name,
        "overrides": model.run.get("overrides", []), "step": model.checkpoint["step"],
        "checkpoint": checkpoint.name, "weights": model.weights, "ema": model.ema,
        "train_seconds": model.checkpoint.get("train_seconds"),
        "perceptual_source": model.run.get("perceptual_source"),
        "caption_seed": cfg.eval.caption_seed, "inference_precision": cfg.eval.precision,
        "eval_seconds": round(time.perf_counter() - started, 2),
        "provenance": provenance(),
    })
    _publish(run, out, metrics, fakes if save_images else None, captions, per_image_arrays, folder=folder)
    return metrics


def _publish(run: Path, out: Path, metrics: dict[str, Any], fakes: np.ndarray | None, captions: list,
             per_image_arrays: dict[str, np.ndarray], folder: str = "eval") -> None:
    """Write the images and per-image metrics to a fresh folder and swap it in, then the metrics file (both
    atomic)."""
    from csfgan.io import writing

    with writing(run / folder):
        _publish_images(run, folder, fakes, captions, per_image_arrays)
    write_json(out, metrics)


def _publish_images(run: Path, folder: str, fakes: np.ndarray | None, captions: list,
                    per_image_arrays: dict[str, np.ndarray]) -> None:
    tmp = temporary_dir(run / folder)
    try:
        if fakes is not None:
            (tmp / "images").mkdir()
            for i, image in enumerate(fakes):
                Image.fromarray(image).save(tmp / "images" / f"{i:05d}.png")
        # Plain write inside the temporary folder (itself swapped in atomically): a failure then names
        # RUN/<folder>, not a temporary path.
        (tmp / "captions.json").write_text(json.dumps(captions, indent=2, sort_keys=True) + "\n")
        per_image.save(tmp, per_image_arrays)
        replace_dir(tmp, run / folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise

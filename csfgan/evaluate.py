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

Evaluation is :func:`inpaint_items` (our generator on the items of the protocol, csfgan.protocol.spec)
then :func:`csfgan.measure.measure`, the code ``csfgan score`` measures anyone's folder of outputs with.

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
from csfgan.data.prepared import PreparedData
from csfgan.data.text import Vocabulary, encode_captions
from csfgan.errors import UserError
from csfgan.io import remove_stale_temporaries, replace_dir, temporary_dir, write_json
from csfgan.lock import command_line, output_lock
from csfgan.measure import (  # noqa: F401  (R_PRECISION_CANDIDATES, fid_cache_dir: re-exported for callers)
    R_PRECISION_CANDIDATES,
    MetricNetworkError,
    MetricNetworks,
    fid_cache_dir,
    load_metric_networks,
    measure,
)
from csfgan.metrics import per_image
from csfgan.metrics.fid import module_weights_hash
from csfgan.models.damsm import DamsmImageEncoder
from csfgan.models.generator import Generator, check_architecture
from csfgan.models.text import TextEncoder, empty_captions, padding_mask
from csfgan.protocol import spec
from csfgan.provenance import provenance

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


def check_independent_pair(nets: MetricNetworks, model: InpaintingModel) -> None:
    """R-precision's DAMSM pair must be another than the run's: on the encoders that conditioned the
    generator it would measure in part what the generator was trained towards."""
    if nets.rp_record["sha256"] == model.run.get("text_encoder_sha256") or module_weights_hash(
            nets.eval_text) == module_weights_hash(model.text_encoder):
        raise MetricNetworkError(
            f"--eval-text-encoder {nets.rp_record['path']} is the text encoder run {model.path.parent} was trained "
            f"with: R-precision needs a pair pretrained independently (`csfgan pretrain-text ... --seed 1`)"
        )
    run_seed = (model.checkpoint.get("text_metrics") or {}).get("seed")
    nets.rp_record["description"] += f", independently of the run's (seed {run_seed})"
    nets.rp_record["run_text_encoder_seed"] = run_seed


# The counterfactual inpaintings draw their generator noise from a stream of their own, so that nothing
# measured between the two passes can shift them.
COUNTERFACTUAL_SEED_OFFSET = 1


def inpaint_items(model: InpaintingModel, inputs: np.ndarray, holes: np.ndarray, captions: list[str],
                  counterfactuals: list[tuple[int, str]], *, max_words: int, batch_size: int, seed: int,
                  progress: bool = True, desc: str = "inpaint") -> tuple[np.ndarray, np.ndarray]:
    """Our generator on protocol items: ``inputs`` uint8 (N, H, W, 3) masked images, ``holes`` (N, H, W)
    bool, one caption each, and ``counterfactuals`` as (item, edited caption). Returns the composited
    uint8 outputs of the items and of the counterfactuals, in order.

    ``evaluate`` (the protocol in memory) and ``csfgan predict`` (an exported folder) both run this, so
    the same items give the same outputs: batches of ``batch_size`` in item order, the generator's noise
    seeded by ``seed`` (the counterfactuals' by ``seed`` + COUNTERFACTUAL_SEED_OFFSET).
    """

    def run(images: np.ndarray, masks: np.ndarray, texts: list[str], label: str, stream: int) -> np.ndarray:
        torch.manual_seed(stream)
        out = np.empty_like(images)
        tokens, lengths = encode_captions([[t] for t in texts], model.vocab, max_words)
        for start in tqdm(range(0, len(images), batch_size), desc=label, disable=None if progress else True,
                          dynamic_ncols=True):
            stop = min(len(images), start + batch_size)
            image = torch.from_numpy(images[start:stop]).permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)
            mask = torch.from_numpy(masks[start:stop, None].astype(np.float32))
            composite, _ = model.inpaint(image, mask, torch.from_numpy(tokens[start:stop, 0]).long(),
                                         torch.from_numpy(lengths[start:stop, 0]).long())
            out[start:stop] = to_uint8(composite)
        return out

    fakes = run(inputs, holes, captions, desc, seed)
    items = np.asarray([i for i, _ in counterfactuals], dtype=np.int64)
    edited = run(inputs[items], holes[items], [c for _, c in counterfactuals], f"{desc} (counterfactual captions)",
                 seed + COUNTERFACTUAL_SEED_OFFSET)
    return fakes, edited


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
    nets = load_metric_networks(data, feature_net=feature_net, eval_text_encoder=eval_text_encoder,
                                inception_weights_path=cfg.eval.inception_weights_path, device=model.device,
                                scale=cfg.name)
    check_independent_pair(nets, model)
    protocol = spec.build(data, split, mask=cfg.data.mask, hole_fraction=cfg.data.hole_fraction,
                          caption_seed=cfg.eval.caption_seed)
    bs = batch_size or cfg.eval.batch_size
    fakes, edited = inpaint_items(model, protocol.inputs(), protocol.holes, protocol.captions,
                                  [(c.item, c.caption) for c in protocol.counterfactuals], max_words=data.max_words,
                                  batch_size=bs, seed=cfg.eval.caption_seed, progress=progress,
                                  desc=f"inpaint {split} split")
    metrics, per_image_arrays = measure(protocol, fakes, edited if protocol.checks is not None else None, nets,
                                        batch_size=bs)

    captions = [{"key": key, "caption_index": int(index), "caption": text}
                for key, index, text in zip(protocol.prepared.keys, protocol.caption_index, protocol.captions,
                                            strict=True)]
    metrics.update({
        "run": str(run), "variant": model.run["variant"], "seed": model.run["seed"], "scale": cfg.name,
        "overrides": model.run.get("overrides", []), "step": model.checkpoint["step"],
        "checkpoint": checkpoint.name, "weights": model.weights, "ema": model.ema,
        "train_seconds": model.checkpoint.get("train_seconds"),
        "perceptual_source": model.run.get("perceptual_source"),
        # What decided a GPU training's numbers besides its precision (TF32, deterministic kernels).
        "training_numerics": model.run.get("numerics"),
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

"""Evaluate a finished run: inpaint the test split, then measure (DESIGN.md, "Evaluation protocol").

One caption per test image, chosen by a seeded rule and recorded; the final checkpoint only (no
checkpoint picking on the test set). Everything is computed before anything is written, and the
outputs replace earlier ones by rename, so a failed evaluation leaves earlier results untouched.

    RUN/eval/images/<n>.png   composited outputs, numbered as the test split
    RUN/eval/captions.json    the caption chosen for each test image (index and text)
    RUN/eval/per_image.npz    per-image PSNR/SSIM and every attribute/counterfactual check
                              (csfgan.metrics.per_image), for the tables' paired intervals
    RUN/metrics.json          every metric, with what it was measured with
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from csfgan.checkpoint import CheckpointError, load_checkpoint
from csfgan.config import ScaleConfig, from_dict
from csfgan.data.dataset import InpaintingDataset
from csfgan.data.prepared import PreparedData
from csfgan.data.text import Vocabulary
from csfgan.io import write_json
from csfgan.metrics import per_image
from csfgan.metrics.fid import fid_kid, inception_weights_available
from csfgan.metrics import per_image
from csfgan.metrics.pixel import pixel_metrics_per_image
from csfgan.models.damsm import DamsmImageEncoder, mismatched_candidates, r_precision
from csfgan.models.generator import Generator
from csfgan.models.text import TextEncoder, empty_captions, padding_mask
from csfgan.provenance import provenance
from csfgan.train import GENERATOR_KIND

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
    """A trained generator with its frozen text encoder, rebuilt from ``final.pt`` alone."""

    def __init__(self, checkpoint: Path, device: str | torch.device = "cpu"):
        self.path = Path(checkpoint)
        ckpt = load_checkpoint(self.path, GENERATOR_KIND)
        self.checkpoint = ckpt
        self.run: dict[str, Any] = ckpt["run"]
        self.cfg: ScaleConfig = from_dict(ScaleConfig, self.run["config"], f"{self.path}: run.config")
        self.vocab = Vocabulary(ckpt["vocab"])
        self.device = torch.device(device)
        try:
            self.generator = Generator(self.cfg)
            self.generator.load_state_dict(ckpt["generator"])
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


def evaluate(run: Path, out: Path | None = None, *, device: str = "cpu", batch_size: int | None = None,
             save_images: bool = True, progress: bool = True) -> dict[str, Any]:
    run = Path(run)
    out = Path(out) if out is not None else run / "metrics.json"
    started = time.perf_counter()
    model = InpaintingModel(run / "final.pt", device)
    cfg = model.cfg
    data = PreparedData(Path(model.run["data"]))
    if data.vocab != model.vocab:
        raise CheckpointError(f"{run}/final.pt was trained with another vocabulary than {data.root}")
    test = InpaintingDataset(data, "test", mask=cfg.data.mask, hole_fraction=cfg.data.hole_fraction,
                             captions="seeded", seed=cfg.eval.caption_seed)
    n = len(test)
    bs = batch_size or cfg.eval.batch_size
    torch.manual_seed(cfg.eval.caption_seed)
    fakes = np.empty((n, data.resolution, data.resolution, 3), dtype=np.uint8)
    holes = np.empty((n, data.resolution, data.resolution), dtype=bool)
    fake_codes, sent_codes = [], []
    for start in tqdm(range(0, n, bs), desc="inpaint test split", disable=not progress, dynamic_ncols=True):
        b = test.batch(np.arange(start, min(n, start + bs)))
        composite, _ = model.inpaint(b["image"], b["mask"], b["tokens"], b["length"])
        fakes[start:start + len(composite)] = to_uint8(composite)
        holes[start:start + len(composite)] = b["mask"][:, 0].numpy() > 0.5
        with torch.no_grad():
            fake_codes.append(model.image_encoder.global_features(composite).cpu())
            sent_codes.append(model.text_encoder(b["tokens"], b["length"])[1].cpu())
    real = np.asarray(test.split.images)

    metrics: dict[str, Any] = {"dataset": data.name, "test_images": n, "resolution": data.resolution}
    per_image_arrays: dict[str, np.ndarray] = {"keys": np.asarray(test.split.keys, dtype=str),
                                               **pixel_metrics_per_image(real, fakes, holes)}
    metrics.update({k: float(per_image_arrays[k].mean()) for k in per_image.MEAN_METRICS})

    weights = inception_weights_available(cfg.eval.inception_weights_path)
    extractor = "inception-v3-compat" if weights else "damsm-image-encoder"
    fid = fid_kid(real, fakes, extractor=extractor, image_encoder=model.image_encoder, inception_weights=weights,
                  cache_dir=fid_cache_dir(data), cache_key=f"{data.name}-test")
    metrics.update({k: fid[k] for k in ("fid", "kid_mean", "kid_std")})
    metrics["fid_features"] = fid["features"]
    metrics["fid_details"] = {k: v for k, v in fid.items() if k not in ("fid", "kid_mean", "kid_std")}

    candidates = mismatched_candidates(test.split.class_ids, R_PRECISION_CANDIDATES, seed=cfg.eval.caption_seed)
    metrics["r_precision"] = r_precision(torch.cat(fake_codes), torch.cat(sent_codes), torch.arange(n),
                                         torch.from_numpy(candidates))
    metrics["r_precision_candidates"] = R_PRECISION_CANDIDATES + 1

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
        "train_seconds": model.checkpoint.get("train_seconds"),
        "perceptual_source": model.run.get("perceptual_source"),
        "caption_seed": cfg.eval.caption_seed, "inference_precision": cfg.eval.precision,
        "eval_seconds": round(time.perf_counter() - started, 2),
        "provenance": provenance(),
    })
    _publish(run, out, metrics, fakes if save_images else None, captions, per_image_arrays)
    return metrics


def _publish(run: Path, out: Path, metrics: dict[str, Any], fakes: np.ndarray | None, captions: list,
             per_image_arrays: dict[str, np.ndarray]) -> None:
    """Write the images and per-image metrics to a fresh folder and swap it in, then the metrics file (both
    atomic)."""
    tmp = Path(tempfile.mkdtemp(prefix=".eval.partial-", dir=run))
    try:
        if fakes is not None:
            (tmp / "images").mkdir()
            for i, image in enumerate(fakes):
                Image.fromarray(image).save(tmp / "images" / f"{i:05d}.png")
        write_json(tmp / "captions.json", captions)
        per_image.save(tmp, per_image_arrays)
        final = run / "eval"
        if final.exists():
            old = run / f".eval.old-{os.getpid()}"
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    write_json(out, metrics)

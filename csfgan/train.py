"""GAN training of one CSF-GAN variant: alternating D and G steps (Section 3.4, Eq. 6-12).

The run directory is the contract (after NVlabs/edm):

    config.json            resolved scale + variant + seed + data and text-encoder provenance
    provenance.json        package versions, git commit, host
    stats.jsonl            one JSON line per logging step: every loss term, images/s
    log.txt                human-readable progress
    samples/step<N>.png    fixed test batch: masked input | output | real
    checkpoints/state.pt   latest resumable training state (models, optimizers, RNG, step)
    final.pt               self-describing generator checkpoint (weights, config, vocabulary, text encoder)

A run resumes from ``checkpoints/state.pt``; on CPU the resumed run ends with the same weights as an
uninterrupted one, because every random draw (batches, captions, noise, dropout) comes from RNG
states saved in the checkpoint. A non-finite loss stops the run with an error before any optimizer
step or checkpoint write, so the last checkpoint stays good.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from tqdm import tqdm

from csfgan.checkpoint import GENERATOR_KIND, STATE_KIND, load_checkpoint, save_checkpoint
from csfgan.config import (  # noqa: F401 - parse_overrides re-exported for older callers
    ScaleConfig,
    parse_overrides,
    resolve_config,
    to_dict,
)
from csfgan.damsm import load_text_encoder
from csfgan.data.dataset import InpaintingDataset
from csfgan.data.prepared import PreparedData
from csfgan.errors import UserError
from csfgan.io import remove_stale_temporaries, write_json
from csfgan.lock import command_line, output_lock
from csfgan.losses import GeneratorLoss
from csfgan.models.generator import GENERATOR_ARCHITECTURE, Generator, check_architecture
from csfgan.models.text import empty_captions, padding_mask
from csfgan.provenance import file_sha256, provenance
from csfgan.resume import ON_MISMATCH, discard_run, identity_differences, mismatch_error, truncate_stats
from csfgan.step import Models, TrainingDiverged, training_precision, training_step


@dataclasses.dataclass
class Run:
    """Everything that defines a training run; its dict is ``config.json``."""

    data: str
    text_encoder: str
    variant: str
    scale: str
    seed: int
    overrides: list[str]
    config: ScaleConfig

    def to_json(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["config"] = to_dict(self.config)
        return out


# --------------------------------------------------------------------------------------------
# Distributed (torchrun) support: the same command runs on one process or several.


def _distributed() -> tuple[int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend)
    rank = dist.get_rank() if dist.is_initialized() else 0
    return rank, world


def _device(requested: str) -> torch.device:
    from csfgan.runtime import resolve_device

    return resolve_device(requested)


# --------------------------------------------------------------------------------------------


def _spread(n: int, k: int) -> np.ndarray:
    """``k`` indices evenly spread over ``n`` (test images are grouped by species: show several)."""
    return np.linspace(0, n - 1, k).round().astype(np.int64) % max(n, 1)


def _sample_grid(batch: dict[str, torch.Tensor], fake: torch.Tensor, path: Path) -> None:
    from torchvision.utils import make_grid, save_image

    from csfgan.io import atomic_path

    real, mask = batch["image"], batch["mask"]
    masked = real * (1 - mask) + mask * 0.0  # grey hole
    rows = torch.cat([masked, fake, real], dim=0)
    grid = make_grid(rows.clamp(-1, 1) * 0.5 + 0.5, nrow=len(real), padding=1)
    tmp, commit = atomic_path(path)
    save_image(grid, tmp, format="png")
    commit()


def train(
    data: Path,
    text_encoder: Path,
    variant: str,
    scale: str,
    out: Path,
    *,
    seed: int = 0,
    overrides: list[str] | None = None,
    device: str = "auto",
    steps: int | None = None,
    progress: bool = True,
    restart: bool = False,
    on_mismatch: str = "error",
) -> Path:
    """Train (or resume) a run in ``out``; returns the path of ``final.pt``.

    ``steps`` stops early at that step count (a checkpoint is written there), for interruption tests
    and for splitting long jobs; the run resumes from it on the next call. A run resumes only when
    its identity (:mod:`csfgan.resume`) matches; ``restart`` discards what ``out`` holds first, and
    ``on_mismatch="restart"`` does so only when the identity differs.
    """
    if on_mismatch not in ON_MISMATCH:
        raise UserError(f"on_mismatch {on_mismatch!r}: expected one of {', '.join(ON_MISMATCH)}")
    out = Path(out)
    # One writer per run directory (torchrun's other ranks write nothing there).
    writer = int(os.environ.get("RANK", "0")) == 0
    try:
        with output_lock(out, command_line()) if writer else contextlib.nullcontext():
            if writer:
                remove_stale_temporaries(out, ("final.pt", "config.json", "provenance.json", "stats.jsonl"))
                remove_stale_temporaries(out / "checkpoints", ("state.pt",))
                remove_stale_temporaries(out / "samples")
            return _train_locked(data, text_encoder, variant, scale, out, seed=seed, overrides=overrides,
                                 device=device, steps=steps, progress=progress, restart=restart,
                                 on_mismatch=on_mismatch)
    except TrainingDiverged as exc:
        raise TrainingDiverged(f"{exc} {_divergence_advice(data, text_encoder, variant, scale, out, seed, overrides)}"
                               ) from exc


def _divergence_advice(data, text_encoder, variant: str, scale: str, out, seed: int, overrides) -> str:
    """The command that starts the run again with half the learning rate.

    Resuming with the same settings repeats the same steps, and resuming with another learning
    rate would give weights that neither config describes; a lower rate is another run.
    """
    import shlex

    lr = resolve_config(scale, variant, overrides)[0].train.lr
    kept = [o for o in overrides or [] if o.split("=", 1)[0].strip() != "train.lr"]
    argv = ["csfgan", "train", "--data", str(data), "--text-encoder", str(text_encoder), "--variant", variant,
            "--scale", scale, "--seed", str(seed), "--out", str(out)]
    for item in [*kept, f"train.lr={lr / 2:g}"]:
        argv += ["--set", item]
    argv.append("--restart")
    return f"A lower learning rate is another run; start it again: {shlex.join(argv)}"


def _resume_point(out: Path, record: dict, restart: bool, on_mismatch: str, rank: int) -> dict | str | None:
    """What ``out`` lets this run do: None (start fresh), "finished", or the state dict to resume from."""
    state_path, final = out / "checkpoints" / "state.pt", out / "final.pt"
    if restart:
        if rank == 0:
            discard_run(out, "--restart")
        return None
    if state_path.is_file():
        where, existing = state_path, load_checkpoint(state_path, STATE_KIND)
    elif final.is_file():
        where, existing = final, load_checkpoint(final, GENERATOR_KIND)
    else:
        if rank == 0 and (out / "config.json").is_file():
            # Stopped before its first checkpoint: no weights, only rows and samples of steps to redo.
            discard_run(out, "no checkpoint to resume from")
        return None
    diffs = identity_differences(existing["run"], record)
    if diffs:
        if on_mismatch != "restart":
            raise mismatch_error(out, where, diffs)
        if rank == 0:
            discard_run(out, f"--on-mismatch restart, the run differs ({'; '.join(diffs)})")
        return None
    return "finished" if final.is_file() else existing


def _train_locked(
    data: Path,
    text_encoder: Path,
    variant: str,
    scale: str,
    out: Path,
    *,
    seed: int,
    overrides: list[str] | None,
    device: str,
    steps: int | None,
    progress: bool,
    restart: bool,
    on_mismatch: str,
) -> Path:
    cfg, variant_name = resolve_config(scale, variant, overrides)
    rank, world = _distributed()
    dev = _device(device)
    prepared = PreparedData(Path(data))
    if prepared.resolution != cfg.resolution:
        raise UserError(
            f"{data} was prepared at {prepared.resolution} px but scale {cfg.name} trains at {cfg.resolution} px: "
            f"prepare it with --scale {cfg.name}"
        )
    encoder, damsm_image, vocab, text_ckpt = load_text_encoder(Path(text_encoder), vocab=prepared.vocab,
                                                                text_cfg=cfg.text)
    encoder.to(dev).eval().requires_grad_(False)
    damsm_image.to(dev).eval().requires_grad_(False)

    run = Run(str(data), str(text_encoder), variant_name, cfg.name, seed, list(overrides or []), cfg)
    record = run.to_json()
    record["data_manifest"] = prepared.manifest
    record["text_encoder_sha256"] = file_sha256(Path(text_encoder))
    record["data_manifest_sha256"] = prepared.manifest_sha256
    record["world_size"] = world
    record["architecture"] = GENERATOR_ARCHITECTURE

    torch.manual_seed(seed)  # the same initial weights on every rank
    models = Models(cfg).to(dev)
    torch.manual_seed(seed * 1000 + rank)  # different noise per rank
    loss_fn = GeneratorLoss(cfg, perceptual_fallback=damsm_image.features, damsm_image=damsm_image).to(dev)
    record["perceptual_source"] = loss_fn.perceptual.source if loss_fn.perceptual is not None else None
    t = cfg.train
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = t.cudnn_benchmark
    pin = dev.type == "cuda" and t.pin_memory
    opt_g = torch.optim.Adam(models.generator.parameters(), lr=t.lr, betas=(t.beta1, t.beta2))
    opt_d = torch.optim.Adam(list(models.discriminator_parameters()), lr=t.lr, betas=(t.beta1, t.beta2))
    batches = torch.Generator().manual_seed(seed * 1000 + rank)
    train_set = InpaintingDataset(prepared, "train", mask=cfg.data.mask, hole_fraction=cfg.data.hole_fraction,
                                  seed=seed)
    # Sample grids show val images: looking at test images during training would be a choice made on test.
    fixed = InpaintingDataset(prepared, "val", mask=cfg.data.mask, hole_fraction=cfg.data.hole_fraction,
                              captions="seeded", seed=cfg.eval.caption_seed).batch(
                                  _spread(len(prepared.split("val")), 8))
    fixed = {k: v.to(dev) for k, v in fixed.items()}

    state_path = out / "checkpoints" / "state.pt"
    step, elapsed = 0, 0.0
    state = _resume_point(out, record, restart, on_mismatch, rank)
    if world > 1:
        dist.barrier()  # rank 0 may have discarded the old run
    if state == "finished":
        print(f"csfgan train: {out} already holds this run, finished (final.pt); nothing to do", file=sys.stderr)
        return out / "final.pt"
    if state is not None:
        check_architecture(state.get("architecture"), str(out / "checkpoints" / "state.pt"))
        models.load_state_dict(state["models"])
        opt_g.load_state_dict(state["opt_g"])
        opt_d.load_state_dict(state["opt_d"])
        batches.set_state(state["batch_rng"])
        torch.set_rng_state(state["torch_rng"])
        if dev.type == "cuda" and state.get("cuda_rng") is not None:
            torch.cuda.set_rng_state(state["cuda_rng"])
        step, elapsed = state["step"], state["elapsed"]
        if rank == 0:
            truncate_stats(out / "stats.jsonl", step)

    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        (out / "samples").mkdir(exist_ok=True)
        write_json(out / "config.json", record)
        write_json(out / "provenance.json", provenance())
    total_steps = t.steps if steps is None else min(steps, t.steps)
    amp = training_precision(cfg, dev)

    def text_features(b: dict[str, torch.Tensor]):
        tokens, lengths = (b["tokens"], b["length"]) if cfg.model.text_input else empty_captions(b["tokens"],
                                                                                                   b["length"])
        with torch.no_grad():
            words, sent = encoder(tokens, lengths)
        return words, sent, padding_mask(tokens)

    def save_state() -> None:
        if rank != 0:
            return
        save_checkpoint({
            "kind": STATE_KIND, "architecture": GENERATOR_ARCHITECTURE, "run": record, "step": step, "elapsed": elapsed,
            "models": models.state_dict(), "opt_g": opt_g.state_dict(), "opt_d": opt_d.state_dict(),
            "batch_rng": batches.get_state(), "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state() if dev.type == "cuda" else None,
        }, state_path)

    stats_file = open(out / "stats.jsonl", "a") if rank == 0 else None  # noqa: SIM115 - closed below
    log_file = open(out / "log.txt", "a") if rank == 0 else None  # noqa: SIM115
    # A bar on a terminal only (disable=None); in a job's log, the log_every lines printed below.
    bar = tqdm(total=total_steps, initial=step, desc=f"train {variant_name}",
               disable=(None if progress else True) if rank == 0 else True,
               dynamic_ncols=True)
    try:
        models.train()
        tick = time.perf_counter()
        window_images = 0
        while step < total_steps:
            b = {k: (v.pin_memory() if pin else v).to(dev, non_blocking=pin)
                 for k, v in train_set.sample(t.batch_size, batches).items()}
            real, mask = b["image"], b["mask"]
            words, sent, word_mask = text_features(b)

            loss_d, terms = training_step(models, loss_fn, opt_g, opt_d, real, mask, words, sent, word_mask,
                                          class_ids=b["class_id"], amp=amp, world=world, step=step)

            step += 1
            window_images += t.batch_size * world
            bar.update(1)
            if rank == 0 and (step % t.log_every == 0 or step == total_steps):
                now = time.perf_counter()
                elapsed += now - tick
                row = {"step": step, "elapsed_s": round(elapsed, 3),
                       "images_per_s": round(window_images / max(now - tick, 1e-9), 2),
                       "loss_d": float(loss_d),
                       **{k if k.startswith("sentence_snr/") else f"loss_g/{k}": float(v) for k, v in terms.items()}}
                stats_file.write(json.dumps(row) + "\n")
                stats_file.flush()
                line = (f"step {step}/{t.steps} D {row['loss_d']:.4f} G {row['loss_g/total']:.4f} "
                        f"{row['images_per_s']:.1f} img/s")
                log_file.write(line + "\n")
                log_file.flush()
                if bar.disable and progress:  # not a terminal (a job's log): a line per log_every steps
                    print(f"train {variant_name}: {line}", flush=True)
                bar.set_postfix(D=f"{row['loss_d']:.3f}", G=f"{row['loss_g/total']:.3f}")
                tick, window_images = time.perf_counter(), 0
            if rank == 0 and (step % t.sample_every == 0 or step == total_steps):
                # A private RNG stream: samples must not shift the training draws, or a run
                # stopped and resumed at a sampling step would diverge from an uninterrupted one.
                models.generator.eval()
                with torch.no_grad(), torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
                    torch.manual_seed(seed)
                    fw, fs, fm = text_features(fixed)
                    _, sample, _ = models.generator(fixed["image"], fixed["mask"], fs, fw, fm)
                models.generator.train()
                _sample_grid(fixed, sample.float(), out / "samples" / f"step{step:06d}.png")
            if step % t.checkpoint_every == 0 or step == total_steps:
                save_state()
        bar.close()
        if step >= t.steps and rank == 0:
            save_checkpoint(generator_checkpoint(models.generator, record, step, elapsed, encoder, damsm_image,
                                                 vocab, text_ckpt), out / "final.pt")
    finally:
        if world > 1 and dist.is_initialized():
            dist.barrier()
        if stats_file:
            stats_file.close()
        if log_file:
            log_file.close()
    return out / "final.pt"


def generator_checkpoint(generator: Generator, record: dict, step: int, elapsed: float, encoder, damsm_image,
                         vocab, text_ckpt: dict) -> dict[str, Any]:
    """Everything ``csfgan evaluate`` and ``csfgan inpaint`` need, with no other file."""
    return {
        "kind": GENERATOR_KIND,
        "architecture": GENERATOR_ARCHITECTURE,
        "generator": generator.state_dict(),
        "run": record,
        "step": step,
        "train_seconds": elapsed,
        "vocab": vocab.words,
        "text_encoder": encoder.state_dict(),
        "damsm_image_encoder": damsm_image.state_dict(),
        "damsm_image_config": damsm_image.config(),
        "text_metrics": text_ckpt.get("metrics"),
        "provenance": provenance(),
    }

"""GAN training of one CSF-GAN variant: alternating D and G steps (Section 3.4, Eq. 6-12).

The run directory is the contract (after NVlabs/edm):

    config.json            resolved scale + variant + seed + data and text-encoder provenance
    provenance.json        package versions, git commit, host
    stats.jsonl            one JSON line per logging step: every loss term, images/s
    log.txt                human-readable progress
    samples/step<N>.png    fixed test batch: masked input | output | real
    checkpoints/state.pt   latest resumable training state (models, optimizers, RNG, step)
    checkpoints/generator-step<N>.pt  a generator checkpoint every ``train.snapshot_every`` steps
    final.pt               self-describing generator checkpoint (weights, config, vocabulary, text encoder;
                           the averaged generator too when ``train.ema_half_life_images`` > 0)

A run resumes from ``checkpoints/state.pt``; on CPU the resumed run ends with the same weights as an
uninterrupted one, because every random draw (batches, captions, noise, dropout) comes from RNG
states saved in the checkpoint. A non-finite loss stops the run with an error before any optimizer
step or checkpoint write, so the last checkpoint stays good.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from tqdm import tqdm

from csfgan import readings
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
from csfgan.data.text import Vocabulary
from csfgan.ema import GeneratorAverage
from csfgan.errors import UserError
from csfgan.io import remove_stale_temporaries, write_json
from csfgan.lock import command_line, output_lock
from csfgan.losses import GeneratorLoss
from csfgan.models.damsm import DamsmImageEncoder
from csfgan.models.generator import GENERATOR_ARCHITECTURE, Generator, check_architecture
from csfgan.models.text import TextEncoder, empty_captions, padding_mask
from csfgan.provenance import file_sha256, provenance
from csfgan.resume import ON_MISMATCH, discard_run, identity_differences, mismatch_error, truncate_stats
from csfgan.signals import SaveClock, StopRequest, deferred_stop
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


def _distributed(requested: str) -> tuple[int, int, torch.device]:
    """(rank, world size, this rank's device). Under torchrun each rank claims a GPU of its own
    (``--device cuda`` names the kind, not one card), and the backend follows the device: NCCL for CUDA
    tensors, gloo for CPU ones (a CPU run on a GPU machine included)."""
    from csfgan.runtime import claim_free_gpu, resolve_device

    world = int(os.environ.get("WORLD_SIZE", "1"))
    kind = str(requested).strip().lower()
    if world > 1 and kind.startswith("cuda:"):
        raise UserError(f"--device {requested}: under torchrun each rank claims a GPU of its own; "
                        f"pass --device cuda (or auto)")
    if world > 1 and kind in ("auto", "cuda") and torch.cuda.is_available():
        if torch.cuda.device_count() < world:
            raise UserError(f"torchrun runs {world} ranks but {torch.cuda.device_count()} GPU(s) are visible: one "
                            f"GPU per rank (lower --nproc_per_node or gpus_per_job, or show more GPUs)")
        # Each rank claims a card no other csfgan process holds, as a single-process job does: on a
        # workstation running two torchrun trainings at once, LOCAL_RANK alone would put both on cuda:0..N-1.
        # In a Slurm job that sees exactly its N cards this gives every rank one of them.
        dev = torch.device(f"cuda:{claim_free_gpu()}")
        torch.cuda.set_device(dev)
    else:
        dev = resolve_device(requested)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    rank = dist.get_rank() if dist.is_initialized() else 0
    return rank, world, dev


# --------------------------------------------------------------------------------------------


def apply_numerics(t, dev: torch.device) -> dict[str, Any]:
    """Set (on CUDA) what decides a GPU run's numbers besides the config's precision, and return what is
    in effect: recorded in the run, so a table can say "TF32" where it would otherwise say "fp32"."""
    if dev.type != "cuda":
        return {"device": "cpu", "deterministic": True, "tf32": False, "cudnn_benchmark": False}
    if t.deterministic:
        # cuBLAS reads this when its handle is created, i.e. at the first matmul: set before any.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.deterministic = t.deterministic
    torch.backends.cudnn.benchmark = t.cudnn_benchmark and not t.deterministic
    torch.backends.cudnn.allow_tf32 = t.tf32
    torch.backends.cuda.matmul.allow_tf32 = t.tf32
    major, _ = torch.cuda.get_device_capability(dev)
    return {"device": torch.cuda.get_device_name(dev), "deterministic": t.deterministic,
            "tf32": t.tf32 and major >= 8, "cudnn_benchmark": torch.backends.cudnn.benchmark,
            "cublas_workspace_config": os.environ.get("CUBLAS_WORKSPACE_CONFIG")}


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
    save_every_minutes: float = 10.0,
) -> Path:
    """Train (or resume) a run in ``out``; returns the path of ``final.pt``.

    ``steps`` stops early at that step count (a checkpoint is written there), for interruption tests
    and for splitting long jobs; the run resumes from it on the next call. A run resumes only when
    its identity (:mod:`csfgan.resume`) matches; ``restart`` discards what ``out`` holds first, and
    ``on_mismatch="restart"`` does so only when the identity differs.

    Besides every ``train.checkpoint_every`` steps, the resumable state is saved every
    ``save_every_minutes`` of wall time (0: never by time) and when SIGTERM, SIGUSR1 or Ctrl-C
    arrives (then the command stops with 128 + the signal's number): a job killed at its time limit
    and submitted again continues from there. When it is saved does not change the weights.
    """
    if save_every_minutes < 0:
        raise UserError(f"--save-every-minutes {save_every_minutes:g}: must be 0 (never by time) or positive")
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
                                 on_mismatch=on_mismatch, save_every_minutes=save_every_minutes)
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
    save_every_minutes: float,
) -> Path:
    """The run contract, step by step; every rank runs it, only rank 0 writes to ``out``."""
    s = _set_up(data, text_encoder, variant, scale, out, seed=seed, overrides=overrides, device=device)
    if _resume(s, restart, on_mismatch):
        print(f"csfgan train: {out} already holds this run, finished (final.pt); nothing to do", file=sys.stderr)
        return out / "final.pt"
    _write_run_files(s)
    t = s.cfg.train
    total_steps = t.steps if steps is None else min(steps, t.steps)
    amp = training_precision(s.cfg, s.dev)
    with _outputs(s, total_steps, progress) as outputs:
        _loop(s, total_steps, amp, outputs, save_every_minutes)
        outputs.bar.close()
        if s.step >= t.steps:
            _final_checkpoint(s)
    return out / "final.pt"


@dataclasses.dataclass
class _Session:
    """What one call of ``csfgan train`` works with: the run's identity, its networks, optimisers, random
    streams and data, and where it stands (``step``, ``elapsed`` training seconds)."""

    out: Path
    seed: int
    cfg: ScaleConfig
    variant_name: str
    rank: int
    world: int
    dev: torch.device
    encoder: TextEncoder
    damsm_image: DamsmImageEncoder
    vocab: Vocabulary
    text_ckpt: dict[str, Any]
    record: dict[str, Any]
    models: Models
    loss_fn: GeneratorLoss
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer
    batches: torch.Generator
    pin: bool
    train_set: InpaintingDataset
    fixed: dict[str, torch.Tensor]
    ema: GeneratorAverage | None = None
    step: int = 0
    elapsed: float = 0.0


def _set_up(data: Path, text_encoder: Path, variant: str, scale: str, out: Path, *, seed: int,
            overrides: list[str] | None, device: str) -> _Session:
    """Config, devices, data, the frozen text encoder, the run's identity record, and fresh networks and
    optimisers (seeded: the same initial weights on every rank, different noise per rank)."""
    cfg, variant_name = resolve_config(scale, variant, overrides)
    rank, world, dev = _distributed(device)
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
    # Which reading (paper / authors' code) each paper-versus-code setting follows, and the run's as a whole.
    record["reading"] = readings.summary(cfg)
    record["readings"] = readings.run_readings(cfg)

    # Common random numbers: within a seed every variant draws its batches, masks, captions and
    # augmentation from the same stream, and its noise (CA and z) from another, neither touched by
    # anything a variant changes, so a paired difference between variants cancels what they share.
    record["random_streams"] = {"weights": seed, "batches": seed * 1000 + rank, "noise": seed * 1000 + rank,
                                "shared_by_variants": ["batches", "captions", "masks", "augmentation", "noise"]}
    torch.manual_seed(seed)  # the same initial weights on every rank
    models = Models(cfg).to(dev)
    t = cfg.train
    ema = GeneratorAverage(models.generator, t.ema_half_life_images, t.ema_rampup) \
        if t.ema_half_life_images > 0 else None
    torch.manual_seed(seed * 1000 + rank)  # different noise per rank
    loss_fn = GeneratorLoss(cfg, perceptual_fallback=damsm_image.features, damsm_image=damsm_image).to(dev)
    record["perceptual_source"] = loss_fn.perceptual.source if loss_fn.perceptual is not None else None
    # Where those weights were read on this node: recorded, not part of the identity (the source is their hash).
    record["perceptual_weights_file"] = loss_fn.perceptual.weights_file if loss_fn.perceptual is not None else None
    record["numerics"] = apply_numerics(t, dev)
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
    return _Session(out, seed, cfg, variant_name, rank, world, dev, encoder, damsm_image, vocab, text_ckpt, record,
                    models, loss_fn, opt_g, opt_d, batches, pin, train_set, fixed, ema)


def _resume(s: _Session, restart: bool, on_mismatch: str) -> bool:
    """Continue from what ``s.out`` holds, if it is this run (:func:`_resume_point`): networks, optimisers,
    random streams, step and time from ``checkpoints/state.pt``, and stats cut back to that step.
    True when the run is already finished."""
    state = _resume_point(s.out, s.record, restart, on_mismatch, s.rank)
    if s.world > 1:
        dist.barrier()  # rank 0 may have discarded the old run
    if state == "finished":
        return True
    if state is not None:
        check_architecture(state.get("architecture"), str(s.out / "checkpoints" / "state.pt"))
        where = s.out / "checkpoints" / "state.pt"
        s.models.load_state_dict(state["models"])
        s.opt_g.load_state_dict(state["opt_g"])
        s.opt_d.load_state_dict(state["opt_d"])
        if s.ema is not None:
            s.ema.load_state_dict(state["generator_ema"])
        mine = state
        if s.world > 1:
            ranks = state.get("ranks")
            if not isinstance(ranks, list) or len(ranks) != s.world:
                raise UserError(f"{where} holds rank 0's random state only (written before every rank's was "
                                f"saved); resuming would give every rank rank 0's batches and noise: pass --restart")
            mine = ranks[s.rank]
            # Each rank's BatchNorm running statistics are its own (batch statistics are not synchronised).
            s.models.load_state_dict({**s.models.state_dict(), **mine["buffers"]})
        s.batches.set_state(mine["batch_rng"])
        torch.set_rng_state(mine["torch_rng"])
        if s.dev.type == "cuda" and mine.get("cuda_rng") is not None:
            torch.cuda.set_rng_state(mine["cuda_rng"])
        s.step, s.elapsed = state["step"], state["elapsed"]
        if s.rank == 0:
            truncate_stats(s.out / "stats.jsonl", s.step)
            print(f"csfgan train: resuming {s.out} from step {s.step}/{s.cfg.train.steps}", file=sys.stderr, flush=True)
    return False


def _write_run_files(s: _Session) -> None:
    """``config.json`` (the run's identity) and ``provenance.json``, rewritten by every call."""
    if s.rank == 0:
        s.out.mkdir(parents=True, exist_ok=True)
        (s.out / "samples").mkdir(exist_ok=True)
        write_json(s.out / "config.json", s.record)
        write_json(s.out / "provenance.json", provenance())


@dataclasses.dataclass
class _Outputs:
    """Where the loop reports: ``stats.jsonl`` and ``log.txt`` (rank 0 only) and the progress bar."""

    stats_file: Any
    log_file: Any
    bar: tqdm
    progress: bool


@contextlib.contextmanager
def _outputs(s: _Session, total_steps: int, progress: bool) -> Iterator[_Outputs]:
    """Open the run's logs and bar; on leaving, wait for every rank and close the logs."""
    stats_file = open(s.out / "stats.jsonl", "a") if s.rank == 0 else None  # noqa: SIM115 - closed below
    log_file = open(s.out / "log.txt", "a") if s.rank == 0 else None  # noqa: SIM115
    # A bar on a terminal only (disable=None); in a job's log, the log_every lines printed below.
    bar = tqdm(total=total_steps, initial=s.step, desc=f"train {s.variant_name}",
               disable=(None if progress else True) if s.rank == 0 else True,
               dynamic_ncols=True)
    try:
        yield _Outputs(stats_file, log_file, bar, progress)
    finally:
        if s.world > 1 and dist.is_initialized():
            dist.barrier()
        if stats_file:
            stats_file.close()
        if log_file:
            log_file.close()


def _loop(s: _Session, total_steps: int, amp, outputs: _Outputs, save_every_minutes: float = 0.0) -> None:
    """Training steps up to ``total_steps``: a stats row every ``log_every`` steps, a sample grid every
    ``sample_every`` and the resumable state every ``checkpoint_every`` (and all three at the last step),
    every ``save_every_minutes`` of wall time, and before stopping for a signal."""
    with deferred_stop() as stop:
        _steps(s, total_steps, amp, outputs, stop, SaveClock(save_every_minutes))


def _agree(s: _Session, *flags: bool) -> list[bool]:
    """Each flag, true on any rank: every rank must save (it takes part in gathering the random
    states) and stop at the same step, or the others would wait in a collective for ever."""
    if s.world == 1:
        return list(flags)
    votes = torch.tensor([float(f) for f in flags], device=s.dev)
    dist.all_reduce(votes, op=dist.ReduceOp.MAX)
    return [bool(v) for v in votes.tolist()]


def _steps(s: _Session, total_steps: int, amp, outputs: _Outputs, stop: StopRequest, clock: SaveClock) -> None:
    t = s.cfg.train
    s.models.train()
    tick = time.perf_counter()
    window_images = 0
    while s.step < total_steps:
        b = {k: (v.pin_memory() if s.pin else v).to(s.dev, non_blocking=s.pin)
             for k, v in s.train_set.sample(t.batch_size, s.batches, flip=t.flip,
                                            grayscale=t.grayscale).items()}
        real, mask = b["image"], b["mask"]
        words, sent, word_mask = _text_features(s, b)

        loss_d, terms = training_step(s.models, s.loss_fn, s.opt_g, s.opt_d, real, mask, words, sent, word_mask,
                                      class_ids=b["class_id"], amp=amp, world=s.world, step=s.step)

        if s.ema is not None:
            s.ema.update(s.models.generator, t.batch_size * s.world, (s.step + 1) * t.batch_size * s.world)
        s.step += 1
        window_images += t.batch_size * s.world
        outputs.bar.update(1)
        if s.step % t.log_every == 0 or s.step == total_steps:
            digest = _batch_digest(b)
            digests = None
            if s.world > 1:  # every rank's, to show (and test) that ranks draw different batches
                digests = [None] * s.world
                dist.all_gather_object(digests, digest)
            if s.rank == 0:
                now = time.perf_counter()
                s.elapsed += now - tick
                _log_step(s, outputs, loss_d, terms, images_per_s=round(window_images / max(now - tick, 1e-9), 2),
                          batch_digest=digest, rank_digests=digests)
                tick, window_images = time.perf_counter(), 0
        if s.rank == 0 and (s.step % t.sample_every == 0 or s.step == total_steps):
            _write_samples(s)
        stopping, clock_due = _agree(s, stop.requested, clock.due())
        if s.step % t.checkpoint_every == 0 or s.step == total_steps or stopping or clock_due:
            _save_state(s)
            clock.saved()
        if t.snapshot_every and s.step % t.snapshot_every == 0:
            snapshot = _generator_checkpoint(s)
            if s.rank == 0:
                save_checkpoint(snapshot, snapshot_path(s.out, s.step))
        if stopping:
            if s.rank == 0:
                print(f"csfgan train: state saved at step {s.step}/{t.steps} in {s.out / 'checkpoints' / 'state.pt'}; "
                      f"the same command continues from there", file=sys.stderr, flush=True)
            stop.request(stop.signum or signal.SIGTERM)  # a rank told by another stops as that one would
            stop.stop()


def _text_features(s: _Session, b: dict[str, torch.Tensor]):
    """Word features, sentence vector and padding mask of a batch's captions (empty ones for ``no-text``)."""
    tokens, lengths = (b["tokens"], b["length"]) if s.cfg.model.text_input else empty_captions(b["tokens"],
                                                                                                 b["length"])
    with torch.no_grad():
        words, sent = s.encoder(tokens, lengths)
    return words, sent, padding_mask(tokens)


def _batch_digest(b: dict[str, torch.Tensor]) -> str:
    """SHA-256 of what a batch shows the networks (images after augmentation, masks, captions, indices):
    equal across variants of one seed, the common random numbers made checkable."""
    h = hashlib.sha256()
    for key in ("index", "caption_index", "tokens", "mask", "image"):
        h.update(b[key].detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def _log_step(s: _Session, outputs: _Outputs, loss_d: torch.Tensor, terms: dict[str, torch.Tensor], *,
              images_per_s: float, batch_digest: str | None = None, rank_digests: list[str] | None = None) -> None:
    """A row of ``stats.jsonl``, a line of ``log.txt`` (and of stdout when no bar shows), the bar's losses."""
    row = {"step": s.step, "elapsed_s": round(s.elapsed, 3),
           "images_per_s": images_per_s, "batch_sha256": batch_digest,
           **({"batch_sha256_ranks": rank_digests} if rank_digests else {}),
           "loss_d": float(loss_d),
           **{k if k.startswith("sentence_snr/") else f"loss_g/{k}": float(v) for k, v in terms.items()}}
    outputs.stats_file.write(json.dumps(row) + "\n")
    outputs.stats_file.flush()
    line = (f"step {s.step}/{s.cfg.train.steps} D {row['loss_d']:.4f} G {row['loss_g/total']:.4f} "
            f"{row['images_per_s']:.1f} img/s")
    outputs.log_file.write(line + "\n")
    outputs.log_file.flush()
    if outputs.bar.disable and outputs.progress:  # not a terminal (a job's log): a line per log_every steps
        print(f"train {s.variant_name}: {line}", flush=True)
    outputs.bar.set_postfix(D=f"{row['loss_d']:.3f}", G=f"{row['loss_g/total']:.3f}")


def _write_samples(s: _Session) -> None:
    """The fixed val batch's outputs at this step, ``samples/step<N>.png``."""
    # A private RNG stream: samples must not shift the training draws, or a run
    # stopped and resumed at a sampling step would diverge from an uninterrupted one.
    s.models.generator.eval()
    with torch.no_grad(), torch.random.fork_rng(devices=[s.dev] if s.dev.type == "cuda" else []):
        torch.manual_seed(s.seed)
        fw, fs, fm = _text_features(s, s.fixed)
        _, sample, _ = s.models.generator(s.fixed["image"], s.fixed["mask"], fs, fw, fm)
    s.models.generator.train()
    _sample_grid(s.fixed, sample.float(), s.out / "samples" / f"step{s.step:06d}.png")


def _rank_state(s: _Session) -> dict[str, Any]:
    """What differs between ranks: their random streams and their BatchNorm running statistics."""
    buffers = {name: b.detach().cpu() for name, b in s.models.named_buffers()} if s.world > 1 else {}
    return {"batch_rng": s.batches.get_state(), "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state() if s.dev.type == "cuda" else None, "buffers": buffers}


def _save_state(s: _Session) -> None:
    """``checkpoints/state.pt``: everything a resumed run needs to continue as if never stopped, every
    rank's random state included (every rank calls this; rank 0 writes)."""
    mine = _rank_state(s)
    ranks = None
    if s.world > 1:
        ranks = [None] * s.world
        dist.all_gather_object(ranks, mine)
    if s.rank != 0:
        return
    save_checkpoint({
        "kind": STATE_KIND, "architecture": GENERATOR_ARCHITECTURE, "run": s.record, "step": s.step,
        "elapsed": s.elapsed, "models": s.models.state_dict(), "opt_g": s.opt_g.state_dict(),
        "opt_d": s.opt_d.state_dict(), "generator_ema": None if s.ema is None else s.ema.state_dict(),
        "batch_rng": mine["batch_rng"], "torch_rng": mine["torch_rng"], "cuda_rng": mine["cuda_rng"],
        "ranks": ranks,
    }, s.out / "checkpoints" / "state.pt")


def _final_checkpoint(s: _Session) -> None:
    """``final.pt``: the generator with everything evaluation and inpainting need (:func:`generator_checkpoint`)."""
    final = _generator_checkpoint(s)
    if s.rank == 0:
        save_checkpoint(final, s.out / "final.pt")


def snapshot_path(run: Path, step: int) -> Path:
    """Where ``train.snapshot_every`` keeps the generator checkpoint of ``step``."""
    return Path(run) / "checkpoints" / f"generator-step{step:06d}.pt"


def _generator_checkpoint(s: _Session) -> dict[str, Any]:
    """Every rank calls this (under torchrun the evaluated BatchNorm statistics are all ranks' mean)."""
    return generator_checkpoint(s.models.generator, s.record, s.step, s.elapsed, s.encoder, s.damsm_image,
                                s.vocab, s.text_ckpt, ema=s.ema, state=_rank_mean_state(s, s.models.generator))


def _rank_mean_state(s: _Session, module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """``module``'s state with its floating-point buffers (BatchNorm running mean and variance) averaged
    over the ranks: each rank normalised its own batches, and evaluation should see all of them. The
    training itself keeps each rank's own (a copy is averaged), so saving never changes the weights."""
    state = module.state_dict()
    if s.world == 1:
        return state
    names = {name for name, _ in module.named_buffers()}
    out = {}
    for name, value in state.items():
        if name in names and value.is_floating_point():
            value = value.detach().clone()
            dist.all_reduce(value)
            value = value / s.world
        out[name] = value
    return out


def generator_checkpoint(generator: Generator, record: dict, step: int, elapsed: float, encoder, damsm_image,
                         vocab, text_ckpt: dict, ema: GeneratorAverage | None = None,
                         state: dict[str, torch.Tensor] | None = None) -> dict[str, Any]:
    """Everything ``csfgan evaluate`` and ``csfgan inpaint`` need, with no other file: the raw generator
    and, when one is kept, its average (``generator_ema``, with ``ema`` saying how it was averaged)."""
    return {
        "kind": GENERATOR_KIND,
        "architecture": GENERATOR_ARCHITECTURE,
        "generator": generator.state_dict() if state is None else state,
        "generator_ema": None if ema is None else ema.state_dict(),
        "ema": None if ema is None else ema.describe(),
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

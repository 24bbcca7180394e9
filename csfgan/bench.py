"""``csfgan bench``: training and inference efficiency against this machine's own measured peak.

For each scale: FLOPs per image of every component (``torch.utils.flop_counter``), images/s of the
real training step (``csfgan.step.training_step``: D and G steps with every loss) and of inference,
the machine's dense GEMM GFLOP/s (fp32 and bf16, best of BLAS and oneDNN) measured in the same
process, and MFU = achieved / peak.
Also the data-loading share of the step time, peak RSS, and per-stage wall times of the last DAG
run from the rules' benchmark files. Nothing here is asserted: it measures.
"""

from __future__ import annotations

import csv
import os
import resource
import statistics
import time
from pathlib import Path
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from csfgan.config import ScaleConfig, resolve_config
from csfgan.evaluate import INFERENCE_MEMORY_FORMAT, inference_forward
from csfgan.losses import GeneratorLoss
from csfgan.models.damsm import DamsmImageEncoder
from csfgan.models.text import TextEncoder
from csfgan.provenance import provenance
from csfgan.step import Models, training_precision, training_step

VOCAB_SIZE = 5450  # about CUB's; the text encoder's FLOPs barely depend on it


# CPU share below which the process did not get the cores it asked for, and cores' worth of CPU
# that other processes used while it was timing, above which they competed.
MIN_CPU_SHARE = 0.9
MAX_OTHER_CORES = 0.25


def _machine_busy_seconds() -> float | None:
    """CPU seconds all processes have used on this machine (``/proc/stat``), or None off Linux."""
    try:
        with open("/proc/stat") as fh:
            fields = fh.readline().split()
    except OSError:
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[1:9])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


class CpuUsage:
    """Over the timed sections only: this process's CPU seconds (all threads), the machine's, and wall.

    A bench next to other jobs reads their share of the cores as this machine's speed (two training
    jobs beside a bench made it read 2 images/s). The machine's CPU time minus this process's is what
    other work took meanwhile, measured, unlike the load average, which lags a finished job by minutes.
    """

    def __init__(self):
        self.cpu = self.wall = 0.0
        self.machine: float | None = 0.0

    def __enter__(self):
        self._cpu0, self._wall0, self._machine0 = time.process_time(), time.perf_counter(), _machine_busy_seconds()
        return self

    def __exit__(self, *exc):
        self.cpu += time.process_time() - self._cpu0
        self.wall += time.perf_counter() - self._wall0
        machine = _machine_busy_seconds()
        if self.machine is None or machine is None or self._machine0 is None:
            self.machine = None
        else:
            self.machine += machine - self._machine0

    def reset(self) -> None:
        self.__init__()


_USAGE = CpuUsage()


def load_verdict(threads: int, cpu_share: float, other_cores: float | None, load_before: float,
                 cores: int) -> tuple[bool, str]:
    """Whether other work competed with the bench, and the sentence that says so (or that it did not).

    ``other_cores``: the cores' worth of CPU other processes used during the timed sections (None where
    the machine's CPU time cannot be read: then the 1-minute load average before the bench decides).
    """
    reasons = []
    if cpu_share < MIN_CPU_SHARE:
        reasons.append(f"this process got {cpu_share:.2f} of the {threads} thread(s) of CPU it asked for")
    if other_cores is not None and other_cores > MAX_OTHER_CORES:
        reasons.append(f"other processes used {other_cores:.2f} of the {cores} cores while it was timing")
    if other_cores is None and load_before > MAX_OTHER_CORES:
        reasons.append(f"the 1-minute load average was {load_before:.2f} on {cores} cores before it started")
    if reasons:
        return True, ("other work competed for the CPU: " + "; ".join(reasons)
                      + ". These rates are not this machine's: run the bench on an idle machine.")
    others = f"{other_cores:.2f}" if other_cores is not None else "unknown"
    return False, (f"no competing work: CPU share {cpu_share:.2f} of {threads} thread(s), other processes "
                   f"{others} of {cores} cores while timing")


def _best_rate(fn, flop: float, seconds: float) -> float:
    # Warm up by time, not by calls: oneDNN's primitive cache and the core's clock need a moment,
    # and a cold short run read a third of the steady rate.
    warm = time.perf_counter() + seconds / 2
    while time.perf_counter() < warm:
        fn()
    best, deadline = 0.0, time.perf_counter() + seconds
    with _USAGE:
        while time.perf_counter() < deadline:
            start = time.perf_counter()
            fn()
            best = max(best, flop / (time.perf_counter() - start) / 1e9)
    return best


def peak_gflops(dtype: torch.dtype = torch.float32, seconds: float = 2.0) -> dict[str, float]:
    """Dense GEMM GFLOP/s with the current thread count, through both of torch's CPU kernel libraries.

    ``blas``: a square matmul (MKL or OpenBLAS). ``onednn``: a 3×3 convolution, the implicit GEMM every
    convolution of these networks runs on. On AMD CPUs MKL takes its AVX2 path, so matmul alone can
    read half the rate the convolutions reach and MFU would pass 1; ``peak`` is the best of the two.
    """
    n = 1024
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    blas = _best_rate(lambda: a @ b, 2 * n**3, seconds / 2)
    onednn = 0.0
    for ch in (128, 256):  # oneDNN's best blocking differs with width and thread count
        batch, side = 8, 32
        x, w = torch.randn(batch, ch, side, side, dtype=dtype), torch.randn(ch, ch, 3, 3, dtype=dtype)
        onednn = max(onednn, _best_rate(lambda x=x, w=w: torch.nn.functional.conv2d(x, w, padding=1),
                                        2 * batch * ch * ch * 9 * side * side, seconds / 4))
    return {"blas": round(blas, 2), "onednn": round(onednn, 2), "peak": round(max(blas, onednn), 2)}


def lstm_flops(cfg: ScaleConfig, words: int) -> float:
    """Multiply-adds of the bidirectional LSTM over ``words`` tokens (4 gates, input + recurrent)."""
    hidden = cfg.text.hidden_dim // 2
    return 2 * words * 4 * (cfg.text.embedding_dim + hidden) * hidden * 2


def _flops(fn) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def _timed(fn, repeats: int, warmup: int = 3) -> float:
    """Median seconds per call after ``warmup`` calls: the steady state a long run lives in.

    The first calls fill oneDNN's primitive cache and grow the heap to its working size (thousands of
    page faults per step; csfgan.runtime), and a busy neighbour can stall any single call.
    """
    for _ in range(warmup):
        fn()
    seconds = []
    with _USAGE:
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            seconds.append(time.perf_counter() - start)
    return statistics.median(seconds)


class _Inputs:
    def __init__(self, cfg: ScaleConfig, batch: int):
        r, t = cfg.resolution, cfg.text.max_words
        self.image = torch.rand(batch, 3, r, r) * 2 - 1
        self.mask = torch.zeros(batch, 1, r, r)
        q = r // 4
        self.mask[:, :, q:3 * q, q:3 * q] = 1
        self.tokens = torch.randint(2, VOCAB_SIZE, (batch, t))
        self.lengths = torch.full((batch,), 12)
        self.tokens[:, 12:] = 0


class TrainingStep:
    """One variant's networks, loss and optimisers as ``csfgan train`` builds them (beside the frozen text
    encoder and DAMSM image encoder), and its training step on given inputs: what ``bench_scale`` times and
    ``csfgan estimate`` counts."""

    def __init__(self, cfg: ScaleConfig):
        self.models = Models(cfg)
        self.text = TextEncoder(VOCAB_SIZE, cfg.text).eval().requires_grad_(False)
        damsm = DamsmImageEncoder(cfg.resolution, cfg.text.hidden_dim, cfg.text.damsm.image_channels)
        self.damsm = damsm.eval().requires_grad_(False)
        self.loss_fn = GeneratorLoss(cfg, perceptual_fallback=damsm.features, damsm_image=damsm)
        t = cfg.train
        self.opt_g = torch.optim.Adam(self.models.generator.parameters(), lr=t.lr, betas=(t.beta1, t.beta2))
        self.opt_d = torch.optim.Adam(list(self.models.discriminator_parameters()), lr=t.lr, betas=(t.beta1, t.beta2))
        self.amp = training_precision(cfg, torch.device("cpu"))

    def text_features(self, x: _Inputs):
        """Word features, sentence vector and padding mask of ``x``'s captions."""
        with torch.no_grad():
            words, sent = self.text(x.tokens, x.lengths)
        return words, sent, x.tokens == 0

    def step(self, x: _Inputs, words, sent, word_mask) -> None:
        training_step(self.models, self.loss_fn, self.opt_g, self.opt_d, x.image, x.mask, words, sent, word_mask,
                      amp=self.amp)


def bench_scale(scale: str, variant: str = "full", *, batch: int | None = None, steps: int = 10,
                peaks: dict[str, float] | None = None) -> dict[str, Any]:
    """Rates of the training step as ``csfgan train`` runs it (the scale's precision) and of inference
    as ``csfgan evaluate`` runs it; MFU against the fp32 peak and against the peak of the precision used."""
    cfg, name = resolve_config(scale, variant)
    # At 256 px a CPU step at the paper's batch takes minutes; 2 images measure the same rates.
    b = batch or (cfg.train.batch_size if cfg.resolution < 256 else 2)
    bi = batch or (cfg.eval.batch_size if cfg.resolution < 256 else 2)  # evaluate's batch
    torch.manual_seed(0)
    x = _Inputs(cfg, b)
    training = TrainingStep(cfg)
    models, loss_fn = training.models, training.loss_fn
    words, sent, word_mask = training.text_features(x)
    train_dtype = cfg.train.precision
    infer_dtype = cfg.eval.precision

    def step():
        training.step(x, words, sent, word_mask)

    xi = _Inputs(cfg, bi)
    words_i, sent_i, word_mask_i = training.text_features(xi)

    def generate():
        inference_forward(models.generator, xi.image, xi.mask, sent_i, words_i, word_mask_i, amp=cfg.eval.amp)

    per_image = {
        "generator_forward": _flops(lambda: models.generator(x.image, x.mask, sent, words, word_mask)) / b,
        "global_discriminator_forward": _flops(lambda: models.global_d.score(x.image, x.image)) / b,
        "word_level_discriminator_forward": (
            _flops(lambda: models.word_d(x.image, x.mask, words, word_mask)) / b if models.word_d else 0),
        "perceptual_forward": (_flops(lambda: loss_fn.perceptual.features(x.image)) / b
                               if loss_fn.perceptual is not None else 0),
        # flop_counter does not count the fused LSTM kernel: counted from its shapes instead.
        "text_encoder_forward": lstm_flops(cfg, int(x.lengths[0])),
    }
    models.train()
    train_flops = _flops(step) / b  # forward and backward of every network in one training step
    step_seconds = _timed(step, steps)
    models.eval()
    models.generator.to(memory_format=INFERENCE_MEMORY_FORMAT)
    infer_flops = _flops(generate) / bi
    infer_seconds = _timed(generate, steps)
    models.generator.to(memory_format=torch.contiguous_format)
    models.train()
    peaks = peaks or {"fp32": peak_gflops(torch.float32)["peak"], "bf16": peak_gflops(torch.bfloat16)["peak"]}
    train_ips, infer_ips = b / step_seconds, bi / infer_seconds
    train_rate, infer_rate = train_flops * train_ips / 1e9, infer_flops * infer_ips / 1e9
    return {
        "scale": cfg.name, "variant": name, "resolution": cfg.resolution, "batch": b, "inference_batch": bi,
        "perceptual_network": loss_fn.perceptual.source if loss_fn.perceptual is not None else None,
        "gflop_per_image": {k: round(v / 1e9, 4) for k, v in per_image.items()},
        "train_precision": train_dtype,
        "train_step_gflop_per_image": round(train_flops / 1e9, 4),
        "train_images_per_s": round(train_ips, 2),
        "train_gflops_achieved": round(train_rate, 2),
        # The headline: achieved over the fp32 peak, whatever precision ran (comparable across runs).
        "train_mfu": round(train_rate / peaks["fp32"], 4),
        "train_mfu_vs_precision_peak": round(train_rate / peaks[train_dtype], 4),
        "inference_precision": infer_dtype,
        "inference_gflop_per_image": round(infer_flops / 1e9, 4),
        "inference_images_per_s": round(infer_ips, 2),
        "inference_gflops_achieved": round(infer_rate, 2),
        "inference_mfu": round(infer_rate / peaks["fp32"], 4),
        "inference_mfu_vs_precision_peak": round(infer_rate / peaks[infer_dtype], 4),
    }


def _resolution(data: Path) -> int:
    from csfgan.data.prepared import PreparedData

    return PreparedData(Path(data)).resolution


def data_loading_share(data: Path, batch: int, steps: int, step_seconds: float) -> dict[str, float]:
    """Time to draw a training batch from prepared data, as a share of a training step."""
    from csfgan.data.dataset import InpaintingDataset

    dataset = InpaintingDataset(Path(data), "train")
    gen = torch.Generator().manual_seed(0)
    seconds = _timed(lambda: dataset.sample(batch, gen), steps)
    return {"batch_seconds": round(seconds, 5), "share_of_step": round(seconds / (seconds + step_seconds), 4)}


def dag_stage_times(benchmarks: Path = Path("benchmarks")) -> dict[str, dict[str, float]]:
    """Wall seconds per rule from Snakemake's benchmark files (``benchmarks/<rule>/...tsv``)."""
    stages: dict[str, dict[str, float]] = {}
    for tsv in sorted(Path(benchmarks).rglob("*.tsv")):
        rule = tsv.relative_to(benchmarks).parts[0]
        with open(tsv) as fh:
            rows = list(csv.DictReader(fh, delimiter="\t"))
        if rows:
            entry = stages.setdefault(rule, {"jobs": 0, "total_s": 0.0, "max_s": 0.0})
            seconds = float(rows[-1]["s"])
            entry["jobs"] += 1
            entry["total_s"] = round(entry["total_s"] + seconds, 2)
            entry["max_s"] = round(max(entry["max_s"], seconds), 2)
    return stages


def run_bench(scales: list[str], *, variant: str = "full", batch: int | None = None, steps: int = 10,
              data: Path | None = None, benchmarks: Path = Path("benchmarks"),
              cpu_settings: dict[str, Any] | None = None) -> dict[str, Any]:
    """``cpu_settings``: what ``csfgan.runtime.configure_cpu`` set for this process, recorded as is.

    ``machine_load`` says whether other work competed (:func:`load_verdict`)."""
    load_before = os.getloadavg()
    _USAGE.reset()
    fp32, bf16 = peak_gflops(torch.float32), peak_gflops(torch.bfloat16)
    out: dict[str, Any] = {
        "torch_threads": torch.get_num_threads(),
        "cpu_settings": cpu_settings,
        "matmul_peak_gflops_fp32": fp32["peak"],
        "matmul_peak_gflops_bf16": bf16["peak"],
        "peak_by_library": {"fp32": fp32, "bf16": bf16},
        "scales": {},
        "provenance": provenance(),
    }
    peaks = {"fp32": fp32["peak"], "bf16": bf16["peak"]}
    for scale in scales:
        result = bench_scale(scale, variant, batch=batch, steps=steps, peaks=peaks)
        if data is not None and _resolution(data) != result["resolution"]:
            result["data_loading"] = {"not_measured": f"{data} is prepared at {_resolution(data)} px, "
                                                      f"scale {scale} trains at {result['resolution']} px"}
        elif data is not None:
            step_seconds = result["batch"] / result["train_images_per_s"]
            result["data_loading"] = data_loading_share(data, result["batch"], steps, step_seconds)
        out["scales"][scale] = result
    out["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    threads, cores = torch.get_num_threads(), os.cpu_count() or 1
    share = _USAGE.cpu / (_USAGE.wall * threads) if _USAGE.wall > 0 else 0.0
    others = (max(0.0, _USAGE.machine - _USAGE.cpu) / _USAGE.wall
              if _USAGE.machine is not None and _USAGE.wall > 0 else None)
    competed, verdict = load_verdict(threads, share, others, load_before[0], cores)
    out["machine_load"] = {
        "cores": cores,
        "torch_threads": threads,
        "load_average_before": [round(v, 2) for v in load_before],
        "load_average_after": [round(v, 2) for v in os.getloadavg()],
        "timed_wall_seconds": round(_USAGE.wall, 2),
        "timed_cpu_seconds": round(_USAGE.cpu, 2),
        "cpu_share_of_threads": round(share, 3),
        "other_processes_cores": round(others, 3) if others is not None else None,
        "competed": competed,
        "verdict": verdict,
    }
    out["dag_stages"] = dag_stage_times(benchmarks)
    return out

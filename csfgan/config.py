"""Typed configuration: scales (experiments/scales/*.yaml) and variants (experiments/variants/*.yaml).

A scale says how big everything is (resolution, dataset size, widths, steps); a variant says which
parts of CSF-GAN are switched on and with which loss weights. A run's resolved config is
``RunConfig(scale, variant)``; both come from small YAML files that only state what differs from the
defaults below, which are the paper's values.

Unknown keys, wrong types and out-of-range values raise ``ConfigError`` naming the file and key.
"""

from __future__ import annotations

import dataclasses
import math
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from csfgan.errors import UserError

REPO_ROOT = Path(__file__).resolve().parent.parent
EXPERIMENTS_DIR = REPO_ROOT / "experiments"
SCALES_DIR = EXPERIMENTS_DIR / "scales"
VARIANTS_DIR = EXPERIMENTS_DIR / "variants"


class ConfigError(UserError, ValueError):
    """A configuration file or value is invalid; the message says where and what to do."""


@dataclass
class DataConfig:
    # Images rendered per species for the embedded synthetic sets (real sets use what exists).
    images_per_class_train: int = 60
    images_per_class_test: int = 20
    # The validation split (README, "Splits"): this many images of each *train* class, disjoint from
    # the train images. Synthetic sets render them in addition to the train images (the training set
    # is unchanged); the real sets hold them out of the train split (which shrinks by as many).
    images_per_class_val: int = 4
    seed: int = 0
    # Side of the centre hole as a fraction of the image side (paper: 128 of 256).
    hole_fraction: float = 0.5
    # "center" (paper, Tables 1-4) or "irregular" (Figure 9, seeded free-form strokes).
    mask: str = "center"
    # Real datasets: skip images whose caption file is missing/empty instead of stopping.
    skip_missing_captions: bool = False


@dataclass
class DamsmConfig:
    epochs: int = 600
    batch_size: int = 48
    lr: float = 2e-4
    gamma1: float = 4.0  # AttnGAN: word-region attention sharpness
    gamma2: float = 5.0  # AttnGAN: word-level aggregation
    gamma3: float = 10.0  # AttnGAN: matching-score scale
    image_channels: int = 256  # width of the from-scratch DAMSM image encoder's last stage
    grad_clip: float = 0.25


@dataclass
class TextConfig:
    max_words: int = 18  # AttnGAN's caption length limit
    embedding_dim: int = 300
    hidden_dim: int = 256  # bidirectional: 2 x 128
    dropout: float = 0.5
    damsm: DamsmConfig = field(default_factory=DamsmConfig)


@dataclass
class ModelConfig:
    base_channels: int = 64
    max_channels: int = 512
    # Generator layers that receive sentence-level (Eq. 1-2) and word-level (Eq. 3) fusion, numbered
    # as the authors count (the input conv is layer 1; layer L works at resolution / 2^(L-1)): at
    # 256 px sentence fusion at 128² and 32², word fusion at 8² and 2², as the paper has them.
    sentence_fusion_layers: list[int] = field(default_factory=lambda: [2, 4])
    word_fusion_layers: list[int] = field(default_factory=lambda: [6, 8])
    condition_dim: int = 100  # conditioning-augmentation output c
    noise_dim: int = 100  # z ~ N(0, 1) concatenated with c
    # Baseline text path: the sentence vector projected and concatenated at the bottleneck.
    bottleneck_text: bool = False
    # False: the generator (and the discriminators) get an empty caption at training and evaluation,
    # the `no-text` control (csfgan.models.text.empty_captions).
    text_input: bool = True
    word_level_discriminator: bool = True
    disc_base_channels: int = 64
    disc_max_channels: int = 512
    dilation: int = 2
    # Readings where the paper is silent or its own figures identify the authors' code
    # (docs/deviations.md; ``csfgan.readings`` records which reading each setting follows).
    # "code": the authors' block order (4×4 dilated stride-2 conv, then a 3×3 at the lower resolution;
    # decoder 3×3 stride-1 then 4×4 stride-2 transposed convs) down to a 1×1 innermost level; it is the
    # network Table 2's 82.29 M counts. "prose": Implementation Details' "3×3 followed by 4×4 dilated",
    # 2×2 innermost, 2.2× the FLOPs (the generator before fidelity round three).
    block_order: str = "code"
    # The mask as a 4th input channel (ours before round three); the authors' stem sees the masked RGB.
    mask_channel: bool = False
    # One conditioning augmentation (linear + GLU, as the authors' CA_NET) and one z shared by every
    # sentence-fusion layer; False gives each layer its own CA (linear, no GLU) and z.
    shared_conditioning: bool = True
    # "patch": the authors' PatchGAN (3 stride-2 + 2 stride-1 convs, InstanceNorm, a map of logits);
    # "dcgan-sn": ours before round three (spectral-norm stride-2 stack to one logit).
    global_discriminator: str = "patch"
    # Word-level D sub-regions: "hole-grid" (Eq. 4-5: the hole's cells of a feature grid, mean over
    # them) or "centre-mean" (the authors' code: the centre crop's features averaged to one vector).
    word_discriminator_regions: str = "hole-grid"


@dataclass
class LossConfig:
    rec: float = 1.0  # λ_rec, Eq. 6
    per: float = 0.5  # λ_per, Eq. 7
    tv: float = 0.1  # λ_tv, Eq. 8
    edge: float = 0.5  # λ_edge, Eq. 9
    gan: float = 0.002  # λ_G, Eq. 10
    # Text-matching loss (Section 3.1; Eq. 12 omits it): DAMSM word + sentence loss of the composite
    # against its caption, through the frozen DAMSM image encoder; 0.001 as in the authors' code.
    match: float = 0.001
    # Conditioning-augmentation KL term (StackGAN/AttnGAN use 1). In neither the paper nor the authors'
    # code, and with it the sentence branch collapsed to noise (docs/deviations.md): off; variant `kl`.
    kl: float = 0.0
    # Eq. 7's "selected VGG layers": the authors' pool1, pool2, pool3 (the paper is silent).
    perceptual_layers: list[str] = field(default_factory=lambda: ["pool1", "pool2", "pool3"])
    # Which network the perceptual loss uses: "vgg16" (ImageNet weights from the torch cache or
    # ``perceptual_weights_path``) with ``perceptual_fallback`` used, and recorded, when none load.
    perceptual_network: str = "vgg16"
    perceptual_weights_path: str | None = None
    perceptual_fallback: str = "damsm-image-encoder"
    # VGG inputs ImageNet-normalised (as VGG was trained); the authors' code feeds [-1, 1] images raw.
    perceptual_imagenet_normalize: bool = True
    # Gram-matrix style loss on the perceptual features (the authors' code: 3.0; not in the paper).
    style: float = 0.0
    # "image": Eq. 8's TV over the whole output; "authors-hole": the authors' kernel inside the hole.
    tv_form: str = "image"
    # "sobel" (the paper, Eq. 9) or "laplacian-rgb" (the authors' 8-neighbour Laplacian summed over RGB).
    edge_operator: str = "sobel"
    # "bce" (Eq. 10-11) or "relativistic-ls" (the authors' code: relativistic least squares on
    # (fake, real) / (real, fake) pairs fed to a 6-channel global D).
    gan_form: str = "bce"
    # True: the adversarial terms see the generator's output detached (the authors' code), so the
    # generator gets no adversarial gradient; False: Eq. 10 as written.
    detach_adversarial: bool = False


class _Precision:
    amp: bool

    @property
    def precision(self) -> str:
        """The precision ``amp`` selects, as runs, metrics and tables record it."""
        return "bf16" if self.amp else "fp32"


@dataclass
class TrainConfig(_Precision):
    batch_size: int = 16
    steps: int = 100_000
    lr: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999
    log_every: int = 50
    sample_every: int = 1000
    checkpoint_every: int = 1000
    # bf16 autocast for the training step's forward passes (CPU with AVX512-BF16, or CUDA).
    amp: bool = False
    # CUDA only: page-locked batches copied asynchronously, and cuDNN's autotuner (input shapes are
    # fixed per scale, so the search runs once). The CPU path ignores both.
    pin_memory: bool = True
    cudnn_benchmark: bool = True
    # CUDA only. ``deterministic``: cuDNN's deterministic kernels, no autotuner,
    # ``torch.use_deterministic_algorithms`` and cuBLAS's fixed workspace, so a rerun on the same GPU
    # and software gives the same weights (slower; the CPU path is deterministic already).
    # ``tf32``: let convolutions and matmuls run in TF32 on Ampere and newer GPUs (PyTorch's default
    # allows it for convolutions only); false is true fp32. Every run records what was in effect.
    deterministic: bool = False
    tf32: bool = True
    # "g-first": the generator step, then the discriminators' (the authors' code; the paper is silent);
    # "d-first": ours before round three.
    update_order: str = "g-first"
    # Training augmentation, the authors' transforms (the paper is silent): each image mirrored
    # left-right with probability 1/2, and turned gray with probability ``grayscale``
    # (torchvision's RandomGrayscale default, 0.1). The centre hole is symmetric, so it is unaffected.
    flip: bool = True
    grayscale: float = 0.1
    # An exponential moving average of the generator's weights (Yazici et al. 2019; StyleGAN's G_ema),
    # kept beside the raw weights: its half-life in training images (0 = none, as the paper and the
    # authors' code). ``ema_rampup``: the half-life is at most this fraction of the images seen so far,
    # so the average forgets the random initialisation early (StyleGAN2-ADA's ramp-up; 0 = none).
    ema_half_life_images: float = 0.0
    ema_rampup: float = 0.05
    # Keep a generator checkpoint every this many steps (checkpoints/generator-step<N>.pt; 0 = none):
    # what ``csfgan variance`` measures checkpoint-to-checkpoint noise and the trend with steps on.
    snapshot_every: int = 0


@dataclass
class EvalConfig(_Precision):
    batch_size: int = 64
    # bf16 autocast for the generator's forward in evaluation, figures and `csfgan inpaint` (the text
    # encoder and the metric networks stay fp32). Known pixels are composited in fp32 either way.
    amp: bool = False
    caption_seed: int = 1234
    # Which generator weights evaluation, figures and `csfgan inpaint` use: "raw" (the optimiser's, as the
    # paper and the authors' code) or "ema" (train.ema_half_life_images > 0).
    weights: str = "raw"
    # Inception weights for FID (torch-fidelity format); None = torch cache, else DAMSM features.
    inception_weights_path: str | None = None


@dataclass
class ScaleConfig:
    name: str = "paper"
    resolution: int = 256
    data: DataConfig = field(default_factory=DataConfig)
    text: TextConfig = field(default_factory=TextConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def validate(self, where: str = "scale") -> None:
        """Every value in range (``RANGES``), the fusion layers inside the encoder; else ConfigError."""
        if self.resolution < 16 or self.resolution & (self.resolution - 1):
            raise ConfigError(f"{where}: resolution must be a power of two >= 16, got {self.resolution}")
        layers = self.num_layers
        for key in ("sentence_fusion_layers", "word_fusion_layers"):
            bad = [i for i in getattr(self.model, key) if not 2 <= i <= layers]
            if bad:
                raise ConfigError(
                    f"{where}: model.{key} {bad} outside the generator's fusable layers 2..{layers} "
                    f"(layer 1 is the input conv; {layers} = log2 of resolution {self.resolution}; layer L "
                    f"works at {self.resolution}/2^(L-1) px)"
                )
        for key, value in _choices(self):
            allowed = CHOICES[key]
            if value not in allowed:
                raise ConfigError(f"{where}: {key} must be one of {', '.join(map(repr, allowed))}, got {value!r}")
        if self.data.mask not in ("center", "irregular"):
            raise ConfigError(f"{where}: data.mask must be 'center' or 'irregular', got {self.data.mask!r}")
        centre_half = self.data.mask == "center" and self.data.hole_fraction == 0.5
        if self.model.word_level_discriminator and self.model.word_discriminator_regions == "centre-mean" \
                and not centre_half:
            # It crops the fixed centre half as the authors' code does: any other hole would be judged
            # on pixels that are not the hole.
            raise ConfigError(
                f"{where}: model.word_discriminator_regions 'centre-mean' judges the fixed centre half of the "
                f"image (the authors' hole), but data.mask is {self.data.mask!r} with hole_fraction "
                f"{self.data.hole_fraction}; use 'hole-grid', or data.mask 'center' with hole_fraction 0.5"
            )
        if self.eval.weights == "ema" and not self.train.ema_half_life_images > 0:
            raise ConfigError(f"{where}: eval.weights 'ema' needs an average to evaluate: set "
                              f"train.ema_half_life_images > 0, or eval.weights 'raw'")
        for section in dataclasses.fields(self):
            value = getattr(self, section.name)
            if dataclasses.is_dataclass(value):
                check_ranges(value, section.name, where)

    @property
    def num_layers(self) -> int:
        """The generator's encoder layers, the input conv included (8 at 256 px, as the paper counts)."""
        return self.resolution.bit_length() - 1


# --------------------------------------------------------------------------------------------
# Ranges: every numeric setting, by dotted key. A value outside its range, NaN or infinite is an
# error naming the key; a numeric key not listed here must be finite and >= 0.


@dataclass(frozen=True)
class Range:
    low: float | None = None
    high: float | None = None
    low_open: bool = False  # low itself excluded
    high_open: bool = False

    def __contains__(self, value: float) -> bool:
        if not math.isfinite(value):
            return False
        if self.low is not None and (value < self.low or self.low_open and value == self.low):
            return False
        return not (self.high is not None and (value > self.high or self.high_open and value == self.high))

    def __str__(self) -> str:
        if self.high is None:
            return f"{'>' if self.low_open else '>='} {self.low:g}"
        return f"in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}{')' if self.high_open else ']'}"


# Settings that take one of a few names, by dotted key (checked with the ranges).
CHOICES: dict[str, tuple[str, ...]] = {
    "model.block_order": ("code", "prose"),
    "model.global_discriminator": ("patch", "dcgan-sn"),
    "model.word_discriminator_regions": ("hole-grid", "centre-mean"),
    "loss.tv_form": ("image", "authors-hole"),
    "loss.edge_operator": ("sobel", "laplacian-rgb"),
    "loss.gan_form": ("bce", "relativistic-ls"),
    "train.update_order": ("g-first", "d-first"),
    "eval.weights": ("raw", "ema"),
}


def _choices(cfg: ScaleConfig):
    for key in CHOICES:
        section, name = key.split(".")
        yield key, getattr(getattr(cfg, section), name)


AT_LEAST_ONE = Range(1)
NON_NEGATIVE = Range(0)
POSITIVE = Range(0, low_open=True)
UNIT_HALF_OPEN = Range(0, 1, high_open=True)  # [0, 1): Adam's betas, dropout

RANGES: dict[str, Range] = {
    "resolution": Range(16),
    "data.images_per_class_train": AT_LEAST_ONE,
    "data.images_per_class_test": AT_LEAST_ONE,
    "data.images_per_class_val": AT_LEAST_ONE,
    "data.seed": NON_NEGATIVE,  # numpy seeds are non-negative
    "data.hole_fraction": Range(0, 1, low_open=True, high_open=True),
    "text.max_words": AT_LEAST_ONE,
    "text.embedding_dim": AT_LEAST_ONE,
    "text.hidden_dim": Range(2),  # two LSTM directions of hidden_dim / 2
    "text.dropout": UNIT_HALF_OPEN,
    "text.damsm.epochs": AT_LEAST_ONE,
    "text.damsm.batch_size": Range(2),  # the matching loss contrasts a caption with the others in its batch
    "text.damsm.lr": POSITIVE,
    "text.damsm.gamma1": POSITIVE,
    "text.damsm.gamma2": POSITIVE,
    "text.damsm.gamma3": POSITIVE,
    "text.damsm.image_channels": AT_LEAST_ONE,
    "text.damsm.grad_clip": POSITIVE,
    "model.base_channels": AT_LEAST_ONE,
    "model.max_channels": AT_LEAST_ONE,
    "model.condition_dim": AT_LEAST_ONE,
    "model.noise_dim": NON_NEGATIVE,
    "model.disc_base_channels": AT_LEAST_ONE,
    "model.disc_max_channels": AT_LEAST_ONE,
    "model.dilation": AT_LEAST_ONE,
    "loss.rec": NON_NEGATIVE,
    "loss.per": NON_NEGATIVE,
    "loss.tv": NON_NEGATIVE,
    "loss.edge": NON_NEGATIVE,
    "loss.gan": NON_NEGATIVE,
    "loss.kl": NON_NEGATIVE,
    "loss.match": NON_NEGATIVE,
    "loss.style": NON_NEGATIVE,
    "train.batch_size": AT_LEAST_ONE,
    "train.grayscale": Range(0, 1),
    "train.steps": AT_LEAST_ONE,
    "train.lr": POSITIVE,
    "train.beta1": UNIT_HALF_OPEN,
    "train.beta2": UNIT_HALF_OPEN,
    "train.log_every": AT_LEAST_ONE,
    "train.sample_every": AT_LEAST_ONE,
    "train.checkpoint_every": AT_LEAST_ONE,
    "train.ema_half_life_images": NON_NEGATIVE,
    "train.ema_rampup": NON_NEGATIVE,
    "train.snapshot_every": NON_NEGATIVE,
    "eval.batch_size": AT_LEAST_ONE,
    "eval.caption_seed": NON_NEGATIVE,
}


def _numeric(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_ranges(section: Any, prefix: str, where: str) -> None:
    """Raise ConfigError naming the first numeric value of ``section`` (a config dataclass at the dotted
    ``prefix``, e.g. ``train``) that is NaN, infinite or outside its range in ``RANGES``."""
    for f in dataclasses.fields(section):
        key, value = f"{prefix}.{f.name}", getattr(section, f.name)
        if dataclasses.is_dataclass(value):
            check_ranges(value, key, where)
        elif isinstance(value, list):
            if any(_numeric(v) and not math.isfinite(v) for v in value):
                raise ConfigError(f"{where}: {key} must hold finite numbers, got {value}")
        elif _numeric(value):
            allowed = RANGES.get(key, NON_NEGATIVE)
            if value not in allowed:
                finite = " and finite" if isinstance(value, float) else ""
                raise ConfigError(f"{where}: {key} must be {allowed}{finite}, got {value}")


# --------------------------------------------------------------------------------------------
# Generic YAML -> dataclass machinery with errors that name the key.


def _type_ok(value: Any, tp: Any) -> bool:
    origin = typing.get_origin(tp)
    if tp is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(value, a) for a in typing.get_args(tp))
    if tp is type(None):
        return value is None
    if origin is list:
        (item,) = typing.get_args(tp)
        return isinstance(value, list) and all(_type_ok(v, item) for v in value)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, tp)


def from_dict(cls: type, data: dict[str, Any] | None, where: str, base: Any = None) -> Any:
    """Build dataclass ``cls`` from ``data``, starting from ``base`` (or the defaults)."""
    obj = dataclasses.replace(base) if base is not None else cls()
    if data is None:
        return obj
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for key, value in data.items():
        if key not in names:
            raise ConfigError(f"{where}: unknown key {key!r}; valid keys: {', '.join(sorted(names))}")
        tp = hints[key]
        if dataclasses.is_dataclass(tp):
            setattr(obj, key, from_dict(tp, value, f"{where}.{key}", getattr(obj, key)))
            continue
        if tp is float and isinstance(value, str):
            try:  # YAML 1.1 reads "1e-3" as a string
                value = float(value)
            except ValueError:
                pass
        if not _type_ok(value, tp):
            raise ConfigError(f"{where}.{key}: expected {tp}, got {value!r}")
        if tp is float:
            value = float(value)
        setattr(obj, key, value)
    return obj


def to_dict(obj: Any) -> dict[str, Any]:
    return dataclasses.asdict(obj)


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested config dict by dotted key (``{"train": {"lr": 1e-3}}`` -> ``{"train.lr": 1e-3}``)."""
    flat: dict[str, Any] = {}
    for key, value in d.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def one_line(exc: BaseException) -> str:
    """An exception's message on one line (YAML errors point at the text over several)."""
    return " ".join(str(exc).split())


class UniqueKeyLoader(yaml.SafeLoader):
    """A safe loader that refuses a key given twice in one mapping (PyYAML keeps the last silently)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise ConfigError(f"line {key_node.start_mark.line + 1}: key {key!r} is given twice")
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load_yaml_file(path: Path) -> Any:
    """``path`` parsed as YAML: UTF-8, no key given twice; a ConfigError names the file and the fault."""
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start}: {exc.object[exc.start:exc.start + 1]!r}); "
                          "save it as UTF-8") from None
    try:
        return yaml.load(text, Loader=UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({one_line(exc)})") from exc


def read_yaml(path: Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such config file")
    data = load_yaml_file(path)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return data


def _resolve(name_or_path: str | Path, directory: Path, kind: str) -> Path:
    """A bare name (no ``.yaml``/``.yml`` suffix, no path separator) is a name in ``directory``, even when
    the working directory holds a file or folder of that name; anything else is a path."""
    p = Path(name_or_path)
    text = str(name_or_path)
    if isinstance(name_or_path, Path) or p.suffix in (".yaml", ".yml") or "/" in text or os.sep in text:
        if not p.is_file():
            raise ConfigError(f"{p}: no such {kind} file" + (" (it is a folder)" if p.is_dir() else ""))
        return p
    candidate = directory / f"{name_or_path}.yaml"
    if not candidate.is_file():
        known = sorted(q.stem for q in directory.glob("*.yaml"))
        raise ConfigError(f"unknown {kind} {str(name_or_path)!r}; known: {', '.join(known)} (in {directory})")
    return candidate


def load_scale(name_or_path: str | Path) -> ScaleConfig:
    """Load a scale by name (``smoke``, ``default``, ``paper``) or by path to a YAML file."""
    path = _resolve(name_or_path, SCALES_DIR, "scale")
    data = read_yaml(path)
    data.setdefault("name", path.stem)
    scale = from_dict(ScaleConfig, data, str(path))
    scale.validate(str(path))
    return scale


@dataclass
class Variant:
    """An ablation variant: overrides of the scale's ``model`` and ``loss`` sections."""

    name: str
    description: str = ""
    model: dict[str, Any] = field(default_factory=dict)
    loss: dict[str, Any] = field(default_factory=dict)


def load_variant(name_or_path: str | Path) -> Variant:
    path = _resolve(name_or_path, VARIANTS_DIR, "variant")
    data = read_yaml(path)
    allowed = {"name", "description", "model", "loss"}
    unknown = set(data) - allowed
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {sorted(unknown)}; a variant may set {sorted(allowed)}")
    variant = Variant(
        name=str(data.get("name", path.stem)),
        description=str(data.get("description", "")),
        model=data.get("model") or {},
        loss=data.get("loss") or {},
    )
    # Check the overrides against the typed sections now, so a typo fails before any job runs.
    check_ranges(from_dict(ModelConfig, variant.model, f"{path}: model"), "model", str(path))
    check_ranges(from_dict(LossConfig, variant.loss, f"{path}: loss"), "loss", str(path))
    return variant


def apply_variant(scale: ScaleConfig, variant: Variant, where: str = "variant") -> ScaleConfig:
    """The scale with the variant's overrides applied (the scale itself is left unchanged)."""
    out = dataclasses.replace(scale)
    out.model = from_dict(ModelConfig, variant.model, f"{where} {variant.name}: model", scale.model)
    out.loss = from_dict(LossConfig, variant.loss, f"{where} {variant.name}: loss", scale.loss)
    out.validate(f"scale {scale.name} + variant {variant.name}")
    return out


def parse_overrides(scale: ScaleConfig, overrides: list[str], where: str = "--set") -> ScaleConfig:
    """Apply ``SECTION.KEY=VALUE`` overrides (YAML values) at any depth, e.g. ``loss.edge=0.1`` (the
    λ_edge sweep) or ``text.damsm.epochs=3``; the result is validated like a scale file."""
    out = scale
    for item in overrides:
        dotted, sep, raw = item.partition("=")
        parts = dotted.split(".")
        if not sep or len(parts) < 2 or not all(parts):
            raise ConfigError(f"{where} {item!r}: expected SECTION.KEY=VALUE, e.g. loss.edge=0.1 or "
                              f"text.damsm.epochs=3")
        if not dataclasses.is_dataclass(getattr(out, parts[0], None)):
            sections = [f.name for f in dataclasses.fields(ScaleConfig)
                        if dataclasses.is_dataclass(getattr(out, f.name))]
            raise ConfigError(f"{where} {item!r}: unknown section {parts[0]!r}; sections: {', '.join(sections)}")
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError as exc:
            raise ConfigError(f"{where} {item!r}: the value is not valid YAML ({one_line(exc)})") from exc
        nested: Any = value
        for key in reversed(parts):
            nested = {key: nested}
        out = from_dict(ScaleConfig, nested, f"{where} {item!r}: scale", out)
    out.validate(f"{where} {' '.join(overrides)}")
    return out


def resolve_config(scale: str, variant: str, overrides: list[str] | None = None) -> tuple[ScaleConfig, str]:
    """A run's config: the scale, then the variant, then the ``--set`` overrides; and the variant's name."""
    v = load_variant(variant)
    cfg = apply_variant(load_scale(scale), v)
    return parse_overrides(cfg, overrides or []), v.name

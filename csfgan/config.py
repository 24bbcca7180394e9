"""Typed configuration: scales (experiments/scales/*.yaml) and variants (experiments/variants/*.yaml).

A scale says how big everything is (resolution, dataset size, widths, steps); a variant says which
parts of CSF-GAN are switched on and with which loss weights. A run's resolved config is
``RunConfig(scale, variant)``; both come from small YAML files that only state what differs from the
defaults below, which are the paper's values.

Unknown keys, wrong types and out-of-range values raise ``ConfigError`` naming the file and key.
"""

from __future__ import annotations

import dataclasses
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
    # 1-based encoder layers that receive sentence-level (Eq. 1-2) and word-level (Eq. 3) fusion.
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


@dataclass
class LossConfig:
    rec: float = 1.0  # λ_rec, Eq. 6
    per: float = 0.5  # λ_per, Eq. 7
    tv: float = 0.1  # λ_tv, Eq. 8
    edge: float = 0.5  # λ_edge, Eq. 9
    gan: float = 0.002  # λ_G, Eq. 10
    kl: float = 1.0  # conditioning-augmentation KL term (StackGAN/AttnGAN weight)
    perceptual_layers: list[str] = field(default_factory=lambda: ["relu1_2", "relu2_2", "relu3_3"])
    # Which network the perceptual loss uses: "vgg16" (ImageNet weights from the torch cache or
    # ``perceptual_weights_path``) with ``perceptual_fallback`` used, and recorded, when none load.
    perceptual_network: str = "vgg16"
    perceptual_weights_path: str | None = None
    perceptual_fallback: str = "damsm-image-encoder"


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


@dataclass
class EvalConfig(_Precision):
    batch_size: int = 64
    # bf16 autocast for the generator's forward in evaluation, figures and `csfgan inpaint` (the text
    # encoder and the metric networks stay fp32). Known pixels are composited in fp32 either way.
    amp: bool = False
    caption_seed: int = 1234
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
        if self.resolution < 16 or self.resolution & (self.resolution - 1):
            raise ConfigError(f"{where}: resolution must be a power of two >= 16, got {self.resolution}")
        layers = self.num_layers
        for key in ("sentence_fusion_layers", "word_fusion_layers"):
            bad = [i for i in getattr(self.model, key) if not 1 <= i <= layers]
            if bad:
                raise ConfigError(
                    f"{where}: model.{key} {bad} outside the generator's encoder layers 1..{layers} "
                    f"(log2 of resolution {self.resolution})"
                )
        if not 0 < self.data.hole_fraction < 1:
            raise ConfigError(f"{where}: data.hole_fraction must be in (0, 1), got {self.data.hole_fraction}")
        if self.data.mask not in ("center", "irregular"):
            raise ConfigError(f"{where}: data.mask must be 'center' or 'irregular', got {self.data.mask!r}")
        for name in ("rec", "per", "tv", "edge", "gan", "kl"):
            if getattr(self.loss, name) < 0:
                raise ConfigError(f"{where}: loss.{name} must be >= 0, got {getattr(self.loss, name)}")

    @property
    def num_layers(self) -> int:
        return self.resolution.bit_length() - 1


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


def read_yaml(path: Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such config file")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return data


def _resolve(name_or_path: str | Path, directory: Path, kind: str) -> Path:
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") or p.exists():
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
    from_dict(ModelConfig, variant.model, f"{path}: model")
    from_dict(LossConfig, variant.loss, f"{path}: loss")
    return variant


def apply_variant(scale: ScaleConfig, variant: Variant, where: str = "variant") -> ScaleConfig:
    """The scale with the variant's overrides applied (the scale itself is left unchanged)."""
    out = dataclasses.replace(scale)
    out.model = from_dict(ModelConfig, variant.model, f"{where} {variant.name}: model", scale.model)
    out.loss = from_dict(LossConfig, variant.loss, f"{where} {variant.name}: loss", scale.loss)
    out.validate(f"scale {scale.name} + variant {variant.name}")
    return out

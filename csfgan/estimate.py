"""``csfgan estimate``: what a workflow config costs before it is launched.

For every rule of the DAG that runs a network: its jobs, FLOPs per job and in total, device-hours at
``--device-tflops`` x ``--mfu``, each job's wall time at that rate, the rule's runtime limit as
Snakemake gives it, and the submissions a job then needs. Pretraining, training and evaluation
resume from their saved state, so a job longer than its limit is submitted again:
ceil(wall time / limit) times.

Where the numbers come from (nothing is copied from elsewhere):

* the runs: :func:`csfgan.plan.plan`, as the Snakefile calls it, so an edited tables.yaml changes them;
* FLOPs: counted by ``torch.utils.flop_counter`` (``csfgan.bench``) over one real step of each network
  at the config's scale, on the CPU. The meta device cannot run a step (the losses and discriminators
  branch on tensor values, e.g. the finiteness check before an update), and batch 1 alone is not
  exact: the DAMSM matching losses score every caption against every image of the batch, so a
  step's FLOPs are a + b·B + c·B². Counted at B = 1, 2 and 3, the quadratic gives the step at the
  config's batch exactly (tests/test_estimate.py compares it with a step counted at that batch);
* dataset sizes: a prepared manifest (``data/prepared/<dataset>/manifest.json``) made at this scale,
  else what the scale asks the synthetic renderer for, else the real sets' official split sizes;
* runtime limits: two ``snakemake --dry-run`` listings of every job's resources (rule values with the
  workflow profile's ``set-resources`` / ``default-resources`` applied), at attempt 1 and attempt 2,
  so a limit that grows with the attempt is reported at its first value and marked.
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
import tempfile
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from csfgan.config import REPO_ROOT, ConfigError, ScaleConfig, read_yaml
from csfgan.errors import UserError
from csfgan.plan import Plan, plan

SNAKEFILE = REPO_ROOT / "Snakefile"
# Rules whose jobs run a network, in DAG order. The others (download, prepare, preview, tables,
# claims, curves) run none: they are listed with their jobs and limits, without FLOPs.
COMPUTE_RULES = ("pretrain_text", "pretrain_text_eval", "train_features", "train", "evaluate", "figures",
                 "predict_run", "score")
PER_RUN_RULES = ("train", "evaluate")
# Jobs the plan does not enumerate (the protocol's: per mask, peer and external method): taken from the DAG.
DAG_LISTED_RULES = ("predict_run", "score")
FIT_BATCHES = (1, 2, 3)
# Reed et al. (2016) class splits (trainvalclasses.txt / testclasses.txt of cvpr2016_cub.tar.gz and
# cvpr2016_flowers.tar.gz), which csfgan/data/reed_captions.py reads; image counts: PAPER_COUNTS.
REAL_CLASSES = {"cub": (150, 50), "oxford102": (82, 20)}


# What the perceptual loss is counted on: the network this machine would pick (VGG16 where its weights
# are here, else loss.perceptual_fallback), or VGG16 as a node with its ImageNet weights runs it.
PERCEPTUAL_CHOICES = ("here", "vgg16")


class EstimateError(UserError):
    """An argument of ``csfgan estimate`` is invalid, or Snakemake could not list the DAG."""


# ------------------------------------------------------------------------------------------ arguments


def _number(text: str, option: str, low: float, high: float | None = None) -> float:
    """``text`` as a finite number in (low, high]; an EstimateError naming ``option`` otherwise."""
    span = f"> {low:g}" if high is None else f"in ({low:g}, {high:g}]"
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise EstimateError(f"{option} {text!r}: expected a number {span}") from None
    if not math.isfinite(value) or value <= low or (high is not None and value > high):
        raise EstimateError(f"{option} {text}: must be a finite number {span}")
    return value


@dataclass
class Request:
    configfile: Path
    config: dict[str, Any]
    rate: float  # FLOP/s one job reaches: device peak x MFU
    device_tflops: float
    mfu: float
    profile: Path | None
    vgg16: bool = False  # count VGG16 for the perceptual loss even where this machine has no weights for it


def check_request(configfile: str, device_tflops: str, mfu: str, workflow_profile: str | None,
                  perceptual: str = "here") -> Request:
    """Every argument checked, without torch: a bad one fails at once with one line."""
    tflops = _number(device_tflops, "--device-tflops", 0.0)
    fraction = _number(mfu, "--mfu", 0.0, 1.0)
    path = Path(configfile)
    config = read_yaml(path)  # names the file when it is missing or not YAML
    for key in ("scale", "datasets"):
        if key not in config:
            raise ConfigError(f"{path}: no `{key}`; a workflow config names its scale and datasets "
                              f"(see experiments/config.yaml)")
    profile = None
    if workflow_profile is not None:
        profile = Path(workflow_profile)
        if not (profile / "config.yaml").is_file():
            raise EstimateError(f"--workflow-profile {workflow_profile}: no config.yaml there; give the profile "
                                f"folder snakemake will run with, e.g. workflow/profiles/slurm")
    if perceptual not in PERCEPTUAL_CHOICES:
        raise EstimateError(f"--perceptual {perceptual!r}: use one of {', '.join(PERCEPTUAL_CHOICES)}")
    return Request(path, config, tflops * 1e12 * fraction, tflops, fraction, profile, perceptual == "vgg16")


# ------------------------------------------------------------------------------ the DAG, from Snakemake


@dataclass(frozen=True)
class Limit:
    """A job's ``runtime`` resource in minutes at attempt 1 and 2 (None: it has none), and the devices
    it runs on (its ``gpu`` resource; a CPU job is one device)."""

    minutes: int | None
    retry_minutes: int | None
    devices: int = 1

    @property
    def grows(self) -> bool:
        return self.minutes != self.retry_minutes


def _key(rule: str, wildcards: dict[str, str]) -> tuple:
    return rule, tuple(sorted(wildcards.items()))


def parse_dry_run(text: str) -> dict[tuple, dict[str, str]]:
    """Every job a ``snakemake --dry-run`` lists, by (rule, wildcards): its resources."""
    jobs: dict[tuple, dict[str, str]] = {}
    rule = None
    wildcards: dict[str, str] = {}
    for line in text.splitlines():
        head = re.match(r"(?:local)?rule (\S+):$", line.rstrip())
        if head:
            rule, wildcards = head.group(1), {}
            continue
        if rule is None or not line.startswith("    "):
            rule = None
            continue
        key, _, value = line.strip().partition(": ")
        items = dict(item.split("=", 1) for item in value.split(", ") if "=" in item)
        if key == "wildcards":
            wildcards = items
        elif key == "resources":  # the block's last line
            jobs[_key(rule, wildcards)] = items
    return jobs


def _minutes(value: str | None, rule: str) -> int | None:
    if value is None:
        return None
    try:
        return int(float(value))
    except ValueError:
        raise EstimateError(f"rule {rule}: Snakemake gives runtime={value!r}, not minutes; a runtime that "
                            f"depends on its inputs is only known once they exist") from None


def _snakemake_error(output: str) -> str:
    """The line of a failed dry run that says what is wrong."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    for i, line in enumerate(lines):
        if re.match(r"\w*(Error|Exception)\b.*:$", line) and i + 1 < len(lines):
            return lines[i + 1]
    return lines[-1] if lines else "no output"


def _scratch_config(request: Request, root: Path, scratch: Path) -> Path:
    """Overrides for a dry run in ``scratch``: the config's relative paths made absolute, and the manual
    caption downloads stood in for by empty files (a dry run checks only that they exist)."""
    config = request.config
    over: dict[str, Any] = {}
    for key, default in (("tables", "experiments/tables.yaml"), ("claims", "experiments/claims.yaml"),
                         ("variants_dir", "experiments/variants")):
        over[key] = str((root / config.get(key, default)).resolve())
    scale = str(config["scale"])
    if "/" in scale or scale.endswith((".yaml", ".yml")):
        over["scale"] = str((root / scale).resolve())
    real = [d for d in config["datasets"] if d in REAL_CLASSES]
    if real:
        archives = {}
        for dataset in real:
            archives[dataset] = str(scratch / f"captions-{dataset}.tar.gz")
            Path(archives[dataset]).write_bytes(b"")
        over["real_data"] = {"captions_archive": archives}
    path = scratch / "estimate-overrides.yaml"
    path.write_text(json.dumps(over))  # JSON is YAML
    return path


def _dry_run(request: Request, root: Path, attempt: int) -> dict[tuple, dict[str, str]]:
    # A scratch working directory: a dry run writes the resolved configs under results/config/, and
    # in the real one that would mark the workflow's runs as changed.
    with tempfile.TemporaryDirectory(prefix="csfgan-estimate-") as tmp:
        scratch = Path(tmp)
        overrides = _scratch_config(request, root, scratch)
        cmd = [sys.executable, "-m", "snakemake", "-s", str(SNAKEFILE), "--directory", str(scratch), "--dry-run",
               "--nolock", "--attempt", str(attempt),
               "--configfile", str(request.configfile.resolve()), str(overrides)]
        if request.profile is not None:
            cmd += ["--workflow-profile", str(request.profile.resolve())]
        done = subprocess.run(cmd, capture_output=True, text=True, cwd=scratch, timeout=600)
    if done.returncode != 0:
        raise EstimateError(f"snakemake --dry-run --configfile {request.configfile} failed: "
                            f"{_snakemake_error(done.stdout + done.stderr)}")
    return parse_dry_run(done.stdout)


def dag_limits(request: Request, root: Path) -> dict[tuple, Limit]:
    """Every DAG job's runtime limit, by (rule, wildcards), from Snakemake at attempts 1 and 2."""
    with ThreadPoolExecutor(2) as pool:
        first, second = pool.map(lambda attempt: _dry_run(request, root, attempt), (1, 2))
    return {key: Limit(_minutes(res.get("runtime"), key[0]), _minutes(second.get(key, {}).get("runtime"), key[0]),
                       max(1, int(res.get("gpu", "0")) if res.get("gpu", "0").isdigit() else 1))
            for key, res in first.items()}


def planned_jobs(p: Plan, limits: dict[tuple, Limit]) -> dict[str, list[dict[str, str]]]:
    """The wildcards of every job of each compute rule: from ``p`` where the plan makes them, else from
    the DAG's listing."""
    runs = [{"dataset": r.dataset, "run": r.name, "seed": str(r.seed)} for r in p.runs()]
    per_dataset = [{"dataset": d} for d in p.datasets]
    jobs = {rule: runs if rule in PER_RUN_RULES else per_dataset for rule in COMPUTE_RULES}
    for rule in DAG_LISTED_RULES:
        jobs[rule] = [dict(wildcards) for r, wildcards in sorted(limits) if r == rule]
    return jobs


# ----------------------------------------------------------------------------------------- datasets


@dataclass(frozen=True)
class Split:
    """Image counts of one prepared dataset and where they come from."""

    train: int
    val: int
    test: int
    per_class_train: tuple[int, ...]  # the feature network holds out a share of each class
    heads: dict[str, int]  # the feature network's heads: species, and colour attributes on synthetic sets
    synthetic: bool
    source: str


def _spread(total: int, classes: int) -> tuple[int, ...]:
    base, extra = divmod(total, classes)
    return tuple(base + (i < extra) for i in range(classes))


def _from_manifest(dataset: str, scale: ScaleConfig, root: Path) -> tuple[Split | None, str]:
    path = root / "data" / "prepared" / dataset / "manifest.json"
    if not path.is_file():
        return None, ""
    try:
        manifest = json.loads(path.read_text())
        made = manifest.get("config", {})
        splits = {s: manifest["splits"][s]["count"] for s in ("train", "val", "test")}
        classes = manifest["splits"]["train"]["classes"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return None, f"{path} unreadable ({type(exc).__name__}), not used"
    d = scale.data
    wanted = {"resolution": scale.resolution, "images_per_class_val": d.images_per_class_val}
    if dataset.startswith("synth-"):
        wanted |= {"images_per_class_train": d.images_per_class_train, "images_per_class_test": d.images_per_class_test}
    if any(made.get(k, manifest.get(k)) != v for k, v in wanted.items()):
        return None, f"{path} was prepared with other settings than scale {scale.name} (the DAG prepares again)"
    ids_path = path.parent / "train" / "class_ids.npy"
    if ids_path.is_file():
        import numpy as np

        per_class = tuple(int(n) for n in np.unique(np.load(ids_path), return_counts=True)[1])
    else:
        per_class = _spread(splits["train"], len(classes))
    heads = {"species": len(classes)}
    heads |= {a: len(manifest["attribute_values"][a]) for a in sorted(manifest.get("colour_attributes", {}))}
    return Split(splits["train"], splits["val"], splits["test"], per_class, heads, "colour_attributes" in manifest,
                 f"{path}"), ""


def dataset_split(dataset: str, scale: ScaleConfig, root: Path) -> Split:
    """The images the DAG will train and evaluate on; ``source`` says where the counts come from."""
    split, note = _from_manifest(dataset, scale, root)
    if split is not None:
        return split
    note = f"; {note}" if note else ""
    d = scale.data
    if dataset.startswith("synth-"):
        from csfgan.data.synthetic.datasets import _spec, attribute_values, colour_attributes

        spec = _spec(dataset)
        values = attribute_values(dataset)
        heads = {"species": spec.train_species} | {a: len(values[a]) for a in sorted(colour_attributes(dataset))}
        return Split(spec.train_species * d.images_per_class_train, spec.train_species * d.images_per_class_val,
                     spec.test_species * d.images_per_class_test, (d.images_per_class_train,) * spec.train_species,
                     heads, True,
                     f"scale {scale.name}: {spec.train_species} / {spec.test_species} species x data.images_per_class_"
                     f"train {d.images_per_class_train}, _val {d.images_per_class_val}, _test "
                     f"{d.images_per_class_test}{note}")
    if dataset == "cub":
        from csfgan.data.cub import PAPER_COUNTS
    else:
        from csfgan.data.oxford102 import PAPER_COUNTS
    train_classes, test_classes = REAL_CLASSES[dataset]
    # Val is a hold-out of the train split, d.images_per_class_val per class (csfgan.data.reed_captions
    # hold_out_val); every class of both sets has more images than that.
    val = train_classes * d.images_per_class_val
    train = PAPER_COUNTS["train"] - val
    return Split(train, val, PAPER_COUNTS["test"], _spread(train, train_classes), {"species": train_classes}, False,
                 f"official split {PAPER_COUNTS['train']:,} / {PAPER_COUNTS['test']:,} images of {train_classes} / "
                 f"{test_classes} classes (Reed et al. 2016; csfgan/data/{dataset}.py), less {val:,} val images "
                 f"held out of train{note}")


# --------------------------------------------------------------------------------------------- FLOPs


def at_batch(count: Callable[[int], int], batch: int) -> float:
    """FLOPs of a step at ``batch`` from counts at FIT_BATCHES: the quadratic through them (exact for
    a + b·B + c·B², which the DAMSM matching losses' every-caption-against-every-image terms make)."""
    if batch in FIT_BATCHES:
        return float(count(batch))
    points = {b: count(b) for b in FIT_BATCHES}
    total = 0.0
    for b, value in points.items():
        weight = 1.0
        for other in points:
            if other != b:
                weight *= (batch - other) / (b - other)
        total += weight * value
    return total


_CACHE: dict[str, Any] = {}


def _cached(key: Any, compute: Callable[[], Any]) -> Any:
    # A network is counted once per process however many runs or datasets share it.
    key = json.dumps(key, sort_keys=True, default=str)
    if key not in _CACHE:
        with warnings.catch_warnings():
            # At batch 1 the losses' batch statistics (a variance over one sample) warn; the count is unaffected.
            warnings.simplefilter("ignore", UserWarning)
            _CACHE[key] = compute()
    return _CACHE[key]


def _signature(cfg: ScaleConfig) -> dict[str, Any]:
    """What decides a run's networks and losses: the config with every loss weight read as built or not
    (GeneratorLoss builds the terms whose weight is > 0; the value scales a term, not its work)."""
    from csfgan.config import to_dict

    out = to_dict(cfg)
    out["loss"] = {k: (v > 0 if isinstance(v, float) else v) for k, v in out["loss"].items()}
    return out


def _vgg16_counting_weights(cfg: ScaleConfig, scratch: Path) -> ScaleConfig:
    """``cfg`` with its VGG16 perceptual loss given random weights of VGG16's shapes when this machine
    has none (``--perceptual vgg16``): FLOPs do not depend on the values, and without them the count
    would be the fallback's, another network."""
    import torch
    import torchvision

    from csfgan.config import parse_overrides
    from csfgan.losses import imagenet_vgg16_cache_path

    loss = cfg.loss
    if loss.per <= 0 or loss.perceptual_network != "vgg16" or loss.perceptual_weights_path \
            or imagenet_vgg16_cache_path().is_file():
        return cfg
    path = scratch / "vgg16-shapes.pt"
    if not path.is_file():
        features = torchvision.models.vgg.make_layers(torchvision.models.vgg.cfgs["D"])
        torch.save({f"features.{k}": v for k, v in features.state_dict().items()}, path)
    return parse_overrides(cfg, [f"loss.perceptual_weights_path={path}"], where="csfgan estimate")


_SCRATCH = tempfile.TemporaryDirectory(prefix="csfgan-estimate-weights-")


def generator_flops(cfg: ScaleConfig, name: str = "", vgg16: bool = False) -> dict[str, float]:
    """``step``: one training step at the run's batch (D and G steps, every loss, forward and backward);
    ``forward``: evaluation's generator forward per image; ``perceptual``: the perceptual network counted."""

    def compute() -> dict[str, float]:
        import torch

        from csfgan.bench import TrainingStep, _flops, _Inputs
        from csfgan.evaluate import inference_forward

        print(f"csfgan estimate: counting a training step of {name or cfg.name} ({cfg.resolution} px)",
              file=sys.stderr)
        torch.manual_seed(0)
        ts = TrainingStep(_vgg16_counting_weights(cfg, Path(_SCRATCH.name)) if vgg16 else cfg)

        def train(b: int) -> int:
            x = _Inputs(cfg, b)
            words, sent, word_mask = ts.text_features(x)
            return _flops(lambda: ts.step(x, words, sent, word_mask))

        step = at_batch(train, cfg.train.batch_size)
        ts.models.eval()

        def infer(b: int) -> int:
            x = _Inputs(cfg, b)
            words, sent, word_mask = ts.text_features(x)
            return _flops(lambda: inference_forward(ts.models.generator, x.image, x.mask, sent, words, word_mask,
                                                    amp=cfg.eval.amp))

        perceptual = ts.loss_fn.perceptual
        source = None if perceptual is None else "vgg16" if perceptual.vgg is not None else perceptual.source
        return {"step": step, "forward": at_batch(infer, cfg.eval.batch_size) / cfg.eval.batch_size,
                "perceptual": source}

    return _cached(("generator", _signature(cfg), vgg16), compute)


def damsm_flops(cfg: ScaleConfig, batch: int) -> dict[str, float]:
    """``step``: one DAMSM pretraining step at ``batch`` (csfgan.damsm's loop: both encoders, the word
    and sentence losses, backward); ``global``: the image encoder's global feature of one image."""

    def compute() -> dict[str, float]:
        import torch

        from csfgan.bench import VOCAB_SIZE, _flops, _Inputs
        from csfgan.models.damsm import DamsmImageEncoder, sent_loss, words_loss
        from csfgan.models.text import TextEncoder, padding_mask

        torch.manual_seed(0)
        damsm = cfg.text.damsm
        text, image = TextEncoder(VOCAB_SIZE, cfg.text), DamsmImageEncoder(cfg.resolution, cfg.text.hidden_dim,
                                                                           damsm.image_channels)
        optimizer = torch.optim.Adam(list(text.parameters()) + list(image.parameters()), lr=damsm.lr)

        def step(b: int) -> int:
            x = _Inputs(cfg, b)

            def run() -> None:  # the body of csfgan.damsm._train's loop
                regions, code = image(x.image)
                words, sent = text(x.tokens, x.lengths)
                classes = torch.arange(b)
                w0, w1 = words_loss(regions, words, padding_mask(x.tokens), classes, damsm.gamma1, damsm.gamma2,
                                    damsm.gamma3)
                s0, s1 = sent_loss(code, sent, classes, damsm.gamma3)
                optimizer.zero_grad(set_to_none=True)
                (w0 + w1 + s0 + s1).backward()
                optimizer.step()

            return _flops(run)

        with torch.no_grad():
            one = _Inputs(cfg, 1)
            global_one = _flops(lambda: image.global_features(one.image))
        return {"step": at_batch(step, batch), "global": float(global_one)}

    return _cached(("damsm", cfg.resolution, cfg.text, batch), compute)


def feature_net_flops(resolution: int, heads: dict[str, int], batch: int) -> dict[str, float]:
    """``step``: one step of ``train_feature_net`` at ``batch``; ``forward``: the classifier on one image
    (its held-out and colour accuracies); ``features``: the FID/KID feature of one image."""

    def compute() -> dict[str, float]:
        import torch
        import torch.nn.functional as F

        from csfgan.bench import _flops
        from csfgan.metrics.feature_net import LR, SpeciesClassifier

        torch.manual_seed(0)
        net = SpeciesClassifier(resolution, heads)
        optimizer = torch.optim.Adam(net.parameters(), lr=LR)

        def step(b: int) -> int:
            images = torch.rand(b, 3, resolution, resolution) * 2 - 1
            labels = {name: torch.randint(n, (b,)) for name, n in heads.items()}

            def run() -> None:  # the body of train_feature_net's loop
                logits = net(images)
                loss = sum(F.cross_entropy(logits[name], labels[name]) for name in heads)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()

            return _flops(run)

        stepped = at_batch(step, batch)
        net.eval()
        one = torch.rand(1, 3, resolution, resolution) * 2 - 1
        with torch.no_grad():
            return {"step": stepped, "forward": float(_flops(lambda: net(one))),
                    "features": float(_flops(lambda: net.global_features(one)))}

    return _cached(("feature_net", resolution, heads, batch), compute)


def inception_flops(resolution: int, weights: str) -> float:
    """TF-Inception's FID feature of one image (evaluation uses it when its weights are on this machine)."""

    def compute() -> float:
        import torch
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
        from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY

        from csfgan.bench import _flops
        from csfgan.metrics.fid import INCEPTION

        layer = FEATURE_EXTRACTORS_REGISTRY[INCEPTION].get_default_feature_layer_for_metric("fid")
        net = FeatureExtractorInceptionV3(INCEPTION, [layer], feature_extractor_weights_path=weights).eval()
        with torch.no_grad():
            return float(_flops(lambda: net(torch.zeros(1, 3, resolution, resolution, dtype=torch.uint8))))

    return _cached(("inception", resolution, weights), compute)


# ------------------------------------------------------------------------------------ per-job FLOPs


@dataclass
class Costs:
    """FLOPs of every compute job of a plan, and what was counted."""

    plan: Plan
    splits: dict[str, Split]
    vgg16: bool = False  # the perceptual loss counted on VGG16 whatever this machine has
    notes: list[str] = field(default_factory=list)

    def __post_init__(self):
        from csfgan.bench import lstm_flops
        from csfgan.metrics.fid import inception_weights_available

        scale = self.plan.scale
        # The LSTM's fused kernel is not counted by the flop counter: counted from its shapes, over
        # captions of max_words tokens (an upper bound; most are shorter), backward as twice forward.
        self.lstm = lstm_flops(scale, scale.text.max_words)
        self.configs = self.plan.run_configs()
        self.inception = inception_weights_available(scale.eval.inception_weights_path)

    def damsm(self, dataset: str) -> float:
        """pretrain_text / pretrain_text_eval: DAMSM epochs, then R-precision on the test split."""
        from csfgan.damsm import R_PRECISION_REPETITIONS

        s, damsm = self.splits[dataset], self.plan.scale.text.damsm
        batch = min(damsm.batch_size, s.train)
        f = damsm_flops(self.plan.scale, batch)
        steps = damsm.epochs * (s.train // batch)
        return (steps * (f["step"] + 3 * batch * self.lstm)
                + s.test * (f["global"] + R_PRECISION_REPETITIONS * self.lstm))

    def _feature_net(self, dataset: str) -> dict[str, float]:
        s = self.splits[dataset]
        from csfgan.metrics.feature_net import BATCH_SIZE

        return feature_net_flops(self.plan.scale.resolution, s.heads, min(BATCH_SIZE, self._fit(dataset)[0]))

    def _fit(self, dataset: str) -> tuple[int, int]:
        import numpy as np

        from csfgan.metrics.feature_net import held_out_split

        per_class = self.splits[dataset].per_class_train
        fit, held = held_out_split(np.repeat(np.arange(len(per_class)), per_class), seed=0)  # the rule's --seed 0
        return len(fit), len(held)

    def train_features(self, dataset: str) -> float:
        """train_features: the classifier's steps, its held-out accuracy and, on synthetic sets, the
        test split's colour accuracy."""
        from csfgan.metrics.feature_net import BATCH_SIZE, EPOCHS, MIN_STEPS

        s = self.splits[dataset]
        fit, held = self._fit(dataset)
        batch = min(BATCH_SIZE, fit)
        f = self._feature_net(dataset)
        return max(MIN_STEPS, EPOCHS * (fit // batch)) * f["step"] + (held + s.test * s.synthetic) * f["forward"]

    def generator(self, run: str) -> dict[str, float]:
        return generator_flops(self.configs[run], run, self.vgg16)

    def train(self, run: str) -> float:
        t = self.configs[run].train
        return t.steps * (self.generator(run)["step"] + t.batch_size * self.lstm)

    def _fid_features(self, dataset: str) -> float:
        if self.inception:
            return inception_flops(self.plan.scale.resolution, self.inception)
        return self._feature_net(dataset)["features"]

    def _measure(self, dataset: str) -> float:
        """Measuring one output (csfgan.measure, shared by evaluate and score): the R-precision pair (its
        image encoder and the caption's LSTM), the FID feature and, on synthetic sets, the attribute
        classifier. The real images' FID features are cached after a dataset's first use: not counted."""
        s = self.splits[dataset]
        r_precision = damsm_flops(self.plan.scale, min(self.plan.scale.text.damsm.batch_size, s.train))["global"]
        attributes = self._feature_net(dataset)["forward"] if s.synthetic else 0.0
        return r_precision + self.lstm + self._fid_features(dataset) + attributes

    def _fills(self, dataset: str, run: str) -> float:
        """The run's generator over the test split (and the text encoder), with at most one
        counterfactual fill per image more on synthetic sets."""
        s = self.splits[dataset]
        fill = self.generator(run)["forward"] + self.lstm
        return s.test * fill * (1 + s.synthetic)

    def evaluate(self, dataset: str, run: str) -> float:
        """evaluate: the run's fills of the test split, each measured."""
        s = self.splits[dataset]
        return self._fills(dataset, run) + s.test * (1 + s.synthetic) * self._measure(dataset)

    def predict_run(self, wildcards: dict[str, str]) -> float:
        """predict_run: the run's fills of an exported protocol (the test split)."""
        return self._fills(wildcards["dataset"], wildcards["run"])

    def score(self, wildcards: dict[str, str]) -> float:
        """score: a predictions folder measured as evaluate measures (no generator)."""
        s = self.splits[wildcards["dataset"]]
        return s.test * (1 + s.synthetic) * self._measure(wildcards["dataset"])

    def figures(self, dataset: str) -> float:
        """figures: the fills `csfgan figures` makes (csfgan/report/figures.py's defaults)."""
        return sum(n * (self.generator(run)["forward"] + self.lstm)
                   for run, n in figure_fills(self.plan, dataset).items())

    def job(self, rule: str, wildcards: dict[str, str]) -> float:
        if rule in ("pretrain_text", "pretrain_text_eval"):
            return self.damsm(wildcards["dataset"])
        if rule in PER_RUN_RULES:
            return self.train(wildcards["run"]) if rule == "train" else self.evaluate(wildcards["dataset"],
                                                                                       wildcards["run"])
        if rule in DAG_LISTED_RULES:
            return getattr(self, rule)(wildcards)
        return getattr(self, rule)(wildcards["dataset"])


def _default(function, name: str) -> int:
    import inspect

    return inspect.signature(function).parameters[name].default


def figure_fills(p: Plan, dataset: str) -> dict[str, int]:
    """Generator fills per run name that ``csfgan figures`` makes for ``dataset``: Figure 1's captions,
    8's attention and 9's irregular masks with the full model, 5 and 7 with each row of Tables 1 and 3."""
    from csfgan.report.figures import Figures, full_run

    count = _default(Figures.__init__, "count")
    fills = {full_run(p, dataset): _default(Figures.captions_figure, "n_captions")
             + _default(Figures.attention_figure, "count") + count}
    for table in ("table1", "table3"):
        for run in p.rows[table].get(dataset, {}).values():
            fills[run] = fills.get(run, 0) + count
    return fills


# ---------------------------------------------------------------------------------------- the report


def submissions(seconds: float, limit: Limit | None, cap: int) -> int:
    """Submissions of a job that resumes from its saved state: attempts until their limits add up to its
    wall time. A limit that grows between attempts 1 and 2 is taken to grow by as much each attempt, up
    to ``cap`` (the config's max_runtime_minutes), as workflow/rules/common.smk's job_minutes does."""
    if limit is None or not limit.minutes:
        return 1
    step = max(0, (limit.retry_minutes or limit.minutes) - limit.minutes)
    need, covered, attempt = seconds / 60, 0.0, 0
    while covered < need or attempt == 0:
        attempt += 1
        covered += min(limit.minutes + (attempt - 1) * step, max(cap, limit.minutes))
    return attempt


def profile_retries(profile: Path | None) -> int | None:
    """The profile's ``retries`` (None: no profile, or it sets none; Snakemake then makes one attempt)."""
    if profile is None:
        return None
    value = read_yaml(profile / "config.yaml").get("retries")
    return int(value) if value is not None else 0


def _schema_default(key: str) -> Any:
    schema = read_yaml(REPO_ROOT / "workflow" / "schemas" / "config.schema.yaml")
    return schema["properties"][key]["default"]


def estimate(configfile: str, *, device_tflops: str, mfu: str = "0.4", workflow_profile: str | None = None,
             perceptual: str = "here", root: Path | str = ".") -> dict[str, Any]:
    """The cost of ``configfile``'s DAG as a dict (what ``--json`` prints): per compute rule and in total."""
    request = check_request(configfile, device_tflops, mfu, workflow_profile, perceptual)
    root = Path(root)
    p = plan(request.config, root)
    limits = dag_limits(request, root)
    from csfgan.runtime import configure_cpu

    configure_cpu(None)
    splits = {d: dataset_split(d, p.scale, root) for d in p.datasets}
    costs = Costs(p, splits, request.vgg16)
    cap = int(request.config.get("max_runtime_minutes", _schema_default("max_runtime_minutes")))
    retries = profile_retries(request.profile)
    rules = []
    jobs_by_rule = planned_jobs(p, limits)
    for rule, jobs in jobs_by_rule.items():
        rows = []
        for wildcards in jobs:
            flops = costs.job(rule, wildcards)
            limit = limits.get(_key(rule, wildcards))
            devices = limit.devices if limit else 1
            if rule == "train":
                # torchrun: one process per GPU, each stepping on train.batch_size images (the global batch
                # is devices x batch), so the job does devices x the FLOPs in one GPU's wall time.
                flops *= devices
            seconds = flops / request.rate / devices
            rows.append({"wildcards": wildcards, "flops": flops, "devices": devices,
                         "wall_seconds": seconds,
                         "runtime_minutes": limit.minutes if limit else None,
                         "runtime_minutes_attempt2": limit.retry_minutes if limit else None,
                         "submissions": submissions(seconds, limit, cap),
                         "in_dag": limit is not None})
        rules.append(_rule_summary(rule, rows, request.rate))
    listed = {k for k in limits if k[0] in COMPUTE_RULES}
    planned = {_key(r, w) for r, jobs in jobs_by_rule.items() for w in jobs}
    notes = _notes(p, costs, request)
    most = max((row["submissions"] for r in rules for row in r["job_list"]), default=1)
    if retries is not None and most > retries + 1:
        notes.insert(0, f"a job needs {most} submissions and the profile allows {retries + 1} (retries: {retries}): "
                        f"raise `retries` in {request.profile}/config.yaml, or runtime_minutes / "
                        f"max_runtime_minutes in the config")
    if listed != planned:
        notes.append(f"the DAG lists {len(listed)} compute jobs and the plan {len(planned)}: "
                     f"{len(listed - planned)} not counted, {len(planned - listed)} not in the DAG")
    other = {}
    for (rule, _), limit in limits.items():
        if rule not in COMPUTE_RULES and rule != "all":
            entry = other.setdefault(rule, {"jobs": 0, "runtime_minutes": limit.minutes})
            entry["jobs"] += 1
    total = sum(r["total_flops"] for r in rules)
    return {
        "configfile": str(request.configfile), "scale": p.scale.name, "datasets": p.datasets, "seeds": p.seeds,
        "device_tflops": request.device_tflops, "mfu": request.mfu, "flops_per_second": request.rate,
        "workflow_profile": str(request.profile) if request.profile else None, "retries": retries,
        "max_runtime_minutes": cap,
        "rules": rules,
        "total": {"jobs": sum(r["jobs"] for r in rules), "flops": total, "device_hours": total / request.rate / 3600,
                  "submissions": sum(r["submissions_total"] for r in rules)},
        "splits": {d: {"train": s.train, "val": s.val, "test": s.test, "source": s.source} for d, s in splits.items()},
        "other_rules": other,
        "notes": notes,
    }


def _rule_summary(rule: str, rows: list[dict[str, Any]], rate: float) -> dict[str, Any]:
    total = sum(r["flops"] for r in rows)

    def span(key):
        values = [r[key] for r in rows if r[key] is not None]
        return [min(values), max(values)] if values else None

    return {"rule": rule, "jobs": len(rows), "flops_per_job": span("flops"), "total_flops": total,
            "device_hours": total / rate / 3600, "wall_seconds_per_job": span("wall_seconds"),
            "runtime_minutes": span("runtime_minutes"), "runtime_minutes_attempt2": span("runtime_minutes_attempt2"),
            "runtime_grows_with_attempt": any(r["runtime_minutes"] != r["runtime_minutes_attempt2"] for r in rows),
            "submissions_per_job": span("submissions"), "submissions_total": sum(r["submissions"] for r in rows),
            "job_list": rows}


def _notes(p: Plan, costs: Costs, request: Request) -> list[str]:
    perceptual = {costs.generator(run)["perceptual"] for run in costs.configs} - {None}
    fid = (f"TF-Inception ({costs.inception})" if costs.inception
           else "the species classifier (no TF-Inception weights here)")
    return [
        f"perceptual loss counted on {', '.join(sorted(perceptual)) or 'none'}"
        + (" (--perceptual vgg16: random weights of VGG16's shapes where this machine has none, the FLOPs of a "
           "node with the ImageNet weights)" if request.vgg16 else
           " (what this machine would train with; --perceptual vgg16 counts VGG16 as a node with its weights runs)")
        + f"; FID features from {fid}, small beside training either way",
        "wall time: a job's FLOPs over the rate above times its devices (its `gpu` resource, at least one); a "
        "training on N GPUs steps N x train.batch_size images (torchrun, a batch per rank)",
        "not counted: data loading, optimiser updates (no matmuls), train's sample grids, the real images' FID "
        "features (cached after a dataset's first evaluation)",
    ]


def _duration(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.3g} {unit}"
    return f"{seconds:.3g} s"


def _span(values, fmt) -> str:
    if values is None:
        return "none"
    low, high = (fmt(v) for v in values)
    return low if low == high else f"{low}-{high}"


def render(report: dict[str, Any]) -> str:
    """The report as a table, one row per compute rule, then the totals and where the numbers came from."""
    pf = lambda v: f"{v / 1e15:.3g}"  # noqa: E731
    lines = [
        f"csfgan estimate: {report['configfile']} (scale {report['scale']}, {', '.join(report['datasets'])}, seeds "
        f"{report['seeds']}) at {report['device_tflops']:g} TFLOP/s x MFU {report['mfu']:g} = "
        f"{report['flops_per_second'] / 1e12:.4g} TFLOP/s per job; runtime limits from snakemake --dry-run"
        + (f" --workflow-profile {report['workflow_profile']}" if report["workflow_profile"] else ""),
        "",
        f"{'rule':<20}{'jobs':>6}{'PFLOP/job':>20}{'PFLOP':>12}{'device-h':>11}{'wall/job':>22}"
        f"{'limit min':>12}{'submissions/job':>17}",
    ]
    for r in report["rules"]:
        limit = _span(r["runtime_minutes"], str) + ("*" if r["runtime_grows_with_attempt"] else "")
        lines.append(f"{r['rule']:<20}{r['jobs']:>6}{_span(r['flops_per_job'], pf):>20}{pf(r['total_flops']):>12}"
                     f"{r['device_hours']:>11.3g}{_span(r['wall_seconds_per_job'], _duration):>22}{limit:>12}"
                     f"{_span(r['submissions_per_job'], str):>17}")
    t = report["total"]
    lines.append(f"{'total':<20}{t['jobs']:>6}{'':>20}{pf(t['flops']):>12}{t['device_hours']:>11.3g}{'':>22}{'':>12}"
                 f"{t['submissions']:>17}")
    if any(r["runtime_grows_with_attempt"] for r in report["rules"]):
        grown = ", ".join(f"{r['rule']} {_span(r['runtime_minutes_attempt2'], str)}" for r in report["rules"]
                          if r["runtime_grows_with_attempt"])
        lines.append(f"* the limit grows with the attempt: the first attempt's is shown (attempt 2: {grown} min; "
                     f"at most {report['max_runtime_minutes']} min)")
    lines.append("")
    lines += [f"{d}: {s['train']:,} train / {s['val']:,} val / {s['test']:,} test images, from {s['source']}"
              for d, s in report["splits"].items()]
    if report["other_rules"]:
        lines.append("no network (not counted): " + ", ".join(
            f"{rule} {o['jobs']} job{'s' * (o['jobs'] != 1)} (limit {o['runtime_minutes']} min)"
            for rule, o in report["other_rules"].items()))
    lines += [f"note: {n}" for n in report["notes"]]
    return "\n".join(lines)


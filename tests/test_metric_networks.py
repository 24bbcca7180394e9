"""The networks evaluation measures with: trained apart from the generator, and out of reach of its losses."""

import json

import numpy as np
import pytest
import torch

from csfgan.config import load_scale
from csfgan.damsm import load_text_encoder
from csfgan.metrics.feature_net import (
    FeatureNetError,
    describe,
    held_out_split,
    load_feature_net,
    metrics_path,
    train_feature_net,
)
from csfgan.metrics.fid import module_weights_hash
from csfgan.models.damsm import DamsmImageEncoder


def test_feature_net_learns_species_and_colours_on_held_out_images(smoke_pipeline, smoke_metric_nets):
    path = smoke_metric_nets["feature_net"]
    m = json.loads(metrics_path(path).read_text())
    net, ckpt = load_feature_net(path)
    assert ckpt["metrics"] == m and describe(ckpt) == "species-classifier (synth-birds train split, seed 0)"
    assert set(m["heads"]) == {"species", "body_colour", "crown_colour", "wing_colour", "wing_bars", "belly_colour",
                               "beak_colour", "tail_colour"}
    assert m["heads"]["species"] == 150 and m["held_out_images"] == 150  # smoke: 2 per species, one held out
    acc, chance = m["held_out_accuracy"], m["chance"]
    # Held-out images of the train species, never seen in training: well above chance.
    assert acc["species"] > 3 * chance["species"]
    assert np.mean([acc[k] for k in acc if k != "species"]) > 2 * np.mean([chance[k] for k in acc if k != "species"])
    assert set(m["test_split_colour_accuracy"]) == set(m["heads"]) - {"species"}
    assert not any(p.requires_grad for p in net.parameters()) and not net.training
    feats = net.global_features(torch.zeros(3, 3, 32, 32))
    assert feats.shape == (3, net.feature_dim)


def test_held_out_split_keeps_every_species_in_training():
    classes = np.repeat(np.arange(5), [1, 2, 8, 16, 3])
    fit, held = held_out_split(classes, seed=0)
    assert sorted(np.concatenate([fit, held]).tolist()) == list(range(len(classes)))
    assert set(classes[fit]) == set(range(5))  # every species is trained on
    assert np.bincount(classes[held], minlength=5).tolist() == [0, 1, 1, 2, 1]
    assert np.array_equal(held_out_split(classes, seed=0)[1], held)


def test_feature_net_checkpoint_errors(smoke_pipeline, smoke_metric_nets, tmp_path):
    from csfgan.data.prepared import PreparedData

    with pytest.raises(FeatureNetError, match="no such feature-network checkpoint"):
        load_feature_net(tmp_path / "missing.pt")
    with pytest.raises(FeatureNetError, match="not a feature-network checkpoint"):
        load_feature_net(smoke_pipeline["text_encoder"])
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (type(marker).touch, (marker,))

    crafted = tmp_path / "crafted.pt"
    torch.save({"kind": "csfgan-feature-net", "payload": Payload()}, crafted)
    with pytest.raises(FeatureNetError, match="never pickled code"):
        load_feature_net(crafted)
    assert not marker.exists()

    ckpt = torch.load(smoke_metric_nets["feature_net"], weights_only=True)
    ckpt["dataset"] = "synth-flowers"
    torch.save(ckpt, tmp_path / "flowers.pt")
    with pytest.raises(FeatureNetError, match="trained on 'synth-flowers' at 32 px"):
        load_feature_net(tmp_path / "flowers.pt", PreparedData(smoke_pipeline["data"]))
    with pytest.raises(Exception, match="is a folder"):
        train_feature_net(smoke_pipeline["data"], load_scale("smoke"), tmp_path, progress=False)


def test_no_metric_network_is_reachable_from_any_training_loss(smoke_pipeline, smoke_metric_nets, tmp_path,
                                                               monkeypatch):
    """Train two real steps and watch every loss: no parameter of the FID feature network or of the
    R-precision DAMSM pair is in the autograd graph of the D or G loss, none gets a gradient, and no
    module that runs during training carries their weights (not even a copy loaded from disk)."""
    import csfgan.step as step_mod
    import csfgan.train as train_mod

    feature_net, _ = load_feature_net(smoke_metric_nets["feature_net"])
    eval_text, eval_image, _, _ = load_text_encoder(smoke_metric_nets["eval_text_encoder"])
    metric_nets = {"feature net": feature_net, "eval text encoder": eval_text, "eval image encoder": eval_image}
    for net in metric_nets.values():
        net.requires_grad_(True)  # so that, were they used, autograd would reach them
    metric_params = {id(p): name for name, net in metric_nets.items() for p in net.parameters()}
    # Every weighted submodule, so a block of a metric network used on its own is caught as well.
    metric_hashes = {module_weights_hash(m) for net in metric_nets.values() for m in net.modules() if m.state_dict()}

    reached: dict[str, set[int]] = {"d": set(), "g": set()}

    def leaves(loss: torch.Tensor) -> set[int]:
        seen, found, stack = set(), set(), [loss.grad_fn]
        while stack:
            node = stack.pop()
            if node is None or node in seen:
                continue
            seen.add(node)
            if hasattr(node, "variable"):  # AccumulateGrad: a leaf tensor that would get a gradient
                found.add(id(node.variable))
            stack.extend(n for n, _ in node.next_functions)
        return found

    real_loss_d, real_generator_loss = step_mod.discriminator_loss, train_mod.GeneratorLoss

    def watched_loss_d(*args, **kwargs):
        loss = real_loss_d(*args, **kwargs)
        reached["d"] |= leaves(loss)
        return loss

    class WatchedGeneratorLoss(real_generator_loss):
        def forward(self, *args, **kwargs):
            total, terms = super().forward(*args, **kwargs)
            reached["g"] |= leaves(total)
            return total, terms

    ran: list[torch.nn.Module] = []
    losses: list = []

    def record(module, args, output):
        ran.append(module)

    monkeypatch.setattr(step_mod, "discriminator_loss", watched_loss_d)
    monkeypatch.setattr(train_mod, "GeneratorLoss", WatchedGeneratorLoss)
    real_step = train_mod.training_step

    def step(models, loss_fn, *args, **kwargs):
        losses.append((models, loss_fn))
        return real_step(models, loss_fn, *args, **kwargs)

    monkeypatch.setattr(train_mod, "training_step", step)
    handle = torch.nn.modules.module.register_module_forward_hook(record)
    try:
        # The full variant with the perceptual loss on: offline its fallback is the training DAMSM encoder.
        train_mod.train(smoke_pipeline["data"], smoke_pipeline["text_encoder"], "full", "smoke", tmp_path / "run",
                        steps=2, progress=False)
    finally:
        handle.remove()

    models, loss_fn = losses[0]
    generator_params = {id(p) for p in models.generator.parameters()}
    d_params = {id(p) for p in models.discriminator_parameters()}
    # The walk sees what it should (it is not vacuous) ...
    assert generator_params <= reached["g"] and d_params <= reached["d"]
    # ... and none of the metric networks.
    assert not {metric_params[i] for i in reached["g"] | reached["d"] if i in metric_params}
    assert all(p.grad is None for net in metric_nets.values() for p in net.parameters())
    # The perceptual fallback is the training DAMSM image encoder, not a metric network.
    assert loss_fn.perceptual is not None and loss_fn.perceptual.source == "damsm-image-encoder"
    fallback = loss_fn.perceptual._fallback.__self__
    assert isinstance(fallback, DamsmImageEncoder)
    assert all(fallback is not net for net in metric_nets.values())
    # Nothing that ran during training holds a metric network's weights, by identity or by value
    # (a copy loaded from the same file would be another object with the same weights).
    ran_once = {id(m): m for m in ran}
    metric_ids = {id(m) for net in metric_nets.values() for m in net.modules()}
    assert not metric_ids & set(ran_once)
    assert any(id(m) in ran_once for m in fallback.modules())  # the perceptual fallback did run
    used = {module_weights_hash(m) for m in ran_once.values() if m.state_dict()}
    assert not used & metric_hashes

"""Small builders shared by tests."""

from pathlib import Path

import numpy as np

from csfgan.data.prepared import PreparedWriter

COLOURS = ["red", "blue", "green", "yellow"]


def write_tiny_prepared(out: Path, resolution: int = 16, max_words: int = 18) -> Path:
    rng = np.random.default_rng(0)
    with PreparedWriter(out, dataset="tiny", resolution=resolution, config={"tiny": 1}, max_words=max_words) as w:
        for split, n in (("train", 6), ("test", 4)):
            s = w.split(split, n)
            for i in range(n):
                image = rng.integers(0, 256, (resolution, resolution, 3), dtype=np.uint8)
                colour = COLOURS[i % 4] if split == "train" else "purple"
                caps = [f"this bird has a {colour} wing number {k}" for k in range(3)]
                s.put(i, image, caps, class_id=i % 3 + (0 if split == "train" else 3), key=f"{split}/{i}")
        w.finish(seed=0)
    return out


def poison_reconstruction_loss(monkeypatch, at_call: int = 3):
    """Make L_rec NaN on its ``at_call``-th evaluation (a divergence at a known step), exact otherwise;
    returns the real one, to put back."""
    import csfgan.losses

    calls = {"n": 0}
    real_l1 = csfgan.losses.reconstruction_loss

    def poisoned(real, fake):
        calls["n"] += 1
        value = real_l1(real, fake)
        return value * float("nan") if calls["n"] == at_call else value

    monkeypatch.setattr(csfgan.losses, "reconstruction_loss", poisoned)
    return real_l1

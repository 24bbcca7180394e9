"""FID/KID through torch-fidelity, offline: a random-init Inception weights file made here, and a
small seeded conv net standing in for the DAMSM image encoder."""

import numpy as np
import pytest
import torch
import torch_fidelity.metric_fid as tfm
from scipy import linalg
from torch import nn
from torch_fidelity import KEY_METRIC_FID

from csfgan.errors import UserError
from csfgan.metrics import fid as fidmod
from csfgan.metrics.fid import DAMSM, INCEPTION, fid_kid, inception_weights_available, reference_features

RES = 32


class CountingEncoder(nn.Module):
    """A seeded random conv net with the DAMSM image encoder's ``global_features``; counts images seen."""

    def __init__(self, seed: int = 0, dim: int = 16):
        super().__init__()
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            self.net = nn.Sequential(
                nn.Conv2d(3, 8, 3, stride=2, padding=1),
                nn.ReLU(),
                nn.Conv2d(8, dim, 3, stride=2, padding=1),
                nn.ReLU(),
                nn.AdaptiveAvgPool2d(1),
                nn.Flatten(),
            )
        self.images_seen = 0
        self.input_ranges = []

    def global_features(self, images):
        self.images_seen += len(images)
        self.input_ranges.append((images.min().item(), images.max().item()))
        return self.net(images)


def smooth_images(n, seed=0):
    """Blurry colour fields: a distribution that additive noise moves away from, step by step."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(40, 215, (n, 4, 4, 3))
    return np.repeat(np.repeat(coarse, RES // 4, axis=1), RES // 4, axis=2).round().astype(np.uint8)


def add_noise(images, sigma, seed=1):
    noise = np.random.default_rng(seed).normal(0, sigma, images.shape)
    return np.clip(images + noise, 0, 255).round().astype(np.uint8)


def direct_fid(encoder, real, fake):
    """Fréchet distance of the encoder's features, computed with numpy/scipy rather than torch-fidelity."""

    def feats(x):
        with torch.no_grad():
            t = torch.from_numpy(x).permute(0, 3, 1, 2).float() / 127.5 - 1
            return encoder.net(t).double().numpy()

    f1, f2 = feats(real), feats(fake)
    mu1, mu2 = f1.mean(0), f2.mean(0)
    s1, s2 = np.cov(f1, rowvar=False), np.cov(f2, rowvar=False)
    covmean = linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean))


# ---------------------------------------------------------------- DAMSM features


def test_damsm_fid_is_zero_on_identical_sets_grows_with_noise_and_matches_numpy():
    enc = CountingEncoder()
    real = smooth_images(40)
    same = fid_kid(real, real.copy(), extractor=DAMSM, network=enc)
    assert same["features"] == DAMSM
    assert abs(same["fid"]) < 1e-6
    assert same["kid_subset_size"] == 40 and same["num_images"] == 40

    results = [fid_kid(real, add_noise(real, s), extractor=DAMSM, network=enc) for s in (8, 24, 64)]
    fids = [r["fid"] for r in results]
    assert 0 < fids[0] < fids[1] < fids[2], fids
    kids = [r["kid_mean"] for r in results]
    assert kids[0] < kids[1] < kids[2], kids
    # An identical set's (unbiased) KID is a small negative number, not the noisy sets' positive one.
    assert abs(same["kid_mean"]) < 0.05 * kids[2]

    for sigma, r in zip((8, 24, 64), results, strict=True):
        assert r["fid"] == pytest.approx(direct_fid(enc, real, add_noise(real, sigma)), rel=1e-3, abs=1e-6)

    # uint8 reached the encoder as [-1, 1] floats.
    lo = min(a for a, _ in enc.input_ranges)
    hi = max(b for _, b in enc.input_ranges)
    assert -1.0 <= lo < -0.5 and 0.5 < hi <= 1.0


def test_damsm_path_leaves_the_callers_encoder_as_it_was():
    enc = CountingEncoder()
    enc.train()
    real = smooth_images(8)
    fid_kid(real, add_noise(real, 16), extractor=DAMSM, network=enc)
    assert enc.training
    assert all(p.requires_grad for p in enc.parameters())
    assert not fidmod._NETWORKS  # registered only for the duration of the call


def test_reference_features_are_cached_per_key(tmp_path):
    real = smooth_images(12)
    fake_a, fake_b = add_noise(real, 10), add_noise(real, 30)
    enc = CountingEncoder()
    kw = dict(extractor=DAMSM, network=enc, cache_dir=tmp_path, cache_key="synth-birds/test")

    first = fid_kid(real, fake_a, **kw)
    assert enc.images_seen == 24  # real + fake
    again = fid_kid(real, fake_a, **kw)
    assert enc.images_seen == 36  # fake only: the real features came from the cache
    assert again["fid"] == pytest.approx(first["fid"]) and again["kid_mean"] == pytest.approx(first["kid_mean"])
    uncached = fid_kid(real, fake_a, extractor=DAMSM, network=enc)
    assert uncached["fid"] == pytest.approx(first["fid"])
    enc.images_seen = 0

    fid_kid(real, fake_b, **kw)
    assert enc.images_seen == 12  # a different fake set reuses the reference too
    fid_kid(real, fake_b, **dict(kw, cache_key="synth-flowers/test"))
    assert enc.images_seen == 36  # a different key recomputes
    fid_kid(real[:10], fake_b[:10], **kw)
    assert enc.images_seen == 56  # a different N (and image digest) recomputes

    other = CountingEncoder(seed=1)  # different weights, same class and key
    fid_kid(real, fake_b, **dict(kw, network=other))
    assert other.images_seen == 24

    # The ``ref`` verb fills the cache that ``calc`` then reads.
    fresh = CountingEncoder(seed=2)
    ref_kw = dict(kw, network=fresh, cache_key="ref-then-calc")
    feats = reference_features(real, **ref_kw)
    assert feats.shape == (12, 16) and fresh.images_seen == 12
    fid_kid(real, fake_a, **ref_kw)
    assert fresh.images_seen == 24
    assert list(tmp_path.glob("ref-then-calc-*-features-global.npz"))


def test_kid_subset_size_is_capped_at_the_number_of_images():
    enc = CountingEncoder()
    real = smooth_images(6)
    out = fid_kid(real, add_noise(real, 20), extractor=DAMSM, network=enc, kid_subset_size=1000)
    assert out["kid_subset_size"] == 6
    out = fid_kid(real, add_noise(real, 20), extractor=DAMSM, network=enc, kid_subset_size=4)
    assert out["kid_subset_size"] == 4


def test_clear_errors(tmp_path, monkeypatch):
    enc = CountingEncoder()
    real = smooth_images(4)
    with pytest.raises(ValueError, match=r"real \(4, 32, 32, 3\), fake \(3, 32, 32, 3\)"):
        fid_kid(real, real[:3], extractor=DAMSM, network=enc)
    with pytest.raises(ValueError, match="at least 2 real images"):
        fid_kid(real[:1], real[:1], extractor=DAMSM, network=enc)
    with pytest.raises(ValueError, match="uint8"):
        fid_kid(real.astype(np.float32), real, extractor=DAMSM, network=enc)
    with pytest.raises(ValueError, match="unknown feature extractor"):
        fid_kid(real, real, extractor="inception", network=enc)
    with pytest.raises(ValueError, match="need network"):
        fid_kid(real, real, extractor=DAMSM)
    with pytest.raises(ValueError, match="without cache_dir"):
        fid_kid(real, real, extractor=DAMSM, network=enc, cache_key="x")
    assert enc.images_seen == 0

    # No Inception weights anywhere: an error that names the DAMSM alternative, never a download.
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"))
    assert inception_weights_available() is None
    with pytest.raises(UserError, match="species-classifier"):
        fid_kid(real, real, extractor=INCEPTION)
    with pytest.raises(UserError, match="does not exist"):
        inception_weights_available(tmp_path / "missing.pth")
    hub_file = tmp_path / "hub" / "checkpoints" / fidmod.INCEPTION_WEIGHTS_FILENAME
    hub_file.parent.mkdir(parents=True)
    hub_file.write_bytes(b"")
    assert inception_weights_available() == str(hub_file)


# ---------------------------------------------------------------- Inception features


@pytest.fixture(scope="module")
def inception_weights(tmp_path_factory):
    """A random-init state_dict in torch-fidelity's Inception format, built without the network."""
    import torch_fidelity.feature_extractor_inceptionv3 as tfi

    with pytest.MonkeyPatch.context() as mp, torch.random.fork_rng():
        # The constructor loads weights at the end (downloading if given no path): skip just that.
        mp.setattr(tfi, "load_state_dict_from_url", lambda *a, **k: {})
        mp.setattr(tfi.FeatureExtractorInceptionV3, "load_state_dict", lambda self, *a, **k: None)
        torch.manual_seed(0)
        model = tfi.FeatureExtractorInceptionV3(INCEPTION, ["2048"])
    # PyTorch's default conv init shrinks activations layer after layer (the 2048-d pool features
    # come out ~1e-8); He init keeps them at a scale where FID differences are far above rounding.
    with torch.random.fork_rng():
        torch.manual_seed(1)
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
    path = tmp_path_factory.mktemp("inception") / "inception-random.pth"
    torch.save(model.state_dict(), path)
    return path


def frechet_from_features(stat_1, stat_2, verbose=False):
    """torch-fidelity's Fréchet distance, computed exactly through the features' low rank.

    With n samples the covariances have rank < n, and tr sqrt(S1 S2) is the nuclear norm of
    A B^T / sqrt((n-1)(m-1)) (A, B the centred features): an n x m SVD instead of the eigenvalues
    of a non-symmetric 2048 x 2048 matrix, which take 7-40 s on 2 busy CPU cores.
    """
    a = stat_1["features"] - stat_1["mu"]
    b = stat_2["features"] - stat_2["mu"]
    cross = a @ b.T / np.sqrt((len(a) - 1) * (len(b) - 1))
    tr_covmean = np.linalg.svd(cross, compute_uv=False).sum()
    diff = stat_1["mu"] - stat_2["mu"]
    fid = diff @ diff + np.trace(stat_1["sigma"]) + np.trace(stat_2["sigma"]) - 2 * tr_covmean
    return {KEY_METRIC_FID: float(fid)}


TORCH_FIDELITY_STATISTICS = tfm.fid_features_to_statistics
TORCH_FIDELITY_FRECHET = tfm.fid_statistics_to_metric


def statistics_with_features(features):
    """torch-fidelity's mu/sigma, plus the features the low-rank computation needs."""
    stat = TORCH_FIDELITY_STATISTICS(features)
    stat["features"] = features.numpy().astype(np.float64)
    stat["mu"] = stat["features"].mean(0)
    return stat


def test_low_rank_frechet_distance_equals_torch_fidelitys():
    rng = np.random.default_rng(0)
    f1 = torch.from_numpy(rng.normal(size=(12, 64)))
    f2 = torch.from_numpy(rng.normal(0.3, 1.5, size=(14, 64)))
    s1, s2 = TORCH_FIDELITY_STATISTICS(f1), TORCH_FIDELITY_STATISTICS(f2)
    expected = TORCH_FIDELITY_FRECHET(s1, s2, verbose=False)[KEY_METRIC_FID]
    got = frechet_from_features(statistics_with_features(f1), statistics_with_features(f2))[KEY_METRIC_FID]
    assert got == pytest.approx(expected, rel=1e-6)  # eigvals of the product lose ~1e-8


def test_inception_fid_with_a_weights_file_made_here(inception_weights, tmp_path, monkeypatch):
    # What this test is about is the Inception feature path (weights file, uint8 feed, 2048-d pool
    # features, cache names); torch-fidelity's FID formula itself is checked against scipy in the
    # DAMSM test. So the formula's 2048 x 2048 eigendecomposition is swapped for the exact
    # low-rank computation above, which is checked against the original just above.
    monkeypatch.setattr(tfm, "fid_features_to_statistics", statistics_with_features)
    monkeypatch.setattr(tfm, "fid_statistics_to_metric", frechet_from_features)
    real = smooth_images(8, seed=0)  # Inception runs at 299 px whatever the input: ~0.15 s per image
    other = np.random.default_rng(5).integers(0, 256, real.shape, dtype=np.uint8)  # white noise
    kw = dict(extractor=INCEPTION, inception_weights=inception_weights, cache_dir=tmp_path, cache_key="inc")
    same = fid_kid(real, real.copy(), **kw)
    different = fid_kid(real, other, **kw)
    assert same["features"] == different["features"] == INCEPTION
    assert different["fid"] > 0
    assert abs(same["fid"]) < 1e-3 * different["fid"]
    assert different["kid_mean"] > abs(same["kid_mean"])
    assert same["feature_weights_sha256"] == fidmod._weights_file_hash(str(inception_weights))
    assert list(tmp_path.glob(f"inc-*-{INCEPTION}-features-2048.npz"))


# ---------------------------------------------------------------- nothing read here runs pickled code


class TouchMarker:
    """Unpickling this calls Path.touch(marker): the payload a crafted cache or weights file carries."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        from pathlib import Path

        return (Path.touch, (Path(self.marker),))


def test_a_pickle_in_the_reference_cache_is_never_unpickled(tmp_path):
    real = smooth_images(12)
    fake = add_noise(real, 20)
    enc = CountingEncoder()
    kw = dict(extractor=DAMSM, network=enc, cache_dir=tmp_path / "cache", cache_key="synth-birds-test")
    expected = fid_kid(real, fake, **kw)
    (cache,) = (tmp_path / "cache").glob("*.npz")
    assert np.load(cache, allow_pickle=False)["features"].shape == (12, 16)  # plain arrays, no pickle

    marker = tmp_path / "pwned"
    with open(cache, "wb") as f:  # an object array: numpy pickles it
        np.savez(f, features=np.array([TouchMarker(marker)], dtype=object))
    enc.images_seen = 0
    with pytest.warns(UserWarning, match="unreadable reference-feature cache"):
        again = fid_kid(real, fake, **kw)
    assert not marker.exists()
    assert enc.images_seen == 24  # recomputed from the images, not read
    assert again["fid"] == pytest.approx(expected["fid"])
    assert np.load(cache, allow_pickle=False)["features"].shape == (12, 16)  # and rewritten whole

    cache.write_bytes(b"not a zip")  # a damaged cache: recomputed too
    with pytest.warns(UserWarning, match="unreadable"):
        assert fid_kid(real, fake, **kw)["fid"] == pytest.approx(expected["fid"])


def test_a_pickle_as_inception_weights_is_refused_before_torch_fidelity_opens_it(tmp_path, monkeypatch):
    import torch_fidelity.feature_extractor_inceptionv3 as tfi

    marker = tmp_path / "pwned"
    crafted = tmp_path / "weights-inception.pth"
    torch.save({"conv.weight": torch.zeros(1), "payload": TouchMarker(marker)}, crafted)
    opened = []
    monkeypatch.setattr(tfi.FeatureExtractorInceptionV3, "__init__", lambda self, *a, **k: opened.append(k))
    real = smooth_images(4)
    for path in (crafted, None):
        if path is None:  # the same file found in torch-fidelity's hub cache is checked as well
            monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"))
            hub = tmp_path / "hub" / "checkpoints" / fidmod.INCEPTION_WEIGHTS_FILENAME
            hub.parent.mkdir(parents=True)
            hub.write_bytes(crafted.read_bytes())
        with pytest.raises(fidmod.InceptionWeightsError, match="not a plain state_dict .*nothing in it ran"):
            fid_kid(real, real, extractor=INCEPTION, inception_weights=path)
    assert not marker.exists() and not opened

    not_a_state_dict = tmp_path / "list.pth"
    torch.save([torch.zeros(1)], not_a_state_dict)
    with pytest.raises(fidmod.InceptionWeightsError, match="holds a list, not a state_dict"):
        fid_kid(real, real, extractor=INCEPTION, inception_weights=not_a_state_dict)


def test_reference_cache_is_keyed_by_the_feature_networks_weights(tmp_path):
    """A retrained feature network (same class, same data, other weights) never reuses stale features."""
    from csfgan.metrics.feature_net import SpeciesClassifier

    real = smooth_images(10)
    fake = add_noise(real, 20)
    nets = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        nets.append(SpeciesClassifier(RES, {"species": 3}))
    kw = dict(extractor=fidmod.FEATURE_NET, cache_dir=tmp_path, cache_key="synth-birds-test")
    a = fid_kid(real, fake, network=nets[0], **kw)
    b = fid_kid(real, fake, network=nets[1], **kw)
    assert a["feature_weights_sha256"] != b["feature_weights_sha256"]
    assert len(list(tmp_path.glob("*.npz"))) == 2
    assert b["fid"] == pytest.approx(fid_kid(real, fake, network=nets[1], extractor=fidmod.FEATURE_NET)["fid"])

import math
import warnings

import numpy as np
import pytest
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from csfgan.data.masks import center_mask
from csfgan.metrics.pixel import PSNR_CAP_DB, pixel_metrics, pixel_metrics_per_image

RES = 32


def _images(n=3, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, RES, RES, 3), dtype=np.uint8)


def _centre_hole():
    return center_mask(RES).astype(bool)  # rows/cols 8..24


def test_identical_images_give_capped_psnr_and_unit_ssim_without_warnings():
    real = _images()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no divide-by-zero warning leaks from scikit-image
        per = pixel_metrics_per_image(real, real.copy(), _centre_hole())
    np.testing.assert_array_equal(per["psnr"], PSNR_CAP_DB)
    np.testing.assert_array_equal(per["psnr_hole"], PSNR_CAP_DB)
    np.testing.assert_allclose(per["ssim"], 1.0)
    np.testing.assert_allclose(per["ssim_hole"], 1.0)
    assert all(math.isfinite(v) for v in pixel_metrics(real, real.copy(), _centre_hole()).values())


def test_psnr_of_uniform_error_matches_hand_computation():
    real = _images() // 2  # room for +10 without saturating
    fake = real + 10
    hole = _centre_hole()
    m = pixel_metrics(real, fake, hole)
    assert m["psnr"] == pytest.approx(20 * math.log10(255 / 10))
    assert m["psnr_hole"] == pytest.approx(20 * math.log10(255 / 10))

    # Error only inside the hole (a composite): the hole sees MSE 100, the whole image 100 * 1/4.
    composite = np.where(hole[None, :, :, None], fake, real)
    m = pixel_metrics(real, composite, hole)
    assert m["psnr_hole"] == pytest.approx(20 * math.log10(255 / 10))
    assert m["psnr"] == pytest.approx(10 * math.log10(255**2 / (100 * hole.mean())))


def test_hole_metrics_ignore_differences_outside_the_hole():
    real = _images()
    hole = _centre_hole()
    fake = real.copy()
    # Change every pixel more than the 3 px SSIM half-window away from the hole.
    far = np.ones((RES, RES), dtype=bool)
    far[5:27, 5:27] = False
    fake[:, far] = 255 - fake[:, far]
    per = pixel_metrics_per_image(real, fake, hole)
    np.testing.assert_array_equal(per["psnr_hole"], PSNR_CAP_DB)
    np.testing.assert_allclose(per["ssim_hole"], 1.0)
    assert (per["psnr"] < 20).all() and (per["ssim"] < 0.9).all()

    # PSNR in the hole ignores any change outside it, even right at its edge.
    fake = real.copy()
    fake[:, ~hole] = 255 - fake[:, ~hole]
    np.testing.assert_array_equal(pixel_metrics_per_image(real, fake, hole)["psnr_hole"], PSNR_CAP_DB)


def test_agrees_with_scikit_image_on_a_random_pair():
    real, fake = _images(seed=1), _images(seed=2)
    everywhere = np.ones((RES, RES), dtype=bool)
    per = pixel_metrics_per_image(real, fake, everywhere)
    for i in range(len(real)):
        assert per["psnr"][i] == pytest.approx(peak_signal_noise_ratio(real[i], fake[i], data_range=255), rel=1e-12)
        expected_ssim = structural_similarity(real[i], fake[i], channel_axis=-1, data_range=255)
        assert per["ssim"][i] == pytest.approx(expected_ssim, rel=1e-12)
    # An all-image hole reproduces the whole-image numbers exactly (same border convention).
    np.testing.assert_allclose(per["psnr_hole"], per["psnr"], rtol=1e-12)
    np.testing.assert_allclose(per["ssim_hole"], per["ssim"], rtol=1e-12)

    means = pixel_metrics(real, fake, everywhere)
    assert means == {k: pytest.approx(float(v.mean())) for k, v in per.items()}


def test_hole_mask_forms_are_equivalent():
    real, fake = _images(seed=3), _images(seed=4)
    hole = _centre_hole()
    shared = pixel_metrics_per_image(real, fake, hole)
    stacked = pixel_metrics_per_image(real, fake, np.stack([hole] * len(real)))
    as_float = pixel_metrics_per_image(real, fake, center_mask(RES))  # the masks module's float32 0/1
    for k in shared:
        np.testing.assert_array_equal(shared[k], stacked[k])
        np.testing.assert_array_equal(shared[k], as_float[k])


def test_clear_errors():
    real = _images()
    hole = _centre_hole()
    with pytest.raises(ValueError, match=r"real \(3, 32, 32, 3\), fake \(2, 32, 32, 3\)"):
        pixel_metrics(real, real[:2], hole)
    with pytest.raises(ValueError, match="uint8"):
        pixel_metrics(real, real.astype(np.float32), hole)
    with pytest.raises(ValueError, match="hole mask must have shape"):
        pixel_metrics(real, real, hole[:16])
    with pytest.raises(ValueError, match="boolean or 0/1"):
        pixel_metrics(real, real, hole * 0.5)
    empty = np.stack([hole, np.zeros_like(hole), hole])
    with pytest.raises(ValueError, match=r"empty for image\(s\) \[1\]"):
        pixel_metrics(real, real, empty)

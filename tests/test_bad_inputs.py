"""Bad input of each kind ends in one line naming the value or path, never a traceback or a silent
wrong result: damaged prepared data, user images of every mode, devices, counts, a full disk."""

from __future__ import annotations

import errno
import json

import numpy as np
import pytest
from PIL import Image

from csfgan.cli import main
from csfgan.data.prepared import FORMAT_VERSION, PreparedData, PreparedDataError, verify
from csfgan.inpaint import _open_image, to_rgb

# ------------------------------------------------------------------ prepared data


def _damage(root, how):
    images = root / "train" / "images.npy"
    if how == "truncated":
        images.write_bytes(images.read_bytes()[:-100])
    elif how == "missing":
        images.unlink()
    elif how == "reshaped":  # same bytes, another shape in the header
        arr = np.load(images)
        np.save(images, arr.reshape(len(arr) * 2, -1, *arr.shape[2:]))
    elif how == "manifest-not-json":
        (root / "manifest.json").write_text("{")
    elif how == "old-format":
        m = json.loads((root / "manifest.json").read_text())
        m["format_version"] = FORMAT_VERSION - 1
        (root / "manifest.json").write_text(json.dumps(m))
    elif how == "captions-truncated":
        path = root / "train" / "captions.json"
        path.write_text(path.read_text()[:-5])


@pytest.mark.parametrize("how", ["truncated", "missing", "reshaped", "manifest-not-json", "old-format",
                                 "captions-truncated"])
def test_damaged_prepared_data_is_refused_on_load_naming_the_file(tiny_prepared, how):
    _damage(tiny_prepared, how)
    with pytest.raises(PreparedDataError, match=r"csfgan prepare") as err:
        PreparedData(tiny_prepared)
    assert str(tiny_prepared) in str(err.value) and "\n" not in str(err.value)
    if how in ("truncated", "missing", "reshaped"):
        assert "train/images.npy" in str(err.value)


def test_same_size_change_is_found_by_verify_only(tiny_prepared, capsys):
    assert main(["verify-data", "--data", str(tiny_prepared)]) == 0
    assert "files match their sizes and sha256" in capsys.readouterr().out
    images = tiny_prepared / "train" / "images.npy"
    raw = bytearray(images.read_bytes())
    raw[-1] ^= 0xFF  # one pixel of the last image
    images.write_bytes(bytes(raw))
    PreparedData(tiny_prepared)  # sizes and shapes still match: loading is cheap and passes
    with pytest.raises(PreparedDataError, match=r"train/images.npy: content differs from the sha256"):
        verify(tiny_prepared)
    assert main(["verify-data", "--data", str(tiny_prepared)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "train/images.npy" in err and "Traceback" not in err


def test_manifest_records_every_file(tiny_prepared):
    files = PreparedData(tiny_prepared).manifest["files"]
    on_disk = {p.relative_to(tiny_prepared).as_posix() for p in tiny_prepared.rglob("*") if p.is_file()}
    assert set(files) == on_disk - {"manifest.json"}
    assert files["train/images.npy"]["shape"] == [6, 16, 16, 3] and files["train/images.npy"]["dtype"] == "|u1"
    assert files["train/images.npy"]["bytes"] == (tiny_prepared / "train" / "images.npy").stat().st_size


# ------------------------------------------------------------------ user images of every mode


def test_sixteen_bit_grey_scales_to_eight_bits(tmp_path):
    values = np.array([[0, 257 * 128, 65535]], dtype=np.uint16)
    path = tmp_path / "g16.png"
    Image.fromarray(values).save(path)
    im = _open_image(path, "image")
    assert im.mode.startswith("I")
    rgb, alpha = to_rgb(im, path)
    assert alpha is None and rgb[0, :, 0].tolist() == [0, 128, 255] and (rgb[..., 0] == rgb[..., 2]).all()


def test_palette_with_transparency_keeps_colours_and_alpha(tmp_path):
    im = Image.new("P", (4, 2))
    im.putpalette([0, 0, 0, 200, 30, 40] + [0] * 762)
    im.putdata([1, 1, 0, 0, 1, 1, 0, 0])
    path = tmp_path / "p.png"
    im.save(path, transparency=0)
    rgb, alpha = to_rgb(_open_image(path, "image"), path)
    assert rgb[0, 0].tolist() == [200, 30, 40]
    assert alpha.tolist() == [[255, 255, 0, 0], [255, 255, 0, 0]]
    plain = tmp_path / "p2.png"
    im.save(plain)
    assert to_rgb(_open_image(plain, "image"), plain)[1] is None


@pytest.mark.parametrize("mode", ["L", "LA", "CMYK", "1"])
def test_grey_alpha_cmyk_and_bilevel_become_rgb(tmp_path, mode):
    base = Image.new("RGB", (6, 4), (255, 255, 255))
    im = base.convert(mode)
    path = tmp_path / f"x.{'jpg' if mode == 'CMYK' else 'png'}"
    im.save(path)
    rgb, alpha = to_rgb(_open_image(path, "image"), path)
    assert rgb.shape == (4, 6, 3) and rgb.dtype == np.uint8 and rgb.min() >= 250
    assert (alpha is not None) == (mode == "LA")


def test_exif_orientation_is_applied(tmp_path):
    arr = np.zeros((20, 40, 3), np.uint8)
    arr[:, :20] = (255, 0, 0)  # left half red, stored landscape
    im = Image.fromarray(arr)
    exif = im.getexif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    path = tmp_path / "rot.jpg"
    im.save(path, exif=exif, quality=95)
    upright = _open_image(path, "image")
    assert upright.size == (20, 40)  # portrait, as a viewer shows it
    top = np.asarray(upright)[:5].mean(axis=(0, 1))
    assert top[0] > 200 and top[1] < 60  # the red half is on top after the 90 degree turn


def test_decompression_bomb_is_one_line(tmp_path, monkeypatch):
    path = tmp_path / "big.png"
    Image.new("RGB", (200, 200)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10_000)  # 40,000 pixels: over the warning limit
    with pytest.raises(Exception, match="too many pixels for a safe decode") as err:
        _open_image(path, "image")
    assert "\n" not in str(err.value)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1_000)  # over twice the limit: PIL's own error
    with pytest.raises(Exception, match="too many pixels for a safe decode"):
        _open_image(path, "image")


# ------------------------------------------------------------------ command-line values


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["preview", "--data", "x", "-o", "x.png", "--count", "0"], "--count: must be >= 1, got 0"),
        (["params", "--scale", "smoke", "--vocab-size", "0"], "--vocab-size: must be >= 3, got 0"),
        (["train", "--data", "d", "--text-encoder", "t", "--variant", "full", "--scale", "smoke", "--out", "o",
          "--seed", "-1"], "--seed: must be >= 0, got -1"),
        (["train", "--data", "d", "--text-encoder", "t", "--variant", "full", "--scale", "smoke", "--out", "o",
          "--seed", "99999999999999999999"], "--seed: must be <= 4294967295, got 99999999999999999999"),
        (["inpaint", "--checkpoint", "c", "--image", "i", "--text", "t", "-o", "o.png", "--seed", str(2**32)],
         f"--seed: must be <= 4294967295, got {2**32}"),
        (["prepare", "--dataset", "synth-birds", "--scale", "smoke", "--workers", "zero"],
         "--workers: expected an integer, got 'zero'"),
        (["evaluate", "--run", "r", "--split", "train"], "--split: invalid choice"),
    ],
)
def test_bad_counts_are_argparse_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as done:
        main(argv)
    assert done.value.code == 2 and message in capsys.readouterr().err


@pytest.mark.parametrize(("device", "message"), [("gpu", "unknown device"), ("cuda:x", "unknown device"),
                                                 ("cuda", "CUDA is not available")])
def test_device_names_the_value(device, message):
    import torch

    from csfgan.errors import UserError
    from csfgan.runtime import resolve_device

    if device == "cuda" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(UserError, match=rf"--device '?{device}'?: {message}"):
        resolve_device(device)
    assert resolve_device("cpu").type == "cpu"


def test_pretrain_text_out_folder_refused_before_training(tiny_prepared, tmp_path, capsys, monkeypatch):
    import csfgan.damsm

    monkeypatch.setattr(csfgan.damsm, "_train", lambda *a, **k: pytest.fail("trained before checking --out"))
    rc = main(["pretrain-text", "--data", str(tiny_prepared), "--scale", "smoke", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc == 2 and f"--out {tmp_path} is a folder" in err and err.count("\n") == 1


def _enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_full_disk_is_one_line_naming_the_path_and_leaves_no_partial(tmp_path, capsys, monkeypatch):
    import csfgan.io

    # Any atomic text write (tables, metrics, config.json, manifests) ...
    monkeypatch.setattr(csfgan.io.Path, "write_text", _enospc)
    with pytest.raises(csfgan.io.OutputError, match=rf"cannot write {tmp_path / 'm.json'}: No space left"):
        csfgan.io.write_json(tmp_path / "m.json", {"a": 1})
    monkeypatch.undo()
    assert list(tmp_path.iterdir()) == []

    # ... a checkpoint, through the command line ...
    import torch

    from csfgan.checkpoint import save_checkpoint

    monkeypatch.setattr(torch, "save", _enospc)
    with pytest.raises(csfgan.io.OutputError, match=rf"cannot write {tmp_path / 'state.pt'}: No space"):
        save_checkpoint({"kind": "x"}, tmp_path / "state.pt")
    assert list(tmp_path.iterdir()) == []


def test_full_disk_during_prepare_through_the_cli(tmp_path, capsys, monkeypatch):
    import csfgan.data.prepared as prepared

    monkeypatch.setattr(prepared, "describe_files", _enospc)  # the last step before the manifest
    out = tmp_path / "birds"
    rc = main(["prepare", "--dataset", "synth-birds", "--scale", "smoke", "--out", str(out), "--workers", "1"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and f"cannot write {out}: No space left on device" in err
    assert list(tmp_path.iterdir()) == []  # no partial folder left


def test_an_unwrapped_full_disk_write_is_still_one_line(capsys, monkeypatch):
    import csfgan.models.params

    monkeypatch.setattr(csfgan.models.params, "parameter_breakdown", _enospc)
    assert main(["params", "--scale", "smoke"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "No space left on device; free space" in err and "Traceback" not in err

"""CUB-200-2011 and Oxford-102: download (file:// URLs), verify, extract and prepare tiny archives
built in the real layouts; crops checked against hand-computed boxes; bad inputs refused cleanly."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from csfgan.config import load_scale
from csfgan.data.cub import prepare_cub
from csfgan.data.download import DataSourceError, download_dataset
from csfgan.data.oxford102 import prepare_oxford102
from csfgan.data.prepared import PreparedData, PreparedDataError
from tests import realdata_fixtures as fx

RES = 32  # the smoke scale


def _expected(jpeg: bytes, box: tuple[int, int, int, int] | None) -> np.ndarray:
    img = Image.open(io.BytesIO(jpeg)).convert("RGB")
    if box is not None:
        img = img.crop(box)
    return np.asarray(img.resize((RES, RES), Image.Resampling.LANCZOS))


def _caption_archive(path: Path, dataset: str, captions=None, train=None, test=None) -> Path:
    if dataset == "cub":
        return fx.build_caption_archive(
            path,
            "cvpr2016_cub",
            captions or fx.cub_captions(),
            train or fx.CUB_TRAIN_CLASSES,
            test or fx.CUB_TEST_CLASSES,
        )
    return fx.build_caption_archive(
        path,
        "cvpr2016_flowers",
        captions or fx.flower_captions(),
        train or fx.FLOWER_TRAIN_CLASSES,
        test or fx.FLOWER_TEST_CLASSES,
    )


def _download(dataset: str, files: dict[str, Path], downloads: Path) -> dict[str, str]:
    """Download through file:// URLs, the expected MD5s overridden by the tiny files' own; returns them."""
    md5s = {name: fx.md5(p) for name, p in files.items()}
    download_dataset(dataset, downloads, urls={n: p.as_uri() for n, p in files.items()}, md5s=md5s, progress=False)
    return md5s


@pytest.fixture
def cub(tmp_path):
    """CUB archives in a 'mirror', downloaded into downloads/, with the caption archive."""
    mirror = tmp_path / "mirror"
    tgz = fx.build_cub_archive(mirror / "CUB_200_2011.tgz")
    captions = _caption_archive(mirror / "cvpr2016_cub.tar.gz", "cub")
    downloads = tmp_path / "downloads"
    md5s = _download("cub", {"CUB_200_2011.tgz": tgz}, downloads)
    return {"downloads": downloads, "captions": captions, "md5s": md5s, "tmp": tmp_path}


@pytest.fixture
def flowers(tmp_path):
    mirror = tmp_path / "mirror"
    files = fx.build_flowers(mirror)
    captions = _caption_archive(mirror / "cvpr2016_flowers.tar.gz", "oxford102")
    downloads = tmp_path / "downloads"
    md5s = _download("oxford102", files, downloads)
    return {"downloads": downloads, "captions": captions, "md5s": md5s, "tmp": tmp_path, "files": files}


def _prepare_cub(c, out: Path, scale=None, captions=None, workers=1):
    return prepare_cub(
        out,
        scale or load_scale("smoke"),
        c["downloads"],
        captions or c["captions"],
        workers,
        md5s=c["md5s"],
        progress=False,
    )


# ------------------------------------------------------------------ CUB


def test_cub_download_extracts_official_layout(cub):
    d = cub["downloads"]
    assert sorted(p.name for p in d.iterdir()) == ["CUB_200_2011.tgz", "extracted"]
    root = d / "extracted" / "CUB_200_2011"
    assert (root / "CUB_200_2011" / "images.txt").is_file() and (root / "attributes.txt").is_file()


def test_cub_prepare(cub):
    out = _prepare_cub(cub, cub["tmp"] / "prepared" / "cub")
    data = PreparedData(out)
    m = data.manifest
    assert m["dataset"] == "cub" and m["resolution"] == RES
    # Split by class: classes 1-3 train (6 images), class 4 test (3 images); of the train classes' two
    # images each, one (smoke: images_per_class_val 1) is held out for val.
    assert m["splits"]["train"]["count"] == 3 and m["splits"]["val"]["count"] == 3
    assert m["splits"]["test"]["count"] == 3
    assert m["split"]["counts"] == {"train": 3, "val": 3, "test": 3} and m["split"]["val_held_out_from_train"] == 3
    assert m["config"]["images_per_class_val"] == 1 and "held out of the train split" in m["split"]["val"]
    assert m["split"]["train_classes"] == fx.CUB_TRAIN_CLASSES and m["split"]["test_classes"] == fx.CUB_TEST_CLASSES
    assert m["split"]["paper_counts"] == {"train": 8855, "test": 2933}
    assert m["skipped"] == [] and m["skipped_count"] == 0
    assert m["sources"] == {
        "CUB_200_2011.tgz": cub["md5s"]["CUB_200_2011.tgz"],
        "cvpr2016_cub.tar.gz": fx.md5(cub["captions"]),
    }
    assert m["class_names"] == fx.CUB_CLASSES

    jpegs = fx.cub_jpegs()
    train, val, test = data.split("train"), data.split("val"), data.split("test")
    by_key = {im.rel: im for im in fx.CUB_IMAGES}
    # Train and val partition the train classes' images, one val image per class, each in input order.
    assert sorted(train.keys + val.keys) == sorted(im.rel for im in fx.CUB_IMAGES[:6])
    assert sorted(val.class_ids.tolist()) == [0, 1, 2] and sorted(train.class_ids.tolist()) == [0, 1, 2]
    order = [im.rel for im in fx.CUB_IMAGES]
    assert all(sorted(k, key=order.index) == k for k in (train.keys, val.keys))
    for split, images in ((train, [by_key[k] for k in train.keys]), (val, [by_key[k] for k in val.keys]),
                          (test, fx.CUB_IMAGES[6:])):
        assert split.keys == [im.rel for im in images]
        assert split.class_ids.tolist() == [im.class_id - 1 for im in images]
        assert split.captions == [fx.expected_cub_captions(im) for im in images]
        assert split.images.shape == (len(images), RES, RES, 3)
        for i, im in enumerate(images):
            got = np.asarray(split.images[i])
            # Exactly PIL's crop of the hand-computed box, resized...
            np.testing.assert_array_equal(got, _expected(jpegs[im.rel], im.box), err_msg=im.rel)
            # ...which is the red object: the crop did not take the green background.
            if im.mode == "RGB":
                assert got[..., 0].mean() > 150 and got[..., 1].mean() < 100, im.rel
            elif im.mode == "L":
                assert got.mean() > 150 and (got[..., 0] == got[..., 1]).all(), im.rel
    # A box one pixel off gives a different image (the comparison can tell).
    im = fx.CUB_IMAGES[0]
    x1, y1, x2, y2 = im.box
    assert not np.array_equal(_expected(jpegs[im.rel], (x1 + 1, y1, x2 + 1, y2)),
                              _expected(jpegs[im.rel], im.box))
    assert train.lengths.shape == (3, 10) and (train.lengths > 0).all()
    # The caption archive was extracted without its large feature files.
    extracted = cub["downloads"] / "extracted" / "cvpr2016_cub" / "cvpr2016_cub"
    assert (extracted / "text_c10").is_dir() and not (extracted / "images").exists()


def test_cub_prepare_parallel_identical_and_idempotent(cub):
    one = _prepare_cub(cub, cub["tmp"] / "p1")
    two = _prepare_cub(cub, cub["tmp"] / "p2", workers=2)
    for split in ("train", "val", "test"):
        a, b = PreparedData(one).split(split), PreparedData(two).split(split)
        np.testing.assert_array_equal(np.asarray(a.images), np.asarray(b.images))
        assert a.keys == b.keys
    stamp = (one / "manifest.json").stat().st_mtime_ns
    _prepare_cub(cub, one)  # already prepared identically: nothing rewritten
    assert (one / "manifest.json").stat().st_mtime_ns == stamp
    scale = load_scale("smoke")
    scale.data.skip_missing_captions = True
    with pytest.raises(PreparedDataError, match="differs in: skip_missing_captions"):
        _prepare_cub(cub, one, scale=scale)


def test_missing_caption_archive(cub):
    for given in (None, cub["tmp"] / "nowhere" / "cvpr2016_cub.tar.gz"):
        with pytest.raises(DataSourceError) as err:
            prepare_cub(cub["tmp"] / "out", load_scale("smoke"), cub["downloads"], given, md5s=cub["md5s"])
        msg = str(err.value)
        assert "cvpr2016_cub.tar.gz" in msg and "https://github.com/reedscot/cvpr2016" in msg
        assert str(cub["downloads"] / "cvpr2016_cub.tar.gz") in msg  # where to put it
    assert not (cub["tmp"] / "out").exists()


def test_caption_archive_found_in_downloads(cub):
    (cub["downloads"] / "cvpr2016_cub.tar.gz").write_bytes(cub["captions"].read_bytes())
    out = prepare_cub(cub["tmp"] / "out", load_scale("smoke"), cub["downloads"], None, md5s=cub["md5s"], progress=False)
    assert PreparedData(out).manifest["splits"]["test"]["count"] == 3


def test_cub_archive_not_downloaded(tmp_path):
    with pytest.raises(DataSourceError, match=r"CUB_200_2011\.tgz not found in .*csfgan download --dataset cub"):
        prepare_cub(tmp_path / "out", load_scale("smoke"), tmp_path / "downloads", tmp_path / "c.tar.gz")


def test_cub_md5_mismatch_in_downloads(cub):
    tgz = cub["downloads"] / "CUB_200_2011.tgz"
    tgz.write_bytes(tgz.read_bytes()[:-10] + b"corrupted!")
    with pytest.raises(DataSourceError, match=r"CUB_200_2011\.tgz: MD5 .* does not match .*\.bad-md5"):
        _prepare_cub(cub, cub["tmp"] / "out")
    assert not tgz.exists() and (cub["downloads"] / "CUB_200_2011.tgz.bad-md5").is_file()
    assert not (cub["tmp"] / "out").exists()


def test_cub_official_md5_checked_by_default(cub):
    # Without the test's override the tiny archive is not the official file.
    with pytest.raises(DataSourceError, match="97eceeb196236b17998738112f37df78"):
        prepare_cub(cub["tmp"] / "out", load_scale("smoke"), cub["downloads"], cub["captions"])


def _no_partial_output(tmp: Path) -> None:
    leftovers = [p.name for p in tmp.iterdir() if p.name.startswith((".out", "out"))]
    assert leftovers == [], leftovers


def test_cub_image_listed_but_missing(tmp_path):
    missing = fx.CUB_IMAGES[4].rel
    tgz = fx.build_cub_archive(tmp_path / "mirror" / "CUB_200_2011.tgz", drop=(missing,))
    c = {"downloads": tmp_path / "dl", "captions": _caption_archive(tmp_path / "c.tar.gz", "cub")}
    c["md5s"] = _download("cub", {"CUB_200_2011.tgz": tgz}, c["downloads"])
    with pytest.raises(DataSourceError, match=rf"1 image\(s\) listed in .*images\.txt are missing: .*{missing}"):
        _prepare_cub(c, tmp_path / "out")
    _no_partial_output(tmp_path)


@pytest.mark.parametrize("workers", [1, 2])
def test_cub_corrupt_image(tmp_path, workers):
    bad = fx.CUB_IMAGES[5].rel
    jpeg = fx.cub_jpegs()[bad]
    tgz = fx.build_cub_archive(tmp_path / "mirror" / "CUB_200_2011.tgz", replace={bad: jpeg[: len(jpeg) // 3]})
    c = {"downloads": tmp_path / "dl", "captions": _caption_archive(tmp_path / "c.tar.gz", "cub")}
    c["md5s"] = _download("cub", {"CUB_200_2011.tgz": tgz}, c["downloads"])
    with pytest.raises(DataSourceError, match=rf"{bad}: cannot read image"):
        _prepare_cub(c, tmp_path / "out", workers=workers)
    _no_partial_output(tmp_path)


@pytest.mark.parametrize(
    "content, reason",
    [
        (None, "caption file missing"),
        (b"", "caption file is empty"),
        (b"\n  \n...\n", "caption file is empty"),
        (b"one caption only\n", "caption file has 1 captions, expected 10"),
    ],
)
def test_cub_caption_problem_named_or_skipped(cub, content, reason):
    bad = fx.CUB_IMAGES[6]  # a test-split image
    caps = fx.cub_captions()
    caps[tuple(bad.rel[:-4].split("/"))] = content
    archive = _caption_archive(cub["tmp"] / "bad" / "cvpr2016_cub.tar.gz", "cub", caps)
    caption_file = f"text_c10/{bad.rel[:-4]}.txt"
    with pytest.raises(DataSourceError, match=rf"{caption_file}: {reason} \(image {bad.rel}\).*skip_missing_captions"):
        _prepare_cub(cub, cub["tmp"] / "out", captions=archive)
    _no_partial_output(cub["tmp"])

    scale = load_scale("smoke")
    scale.data.skip_missing_captions = True
    out = _prepare_cub(cub, cub["tmp"] / "out", scale=scale, captions=archive)
    data = PreparedData(out)
    assert data.manifest["skipped_count"] == 1
    assert data.manifest["skipped"] == [{"key": bad.rel, "reason": reason, "caption_file": caption_file}]
    assert data.manifest["splits"]["test"]["count"] == 2 and bad.rel not in data.split("test").keys
    assert data.manifest["splits"]["train"]["count"] + data.manifest["splits"]["val"]["count"] == 6


def test_cub_non_utf8_caption(cub):
    bad = fx.CUB_IMAGES[2]
    caps = fx.cub_captions()
    caps[tuple(bad.rel[:-4].split("/"))] = fx.caption_file(bad.rel).replace(b"red body", b"r\xe9d \xff body")
    archive = _caption_archive(cub["tmp"] / "bad" / "cvpr2016_cub.tar.gz", "cub", caps)
    scale = load_scale("smoke")
    scale.data.skip_missing_captions = True  # not a missing caption: still an error
    with pytest.raises(DataSourceError, match=rf"text_c10/{bad.rel[:-4]}\.txt: caption file is not valid UTF-8"):
        _prepare_cub(cub, cub["tmp"] / "out", scale=scale, captions=archive)
    _no_partial_output(cub["tmp"])


def test_cub_truncated_archive(tmp_path):
    tgz = fx.build_cub_archive(tmp_path / "mirror" / "full.tgz")
    cut = tmp_path / "mirror" / "CUB_200_2011.tgz"
    cut.write_bytes(tgz.read_bytes()[: tgz.stat().st_size * 2 // 3])
    downloads = tmp_path / "dl"
    with pytest.raises(
        DataSourceError, match=r"CUB_200_2011\.tgz: archive is truncated or corrupt.*nothing was extracted"
    ):
        _download("cub", {"CUB_200_2011.tgz": cut}, downloads)
    assert sorted(p.name for p in downloads.iterdir()) == ["CUB_200_2011.tgz", "extracted"]
    assert list((downloads / "extracted").iterdir()) == []


@pytest.mark.parametrize("name", ["../../escape.txt", "/tmp/csfgan-test-abs.txt", "CUB_200_2011/../../up.txt"])
def test_cub_archive_with_unsafe_member(tmp_path, name):
    evil = tarfile.TarInfo(name)
    evil.size = 1
    tgz = fx.build_cub_archive(tmp_path / "mirror" / "CUB_200_2011.tgz", extra=[evil])
    downloads = tmp_path / "dl"
    with pytest.raises(DataSourceError, match=rf"member '{name}' .* refusing to extract"):
        _download("cub", {"CUB_200_2011.tgz": tgz}, downloads)
    assert list((downloads / "extracted").iterdir()) == []
    assert not Path("/tmp/csfgan-test-abs.txt").exists() and not (tmp_path / "escape.txt").exists()


def test_wrong_caption_archive_for_dataset(cub):
    flowers_captions = _caption_archive(cub["tmp"] / "f" / "cvpr2016_flowers.tar.gz", "oxford102")
    with pytest.raises(DataSourceError, match=r"split files name classes \['class_00001'.*cvpr2016_cub\.tar\.gz"):
        _prepare_cub(cub, cub["tmp"] / "out", captions=flowers_captions)


# ------------------------------------------------------------------ Oxford-102


def _prepare_flowers(f, out: Path, scale=None, captions=None, workers=1):
    return prepare_oxford102(
        out,
        scale or load_scale("smoke"),
        f["downloads"],
        captions or f["captions"],
        workers,
        md5s=f["md5s"],
        progress=False,
    )


def test_oxford102_prepare(flowers):
    d = flowers["downloads"]
    assert sorted(p.name for p in d.iterdir()) == ["102flowers.tgz", "extracted", "imagelabels.mat", "setid.mat"]
    assert (d / "extracted" / "102flowers" / "jpg" / "image_00008.jpg").is_file()
    out = _prepare_flowers(flowers, flowers["tmp"] / "prepared" / "oxford102", workers=2)
    data = PreparedData(out)
    m = data.manifest
    train_imgs = [fl for fl in fx.FLOWER_IMAGES if fl.label != 4]  # classes 1-3
    test_imgs = [fl for fl in fx.FLOWER_IMAGES if fl.label == 4]
    assert [fl.index for fl in train_imgs] == [1, 2, 4, 5, 7] and [fl.index for fl in test_imgs] == [3, 6, 8]
    val_keys = set(data.split("val").keys)
    train_imgs, val_imgs = ([fl for fl in train_imgs if fx.flower_key(fl) not in val_keys],
                            [fl for fl in train_imgs if fx.flower_key(fl) in val_keys])
    # One image of each train class with two or more goes to val; a class with one keeps it for training.
    per_class = {c: sum(fl.label == c for fl in train_imgs + val_imgs) for c in (1, 2, 3)}
    assert sorted(fl.label for fl in val_imgs) == sorted(c for c, n in per_class.items() if n >= 2)
    assert m["split"]["counts"] == {"train": 5 - len(val_imgs), "val": len(val_imgs), "test": 3}
    assert m["split"]["paper_counts"] == {
        "train": 7034,
        "test": 1155,
    }
    assert (
        m["split"]["train_classes"] == fx.FLOWER_TRAIN_CLASSES and m["split"]["test_classes"] == fx.FLOWER_TEST_CLASSES
    )
    assert m["official_image_split_sizes"] == {"trnid": 3, "valid": 2, "tstid": 3}
    assert m["sources"] == {**flowers["md5s"], "cvpr2016_flowers.tar.gz": fx.md5(flowers["captions"])}
    assert m["class_names"] == ["class_00001", "class_00002", "class_00003", "class_00004"]
    jpegs = fx.flower_jpegs()
    for name, images in (("train", train_imgs), ("val", val_imgs), ("test", test_imgs)):
        split = data.split(name)
        assert split.keys == [fx.flower_key(fl) for fl in images]
        assert split.class_ids.tolist() == [fl.label - 1 for fl in images]
        assert split.captions == [fx.caption_lines(fx.flower_key(fl)) for fl in images]
        for i, fl in enumerate(images):
            np.testing.assert_array_equal(np.asarray(split.images[i]), _expected(jpegs[fx.flower_key(fl)], None))


def test_oxford102_missing_image(tmp_path):
    files = fx.build_flowers(tmp_path / "mirror", drop=("jpg/image_00004.jpg",))
    f = {"downloads": tmp_path / "dl", "captions": _caption_archive(tmp_path / "c.tar.gz", "oxford102")}
    f["md5s"] = _download("oxford102", files, f["downloads"])
    with pytest.raises(
        DataSourceError, match=r"imagelabels\.mat \(images 1\.\.8\) are missing: .*jpg/image_00004\.jpg"
    ):
        _prepare_flowers(f, tmp_path / "out")
    _no_partial_output(tmp_path)


def test_oxford102_inconsistent_setid(tmp_path):
    files = fx.build_flowers(tmp_path / "mirror", setid={"trnid": [1, 2], "valid": [4, 5], "tstid": [6, 7, 8]})
    f = {"downloads": tmp_path / "dl", "captions": _caption_archive(tmp_path / "c.tar.gz", "oxford102")}
    f["md5s"] = _download("oxford102", files, f["downloads"])
    with pytest.raises(DataSourceError, match=r"setid\.mat: trnid/valid/tstid do not partition images 1\.\.8"):
        _prepare_flowers(f, tmp_path / "out")


def test_oxford102_caption_missing_skipped(flowers):
    caps = fx.flower_captions()
    caps[("class_00002", "image_00007")] = None
    archive = _caption_archive(flowers["tmp"] / "bad" / "cvpr2016_flowers.tar.gz", "oxford102", caps)
    with pytest.raises(DataSourceError, match=r"text_c10/class_00002/image_00007\.txt: caption file missing"):
        _prepare_flowers(flowers, flowers["tmp"] / "out", captions=archive)
    scale = load_scale("smoke")
    scale.data.skip_missing_captions = True
    data = PreparedData(_prepare_flowers(flowers, flowers["tmp"] / "out", scale=scale, captions=archive))
    assert data.manifest["skipped_count"] == 1 and data.manifest["skipped"][0]["key"] == "jpg/image_00007.jpg"
    assert data.manifest["splits"]["train"]["count"] + data.manifest["splits"]["val"]["count"] == 4
    keys = [json.loads((data.root / split / "keys.json").read_text()) for split in ("train", "val")]
    assert sorted(keys[0] + keys[1]) == [
        "jpg/image_00001.jpg",
        "jpg/image_00002.jpg",
        "jpg/image_00004.jpg",
        "jpg/image_00005.jpg",
    ]


def test_val_holds_out_a_seeded_subset_of_each_train_class():
    from csfgan.data.reed_captions import hold_out_val

    items = [(c, i) for c in range(5) for i in range(10)] + [(9, 0)]  # class 9 has a single image
    train, val = hold_out_val(items, lambda it: it[0], per_class=3, seed=0)
    assert sorted(train + val) == sorted(items) and not set(train) & set(val)
    assert [sum(c == k for c, _ in val) for k in (0, 1, 2, 3, 4, 9)] == [3, 3, 3, 3, 3, 0]
    assert train == sorted(train) and val == sorted(val)  # input order kept
    assert hold_out_val(items, lambda it: it[0], 3, 0) == (train, val)
    assert hold_out_val(items, lambda it: it[0], 3, 1)[1] != val

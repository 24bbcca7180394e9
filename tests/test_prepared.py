"""The prepared format, its atomic writer, the loader and the masks."""

import json

import numpy as np
import pytest
import torch

from csfgan.data.dataset import InpaintingDataset, seeded_caption_choice
from csfgan.data.masks import center_box, center_mask, irregular_mask, mask_for
from csfgan.data.prepared import PreparedData, PreparedDataError, PreparedWriter, check_existing
from csfgan.data.text import PAD_ID, UNK_ID, CaptionError, Vocabulary, tokenize
from tests.helpers import write_tiny_prepared


def test_tokenize_like_attngan():
    words = ["this", "bird", "s", "wings", "are", "red", "and", "black"]
    assert tokenize("This bird's wings are RED, and-black!") == words


def test_vocab_from_train_only(tiny_prepared):
    data = PreparedData(tiny_prepared)
    assert "purple" not in data.vocab.index  # only test captions say purple
    assert "red" in data.vocab.index
    test = data.split("test")
    purple_pos = 4  # "this bird has a purple ..."
    assert (test.tokens[:, :, purple_pos] == UNK_ID).all()


def test_encode_truncates_and_strict_refuses():
    vocab = Vocabulary.build(["a red bird"])
    long = " ".join(["red"] * 25)
    assert len(vocab.encode(long, 18)) == 18
    with pytest.raises(CaptionError, match="25 words.*at most 18"):
        vocab.encode(long, 18, strict=True)
    with pytest.raises(CaptionError, match="no words"):
        vocab.encode("  !! ", 18, strict=True)
    with pytest.raises(CaptionError, match="no word of 'zebra stripes' is in the vocabulary"):
        vocab.encode("zebra stripes", 18, strict=True)


def test_manifest_and_arrays(tiny_prepared):
    data = PreparedData(tiny_prepared)
    m = data.manifest
    assert m["splits"]["train"]["count"] == 6 and m["splits"]["test"]["count"] == 4
    assert m["splits"]["train"]["classes"] == [0, 1, 2] and m["splits"]["test"]["classes"] == [3, 4, 5]
    train = data.split("train")
    assert isinstance(train.images, np.memmap) and train.images.dtype == np.uint8
    assert train.images.shape == (6, 16, 16, 3)
    assert train.tokens.shape == (6, 3, 18) and train.lengths.shape == (6, 3)
    assert (train.tokens[:, :, 8:] == PAD_ID).all()
    assert not list(tiny_prepared.parent.glob(".*partial*"))


def test_interrupted_prepare_leaves_nothing(tmp_path):
    out = tmp_path / "x"
    with pytest.raises(RuntimeError, match="boom"):
        with PreparedWriter(out, dataset="x", resolution=16, config={}, max_words=18) as w:
            w.split("train", 2)
            raise RuntimeError("boom")
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_unwritten_records_refused(tmp_path):
    with pytest.raises(RuntimeError, match="1 records never written"):
        with PreparedWriter(tmp_path / "x", dataset="x", resolution=16, config={}, max_words=18) as w:
            s = w.split("train", 2)
            s.put(0, np.zeros((16, 16, 3), np.uint8), ["a red bird"], 0, "k")
            w.finish()
    assert list(tmp_path.iterdir()) == []


def test_existing_with_other_config_is_an_error(tiny_prepared):
    assert check_existing(tiny_prepared, {"tiny": 1}) is True
    with pytest.raises(PreparedDataError, match=r"different config \(differs in: tiny\).*delete"):
        check_existing(tiny_prepared, {"tiny": 2})


def test_foreign_directory_is_an_error(tmp_path):
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "notes.txt").write_text("mine")
    with pytest.raises(PreparedDataError, match="no manifest.json"):
        check_existing(tmp_path / "junk", {})
    with pytest.raises(PreparedDataError, match="csfgan prepare"):
        PreparedData(tmp_path / "junk")


def test_unwritable_output(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(PreparedDataError, match="cannot write to .*file"):
        with PreparedWriter(blocker / "out", dataset="x", resolution=16, config={}, max_words=18):
            pass


def test_dataset_item_shapes_and_ranges(tiny_prepared):
    ds = InpaintingDataset(tiny_prepared, "train")
    item = ds[3]
    assert item["image"].shape == (3, 16, 16) and item["image"].dtype == torch.float32
    assert -1.0 <= item["image"].min() and item["image"].max() <= 1.0
    assert item["mask"].shape == (1, 16, 16) and item["mask"].sum() == 64  # 8x8 hole
    assert item["tokens"].shape == (18,) and item["tokens"].dtype == torch.int64
    assert item["length"] == 8 and 0 <= item["caption_index"] < 3
    raw = PreparedData(tiny_prepared).split("train").images[3]
    assert torch.equal(((item["image"] + 1) * 127.5).round().byte().permute(1, 2, 0), torch.from_numpy(np.array(raw)))


def test_batch_matches_items_in_order(tiny_prepared):
    ds = InpaintingDataset(tiny_prepared, "test", captions="seeded", seed=7)
    batch = ds.batch(np.array([3, 0, 2]))
    for row, i in enumerate([3, 0, 2]):
        item = ds[i]
        for key in ("image", "tokens", "caption_index", "mask"):
            assert torch.equal(batch[key][row], item[key])


def test_seeded_caption_choice_is_fixed_and_skips_empty():
    lengths = np.array([[5, 0, 4], [0, 0, 3], [2, 2, 2]] * 50)
    a, b = seeded_caption_choice(lengths, 1), seeded_caption_choice(lengths, 1)
    assert np.array_equal(a, b)
    assert (lengths[np.arange(len(lengths)), a] > 0).all()
    assert set(a[1::3]) == {2} and set(a[2::3]) == {0, 1, 2}
    assert not np.array_equal(a, seeded_caption_choice(lengths, 2))


def test_center_mask_is_half_the_side():
    assert center_box(256) == (64, 192)
    m = center_mask(256)
    assert m.sum() == 128 * 128 and m[64:192, 64:192].all()


def test_irregular_masks_seeded_and_sized():
    a = irregular_mask(64, np.random.default_rng(3))
    b = irregular_mask(64, np.random.default_rng(3))
    assert np.array_equal(a, b)
    cover = [irregular_mask(64, np.random.default_rng(s)).mean() for s in range(20)]
    assert all(0.1 <= c <= 0.5 for c in cover), cover
    assert not np.array_equal(mask_for(0, 64, "irregular", 0.5, 0), mask_for(1, 64, "irregular", 0.5, 0))
    with pytest.raises(ValueError, match="unknown mask kind"):
        mask_for(0, 64, "star", 0.5, 0)


def test_rerun_is_byte_identical(tmp_path):
    a = write_tiny_prepared(tmp_path / "a")
    b = write_tiny_prepared(tmp_path / "b")
    for name in ("train/images.npy", "train/tokens.npy", "vocab.json", "test/lengths.npy"):
        assert (a / name).read_bytes() == (b / name).read_bytes()
    assert json.loads((a / "manifest.json").read_text()) == json.loads((b / "manifest.json").read_text())


def test_empty_output_directory_counts_as_absent(tmp_path):
    # Snakemake creates an output's parent folder before the job runs.
    (tmp_path / "tiny").mkdir()
    assert check_existing(tmp_path / "tiny", {"tiny": 1}) is False
    write_tiny_prepared(tmp_path / "tiny")
    assert check_existing(tmp_path / "tiny", {"tiny": 1}) is True


def test_training_augmentation_is_the_authors_flip_and_grayscale():
    """RandomHorizontalFlip and RandomGrayscale as torchvision computes them, drawn from the run's generator."""
    import torchvision.transforms.functional as TF

    from csfgan.data.dataset import augment

    image = torch.rand(64, 3, 8, 8) * 2 - 1
    out = augment(image, torch.Generator().manual_seed(0), flip=True, grayscale=0.3)
    flipped = gray = 0
    for x, y in zip(image, out, strict=True):
        for candidate in (x, x.flip(-1)):
            if torch.equal(y, candidate):
                flipped += candidate is not x
                break
            luma = TF.rgb_to_grayscale(candidate, num_output_channels=3)
            if torch.allclose(y, luma, atol=1e-6):
                gray += 1
                flipped += candidate is not x
                break
        else:
            raise AssertionError("an output is neither the image, its mirror, nor their gray versions")
    assert 16 < flipped < 48 and 5 < gray < 35  # about 32 and 19 of 64
    assert torch.equal(augment(image, torch.Generator().manual_seed(0), flip=False, grayscale=0.0), image)
    # The same number of draws whatever the settings: the next batch does not depend on them.
    a, b = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    augment(image, a, flip=True, grayscale=0.5)
    augment(image, b, flip=False, grayscale=0.0)
    assert torch.equal(torch.rand(3, generator=a), torch.rand(3, generator=b))


def test_a_preparation_without_its_manifest_is_redone_not_refused(tmp_path):
    """Snakemake deletes a job's declared output (manifest.json) before re-running `prepare`; the folder
    left behind is ours, so it is prepared again (same bytes); one with anything else in it is refused."""
    out = write_tiny_prepared(tmp_path / "tiny")
    before = json.loads((out / "manifest.json").read_text())
    (out / "manifest.json").unlink()
    assert check_existing(out, {"tiny": 1}) is False
    write_tiny_prepared(out)
    assert json.loads((out / "manifest.json").read_text()) == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tiny")]  # no temporaries left

    (out / "manifest.json").unlink()
    (out / "train" / "notes.txt").write_text("mine")
    with pytest.raises(PreparedDataError, match="no manifest.json"):
        check_existing(out, {"tiny": 1})
    assert (out / "train" / "notes.txt").read_text() == "mine" and (out / "train" / "images.npy").is_file()

"""Evaluation of a finished run, and inpainting a user's image, with their bad inputs."""

import json

import numpy as np
import pytest
from PIL import Image

from csfgan.checkpoint import CheckpointError
from csfgan.data.prepared import PreparedData
from csfgan.data.text import CaptionError
from csfgan.errors import UserError
from csfgan.evaluate import evaluate
from csfgan.inpaint import inpaint_file
from csfgan.metrics.attributes import caption_colours
from csfgan.train import train


@pytest.fixture(scope="module")
def finished_run(smoke_pipeline, tmp_path_factory):
    run = tmp_path_factory.mktemp("run") / "full"
    train(smoke_pipeline["data"], smoke_pipeline["text_encoder"], "full", "smoke", run, progress=False)
    return run


@pytest.fixture
def nets(smoke_metric_nets):
    """evaluate()'s metric-network arguments."""
    return dict(smoke_metric_nets)


def test_evaluate_writes_metrics_images_and_captions(finished_run, nets):
    m = evaluate(finished_run, progress=False, **nets)
    on_disk = json.loads((finished_run / "metrics.json").read_text())
    assert on_disk["fid"] == pytest.approx(m["fid"])
    for key in ("fid", "kid_mean", "psnr", "ssim", "psnr_hole", "ssim_hole", "r_precision",
                "attribute_accuracy", "counterfactual_accuracy"):
        assert np.isfinite(m[key]), key
    # No Inception weights here: FID on the feature network, named with how it was trained.
    assert m["fid_features"] == "species-classifier"
    assert m["fid_feature_net"]["description"] == "species-classifier (synth-birds train split, seed 0)"
    assert m["fid_feature_net"]["used_in_training_losses"] is False
    assert m["fid_details"]["feature_weights_sha256"] != ""
    assert m["r_precision_encoder"]["seed"] == 1 and m["r_precision_encoder"]["run_text_encoder_seed"] == 0
    assert m["test_images"] == 100 and m["step"] == 4
    assert m["inference_precision"] == "fp32"  # the smoke scale leaves eval.amp off
    assert m["training_numerics"]["device"] == "cpu"  # copied from the run: the tables say TF32 on a GPU
    assert 0 <= m["attribute_accuracy"] <= 1 and m["attribute_mentions"] > 0
    images = sorted((finished_run / "eval" / "images").glob("*.png"))
    assert len(images) == 100 and Image.open(images[0]).size == (32, 32)
    captions = json.loads((finished_run / "eval" / "captions.json").read_text())
    assert len(captions) == 100 and all(c["caption"] for c in captions)
    again = evaluate(finished_run, progress=False, save_images=False, **nets)
    assert again["fid"] == pytest.approx(m["fid"]) and again["psnr"] == m["psnr"]  # seeded: reproducible


def test_eval_amp_runs_the_generator_in_bf16(finished_run):
    """eval.amp reaches the generator: the hole changes by bf16 rounding, the known pixels not at all."""
    import torch

    from csfgan.data.dataset import InpaintingDataset
    from csfgan.data.prepared import PreparedData
    from csfgan.evaluate import InpaintingModel

    model = InpaintingModel(finished_run / "final.pt")
    test = InpaintingDataset(PreparedData(model.run["data"]), "test", captions="seeded", seed=0)
    b = test.batch(np.arange(8))
    outputs = {}
    for amp in (False, True):
        model.cfg.eval.amp = amp
        torch.manual_seed(0)
        outputs[amp] = model.inpaint(b["image"], b["mask"], b["tokens"], b["length"])[0]
    known = b["mask"].expand_as(b["image"]) == 0
    assert torch.equal(outputs[True][known], outputs[False][known])
    assert torch.equal(outputs[True][known], b["image"][known])
    diff = (outputs[True] - outputs[False])[~known].abs()
    assert 0 < diff.max() < 0.05


def test_failed_evaluate_keeps_earlier_results(finished_run, nets, monkeypatch):
    evaluate(finished_run, progress=False, **nets)
    before = (finished_run / "metrics.json").read_bytes()
    first_image = (finished_run / "eval" / "images" / "00000.png").read_bytes()

    def broken(*args, **kwargs):
        raise RuntimeError("feature extractor exploded")

    monkeypatch.setattr("csfgan.measure.fid_kid", broken)
    with pytest.raises(RuntimeError, match="exploded"):
        evaluate(finished_run, progress=False, **nets)
    assert (finished_run / "metrics.json").read_bytes() == before
    assert (finished_run / "eval" / "images" / "00000.png").read_bytes() == first_image
    assert not [p for p in finished_run.iterdir() if p.name.startswith(".eval")]


def test_metric_networks_are_required_and_never_the_runs_own(finished_run, nets, smoke_pipeline, tmp_path):
    from csfgan.evaluate import MetricNetworkError
    from csfgan.metrics.feature_net import FeatureNetError

    out = tmp_path / "m.json"
    with pytest.raises(MetricNetworkError, match="needs --feature-net"):
        evaluate(finished_run, out, eval_text_encoder=nets["eval_text_encoder"], progress=False)
    with pytest.raises(MetricNetworkError, match="needs --eval-text-encoder"):
        evaluate(finished_run, out, feature_net=nets["feature_net"], progress=False)
    with pytest.raises(MetricNetworkError, match="is the text encoder run .* was trained with"):
        evaluate(finished_run, out, feature_net=nets["feature_net"], eval_text_encoder=smoke_pipeline["text_encoder"],
                 progress=False)
    # A copy of the run's encoder under another name is caught by its weights, not its path.
    copy = tmp_path / "copy.pt"
    copy.write_bytes(smoke_pipeline["text_encoder"].read_bytes())
    with pytest.raises(MetricNetworkError, match="was trained with"):
        evaluate(finished_run, out, feature_net=nets["feature_net"], eval_text_encoder=copy, progress=False)
    with pytest.raises(FeatureNetError, match="not a feature-network checkpoint"):
        evaluate(finished_run, out, feature_net=nets["eval_text_encoder"], eval_text_encoder=nets["eval_text_encoder"],
                 progress=False)
    assert not out.exists()


def test_missing_and_corrupt_checkpoints(tmp_path, finished_run):
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        evaluate(tmp_path, progress=False)
    (tmp_path / "final.pt").write_bytes((finished_run / "final.pt").read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        evaluate(tmp_path, progress=False)


def test_caption_colours_grammar():
    caps = caption_colours("synth-birds", "this bird has a red crown, the wings are mostly blue and a white belly")
    assert [(p, c) for p, c, _ in caps] == [("crown", "red"), ("wing", "blue"), ("belly", "white")]


def test_inpaint_user_image_any_size(finished_run, tmp_path):
    rng = np.random.default_rng(0)
    picture = rng.integers(0, 256, (50, 70, 3), dtype=np.uint8)
    Image.fromarray(picture).save(tmp_path / "bird.jpg", quality=95)
    out = tmp_path / "out.png"
    inpaint_file(finished_run / "final.pt", tmp_path / "bird.jpg", "this bird has red wings", out)
    result = np.asarray(Image.open(out))
    source = np.asarray(Image.open(tmp_path / "bird.jpg"))
    assert result.shape == (50, 70, 3)
    # Outside the centre hole the user's pixels are kept exactly.
    assert np.array_equal(result[:5], source[:5]) and np.array_equal(result[:, :10], source[:, :10])

    mask = np.zeros((50, 70), np.uint8)
    mask[10:20, 30:50] = 255
    Image.fromarray(mask).save(tmp_path / "mask.png")
    inpaint_file(finished_run / "final.pt", tmp_path / "bird.jpg", "a red bird", out, mask=tmp_path / "mask.png")
    result = np.asarray(Image.open(out))
    assert np.array_equal(result[30:], source[30:])


def test_inpaint_bad_inputs(finished_run, tmp_path):
    (tmp_path / "notes.txt").write_text("not an image")
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(tmp_path / "ok.png")
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(tmp_path / "small_mask.png")
    ckpt = finished_run / "final.pt"
    with pytest.raises(UserError, match="notes.txt: not a readable image"):
        inpaint_file(ckpt, tmp_path / "notes.txt", "a red bird", tmp_path / "o.png")
    with pytest.raises(CaptionError, match="no word of 'zzz qqq' is in the vocabulary"):
        inpaint_file(ckpt, tmp_path / "ok.png", "zzz qqq", tmp_path / "o.png")
    with pytest.raises(UserError, match="mask .*small_mask.png is 10x10 but the image is 40x40"):
        inpaint_file(ckpt, tmp_path / "ok.png", "a red bird", tmp_path / "o.png", mask=tmp_path / "small_mask.png")
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        inpaint_file(tmp_path / "nope.pt", tmp_path / "ok.png", "a red bird", tmp_path / "o.png")
    assert not (tmp_path / "o.png").exists()


def test_evaluate_val_split_writes_beside_the_test_results(finished_run, nets):
    evaluate(finished_run, progress=False, **nets)
    test_metrics = (finished_run / "metrics.json").read_bytes()
    m = evaluate(finished_run, split="val", progress=False, **nets)
    assert m["split"] == "val" and m["val_images"] == len(PreparedData(_data(finished_run)).split("val"))
    assert json.loads((finished_run / "metrics_val.json").read_text())["split"] == "val"
    assert (finished_run / "eval_val" / "images").is_dir() and (finished_run / "eval" / "images").is_dir()
    assert (finished_run / "metrics.json").read_bytes() == test_metrics  # the test results untouched
    with pytest.raises(UserError, match="--split 'train'"):
        evaluate(finished_run, split="train", progress=False, **nets)


def _data(run):
    return json.loads((run / "config.json").read_text())["data"]


def test_inpaint_rgba_transparent_pixels_are_the_hole(finished_run, tmp_path):
    rng = np.random.default_rng(1)
    rgba = rng.integers(0, 256, (40, 56, 4), dtype=np.uint8)
    rgba[..., 3] = 255
    rgba[5:15, 8:20, 3] = 0  # a transparent patch off the centre
    Image.fromarray(rgba, "RGBA").save(tmp_path / "cut.png")
    out = tmp_path / "out.png"
    inpaint_file(finished_run / "final.pt", tmp_path / "cut.png", "this bird has red wings", out)
    result = np.asarray(Image.open(out))
    outside = np.ones((40, 56), bool)
    outside[5:15, 8:20] = False
    assert result.shape == (40, 56, 3)
    assert np.array_equal(result[outside], rgba[..., :3][outside])  # every opaque pixel kept, centre too
    assert not np.array_equal(result[5:15, 8:20], rgba[5:15, 8:20, :3])  # the hole was filled


def test_inpaint_refuses_overwriting_its_input_and_names_an_unwritable_output(finished_run, tmp_path, monkeypatch):
    import errno

    import csfgan.io
    from csfgan.io import OutputError

    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(tmp_path / "in.png")
    before = (tmp_path / "in.png").read_bytes()
    with pytest.raises(UserError, match="is an input file"):
        inpaint_file(finished_run / "final.pt", tmp_path / "in.png", "a red bird", tmp_path / "." / "in.png")
    assert (tmp_path / "in.png").read_bytes() == before

    def read_only(path):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(csfgan.io, "atomic_path", read_only)
    with pytest.raises(OutputError, match=rf"cannot write {tmp_path / 'o.png'}: Read-only file system"):
        inpaint_file(finished_run / "final.pt", tmp_path / "in.png", "a red bird", tmp_path / "o.png")


def test_inpaint_warns_on_a_mostly_unknown_caption(finished_run, tmp_path, capsys):
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(tmp_path / "in.png")
    inpaint_file(finished_run / "final.pt", tmp_path / "in.png", "zorp red glimmerwing", tmp_path / "o.png")
    err = capsys.readouterr().err
    assert "2 of 3 words" in err and "glimmerwing, zorp" in err
    inpaint_file(finished_run / "final.pt", tmp_path / "in.png", "this bird has red wings zorp", tmp_path / "o.png")
    assert capsys.readouterr().err == ""  # one unknown word of six: no warning


def test_per_image_metrics_are_saved_with_the_evaluation(finished_run, nets):
    from csfgan.metrics import per_image

    m = evaluate(finished_run, progress=False, save_images=False, **nets)
    arrays = per_image.load(finished_run)
    assert len(arrays["keys"]) == m["test_images"] == 100
    for key in per_image.MEAN_METRICS:
        assert arrays[key].mean() == pytest.approx(m[key], rel=1e-12)
    for key in per_image.RATIO_METRICS:
        hits, checks = per_image.per_image_values(arrays, key)
        assert hits.sum() / checks.sum() == pytest.approx(m[key], rel=1e-12)
    assert len(arrays["attribute_correct"]) == m["attribute_mentions"]
    assert len(arrays["counterfactual_correct"]) == m["counterfactual_edits"]


@pytest.mark.slow
def test_no_text_control_trains_and_ignores_the_caption(smoke_pipeline, tmp_path, nets):
    """The no-text variant trains at the smoke scale; its inpainting is the same whatever the caption."""
    import torch

    from csfgan.data.dataset import InpaintingDataset
    from csfgan.data.prepared import PreparedData
    from csfgan.data.text import encode_captions
    from csfgan.evaluate import InpaintingModel

    run = tmp_path / "no-text"
    train(smoke_pipeline["data"], smoke_pipeline["text_encoder"], "no-text", "smoke", run, progress=False)
    model = InpaintingModel(run / "final.pt")
    assert model.cfg.model.text_input is False
    data = PreparedData(model.run["data"])
    b = InpaintingDataset(data, "test", captions="seeded", seed=0).batch(np.arange(8))

    def fills():
        """The batch inpainted under two captions that name different colours, same noise."""
        out = []
        for caption in ("this bird has red wings and a white belly", "this bird has blue wings and a black belly"):
            tokens, lengths = encode_captions([[caption]] * 8, model.vocab, data.max_words)
            torch.manual_seed(0)
            out.append(model.inpaint(b["image"], b["mask"], torch.from_numpy(tokens[:, 0]).long(),
                                     torch.from_numpy(lengths[:, 0]).long())[0])
        return out

    outputs = fills()
    assert torch.equal(outputs[0], outputs[1])
    # The full model, same checkpoint with text input switched back on, does read the caption.
    model.cfg.model.text_input = True
    texted = fills()
    assert not torch.equal(texted[0], texted[1])
    m = evaluate(run, progress=False, save_images=False, **nets)
    assert np.isfinite(m["attribute_accuracy"]) and np.isfinite(m["counterfactual_accuracy"])

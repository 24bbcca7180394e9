"""The exportable protocol (issue 24): export, score a folder of outputs, the classical peers, the round trip
through our own generator, the irregular protocol's mask-area bins, and Table 1's external rows."""

from __future__ import annotations

import hashlib
import json
import shutil

import numpy as np
import pytest
from PIL import Image

from csfgan.cli import main
from csfgan.protocol.folder import read_protocol
from csfgan.protocol.spec import HOLE_FILL, ProtocolError

METRICS = ("fid", "kid_mean", "kid_std", "psnr", "ssim", "psnr_hole", "ssim_hole", "r_precision",
           "attribute_accuracy", "counterfactual_accuracy", "counterfactual_psnr_hole")


@pytest.fixture(scope="module")
def finished_run(smoke_pipeline, tmp_path_factory):
    from csfgan.train import train

    run = tmp_path_factory.mktemp("run") / "full"
    train(smoke_pipeline["data"], smoke_pipeline["text_encoder"], "full", "smoke", run, progress=False)
    return run


@pytest.fixture(scope="module")
def centre(smoke_pipeline, tmp_path_factory):
    """The centre protocol of the smoke data, exported with its ground truth, as our runs evaluate it."""
    out = tmp_path_factory.mktemp("protocol") / "center"
    assert main(["protocol", "export", "--dataset", str(smoke_pipeline["data"]), "--split", "test", "--out", str(out),
                 "--scale", "smoke", "--ground-truth"]) == 0
    return out


def nets_args(nets) -> list[str]:
    return ["--feature-net", str(nets["feature_net"]), "--eval-text-encoder", str(nets["eval_text_encoder"])]


def test_export_writes_every_item_with_its_hashes(centre, smoke_pipeline, tmp_path):
    manifest = json.loads((centre / "manifest.json").read_text())
    assert (manifest["protocol"], manifest["protocol_version"], manifest["items"]) == ("csfgan-center", 1, 100)
    assert manifest["ground_truth"] is True and manifest["caption_seed"] == 1234 and manifest["hole_fraction"] == 0.5
    rows = manifest["rows"]
    assert [r["id"] for r in rows] == [f"{i:05d}" for i in range(100)]
    protocol, _ = read_protocol(centre)
    real = protocol.real()
    for row in rows[:10]:
        for kind in ("input", "mask", "ground_truth"):
            assert hashlib.sha256((centre / row[kind]).read_bytes()).hexdigest() == row[f"{kind}_sha256"]
        image = np.asarray(Image.open(centre / row["input"]))
        hole = np.asarray(Image.open(centre / row["mask"])) == 255
        assert image.shape == (32, 32, 3) and hole.sum() == 16 * 16 and row["hole_area"] == 0.25
        assert (image[hole] == HOLE_FILL).all() and np.array_equal(image[~hole], real[row["index"]][~hole])
        assert np.array_equal(np.asarray(Image.open(centre / row["ground_truth"])), real[row["index"]])
        assert row["caption"] == protocol.prepared.captions[row["index"]][row["caption_index"]]
    # The counterfactual captions, each with what it asks for, name parts and colours of the renderer.
    assert manifest["counterfactuals"] and manifest["counterfactual_items"] == len(manifest["counterfactuals"])
    edit = manifest["counterfactuals"][0]
    assert edit["caption"] != rows[int(edit["item"])]["caption"]
    assert all(a["colour"] in edit["caption"].split() and a["part"] for a in edit["asks"])
    assert "csfgan score --protocol" in (centre / "README.md").read_text()

    # A damaged file, an edited caption, another folder's contents: refused, naming what.
    copy = tmp_path / "copy"
    shutil.copytree(centre, copy)
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(copy / rows[3]["mask"])
    with pytest.raises(ProtocolError, match="masks/00003.png differs from its SHA-256"):
        read_protocol(copy)
    shutil.rmtree(copy)
    shutil.copytree(centre, copy)
    edited = json.loads((copy / "manifest.json").read_text())
    edited["rows"][5]["caption"] = "this bird is entirely purple"
    (copy / "manifest.json").write_text(json.dumps(edited))
    with pytest.raises(ProtocolError, match="item 00005's caption; export it again"):
        read_protocol(copy)
    other = tmp_path / "notes"
    other.mkdir()
    (other / "mine.txt").write_text("keep me")
    assert main(["protocol", "export", "--dataset", str(smoke_pipeline["data"]), "--out", str(other)]) == 2
    assert (other / "mine.txt").read_text() == "keep me"


def test_round_trip_gives_evaluates_numbers(finished_run, centre, smoke_metric_nets, tmp_path):
    """Our run's outputs written through the public path (csfgan predict reads only the folder) and scored
    give exactly the numbers evaluate gives for the run: tolerance 0, every metric and per-image array."""
    from csfgan.evaluate import evaluate

    ours = evaluate(finished_run, progress=False, **smoke_metric_nets)
    predictions, out = tmp_path / "pred", tmp_path / "scored"
    assert main(["predict", "--checkpoint", str(finished_run / "final.pt"), "--protocol", str(centre),
                 "--out", str(predictions)]) == 0
    edits = json.loads((centre / "manifest.json").read_text())["counterfactuals"]
    assert sorted(p.name for p in (predictions / "counterfactual").glob("*.png")) == sorted(
        e["prediction"].split("/")[1] for e in edits)
    assert main(["score", "--protocol", str(centre), "--predictions", str(predictions), "--name", "csfgan-full",
                 "--out", str(out), *nets_args(smoke_metric_nets)]) == 0
    scored = json.loads((out / "metrics.json").read_text())
    for key in METRICS:
        assert scored[key] == ours[key], key
    assert scored["fid_features"] == ours["fid_features"] == "species-classifier"
    assert scored["fid_details"]["feature_weights_sha256"] == ours["fid_details"]["feature_weights_sha256"]
    a = np.load(finished_run / "eval" / "per_image.npz")
    b = np.load(out / "eval" / "per_image.npz")
    assert set(a.files) == set(b.files)
    for key in a.files:
        assert np.array_equal(a[key], b[key]), key
    # evaluate's saved images are the predicted ones, file for file.
    for i in (0, 42, 99):
        assert np.array_equal(np.asarray(Image.open(finished_run / "eval" / "images" / f"{i:05d}.png")),
                              np.asarray(Image.open(predictions / f"{i:05d}.png")))
    ci = scored["ci95"]
    assert ci["fid"]["resamples"] == 1000 and ci["fid"]["se"] > 0
    assert ci["psnr"]["low"] < ours["psnr"] < ci["psnr"]["high"]


def test_score_lists_every_bad_file_and_writes_nothing(centre, smoke_metric_nets, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    good = tmp_path / "good"
    assert main(["peer", "--method", "biharmonic", "--protocol", str(centre), "--out", str(good)]) == 0
    bad = tmp_path / "bad"
    shutil.copytree(good, bad)
    (bad / "00003.png").rename(bad / "00003.jpg")  # missing as PNG, and an extra file
    shutil.copy(bad / "00001.png", bad / "notes.png")
    Image.open(bad / "00005.png").resize((40, 40)).save(bad / "00005.png")
    pixels = np.asarray(Image.open(bad / "00007.png")).copy()
    pixels[0, 0] = 255 - pixels[0, 0]  # a known pixel, outside the centre hole
    Image.fromarray(pixels).save(bad / "00007.png")
    Image.open(bad / "00009.png").convert("L").save(bad / "00009.png")
    capsys.readouterr()
    assert main(["score", "--protocol", str(centre), "--predictions", str(bad), "--name", "broken",
                 *nets_args(smoke_metric_nets)]) == 2
    err = capsys.readouterr().err
    for text in ("missing (1): 00003.png (there is 00003.jpg", "extra (2): 00003.jpg; notes.png",
                 "mis-sized (1): 00005.png: 40x40, not 32x32", "known region edited (1): 00007.png: 1 pixels",
                 "wrong mode (1): 00009.png: mode L", "nothing was measured or written", "--composite"):
        assert text in err, (text, err)
    assert not (tmp_path / "results").exists()

    # A method that edits known pixels by design: scored with --composite, which says so.
    only = tmp_path / "only-known"
    shutil.copytree(good, only)
    Image.fromarray(pixels).save(only / "00007.png")
    assert main(["score", "--protocol", str(centre), "--predictions", str(only), "--name", "edits-known",
                 *nets_args(smoke_metric_nets)]) == 2
    assert not (tmp_path / "results").exists()
    assert main(["score", "--protocol", str(centre), "--predictions", str(only), "--name", "edits-known",
                 "--composite", *nets_args(smoke_metric_nets)]) == 0
    scored = json.loads((tmp_path / "results/external/synth-birds/edits-known/center/metrics.json").read_text())
    assert scored["composited_by_scorer"] is True and scored["composited_files"] == 1
    from csfgan.report.external import label

    assert "known pixels of 1 outputs pasted by the scorer" in label("edits-known", scored)


def test_peers_and_the_irregular_protocol_by_mask_area(smoke_pipeline, smoke_metric_nets, tmp_path):
    irregular = tmp_path / "irregular"
    assert main(["protocol", "export", "--dataset", str(smoke_pipeline["data"]), "--mask", "irregular",
                 "--out", str(irregular)]) == 0
    manifest = json.loads((irregular / "manifest.json").read_text())
    areas = [r["hole_area"] for r in manifest["rows"]]
    assert manifest["protocol"] == "csfgan-irregular" and manifest["mask_seed"] == 0 and len(set(areas)) > 10
    # Figure 9's masks: item i's mask is mask_for(i, ..., "irregular", ..., seed 0).
    from csfgan.data.masks import mask_for

    assert np.array_equal(np.asarray(Image.open(irregular / "masks/00004.png")) == 255,
                          mask_for(4, 32, "irregular", 0.5, 0) > 0.5)
    outputs = {}
    for method in ("biharmonic", "telea"):
        pred = tmp_path / method
        assert main(["peer", "--method", method, "--protocol", str(irregular), "--out", str(pred)]) == 0
        outputs[method] = np.asarray(Image.open(pred / "00004.png"))
        # Text-blind: the counterfactual output is the item's output.
        cf = manifest["counterfactuals"][0]
        assert np.array_equal(np.asarray(Image.open(pred / cf["prediction"])),
                              np.asarray(Image.open(pred / f"{cf['item']}.png")))
    hole = mask_for(4, 32, "irregular", 0.5, 0) > 0.5
    source = np.asarray(Image.open(irregular / "inputs/00004.png"))
    assert not np.array_equal(outputs["biharmonic"][hole], outputs["telea"][hole])
    for filled in outputs.values():
        assert np.array_equal(filled[~hole], source[~hole]) and (filled[hole] != HOLE_FILL).any()

    out = tmp_path / "scored"
    assert main(["score", "--protocol", str(irregular), "--predictions", str(tmp_path / "biharmonic"),
                 "--name", "biharmonic", "--out", str(out), *nets_args(smoke_metric_nets)]) == 0
    scored = json.loads((out / "metrics.json").read_text())
    bins = scored["area_bins"]
    assert sum(b["images"] for b in bins) == 100 and len(bins) >= 2
    arrays = np.load(out / "eval" / "per_image.npz")
    first = np.array([b["low"] <= a < b["high"] for a, b in ((a, bins[0]) for a in areas)])
    assert bins[0]["psnr_hole"] == pytest.approx(arrays["psnr_hole"][first].mean())
    assert all("fid" in b for b in bins if b["images"] >= 2)
    assert main(["bins", "--scores", str(out / "metrics.json"), "--out", str(tmp_path / "irregular")]) == 0
    table = (tmp_path / "irregular.md").read_text()
    assert f"| synth-birds | biharmonic | {bins[0]['bin']} | {bins[0]['images']} |" in table


def test_bad_names_and_unknown_peers(smoke_pipeline, tmp_path):
    from csfgan.config import ConfigError
    from csfgan.errors import UserError
    from csfgan.report.external import external_methods

    assert main(["score", "--protocol", str(tmp_path), "--predictions", str(tmp_path), "--name", "../up"]) == 2
    base = {"datasets": ["synth-birds"]}
    assert external_methods({**base, "peers": ["biharmonic"], "external_methods": {"mine": {"synth-birds": "p"}}}) == {
        "biharmonic": {"synth-birds": None}, "mine": {"synth-birds": "p"}}
    with pytest.raises(ConfigError, match="unknown peer 'lama'"):
        external_methods({**base, "peers": ["lama"]})
    with pytest.raises(ConfigError, match="'telea' is the name of a peer"):
        external_methods({**base, "external_methods": {"telea": {"synth-birds": "p"}}})
    with pytest.raises(ConfigError, match=r"dataset\(s\) \['cub'\] are not in the config's datasets"):
        external_methods({**base, "external_methods": {"mine": {"cub": "p"}}})
    with pytest.raises(UserError, match="a method name is letters"):
        external_methods({**base, "external_methods": {"a b": {"synth-birds": "p"}}})


def test_table1_external_rows_pair_with_csf_gan_per_image(tmp_path):
    """Table 1 gets a row per external method, marked external, with its bootstrap ± and its paired difference
    to CSF-GAN (image by image, over CSF-GAN's seeds) in a lower panel of its own."""
    from csfgan.report.tables import build_tables
    from tests.test_report import TABLES_YAML, _config, _write_metrics, _write_per_image

    root = tmp_path / "w"
    root.mkdir()
    config = _config(root, tables={**TABLES_YAML, "table3": {"title": "A", "variants": ["baseline", "full"]}})
    _write_metrics(root, config)
    config.update(peers=["biharmonic"], external_methods={"mine": {"synth-birds": "predictions/mine"}})
    for name, psnr_hole in (("biharmonic", 13.0), ("mine", 14.5)):
        folder = root / "results/external/synth-birds" / name / "center"
        folder.mkdir(parents=True)
        m = {"fid": 40.0, "psnr": 21.0, "ssim": 0.8, "psnr_hole": psnr_hole, "ssim_hole": 0.45, "kid_mean": 0.02,
             "r_precision": 0.01, "fid_features": "damsm-image-encoder", "seed": 0, "external": True,
             "protocol": "csfgan-center", "protocol_version": 1, "dataset": "synth-birds",
             "ci95": {"fid": {"se": 1.0}, "psnr_hole": {"se": 0.1}}}
        (folder / "metrics.json").write_text(json.dumps(m))
        _write_per_image(folder, m)
    table = build_tables(config, root, ["table1"])["table1"]
    rows = {r["_run"]: r for r in table.rows if r.get("source") == "external"}
    assert set(rows) == {"external:biharmonic", "external:mine"}
    bih = rows["external:biharmonic"]
    assert bih["method"] == "biharmonic, scikit-image inpaint_biharmonic (external)" and bih["seeds"] is None
    assert bih["fid"].mean == 40.0 and bih["fid"].ci95 == pytest.approx(1.96, abs=1e-3) and bih["psnr"].ci95 is None
    # The paired difference is to CSF-GAN (full: per-image hole PSNR 14.0 on every seed, noise of mean 0).
    diff = bih["_diff"]["psnr_hole"]
    assert diff.estimate == pytest.approx(-1.0) and diff.covers == "seeds+images" and diff.seeds == 3
    assert bih["_diff"]["fid"].estimate == pytest.approx(40.0 - 12.0)  # full's FID 10, 12, 14 over seeds
    md = table.markdown()
    assert "Paired difference to CSF-GAN, paper reading (ours, measured)" in md
    assert "Paired difference to baseline (ours, measured)" in md
    assert "Rows marked external are folders of outputs scored by `csfgan score`" in md
    csv = table.frame()
    assert set(csv.loc[csv["source"] == "external", "diff_reference"]) == {"CSF-GAN, paper reading (ours, measured)"}


def test_external_methods_add_score_jobs_and_a_missing_folder_stops_the_dry_run(tmp_path):
    from tests.test_workflow import LEAN_TABLES, jobs, planned, snakemake, workspace

    ws = workspace(tmp_path, tables=LEAN_TABLES, external_methods={"mine": {"synth-birds": "outputs/mine"}})
    (ws / "outputs" / "mine").mkdir(parents=True)
    out = snakemake(ws, "-n", "--configfile", "config.yaml").stdout
    counts = jobs(out)
    assert counts["protocol_export"] == 2 and counts["peer"] == 4  # 2 peers x {center, irregular}
    assert planned(out, "score") == {
        f"results/external/synth-birds/{name}/{mask}/{file}" for name, mask in (
            ("mine", "center"), ("biharmonic", "center"), ("telea", "center"), ("biharmonic", "irregular"),
            ("telea", "irregular"), ("csfgan-full-seed0", "irregular"))
        for file in ("metrics.json", "eval/per_image.npz")}
    assert counts["predict_run"] == 1 and counts["irregular_table"] == 1  # our run beside the peers
    shutil.rmtree(ws / "outputs")
    done = snakemake(ws, "-n", "--configfile", "config.yaml", check=False)
    assert done.returncode != 0
    assert "external_methods.mine.synth-birds: outputs/mine is not a folder" in done.stdout + done.stderr
    import yaml

    config = yaml.safe_load((ws / "config.yaml").read_text())
    del config["external_methods"]
    (ws / "config.yaml").write_text(yaml.safe_dump({**config, "peers": []}))
    none = jobs(snakemake(ws, "-n", "--configfile", "config.yaml").stdout)
    assert "peer" not in none and "protocol_export" in none  # our run alone on the irregular protocol

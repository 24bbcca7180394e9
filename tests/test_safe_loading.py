"""Every checkpoint, state and weights file csfgan reads is loaded weights-only: a crafted pickle is
refused with one line and runs nothing; and outputs get the user's umask, not mkstemp's 0600."""

import os
import stat

import pytest
import torch

from csfgan.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from csfgan.cli import main
from csfgan.errors import UserError
from csfgan.train import GENERATOR_KIND, STATE_KIND, train


class _Payload:
    """Unpickling this calls ``open(marker, "w")``: it creates the marker file, nothing else."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _crafted(path, marker, kind):
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"kind": kind, "run": {}, "payload": _Payload(marker)}, path)
    return path


@pytest.fixture
def marker(tmp_path):
    path = tmp_path / "marker-touched-by-the-payload"
    yield path
    assert not path.exists(), "the pickle payload ran"


def _one_line_refusal(capsys, command):
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith(f"csfgan {command}: error: ") and "(io.open)" in err and "refused" in err
    return err


def test_the_payload_does_run_when_loaded_unsafely(tmp_path):
    """The guard of the tests below: this file really would run code under weights_only=False."""
    marker = tmp_path / "m"
    torch.load(_crafted(tmp_path / "x.pt", marker, GENERATOR_KIND), weights_only=False)
    assert marker.exists()


def test_inpaint_refuses_a_crafted_final_pt(tmp_path, marker, capsys):
    ckpt = _crafted(tmp_path / "final.pt", marker, GENERATOR_KIND)
    from PIL import Image

    Image.new("RGB", (40, 40)).save(tmp_path / "bird.png")
    assert main(["inpaint", "--checkpoint", str(ckpt), "--image", str(tmp_path / "bird.png"), "--text", "a bird",
                 "-o", str(tmp_path / "out.png")]) == 2
    _one_line_refusal(capsys, "inpaint")
    assert not (tmp_path / "out.png").exists()


def test_evaluate_refuses_a_crafted_final_pt(tmp_path, marker, capsys):
    run = tmp_path / "run"
    _crafted(run / "final.pt", marker, GENERATOR_KIND)
    assert main(["evaluate", "--run", str(run)]) == 2
    _one_line_refusal(capsys, "evaluate")
    assert not (run / "metrics.json").exists()


def test_tables_and_figures_refuse_a_crafted_final_pt(tmp_path, marker):
    import csfgan.config
    from csfgan.plan import plan
    from csfgan.report.figures import make_figures
    from csfgan.report.tables import train_seconds

    config = {"scale": "smoke", "datasets": ["synth-birds"], "seeds": [0],
              "tables": str(csfgan.config.REPO_ROOT / "experiments" / "tables.yaml"),
              "variants_dir": str(csfgan.config.VARIANTS_DIR), "device": "cpu"}
    runs = plan(config, tmp_path).runs()
    for run in runs:
        _crafted(tmp_path / run.path / "final.pt", marker, GENERATOR_KIND)
    with pytest.raises(CheckpointError, match=r"\(io.open\)"):
        train_seconds(runs[0], {}, tmp_path)  # metrics.json without train_seconds: read from final.pt
    with pytest.raises(CheckpointError, match=r"\(io.open\)"):
        make_figures(config, "synth-birds", tmp_path / "figures", tmp_path)
    assert not (tmp_path / "figures").exists() or not any((tmp_path / "figures").iterdir())


def test_train_resume_refuses_a_crafted_state_pt(smoke_pipeline, tmp_path, marker, capsys):
    out = tmp_path / "run"
    _crafted(out / "checkpoints" / "state.pt", marker, STATE_KIND)
    assert main(["train", "--data", str(smoke_pipeline["data"]), "--text-encoder", str(smoke_pipeline["text_encoder"]),
                 "--variant", "full", "--scale", "smoke", "--out", str(out)]) == 2
    _one_line_refusal(capsys, "train")
    assert not (out / "final.pt").exists()


def test_a_crafted_text_encoder_is_refused(smoke_pipeline, tmp_path, marker, capsys):
    encoder = _crafted(tmp_path / "te.pt", marker, "csfgan-text-encoder")
    assert main(["train", "--data", str(smoke_pipeline["data"]), "--text-encoder", str(encoder),
                 "--variant", "full", "--scale", "smoke", "--out", str(tmp_path / "run")]) == 2
    _one_line_refusal(capsys, "train")


def test_crafted_perceptual_weights_are_refused(tmp_path, marker):
    from csfgan.losses import _load_state_dict

    with pytest.raises(UserError, match=r"io.open.*refused") as err:
        _load_state_dict(_crafted(tmp_path / "vgg16.pth", marker, "x"))
    assert "\n" not in str(err.value)


def test_our_own_files_load_weights_only(smoke_pipeline, tmp_path):
    """What csfgan stores (configs, vocabularies, RNG states, metrics) is all plain data and tensors."""
    out = tmp_path / "run"
    train(smoke_pipeline["data"], smoke_pipeline["text_encoder"], "full", "smoke", out, progress=False)
    for path in (out / "final.pt", out / "checkpoints" / "state.pt", smoke_pipeline["text_encoder"]):
        assert isinstance(torch.load(path, weights_only=True), dict), path


@pytest.fixture
def group_umask():
    before = os.umask(0o002)
    yield 0o002
    os.umask(before)


def _mode(path):
    return stat.S_IMODE(path.stat().st_mode)


def test_outputs_get_the_umask_not_mkstemps_0600(smoke_pipeline, smoke_metric_nets, tmp_path, group_umask):
    from csfgan.io import write_json
    from tests.helpers import write_tiny_prepared

    write_json(tmp_path / "a.json", {"x": 1})
    save_checkpoint({"kind": "k"}, tmp_path / "b.pt")
    assert _mode(tmp_path / "a.json") == 0o664 and _mode(tmp_path / "b.pt") == 0o664
    assert load_checkpoint(tmp_path / "b.pt", "k") == {"kind": "k"}
    prepared = write_tiny_prepared(tmp_path / "tiny")
    assert _mode(prepared) == 0o775 and _mode(prepared / "manifest.json") == 0o664
    out = tmp_path / "run"
    train(smoke_pipeline["data"], smoke_pipeline["text_encoder"], "full", "smoke", out, progress=False)
    for name in ("final.pt", "config.json", "provenance.json", "checkpoints/state.pt"):
        assert _mode(out / name) == 0o664, name
    assert all(_mode(p) == 0o664 for p in (out / "samples").iterdir())
    from csfgan.evaluate import evaluate

    evaluate(out, progress=False, **smoke_metric_nets)
    assert _mode(out / "eval") == 0o775 and _mode(out / "metrics.json") == 0o664
    os.umask(0o077)  # a private umask is honoured too
    write_json(tmp_path / "c.json", {})
    assert _mode(tmp_path / "c.json") == 0o600

"""The claims report: verdicts from paired intervals, on hand-made metrics with known differences."""

import pandas as pd
import pytest
import yaml

from csfgan.config import ConfigError
from csfgan.plan import plan
from csfgan.report.claims import Comparison, combine, evaluate_claims, load_claims, verdict, write_claims
from csfgan.report.stats import Difference
from tests.test_report import _config, _write_metrics, variants  # noqa: F401 - fixture

CLAIMS = {"claims": [
    {"id": "full-beats-baseline", "source": "Table 3", "statement": "s", "table": "table3", "metric": "fid",
     "compare": [{"row": "full", "than": "baseline", "expect": "better"}]},
    {"id": "myvariant-beats-baseline", "source": "Table 3", "statement": "s", "table": "table3", "metric": "fid",
     "compare": [{"row": "myvariant", "than": "baseline", "expect": "better"}]},
    {"id": "edge-minimal", "source": "Table 4", "statement": "s", "table": "table4", "metric": "fid",
     "note": "the paper says both", "compare": [{"row": 0.0, "than": 0.5, "expect": "within", "relative": 0.1}]},
    {"id": "psnr-same", "source": "Table 3", "statement": "s", "table": "table3", "metric": "ssim",
     "compare": [{"row": "sfm", "than": "baseline", "expect": "within", "tolerance": 0.05}]},
]}


def _diff(low, high, est=None):
    est = (low + high) / 2 if est is None else est
    return Difference(est, low, high, 1.0, 2.0, 3, None, "seeds")


def test_verdicts():
    better = Comparison("a", "b", "better")
    assert verdict(_diff(-3, -1), better, "lower", 10) == "reproduced"
    assert verdict(_diff(1, 3), better, "lower", 10) == "contradicted"
    assert verdict(_diff(-1, 1), better, "lower", 10) == "inconclusive"
    assert verdict(_diff(1, 3), better, "higher", 10) == "reproduced"
    assert verdict(Difference(-2.0, None, None, None, None, 1, None, "none"), better, "lower", 10) == "inconclusive"
    assert verdict(None, better, "lower", 10) == "not measured"
    within = Comparison("a", "b", "within", relative=0.1)  # ±1 around a reference of 10
    assert verdict(_diff(-0.5, 0.5), within, "lower", 10) == "reproduced"
    assert verdict(_diff(2, 5), within, "lower", 10) == "contradicted"
    assert verdict(_diff(0.5, 1.5), within, "lower", 10) == "inconclusive"
    assert combine(["reproduced", "inconclusive"]) == "inconclusive"
    assert combine(["reproduced", "contradicted"]) == "contradicted"
    assert combine(["reproduced", "reproduced"]) == "reproduced"


@pytest.fixture
def workspace(tmp_path, variants):  # noqa: F811
    root = tmp_path / "w"
    root.mkdir()
    config = _config(root)
    (root / "claims.yaml").write_text(yaml.safe_dump(CLAIMS, allow_unicode=True))
    config["claims"] = str(root / "claims.yaml")
    _write_metrics(root, config)
    return root, config


def test_claims_report_end_to_end(workspace):
    root, config = workspace
    paths = write_claims(config, root / "results/claims", root)
    assert [p.name for p in paths] == ["claims.csv", "claims.md"]
    frame = pd.read_csv(paths[0]).set_index("claim")
    assert frame.loc["full-beats-baseline", "verdict"] == "reproduced"  # −20 [−22.5, −17.5]
    assert frame.loc["full-beats-baseline", "effect"] == pytest.approx(-20.0)
    assert frame.loc["full-beats-baseline", "detectable"] > 0 and frame.loc["full-beats-baseline", "seeds"] == 3
    assert frame.loc["myvariant-beats-baseline", "verdict"] == "contradicted"  # +9 [+4.7, +13.3]
    # λ_edge 0 vs 0.5: FID 16, 18, 20 against 10, 12, 14: +6 ± 0, far outside ±10 % of 12.
    assert frame.loc["edge-minimal", "verdict"] == "contradicted"
    assert frame.loc["edge-minimal", "tolerance"] == pytest.approx(1.2)
    assert frame.loc["psnr-same", "verdict"] == "reproduced" and frame.loc["psnr-same", "covers"] == "seeds+images"
    md = paths[1].read_text()
    assert md.index("| full-beats-baseline | Table 3 |") < md.index("| Claim | Dataset | Metric |")
    assert "| full-beats-baseline | synth-birds | fid | full < baseline |" in md
    assert "edge-minimal: the paper says both" in md


def test_one_seed_claims_are_inconclusive_and_say_so(tmp_path, variants):  # noqa: F811
    root = tmp_path / "w"
    root.mkdir()
    config = _config(root, seeds=(0,))
    (root / "claims.yaml").write_text(yaml.safe_dump(CLAIMS, allow_unicode=True))
    config["claims"] = str(root / "claims.yaml")
    _write_metrics(root, config)
    frame = evaluate_claims(config, root).set_index("claim")
    assert frame.loc["full-beats-baseline", "verdict"] == "inconclusive"  # FID: no interval from one seed
    assert frame.loc["full-beats-baseline", "covers"] == "none"
    assert frame.loc["psnr-same", "covers"] == "images"


@pytest.mark.parametrize(("change", "message"), [
    (lambda c: c["claims"][0]["compare"][0].update(row="ful"), "table3 has no row 'ful' on synth-birds"),
    (lambda c: c["claims"][0].update(metric="FID"), "unknown metric 'FID'"),
    (lambda c: c["claims"][2]["compare"][0].update(row=0.3), "table4 has no row '0.3'"),
    (lambda c: c["claims"][0].update(tabel="table3"), "Additional properties are not allowed ('tabel'"),
    (lambda c: c["claims"][2]["compare"][0].pop("relative"), "`within` needs exactly one of tolerance, relative"),
    (lambda c: c["claims"][1].update(id="full-beats-baseline"), "used twice"),
])
def test_claims_with_a_typo_are_rejected(workspace, change, message):
    root, config = workspace
    claims = yaml.safe_load((root / "claims.yaml").read_text())
    change(claims)
    (root / "claims.yaml").write_text(yaml.safe_dump(claims, allow_unicode=True))
    with pytest.raises(ConfigError, match="claims.yaml") as info:
        load_claims(config, plan(config, root), root)
    assert message in str(info.value)


def test_the_projects_claims_file_fits_the_projects_tables():
    from pathlib import Path

    from csfgan.config import read_yaml

    root = Path(__file__).resolve().parent.parent
    config = read_yaml(root / "experiments/config.yaml")
    claims = load_claims(config, plan(config, root), root)
    assert {c.id for c in claims} >= {"table3-components-improve-fid", "table4-edge-0.5-is-best",
                                      "table4-edge-minimal-impact", "control-text-beats-context-only"}

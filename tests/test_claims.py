"""The claims report: verdicts from paired intervals, on hand-made metrics with known differences."""

import json
import math

import pandas as pd
import pytest
import yaml
from scipy import stats

from csfgan.config import ConfigError
from csfgan.plan import plan
from csfgan.report.claims import (
    Comparison,
    combine,
    evaluate_claims,
    judge,
    load_claims,
    p_values,
    verdict,
    write_claims,
)
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
    {"id": "wld-like-sfm", "source": "Table 3", "statement": "s", "table": "table3", "metric": "fid",
     "compare": [{"row": "wld", "than": "sfm", "expect": "within", "tolerance": 10.0}]},
]}


def _diff(est, se, df=2.0, seeds=3, reason=None):
    """A consistent Difference: the 95 % t interval of an estimate with this SE and df."""
    half = stats.t.ppf(0.975, df) * se
    return Difference(est, est - half, est + half, se, df, seeds, None, "seeds", reason)


def test_verdicts():
    better = Comparison("a", "b", "better")
    assert verdict(_diff(-2.0, 0.2), better, "lower", 10) == "reproduced"  # [−2.9, −1.1]
    assert verdict(_diff(2.0, 0.2), better, "lower", 10) == "contradicted"
    assert verdict(_diff(0.5, 0.5), better, "lower", 10) == "inconclusive"
    assert verdict(_diff(2.0, 0.2), better, "higher", 10) == "reproduced"
    assert verdict(Difference(-2.0, None, None, None, None, 1, None, "none", "one seed"), better, "lower",
                   10) == "inconclusive (one seed)"
    # An image-only interval of one seed excludes 0 and still decides nothing.
    assert verdict(_diff(-2.0, 0.2, df=99, seeds=1, reason="one seed"), better, "lower", 10) == \
        "inconclusive (one seed)"
    assert verdict(_diff(-2.0, 0.2, reason="seed 1 missing"), better, "lower", 10) == "inconclusive (seed 1 missing)"
    zero = Difference(-2.0, -2.0, -2.0, 0.0, 2.0, 3, None, "seeds", "zero standard error")
    assert verdict(zero, better, "lower", 10) == "inconclusive (zero standard error)"
    assert verdict(None, better, "lower", 10) == "not measured"
    # An adjusted p against the claim above 2.5 % turns a contradiction into inconclusive.
    assert verdict(_diff(2.0, 0.2), better, "lower", 10, p_against_adjusted=0.03) == "inconclusive"
    within = Comparison("a", "b", "within", relative=0.1)  # ±1 around a reference of 10
    assert verdict(_diff(0.0, 0.1), within, "lower", 10) == "reproduced"  # [−0.43, 0.43] inside ±1
    assert verdict(_diff(3.5, 0.2), within, "lower", 10) == "contradicted"  # [2.6, 4.4] outside
    assert verdict(_diff(1.0, 0.1), within, "lower", 10) == "inconclusive"
    assert combine(["reproduced", "inconclusive"]) == "inconclusive"
    assert combine(["reproduced", "contradicted"]) == "contradicted"
    assert combine(["reproduced", "reproduced"]) == "reproduced"
    assert combine(["reproduced", "inconclusive (seed 2 missing)", "inconclusive (one seed)"]) == \
        "inconclusive (one seed; seed 2 missing)"


def test_p_values_are_one_sided_and_tost():
    better = Comparison("a", "b", "better")
    p_for, p_against = p_values(_diff(-2.0, 1.0), better, "lower")
    assert p_for == pytest.approx(stats.t.sf(2.0, 2)) and p_against == pytest.approx(stats.t.cdf(2.0, 2))
    within = Comparison("a", "b", "within", tolerance=3.0)
    p_for, p_against = p_values(_diff(1.0, 0.5), within, "lower", 3.0)
    assert p_for == pytest.approx(stats.t.sf((3.0 - 1.0) / 0.5, 2))  # TOST: the nearer bound decides
    assert p_against == pytest.approx(1.0)  # inside ±3: no evidence that |δ| > 3
    p_for, p_against = p_values(_diff(4.0, 0.5), within, "lower", 3.0)
    assert p_for == pytest.approx(stats.t.cdf((4.0 - 3.0) / 0.5, 2))
    assert p_against == pytest.approx(2 * stats.t.sf((4.0 - 3.0) / 0.5, 2))  # |δ| > 3: the nearer side, doubled
    assert p_values(_diff(1.0, 0.5, seeds=1, reason="one seed"), better, "lower") == (None, None)


def test_judge_adjusts_contradictions_by_holm_over_the_family():
    better = Comparison("a", "b", "better")
    strong, weak = _diff(3.0, 0.3, df=50), _diff(0.9, 0.4, df=50)  # both against a "lower is better" claim
    alone = judge([(weak, better, "lower", 10.0)])
    assert alone[0].verdict == "contradicted" and alone[0].family == 1  # p ≈ 0.014 ≤ 0.025
    family = judge([(strong, better, "lower", 10.0), (weak, better, "lower", 10.0),
                    (_diff(0.0, 1.0), better, "lower", 10.0), (None, better, "lower", 10.0)])
    assert [j.verdict for j in family] == ["contradicted", "inconclusive", "inconclusive", "not measured"]
    assert family[1].p_against_holm == pytest.approx(2 * family[1].p_against)  # rank 2 of a family of 3
    assert {j.family for j in family} == {3}


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
    everything = pd.read_csv(paths[0])
    frame = everything[everything["role"] == "claim"].set_index("claim")
    assert frame.loc["full-beats-baseline", "verdict"] == "reproduced"  # −20 [−22.5, −17.5]
    assert frame.loc["full-beats-baseline", "effect"] == pytest.approx(-20.0)
    assert frame.loc["full-beats-baseline", "detectable"] > 0 and frame.loc["full-beats-baseline", "seeds"] == 3
    assert frame.loc["full-beats-baseline", "detectable_basis"].startswith("pooled over 5 rows × 3 seeds")
    assert frame.loc["myvariant-beats-baseline", "verdict"] == "contradicted"  # +9 [+4.7, +13.3]
    p_against = stats.t.sf(9.0 / 1.0, 2)  # differences 10, 10, 7: mean 9, SE 1
    assert frame.loc["myvariant-beats-baseline", "p_against_holm"] == pytest.approx(p_against)  # a family of 1
    # λ_edge 0 vs 0.5: FID 16, 18, 20 against 10, 12, 14: +6 for every seed, a zero standard error:
    # no decision (it was "contradicted" on a zero-width interval).
    assert frame.loc["edge-minimal", "verdict"] == "inconclusive (zero standard error)"
    assert frame.loc["edge-minimal", "tolerance"] == pytest.approx(1.2)
    assert pd.isna(frame.loc["edge-minimal", "tolerance_80"])  # no noise measured: no power figure
    # wld − sfm: 5, 6, 7 → 6 [3.5, 8.5] inside ±10; the power figure from table 3's pooled FID noise.
    assert frame.loc["wld-like-sfm", "verdict"] == "reproduced"
    assert 0 < frame.loc["wld-like-sfm", "tolerance_80"] < 50
    assert frame.loc["psnr-same", "verdict"] == "reproduced" and frame.loc["psnr-same", "covers"] == "seeds+images"
    # KID beside FID: the same comparisons, their own verdict, the FID verdict unchanged.
    kid = everything[everything["role"] == "KID beside FID"].set_index("claim")
    assert set(kid.index) == {"full-beats-baseline", "myvariant-beats-baseline", "edge-minimal", "wld-like-sfm"}
    assert (kid["metric"] == "kid_mean").all()
    assert kid.loc["full-beats-baseline", "verdict"] == "inconclusive (zero standard error)"  # KID 0.01 everywhere
    assert kid.loc["full-beats-baseline", "claim_verdict"] == "reproduced"
    assert frame.loc["full-beats-baseline", "kid_verdict"] == "inconclusive (zero standard error)"
    assert pd.isna(frame.loc["psnr-same", "kid_verdict"])
    md = paths[1].read_text()
    assert md.index("| full-beats-baseline | Table 3 |") < md.index("| Claim | Dataset | Metric |")
    assert "| full-beats-baseline | synth-birds | fid | full < baseline |" in md
    assert "| full-beats-baseline | synth-birds | kid_mean (beside fid) | full < baseline |" in md
    assert "**reproduced** | inconclusive (zero standard error) |" in md
    assert "edge-minimal: the paper says both" in md
    assert "Holm's adjustment over all of the claim's comparisons on all its datasets" in md
    assert "two one-sided tests at 2.5% each (TOST)" in md


def test_one_seed_claims_are_inconclusive_and_say_so(tmp_path, variants):  # noqa: F811
    root = tmp_path / "w"
    root.mkdir()
    config = _config(root, seeds=(0,))
    (root / "claims.yaml").write_text(yaml.safe_dump(CLAIMS, allow_unicode=True))
    config["claims"] = str(root / "claims.yaml")
    _write_metrics(root, config)
    frame = evaluate_claims(config, root)
    frame = frame[frame["role"] == "claim"].set_index("claim")
    assert frame.loc["full-beats-baseline", "verdict"] == "inconclusive (one seed)"  # FID: no interval
    assert frame.loc["full-beats-baseline", "covers"] == "none"
    assert frame.loc["psnr-same", "covers"] == "images"
    # The image-only interval lies inside ±0.05 and still decides nothing.
    assert frame.loc["psnr-same", "verdict"] == "inconclusive (one seed)"
    assert (frame["claim_verdict"] == "inconclusive (one seed)").all()


def test_a_missing_seed_is_named(workspace):
    root, config = workspace
    m = root / "results/runs/synth-birds/myvariant/seed2/metrics.json"
    m.write_text(json.dumps({**json.loads(m.read_text()), "fid": math.nan}))
    frame = evaluate_claims(config, root)
    row = frame[(frame["role"] == "claim") & (frame["claim"] == "myvariant-beats-baseline")].iloc[0]
    # It was "not measured"; the seeds present still give the difference, and nothing is decided.
    assert row["verdict"] == "inconclusive (seed 2 missing)" and row["claim_verdict"] == row["verdict"]
    assert row["seeds"] == 2 and row["effect"] == pytest.approx(10.0)  # 40 − 30, 41 − 31
    assert row["reason"] == "seed 2 missing"


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

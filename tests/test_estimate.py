"""csfgan estimate: the step FLOPs it extrapolates are the counted ones, its runtime limits and jobs are the
DAG's (Snakemake's dry run through the profile), its submissions follow a limit that grows per attempt, and
bad arguments end in one line naming them."""

import math

import pytest

from csfgan import estimate as est
from csfgan.cli import main
from csfgan.config import load_scale, parse_overrides

from .test_workflow import LEAN_TABLES, ROOT, workspace


@pytest.mark.filterwarnings("ignore:var():UserWarning")  # batch 1's batch statistics
def test_a_step_at_the_run_batch_is_the_quadratic_through_batches_1_2_3():
    """The DAMSM matching losses make a step's FLOPs a + b·B + c·B²: counts at 1, 2 and 3 give batch 5
    exactly (batch 5 itself is never counted by the estimate)."""
    from csfgan.bench import TrainingStep, _flops, _Inputs

    cfg = parse_overrides(load_scale("smoke"), ["train.batch_size=5"])
    predicted = est.generator_flops(cfg, "batch-5 check")["step"]
    ts = TrainingStep(cfg)
    x = _Inputs(cfg, 5)
    words, sent, word_mask = ts.text_features(x)
    assert predicted == pytest.approx(_flops(lambda: ts.step(x, words, sent, word_mask)), rel=1e-12)
    linear_guess = 5 * _flops(lambda: ts.step(_Inputs(cfg, 1), *ts.text_features(_Inputs(cfg, 1))))
    assert predicted != pytest.approx(linear_guess, rel=1e-3)  # batch 1 times 5 would be wrong


def test_submissions_follow_a_limit_that_grows_per_attempt_up_to_the_cap():
    grows = est.Limit(60, 120)  # 60, 120, 150, 150, ... minutes with a cap of 150
    assert [est.submissions(m * 60, grows, 150) for m in (1, 60, 61, 180, 181, 330, 331, 480)] == [1, 1, 2, 2, 3, 3,
                                                                                                    4, 4]
    fixed = est.Limit(60, 60)
    assert est.submissions(400 * 60, fixed, 2880) == 7 and est.submissions(0, fixed, 2880) == 1
    assert est.submissions(10**9, None, 2880) == 1  # no limit: one submission


@pytest.mark.slow
def test_a_smoke_workflow_costed_through_the_slurm_profile(tmp_path):
    ws = workspace(tmp_path / "one", tables=LEAN_TABLES, runtime_minutes={"train": 1}, max_runtime_minutes=2)
    rate = 1e7 * 0.5  # 10 MFLOP/s at MFU 0.5: a smoke training of a few minutes
    report = est.estimate(str(ws / "config.yaml"), device_tflops="0.00001", mfu="0.5",
                          workflow_profile=str(ROOT / "workflow" / "profiles" / "slurm"), root=ws)
    rules = {r["rule"]: r for r in report["rules"]}
    assert not any(n.startswith("the DAG lists") for n in report["notes"])  # the plan's jobs are the DAG's
    assert rules["train"]["jobs"] == 3 and rules["evaluate"]["jobs"] == 3  # baseline, full, full with edge 0
    assert rules["pretrain_text"]["jobs"] == rules["train_features"]["jobs"] == 1
    assert rules["score"]["jobs"] >= 2 and rules["predict_run"]["jobs"] == 1  # the peers, Figure 9's run
    assert report["total"]["flops"] == pytest.approx(sum(r["total_flops"] for r in report["rules"]))
    assert report["total"]["device_hours"] == pytest.approx(report["total"]["flops"] / rate / 3600)
    for job in rules["train"]["job_list"]:
        assert (job["runtime_minutes"], job["runtime_minutes_attempt2"]) == (1, 2)  # the config's, via Snakemake
        minutes = job["flops"] / rate / 60
        assert minutes > 1
        assert job["submissions"] == 1 + math.ceil((minutes - 1) / 2)  # 1 min, then 2 (the cap) per attempt
    # A training job is its steps times the counted step (with the text encoder over the batch's captions).
    plan = est.plan(est.read_yaml(ws / "config.yaml"), ws)
    full = plan.run_configs()["full"]
    lstm = est.Costs(plan, {}).lstm
    (job,) = [j for j in rules["train"]["job_list"] if j["wildcards"]["run"] == "full"]
    assert job["flops"] == pytest.approx(full.train.steps * (est.generator_flops(full)["step"]
                                                             + full.train.batch_size * lstm))
    most = max(j["submissions"] for r in report["rules"] for j in r["job_list"])
    assert (most > 6) == report["notes"][0].startswith(f"a job needs {most} submissions and the profile allows 6")
    text = est.render(report)
    assert "train" in text and "limit grows with the attempt" in text and "at most 2 min" in text

    # Two GPUs per training (torchrun, a batch per rank): twice the FLOPs in the same wall time.
    two = workspace(tmp_path / "two-gpus", tables=LEAN_TABLES, device="cuda", gpus_per_job=2)
    report2 = est.estimate(str(two / "config.yaml"), device_tflops="0.00001", mfu="0.5", root=two)
    (job2,) = [j for r in report2["rules"] if r["rule"] == "train" for j in r["job_list"]
               if j["wildcards"]["run"] == "full"]
    assert job2["devices"] == 2 and job2["flops"] == pytest.approx(2 * job["flops"])
    assert job2["wall_seconds"] == pytest.approx(job["wall_seconds"])


@pytest.mark.parametrize(("args", "message"), [
    (["--device-tflops", "fast"], "--device-tflops 'fast': expected a number > 0"),
    (["--device-tflops", "-3"], "--device-tflops -3: must be a finite number > 0"),
    (["--device-tflops", "100", "--mfu", "1.5"], "--mfu 1.5: must be a finite number in (0, 1]"),
    (["--device-tflops", "100", "--workflow-profile", "nowhere"], "--workflow-profile nowhere: no config.yaml there"),
])
def test_bad_arguments_are_one_line(args, message, capsys):
    assert main(["estimate", "--configfile", str(ROOT / "experiments" / "config.yaml"), *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err


def test_a_config_that_is_not_a_workflow_config_is_named(tmp_path, capsys):
    path = tmp_path / "scale.yaml"
    path.write_text("resolution: 64\n")
    assert main(["estimate", "--configfile", str(path), "--device-tflops", "100"]) == 2
    assert f"{path}: no `scale`" in capsys.readouterr().err

"""The smoke DAG through `--workflow-profile workflow/profiles/slurm` on a real single-node SLURM cluster
(slurmctld + slurmd + munged, started here on localhost and stopped after), to its tables.

Recipe and traps: ../shared/notes/local-slurm.md. Without slurmdbd, sacct fails and the plugin would
wait for ever, so the status command is squeue; the job step's srun loses SLURM_CONF, so an srun
wrapper first on PATH puts it back; no account is set. Every snakemake call has a hard timeout that
ends in SIGKILL of its whole process group.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.test_workflow import LEAN_TABLES, ROOT, SNAKEMAKE, jobs, workspace

DAEMONS = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "sinfo", "srun")


def missing_tools() -> list[str]:
    found = {name: shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin") for name in DAEMONS}
    missing = [name for name, path in found.items() if path is None]
    try:
        import snakemake_executor_plugin_slurm  # noqa: F401
    except ImportError:
        missing.append("snakemake-executor-plugin-slurm")
    return missing


def _tool(name: str) -> str:
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")


class Cluster:
    """A one-node Slurm cluster with partitions `cpu` (default) and `gpu` (the profile's names), both
    on this machine's cores (no GPU: the smoke config asks for none)."""

    def __init__(self, root: Path):
        self.root = root
        self.procs: list[subprocess.Popen] = []
        self.conf = root / "slurm.conf"
        self.bin = root / "bin"
        self.env = {**os.environ, "SLURM_CONF": str(self.conf), "PATH": f"{self.bin}:{os.environ['PATH']}"}

    def write_config(self) -> None:
        r = self.root
        for d in ("munge", "state", "spool", "log", "bin"):
            (r / d).mkdir(parents=True, exist_ok=True)
        os.chmod(r / "munge", 0o711)
        key = r / "munge" / "munge.key"
        key.write_bytes(os.urandom(1024))
        os.chmod(key, 0o400)
        mem_kb = next(int(line.split()[1]) for line in open("/proc/meminfo") if line.startswith("MemTotal"))
        host = socket.gethostname().split(".")[0]
        self.conf.write_text("\n".join([
            "ClusterName=csfgan-test", f"SlurmctldHost={host}(127.0.0.1)", "SlurmUser=root",
            "AuthType=auth/munge", "CredType=cred/munge", f"AuthInfo=socket={r}/munge/munge.sock",
            f"StateSaveLocation={r}/state", f"SlurmdSpoolDir={r}/spool",
            f"SlurmctldPidFile={r}/slurmctld.pid", f"SlurmdPidFile={r}/slurmd.pid",
            f"SlurmctldLogFile={r}/log/slurmctld.log", f"SlurmdLogFile={r}/log/slurmd.log",
            "SlurmctldPort=16817", "SlurmdPort=16818",
            "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none", "JobAcctGatherType=jobacct_gather/none",
            "AccountingStorageType=accounting_storage/none", "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_Core_Memory", "DefMemPerCPU=500", "MinJobAge=600", "MailProg=/bin/true",
            "ReturnToService=2",
            f"NodeName={host} NodeAddr=127.0.0.1 CPUs={os.cpu_count()} RealMemory={int(mem_kb / 1024 * 0.8)} "
            "State=UNKNOWN",
            f"PartitionName=cpu Nodes={host} Default=YES MaxTime=INFINITE State=UP",
            f"PartitionName=gpu Nodes={host} MaxTime=INFINITE State=UP",
        ]) + "\n")
        # Trap 2: the job step's inner srun runs without SLURM_* variables; give it the config back.
        srun = self.bin / "srun"
        srun.write_text(f"#!/bin/sh\nexport SLURM_CONF={self.conf}\nexec {_tool('srun')} \"$@\"\n")
        srun.chmod(0o755)

    def start(self) -> None:
        self.write_config()
        r = self.root
        self.procs.append(subprocess.Popen(
            [_tool("munged"), "--foreground", "--force", f"--socket={r}/munge/munge.sock",
             f"--key-file={r}/munge/munge.key", f"--log-file={r}/log/munged.log", f"--pid-file={r}/munge/munged.pid",
             f"--seed-file={r}/munge/munged.seed"], env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT))
        self._wait(lambda: (r / "munge" / "munge.sock").exists(), "munged socket")
        for daemon, extra in (("slurmctld", ["-c"]), ("slurmd", [])):
            self.procs.append(subprocess.Popen([_tool(daemon), "-D", *extra, "-f", str(self.conf)], env=self.env,
                                               stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT))
        self._wait(lambda: set(self.sinfo("%t").split()) == {"idle"}, "the node idle in sinfo")

    def sinfo(self, fmt: str = "%P %a %D %t %N %c %m") -> str:
        done = subprocess.run([_tool("sinfo"), "-h", "-N", "-o", fmt], env=self.env, capture_output=True, text=True,
                              timeout=20)
        return done.stdout

    def _wait(self, ready, what: str, seconds: float = 30.0) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            for p in self.procs:
                if p.poll() is not None:
                    logs = "\n".join(f.read_text()[-1500:] for f in (self.root / "log").glob("*.log"))
                    raise RuntimeError(f"{p.args[0]} exited ({p.returncode}) while waiting for {what}:\n{logs}")
            try:
                if ready():
                    return
            except subprocess.SubprocessError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"timed out waiting for {what}")

    def stop(self) -> None:
        for p in reversed(self.procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in reversed(self.procs):
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def run_killable(cmd: list[str], cwd: Path, env: dict, timeout: float) -> subprocess.CompletedProcess:
    """Run ``cmd`` in its own process group; on timeout SIGKILL the group (the plugin can ignore SIGTERM)."""
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        raise AssertionError(f"{' '.join(cmd[3:])} timed out after {timeout} s:\n{out[-3000:]}\n{err[-5000:]}") \
            from None
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


@pytest.fixture
def cluster(tmp_path_factory):
    missing = missing_tools()
    if missing:
        pytest.skip(f"SLURM packages not installed ({', '.join(missing)}): apt-get install slurmctld slurmd "
                    "slurm-client munge; pip install snakemake-executor-plugin-slurm (.ci/run does both)")
    if os.geteuid() != 0:
        pytest.skip("the test cluster runs slurmd as root (SlurmUser=root): run as root, as CI does")
    c = Cluster(tmp_path_factory.mktemp("slurm"))
    try:
        c.start()
        yield c
    finally:
        c.stop()


@pytest.mark.slow
def test_smoke_dag_through_the_slurm_profile(cluster, tmp_path):
    tables = {**LEAN_TABLES, "table4": {**LEAN_TABLES["table4"], "values": [0.5]}}
    # The classical peers' export/peer/score jobs are left to the local smoke DAG (test_workflow): through
    # sbatch each adds a job start, and this test is about the profile, not about more jobs.
    ws = workspace(tmp_path / "ws", tables=tables, peers=[])
    args = ["--workflow-profile", str(ROOT / "workflow" / "profiles" / "slurm"), "--configfile", "config.yaml",
            "--jobs", "2", "--slurm-status-command", "squeue", "--slurm-init-seconds-before-status-checks", "4",
            "--latency-wait", "5"]
    env = {**cluster.env, "PYTHONPATH": str(ROOT)}
    dry = run_killable([*SNAKEMAKE, "--directory", str(ws), "-n", *args], ws, env, timeout=300)
    assert dry.returncode == 0, dry.stderr[-3000:]
    assert jobs(dry.stdout)["train"] == 2

    started = time.monotonic()
    done = run_killable([*SNAKEMAKE, "--directory", str(ws), "--verbose", *args], ws, env, timeout=1200)
    wall = time.monotonic() - started
    log = done.stdout + done.stderr
    (tmp_path / "snakemake.log").write_text(log)
    assert done.returncode == 0, log[-6000:]
    for table in ("table1", "table2", "table3", "table4"):
        assert (ws / "results" / "tables" / f"{table}.md").is_file()
    sbatch = [line.strip() for line in log.splitlines() if "sbatch" in line and "--job-name" in line]
    # Compute jobs went through sbatch, to the profile's partitions; the localrules did not.
    assert any("--partition gpu" in line or "-p gpu" in line for line in sbatch), "\n".join(sbatch)[-3000:]
    assert any("--partition cpu" in line or "-p cpu" in line for line in sbatch), "\n".join(sbatch)[-3000:]
    assert not any("rule_table" in line or "rule_figures" in line for line in sbatch)
    print(f"\nsinfo:\n{cluster.sinfo()}\nwall time {wall:.0f} s\n" + "\n".join(sbatch), file=sys.stderr)


def _resources(dry_run_output: str) -> list[tuple[str, dict[str, str]]]:
    """(rule, resources) of every job a dry run lists."""
    found, rule = [], None
    for line in dry_run_output.splitlines():
        if line.startswith("rule ") or line.startswith("localrule "):
            rule = line.split()[1].rstrip(":")
        elif line.strip().startswith("resources:") and rule:
            pairs = (item.split("=", 1) for item in line.split(":", 1)[1].split(", "))
            found.append((rule, {k.strip(): v.strip() for k, v in pairs}))
    return found


def test_no_job_asks_for_a_gpu_on_the_cpu_partition(tmp_path):
    """On a GPU config (2 GPUs per training), through the SLURM profile: every job that requests a GPU
    is on the profile's GPU partition, no single-process job asks for more than one, and every attempt's
    runtime grows with the attempt up to max_runtime_minutes."""
    if "snakemake-executor-plugin-slurm" in missing_tools():
        pytest.skip("snakemake-executor-plugin-slurm is not installed")
    ws = workspace(tmp_path / "ws", tables=LEAN_TABLES, device="cuda", gpus_per_job=2,
                   runtime_minutes={"train": 1000}, max_runtime_minutes=1500)
    args = ["--workflow-profile", str(ROOT / "workflow" / "profiles" / "slurm"), "--configfile", "config.yaml"]
    found = {}
    for attempt in (1, 2):
        dry = run_killable([*SNAKEMAKE, "--directory", str(ws), "-n", *args, "--attempt", str(attempt)], ws,
                           {**os.environ, "PYTHONPATH": str(ROOT)}, timeout=300)
        assert dry.returncode == 0, dry.stderr[-3000:]
        found[attempt] = _resources(dry.stdout)
    jobs_ = found[1]
    assert {rule for rule, r in jobs_ if int(r.get("gpu", 0)) > 0} == {
        "train", "evaluate", "pretrain_text", "pretrain_text_eval", "train_features", "predict_run"}
    for rule, r in jobs_:
        gpus = int(r.get("gpu", 0))
        assert (r["slurm_partition"] == "gpu") == (gpus > 0), (rule, r)
        assert gpus == (2 if rule == "train" else 1 if gpus else 0), (rule, r)
    assert {int(r["runtime"]) for rule, r in found[1] if rule == "train"} == {1000}
    assert {int(r["runtime"]) for rule, r in found[2] if rule == "train"} == {1500}  # 2000, capped
    assert {int(r["runtime"]) for rule, r in found[2] if rule == "pretrain_text"} == {480}


@pytest.mark.slow
def test_a_training_killed_at_its_time_limit_is_resubmitted_and_continues(cluster, tmp_path):
    """A 1-minute limit on a training of a few minutes: Slurm's SIGTERM at the limit makes it save, the
    profile's retry submits it again, it continues from the saved step, and its final weights equal an
    uninterrupted run's (trained meanwhile on the other core)."""
    import yaml

    from csfgan.checkpoint import load_checkpoint
    from csfgan.train import GENERATOR_KIND

    scale = yaml.safe_load((ROOT / "experiments" / "scales" / "smoke.yaml").read_text())
    scale["train"].update(steps=3000, log_every=50, sample_every=100_000, checkpoint_every=100_000)
    ws = workspace(tmp_path / "ws", tables=LEAN_TABLES, scale="long.yaml")
    (ws / "long.yaml").write_text(yaml.safe_dump(scale))
    env = {**cluster.env, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    # The inputs, here: only the training goes through Slurm.
    local = run_killable([*SNAKEMAKE, "--directory", str(ws), "--configfile", "config.yaml", "--cores", "2",
                          "results/text_encoder/synth-birds.pt"], ws, env, timeout=600)
    assert local.returncode == 0, local.stderr[-3000:]
    straight = subprocess.Popen(
        [sys.executable, "-m", "csfgan", "train", "--data", "data/prepared/synth-birds", "--text-encoder",
         "results/text_encoder/synth-birds.pt", "--variant", "variants/full.yaml", "--scale", "long.yaml",
         "--out", str(tmp_path / "straight"), "--device", "cpu", "--threads", "1"],
        cwd=ws, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    target = "results/runs/synth-birds/full/seed0/final.pt"
    args = ["--workflow-profile", str(ROOT / "workflow" / "profiles" / "slurm"), "--configfile", "config.yaml",
            "--jobs", "1", "--slurm-status-command", "squeue", "--slurm-init-seconds-before-status-checks", "4",
            "--latency-wait", "5", "--set-resources", "train:runtime=1", "--verbose"]
    done = run_killable([*SNAKEMAKE, "--directory", str(ws), *args, target], ws, env, timeout=1200)
    log = done.stdout + done.stderr
    (tmp_path / "snakemake.log").write_text(log)
    _, err = straight.communicate(timeout=900)
    assert straight.returncode == 0, err[-2000:]
    assert done.returncode == 0, log[-6000:]
    submissions = [line for line in log.splitlines() if "sbatch" in line and "--job-name" in line]
    assert len(submissions) >= 2, "\n".join(submissions)
    second_attempt = (ws / "logs" / "train" / "synth-birds" / "full" / "seed0.log").read_text()
    resumed = [line for line in second_attempt.splitlines() if "resuming" in line]
    assert resumed and " from step 0/" not in resumed[0], second_attempt[-2000:]
    steps = [json.loads(line)["step"] for line in (ws / "results/runs/synth-birds/full/seed0/stats.jsonl")
             .read_text().splitlines()]
    assert steps == list(range(50, 3001, 50))
    a = load_checkpoint(tmp_path / "straight" / "final.pt", GENERATOR_KIND)
    b = load_checkpoint(ws / target, GENERATOR_KIND)
    for key, value in a["generator"].items():
        assert torch.equal(value, b["generator"][key]), key
    print(f"\n{resumed[0]}; {len(submissions)} submissions", file=sys.stderr)

"""`csfgan bench` runs at the smoke scale and reports every field (no timing is asserted)."""

import json
import platform

from csfgan.cli import main


def test_bench_smoke_has_every_field(smoke_pipeline, tmp_path):
    bench_dir = tmp_path / "benchmarks" / "train" / "synth-birds"
    bench_dir.mkdir(parents=True)
    (bench_dir / "full.tsv").write_text("s\th:m:s\tmax_rss\n12.5\t0:00:12\t800\n")
    out = tmp_path / "bench.json"
    assert main(["bench", "--scales", "smoke", "--steps", "1", "--data", str(smoke_pipeline["data"]),
                 "--benchmarks", str(tmp_path / "benchmarks"), "--out", str(out), "--threads", "1"]) == 0
    result = json.loads(out.read_text())
    assert result["matmul_peak_gflops_fp32"] > 0 and result["matmul_peak_gflops_bf16"] > 0
    assert result["peak_rss_mb"] > 0
    glibc = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"
    assert result["cpu_settings"] == {"torch_threads": 1, "malloc_keeps_freed_memory": glibc}
    for dtype in ("fp32", "bf16"):  # the peak is the best of the two kernel libraries
        by_lib = result["peak_by_library"][dtype]
        assert by_lib["peak"] == max(by_lib["blas"], by_lib["onednn"]) == result[f"matmul_peak_gflops_{dtype}"]
    smoke = result["scales"]["smoke"]
    for component in ("generator_forward", "global_discriminator_forward", "word_level_discriminator_forward",
                      "perceptual_forward", "text_encoder_forward"):
        assert smoke["gflop_per_image"][component] > 0, component
    assert smoke["train_precision"] == "fp32" and smoke["inference_precision"] == "fp32"
    assert smoke["train_mfu_vs_precision_peak"] == smoke["train_mfu"]  # fp32 training: the same peak
    assert smoke["inference_mfu_vs_precision_peak"] == smoke["inference_mfu"]
    for key in ("train_images_per_s", "train_mfu", "inference_images_per_s", "inference_mfu",
                "train_step_gflop_per_image", "inference_gflop_per_image"):
        assert smoke[key] > 0, key
    # A training step costs more than a generator forward: G forward+backward, D twice, perceptual.
    assert smoke["train_step_gflop_per_image"] > 3 * smoke["gflop_per_image"]["generator_forward"]
    assert 0 < smoke["data_loading"]["share_of_step"] < 1
    assert result["dag_stages"] == {"train": {"jobs": 1, "total_s": 12.5, "max_s": 12.5}}
    load = result["machine_load"]  # what the verdict reads; whether it competed depends on this machine
    assert load["torch_threads"] == 1 and len(load["load_average_before"]) == 3
    assert 0 < load["cpu_share_of_threads"] and isinstance(load["competed"], bool) and load["verdict"]


def test_load_verdict_names_what_competed():
    from csfgan.bench import load_verdict

    assert load_verdict(2, 0.98, 0.03, 1.7, 2)[0] is False  # a lagging load average alone decides nothing
    competed, text = load_verdict(2, 0.52, 0.9, 0.1, 2)
    assert competed and "got 0.52 of the 2 thread(s)" in text and "not this machine's" in text
    competed, text = load_verdict(1, 0.99, 1.02, 0.1, 2)  # one thread got its core, another job the other
    assert competed and "other processes used 1.02 of the 2 cores" in text
    competed, text = load_verdict(1, 0.99, None, 2.3, 2)  # no /proc/stat: the load average decides
    assert competed and "load average was 2.30 on 2 cores" in text


def test_bench_beside_busy_processes_on_its_core_says_other_work_competed(tmp_path):
    """Two busy loops pinned to the bench's own core: the bench gets about a third of the CPU it asks
    for and must say so in the JSON and on screen (whatever the machine's core count)."""
    import os
    import subprocess
    import sys

    core = sorted(os.sched_getaffinity(0))[0]
    spin = f"import os\nos.sched_setaffinity(0, {{{core}}})\nwhile True: pass"
    busy = [subprocess.Popen([sys.executable, "-c", spin]) for _ in range(2)]
    try:
        out = tmp_path / "bench.json"
        code = ("import os, sys\n"
                f"os.sched_setaffinity(0, {{{core}}})\n"
                "from csfgan.cli import main\n"
                f"sys.exit(main(['bench', '--scales', 'smoke', '--steps', '2', '--threads', '1', "
                f"'--data', '', '--benchmarks', {str(tmp_path / 'none')!r}, '--out', {str(out)!r}]))")
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    finally:
        for p in busy:
            p.kill()
            p.wait()
    assert proc.returncode == 0, proc.stderr
    load = json.loads(out.read_text())["machine_load"]
    assert load["competed"] is True and load["cpu_share_of_threads"] < 0.9 and load["other_processes_cores"] > 0.5
    assert "WARNING: other work competed for the CPU" in proc.stderr
    assert load["timed_wall_seconds"] > 0 and load["timed_cpu_seconds"] > 0

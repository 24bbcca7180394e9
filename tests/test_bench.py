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

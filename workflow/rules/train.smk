rule train:
    input:
        data="data/prepared/{dataset}/manifest.json",
        text_encoder="results/text_encoder/{dataset}.pt",
        # The run's resolved scale + variant + overrides: rewritten only when a value changes, so an
        # edited variant or scale re-runs exactly the runs it changes.
        config=run_config,
    output:
        "results/runs/{dataset}/{run}/seed{seed}/final.pt",
    log:
        "logs/train/{dataset}/{run}/seed{seed}.log",
    benchmark:
        "benchmarks/train/{dataset}/{run}/seed{seed}.tsv"
    threads: THREADS["train"]
    resources:
        mem_mb=8000,
        runtime=job_minutes("train"),
        gpu=GPUS,
    conda:
        ENV
    params:
        # More than one GPU per job: one process per GPU under torchrun (a single process would use one).
        launcher=TRAIN_LAUNCHER,
        scale=SCALE,
        variant=lambda wc: str(variant_path(PLAN.variants_dir, split_run_name(wc.run)[0])),
        device=DEVICE,
        data=lambda wc: f"data/prepared/{wc.dataset}",
        out=lambda wc: f"results/runs/{wc.dataset}/{wc.run}/seed{wc.seed}",
        overrides=run_overrides,
    shell:
        "{params.launcher} train --data {params.data} --text-encoder {input.text_encoder} --variant {params.variant} "
        "--scale {params.scale} --seed {wildcards.seed} --out {params.out} {params.overrides} --device {params.device} "
        "--threads {threads} --on-mismatch restart > {log} 2>&1"

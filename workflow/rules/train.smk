rule train:
    input:
        data="data/prepared/{dataset}/manifest.json",
        text_encoder="results/text_encoder/{dataset}.pt",
        variant=variant_file,
    output:
        "results/runs/{dataset}/{run}/seed{seed}/final.pt",
    log:
        "logs/train/{dataset}/{run}/seed{seed}.log",
    benchmark:
        "benchmarks/train/{dataset}/{run}/seed{seed}.tsv"
    threads: THREADS["train"]
    resources:
        mem_mb=8000,
        runtime=2880,
        gpu=GPUS,
    conda:
        ENV
    params:
        csfgan=CSFGAN,
        scale=SCALE,
        device=DEVICE,
        data=lambda wc: f"data/prepared/{wc.dataset}",
        out=lambda wc: f"results/runs/{wc.dataset}/{wc.run}/seed{wc.seed}",
        overrides=run_overrides,
    shell:
        "{params.csfgan} train --data {params.data} --text-encoder {input.text_encoder} --variant {input.variant} "
        "--scale {params.scale} --seed {wildcards.seed} --out {params.out} {params.overrides} --device {params.device} "
        "--threads {threads} > {log} 2>&1"

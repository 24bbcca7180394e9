rule pretrain_text:
    input:
        "data/prepared/{dataset}/manifest.json",
    output:
        "results/text_encoder/{dataset}.pt",
        "results/text_encoder/{dataset}.metrics.json",
    log:
        "logs/pretrain_text/{dataset}.log",
    benchmark:
        "benchmarks/pretrain_text/{dataset}.tsv"
    threads: THREADS["pretrain"]
    resources:
        mem_mb=6000,
        runtime=240,
        gpu=GPUS,
    conda:
        ENV
    params:
        data=lambda wc: f"data/prepared/{wc.dataset}",
    shell:
        "{CSFGAN} pretrain-text --data {params.data} --scale {SCALE} --out {output[0]} "
        "--threads {threads} > {log} 2>&1"

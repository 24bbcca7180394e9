rule pretrain_text:
    input:
        data="data/prepared/{dataset}/manifest.json",
        settings=TEXT_ENCODER_CONFIG,
    output:
        checkpoint="results/text_encoder/{dataset}.pt",
        metrics="results/text_encoder/{dataset}.metrics.json",
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
        csfgan=CSFGAN,
        scale=SCALE,
        data=lambda wc: f"data/prepared/{wc.dataset}",
    shell:
        "{params.csfgan} pretrain-text --data {params.data} --scale {params.scale} --out {output.checkpoint} "
        "--threads {threads} > {log} 2>&1"

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
    # Every training waits for this encoder; the evaluation encoder and the feature network, which
    # only evaluation needs, wait instead (before: the first training started after 4.3 minutes).
    priority: 50
    threads: THREADS["pretrain"]
    resources:
        mem_mb=6000,
        runtime=job_minutes("pretrain"),
        gpu=ONE_GPU,
    conda:
        ENV
    params:
        csfgan=CSFGAN,
        scale=SCALE,
        device=DEVICE,
        data=lambda wc: f"data/prepared/{wc.dataset}",
    shell:
        "{params.csfgan} pretrain-text --data {params.data} --scale {params.scale} --out {output.checkpoint} "
        "--device {params.device} --threads {threads} > {log} 2>&1"

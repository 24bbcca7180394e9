# The networks evaluation measures with, trained apart from everything the generator's losses use:
# the FID/KID feature network (a species classifier) and an R-precision DAMSM pair pretrained with
# another seed than the one the generator is conditioned on.
rule train_features:
    input:
        "data/prepared/{dataset}/manifest.json",
    output:
        checkpoint="results/feature_net/{dataset}.pt",
        metrics="results/feature_net/{dataset}.metrics.json",
    log:
        "logs/train_features/{dataset}.log",
    benchmark:
        "benchmarks/train_features/{dataset}.tsv"
    threads: THREADS["train"]
    resources:
        mem_mb=4000,
        runtime=job_minutes("features"),
        gpu=ONE_GPU,
    conda:
        ENV
    params:
        csfgan=CSFGAN,
        scale=SCALE,
        device=DEVICE,
        data=lambda wc: f"data/prepared/{wc.dataset}",
    shell:
        "{params.csfgan} train-features --data {params.data} --scale {params.scale} --out {output.checkpoint} "
        "--seed 0 --device {params.device} --threads {threads} > {log} 2>&1"


rule pretrain_text_eval:
    input:
        "data/prepared/{dataset}/manifest.json",
    output:
        checkpoint="results/text_encoder/{dataset}.eval.pt",
        metrics="results/text_encoder/{dataset}.eval.metrics.json",
    log:
        "logs/pretrain_text/{dataset}.eval.log",
    benchmark:
        "benchmarks/pretrain_text/{dataset}.eval.tsv"
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
        "{params.csfgan} pretrain-text --data {params.data} --scale {params.scale} --seed 1 "
        "--out {output.checkpoint} --device {params.device} --threads {threads} > {log} 2>&1"

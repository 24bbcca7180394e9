# The evaluation protocol exported per dataset (csfgan protocol export), the classical peers run on it
# exactly as a user's method is (csfgan peer), and every external method's folder scored by the code
# evaluate measures our runs with (csfgan score); Table 1 shows the centre-protocol scores as rows marked
# external (csfgan/report/external.py), and the irregular protocol's are scored per mask-area bin.

rule protocol_export:
    input:
        "data/prepared/{dataset}/manifest.json",
    output:
        directory("results/protocol/{dataset}/{mask}"),
    wildcard_constraints:
        mask="|".join(MASKS),
    log:
        "logs/protocol/{dataset}/{mask}.log",
    benchmark:
        "benchmarks/protocol/{dataset}/{mask}.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    conda:
        ENV
    params:
        csfgan=CSFGAN,
        data=lambda wc: f"data/prepared/{wc.dataset}",
        # Our runs' evaluation settings: the protocol is the one evaluate measures them on.
        hole_fraction=PLAN.scale.data.hole_fraction,
        caption_seed=PLAN.scale.eval.caption_seed,
    shell:
        "{params.csfgan} protocol export --dataset {params.data} --split test --mask {wildcards.mask} "
        "--hole-fraction {params.hole_fraction} --caption-seed {params.caption_seed} --out {output} > {log} 2>&1"


rule peer:
    input:
        "results/protocol/{dataset}/{mask}",
    output:
        directory("results/predictions/{dataset}/{peer}/{mask}"),
    wildcard_constraints:
        peer="|".join(PEERS) or "^$",
        mask="|".join(MASKS),
    log:
        "logs/peer/{dataset}/{peer}/{mask}.log",
    benchmark:
        "benchmarks/peer/{dataset}/{peer}/{mask}.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=60,
    conda:
        ENV
    params:
        csfgan=CSFGAN,
    shell:
        "{params.csfgan} peer --method {wildcards.peer} --protocol {input} --out {output} > {log} 2>&1"


# Our run's generator on a protocol folder, as a user's method would run: on the config's device, as
# evaluate (at the paper scale it is a generator forward per test image, hours on a CPU).
rule predict_run:
    input:
        protocol="results/protocol/{dataset}/{mask}",
        final="results/runs/{dataset}/{run}/seed{seed}/final.pt",
    output:
        directory("results/predictions/{dataset}/csfgan-{run}-seed{seed}/{mask}"),
    wildcard_constraints:
        mask="|".join(MASKS),
    log:
        "logs/predict/{dataset}/csfgan-{run}-seed{seed}/{mask}.log",
    benchmark:
        "benchmarks/predict/{dataset}/csfgan-{run}-seed{seed}/{mask}.tsv"
    threads: THREADS["evaluate"]
    resources:
        mem_mb=4000,
        runtime=job_minutes("evaluate"),
        gpu=ONE_GPU,
    conda:
        ENV
    params:
        csfgan=CSFGAN,
        device=DEVICE,
    shell:
        "{params.csfgan} predict --checkpoint {input.final} --protocol {input.protocol} --out {output} "
        "--device {params.device} "
        "--threads {threads} > {log} 2>&1"


# Scoring measures only (no generator): it runs on the CPU wherever the DAG runs, so it needs no GPU.
rule score:
    input:
        protocol="results/protocol/{dataset}/{mask}",
        predictions=predictions_folder,
        data="data/prepared/{dataset}/manifest.json",
        feature_net="results/feature_net/{dataset}.pt",
        eval_text_encoder="results/text_encoder/{dataset}.eval.pt",
    output:
        metrics="results/external/{dataset}/{method}/{mask}/metrics.json",
        per_image="results/external/{dataset}/{method}/{mask}/eval/per_image.npz",
    wildcard_constraints:
        method="|".join(SCORED) or "^$",
        mask="|".join(MASKS),
    log:
        "logs/score/{dataset}/{method}/{mask}.log",
    benchmark:
        "benchmarks/score/{dataset}/{method}/{mask}.tsv"
    threads: THREADS["evaluate"]
    resources:
        mem_mb=4000,
        runtime=job_minutes("evaluate"),
    conda:
        ENV
    params:
        csfgan=CSFGAN,
        data=lambda wc: f"data/prepared/{wc.dataset}",
        out=lambda wc: f"results/external/{wc.dataset}/{wc.method}/{wc.mask}",
    shell:
        "{params.csfgan} score --protocol {input.protocol} --predictions {input.predictions} --name {wildcards.method} "
        "--out {params.out} --dataset {params.data} --feature-net {input.feature_net} "
        "--eval-text-encoder {input.eval_text_encoder} --device cpu --threads {threads} > {log} 2>&1"


rule irregular_table:
    input:
        irregular_scores(),
    output:
        expand("results/tables/irregular.{ext}", ext=["md", "csv"]),
    log:
        "logs/report/irregular.log",
    benchmark:
        "benchmarks/report/irregular.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        ENV
    params:
        csfgan=CSFGAN,
    shell:
        "{params.csfgan} bins --scores {input} --out results/tables/irregular > {log} 2>&1"

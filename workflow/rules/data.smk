rule prepare_synthetic:
    output:
        "data/prepared/{dataset}/manifest.json",
    wildcard_constraints:
        dataset="synth-[a-z]+",
    log:
        "logs/prepare/{dataset}.log",
    benchmark:
        "benchmarks/prepare/{dataset}.tsv"
    threads: 2
    resources:
        mem_mb=4000,
        runtime=30,
    conda:
        ENV
    params:
        out=lambda wc: f"data/prepared/{wc.dataset}",
    shell:
        "{CSFGAN} prepare --dataset {wildcards.dataset} --scale {SCALE} --out {params.out} "
        "--workers {threads} > {log} 2>&1"


rule preview:
    input:
        "data/prepared/{dataset}/manifest.json",
    output:
        report("results/figures/data_{dataset}.png", category="Data", caption="../report/data.rst"),
    log:
        "logs/preview/{dataset}.log",
    benchmark:
        "benchmarks/preview/{dataset}.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        ENV
    params:
        data=lambda wc: f"data/prepared/{wc.dataset}",
    shell:
        "{CSFGAN} preview --data {params.data} -o {output} > {log} 2>&1"

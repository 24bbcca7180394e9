rule prepare_synthetic:
    input:
        settings=PREPARE_CONFIG,
    output:
        "data/prepared/{dataset}/manifest.json",
    wildcard_constraints:
        dataset="synth-[a-z]+",
    log:
        "logs/prepare/{dataset}.log",
    benchmark:
        "benchmarks/prepare/{dataset}.tsv"
    threads: THREADS["prepare"]
    resources:
        mem_mb=4000,
        runtime=30,
    conda:
        ENV
    params:
        csfgan=CSFGAN,
        scale=SCALE,
        out=lambda wc: f"data/prepared/{wc.dataset}",
    shell:
        "{params.csfgan} prepare --dataset {wildcards.dataset} --scale {params.scale} --out {params.out} "
        "--workers {threads} > {log} 2>&1"


rule download:
    output:
        f"{DOWNLOADS}/{{dataset}}.done",
    wildcard_constraints:
        dataset="cub|oxford102",
    log:
        "logs/download/{dataset}.log",
    benchmark:
        "benchmarks/download/{dataset}.tsv"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=240,
    conda:
        ENV
    params:
        csfgan=CSFGAN,
        out=lambda wc, output: os.path.dirname(output[0]),
        urls=source_options("url", MIRRORS),
        md5s=source_options("md5", MD5S),
    shell:
        "{params.csfgan} download --dataset {wildcards.dataset} --out {params.out} {params.urls} {params.md5s} "
        "> {log} 2>&1 "
        "&& touch {output}"


rule prepare_real:
    input:
        done=f"{DOWNLOADS}/{{dataset}}.done",
        captions=caption_archive,
        settings=PREPARE_CONFIG,
    output:
        "data/prepared/{dataset}/manifest.json",
    wildcard_constraints:
        dataset="cub|oxford102",
    log:
        "logs/prepare/{dataset}.log",
    benchmark:
        "benchmarks/prepare/{dataset}.tsv"
    threads: THREADS["prepare"]
    resources:
        mem_mb=8000,
        runtime=120,
    conda:
        ENV
    params:
        csfgan=CSFGAN,
        scale=SCALE,
        out=lambda wc: f"data/prepared/{wc.dataset}",
        downloads=lambda wc, input: os.path.dirname(input.done),
        md5s=source_options("md5", MD5S),
    shell:
        "{params.csfgan} prepare --dataset {wildcards.dataset} --scale {params.scale} --out {params.out} "
        "--downloads {params.downloads} --captions-archive '{input.captions}' {params.md5s} --workers {threads} "
        "> {log} 2>&1"


rule preview:
    input:
        "data/prepared/{dataset}/manifest.json",
    output:
        report("results/figures/data_{dataset}.png", category="4. Data", caption="../report/data.rst"),
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
        csfgan=CSFGAN,
        data=lambda wc: f"data/prepared/{wc.dataset}",
    shell:
        "{params.csfgan} preview --data {params.data} -o {output} > {log} 2>&1"

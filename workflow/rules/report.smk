rule claims:
    input:
        metrics=all_metrics(),
        tables=config["tables"],
        claims=CLAIMS_FILE,
    output:
        report(
            expand("results/claims.{ext}", ext=["md", "csv"]),
            category="1. Claims",
            caption="../report/claims.rst",
        ),
    log:
        "logs/report/claims.log",
    benchmark:
        "benchmarks/report/claims.tsv"
    threads: THREADS["report"]
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        ENV
    params:
        csfgan=CSFGAN,
        configfile=workflow.configfiles[-1] if workflow.configfiles else "experiments/config.yaml",
    shell:
        "{params.csfgan} claims --config {params.configfile} --out results/claims > {log} 2>&1"


rule tables:
    input:
        metrics=all_metrics(),
        tables=config["tables"],
    output:
        report(
            expand("results/tables/{table}.{ext}", table=TABLES, ext=TABLE_FORMATS),
            category="2. Tables",
            caption="../report/tables.rst",
        ),
    log:
        "logs/report/tables.log",
    benchmark:
        "benchmarks/report/tables.tsv"
    threads: THREADS["report"]
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        ENV
    params:
        csfgan=CSFGAN,
        configfile=workflow.configfiles[-1] if workflow.configfiles else "experiments/config.yaml",
    shell:
        "{params.csfgan} tables --config {params.configfile} --out results/tables > {log} 2>&1"


rule figures:
    input:
        metrics=dataset_metrics,
    output:
        report(
            expand("results/figures/{figure}_{{dataset}}.{ext}", figure=FIGURES, ext=["png", "pdf"]),
            category="3. Figures",
            subcategory="{dataset}",
            caption="../report/figures.rst",
        ),
    log:
        "logs/report/figures_{dataset}.log",
    benchmark:
        "benchmarks/report/figures_{dataset}.tsv"
    threads: THREADS["report"]
    resources:
        mem_mb=4000,
        runtime=30,
    conda:
        ENV
    params:
        csfgan=CSFGAN,
        configfile=workflow.configfiles[-1] if workflow.configfiles else "experiments/config.yaml",
    shell:
        "{params.csfgan} figures --config {params.configfile} --dataset {wildcards.dataset} --out results/figures "
        "--threads {threads} > {log} 2>&1"


rule training_curves:
    input:
        all_metrics(),
    output:
        report(
            expand("results/figures/training_curves.{ext}", ext=["png", "pdf"]),
            category="3. Figures",
            caption="../report/curves.rst",
        ),
    log:
        "logs/report/training_curves.log",
    benchmark:
        "benchmarks/report/training_curves.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        ENV
    params:
        csfgan=CSFGAN,
        configfile=workflow.configfiles[-1] if workflow.configfiles else "experiments/config.yaml",
    shell:
        "{params.csfgan} curves --config {params.configfile} --out results/figures > {log} 2>&1"

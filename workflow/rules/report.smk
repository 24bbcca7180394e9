# Report rules read the config Snakemake resolved (every --configfile and --config override), written
# by common.smk to results/config/workflow.yaml and passed to them as --config; it is their input, so
# a changed setting (datasets, seeds, tables) redraws them.


rule claims:
    input:
        config=RESOLVED_CONFIG,
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
    shell:
        "{params.csfgan} claims --config {input.config} --out results/claims > {log} 2>&1"


rule table:
    input:
        config=RESOLVED_CONFIG,
        tables=config["tables"],
        metrics=table_metrics,
        # Table 1's external rows (workflow/rules/protocol.smk).
        external=table_external,
    output:
        report(
            expand("results/tables/{{table}}.{ext}", ext=TABLE_FORMATS),
            category="2. Tables",
            caption="../report/tables.rst",
        ),
    wildcard_constraints:
        table="|".join(TABLES),
    log:
        "logs/report/{table}.log",
    benchmark:
        "benchmarks/report/{table}.tsv"
    threads: THREADS["report"]
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        ENV
    params:
        csfgan=CSFGAN,
    shell:
        "{params.csfgan} tables --config {input.config} --table {wildcards.table} --out results/tables > {log} 2>&1"


rule figures:
    input:
        config=RESOLVED_CONFIG,
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
    shell:
        "{params.csfgan} figures --config {input.config} --dataset {wildcards.dataset} --out results/figures "
        "--threads {threads} > {log} 2>&1"


rule training_curves:
    input:
        config=RESOLVED_CONFIG,
        metrics=all_metrics(),
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
    shell:
        "{params.csfgan} curves --config {input.config} --out results/figures > {log} 2>&1"

rule evaluate:
    input:
        "results/runs/{dataset}/{run}/seed{seed}/final.pt",
    output:
        metrics="results/runs/{dataset}/{run}/seed{seed}/metrics.json",
        per_image="results/runs/{dataset}/{run}/seed{seed}/eval/per_image.npz",
    log:
        "logs/evaluate/{dataset}/{run}/seed{seed}.log",
    benchmark:
        "benchmarks/evaluate/{dataset}/{run}/seed{seed}.tsv"
    threads: THREADS["evaluate"]
    resources:
        mem_mb=6000,
        runtime=240,
        gpu=GPUS,
    conda:
        ENV
    params:
        csfgan=CSFGAN,
        device=DEVICE,
        run=lambda wc: f"results/runs/{wc.dataset}/{wc.run}/seed{wc.seed}",
    shell:
        "{params.csfgan} evaluate --run {params.run} --out {output.metrics} --device {params.device} --threads {threads} > {log} 2>&1"

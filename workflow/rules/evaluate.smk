rule evaluate:
    input:
        final="results/runs/{dataset}/{run}/seed{seed}/final.pt",
        data="data/prepared/{dataset}/manifest.json",
        feature_net="results/feature_net/{dataset}.pt",
        eval_text_encoder="results/text_encoder/{dataset}.eval.pt",
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
        runtime=job_minutes("evaluate"),
        gpu=ONE_GPU,
    conda:
        ENV
    params:
        csfgan=CSFGAN,
        device=DEVICE,
        run=lambda wc: f"results/runs/{wc.dataset}/{wc.run}/seed{wc.seed}",
    shell:
        "{params.csfgan} evaluate --run {params.run} --out {output.metrics} --feature-net {input.feature_net} "
        "--eval-text-encoder {input.eval_text_encoder} --device {params.device} --threads {threads} > {log} 2>&1"

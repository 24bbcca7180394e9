# csfgan: from data to the paper's Tables 1-4 and figures. The rules live in workflow/rules/; each
# calls `csfgan <subcommand>` and holds no logic. Configure with experiments/config.yaml (the
# default, embedded synthetic datasets) or --configfile experiments/paper.yaml (CUB, Oxford-102).
from snakemake.utils import min_version, validate

min_version("9.0")


configfile: "experiments/config.yaml"


# `--config seeds=[0,1]` reaches the config as ["0", "1"]: whole numbers written as text count as numbers.
if isinstance(config.get("seeds"), list):
    config["seeds"] = [int(s) if isinstance(s, str) and s.isdigit() else s for s in config["seeds"]]


validate(config, "workflow/schemas/config.schema.yaml")


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/text_encoder.smk"
include: "workflow/rules/feature_net.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/protocol.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/targets.smk"


# On a cluster these run on the submit host: downloads need the internet (compute nodes are often
# offline) and the report rules are small.
localrules:
    download,
    preview,
    table,
    figures,
    training_curves,


rule all:
    input:
        all_targets(),
        external_targets(),
    default_target: True

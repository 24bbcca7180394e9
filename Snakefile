# csfgan: from data to the paper's tables and figures. Rules live in workflow/rules/; they call
# `csfgan <subcommand>` and hold no logic. Configure with experiments/config.yaml (default).
from snakemake.utils import min_version, validate

min_version("9.0")


configfile: "experiments/config.yaml"


validate(config, "workflow/schemas/config.schema.yaml")


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"


rule all:
    input:
        prepared_all(),
        previews_all(),
    default_target: True

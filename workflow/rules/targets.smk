# Named targets: `snakemake table3` (one table and only the runs it needs), `snakemake variant_full`
# (every dataset and seed of one variant, trained and evaluated); one dataset is
# `--config datasets=[synth-birds]`.
for _table in TABLES:

    rule:
        name:
            _table
        input:
            expand("results/tables/{table}.{ext}", table=_table, ext=TABLE_FORMATS),


for _variant in PLAN.variants():

    rule:
        name:
            variant_target(_variant)
        input:
            variant_metrics(_variant),

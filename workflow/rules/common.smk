# Shared names and input functions. Rules run the csfgan package from this checkout, so they work
# the same with and without --use-conda (the conda env holds the dependencies, not csfgan itself).
CSFGAN = f"PYTHONPATH={workflow.basedir}:$PYTHONPATH python -m csfgan"
ENV = "../../environment.yml"
SCALE = config["scale"]
DATASETS = config["datasets"]


def prepared_all():
    return expand("data/prepared/{dataset}/manifest.json", dataset=DATASETS)


def previews_all():
    return expand("results/figures/data_{dataset}.png", dataset=DATASETS)

import os

import pytest
import torch

# Tests run on 2 shared cores; intra-op threads beyond that only add contention.
torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture
def tiny_prepared(tmp_path):
    """A 16 px prepared dataset written through PreparedWriter: 6 train and 4 test images."""
    from tests.helpers import write_tiny_prepared

    return write_tiny_prepared(tmp_path / "tiny")


@pytest.fixture(scope="session")
def smoke_pipeline(tmp_path_factory):
    """synth-birds prepared at the smoke scale and a DAMSM text encoder pretrained on it (seconds)."""
    from csfgan.config import load_scale
    from csfgan.damsm import pretrain_text
    from csfgan.data.synthetic import prepare_synthetic

    root = tmp_path_factory.mktemp("smoke")
    scale = load_scale("smoke")
    data = root / "synth-birds"
    prepare_synthetic("synth-birds", data, scale, workers=1)
    encoder = root / "text_encoder.pt"
    pretrain_text(data, scale, encoder, seed=0, workers=1)
    return {"root": root, "data": data, "text_encoder": encoder}


@pytest.fixture(scope="session")
def smoke_metric_nets(smoke_pipeline):
    """The networks evaluation measures with on the smoke data, none of them a training target: the
    FID feature network (seed 0) and an R-precision DAMSM pair pretrained with seed 1."""
    from csfgan.config import load_scale
    from csfgan.damsm import pretrain_text
    from csfgan.metrics.feature_net import train_feature_net

    scale = load_scale("smoke")
    root = smoke_pipeline["root"]
    feature_net = root / "feature_net.pt"
    train_feature_net(smoke_pipeline["data"], scale, feature_net, seed=0, progress=False)
    eval_text = root / "text_encoder.eval.pt"
    pretrain_text(smoke_pipeline["data"], scale, eval_text, seed=1, workers=1)
    return {"feature_net": feature_net, "eval_text_encoder": eval_text}

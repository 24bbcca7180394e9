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

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

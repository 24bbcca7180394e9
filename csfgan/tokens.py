"""The reserved tokens every vocabulary starts with: ``<pad>`` (id 0) and ``<unk>`` (id 1).

Apart from the vocabulary (``csfgan.data.text``), so that the networks (``csfgan.models``) can pad and
mask token ids without depending on the data layer.
"""

from __future__ import annotations

PAD, UNK = "<pad>", "<unk>"
PAD_ID, UNK_ID = 0, 1

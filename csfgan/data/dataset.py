"""Torch access to a prepared dataset: image, hole mask, caption tokens.

Images are read from the memory-mapped uint8 array (no decoding per step). ``batch`` gathers a whole
batch with one fancy-index per array, which is what the training loop uses; ``__getitem__`` serves
the same records one at a time for a ``DataLoader``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from csfgan.data.masks import mask_for
from csfgan.data.prepared import PreparedData, PreparedDataError


def seeded_caption_choice(lengths: np.ndarray, seed: int) -> np.ndarray:
    """One caption per image, chosen by a seeded rule among its non-empty captions (evaluation)."""
    rng = np.random.default_rng(seed)
    valid = lengths > 0
    counts = valid.sum(axis=1)
    if (counts == 0).any():
        bad = int(np.flatnonzero(counts == 0)[0])
        raise PreparedDataError(f"image {bad} has no non-empty caption")
    # The k-th valid caption, k uniform in [0, count): vectorised without a per-image loop.
    k = (rng.random(len(lengths)) * counts).astype(np.int64)
    order = np.cumsum(valid, axis=1) - 1
    return np.argmax((order == k[:, None]) & valid, axis=1)


# ITU-R 601 luma, as torchvision's rgb_to_grayscale (and so RandomGrayscale) weighs the channels.
LUMA = (0.2989, 0.587, 0.114)


def augment(image: torch.Tensor, generator: torch.Generator, *, flip: bool, grayscale: float) -> torch.Tensor:
    """Per image of ``image`` (B, 3, H, W): a left-right mirror with probability 1/2 (if ``flip``), then
    its luminance on all three channels with probability ``grayscale``. Two draws per image from
    ``generator`` whatever the settings, so the batches after it do not depend on them."""
    b = image.shape[0]
    mirror = (torch.rand(b, generator=generator) < 0.5) & flip
    gray = torch.rand(b, generator=generator) < grayscale
    out = torch.where(mirror[:, None, None, None], image.flip(-1), image)
    luma = (out * torch.tensor(LUMA, dtype=out.dtype)[None, :, None, None]).sum(1, keepdim=True)
    return torch.where(gray[:, None, None, None], luma.expand_as(out), out).contiguous()


class InpaintingDataset(torch.utils.data.Dataset):
    """Records of one split of a prepared dataset.

    ``captions="random"`` draws a caption per access (training); ``"seeded"`` fixes one caption per
    image with :func:`seeded_caption_choice` (evaluation; the choice is recorded by the caller).
    """

    def __init__(
        self,
        root: Path | str | PreparedData,
        split: str,
        *,
        mask: str = "center",
        hole_fraction: float = 0.5,
        captions: str = "random",
        seed: int = 0,
    ):
        self.data = root if isinstance(root, PreparedData) else PreparedData(Path(root))
        self.split_name = split
        self.split = self.data.split(split)
        self.mask_kind = mask
        self.hole_fraction = hole_fraction
        self.seed = seed
        self.resolution = self.data.resolution
        if captions not in ("random", "seeded"):
            raise ValueError(f"captions must be 'random' or 'seeded', got {captions!r}")
        self.captions = captions
        self.caption_choice = seeded_caption_choice(self.split.lengths, seed) if captions == "seeded" else None
        self._center = torch.from_numpy(mask_for(0, self.resolution, "center", hole_fraction, seed))

    def __len__(self) -> int:
        return len(self.split)

    def masks(self, indices: np.ndarray) -> torch.Tensor:
        if self.mask_kind == "center":
            return self._center.expand(len(indices), 1, -1, -1).clone()
        stack = [mask_for(int(i), self.resolution, self.mask_kind, self.hole_fraction, self.seed) for i in indices]
        return torch.from_numpy(np.stack(stack))[:, None]

    def batch(self, indices: np.ndarray | torch.Tensor, caption_index: np.ndarray | torch.Tensor | None = None):
        """A batch as a dict of tensors; ``caption_index`` defaults to the dataset's caption rule."""
        idx = np.asarray(indices, dtype=np.int64)
        if caption_index is None:
            if self.caption_choice is not None:
                caption_index = self.caption_choice[idx]
            else:
                caption_index = self._random_valid_captions(idx)
        cap = np.asarray(caption_index, dtype=np.int64)
        lengths = self.split.lengths[idx, cap]
        if (lengths == 0).any():
            bad = int(idx[np.flatnonzero(lengths == 0)[0]])
            raise PreparedDataError(f"{self.split.dir}: image {bad} ({self.split.keys[bad]}) has an empty caption")
        # Sorted reads are sequential on the memory map; restore the requested order afterwards.
        order = np.argsort(idx, kind="stable")
        images = np.empty((len(idx), *self.split.images.shape[1:]), dtype=np.uint8)
        images[order] = self.split.images[idx[order]]
        image = torch.from_numpy(images).permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)
        return {
            "image": image.contiguous(),
            "mask": self.masks(idx),
            "tokens": torch.from_numpy(self.split.tokens[idx, cap].astype(np.int64)),
            "length": torch.from_numpy(lengths.astype(np.int64)),
            "caption_index": torch.from_numpy(cap),
            "class_id": torch.from_numpy(self.split.class_ids[idx].astype(np.int64)),
            "index": torch.from_numpy(idx),
        }

    def _random_valid_captions(self, idx: np.ndarray, generator: torch.Generator | None = None) -> np.ndarray:
        # torch's RNG so that DataLoader worker seeding (or the trainer's generator) governs the draw.
        valid = self.split.lengths[idx] > 0
        scores = torch.rand(valid.shape, generator=generator).numpy() * valid
        return scores.argmax(axis=1)

    def sample(self, batch_size: int, generator: torch.Generator, *, flip: bool = False,
               grayscale: float = 0.0) -> dict[str, torch.Tensor]:
        """A random training batch (images with replacement, one random non-empty caption each).

        ``flip``: each image mirrored left-right with probability 1/2; ``grayscale``: each image turned
        to its luminance (replicated to 3 channels) with this probability. The authors' training
        transforms (RandomHorizontalFlip, RandomGrayscale(p=0.1)); :func:`augment` does both.
        Everything random comes from ``generator``, so saving its state makes a run resumable.
        """
        idx = torch.randint(len(self), (batch_size,), generator=generator).numpy()
        out = self.batch(idx, self._random_valid_captions(idx, generator))
        out["image"] = augment(out["image"], generator, flip=flip, grayscale=grayscale)
        return out

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {k: v[0] for k, v in self.batch(np.array([i])).items()}

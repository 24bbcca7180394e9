"""One training step: a D step (Eq. 11) and a G step (Eq. 12), in ``train.update_order``, of the networks
one variant trains.

``csfgan train`` runs it in its loop and ``csfgan bench`` times it, so the benchmark measures exactly the
training step; neither depends on the other.
"""

from __future__ import annotations

import contextlib

import torch
import torch.distributed as dist
from torch import nn

from csfgan.config import CHOICES, ScaleConfig
from csfgan.errors import UserError
from csfgan.losses import GeneratorLoss, check_pairing, discriminator_loss, sentence_snr
from csfgan.models.discriminators import GlobalDiscriminator, WordLevelDiscriminator
from csfgan.models.generator import Generator


class TrainingDiverged(UserError, RuntimeError):
    """A loss became NaN or infinite; the last good checkpoint is kept."""


class Models(nn.Module):
    """The trainable networks of one variant (the frozen text encoder is kept apart)."""

    def __init__(self, cfg: ScaleConfig):
        super().__init__()
        self.generator = Generator(cfg)
        self.global_d = GlobalDiscriminator(cfg)
        self.word_d = WordLevelDiscriminator(cfg) if cfg.model.word_level_discriminator else None
        self.update_order = cfg.train.update_order  # training_step's default order

    def discriminator_parameters(self):
        yield from self.global_d.parameters()
        if self.word_d is not None:
            yield from self.word_d.parameters()


GRADIENT_BUCKET_ELEMENTS = 1 << 23  # 32 MB of fp32 per all-reduce: few calls, bounded extra memory


def _average_gradients(params, world: int) -> None:
    """Mean of every rank's gradients, in flat buckets (one collective per ~32 MB, not one per tensor).

    Explicit all-reduce instead of DistributedDataParallel: the G step runs the discriminators'
    forward inside the generator loss, which DDP's bucketed hooks handle poorly.
    """
    if world == 1:
        return
    grads = [p.grad for p in params if p.grad is not None]
    bucket: list[torch.Tensor] = []
    size = 0
    for i, g in enumerate(grads):
        bucket.append(g)
        size += g.numel()
        if size >= GRADIENT_BUCKET_ELEMENTS or i == len(grads) - 1:
            flat = torch.cat([t.reshape(-1) for t in bucket]) if len(bucket) > 1 else bucket[0].reshape(-1)
            dist.all_reduce(flat)
            flat.div_(world)
            if len(bucket) > 1 or flat.data_ptr() != bucket[0].data_ptr():
                offset = 0
                for t in bucket:
                    t.copy_(flat[offset:offset + t.numel()].view_as(t))
                    offset += t.numel()
            bucket, size = [], 0


def _check_finite(values: dict[str, torch.Tensor], step: int, which: str, world: int = 1) -> None:
    """Stop before any update when a loss term is NaN or infinite. Under torchrun the ranks agree
    first, so every rank stops at this step with the error (none is left waiting in an all-reduce)."""
    # One host sync per check (not one per term): on a GPU each sync stalls the queue of kernels.
    finite = torch.stack([torch.isfinite(v).all() for v in values.values()])
    flag = (~finite.all()).to(torch.float32).reshape(1)
    if world > 1:
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    if not flag.item():
        return
    bad = {k: float(v) for k, v in values.items() if not torch.isfinite(v).all()}
    elsewhere = not bad
    if bad or elsewhere:
        rank = f" on rank {dist.get_rank()}" if world > 1 else ""
        what = f"non-finite {which} loss terms {bad}{rank}" if bad else f"a non-finite {which} loss on another rank"
        raise TrainingDiverged(f"step {step}: {what}; stopped before updating, the last good checkpoint is kept.")


def training_precision(cfg: ScaleConfig, device: torch.device):
    """The context the training step's forward passes run in: bf16 autocast when ``train.amp``.

    bf16 keeps fp32's exponent range, so no loss scaling is needed; weights, optimiser state and
    gradients stay fp32. On CPUs with AVX512-BF16 the convolutions run about twice as fast.
    """
    return torch.autocast(device.type, dtype=torch.bfloat16) if cfg.train.amp else contextlib.nullcontext()


def _discriminator_step(models: Models, loss_fn: GeneratorLoss, opt_d, real, fake_d, mask, words, word_mask, *,
                        amp, world: int, step: int) -> torch.Tensor:
    """One D update (Eq. 11, or the authors' relativistic form) on the detached output ``fake_d``."""
    check_pairing(models.global_d, loss_fn.gan_form)
    with amp:
        real_word = fake_word = None
        if models.word_d is not None:
            real_word = models.word_d(real, mask, words, word_mask)
            fake_word = models.word_d(fake_d, mask, words, word_mask)
        # ``score`` pairs each image with the other for the relativistic D and ignores the partner otherwise.
        real_logits = models.global_d.score(real, fake_d)
        fake_logits = models.global_d.score(fake_d, real)
        loss_d = discriminator_loss(real_logits, fake_logits, real_word, fake_word, form=loss_fn.gan_form)
    _check_finite({"d": loss_d}, step, "discriminator", world)
    opt_d.zero_grad(set_to_none=True)
    loss_d.backward()
    _average_gradients(models.discriminator_parameters(), world)
    opt_d.step()
    return loss_d


def _generator_step(models: Models, loss_fn: GeneratorLoss, opt_g, real, fake, aux, mask, words, sent, word_mask,
                    *, class_ids, amp, world: int, step: int) -> dict[str, torch.Tensor]:
    """One G update (Eq. 12) through the discriminators as they are now; their parameters are frozen
    meanwhile so this pass leaves no gradient in them."""
    for p in models.discriminator_parameters():
        p.requires_grad_(False)
    try:
        with amp:
            loss_g, terms = loss_fn(real, fake, aux=aux, global_d=models.global_d, word_d=models.word_d,
                                    mask=mask, words=words, word_mask=word_mask, sent=sent, class_ids=class_ids)
    finally:
        for p in models.discriminator_parameters():
            p.requires_grad_(True)
    _check_finite(terms, step, "generator", world)
    opt_g.zero_grad(set_to_none=True)
    loss_g.backward()
    _average_gradients(models.generator.parameters(), world)
    opt_g.step()
    return terms


def training_step(models: Models, loss_fn: GeneratorLoss, opt_g, opt_d, real, mask, words, sent, word_mask, *,
                  class_ids=None, amp=None, world: int = 1, step: int = 0, update_order: str | None = None,
                  ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """One D step (Eq. 11) and one G step (Eq. 12); returns the D loss and the G terms, with
    ``sentence_snr/<layer>`` (``csfgan.losses.sentence_snr``) for each sentence-fusion layer.

    ``update_order`` (default ``models.update_order``, i.e. ``train.update_order``): ``"g-first"`` (the
    authors' code; the paper is silent) updates G through the discriminators as they were before this
    step, then D on the detached output;
    ``"d-first"`` updates D first and then G through the just-updated discriminators (alternating
    updates as in GAN training loops since Goodfellow et al.). Either way one generator forward serves
    both steps: D sees it detached, G keeps its graph.

    Also what ``csfgan bench`` times, so the benchmark measures exactly the training step.
    """
    update_order = update_order or models.update_order
    if update_order not in CHOICES["train.update_order"]:
        raise ValueError(f"train.update_order: unknown {update_order!r}; one of "
                         f"{', '.join(CHOICES['train.update_order'])}")
    amp = amp if amp is not None else contextlib.nullcontext()
    with amp:
        _, fake, aux = models.generator(real, mask, sent, words, word_mask)
    d_args = (models, loss_fn, opt_d, real, fake.detach(), mask, words, word_mask)
    g_args = (models, loss_fn, opt_g, real, fake, aux, mask, words, sent, word_mask)
    if update_order == "d-first":
        loss_d = _discriminator_step(*d_args, amp=amp, world=world, step=step)
        terms = _generator_step(*g_args, class_ids=class_ids, amp=amp, world=world, step=step)
    else:
        terms = _generator_step(*g_args, class_ids=class_ids, amp=amp, world=world, step=step)
        loss_d = _discriminator_step(*d_args, amp=amp, world=world, step=step)
    terms.update({f"sentence_snr/{k}": sentence_snr(mu, aux["ca_logvar"][k]) for k, mu in aux["ca_mu"].items()})
    return loss_d.detach(), terms

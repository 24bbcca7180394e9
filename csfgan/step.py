"""One training step: an alternating D step (Eq. 11) and G step (Eq. 12) of the networks one variant trains.

``csfgan train`` runs it in its loop and ``csfgan bench`` times it, so the benchmark measures exactly the
training step; neither depends on the other.
"""

from __future__ import annotations

import contextlib

import torch
import torch.distributed as dist
from torch import nn

from csfgan.config import ScaleConfig
from csfgan.errors import UserError
from csfgan.losses import GeneratorLoss, discriminator_loss, sentence_snr
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

    def discriminator_parameters(self):
        yield from self.global_d.parameters()
        if self.word_d is not None:
            yield from self.word_d.parameters()


def _average_gradients(params, world: int) -> None:
    # Explicit all-reduce instead of DistributedDataParallel: the G step runs the discriminators'
    # forward inside the generator loss, which DDP's bucketed hooks handle poorly.
    if world == 1:
        return
    for p in params:
        if p.grad is not None:
            dist.all_reduce(p.grad)
            p.grad.div_(world)


def _check_finite(values: dict[str, torch.Tensor], step: int, which: str) -> None:
    bad = {k: float(v) for k, v in values.items() if not torch.isfinite(v).all()}
    if bad:
        raise TrainingDiverged(
            f"step {step}: non-finite {which} loss terms {bad}; stopped before updating, the last good "
            f"checkpoint is kept."
        )


def training_precision(cfg: ScaleConfig, device: torch.device):
    """The context the training step's forward passes run in: bf16 autocast when ``train.amp``.

    bf16 keeps fp32's exponent range, so no loss scaling is needed; weights, optimiser state and
    gradients stay fp32. On CPUs with AVX512-BF16 the convolutions run about twice as fast.
    """
    return torch.autocast(device.type, dtype=torch.bfloat16) if cfg.train.amp else contextlib.nullcontext()


def training_step(models: Models, loss_fn: GeneratorLoss, opt_g, opt_d, real, mask, words, sent, word_mask, *,
                  class_ids=None, amp=None, world: int = 1, step: int = 0,
                  ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """One alternating D step (Eq. 11) and G step (Eq. 12); returns the D loss and the G terms, with
    ``sentence_snr/<layer>`` (``csfgan.losses.sentence_snr``) for each sentence-fusion layer.

    Also what ``csfgan bench`` times, so the benchmark measures exactly the training step.
    """
    amp = amp if amp is not None else contextlib.nullcontext()
    # One generator forward serves both steps: D sees it detached, G keeps its graph.
    with amp:
        _, fake, aux = models.generator(real, mask, sent, words, word_mask)

    with amp:
        fake_d = fake.detach()
        real_word = fake_word = None
        if models.word_d is not None:
            real_word = models.word_d(real, mask, words, word_mask)
            fake_word = models.word_d(fake_d, mask, words, word_mask)
        loss_d = discriminator_loss(models.global_d(real), models.global_d(fake_d), real_word, fake_word)
    _check_finite({"d": loss_d}, step, "discriminator")
    opt_d.zero_grad(set_to_none=True)
    loss_d.backward()
    _average_gradients(models.discriminator_parameters(), world)
    opt_d.step()

    # G step through the just-updated discriminators (alternating updates); their parameters are
    # frozen meanwhile so this pass leaves no gradient in them.
    for p in models.discriminator_parameters():
        p.requires_grad_(False)
    with amp:
        loss_g, terms = loss_fn(real, fake, aux=aux, global_d=models.global_d, word_d=models.word_d,
                                mask=mask, words=words, word_mask=word_mask, sent=sent, class_ids=class_ids)
    for p in models.discriminator_parameters():
        p.requires_grad_(True)
    _check_finite(terms, step, "generator")
    opt_g.zero_grad(set_to_none=True)
    loss_g.backward()
    _average_gradients(models.generator.parameters(), world)
    opt_g.step()
    terms.update({f"sentence_snr/{k}": sentence_snr(mu, aux["ca_logvar"][k]) for k, mu in aux["ca_mu"].items()})
    return loss_d.detach(), terms

"""Training the protective U-Net (Ye et al., ACM MMSys 2022, §3.2-3.3, Algorithm 1, and
§4.1.3; the schedule and details from the authors' released training code).

Loss, on a batch x with true labels y and generator output x' (both in [0, 1]):

    L = CE(F_target(x'), y) − CE(F_aux(x'), y) + 0.5 · SSIM(x, x')

with the signed SSIM (Gaussian window 11, σ 1.5, valid, mean over batch and channels), so
lowering L keeps the target right, makes the auxiliary wrong and makes the photo unlike the
original to people. Without an auxiliary (target = auxiliary in the paper's sweep) the middle
term is dropped. Target and auxiliary are frozen; only the generator learns.

Optimiser AdamW (lr 5e-3, weight decay 5e-4), learning rate warmed up linearly from 1e-8 over
the first 30% of the optimiser steps, then cosine-annealed to 1e-8, stepped per batch; batches
of 256 with the last incomplete one dropped; mixed precision on CUDA; the generator of the epoch
with the lowest validation loss is kept.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from pytorch_msssim import ssim
from torch import nn

from defenses.unet import ProtectiveUNet

Logits = Callable[[torch.Tensor], torch.Tensor]
WARMUP_START_LR = 1e-8
ETA_MIN = 1e-8


@dataclass(frozen=True)
class LossTerms:
    """The loss and its weighted parts (``auxiliary`` is already negated)."""

    total: torch.Tensor
    target: torch.Tensor
    auxiliary: torch.Tensor
    ssim: torch.Tensor


def signed_ssim(original: torch.Tensor, protected: torch.Tensor) -> torch.Tensor:
    """Mean SSIM over batch and channels, signed (not 1 − SSIM, not absolute), as in the
    paper's code: Gaussian window 11, σ 1.5, K (0.01, 0.03), data range 1, no padding."""
    return ssim(original.float(), protected.float(), data_range=1.0, size_average=True)


def conceal_loss(
    original: torch.Tensor,
    protected: torch.Tensor,
    target_index: torch.Tensor,
    auxiliary_index: torch.Tensor | None,
    target: Logits,
    auxiliary: Logits | None,
    ssim_weight: float = 0.5,
) -> LossTerms:
    """The generator's loss. ``*_index``: each image's class as the model's logit index (−1
    where the model has no such class: left out of that cross-entropy)."""
    ce_target = F.cross_entropy(target(protected).float(), target_index, ignore_index=-1)
    ce_aux = torch.zeros((), device=protected.device)
    if auxiliary is not None and auxiliary_index is not None:
        ce_aux = F.cross_entropy(auxiliary(protected).float(), auxiliary_index, ignore_index=-1)
    s = signed_ssim(original, protected)
    return LossTerms(ce_target - ce_aux + ssim_weight * s, ce_target, -ce_aux, ssim_weight * s)


def warmup_cosine_factor(step: int, total_steps: int, warmup_steps: int, base_lr: float) -> float:
    """Multiplier of ``base_lr`` at optimiser step ``step`` (0-based): linear from 1e-8 at step
    0 to ``base_lr`` at step ``warmup_steps − 1``, then cosine from ``base_lr`` at
    ``warmup_steps`` to 1e-8 at ``total_steps`` (the closed form of the warm-up cosine
    schedule the paper's code steps per batch)."""
    if step < warmup_steps:
        if warmup_steps <= 1:
            return 1.0
        lr = WARMUP_START_LR + step * (base_lr - WARMUP_START_LR) / (warmup_steps - 1)
    else:
        span = max(1, total_steps - warmup_steps)
        progress = min(1.0, (step - warmup_steps) / span)
        lr = ETA_MIN + 0.5 * (base_lr - ETA_MIN) * (1.0 + math.cos(math.pi * progress))
    return lr / base_lr


def warmup_cosine(
    optimizer: torch.optim.Optimizer, total_steps: int, warmup_fraction: float
) -> torch.optim.lr_scheduler.LambdaLR:
    """torch's LambdaLR over :func:`warmup_cosine_factor` (one base rate for every group)."""
    base = optimizer.param_groups[0]["lr"]
    warmup = int(warmup_fraction * total_steps)
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: warmup_cosine_factor(s, total_steps, warmup, base)
    )


@contextlib.contextmanager
def frozen(*modules: nn.Module | None) -> Iterator[None]:
    """Modules in eval mode with no parameter gradients for the duration; their previous
    ``requires_grad`` flags and modes are restored after (they may be shared)."""
    saved = []
    for m in modules:
        if m is None:
            continue
        saved.append((m, m.training, [(p, p.requires_grad) for p in m.parameters()]))
        m.eval()
        for p in m.parameters():
            p.requires_grad_(False)
    try:
        yield
    finally:
        for m, training, flags in saved:
            m.train(training)
            for p, flag in flags:
                p.requires_grad_(flag)


def crop_flip(x: torch.Tensor, gen: torch.Generator, padding: int, flip: bool) -> torch.Tensor:
    """torchvision's RandomCrop(padding, zero fill) and RandomHorizontalFlip, per image."""
    b, _, h, w = x.shape
    if padding:
        padded = F.pad(x, (padding,) * 4)
        dy = torch.randint(0, 2 * padding + 1, (b,), generator=gen).tolist()
        dx = torch.randint(0, 2 * padding + 1, (b,), generator=gen).tolist()
        x = torch.stack([padded[i, :, dy[i] : dy[i] + h, dx[i] : dx[i] + w] for i in range(b)])
    if flip:
        mask = (torch.rand(b, generator=gen) < 0.5).view(b, 1, 1, 1).to(x.device)
        x = torch.where(mask, x.flip(3), x)
    return x


@dataclass
class TrainConfig:
    """What the paper fixes, as parameters (defaults = the paper)."""

    epochs: int = 100
    batch: int = 256
    lr: float = 5e-3
    weight_decay: float = 5e-4
    warmup_fraction: float = 0.3
    ssim_weight: float = 0.5
    crop_padding: int = 4
    flip: bool = True
    amp: bool = True


@dataclass
class TrainResult:
    """The best generator's state and what training measured."""

    state: dict[str, torch.Tensor]
    best_epoch: int
    best_val_loss: float
    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0
    images_per_second: float = 0.0


@dataclass
class _Optimiser:
    """AdamW with the warm-up-then-cosine schedule, stepped per batch, and the gradient scaler
    of mixed precision (a no-op without it)."""

    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler
    use_amp: bool

    @classmethod
    def for_generator(
        cls, generator: ProtectiveUNet, config: TrainConfig, total_steps: int, device: torch.device
    ) -> _Optimiser:
        opt = torch.optim.AdamW(
            generator.parameters(), lr=config.lr, weight_decay=config.weight_decay
        )
        use_amp = config.amp and device.type == "cuda"
        return cls(
            opt,
            warmup_cosine(opt, total_steps, config.warmup_fraction),
            torch.amp.GradScaler("cuda", enabled=use_amp),
            use_amp,
        )

    def step(self, loss: torch.Tensor) -> None:
        """One optimiser and schedule step on ``loss``."""
        self.opt.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.opt)
        self.scaler.update()
        self.sched.step()


def _train_epoch(
    generator: ProtectiveUNet,
    train: tuple[torch.Tensor, torch.Tensor, torch.Tensor | None],
    target: Logits,
    auxiliary: Logits | None,
    config: TrainConfig,
    gen: torch.Generator,
    optimiser: _Optimiser,
) -> tuple[float, int]:
    """One pass over a fresh permutation of ``train`` in whole batches, augmented: (sum of the
    batch losses, images seen)."""
    x_train, t_train, a_train = train
    device = x_train.device
    generator.train()
    order = torch.randperm(len(x_train), generator=gen).to(device)
    running, seen = 0.0, 0
    for s in range(len(x_train) // config.batch):
        idx = order[s * config.batch : (s + 1) * config.batch]
        xb = crop_flip(x_train[idx], gen, config.crop_padding, config.flip)
        with torch.autocast(device.type, dtype=torch.float16, enabled=optimiser.use_amp):
            out = generator.protect(xb)
            terms = conceal_loss(
                xb,
                out,
                t_train[idx],
                None if a_train is None else a_train[idx],
                target,
                auxiliary,
                config.ssim_weight,
            )
        optimiser.step(terms.total)
        running += float(terms.total.detach())
        seen += len(idx)
    return running, seen


def train_generator(
    generator: ProtectiveUNet,
    train: tuple[torch.Tensor, torch.Tensor, torch.Tensor | None],
    val: tuple[torch.Tensor, torch.Tensor, torch.Tensor | None],
    target: Logits,
    auxiliary: Logits | None,
    config: TrainConfig,
    gen: torch.Generator,
    frozen_modules: tuple[nn.Module | None, ...] = (),
) -> TrainResult:
    """Train ``generator`` in place and return the lowest-validation-loss state.

    ``train`` and ``val``: images in [0, 1] [N, 3, H, W], target logit indices, auxiliary logit
    indices (None without an auxiliary). ``gen`` draws batches and augmentation."""
    x_train = train[0]
    steps_per_epoch = len(x_train) // config.batch
    if steps_per_epoch == 0:
        raise ValueError(
            f"protective-unet: {len(x_train)} training images are fewer than one batch of "
            f"{config.batch}; lower batch"
        )
    optimiser = _Optimiser.for_generator(
        generator, config, steps_per_epoch * config.epochs, x_train.device
    )
    best: TrainResult | None = None
    history: list[dict[str, float]] = []
    t0 = time.perf_counter()
    seen = 0
    with frozen(*frozen_modules):
        for epoch in range(config.epochs):
            running, n = _train_epoch(generator, train, target, auxiliary, config, gen, optimiser)
            seen += n
            val_loss = evaluate_loss(generator, val, target, auxiliary, config)
            history.append(
                {"epoch": epoch, "train_loss": running / steps_per_epoch, "val_loss": val_loss}
            )
            if best is None or val_loss < best.best_val_loss:
                state = {k: v.detach().cpu().clone() for k, v in generator.state_dict().items()}
                best = TrainResult(state, epoch, val_loss)
    assert best is not None
    seconds = time.perf_counter() - t0
    best.history, best.seconds = history, seconds
    best.images_per_second = seen / seconds if seconds > 0 else float("nan")
    generator.load_state_dict(best.state)
    generator.eval()
    return best


def evaluate_loss(
    generator: ProtectiveUNet,
    data: tuple[torch.Tensor, torch.Tensor, torch.Tensor | None],
    target: Logits,
    auxiliary: Logits | None,
    config: TrainConfig,
) -> float:
    """Mean loss over ``data`` in batches, generator in eval mode, no augmentation."""
    x, t, a = data
    generator.eval()
    total, n = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(x), config.batch):
            xb = x[i : i + config.batch]
            out = generator.protect(xb)
            terms = conceal_loss(
                xb,
                out,
                t[i : i + config.batch],
                None if a is None else a[i : i + config.batch],
                target,
                auxiliary,
                config.ssim_weight,
            )
            total += float(terms.total) * len(xb)
            n += len(xb)
    return total / max(n, 1)

"""A small CNN classifier trained in the harness on the suite's fit split.

The local models of the UEP paper (Rajabi et al., PETS 2021, §5.1) are small VGG-style CNNs
trained on the owner's own data; this is that family's first member: a VGG-style stack (two 3×3
convs per stage, three stages, global average pooling) trained with augmentation. On
lfw-subset each face is its own class and its augmented views are the training samples.
The trained weights are cached under a hash of everything that determines them.
"""

from __future__ import annotations

import time
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from harness.api.contracts import (
    REFERENCE_PARAM,
    Context,
    DataSplit,
    ImageSet,
    InputSpec,
    Recognizer,
    derive_seed,
)
from harness.core.cache import content_key
from harness.core.code_version import declare_kind_code
from harness.core.errors import ParamError
from harness.core.params import Param
from harness.toolkit.imaging import apply_input_spec, to_tensor

# The cache entries this module computes itself: their keys hold its code version.
declare_kind_code(["small-cnn"], [__name__])


def _conv(c_in: int, c_out: int, k: int = 3) -> list[nn.Module]:
    return [
        nn.Conv2d(c_in, c_out, k, padding=k // 2, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    ]


def thumbnail() -> nn.Conv2d:
    """The UEP paper's resolution-reduction layer (Rajabi et al., PETS 2021, §5.1, Fig. 19): a
    2×2 convolution, stride 2, every weight 1/(2·2) = 0.25, per channel, not trained."""
    layer = nn.Conv2d(3, 3, 2, stride=2, groups=3, bias=False)
    nn.init.constant_(layer.weight, 0.25)
    layer.weight.requires_grad_(False)
    return layer


SHAPES = ("compact", "vgg5", "facescrub3")
TRAIN_SECONDS_KEY = "_privbench.train_seconds"
MIN_INPUT = {"compact": 8, "vgg5": 32, "facescrub3": 16}


def build_small_cnn(
    n_classes: int, width: int, shape: str = "compact", input_size: int = 32
) -> nn.Module:
    """The local CNNs.

    ``compact``: 3 stages of (conv3×3-BN-ReLU)×2 + max-pool (w, 2w, 4w), global average pool, linear
    head. ``vgg5``: the UEP paper's "VGG-16" local net as described (5 conv + 2 FC, Rajabi et al.,
    PETS 2021, §5.1, Fig. 18): conv3×3 w, 2w, 4w, 8w, 8w, each followed by a 2×2 max-pool, then FC
    16w and FC n. ``facescrub3``: the "FaceScrub CNN" (3 conv + 2 FC, after McPherson et al.) behind
    the 2×2 thumbnail layer: conv5×5 w, conv3×3 2w, 4w with max-pools, FC 8w, FC n. The paper's
    appendix listing is truncated, so the widths are privbench's choice.
    """
    if input_size < MIN_INPUT[shape]:
        raise ValueError(f"small-cnn shape {shape} needs input_size ≥ {MIN_INPUT[shape]}")
    layers: list[nn.Module] = []
    if shape == "compact":
        c_in = 3
        for c_out in (width, 2 * width, 4 * width):
            layers += _conv(c_in, c_out) + _conv(c_out, c_out) + [nn.MaxPool2d(2)]
            c_in = c_out
        layers += [
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Dropout(0.2),
            nn.Linear(c_in, n_classes),
        ]
        return nn.Sequential(*layers)
    if shape == "vgg5":
        widths, first_kernel, side = (
            (width, 2 * width, 4 * width, 8 * width, 8 * width),
            3,
            input_size // 32,
        )
        hidden = 16 * width
    else:
        layers.append(thumbnail())
        widths, first_kernel, side = (width, 2 * width, 4 * width), 5, input_size // 16
        hidden = 8 * width
    c_in = 3
    for i, c_out in enumerate(widths):
        layers += [*_conv(c_in, c_out, first_kernel if i == 0 else 3), nn.MaxPool2d(2)]
        c_in = c_out
    layers += [
        nn.Flatten(),
        nn.Linear(c_in * side * side, hidden),
        nn.ReLU(inplace=True),
        nn.Dropout(0.3),
        nn.Linear(hidden, n_classes),
    ]
    return nn.Sequential(*layers)


def random_blur(x: torch.Tensor, gen: torch.Generator, max_sigma: float) -> torch.Tensor:
    """Blur half of the images with a Gaussian of σ ~ U(0.3, max_sigma) each (separable 7-tap)."""
    b, c, h, w = x.shape
    sigma = 0.3 + torch.rand(b, generator=gen) * (max_sigma - 0.3)
    taps = torch.arange(-3, 4, dtype=x.dtype)
    k = torch.exp(-(taps[None] ** 2) / (2 * sigma[:, None] ** 2))
    k = (k / k.sum(1, keepdim=True)).to(x.device).repeat_interleave(c, 0)  # [b·c, 7]
    y = F.pad(x.reshape(1, b * c, h, w), (3, 3, 3, 3), mode="reflect")
    y = F.conv2d(y, k.view(b * c, 1, 1, 7), groups=b * c)
    y = F.conv2d(y, k.view(b * c, 1, 7, 1), groups=b * c).view(b, c, h, w)
    keep = (torch.rand(b, generator=gen) < 0.5).view(b, 1, 1, 1).to(x.device)
    return torch.where(keep, x, y)


def augment(x: torch.Tensor, gen: torch.Generator, shift: int) -> torch.Tensor:
    """Random translation (reflect pad + crop), horizontal flip, blur, brightness and contrast."""
    b, _, h, w = x.shape
    if shift:
        padded = F.pad(x, (shift, shift, shift, shift), mode="reflect")
        dy = torch.randint(0, 2 * shift + 1, (b,), generator=gen)
        dx = torch.randint(0, 2 * shift + 1, (b,), generator=gen)
        x = torch.stack([padded[i, :, dy[i] : dy[i] + h, dx[i] : dx[i] + w] for i in range(b)])
    flip = torch.rand(b, generator=gen) < 0.5
    x = torch.where(flip.view(b, 1, 1, 1).to(x.device), x.flip(3), x)
    x = random_blur(x, gen, max_sigma=1.5)
    brightness = (torch.rand(b, 1, 1, 1, generator=gen) - 0.5) * 0.4
    contrast = 1.0 + (torch.rand(b, 1, 1, 1, generator=gen) - 0.5) * 0.4
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - mean) * contrast.to(x.device) + mean + brightness.to(x.device)
    return x.clamp(0.0, 1.0)


class SmallCNN(Recognizer):
    """Closed-set classifier trained on the fit split (Adam, cross-entropy, augmentation).

    Training is deterministic under the run seed on CPU; ``steps`` mini-batches of
    ``train_batch`` images drawn with replacement.
    """

    kind: ClassVar[str] = "classifier"
    version: ClassVar[str] = "3"
    smoke: ClassVar[dict[str, Any]] = {"steps": 5}
    params: ClassVar[dict[str, Param]] = {
        "shape": Param(
            str,
            "compact",
            "architecture (vgg5 and facescrub3: the UEP paper's local nets)",
            choices=SHAPES,
        ),
        "input_size": Param(int, 32, "square side images are resized to", low=8, high=512),
        "width": Param(int, 16, "channels of the first stage", low=4, high=512),
        "steps": Param(int, 500, "training steps", low=1, high=1_000_000),
        "train_batch": Param(int, 64, "images per training step", low=1, high=4096),
        "lr": Param(float, 2e-3, "Adam learning rate", low=0.0, low_open=True, high=1.0),
        "augment": Param(bool, True, "random shifts, flips, blur, brightness and contrast"),
        "seed": Param(
            int,
            None,
            "training seed (default: the run seed); another seed gives an independently "
            "trained model of the same design, for transfer experiments",
            low=0,
            high=2**32 - 1,
        ),
        **REFERENCE_PARAM,
    }

    @classmethod
    def check_params(cls, params: dict[str, Any]) -> None:
        """The vgg5 and facescrub3 shapes downsample 32× and 16×: refuse smaller inputs."""
        need = MIN_INPUT[params["shape"]]
        if params["input_size"] < need:
            raise ParamError(
                f"small-cnn.input_size: {params['input_size']} is too small for "
                f"shape {params['shape']} (needs ≥ {need})"
            )

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        s = self.input_size
        self.input_spec = InputSpec(
            size=(s, s),
            channels="rgb",
            mean=(0.5, 0.5, 0.5),
            std=(0.5, 0.5, 0.5),
            interpolation="bicubic",
        )
        self.model: nn.Module | None = None
        self.classes: np.ndarray | None = None
        self.device = torch.device("cpu")
        self.train_seconds = float("nan")
        self._weights: str | None = None

    def training_key(self, fit: ImageSet, ctx: Context) -> dict[str, Any]:
        """Everything the trained weights depend on (the cache key of the trained state)."""
        return {"recognizer": self.state_key(), "fit": fit.fingerprint(), "seed": self._seed(ctx)}

    def fit(self, data: DataSplit, ctx: Context) -> None:
        fit = data.fit
        self.classes = np.unique(fit.labels)
        self.device = ctx.device
        key = self.training_key(fit, ctx)
        self._weights = content_key("small-cnn", key)
        state = ctx.cache.torch_state(
            "small-cnn", key, lambda: self._train(fit.images, fit.labels, ctx)
        )
        state = dict(state)
        # Measured when trained, so a model reused from the cache still reports its cost.
        self.train_seconds = float(state.pop(TRAIN_SECONDS_KEY, torch.tensor(float("nan"))))
        self.model = build_small_cnn(len(self.classes), self.width, self.shape, self.input_size)
        self.model.load_state_dict(state)
        self.model.to(ctx.device).eval()

    def weights_identity(self) -> str | None:
        return self._weights

    def _seed(self, ctx: Context) -> int:
        return ctx.seed if self.config.get("seed") is None else int(self.config["seed"])

    def _train(self, images: np.ndarray, labels: np.ndarray, ctx: Context) -> dict[str, Any]:
        assert self.classes is not None
        t0 = time.perf_counter()
        target = torch.from_numpy(np.searchsorted(self.classes, labels)).to(ctx.device)
        # Converted a chunk at a time: a float copy of the whole fit split at full size would
        # be 4× the data set (786 MB for 1,000 photos of 256²); only the resized one is kept.
        x_all = torch.cat(
            [
                apply_input_spec(to_tensor(images[i : i + 256], ctx.device), self.input_spec)
                for i in range(0, len(images), 256)
            ]
        )
        x_all = x_all * 0.5 + 0.5  # augment in [0, 1]; normalise again after
        # Everything random in training (init, dropout, batches, augmentation) is drawn under
        # seeds derived from the run seed, in a forked RNG so the caller's state is untouched.
        devices = [ctx.device] if ctx.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(derive_seed(self._seed(ctx), "small-cnn", "init"))
            model = build_small_cnn(len(self.classes), self.width, self.shape, self.input_size).to(
                ctx.device
            )
            gen = torch.Generator()
            gen.manual_seed(derive_seed(self._seed(ctx), "small-cnn", "batches"))
            opt = torch.optim.Adam(model.parameters(), lr=self.lr)
            sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=self.lr, total_steps=self.steps)
            model.train()
            shift = max(1, self.input_size // 16) if self.augment else 0
            for _ in range(self.steps):
                idx = torch.randint(0, len(x_all), (self.train_batch,), generator=gen)
                idx = idx.to(ctx.device)
                xb = augment(x_all[idx], gen, shift) if self.augment else x_all[idx]
                loss = F.cross_entropy(model((xb - 0.5) / 0.5), target[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
        state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
        return {**state, TRAIN_SECONDS_KEY: torch.tensor(time.perf_counter() - t0)}

    def logit_index(self, labels: np.ndarray) -> np.ndarray:
        """Position of each label among the classes seen in training; −1 for unseen ones."""
        assert self.classes is not None, "fit() first"
        labels = np.asarray(labels, dtype=np.int64)
        pos = np.searchsorted(self.classes, labels).clip(0, len(self.classes) - 1)
        return np.where(self.classes[pos] == labels, pos, -1).astype(np.int64)

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """Differentiable class scores (white-box use)."""
        if self.model is None:
            raise RuntimeError("small-cnn: fit() must train the model before use")
        return self.model(apply_input_spec(images.to(self.device), self.input_spec))

    def scores(self, images: torch.Tensor, ctx: Context) -> np.ndarray:
        """Class logits [B, classes seen in training]."""
        with torch.inference_mode():
            return self.logits(images).float().cpu().numpy()

    def decide(self, scores: np.ndarray) -> np.ndarray:
        assert self.classes is not None
        return self.classes[scores.argmax(1)].astype(np.int64)

    def predict(self, images: torch.Tensor, ctx: Context) -> np.ndarray:
        return self.decide(self.scores(images, ctx))

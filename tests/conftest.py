"""Test settings: offline, deterministic, and a private PRIVBENCH_HOME per session."""

from __future__ import annotations

import faulthandler
import os
import resource
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

os.environ["HF_HUB_OFFLINE"] = "1"


@pytest.fixture(scope="session", autouse=True)
def privbench_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("privbench-home")
    os.environ["PRIVBENCH_HOME"] = str(home)
    os.environ["TORCH_HOME"] = str(home / "torch")
    return home


@pytest.fixture(autouse=True)
def seeded() -> None:
    torch.manual_seed(0)
    np.random.seed(0)


@pytest.fixture
def ctx(tmp_path: Path):
    from harness.api.contracts import Context
    from harness.core.cache import Cache

    return Context(torch.device("cpu"), seed=0, cache=Cache(tmp_path / "cache"), batch_size=16)


def write_distribution(
    site: Path, package: str, distribution: str, source: str, entry_points: str
) -> None:
    """A plugin as an installed distribution leaves it in ``site``: the package ``package``
    (one ``__init__.py`` holding ``source``) and its ``<name>-1.0.dist-info`` with its
    ``entry_points.txt``; put ``site`` on sys.path and refresh the registries to find it."""
    (site / package).mkdir(parents=True)
    (site / package / "__init__.py").write_text(source, encoding="utf-8")
    info = site / f"{distribution.replace('-', '_')}-1.0.dist-info"  # as pip names it
    info.mkdir()
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {distribution}\nVersion: 1.0\n", encoding="utf-8"
    )
    (info / "entry_points.txt").write_text(entry_points, encoding="utf-8")


def write_suite(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# -- float32 error bounds ----------------------------------------------------------------------
# Tests that compare float32 results computed in different batch shapes, by different kernels
# (ATEN_CPU_CAPABILITY, oneDNN and MKL dispatch on each CPU) or along different code paths
# take their tolerances from the arithmetic with these, never from what one machine printed.

UNIT_ROUNDOFF = 2.0**-24  # float32 unit roundoff u: each rounded operation errs by ≤ u relative


def gamma(n: int) -> float:
    """Higham's γ_n = n·u/(1 − n·u): the relative bound on a float32 sum or dot product of n
    terms, in any summation order, with or without fused multiply-adds."""
    return n * UNIT_ROUNDOFF / (1 - n * UNIT_ROUNDOFF)


def _local_rounding(module, inputs: tuple, output: torch.Tensor) -> torch.Tensor | None:
    """A bound on the rounding error one float32 evaluation of ``module`` adds to its output
    (elementwise, its inputs taken as exact; Higham, Accuracy and Stability of Numerical
    Algorithms, §3.1), or None where the operation is exact."""
    import torch.nn.functional as F
    from torch import nn

    u = UNIT_ROUNDOFF
    a = inputs[0].detach().abs()
    if isinstance(module, (nn.Conv2d, nn.Linear)):
        # a dot product of fan-in n plus the bias: γ_{n+1}·(|W|·|x| + |b|)
        w = module.weight.detach().abs()
        if isinstance(module, nn.Conv2d):
            kw = dict(stride=module.stride, padding=module.padding, groups=module.groups)
            kw["dilation"] = module.dilation
            size = F.conv2d(a, w, **kw)
            view = (1, -1, 1, 1)
        else:
            size, view = a @ w.T, (1, -1)
        if module.bias is not None:
            size = size + module.bias.detach().abs().view(view)
        return gamma(w[0].numel() + 1) * size
    if isinstance(module, nn.BatchNorm2d):
        # eval mode: y = x·α + β with α = γ/√(var + ε) and β = bias − mean·α, at most four
        # roundings in each: 8u·(|α|·|x| + |mean·α| + |bias|)
        assert not module.training
        view = (1, -1, 1, 1)
        alpha = module.weight.detach() / torch.sqrt(module.running_var + module.eps)
        shift = (module.running_mean * alpha).abs() + module.bias.detach().abs()
        return 8 * u * (alpha.abs().view(view) * a + shift.view(view))
    if isinstance(module, (nn.AdaptiveAvgPool2d, nn.AvgPool2d)):
        # a mean of m values: γ_{m+1}·mean|x| (m at most the input's spatial size)
        m = a.shape[-2] * a.shape[-1] // (output.shape[-2] * output.shape[-1])
        if isinstance(module, nn.AvgPool2d):
            k = module.kernel_size
            m = k * k if isinstance(k, int) else k[0] * k[1]
            return gamma(m + 1) * F.avg_pool2d(a, k, module.stride, module.padding)
        return gamma(m + 1) * F.adaptive_avg_pool2d(a, output.shape[-2:])
    if isinstance(
        module,
        (nn.ReLU, nn.ReLU6, nn.MaxPool2d, nn.Flatten, nn.Dropout, nn.Identity, nn.Sequential),
    ):
        return None  # exact: comparisons, copies, the identity (dropout in eval mode)
    if not any(True for _ in module.children()):
        raise TypeError(f"no float32 rounding rule for {type(module).__name__}")
    return None  # a container: its leaves are counted


def float32_logit_bound(forward, model: torch.nn.Module, images: torch.Tensor, extra=None):
    """``forward(model, x)``'s outputs [B, C] in float64 (exact to ~1e-14), and per output a
    bound δ on how far a float32 evaluation of the same arithmetic can be from them, whatever
    the kernel, batch shape or summation order.

    Every leaf module of a float64 copy of ``model`` reports the rounding error ε_l a float32
    evaluation adds to its output (``_local_rounding``); ``forward`` may return further
    (tensor, ε) pairs for its own functional steps (resizing, normalisation), and ``extra``
    gives one for the input. The outputs move by Σ_l J_l·ε_l to first order, J_l the Jacobian
    of the outputs with respect to y_l, so |Δz_c| ≤ δ_c = Σ_l ⟨|∂z_c/∂y_l|, ε_l⟩: one float64
    backward pass per output. (The rigorous-to-all-orders bound, the product of |W| over the
    layers, is ~10^8 times too large for a trained CNN: the errors do not all align.) Left out
    are terms of order u² and a rounding error tipping a value across a ReLU or max-pool kink,
    which changes the Jacobian only of that one unit. Two float32 evaluations differ by ≤ 2δ."""
    import copy

    twin = copy.deepcopy(model).double().eval()
    recorded: list[tuple[torch.Tensor, torch.Tensor]] = []

    def hook(module, inputs, output):
        eps = _local_rounding(module, inputs, output)
        if eps is not None:
            recorded.append((output, eps))

    handles = [m.register_forward_hook(hook) for m in twin.modules()]
    try:
        with torch.enable_grad():
            x = images.detach().double().requires_grad_(True)
            if extra is not None:
                recorded.append((x, extra.double()))
            result = forward(twin, x)
            z, steps = result if isinstance(result, tuple) else (result, [])
            recorded.extend(steps)
            delta = torch.zeros_like(z.detach())
            for c in range(z.shape[1]):
                grads = torch.autograd.grad(
                    z[:, c].sum(), [y for y, _ in recorded], retain_graph=True, allow_unused=True
                )
                for g, (_, eps) in zip(grads, recorded, strict=True):
                    if g is not None:
                        delta[:, c] += (g.abs() * eps).flatten(1).sum(1)
    finally:
        for h in handles:
            h.remove()
    return z.detach(), delta


def _abs_linear_map(op, x: torch.Tensor) -> torch.Tensor:
    """|M|·x for the per-channel linear map M = ``op`` on [B, C, H, W], from M's matrix
    (``op`` applied to every basis image, in float64)."""
    b, c, h, w = x.shape
    basis = torch.eye(h * w, dtype=torch.float64).view(h * w, 1, h, w)
    columns = op(basis).flatten(1).abs()  # row i: M e_i
    out = x.reshape(b * c, h * w) @ columns
    return out.view(b, c, *op(basis[:1]).shape[2:])


def small_cnn_logit_bound(recognizer, images: torch.Tensor, extra=None):
    """``float32_logit_bound`` for a trained small-cnn's ``logits`` (resize to its input size,
    (x − 0.5)/0.5, the network). Its own steps' rounding: the resize, a per-channel linear map
    M of two separable passes of at most 4 taps with rounded weights, errs by
    ≤ (γ_8 + 8u)·|M|·|x| (the clamp after it is exact); the normalisation by ≤ 2u·|x − 0.5|
    (the division by 0.5 is exact)."""
    import torch.nn.functional as F

    from harness.toolkit.imaging import resize

    spec = recognizer.input_spec
    assert spec.channels == "rgb" and set(spec.mean) == {0.5} and set(spec.std) == {0.5}

    def forward(model, x):
        steps = []
        if spec.size and tuple(x.shape[-2:]) != tuple(spec.size):

            def op(t: torch.Tensor) -> torch.Tensor:
                mode = spec.interpolation
                return F.interpolate(
                    t, size=spec.size, mode=mode, align_corners=False, antialias=True
                )

            eps = (gamma(8) + 8 * UNIT_ROUNDOFF) * _abs_linear_map(op, x.detach().abs())
            x = resize(x, spec.size, spec.interpolation)
            steps.append((x, eps))
        eps = 2 * UNIT_ROUNDOFF * (x.detach() - 0.5).abs()
        x = (x - 0.5) / 0.5
        steps.append((x, eps))
        return model(x), steps

    return float32_logit_bound(forward, recognizer.model, images, extra)


# The fuzz tests' budget (issue 28): a fuzzed input may make privbench refuse it or run it,
# never exhaust the machine. RLIMIT_DATA (heap and every private writable mapping, Linux >= 4.7)
# is lowered to what the process holds plus FUZZ_MEMORY for the test's duration, so an input
# that would take gigabytes (the alias bomb took 12.5 GB) ends in a MemoryError, which the
# fuzz tests report as a failure; a test still running after FUZZ_SECONDS (every one takes
# seconds) dumps its stack and ends the session instead of hanging CI. Neither is a timing or
# memory *measurement*: both are ceilings far above what a correct run needs.
FUZZ_MEMORY = 3 << 30
FUZZ_SECONDS = 900


def _data_bytes() -> int:
    """The process's private writable memory now (VmData of /proc/self/status), in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmData:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmData in /proc/self/status")


@pytest.fixture
def fuzz_budget() -> Iterator[None]:
    """Run a fuzz test within a memory ceiling and a hang guard (above)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_DATA)
    ceiling = _data_bytes() + FUZZ_MEMORY
    if hard != resource.RLIM_INFINITY:
        ceiling = min(ceiling, hard)
    resource.setrlimit(resource.RLIMIT_DATA, (ceiling, hard))
    faulthandler.dump_traceback_later(FUZZ_SECONDS, exit=True)
    try:
        yield
    finally:
        faulthandler.cancel_dump_traceback_later()
        resource.setrlimit(resource.RLIMIT_DATA, (soft, hard))

"""One prepared GPU check: what privbench gains on the first CUDA device at hand, each figure
beside the same run's CPU figure, in one table.

Rows (each measured on the CPU and, when torch sees one, on the first CUDA device):

a. the quickstart suite (``suites/quickstart.yaml`` with ``sface`` on its torch backend), cold
   in a fresh ``PRIVBENCH_HOME`` and then fully cached, in a child process per device: seconds
   and cold ÷ cached;
b. k-RTIO (Rajabi et al., PETS 2021) batched protect and recover at 512 × 512, as
   ``benchmarks/krtio.py --device`` measures them (its ``main`` is run and read): images/s,
   CUDA ÷ CPU (goal ≥ 10×);
c. one batch of AIP (Oh, Fritz and Schiele, ICCV 2017; GAMAN, 30 steps as in
   ``suites/aip.yaml``) and one of PGD (Madry et al., ICLR 2018; ε 8/255, 10 steps, through
   ART) on lfw-subset faces against an SFace surrogate on torch (Zhong et al. 2021): images/s;
d. one protective U-Net training epoch (Ye et al., ACM MMSys 2022) through the harness's
   ``train_generator``, mixed precision on CUDA (the paper's setting; fp32 on the CPU),
   untrained CIFAR-10 zoo target and auxiliary: seconds per epoch;
e. the ``latency`` metric of a run (the harness's protocol: one warm-up batch, then median
   ms per image over fresh batches, CUDA synchronised before every clock read) and the same
   run with the synchronisation taken out, to show what an unsynchronised GPU timer reports;
f. a Dask run (``--executor dask``) of a small suite, cold: a 2-process LocalCluster on the
   CPU; on CUDA ``make_executor`` starts one worker per visible GPU, and the row says how many.

Every CUDA figure is synchronised before the clock is read, except the one row e leaves
unsynchronised on purpose. Ratios only combine figures of this one run. A row that fails
prints its error in the table and the others still run; the exit status is 1 if any failed.
Without CUDA the CUDA cells read "—" (no CUDA device) and the CPU figures are still measured.

Sizes: the default is the device run (the shipped quickstart, 32-image k-RTIO and adversarial
batches, a 4,096-image U-Net epoch at the paper's width 32 and batch 256, 512 px latency
scenes); ``--quick`` is a CPU run of a minute or two, ``--tiny`` the test's (about 20 s on 2
cores). Any single size can be set on top of a preset:

    python3 benchmarks/gpu.py [--quick | --tiny] [--rows abcdef] [--out table.json] [--no-cuda]
        [--probes N] [--cnn-steps N] [--krtio-images N] [--adv-faces N] [--adv-fit-views N]
        [--adv-images N] [--aip-iterations N] [--pgd-iterations N] [--repeats N]
        [--unet-images N] [--unet-batch N] [--unet-width N] [--latency-size PX]
        [--dask-probes N] [--dask-cnn-steps N] [--dask-sface | --no-dask-sface]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from unittest import mock

import torch

ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS = ROOT / "benchmarks"
# krtio.py's ``from _timing import rate`` needs benchmarks/ first; the repository root goes last,
# so an installed privbench's metadata (entry points) wins over a carried privbench.egg-info.
if str(BENCHMARKS) not in sys.path:
    sys.path.insert(0, str(BENCHMARKS))
if str(ROOT) not in sys.path:
    sys.path.append(str(ROOT))

ABSENT = "—"
NO_CUDA = "no CUDA device"
ROWS = "abcdef"
TITLES = {
    "a": "quickstart, sface on torch",
    "b": "k-RTIO 512×512, batched",
    "c": "AIP / PGD, sface-torch surrogate",
    "d": "protective U-Net, 1 epoch",
    "e": "latency metric, sync vs none",
    "f": "Dask run, small suite",
}

# Sizes: the default is the device run, sized to end within 8 minutes on a 16-core H100 machine
# (its CPU rows took 8.5 minutes on 2 cores here; not yet timed on a GPU machine); --quick is a
# CPU run of about 80 s on 2 cores; --tiny the test's (about 20 s on 2 cores).
PRESETS: dict[str, dict[str, Any]] = {
    "full": {
        "probes": None,  # the quickstart's 100 faces
        "cnn_steps": None,  # the quickstart's small-cnn as it is (500 steps)
        "krtio_images": 32,
        "adv_faces": 100,
        "adv_fit_views": 8,
        "adv_images": 32,
        "aip_iterations": 30,
        "pgd_iterations": 10,
        "unet_images": 4096,
        "unet_batch": 256,
        "unet_width": 32,
        "latency_size": 512,
        "dask_probes": 48,
        "dask_cnn_steps": 100,
        "dask_sface": True,
        "repeats": 2,
    },
    "quick": {
        "probes": 32,
        "cnn_steps": 100,
        "krtio_images": 8,
        "adv_faces": 32,
        "adv_fit_views": 2,
        "adv_images": 16,
        "aip_iterations": 10,
        "pgd_iterations": 10,
        "unet_images": 256,
        "unet_batch": 64,
        "unet_width": 32,
        "latency_size": 256,
        "dask_probes": 16,
        "dask_cnn_steps": 30,
        "dask_sface": True,
        "repeats": 2,
    },
    "tiny": {
        "probes": 4,
        "cnn_steps": 5,
        "krtio_images": 2,
        "adv_faces": 4,
        "adv_fit_views": 1,
        "adv_images": 2,
        "aip_iterations": 2,
        "pgd_iterations": 2,
        "unet_images": 8,
        "unet_batch": 4,
        "unet_width": 4,
        "latency_size": 32,
        "dask_probes": 4,
        "dask_cnn_steps": 5,
        "dask_sface": False,
        "repeats": 1,
    },
}


# -- the table ------------------------------------------------------------------------------
@dataclass
class Line:
    """One line of the table: a measure on the CPU and on CUDA, and a ratio of the two."""

    row: str
    measure: str
    unit: str
    cpu: float | None = None
    cuda: float | None = None
    ratio: float | None = None
    ratio_of: str = ""  # what the ratio divides, e.g. "CUDA ÷ CPU"
    notes: list[str] = field(default_factory=list)
    failed: bool = False


class Table:
    """The lines measured so far, the device names, and which measurements failed."""

    def __init__(self, cpu_name: str, cuda_name: str | None) -> None:
        self.cpu_name = cpu_name
        self.cuda_name = cuda_name
        self.lines: list[Line] = []
        self.failures: list[dict[str, str]] = []

    def fail(self, row: str, device: str, exc: BaseException) -> None:
        """Record ``exc`` as a failed measurement of ``row`` on ``device`` (a table line)."""
        message = f"{type(exc).__name__}: {exc}".strip().splitlines()[0][:300]
        self.failures.append({"row": row, "device": device, "error": message})
        self.lines.append(
            Line(row, f"FAILED on {device}", "", notes=[message], failed=True),
        )
        print(f"[row {row}, {device}] failed:", file=sys.stderr)
        traceback.print_exception(exc, file=sys.stderr)

    def headers(self) -> list[str]:
        return [
            "row",
            "measure",
            "unit",
            f"CPU: {self.cpu_name}",
            f"CUDA: {self.cuda_name or ABSENT}",
            "ratio",
            "note",
        ]

    def cells(self, line: Line) -> list[str]:
        cuda = fmt(line.cuda)
        notes = list(line.notes)
        if self.cuda_name is None and not line.failed and NO_CUDA not in notes:
            notes.insert(0, NO_CUDA)
        if not line.failed:
            for device, value in (("cpu", line.cpu), ("cuda", line.cuda)):
                if value is None and any(
                    f["row"] == line.row and f["device"] == device for f in self.failures
                ):
                    notes.insert(0, f"{device} failed (FAILED line)")
        ratio = f"{fmt(line.ratio)}× {line.ratio_of}" if line.ratio is not None else ABSENT
        return [
            line.row,
            line.measure,
            line.unit,
            fmt(line.cpu),
            cuda,
            ratio,
            "; ".join(notes),
        ]

    def render(self) -> str:
        from tabulate import tabulate

        rows = [self.cells(line) for line in self.lines]
        return tabulate(rows, headers=self.headers(), tablefmt="github", disable_numparse=True)

    def as_json(self, sizes: dict[str, Any]) -> dict[str, Any]:
        lines = []
        for line in self.lines:
            d = asdict(line)
            d["cpu_device"] = self.cpu_name
            d["cuda_device"] = self.cuda_name
            if self.cuda_name is None and not line.failed:
                d["cuda_absent"] = NO_CUDA
            lines.append(d)
        return {
            "devices": {"cpu": self.cpu_name, "cuda": self.cuda_name},
            "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
            "sizes": sizes,
            "lines": lines,
            "failures": self.failures,
        }


def fmt(value: float | None) -> str:
    """A measured figure with 3-4 significant digits, or "—" when nothing was measured."""
    if value is None or not math.isfinite(value):
        return ABSENT
    a = abs(value)
    if a >= 100:
        return f"{value:.0f}"
    if a >= 10:
        return f"{value:.1f}"
    if a >= 1:
        return f"{value:.2f}"
    return f"{value:.3g}"


def ratio(num: float | None, den: float | None) -> float | None:
    """``num / den`` when both were measured (and ``den`` is not zero)."""
    if num is None or den is None or den == 0:
        return None
    return num / den


Measured = dict[str, dict[str, Any]]  # device type → what that device measured


def on_devices(
    table: Table, row: str, devices: list[str], fn: Callable[[torch.device], dict[str, Any]]
) -> Measured:
    """``fn`` on each device; a device that fails gets a FAILED line and no figures."""
    out: Measured = {}
    for dev in devices:
        try:
            out[dev] = fn(torch.device(dev))
        except Exception as exc:
            table.fail(row, dev, exc)
        finally:
            if dev == "cuda":
                with contextlib.suppress(Exception):
                    torch.cuda.empty_cache()
    return out


def speed_lines(
    row: str,
    got: Measured,
    measures: list[tuple[str, str, str]],
    higher_is_faster: bool,
) -> list[Line]:
    """One line per (key, label, unit) with the CPU and CUDA figures and CUDA's speed-up."""
    lines = []
    for key, label, unit in measures:
        cpu = got.get("cpu", {}).get(key)
        cuda = got.get("cuda", {}).get(key)
        if higher_is_faster:
            lines.append(Line(row, label, unit, cpu, cuda, ratio(cuda, cpu), "CUDA ÷ CPU"))
        else:
            lines.append(Line(row, label, unit, cpu, cuda, ratio(cpu, cuda), "CPU ÷ CUDA"))
    return lines


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def seconds(fn: Callable[[], object], device: torch.device, repeats: int) -> float:
    """Median wall seconds of ``repeats`` calls of ``fn``, synchronised on CUDA before each
    clock read (the caller warms up)."""
    times = []
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def write_yaml(path: Path, data: dict[str, Any]) -> Path:
    import yaml

    path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return path


def run_failures(result: Any) -> None:
    """Raise when a run did not complete or recorded failures (cells, recognizers, units)."""
    status = result.manifest.get("status")
    if result.failures or status != "complete":
        first = result.failures[0] if result.failures else {}
        raise RuntimeError(
            f"run {status}, {len(result.failures)} failure(s); first: "
            f"{first.get('scope', '')} {first.get('name', '')}: "
            f"{str(first.get('error', '')).splitlines()[0] if first else ''}"
        )


# -- a. the quickstart, cold and cached -------------------------------------------------------
QUICKSTART_CHILD = """
import json, sys, time
from pathlib import Path
from harness.cli.wiring import run_with_leaderboard
from harness.engine.runner import RunOptions
from harness.engine.suite import load_suite
suite = load_suite(sys.argv[1])
options = RunOptions(Path(sys.argv[2]), progress=False, device=sys.argv[3])
out = {"cells": suite.n_cells}
for run in ("cold", "cached"):
    t0 = time.perf_counter()
    result = run_with_leaderboard(suite, options)
    out[run] = time.perf_counter() - t0
    out[run + "_status"] = result.manifest["status"]
    out[run + "_failures"] = [f"{f['scope']} {f['name']}: {f['error']}" for f in result.failures]
    out[run + "_cache"] = {k: result.manifest["cache"][k] for k in ("hits", "misses")}
out["cells_cached_at_start"] = result.manifest["plan"].get("cells_cached_at_start")
print(json.dumps(out))
"""


def quickstart_copy(folder: Path, probes: int | None, cnn_steps: int | None) -> Path:
    """``suites/quickstart.yaml`` with ``sface`` on its torch backend (and, for small sizes,
    fewer probes and small-cnn steps), written into ``folder``."""
    import yaml

    data = yaml.safe_load((ROOT / "suites" / "quickstart.yaml").read_text(encoding="utf-8"))
    recognizers = []
    for r in data["recognizers"]:
        name = r if isinstance(r, str) else r["name"]
        entry = {"name": name, "params": {}} if isinstance(r, str) else dict(r)
        entry["params"] = dict(entry.get("params") or {})
        if name == "sface":
            entry["params"]["backend"] = "torch"
        if name == "small-cnn" and cnn_steps is not None:
            entry["params"]["steps"] = cnn_steps
        recognizers.append(entry if entry["params"] else name)
    data["recognizers"] = recognizers
    if probes is not None:
        data["dataset"] = {
            **data["dataset"],
            "params": {**(data["dataset"].get("params") or {}), "max_probes": probes},
        }
    return write_yaml(folder / "quickstart.yaml", data)


def quickstart_on(device: torch.device, suite: Path, work: Path) -> dict[str, Any]:
    """Cold then cached in a child process whose ``PRIVBENCH_HOME`` is a new empty folder (no
    cache, no in-memory state of this process)."""
    home = work / f"home-{device.type}"
    env = {k: v for k, v in os.environ.items() if k != "PRIVBENCH_CACHE"}
    env["PRIVBENCH_HOME"] = str(home)
    child = subprocess.run(
        [sys.executable, "-c", QUICKSTART_CHILD, str(suite), str(work / "results"), device.type],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
    )
    if child.returncode != 0:
        sys.stderr.write(child.stderr[-4000:])
        tail = child.stderr.strip().splitlines()[-1:] or ["(no output)"]
        raise RuntimeError(f"child exited {child.returncode}: {tail[0]}")
    m = json.loads(child.stdout.strip().splitlines()[-1])
    for run in ("cold", "cached"):
        if m[f"{run}_status"] != "complete" or m[f"{run}_failures"]:
            first = "".join(m[f"{run}_failures"][:1]).strip().splitlines()[:1]
            raise RuntimeError(f"{run} run {m[f'{run}_status']}: {''.join(first)}")
    return m


def row_a(table: Table, devices: list[str], args: argparse.Namespace, work: Path) -> None:
    suite = quickstart_copy(work, args.probes, args.cnn_steps)
    got = on_devices(table, "a", devices, lambda d: quickstart_on(d, suite, work / "a"))
    cut = []
    if args.probes is not None:
        cut.append(f"{args.probes} probes")
    if args.cnn_steps is not None:
        cut.append(f"small-cnn {args.cnn_steps} steps")
    scope = "quickstart" + (f" ({', '.join(cut)})" if cut else " (as shipped, 100 faces)")
    cells = next((m["cells"] for m in got.values()), None)
    lines = speed_lines(
        "a",
        got,
        [("cold", f"{scope}: cold run", "s"), ("cached", "fully cached re-run", "s")],
        higher_is_faster=False,
    )
    if cells is not None:
        lines[0].notes.append(f"{cells} cells; fresh PRIVBENCH_HOME, one child process each")
    misses = {d: m["cached_cache"]["misses"] for d, m in got.items()}
    if misses:
        lines[1].notes.append(
            "cache misses in the re-run: "
            + ", ".join(f"{d} {n}" for d, n in misses.items())
            + (" (not fully cached)" if any(misses.values()) else "")
        )
    cold_cached = {d: {"r": ratio(m["cold"], m["cached"])} for d, m in got.items()}
    lines.append(
        Line(
            "a",
            "cold ÷ cached",
            "×",
            cold_cached.get("cpu", {}).get("r"),
            cold_cached.get("cuda", {}).get("r"),
        )
    )
    table.lines += lines


# -- b. k-RTIO, by benchmarks/krtio.py ------------------------------------------------------------
def krtio_on(device: torch.device, images: int) -> dict[str, Any]:
    """The batched figures of ``benchmarks/krtio.py`` (:func:`krtio.batched_rates`)."""
    import krtio

    rates = krtio.batched_rates(device, images)
    return {"protect": rates["protect, batched"], "recover": rates["recover, batched"]}


def row_b(table: Table, devices: list[str], args: argparse.Namespace, work: Path) -> None:
    got = on_devices(table, "b", devices, lambda d: krtio_on(d, args.krtio_images))
    lines = speed_lines(
        "b",
        got,
        [
            ("protect", f"k-RTIO protect, batch {args.krtio_images}", "img/s"),
            ("recover", f"k-RTIO recover, batch {args.krtio_images}", "img/s"),
        ],
        higher_is_faster=True,
    )
    for line in lines:
        line.notes.append("benchmarks/krtio.py; pets2021, k=3, α=0.45, block 8")
        if line.ratio is not None:
            line.notes.append(f"goal ≥ 10×: {'met' if line.ratio >= 10 else 'NOT met'}")
    table.lines += lines


# -- c. AIP and PGD against an SFace-torch surrogate ------------------------------------------
SFACE_TORCH = {"surrogate": "sface", "surrogate_params": {"backend": "torch"}}


def adversarial_on(device: torch.device, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Images/s of one batch of lfw-subset faces through AIP and PGD (after a 2-image warm-up
    call each), the surrogate fitted first on ``adv_fit_views`` altered views of
    ``adv_faces`` faces (not timed)."""
    from harness.api.contracts import Context
    from harness.api.registry import DATASETS, DEFENSES
    from harness.core.cache import Cache
    from harness.toolkit.imaging import to_tensor

    faces = min(args.adv_faces, 100)
    split = DATASETS.create(
        "lfw-subset",
        {"max_probes": None if faces == 100 else faces, "fit_views": args.adv_fit_views},
    ).load(0)
    n = min(args.adv_images, len(split.probe))
    x = to_tensor(split.probe.images[:n], device)
    ids = split.probe.ids[:n]
    ctx = Context(device, 0, Cache(work / f"c-cache-{device.type}"), n)
    configs = {
        "aip": ("aip", {**SFACE_TORCH, "iterations": args.aip_iterations}),
        "pgd": ("pgd", {**SFACE_TORCH, "eps": 8, "iterations": args.pgd_iterations}),
    }
    out: dict[str, Any] = {"n": n}
    for key, (name, params) in configs.items():
        defense = DEFENSES.create(name, params)
        defense.fit(split.fit, ctx)
        defense.protect(x[:2], ids[:2], ctx)  # warm-up: kernels, ART's wrapper
        sync(device)
        s = seconds(lambda d=defense: d.protect(x, ids, ctx), device, args.repeats)
        out[key] = n / s
    return out


def row_c(table: Table, devices: list[str], args: argparse.Namespace, work: Path) -> None:
    got = on_devices(table, "c", devices, lambda d: adversarial_on(d, args, work))
    n = next((m["n"] for m in got.values()), min(args.adv_images, 100))
    table.lines += speed_lines(
        "c",
        got,
        [
            ("aip", f"AIP gaman, {args.aip_iterations} steps, batch {n}", "img/s"),
            ("pgd", f"PGD ε 8, {args.pgd_iterations} steps, batch {n}", "img/s"),
        ],
        higher_is_faster=True,
    )
    for line in table.lines[-2:]:
        line.notes.append(
            f"lfw-subset 25 px faces (SFace sees 112 px), surrogate over {args.adv_faces} "
            f"identities; median of {args.repeats} timed batch(es)"
        )


# -- d. a protective U-Net epoch ------------------------------------------------------------
def unet_on(device: torch.device, args: argparse.Namespace) -> dict[str, Any]:
    """Seconds of one ``train_generator`` epoch (training steps and the validation pass) on
    ``unet_images`` random 32 × 32 images, after a one-batch warm-up epoch."""
    from defenses.unet import ProtectiveUNet
    from defenses.unet_training import TrainConfig, train_generator
    from recognizers.cifar10_zoo import build_cifar10_model

    g = torch.Generator().manual_seed(0)
    n, batch = args.unet_images, args.unet_batch
    x = torch.rand(n, 3, 32, 32, generator=g).to(device)
    y = torch.randint(0, 10, (n,), generator=g).to(device)
    val = (x[:batch], y[:batch], y[:batch])
    target = build_cifar10_model("resnet18").to(device)
    aux = build_cifar10_model("mobilenet_v2").to(device)
    config = TrainConfig(epochs=1, batch=batch, amp=True)

    def epoch(data: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> None:
        gen = ProtectiveUNet(args.unet_width).to(device)
        train_generator(
            gen, data, val, target, aux, config, torch.Generator().manual_seed(1), (target, aux)
        )

    epoch((x[:batch], y[:batch], y[:batch]))  # warm-up: cuDNN, autocast, allocator
    s = seconds(lambda: epoch((x, y, y)), device, 1)
    return {"epoch": s, "rate": (n // batch) * batch / s}


def row_d(table: Table, devices: list[str], args: argparse.Namespace, work: Path) -> None:
    got = on_devices(table, "d", devices, lambda d: unet_on(d, args))
    lines = speed_lines(
        "d",
        got,
        [
            (
                "epoch",
                f"U-Net width {args.unet_width} epoch, {args.unet_images} img, "
                f"batch {args.unet_batch}",
                "s",
            ),
            ("rate", "same epoch, training images per second", "img/s"),
        ],
        higher_is_faster=False,
    )
    lines[0].notes.append(
        "train_generator: AMP fp16 on CUDA, fp32 on CPU; resnet18 target, mobilenet_v2 "
        "auxiliary (untrained); includes the validation pass of one batch"
    )
    lines[1].ratio, lines[1].ratio_of = ratio(lines[1].cuda, lines[1].cpu), "CUDA ÷ CPU"
    table.lines += lines


# -- e. latency with and without synchronisation ---------------------------------------------
def latency_suite(folder: Path, size: int) -> Path:
    return write_yaml(
        folder / "latency.yaml",
        {
            "name": "gpu-latency",
            "seed": 0,
            "dataset": {"name": "scenes", "params": {"size": size}},
            "recognizers": [
                {"name": "small-cnn", "params": {"steps": 5, "width": 8, "input_size": 16}}
            ],
            "defenses": [
                {"name": "gaussian-blur", "params": {"sigma": 1.5}},
                {"name": "krtio", "params": {"alpha": 0.45, "block": 8, "k": 3}},
            ],
            "counter_attacks": ["none"],
            "metrics": ["latency"],
            "upload": {"format": "png"},
            "batch_size": 10,
        },
    )


@contextlib.contextmanager
def unsynchronised() -> Iterator[None]:
    """The harness's timer without its CUDA synchronisation (``harness.engine.latency._sync``)."""
    import harness.engine.latency

    if not callable(getattr(harness.engine.latency, "_sync", None)):
        raise RuntimeError("harness.engine.latency._sync is gone: row e cannot switch the sync off")
    with mock.patch.object(harness.engine.latency, "_sync", lambda device: None):
        yield


def latency_on(device: torch.device, suite_path: Path, work: Path) -> dict[str, Any]:
    """The ``latency`` rows of two uncached runs: the harness's protocol, then the same
    without synchronisation."""
    from harness.cli.wiring import run_with_leaderboard
    from harness.engine.runner import RunOptions
    from harness.engine.suite import load_suite

    suite = load_suite(suite_path)
    out: dict[str, Any] = {}
    for mode in ("sync", "nosync"):
        options = RunOptions(
            work / "e-results", use_cache=False, progress=False, device=device.type
        )
        with unsynchronised() if mode == "nosync" else contextlib.nullcontext():
            result = run_with_leaderboard(suite, options)
        run_failures(result)
        for r in result.rows:
            if r.get("metric") == "latency" and r.get("value") is not None:
                out[f"{r['defense']}|{mode}"] = float(r["value"])
                out[f"{r['defense']}|n"] = r.get("n")
    return out


def row_e(table: Table, devices: list[str], args: argparse.Namespace, work: Path) -> None:
    suite = latency_suite(work, args.latency_size)
    got = on_devices(table, "e", devices, lambda d: latency_on(d, suite, work))
    labels = sorted({k.split("|")[0] for m in got.values() for k in m})
    for label in labels:
        n = next((m.get(f"{label}|n") for m in got.values() if f"{label}|n" in m), None)
        lines = speed_lines(
            "e",
            got,
            [
                (f"{label}|sync", f"{label}: synchronised (harness)", "ms/img"),
                (f"{label}|nosync", f"{label}: no synchronisation", "ms/img"),
            ],
            higher_is_faster=False,
        )
        lines[0].notes.append(
            f"scenes {args.latency_size} px, batches of 10, median of {n} timed batches"
        )
        lines[1].notes.append("harness.engine.latency._sync patched out")
        per = {d: ratio(m.get(f"{label}|nosync"), m.get(f"{label}|sync")) for d, m in got.items()}
        lines.append(
            Line(
                "e",
                f"{label}: no sync ÷ sync",
                "×",
                per.get("cpu"),
                per.get("cuda"),
                notes=["CPU: the same code twice (sync is a no-op there): run-to-run spread"],
            )
        )
        table.lines += lines


# -- f. a Dask run ------------------------------------------------------------------------------
def dask_suite(folder: Path, probes: int, cnn_steps: int, sface: bool) -> Path:
    recognizers: list[Any] = [{"name": "small-cnn", "params": {"steps": cnn_steps}}]
    if sface:
        recognizers.insert(0, {"name": "sface", "params": {"backend": "torch"}})
    return write_yaml(
        folder / "dask.yaml",
        {
            "name": "gpu-dask",
            "seed": 0,
            "dataset": {"name": "lfw-subset", "params": {"max_probes": probes}},
            "recognizers": recognizers,
            "defenses": [
                "none",
                {"name": "gaussian-blur", "params": {"sigma": 1.5}},
                {"name": "krtio", "params": {"alpha": 0.45, "block": 4, "k": 3}},
            ],
            "counter_attacks": ["none", {"name": "jpeg", "params": {"quality": 75}}],
            "metrics": ["fooling_rate", "ssim"],
            "upload": {"format": "png"},
            "batch_size": 16,
        },
    )


def dask_on(device: torch.device, suite_path: Path, work: Path) -> dict[str, Any]:
    """Seconds of a cold run through ``make_executor('dask', workers=2, device=...)``, the
    cluster's start and close included."""
    from harness.cli.wiring import run_with_leaderboard
    from harness.engine.executors import make_executor
    from harness.engine.runner import RunOptions
    from harness.engine.suite import load_suite

    suite = load_suite(suite_path)
    executor = make_executor("dask", workers=2, device=device.type)
    options = RunOptions(
        work / "f-results",
        cache_root=work / f"f-cache-{device.type}",
        progress=False,
        device=device.type,
        executor=executor,
    )
    t0 = time.perf_counter()
    result = run_with_leaderboard(suite, options)
    s = time.perf_counter() - t0
    run_failures(result)
    described = executor.describe()
    gpus = getattr(executor, "gpus", 0)
    if gpus:
        what = (
            f"{gpus} GPU worker{'s' if gpus != 1 else ''} (one per visible GPU, each with "
            "its own CUDA_VISIBLE_DEVICES; workers=2 applies to CPU clusters only)"
        )
    else:
        what = f"{described.get('workers')} single-threaded worker processes"
    return {"seconds": s, "what": what, "cells": suite.n_cells}


def row_f(table: Table, devices: list[str], args: argparse.Namespace, work: Path) -> None:
    suite = dask_suite(work, args.dask_probes, args.dask_cnn_steps, args.dask_sface)
    got = on_devices(table, "f", devices, lambda d: dask_on(d, suite, work))
    lines = speed_lines(
        "f",
        got,
        [("seconds", f"dask LocalCluster, cold, {args.dask_probes} probes", "s")],
        higher_is_faster=False,
    )
    for dev, m in got.items():
        lines[0].notes.append(f"{dev}: {m['what']}")
    cells = next((m["cells"] for m in got.values()), None)
    if cells is not None:
        judges = "sface (torch) and small-cnn" if args.dask_sface else "small-cnn only"
        lines[0].notes.append(f"{cells} cells ({judges}), cluster start-up included")
    table.lines += lines


ROW_FUNCTIONS: dict[str, Callable[[Table, list[str], argparse.Namespace, Path], None]] = {
    "a": row_a,
    "b": row_b,
    "c": row_c,
    "d": row_d,
    "e": row_e,
    "f": row_f,
}


# -- main ---------------------------------------------------------------------------------
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    size = ap.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="CPU-sized run (a few minutes)")
    size.add_argument("--tiny", action="store_true", help="test-sized run (seconds per row)")
    ap.add_argument("--rows", default=ROWS, help=f"which rows to run (default {ROWS})")
    ap.add_argument("--out", type=Path, help="write the table as JSON here")
    ap.add_argument("--no-cuda", action="store_true", help="CPU only, even with a GPU")
    ap.add_argument("--probes", type=int, help="a: lfw-subset probes (default: all 100)")
    ap.add_argument("--cnn-steps", type=int, help="a: small-cnn steps (default: the suite's)")
    ap.add_argument("--krtio-images", type=int, help="b: batch of 512×512 photos")
    ap.add_argument("--adv-faces", type=int, help="c: lfw-subset faces (surrogate identities)")
    ap.add_argument("--adv-fit-views", type=int, help="c: altered views per face to fit on")
    ap.add_argument("--adv-images", type=int, help="c: batch of faces (at most --adv-faces)")
    ap.add_argument("--aip-iterations", type=int, help="c: AIP steps")
    ap.add_argument("--pgd-iterations", type=int, help="c: PGD steps")
    ap.add_argument("--unet-images", type=int, help="d: images in the epoch")
    ap.add_argument("--unet-batch", type=int, help="d: batch size")
    ap.add_argument("--unet-width", type=int, help="d: generator width (paper: 32)")
    ap.add_argument("--latency-size", type=int, help="e: side of the scenes in pixels")
    ap.add_argument("--dask-probes", type=int, help="f: lfw-subset probes")
    ap.add_argument("--dask-cnn-steps", type=int, help="f: small-cnn steps")
    ap.add_argument(
        "--dask-sface",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="f: judge with sface (torch) besides small-cnn (default: yes, no with --tiny)",
    )
    ap.add_argument("--repeats", type=int, help="c: timed batches (median)")
    args = ap.parse_args(argv)
    preset = PRESETS["tiny" if args.tiny else "quick" if args.quick else "full"]
    for key, value in preset.items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    unknown = set(args.rows) - set(ROWS)
    if unknown or not args.rows:
        ap.error(f"--rows takes letters of {ROWS}, got {args.rows!r}")
    if args.unet_images < args.unet_batch:
        ap.error("--unet-images must be at least --unet-batch")
    return args


def sizes_of(args: argparse.Namespace) -> dict[str, Any]:
    return {k: getattr(args, k) for k in PRESETS["full"]}


@contextlib.contextmanager
def private_home() -> Iterator[Path]:
    """A new PRIVBENCH_HOME (and cache) for this run, the environment restored after."""
    saved = {k: os.environ.get(k) for k in ("PRIVBENCH_HOME", "PRIVBENCH_CACHE", "PYTHONPATH")}
    with tempfile.TemporaryDirectory(prefix="privbench-gpu-") as tmp:
        os.environ["PRIVBENCH_HOME"] = str(Path(tmp) / "home")
        os.environ.pop("PRIVBENCH_CACHE", None)
        # Child processes (row a's runs, Dask's workers) import harness from here too.
        os.environ["PYTHONPATH"] = os.pathsep.join(
            [*filter(None, [saved["PYTHONPATH"]]), str(ROOT)]
        )
        try:
            yield Path(tmp)
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from harness.core.provenance import cpu_model

    cuda = torch.cuda.is_available() and not args.no_cuda
    cpu_name = f"{cpu_model()}, {os.cpu_count()} cores, {torch.get_num_threads()} threads"
    cuda_name = torch.cuda.get_device_name(0) if cuda else None
    devices = ["cpu", "cuda"] if cuda else ["cpu"]
    table = Table(cpu_name, cuda_name)
    started = time.perf_counter()
    with private_home() as work:
        for row in ROWS:
            if row not in args.rows:
                continue
            t0 = time.perf_counter()
            folder = work / row
            folder.mkdir()
            try:
                ROW_FUNCTIONS[row](table, devices, args, folder)
            except Exception as exc:  # a row's own set-up failed, not one device
                table.fail(row, "set-up", exc)
            print(
                f"[row {row}: {TITLES[row]}, {time.perf_counter() - t0:.1f} s]",
                file=sys.stderr,
                flush=True,
            )
    print(
        f"privbench GPU check: torch {torch.__version__}, CUDA "
        f"{torch.version.cuda if cuda else ABSENT}, {time.perf_counter() - started:.0f} s, "
        f"sizes {json.dumps(sizes_of(args))}"
    )
    print(table.render())
    if table.failures:
        print(f"{len(table.failures)} measurement(s) failed (see the FAILED lines)")
    if args.out:
        args.out.write_text(
            json.dumps(table.as_json(sizes_of(args)), indent=1, ensure_ascii=False),
            encoding="utf-8",
        )
    return 1 if table.failures else 0


if __name__ == "__main__":
    sys.exit(main())

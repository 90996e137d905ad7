"""Executors: who runs a plan's work units. ``local`` runs them one after the other in this
process; ``dask`` spreads them over a Dask cluster (a ``LocalCluster`` of processes, one per
core or one per GPU, or any running cluster given by its scheduler address).

Both hand every finished :class:`~harness.engine.execute.UnitResult` to the same callback, and the
runner orders results by the plan, so a run's results.jsonl does not depend on the executor.
Workers share the content-addressed cache through its folder (it must be on a path every worker
sees; writes are atomic and locked per entry), so what one worker computed another reads.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch

from harness.core.errors import PrivbenchError
from harness.core.keys import Keyring
from harness.core.provenance import resolve_device
from harness.engine.execute import UnitRunner
from harness.engine.plan import WorkUnit
from harness.engine.results import UnitResult
from harness.engine.suite import Suite

Done = Callable[[UnitResult], None]
Tick = Callable[[], None]


class Executor(Protocol):
    """Runs ``units`` and calls ``done`` with each result as it finishes (any order)."""

    name: str

    def run(
        self, runner: UnitRunner, units: Sequence[WorkUnit], done: Done, tick: Tick | None
    ) -> None: ...

    def describe(self) -> dict[str, Any]: ...


class LocalExecutor:
    """Every unit in this process, in plan order, on the runner the run prepared."""

    name = "local"
    in_plan_order = True  # the progress bar may name the unit running

    def run(
        self, runner: UnitRunner, units: Sequence[WorkUnit], done: Done, tick: Tick | None
    ) -> None:
        for unit in units:
            done(runner.run_unit(unit, tick))

    def describe(self) -> dict[str, Any]:
        return {"name": self.name}


@dataclass(frozen=True)
class WorkerSpec:
    """What a worker needs to set up its own :class:`UnitRunner` (once per worker process)."""

    suite: Suite
    device: str
    keyring: Keyring
    cache_root: str | None
    use_cache: bool

    def token(self) -> str:
        return "|".join(
            [self.suite.sha256, self.device, self.keyring.key_id(), str(self.cache_root)]
        )


_WORKER_RUNNERS: dict[str, UnitRunner] = {}


def run_unit_on_worker(spec: WorkerSpec, unit: WorkUnit) -> UnitResult:
    """The task a Dask worker runs: prepare this suite once per process, then run the unit."""
    runner = _WORKER_RUNNERS.get(spec.token())
    if runner is None:
        threads = _worker_threads()
        if threads:
            torch.set_num_threads(threads)
        root = Path(spec.cache_root) if spec.cache_root else None
        runner = UnitRunner(
            spec.suite, resolve_device(spec.device), spec.keyring, root, spec.use_cache
        )
        runner.prepare()  # the main process recorded any recognizer failure already
        _WORKER_RUNNERS[spec.token()] = runner
    return runner.run_unit(unit)


def _worker_threads() -> int | None:
    try:
        from distributed import get_worker

        return int(get_worker().state.nthreads)
    except (ImportError, ValueError):
        return None


class DaskExecutor:
    """Units as Dask tasks. Without ``scheduler`` a ``LocalCluster`` is started for the run
    and closed after it: ``workers`` processes with one thread each (default: one per core),
    or on CUDA one worker per visible GPU, each seeing only its own (``CUDA_VISIBLE_DEVICES``).
    With ``scheduler`` (``tcp://host:8786``) the run uses that cluster as it is."""

    name = "dask"
    in_plan_order = False

    def __init__(
        self, scheduler: str | None = None, workers: int | None = None, gpus: int = 0
    ) -> None:
        try:
            import distributed  # noqa: F401
        except ImportError:
            raise PrivbenchError(
                "--executor dask needs Dask's distributed scheduler: "
                "pip install 'privbench[dist]' (or pip install 'dask[distributed]')"
            ) from None
        self.scheduler = scheduler
        self.workers = workers
        self.gpus = gpus
        self.spec: WorkerSpec | None = None

    def describe(self) -> dict[str, Any]:
        where = self.scheduler or (
            f"LocalCluster, {self.gpus} GPU workers" if self.gpus else "LocalCluster"
        )
        return {"name": self.name, "cluster": where, "workers": self.workers}

    def _cluster(self) -> Any:
        from distributed import LocalCluster, Nanny, Scheduler, SpecCluster

        if self.gpus:
            workers = gpu_worker_specs(self.gpus, Nanny)
            scheduler = {"cls": Scheduler, "options": {"dashboard_address": None}}
            return SpecCluster(workers=workers, scheduler=scheduler, silence_logs=logging.WARNING)
        return LocalCluster(
            n_workers=self.workers or os.cpu_count() or 1,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            silence_logs=logging.WARNING,
        )

    def run(
        self, runner: UnitRunner, units: Sequence[WorkUnit], done: Done, tick: Tick | None
    ) -> None:
        from distributed import Client, as_completed

        device = "cuda" if self.gpus else str(runner.device)
        spec = WorkerSpec(
            runner.suite,
            device,
            runner.keyring,
            str(runner.cache.root),
            runner.cache.enabled,
        )
        cluster = None if self.scheduler else self._cluster()
        try:
            client = Client(self.scheduler or cluster, set_as_default=False)
        except OSError as exc:
            raise PrivbenchError(
                f"cannot reach the Dask scheduler at {self.scheduler} ({exc}); start one "
                "(dask scheduler) or leave out --scheduler to run on a LocalCluster"
            ) from None
        cells = {u.index: u.cells for u in units}
        futures = []
        try:
            for unit in units:  # earlier units first; every unit once (pure=False: no dedup)
                future = client.submit(
                    run_unit_on_worker, spec, unit, pure=False, priority=-unit.index
                )
                futures.append(future)
            for future in as_completed(futures, loop=client.loop):
                result = future.result()
                done(result)
                for _ in range(cells[result.index] if tick else 0):
                    tick()  # type: ignore[misc]
        finally:
            client.cancel(futures)
            client.close()
            if cluster is not None:
                cluster.close()


def gpu_worker_specs(gpus: int, nanny: type) -> dict[str, dict[str, Any]]:
    """One single-threaded worker per GPU, each started seeing only its own device."""
    return {
        f"gpu-{i}": {
            "cls": nanny,
            "options": {"nthreads": 1, "env": {"CUDA_VISIBLE_DEVICES": str(i)}},
        }
        for i in range(gpus)
    }


def make_executor(
    name: str, scheduler: str | None = None, workers: int | None = None, device: str = "cpu"
) -> Executor:
    """The executor the command line asks for; ``dask`` on a CUDA device without a scheduler
    starts one worker per visible GPU."""
    if name == "local":
        if scheduler or workers:
            raise PrivbenchError("--scheduler and --workers need --executor dask")
        return LocalExecutor()
    if name == "dask":
        gpus = 0
        if scheduler is None and resolve_device(device).type == "cuda":
            gpus = torch.cuda.device_count()
        return DaskExecutor(scheduler, workers, gpus)
    raise PrivbenchError(f"unknown executor {name!r}; valid: local, dask")

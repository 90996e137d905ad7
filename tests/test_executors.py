"""The run's three parts and its executors: a plan in order, and a Dask cluster that gives the
same results as this process."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.engine.executors import LocalExecutor, make_executor
from harness.engine.plan import plan_run
from harness.engine.runner import RunOptions, run_suite
from harness.engine.suite import load_suite
from tests.conftest import write_suite

# The quickstart's shape on a subset: a detector, an identifier and a trained classifier;
# a keyed reversible defense, a shared overlay and none; a counter-attack that fits on the pool.
SUBSET = """\
name: dask-subset
seed: 0
dataset: {name: lfw-subset, params: {max_probes: 24}}
recognizers:
  - sface
  - yunet
  - {name: small-cnn, params: {steps: 20, width: 8, input_size: 16}}
defenses:
  - none
  - {name: naive-overlay, params: {alpha: 0.45}}
  - {name: krtio, params: {alpha: 0.45, block: 4, k: 3}}
counter_attacks: [none, {name: jpeg, params: {quality: 75}}, bss-ica]
metrics: [fooling_rate, detection_rate, ssim, recovery_ssim, latency]
upload: {format: png}
batch_size: 8
"""


def _rows(run_dir: Path) -> list[dict]:
    """results.jsonl without what only says when and where a timing was made."""
    rows = [json.loads(line) for line in (run_dir / "results.jsonl").read_text().splitlines()]
    return [r for r in rows if r["metric"] != "latency"]


def test_the_plan_has_one_unit_per_defense_config_in_suite_order(tmp_path: Path) -> None:
    suite = load_suite(write_suite(tmp_path / "s.yaml", SUBSET))
    plan = plan_run(suite)
    assert [u.defense.label for u in plan.units] == [d.label for d in suite.defenses]
    assert [u.index for u in plan.units] == [0, 1, 2]
    assert plan.n_cells == suite.n_cells == 27 and all(u.cells == 9 for u in plan.units)


def test_executor_choice_is_checked() -> None:
    assert isinstance(make_executor("local"), LocalExecutor)
    with pytest.raises(Exception, match="need --executor dask"):
        make_executor("local", scheduler="tcp://127.0.0.1:8786")
    with pytest.raises(Exception, match="valid: local, dask"):
        make_executor("ray")


def test_a_two_process_local_cluster_writes_the_results_of_a_local_run(tmp_path: Path) -> None:
    """Units finish in any order on the workers, each worker with its own recognizers and the
    run's own cache folder; results.jsonl is identical to the local run's, line for line."""
    pytest.importorskip("distributed")
    from harness.engine.executors import DaskExecutor

    suite = load_suite(write_suite(tmp_path / "s.yaml", SUBSET))
    local = run_suite(
        suite,
        RunOptions(tmp_path / "out", cache_root=tmp_path / "local", progress=False, run_id="a"),
    )
    dask = run_suite(
        suite,
        RunOptions(
            tmp_path / "out",
            cache_root=tmp_path / "dask",  # nothing cached: the workers compute every cell
            progress=False,
            run_id="b",
            executor=DaskExecutor(workers=2),
        ),
    )
    assert local.manifest["status"] == dask.manifest["status"] == "complete"
    assert dask.manifest["plan"]["executor"]["name"] == "dask"
    assert _rows(dask.run_dir) == _rows(local.run_dir) and len(_rows(local.run_dir)) > 27
    records = sorted(p.relative_to(local.run_dir) for p in local.run_dir.rglob("records/**/*"))
    assert records == sorted(
        p.relative_to(dask.run_dir) for p in dask.run_dir.rglob("records/**/*")
    )
    for rel in records:  # per-image outcomes and quality, byte for byte
        if (local.run_dir / rel).is_file():
            assert (local.run_dir / rel).read_bytes() == (dask.run_dir / rel).read_bytes()
    assert dask.manifest["cache"]["misses"] > 0
    # the workers wrote into the shared cache: the same run again computes nothing
    again = run_suite(
        suite,
        RunOptions(
            tmp_path / "out",
            cache_root=tmp_path / "dask",
            progress=False,
            run_id="c",
            executor=DaskExecutor(workers=2),
        ),
    )
    assert again.manifest["cache"]["misses"] == 0
    assert again.manifest["plan"]["cells_cached_at_start"] == suite.n_cells
    assert _rows(again.run_dir) == _rows(local.run_dir)


def test_a_gpu_cluster_has_one_worker_per_gpu_each_seeing_its_own() -> None:
    from harness.engine.executors import gpu_worker_specs

    specs = gpu_worker_specs(3, object)
    assert list(specs) == ["gpu-0", "gpu-1", "gpu-2"]
    assert [s["options"]["env"]["CUDA_VISIBLE_DEVICES"] for s in specs.values()] == ["0", "1", "2"]
    assert all(s["options"]["nthreads"] == 1 for s in specs.values())


def test_an_unreachable_scheduler_is_named_and_the_set_up_stays_cached(tmp_path: Path) -> None:
    pytest.importorskip("distributed")
    import dask

    from harness.core.errors import PrivbenchError
    from harness.engine.executors import DaskExecutor

    text = "name: tiny\ndataset: {name: lfw-subset, params: {max_probes: 4}}\n"
    text += "recognizers: [yunet]\ndefenses: [none]\nmetrics: [detection_rate]\n"
    suite = load_suite(write_suite(tmp_path / "s.yaml", text))
    options = RunOptions(
        tmp_path / "out",
        cache_root=tmp_path / "cache",
        progress=False,
        run_id="x",
        executor=DaskExecutor(scheduler="tcp://127.0.0.1:1"),
    )
    unreachable = pytest.raises(PrivbenchError, match="cannot reach the Dask scheduler at tcp")
    with dask.config.set({"distributed.comm.timeouts.connect": "1s"}), unreachable:
        run_suite(suite, options)
    manifest = json.loads((tmp_path / "out" / "tiny" / "x" / "manifest.json").read_text())
    assert manifest["status"] == "failed" and manifest["cache"]["misses"] > 0
    local = run_suite(suite, RunOptions(tmp_path / "out", cache_root=tmp_path / "cache",
                                        progress=False, run_id="y"))  # fmt: skip
    assert local.manifest["cache"]["hits"] >= manifest["cache"]["misses"]

"""Quickstart speed: a cold run (empty cache) against a cached re-run, in one process.

Prints seconds per stage of the cold run and the cold/cached ratio. Run:
    .venv/bin/python benchmarks/quickstart.py [SUITE]
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    suite_path = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "suites" / "quickstart.yaml"
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["PRIVBENCH_HOME"] = tmp
        from harness.cli.wiring import run_with_leaderboard
        from harness.engine.runner import RunOptions
        from harness.engine.suite import load_suite

        suite = load_suite(suite_path)
        options = RunOptions(out_root=Path(tmp) / "results", progress=False)
        t0 = time.perf_counter()
        cold = run_with_leaderboard(suite, options)
        cold_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        warm = run_with_leaderboard(suite, options)
        warm_s = time.perf_counter() - t0
    import torch

    print(
        f"suite {suite.name}: {suite.n_cells} cells, device {cold.manifest['machine']['device']}, "
        f"{torch.get_num_threads()} torch threads"
    )
    print(f"cold run   {cold_s:8.2f} s  ({cold.manifest['cache']['misses']} artefacts computed)")
    for stage, seconds in cold.manifest["stage_seconds"].items():
        print(f"  {stage:40s} {seconds:8.2f} s")
    print(f"cached run {warm_s:8.2f} s  ({warm.manifest['cache']['hits']} cache hits)")
    print(f"cold / cached: {cold_s / warm_s:.1f}x")


if __name__ == "__main__":
    main()

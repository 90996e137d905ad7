"""The figures in README.md and docs/ci.md that come from a shipped suite, generated from the
committed baselines in ``results/baselines/`` (``privbench baseline`` files: per cell the
per-image outcome bits, per defense the gated quality means) and from the suites themselves
(cell counts, through privbench's own suite loader).

Each figure sits between ``<!-- figures:NAME -->`` and ``<!-- /figures:NAME -->``; this script
rewrites what is between the markers and nothing else: a table on lines of its own, a sentence
on the lines after the opening marker (wrapped, indented like the marker's line) with the
closing marker right after its last word, so that it stays part of its paragraph. Timings and
other measurements stay prose outside the markers. After a new baseline, one command
regenerates the figures::

    privbench run suites/quickstart.yaml --run-id main
    privbench baseline results/quickstart/main -o results/baselines/quickstart.json
    python tools/readme_figures.py            # rewrite the figures
    python tools/readme_figures.py --check    # exit 1 (with a diff) when a file is out of date

Exit 2 names what is wrong with the inputs: a baseline missing, made from another version of
its suite, a marker with no figure of that name, a figure placed nowhere.
"""

from __future__ import annotations

import argparse
import difflib
import re
import sys
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tabulate import tabulate

from harness.analysis.baseline_file import read_baseline, unpack_bits
from harness.api.registry import METRICS, RECOGNIZERS
from harness.boards.game import run_games
from harness.boards.roles import FLOOR_PASS, floor_status
from harness.core.errors import PrivbenchError
from harness.core.files import atomic_write_text
from harness.engine.suite import Suite, load_suite
from harness.metrics.declared import metric_info
from harness.metrics.stats import mcnemar_exact, paired_difference_interval, wilson_interval
from harness.runs.outcomes import CellOutcome

ROOT = Path(__file__).resolve().parent.parent
WIDTH = 96  # the documents' line width; a sentence figure is wrapped to it
DOCS = ("README.md", "docs/ci.md")
MARKER = re.compile(r"(<!-- figures:([a-z0-9-]+) -->)(.*?)(<!-- /figures:\2 -->)", re.S)
Outcomes = dict[tuple[str, str, str], CellOutcome]


class FiguresError(PrivbenchError):
    """Inputs the figures cannot be made from (exit 2)."""


@dataclass(frozen=True)
class Source:
    """A shipped suite and its committed baseline, with the baseline's cells as outcomes."""

    suite: Suite
    baseline: dict[str, Any]
    outcomes: Outcomes

    @property
    def n_probes(self) -> int:
        return len(next(iter(self.outcomes.values())).ids)

    def rate(self, d: str, a: str, r: str) -> tuple[int, int]:
        """(fooled, eligible) of one cell."""
        cell = self.outcomes[(d, a, r)]
        return int(cell.fooled.sum()), int(cell.eligible.sum())

    def union(self, d: str, r: str) -> tuple[int, int]:
        """(fooled by every counter-attack, eligible): the per-image union."""
        cells = [self.outcomes[(d, a.label, r)] for a in self.suite.counter_attacks]
        fooled = np.logical_and.reduce([c.fooled for c in cells]) & cells[0].eligible
        return int(fooled.sum()), int(cells[0].eligible.sum())


def load_source(root: Path, name: str) -> Source:
    """``suites/NAME.yaml`` and ``results/baselines/NAME.json``, which must have been made from
    that version of the suite."""
    path = root / "results" / "baselines" / f"{name}.json"
    if not path.is_file():
        raise FiguresError(
            f"{path} is missing: make it with `privbench run suites/{name}.yaml --run-id main` "
            f"and `privbench baseline results/{name}/main -o {path}`"
        )
    baseline = read_baseline(path)
    suite = load_suite(root / "suites" / f"{name}.yaml")
    if baseline["suite_sha256"] != suite.sha256:
        raise FiguresError(
            f"{path} was made from another version of suites/{name}.yaml (suite_sha256 "
            f"{baseline['suite_sha256'][:12]}…, the suite is now {suite.sha256[:12]}…): run the "
            "suite again and make a new baseline from it"
        )
    if len({c["ids_sha256"] for c in baseline["cells"].values()}) != 1:
        raise FiguresError(f"{path}: its cells do not all cover the same probes")
    cells = {
        (c["defense"], c["counter_attack"], c["recognizer"]) for c in baseline["cells"].values()
    }
    every = {
        (d.label, a.label, r.label)
        for d in suite.defenses
        for a in suite.counter_attacks
        for r in suite.recognizers
    }
    if cells != every:
        raise FiguresError(
            f"{path} holds {len(cells)} cells, not the suite's {len(every)}: make it from a "
            "complete run of the whole suite (no --cells)"
        )
    outcomes = {}
    for cell in baseline["cells"].values():
        n = cell["n_probes"]
        ids = tuple(f"probe-{i}" for i in range(n))  # aligned to ids_sha256, the same for all
        key = (cell["defense"], cell["counter_attack"], cell["recognizer"])
        outcomes[key] = CellOutcome(
            ids, unpack_bits(cell["eligible"], n), unpack_bits(cell["fooled"], n)
        )
    return Source(suite, baseline, outcomes)


def wrap(text: str, indent: str = "") -> str:
    """``text`` in lines of at most WIDTH, never broken inside a word or a label."""
    return textwrap.fill(
        text,
        WIDTH,
        initial_indent=indent,
        subsequent_indent=indent,
        break_long_words=False,
        break_on_hyphens=False,
    )


def table(rows: list[list[Any]], header: list[str]) -> str:
    return tabulate(rows, header, tablefmt="github", disable_numparse=True)


def percent(k: int, n: int) -> str:
    return f"{100 * k / n:.0f}%"


def with_interval(k: int, n: int) -> str:
    low, high = wilson_interval(k, n)
    return f"{100 * k / n:.1f} [{100 * low:.1f}, {100 * high:.1f}]"


def named(src: Source, method: str) -> str:
    """The label of the suite's first defense config of ``method``."""
    return next(d.label for d in src.suite.defenses if d.name == method)


def quickstart_cells(src: Source) -> str:
    s = src.suite
    return (
        f"The quickstart evaluates {len(s.defenses)} defense configs × {len(s.counter_attacks)} "
        f"counter-attacks × {len(s.recognizers)} recognizers = {s.n_cells} cells on the "
        f"{src.n_probes} probe faces of `{s.dataset.label}`."
    )


def _best_single(src: Source, d: str, r: str) -> tuple[int, int]:
    rates = [src.rate(d, a.label, r) for a in src.suite.counter_attacks]
    return min(rates, key=lambda kn: kn[0] / kn[1])


def quickstart_union(src: Source) -> str:
    krtio = named(src, "krtio")
    parts = []
    for r in src.suite.recognizers:
        best, union = _best_single(src, krtio, r.label), src.union(krtio, r.label)
        parts.append((r.label, percent(*best), percent(*union)))
    (r0, b0, u0), rest = parts[0], parts[1:]
    tail = "".join(f"; × {r} {b} and {u}" for r, b, u in rest)
    return (
        f"In the quickstart, k-RTIO × {r0} is {b0} for the best single move but {u0} per "
        f"image{tail}."
    )


def _paired(src: Source, a: str, b: str, recognizer: str) -> str:
    """B against A with no counter-attack, as ``privbench compare`` pairs them: the rates on
    the probes eligible in both, Δ = B − A with its Bonett-Price interval, exact McNemar p."""
    oa, ob = src.outcomes[(a, "none", recognizer)], src.outcomes[(b, "none", recognizer)]
    both = oa.eligible & ob.eligible
    fa, fb = oa.fooled[both], ob.fooled[both]
    only_b, only_a = int((fb & ~fa).sum()), int((fa & ~fb).sum())
    delta, low, high = paired_difference_interval(
        int((fa & fb).sum()), only_b, only_a, int((~fa & ~fb).sum())
    )
    p = mcnemar_exact(only_a, only_b)
    return (
        f"{100 * fa.mean():.0f}% and {100 * fb.mean():.0f}% (Δ {100 * delta:.1f} points "
        f"[{100 * low:.1f}, {100 * high:.1f}], McNemar p = {p:.2g})"
    ).replace("-", "−")


def quickstart_compare(src: Source) -> str:
    krtio, overlay = named(src, "krtio"), "naive-overlay(alpha=0.6)"
    if overlay not in {d.label for d in src.suite.defenses}:
        raise FiguresError(f"suites/{src.suite.name}.yaml has no {overlay}")
    return (
        f"Measured on the quickstart, with no counter-attack: against sface k-RTIO and the fixed "
        f"overlay at α 0.6 fool {_paired(src, krtio, overlay, 'sface')}; against small-cnn "
        f"{_paired(src, krtio, overlay, 'small-cnn')}."
    )


def ranked_configs(src: Source) -> list[str]:
    """The defense configs that clear the suite's quality floor by the ranking's rule
    (:func:`harness.boards.roles.floor_status`: the interval's worse bound; a baseline made
    before baselines kept the interval is judged on its mean, as the ranking does then)."""
    floor = src.suite.quality_floor
    if not floor:
        return [d.label for d in src.suite.defenses]
    quality = src.baseline["quality"]
    metric = floor["metric"]
    if any(metric not in quality.get(d.label, {}) for d in src.suite.defenses):
        raise FiguresError(f"the {src.suite.name} baseline lacks the floor's metric {metric!r}")
    cls = METRICS.get(metric)
    declared = {"scope": "defense", "higher_is_better": cls.higher_is_better, **cls.describe()}
    info = metric_info(metric, declared)  # the declaration a run's manifest would carry
    cleared = []
    for d in src.suite.defenses:
        stored = quality[d.label][metric]
        interval = (stored.get("ci_low"), stored.get("ci_high"))
        status, _ = floor_status(stored["mean"], interval, floor, info)
        if status == FLOOR_PASS:
            cleared.append(d.label)
    return cleared


def quickstart_floor(src: Source) -> str:
    pixelate = named(src, "pixelate")
    metric = src.suite.quality_floor["metric"]
    mean = src.baseline["quality"][pixelate][metric]["mean"]
    return f"`{pixelate}`, {metric.upper()} {mean:.2f}"


def quickstart_game(src: Source) -> str:
    s = src.suite
    kinds = {r.label: RECOGNIZERS.get(r.name).kind for r in s.recognizers}
    attacks = [a.label for a in s.counter_attacks]
    ranked = ranked_configs(src)
    games = run_games(ranked, attacks, [r.label for r in s.recognizers], src.outcomes, kinds)
    rows = []
    for g in games:
        eq = g.equilibrium
        low, high = g.interval
        owner = g.defenses[int(eq.owner.argmax())] if eq.owner.max() == 1 else "mixed"
        platform = g.attacks[int(eq.platform.argmax())] if eq.platform.max() == 1 else "mixed"
        value = f"{100 * eq.value:.1f} [{100 * low:.1f}, {100 * high:.1f}]"
        rows.append([g.recognizer, value, f"{100 * eq.pure_value:.1f}", owner, platform])
    header = ["recognizer", "value: recognition %", "pure worst case", "owner plays", "platform"]
    saddle = all(g.equilibrium.value == g.equilibrium.pure_value for g in games)
    verdict = (
        "every recognizer's game has a pure saddle point, so mixing does not help the owner there"
        if saddle
        else "mixing lowers the value below the best pure worst case for some recognizer"
    )
    metric = s.quality_floor["metric"].upper() if s.quality_floor else "quality"
    intro = (
        f"In the quickstart's games over the {len(ranked)} configs whose mean {metric} meets "
        f"the floor ({', '.join(ranked)}) and its {len(attacks)} counter-attacks, {verdict}:"
    )
    return f"\n{wrap(intro)}\n\n{table(rows, header)}\n\n"


def ci_gate_summary(src: Source) -> str:
    krtio = named(src, "krtio")
    recognizers = [r.label for r in src.suite.recognizers]
    under = [
        " / ".join(percent(*src.rate(krtio, a.label, r)) for r in recognizers) + f" under {a.label}"
        for a in src.suite.counter_attacks
    ]
    quality = ", ".join(
        f"{m.upper()} {v['mean']:.3g}" for m, v in sorted(src.baseline["quality"][krtio].items())
    )
    return (
        f"In the committed baseline, k-RTIO fools {' / '.join(recognizers)} "
        f"{', '.join(under)} (of the probes each recognizes clean; {src.n_probes} probes); "
        f"mean {quality}."
    )


def ci_gate_table(src: Source) -> str:
    rows = []
    for (d, a, r), _ in sorted(src.outcomes.items()):
        k, n = src.rate(d, a, r)
        rows.append([f"{d} × {a} × {r}", with_interval(k, n), n])
    for d, metrics in sorted(src.baseline["quality"].items()):
        for m, v in sorted(metrics.items()):
            rows.append([f"{d}: mean {m.upper()}", f"{v['mean']:.4g}", v["n"]])
    header = ["cell", "fooling rate % [95% Wilson] / quality", "n"]
    return f"\n{table(rows, header)}\n\n"


# figure name → (the suite whose baseline it reads, the function that writes it)
FIGURES: dict[str, tuple[str, Callable[[Source], str]]] = {
    "quickstart-cells": ("quickstart", quickstart_cells),
    "quickstart-union": ("quickstart", quickstart_union),
    "quickstart-floor": ("quickstart", quickstart_floor),
    "quickstart-game": ("quickstart", quickstart_game),
    "quickstart-compare": ("quickstart", quickstart_compare),
    "ci-gate-summary": ("ci-gate", ci_gate_summary),
    "ci-gate-table": ("ci-gate", ci_gate_table),
}


def _regenerate(path: Path, text: str, root: Path, sources: dict[str, Source]) -> str:
    """``text`` with every figure between its markers written anew."""

    def figure(match: re.Match[str]) -> str:
        name = match.group(2)
        if name not in FIGURES:
            raise FiguresError(f"{path}: no figure named {name!r}; known: {', '.join(FIGURES)}")
        suite, write = FIGURES[name]
        if suite not in sources:
            sources[suite] = load_source(root, suite)
        body = write(sources[suite])
        if not body.startswith("\n"):  # a sentence: wrapped, indented as the marker's line
            line = text[text.rfind("\n", 0, match.start()) + 1 : match.start()]
            indent = line[: len(line) - len(line.lstrip())]
            body = "\n" + wrap(body, indent)
        return match.group(1) + body + match.group(4)

    return MARKER.sub(figure, text)


def render(root: Path) -> dict[Path, tuple[str, str]]:
    """Each document → (its text now, its text with every figure regenerated)."""
    sources: dict[str, Source] = {}
    out = {}
    for doc in DOCS:
        path = root / doc
        if not path.is_file():
            raise FiguresError(f"{path} is missing")
        text = path.read_text(encoding="utf-8")
        out[path] = (text, _regenerate(path, text, root, sources))
    placed = {m.group(2) for now, _ in out.values() for m in MARKER.finditer(now)}
    if missing := sorted(set(FIGURES) - placed):
        raise FiguresError(f"figures placed in none of {', '.join(DOCS)}: {', '.join(missing)}")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only report files out of date")
    parser.add_argument("--root", type=Path, default=ROOT, help="the repository (default: this)")
    args = parser.parse_args(argv)
    try:
        docs = render(args.root)
    except PrivbenchError as exc:
        print(f"readme_figures: {exc}", file=sys.stderr)
        return 2
    stale = {path: texts for path, texts in docs.items() if texts[0] != texts[1]}
    for path, (now, then) in stale.items():
        if args.check:
            name = str(path.relative_to(args.root))
            diff = difflib.unified_diff(
                now.splitlines(True), then.splitlines(True), name, name + " (generated)"
            )
            sys.stdout.writelines(diff)
        else:
            atomic_write_text(path, then)
    if args.check and stale:
        print("readme_figures: out of date; run: python tools/readme_figures.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

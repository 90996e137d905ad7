"""What ``privbench run`` prints: a progress bar on a terminal only, then a summary of at most
40 lines (the verdict, the top of the ranking, failures and skips, the cache, where the board
and the report are); ``--verbose`` the whole board before it, ``--quiet`` only errors."""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path

import pytest

from harness.boards import summary
from harness.boards.summary import MAX_LINES, Podium, ranking_lines, summary_lines
from harness.cli.main import main
from harness.cli.wiring import run_summary
from harness.engine.plan import plan_run
from harness.engine.progress import RunProgress
from harness.engine.runner import RunOptions, run_suite
from harness.engine.suite import load_suite
from harness.runs.folder import Run
from tests.conftest import write_suite

OLD = Path(__file__).resolve().parent / "data" / "runs" / "old-blur-v0.1"

SUITE = """\
name: said
dataset: {name: digits, params: {max_probes: 24, size: 32}}
recognizers:
  - {name: small-cnn, params: {steps: 20, width: 4, input_size: 16}, label: cnn-a}
  - {name: small-cnn, params: {steps: 20, width: 8, input_size: 16}, label: cnn-b}
defenses:
  - none
  - {name: gaussian-blur, params: {sigma: 1.0}}
  - {name: naive-overlay, params: {alpha: 0.3}, label: overlay}
  - {name: naive-overlay, params: {overlay: /no/such.png}, label: broken}
counter_attacks: [none, {name: jpeg, params: {quality: 75}}]
metrics: [fooling_rate, ssim]
quality_floor: {metric: ssim, min: 0.5}
batch_size: 64
"""


@pytest.fixture
def suite(tmp_path: Path) -> Path:
    return write_suite(tmp_path / "said.yaml", SUITE)


def _run(suite: Path, out: Path, run_id: str, *flags: str) -> int:
    return main(["run", str(suite), "--out", str(out), "--run-id", run_id, *flags])


def test_run_prints_a_short_summary_that_names_its_files_once(suite, tmp_path, capsys) -> None:
    assert _run(suite, tmp_path / "r", "a") == 1  # the broken config fails
    out, err = capsys.readouterr()
    folder = tmp_path / "r" / "said" / "a"
    board, report = folder / "leaderboard.md", folder / "report.html"
    assert report.is_file()
    assert out == "\n".join(run_summary(folder, report, None)) + "\n"
    lines = out.splitlines()
    assert len(lines) <= MAX_LINES < len(board.read_text().splitlines())
    assert lines[0].startswith("said: failed, 16 cells in ")
    assert "  classifiers (cnn-a, cnn-b): top " in out  # one role, ranked on their mean
    assert "Failed (1):" in out and "  - defense broken: " in out and "/no/such.png" in out
    assert lines[-2:] == [f"Leaderboard: {board}", f"Report:      {report}"]
    for path in (board, report):
        assert (out + err).count(str(path)) == 1
    # the summary names the failure; stderr says where the tracebacks are, and no bar: not a tty
    assert "failed:" not in err and "--debug" in err
    assert "\r" not in err and "cell/s" not in err and "it/s" not in err


def test_verbose_prints_the_board_then_the_summary_and_quiet_neither(
    suite, tmp_path, capsys
) -> None:
    assert _run(suite, tmp_path / "r", "v", "--verbose") == 1
    out, err = capsys.readouterr()
    folder = tmp_path / "r" / "said" / "v"
    said = "\n".join(run_summary(folder, folder / "report.html", None)) + "\n"
    assert out == (folder / "leaderboard.md").read_text(encoding="utf-8") + "\n" + said
    assert "privbench: defense 'broken' failed: " in err
    assert _run(suite, tmp_path / "r", "q", "--quiet") == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert "privbench: defense 'broken' failed: " in err and "defense configs ×" not in err


def test_without_the_report_the_summary_says_how_to_make_it(suite, tmp_path, capsys) -> None:
    assert _run(suite, tmp_path / "r", "n", "--no-html") == 1
    out = capsys.readouterr().out
    folder = tmp_path / "r" / "said" / "n"
    assert not (folder / "report.html").exists()
    assert f"Report:      not written; privbench report {folder} writes it" in out.splitlines()


def test_the_bar_names_the_defense_config_that_runs(suite, tmp_path, capsys) -> None:
    loaded = load_suite(suite)
    run_suite(loaded, RunOptions(out_root=tmp_path / "r", progress=True))
    err = capsys.readouterr().err
    for i, label in enumerate(["none", "gaussian-blur(sigma=1.0)", "overlay", "broken"], 1):
        assert f"defense {label} ({i}/4)" in err
    assert "setting up the data set and recognizers" in err and "16/16" in err


def test_the_bar_says_what_runs_in_plan_order_or_how_many_are_done(suite) -> None:
    units = plan_run(load_suite(suite)).units
    texts = {}
    for in_order in (True, False):
        bar = RunProgress("said", 8, units, in_order, file=io.StringIO())
        said = [bar.bar.postfix]
        bar.started()
        for _ in units:
            said.append(bar.doing())
            bar.unit_done()
        said.append(bar.doing())
        bar.close()
        texts[in_order] = said
    assert texts[True] == [
        "setting up the data set and recognizers",
        "defense none (1/4)",
        "defense gaussian-blur(sigma=1.0) (2/4)",
        "defense overlay (3/4)",
        "defense broken (4/4)",
        "writing the results",
    ]
    assert texts[False][1:] == [f"{k}/4 defense configs done" for k in range(4)] + [
        "writing the results"
    ]


# -- the summary alone ---------------------------------------------------------------------------
def test_the_summary_of_the_old_run_names_its_ranking_cache_and_files() -> None:
    run = Run.load(OLD)
    lines = summary_lines(run, ["The verdict.\nIts second line."], None, "privbench report X")
    assert lines == [
        "old-blur: complete, 4 cells in 125 s (run v0.1)",
        "",
        "The verdict.",
        "Its second line.",
        "",
        "Top of the ranking (% of probes fooled at the platform's best counter-attack):",
        "  cnn (classifier): top 2 of 2 ranked",
        "    1. none (no defense)    0.0% (no counter-attack)",
        "    2. blur                 0.0% (no counter-attack), = the row above (McNemar p = 1)",
        "",
        "Cache: 0 of 4 cells cached at the start; 12 entries read, 6 computed",
        "",
        f"Leaderboard: {OLD / 'leaderboard.md'}",
        "Report:      not written; privbench report X",
    ]


def _big_run(
    n_defenses: int, n_recognizers: int, n_failures: int, n_skipped: int, roles: bool = True
) -> Run:
    """The old run grown in memory: every defense config meets every recognizer under two
    counter-attacks; failures and skips as many as asked, their messages many lines long.
    ``roles``: each recognizer of a kind of its own (a role each), else all classifiers."""
    old = Run.load(OLD)
    rows = []
    for d in range(n_defenses):
        label = f"defense-{d:02d}(" + "p=1, " * 20 + ")"  # a label longer than a line
        rows.append({**old.rows[0], "defense": label, "metric": "ssim", "value": 0.9})
        for r in range(n_recognizers):
            for a, value in (("none", 0.9), ("jpeg(quality=75)", (d % 7) / 10)):
                cell = next(x for x in old.rows if x["scope"] == "cell")
                rows.append(
                    {**cell, "defense": label, "recognizer": f"rec-{r}", "counter_attack": a}
                    | {"value": value, "ci_low": None, "ci_high": None}
                )
    failures = [
        {"scope": "defense", "name": f"f{i}", "error": "OSError:\n" + "x" * 500}
        for i in range(n_failures)
    ]
    skipped = [
        {"scope": "defense", "name": f"s{i}", "needs": ["weights w"]} for i in range(n_skipped)
    ]
    kinds = {f"rec-{r}": f"kind-{r}" for r in range(n_recognizers)} if roles else {}
    info = dataclasses.replace(
        old.info, status="failed", failures=failures, skipped=skipped, recognizer_kinds=kinds
    )
    return dataclasses.replace(old, info=info, rows=rows, outcomes={})


@pytest.mark.parametrize("verdict_lines", [0, 3, 50])
def test_a_big_run_with_many_failures_keeps_to_the_bound(verdict_lines: int) -> None:
    run = _big_run(n_defenses=30, n_recognizers=12, n_failures=25, n_skipped=9)
    verdict = [f"verdict {i}" for i in range(verdict_lines)]
    lines = summary_lines(run, verdict, Path("/r/report.html"))
    assert len(lines) <= MAX_LINES
    assert all("\n" not in line and len(line) <= 200 for line in lines)
    assert "Failed (25):" in lines and "  … and 22 more (--verbose or --debug for all)" in lines
    assert "Skipped here (9):" in lines and "  … and 6 more (--verbose or --debug for all)" in lines
    assert lines[-1] == "Report:      /r/report.html"
    groups = [line for line in lines if line.startswith("  rec-")]
    assert groups and all(g.endswith(": top 3 of 30 ranked") for g in groups)
    assert lines[lines.index(groups[-1]) + 4] == f"  … and {12 - len(groups)} more " + (
        "(leaderboard.md has them all)"
    )
    assert lines[2 : 2 + min(verdict_lines, 11)] == verdict[:11]
    assert ("… and 39 more lines of the verdict" in lines) == (verdict_lines == 50)
    # the best of each recognizer: value (d % 7) / 10 is highest for d = 6, 13, 20, 27
    first = lines[lines.index(groups[0]) + 1]
    assert first.startswith("    1. defense-06(p=1") and first.endswith("60.0% (jpeg(quality=75))")


def test_the_ranking_part_shows_whole_groups_only() -> None:
    groups = [Podium(f"g{i}", [("a", "1"), ("b", "2"), ("c", "3")], 5) for i in range(3)]
    assert ranking_lines(groups, 2) == []
    assert len(ranking_lines(groups, 13)) == 13  # title + 3 groups of 4 lines
    cut = ranking_lines(groups, 12)  # no room for the third: two groups and a line saying so
    assert len(cut) == 10 and cut[-1] == "  … and 1 more (leaderboard.md has them all)"


def test_a_role_of_several_recognizers_is_ranked_on_their_mean() -> None:
    lines = summary_lines(_big_run(4, 2, 0, 0, roles=False), [])
    groups = [line for line in lines if line.startswith("  classifiers")]
    assert groups == ["  classifiers (rec-0, rec-1): top 3 of 4 ranked"]
    first = lines[lines.index(groups[0]) + 1]  # d % 7 / 10 is highest for d = 3 of 0..3
    assert first.startswith("    1. defense-03(p=1") and first.endswith(
        " 30.0% (mean of its recognizers)"
    )
    many = summary_lines(_big_run(4, 12, 0, 0, roles=False), [])
    assert "  classifiers (12 recognizers): top 3 of 4 ranked" in many


def test_a_conceal_run_shows_its_one_ranking() -> None:
    """The conceal rule (harness.boards.conceal_board): the target within its tolerated drop,
    then lower auxiliary accuracy at the platform's best counter-attack first."""
    counter_attacks = [{"name": "none", "label": "none"}, {"name": "retrain", "label": "retrain"}]
    config = {"objective": "conceal", "target_drop_tolerance": 0.05}
    manifest = {
        "config": {**config, "counter_attacks": counter_attacks},
        "roles": {d: {"target": "T", "auxiliary": "A"} for d in ("keeps", "breaks", "seen")},
    }

    def cell(d: str, attack: str, rec: str, metric: str, value: float) -> dict:
        where = {"scope": "cell", "defense": d, "counter_attack": attack, "recognizer": rec}
        return {**where, "metric": metric, "value": value, "n": 100, "ci_low": None}

    rows = []
    for d, drop, aux_none, aux_retrain in [
        ("keeps", 0.03, 0.10, 0.12),
        ("breaks", 0.08, 0.01, 0.01),  # the target loses too much: not ranked
        ("seen", 0.05, 0.02, 0.90),  # retraining sees through it
    ]:
        rows += [
            cell(d, "none", "T", "recognition_rate", 0.95 - drop),
            cell(d, "none", "T", "accuracy_drop", drop),
            cell(d, "none", "A", "recognition_rate", aux_none),
            cell(d, "retrain", "A", "recognition_rate", aux_retrain),
        ]
    (group,) = summary.conceal_podiums(manifest, rows)
    assert group.ranked == 2
    assert group.entries == [
        ("keeps", "auxiliary accuracy  12.0%"),
        ("seen", "auxiliary accuracy  90.0%"),
    ]

"""The figures README.md and docs/ci.md quote from shipped suites are what
``tools/readme_figures.py`` generates from the committed baselines (results/baselines/) and
the suites; the check fails on a changed figure and on inputs it cannot trust, and the
figures agree with the numbers the baselines store."""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _figures() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "readme_figures", ROOT / "tools/readme_figures.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


figures = _figures()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """What the script reads, copied: the documents, the baselines and the suites."""
    for doc in figures.DOCS:
        (tmp_path / doc).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / doc, tmp_path / doc)
    shutil.copytree(ROOT / "results" / "baselines", tmp_path / "results" / "baselines")
    shutil.copytree(ROOT / "suites", tmp_path / "suites")
    return tmp_path


def test_the_committed_figures_are_what_the_baselines_give(capsys: pytest.CaptureFixture) -> None:
    status = figures.main(["--check"])
    assert status == 0, capsys.readouterr().out + "\nrun: python tools/readme_figures.py"


def test_a_changed_figure_fails_the_check_and_a_rewrite_restores_it(
    repo: Path, capsys: pytest.CaptureFixture
) -> None:
    readme = repo / "README.md"
    text = readme.read_text(encoding="utf-8")
    start = text.index("<!-- figures:quickstart-union -->")
    end = text.index("<!-- /figures:quickstart-union -->")
    edited = text[:start] + text[start:end].replace("48%", "47%", 1) + text[end:]
    assert edited != text
    readme.write_text(edited, encoding="utf-8")
    assert figures.main(["--check", "--root", str(repo)]) == 1
    out = capsys.readouterr().out
    assert (
        "-    In the quickstart, k-RTIO × sface is 58% for the best single move but 47% per" in out
    )
    assert (
        "+    In the quickstart, k-RTIO × sface is 58% for the best single move but 48% per" in out
    )
    assert readme.read_text(encoding="utf-8") == edited  # --check writes nothing
    assert figures.main(["--root", str(repo)]) == 0
    assert readme.read_text(encoding="utf-8") == text
    assert figures.main(["--check", "--root", str(repo)]) == 0


def test_text_outside_the_markers_is_left_alone(repo: Path) -> None:
    readme = repo / "README.md"
    text = readme.read_text(encoding="utf-8").replace(
        "A cold run took 116 s", "A cold run took 9 s"
    )
    readme.write_text(text, encoding="utf-8")
    assert figures.main(["--check", "--root", str(repo)]) == 0


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("suite", "was made from another version of suites/ci-gate.yaml"),
        ("baseline", "results/baselines/ci-gate.json is missing: make it with"),
        ("marker", "no figure named 'no-such-figure'"),
        ("placement", "figures placed in none of README.md, docs/ci.md: ci-gate-table"),
    ],
)
def test_inputs_it_cannot_trust_are_refused_by_name(
    repo: Path, capsys: pytest.CaptureFixture, change: str, message: str
) -> None:
    ci = repo / "docs" / "ci.md"
    if change == "suite":
        with (repo / "suites" / "ci-gate.yaml").open("a", encoding="utf-8") as f:
            f.write("# edited after the baseline was made\n")
    elif change == "baseline":
        (repo / "results" / "baselines" / "ci-gate.json").unlink()
    elif change == "marker":
        ci.write_text(
            ci.read_text() + "\n<!-- figures:no-such-figure --><!-- /figures:no-such-figure -->\n"
        )
    else:
        text = ci.read_text()
        ci.write_text(
            text.replace("<!-- figures:ci-gate-table -->", "").replace(
                "<!-- /figures:ci-gate-table -->", ""
            )
        )
    assert figures.main(["--check", "--root", str(repo)]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("suite", ["quickstart", "ci-gate"])
def test_the_figures_agree_with_what_the_baseline_stores(suite: str) -> None:
    source = figures.load_source(ROOT, suite)
    cells = source.baseline["cells"].values()
    assert len(cells) == source.suite.n_cells
    for cell in cells:  # the bits give the stored rate: the same division of the same counts
        k, n = source.rate(cell["defense"], cell["counter_attack"], cell["recognizer"])
        assert k / n == cell["fooling_rate"]
    for d in source.suite.defenses:
        for r in source.suite.recognizers:
            fooled, eligible = source.union(d.label, r.label)
            best = min(
                source.rate(d.label, a.label, r.label)[0] for a in source.suite.counter_attacks
            )
            assert fooled <= best  # fooled by every counter-attack ⊆ fooled by any one
            assert eligible == source.rate(d.label, "none", r.label)[1]

"""The core must not import Qt or napari (fast headless imports, usable in notebooks and on
clusters): import the core modules in a fresh interpreter and inspect ``sys.modules``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import pytest

CORE_MODULES = [
    "napari_segloss",
    "napari_segloss.losses",
    "napari_segloss.metrics",
    "napari_segloss.maps",
    "napari_segloss.overlay",
    "napari_segloss.data",
    "napari_segloss.data.io",
    "napari_segloss.engine",
    "napari_segloss.samples",
    "napari_segloss.landscape",
    "napari_segloss.plotting",
    "napari_segloss.whatif",
    "napari_segloss.explorer",
    "napari_segloss._napari_io",  # the reader/sample hooks are imported at plugin discovery
]
FORBIDDEN = ("napari", "qtpy", "PyQt6", "PyQt5", "PySide6", "PySide2", "magicgui")

# One interpreter for all modules (torch costs ~2 s per start). Modules are imported in order
# and each one is charged only with the GUI modules that appeared during its own import.
_PROBE = """
import importlib, importlib.util, json, sys
forbidden = {forbidden!r}
def gui():
    return {{m for m in sys.modules if m.split(".")[0] in forbidden}}
report = {{}}
for module in {modules!r}:
    try:
        present = importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        present = False
    if not present:
        report[module] = None
        continue
    before = gui()
    importlib.import_module(module)
    report[module] = sorted(gui() - before)
print(json.dumps(report))
"""


def _run_fresh(code: str, env: dict[str, str], cwd: str | None = None) -> Any:
    """Run ``code`` in a fresh interpreter; the JSON of its last output line."""
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, **env},
        cwd=cwd,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def _probe(modules: list[str]) -> dict[str, list[str] | None]:
    code = _PROBE.format(forbidden=FORBIDDEN, modules=modules)
    return _run_fresh(code, {"QT_QPA_PLATFORM": "offscreen"})


def test_core_imports_neither_qt_nor_napari() -> None:
    report = _probe(CORE_MODULES)
    assert report["napari_segloss"] is not None, "the package itself must be importable"
    leaks = {module: leaked for module, leaked in report.items() if leaked}
    assert leaks == {}, f"core modules pulled in GUI modules: {leaks}"
    missing = [m for m, leaked in report.items() if leaked is None]
    if missing:  # not a failure: those modules are written by other issues
        pytest.skip(f"checked all but these modules, which do not exist yet: {missing}")


def test_probe_detects_a_leak() -> None:
    """Guard against a probe that cannot fail: importing qtpy must be reported."""
    pytest.importorskip("qtpy")
    report = _probe(["napari_segloss", "qtpy"])
    assert report["napari_segloss"] == []
    assert "qtpy" in report["qtpy"]


# ----------------------------------------------------------------------------------------------
# the `segloss` command: text the user waits for must not wait on torch

#: what `segloss --help`, a usage error or `segloss evaluate` never needs
CLI_HEAVY = (
    "torch",
    "torchvision",
    "segmentation_models_pytorch",
    "timm",
    "monai",
    "napari",
    "matplotlib",
    "pandas",
)

_CLI_PROBE = """
import json, sys
from napari_segloss.cli import main
try:
    code = main({argv!r})
except SystemExit as exc:
    code = exc.code
heavy = {heavy!r}
print(json.dumps([code, sorted({{m.split(".")[0] for m in sys.modules}} & set(heavy))]))
"""


def _cli_modules(argv: list[str], cwd: str | None = None) -> tuple[object, list[str]]:
    """Run ``segloss *argv`` in a fresh interpreter: its exit code and the heavy packages it
    imported."""
    code = _CLI_PROBE.format(argv=argv, heavy=CLI_HEAVY)
    code_, heavy = _run_fresh(code, {"SEGLOSS_MALLOC_TUNING": "0"}, cwd)
    return code_, heavy


@pytest.mark.parametrize(
    ("argv", "expected_code"),
    [
        (["--help"], 0),
        (["train", "--help"], 0),
        (["predict", "--help"], 0),
        (["evaluate", "--help"], 0),
        (["compare", "--help"], 0),
        (["configs"], 0),  # lists the shipped configs: YAML only
        (["losses", "--help"], 0),
        (["train", "--config", "no_such_name"], 2),  # not a file, not a shipped name
        ([], 2),  # no command
        (["train"], 2),  # --config missing
        (["train", "--config", "no/such/config.yaml"], 2),
        (["predict", "--checkpoint", "no/such.pt", "--input", "x.png", "--output", "out"], 2),
        (["evaluate", "--pred", "no/such/dir", "--gt", "no/such/dir"], 2),
    ],
)
def test_cli_help_and_usage_errors_do_not_import_torch(
    argv: list[str], expected_code: int, tmp_path
) -> None:
    code, heavy = _cli_modules(argv, cwd=str(tmp_path))
    assert code == expected_code
    assert heavy == [], f"segloss {' '.join(argv)} imported {heavy}"


def test_cli_evaluate_runs_without_torch(tmp_path) -> None:
    """`segloss evaluate` scores label files with the numpy metrics: no torch."""
    import numpy as np
    from PIL import Image

    for role in ("pred", "gt"):
        (tmp_path / role).mkdir()
        mask = np.zeros((32, 32), np.uint8)
        mask[8:20, 8 if role == "pred" else 10 : 24] = 1
        Image.fromarray(mask).save(tmp_path / role / "a.png")
    argv = ["evaluate", "--pred", str(tmp_path / "pred"), "--gt", str(tmp_path / "gt")]
    code, heavy = _cli_modules([*argv, "--output", str(tmp_path / "out")])
    assert code == 0
    assert (tmp_path / "out" / "summary.md").is_file()
    assert heavy == [], f"segloss evaluate imported {heavy}"

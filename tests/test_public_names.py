"""Every name a module lists in ``__all__`` exists (lazy re-exports included), and every name one
package module imports from another module that has an ``__all__`` is listed there.

The first check imports the modules, in a fresh interpreter (the panels import napari; lazy
packages resolve their names on access, which ``hasattr`` triggers); the second reads the source.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_architecture import MODULES, REPO, resolve

_PROBE = """
import importlib, json, sys
report = {}
for module in sys.argv[1:]:
    mod = importlib.import_module(module)
    names = list(mod.__all__)
    report[module] = sorted({n for n in names if not hasattr(mod, n)}) + (
        ["(duplicates)"] if len(names) != len(set(names)) else []
    )
print(json.dumps(report))
"""


def all_node(tree: ast.Module) -> ast.Assign | None:
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets
        ):
            return node
    return None


def with_all() -> list[str]:
    return sorted(m for m, path in MODULES.items() if all_node(ast.parse(path.read_text())))


def missing_all_names(modules: list[str], path: list[str]) -> dict[str, list[str]]:
    """module -> the names of its ``__all__`` that it does not have (or "(duplicates)")."""
    env = {
        **os.environ,
        "QT_QPA_PLATFORM": "offscreen",
        "PYTHONPATH": os.pathsep.join([*path, os.environ.get("PYTHONPATH", "")]),
    }
    result = subprocess.run(
        [sys.executable, "-c", _PROBE, *modules],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env=env,
    )
    assert result.returncode == 0, f"importing {modules} failed:\n{result.stderr[-3000:]}"
    report = json.loads(result.stdout.strip().splitlines()[-1])
    return {module: names for module, names in report.items() if names}


def test_every_all_name_exists() -> None:
    modules = with_all()
    assert "napari_segloss.losses" in modules and "napari_segloss.engine" in modules
    assert missing_all_names(modules, [str(REPO)]) == {}


def test_all_check_can_fail(tmp_path: Path) -> None:
    (tmp_path / "probe_all.py").write_text('__all__ = ["kept", "removed", "kept"]\nkept = 1\n')
    assert missing_all_names(["probe_all"], [str(tmp_path)]) == {
        "probe_all": ["removed", "(duplicates)"]
    }


def literal_all(module: str) -> set[str] | None:
    node = all_node(ast.parse(MODULES[module].read_text()))
    try:
        return set(ast.literal_eval(node.value)) if node else None
    except ValueError:  # computed (the lazy packages): checked by test_every_all_name_exists
        return None


def unlisted_imports(module: str) -> list[str]:
    """Names ``module`` imports from package modules whose ``__all__`` does not list them."""
    out = []
    for node in ast.walk(ast.parse(MODULES[module].read_text())):
        if not isinstance(node, ast.ImportFrom):
            continue
        source = resolve(module, node)
        listed = literal_all(source) if source in MODULES else None
        if listed is None:
            continue
        out += [
            f"{alias.name} from {source}"
            for alias in node.names
            if alias.name not in listed and f"{source}.{alias.name}" not in MODULES
        ]
    return out


@pytest.mark.parametrize("module", sorted(MODULES))
def test_names_imported_across_modules_are_in_all(module: str) -> None:
    bad = unlisted_imports(module)
    assert not bad, f"{module} imports names missing from their module's __all__: {bad}"


def test_unlisted_import_check_can_fail(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text("from .metrics.overlap import not_listed\n")
    monkeypatch.setitem(MODULES, "napari_segloss.probe", probe)
    assert unlisted_imports("napari_segloss.probe") == [
        "not_listed from napari_segloss.metrics.overlap"
    ]

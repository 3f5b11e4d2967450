"""The structure of ``data``, ``engine`` and ``cli``, read from the source (AST): import arrows
point one way, imports sit at module top, no private name crosses a module, sizes stay small."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "napari_segloss"
SCOPES = ("napari_segloss.data", "napari_segloss.engine", "napari_segloss.cli")
#: Function-level imports allowed, each with its reason in the source: segmentation_models_pytorch
#: (and timm, which it loads) cost ~1.5 s after torch and only model building needs them.
LAZY_ALLOWED = {
    ("napari_segloss.engine.model", "segmentation_models_pytorch"),
    ("napari_segloss.engine.model", "timm"),
}


def _modules() -> dict[str, Path]:
    out = {}
    for f in PACKAGE.rglob("*.py"):
        parts = list(f.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = f
    return out


MODULES = _modules()


def _mine(name: str) -> bool:
    return any(name == s or name.startswith(s + ".") for s in SCOPES)


def _resolve(module: str, node: ast.ImportFrom, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _imports(module: str) -> list[tuple[ast.stmt, str, list[str], bool]]:
    """``(node, imported module, names, at module top)`` for every import in ``module``."""
    path = MODULES[module]
    tree = ast.parse(path.read_text(encoding="utf-8"))
    top = set()
    for stmt in tree.body:  # module body, and the bodies of top-level try/if blocks
        top.add(stmt)
        for block in ("body", "orelse", "finalbody"):
            top.update(getattr(stmt, block, []) if isinstance(stmt, ast.Try | ast.If) else [])
        for handler in getattr(stmt, "handlers", []):
            top.update(handler.body)
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                out.append((node, alias.name, [], node in top))
        elif isinstance(node, ast.ImportFrom):
            target = _resolve(module, node, path.name == "__init__.py")
            out.append((node, target, [a.name for a in node.names], node in top))
    return out


def _internal_target(target: str, names: list[str]) -> list[str]:
    found = [f"{target}.{n}" for n in names if f"{target}.{n}" in MODULES]
    while target and target not in MODULES:
        target = target.rpartition(".")[0]
    return found + ([target] if target else [])


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {m: set() for m in MODULES if _mine(m)}
    for module in graph:
        for _, target, names, _ in _imports(module):
            if target.startswith("napari_segloss"):
                graph[module].update(t for t in _internal_target(target, names) if t != module)
    return graph


def test_no_import_cycle_among_data_engine_and_cli() -> None:
    graph = _graph()
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append([*stack[stack.index(nxt) :], nxt])
            elif nxt in graph and not state.get(nxt):
                visit(nxt, [*stack, nxt])
        state[node] = 2

    for node in sorted(graph):
        if not state.get(node):
            visit(node, [node])
    assert cycles == []


def test_data_never_imports_the_engine_or_the_cli() -> None:
    graph = _graph()
    upward = {
        (m, t)
        for m, targets in graph.items()
        if m.startswith("napari_segloss.data")
        for t in targets
        if t.startswith(("napari_segloss.engine", "napari_segloss.cli", "napari_segloss._widgets"))
    }
    assert upward == set()
    assert not any(t.startswith("napari_segloss._widgets") for ts in graph.values() for t in ts)


def test_imports_at_module_top_and_no_private_names_across_modules() -> None:
    nested, private = [], []
    for module in (m for m in MODULES if _mine(m)):
        for node, target, names, at_top in _imports(module):
            root = target.split(".")[0]
            if not at_top and (module, root) not in LAZY_ALLOWED:
                nested.append(f"{module}:{node.lineno} {target}")
            for name in names:
                crosses = target.startswith("napari_segloss") and f"{target}.{name}" not in MODULES
                if crosses and name.startswith("_") and not name.startswith("__"):
                    private.append(f"{module}: {name} from {target}")
    assert nested == []
    assert private == []


@pytest.mark.parametrize("module", sorted(m for m in MODULES if _mine(m)))
def test_small_files_and_functions(module: str) -> None:
    source = MODULES[module].read_text(encoding="utf-8")
    assert len(source.splitlines()) <= 800
    long = [
        (node.name, node.end_lineno - node.lineno + 1)
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.end_lineno - node.lineno + 1 > 120
    ]
    assert long == []


def test_the_checks_can_fail(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Guard against checks that cannot fail: a planted cycle and a nested import are found."""
    a, b = tmp_path / "_probe_a.py", tmp_path / "_probe_b.py"
    a.write_text("from . import _probe_b\n")
    b.write_text("def f():\n    from . import _probe_a\n")
    monkeypatch.setitem(MODULES, "napari_segloss.engine._probe_a", a)
    monkeypatch.setitem(MODULES, "napari_segloss.engine._probe_b", b)
    with pytest.raises(AssertionError):
        test_no_import_cycle_among_data_engine_and_cli()
    with pytest.raises(AssertionError):
        test_imports_at_module_top_and_no_private_names_across_modules()

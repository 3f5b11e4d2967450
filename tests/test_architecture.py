"""The architecture's rules, read from the source with ``ast`` (no import needed):

* no import cycle among the package's modules (module-level imports, ``TYPE_CHECKING`` blocks
  excluded, as they never run);
* no file over 800 lines, no function over 120 lines;
* no private (underscore) name imported from another module;
* imports at module top, except the optional heavy dependencies of ``LAZY_ALLOWED`` (each with
  its reason);
* no panel module imports another panel module (panels: the widget commands of napari.yaml);
* only ``_widgets`` imports Qt, napari, magicgui or superqt (at any level, in functions too);
* the layers point one way (:data:`LAYER_RULES`, imports at any level): the core (``losses``,
  ``metrics``, ``overlay``, ``data``, ``samples``) imports nothing from ``engine``, the
  services (``maps``, ``explorer``, ``whatif``, ``plotting``, ``landscape``), ``cli`` or
  ``_widgets``, ``losses`` nothing from ``data`` or ``metrics``, ``metrics`` and ``overlay``
  nothing from ``losses``; ``engine`` and the services nothing from ``cli`` or ``_widgets``;
  ``cli`` nothing from ``_widgets``; ``progress`` and ``cpus`` (the bars and the core count of
  ``data`` and ``engine``) nothing from the package.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "napari_segloss"
MAX_FILE_LINES = 800
MAX_FUNCTION_LINES = 120


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}

#: function-level imports allowed: (module, imported module) -> why
TORCH_IN_WORKER = "torch-backed: imported in a thread worker, so the GUI never blocks on torch"
CLI_COMMAND = "imported by the sub-command that runs, so --help and usage errors need no torch"
LAZY_ALLOWED = {
    ("napari_segloss.engine.model", "segmentation_models_pytorch"): "1.5 s; only models need it",
    ("napari_segloss.engine.model", "timm"): "loaded by smp; only models need it",
    ("napari_segloss.plotting", "matplotlib.pyplot"): "pyplot selects a GUI backend on import",
    ("napari_segloss.metrics.surface", "scipy.spatial"): "0.2 s to import, one code path",
    ("napari_segloss._widgets._common", "torch"): TORCH_IN_WORKER,
    ("napari_segloss._widgets._forms", "napari_segloss.explorer"): TORCH_IN_WORKER,
    ("napari_segloss._widgets._forms", "napari_segloss.losses"): (
        "parameter tooltips, read once the loss catalog (and so torch) is loaded"
    ),
    ("napari_segloss._widgets._explorer_jobs", "napari_segloss.explorer"): TORCH_IN_WORKER,
    ("napari_segloss._widgets._explorer_jobs", "napari_segloss.engine.inference"): TORCH_IN_WORKER,
    ("napari_segloss._widgets.predict_panel", "napari_segloss.engine.inference"): TORCH_IN_WORKER,
    ("napari_segloss._widgets._workers", "napari_segloss.engine.checkpoint"): TORCH_IN_WORKER,
    ("napari_segloss._widgets.compare_panel", "napari_segloss.explorer"): TORCH_IN_WORKER,
    ("napari_segloss._widgets._compare_setup", "napari_segloss.engine.compare"): TORCH_IN_WORKER,
    ("napari_segloss._widgets._compare_setup", "napari_segloss.data.factory"): TORCH_IN_WORKER,
    ("napari_segloss._widgets._compare_setup", "napari_segloss.engine.model"): TORCH_IN_WORKER,
    ("napari_segloss._widgets._compare_setup", "scipy.spatial"): (
        "imported ahead of the first run in a worker (the surface metrics need it)"
    ),
    ("napari_segloss._widgets._compare_setup", "napari_segloss.engine.config"): (
        "pydantic config, 0.25 s to import: read in the comparison's worker"
    ),
    ("napari_segloss._widgets.train_panel", "napari_segloss.engine.prepare"): TORCH_IN_WORKER,
    ("napari_segloss._widgets.train_panel", "napari_segloss.engine.training"): TORCH_IN_WORKER,
    # the `segloss` command: each sub-command imports what it runs, so that --help and usage
    # errors print before torch loads and `segloss evaluate` never loads it
    ("napari_segloss.cli", "torch"): CLI_COMMAND,
    ("napari_segloss.cli", "numpy"): CLI_COMMAND,
    ("napari_segloss.cli", "nibabel"): CLI_COMMAND,
    ("napari_segloss.cli", "tifffile"): CLI_COMMAND,
    ("napari_segloss.cli", "PIL"): CLI_COMMAND,
    ("napari_segloss.cli", "napari_segloss.data.io"): CLI_COMMAND,
    ("napari_segloss.cli", "napari_segloss.metrics"): CLI_COMMAND,
    ("napari_segloss.cli", "napari_segloss.engine"): CLI_COMMAND,
    ("napari_segloss._cli_losses", "napari_segloss"): CLI_COMMAND,  # `segloss losses`
    # predict's and evaluate's file I/O, split out of cli.py under the same rule
    ("napari_segloss._cli_io", "numpy"): CLI_COMMAND,
    ("napari_segloss._cli_io", "nibabel"): CLI_COMMAND,
    ("napari_segloss._cli_io", "tifffile"): CLI_COMMAND,
    ("napari_segloss._cli_io", "PIL"): CLI_COMMAND,
    ("napari_segloss._cli_io", "napari_segloss.data.io"): CLI_COMMAND,
    ("napari_segloss._cli_io", "napari_segloss.engine.inference"): CLI_COMMAND,
}


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def top_level_imports(tree: ast.Module) -> list[ast.Import | ast.ImportFrom]:
    """Imports that run when the module is imported: module level, also inside try/if (but not
    ``if TYPE_CHECKING``), not inside functions or classes."""
    out: list[ast.Import | ast.ImportFrom] = []

    def visit(body: list[ast.stmt]) -> None:
        for node in body:
            if isinstance(node, ast.Import | ast.ImportFrom):
                out.append(node)
            elif isinstance(node, ast.If) and not _is_type_checking(node):
                visit(node.body)
                visit(node.orelse)
            elif isinstance(node, ast.Try):
                visit(node.body)
                for handler in node.handlers:
                    visit(handler.body)
                visit(node.orelse)
                visit(node.finalbody)

    visit(tree.body)
    return out


def resolve(module: str, node: ast.ImportFrom) -> str:
    """Absolute name of the module an ``ImportFrom`` reads from."""
    if node.level == 0:
        return node.module or ""
    is_package = MODULES[module].name == "__init__.py"
    base = module.split(".")
    base = base if is_package else base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def ancestors(module: str) -> set[str]:
    parts = module.split(".")
    return {".".join(parts[:i]) for i in range(1, len(parts))}


def package_edges() -> dict[str, set[str]]:
    """module -> the package modules its module-level imports load.

    ``from package import name`` loads the package's __init__ (and ``package.name`` when that
    is a submodule). The importer's own parent packages are not edges: they are always
    imported first, and a package __init__ that re-exports its submodules is the usual
    pattern, unless the module reads a name defined in that __init__ (``from . import x``
    where x is not a submodule), which does depend on it.
    """
    edges: dict[str, set[str]] = {m: set() for m in MODULES}
    for module, path in MODULES.items():
        own = ancestors(module)
        tree = ast.parse(path.read_text(), str(path))
        for node in top_level_imports(tree):
            targets: set[str] = set()
            if isinstance(node, ast.Import):
                for alias in node.names:
                    targets |= {alias.name} | (ancestors(alias.name) - own)
            else:
                source = resolve(module, node)
                subs = {f"{source}.{a.name}" for a in node.names} & set(MODULES)
                reads_init = len(subs) < len(node.names)
                targets |= subs | (ancestors(source) - own)
                if source not in own or reads_init:
                    targets.add(source)
            edges[module] |= {t for t in targets if t in MODULES and t != module}
    return edges


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One import cycle (a list of modules, first == last), or None."""
    state: dict[str, int] = {}  # 1 on the stack, 2 done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_no_import_cycle() -> None:
    edges = package_edges()
    # a package's own __init__ importing its submodules is fine only if those do not import the
    # package back: that is exactly a cycle in this graph
    cycle = find_cycle(edges)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_package_reexports_are_not_cycles_but_reading_the_init_is() -> None:
    edges = package_edges()
    # losses/__init__ imports .dice, and dice imports .registry: the parent is not an edge
    assert "napari_segloss.losses.dice" in edges["napari_segloss.losses"]
    assert "napari_segloss.losses" not in edges["napari_segloss.losses.dice"]


def test_cycle_detection_finds_a_planted_cycle() -> None:
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}
    assert find_cycle(edges) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


@pytest.mark.parametrize("module", sorted(MODULES))
def test_file_and_function_sizes(module: str) -> None:
    path = MODULES[module]
    text = path.read_text()
    assert text.count("\n") <= MAX_FILE_LINES, f"{path.name}: {text.count(chr(10))} lines"
    long = [
        f"{node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for node in ast.walk(ast.parse(text))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES
    ]
    assert not long, f"{module}: functions over {MAX_FUNCTION_LINES} lines: {long}"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_private_name_imported_across_modules(module: str) -> None:
    tree = ast.parse(MODULES[module].read_text())
    bad = [
        f"{alias.name} from {resolve(module, node)}"
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and resolve(module, node).startswith("napari_segloss")
        for alias in node.names
        if alias.name.startswith("_")
        and not alias.name.startswith("__")
        and f"{resolve(module, node)}.{alias.name}" not in MODULES  # a private submodule
    ]
    assert not bad, f"{module} imports private names: {bad}"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_at_module_top(module: str) -> None:
    tree = ast.parse(MODULES[module].read_text())
    at_top = {id(node) for node in top_level_imports(tree)}
    for block in tree.body:  # annotations only: never run
        if isinstance(block, ast.If) and _is_type_checking(block):
            at_top |= {id(node) for node in ast.walk(block)}
    nested = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Import | ast.ImportFrom) or id(node) in at_top:
            continue
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            source = resolve(module, node)
            names = [f"{source}.{alias.name}" for alias in node.names] + [source]
        allowed = [m for (owner, m) in LAZY_ALLOWED if owner == module]
        if not any(n == m or n.startswith(m + ".") for n in names for m in allowed):
            nested.append(f"line {node.lineno}: {ast.unparse(node)}")
    assert not nested, f"{module} imports inside functions: {nested}"


def test_import_rules_can_fail(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # a planted module with a function-level import and a private name is caught
    probe = tmp_path / "probe.py"
    probe.write_text("from .losses.functional import _SUM_CHUNK\n\ndef f():\n    import numpy\n")
    monkeypatch.setitem(MODULES, "napari_segloss.probe", probe)
    with pytest.raises(AssertionError, match="inside functions"):
        test_imports_at_module_top("napari_segloss.probe")
    with pytest.raises(AssertionError, match="private names"):
        test_no_private_name_imported_across_modules("napari_segloss.probe")


def panel_modules() -> set[str]:
    manifest = yaml.safe_load((REPO / "napari.yaml").read_text())
    commands = {c["id"]: c["python_name"] for c in manifest["contributions"]["commands"]}
    out = set()
    for widget in manifest["contributions"]["widgets"]:
        module, _, attr = commands[widget["command"]].partition(":")
        # the command may point at a package that re-exports the class (an import) or
        # imports it on access (its ``_PANELS`` table: class -> submodule): find its module
        tree = ast.parse(MODULES[module].read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                if any((a.asname or a.name) == attr for a in node.names):
                    module = resolve(module, node)
            elif isinstance(node, ast.Assign) and isinstance(node.value, ast.Dict):
                if any(isinstance(t, ast.Name) and t.id == "_PANELS" for t in node.targets):
                    table = {ast.literal_eval(k): ast.literal_eval(v)
                             for k, v in zip(node.value.keys, node.value.values, strict=True)}  # fmt: skip
                    module = f"{module}.{table[attr]}" if attr in table else module
        out.add(module)
    return out


def test_panels_are_found() -> None:
    assert len(panel_modules()) == len(
        yaml.safe_load((REPO / "napari.yaml").read_text())["contributions"]["widgets"]
    )


def test_no_panel_imports_another_panel() -> None:
    panels = panel_modules()
    edges = package_edges()
    for panel in panels:
        tree = ast.parse(MODULES[panel].read_text())
        imported = set(edges[panel])
        for node in ast.walk(tree):  # function-level imports count too
            imported.update(import_targets(panel, node))
        others = sorted(imported & (panels - {panel}))
        assert not others, f"panel {panel} imports panel(s) {others}"


SERVICES = ("maps", "explorer", "whatif", "plotting", "landscape")
ABOVE_CORE = ("engine", *SERVICES, "cli", "_cli_io", "_widgets")
FRONT_DOORS = ("cli", "_cli_io", "_widgets")
#: package (or module) -> what it never imports, at any level
LAYER_RULES = {
    "napari_segloss.losses": (*ABOVE_CORE, "data", "metrics", "overlay", "samples"),
    "napari_segloss.metrics": (*ABOVE_CORE, "losses"),
    "napari_segloss.overlay": (*ABOVE_CORE, "losses"),
    "napari_segloss.data": ABOVE_CORE,
    "napari_segloss.samples": ABOVE_CORE,
    # the progress bars and core count of data and engine: leaves, below everything using them
    "napari_segloss.progress": (*ABOVE_CORE, "losses", "metrics", "overlay", "data", "samples"),
    "napari_segloss.cpus": (*ABOVE_CORE, "losses", "metrics", "overlay", "data", "samples"),
    "napari_segloss.engine": FRONT_DOORS,
    **{f"napari_segloss.{service}": FRONT_DOORS for service in SERVICES},
    "napari_segloss.cli": ("_widgets",),
    "napari_segloss._cli_io": ("_widgets",),
}
#: the GUI toolkits: only ``_widgets`` may import them
GUI_PACKAGES = ("napari", "qtpy", "PyQt5", "PyQt6", "PySide2", "PySide6", "magicgui", "superqt")
GUI_LAYER = "napari_segloss._widgets"


def import_targets(module: str, node: ast.AST) -> list[str]:
    """The modules an import statement names: ``from a import b`` names ``a`` and ``a.b`` (b may
    be a submodule: ``from .. import engine``)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if isinstance(node, ast.ImportFrom):
        source = resolve(module, node)
        return [source, *(f"{source}.{alias.name}" for alias in node.names)]
    return []


def in_package(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


@pytest.mark.parametrize("layer", sorted(LAYER_RULES))
def test_layers_point_one_way(layer: str) -> None:
    forbidden = [f"napari_segloss.{name}" for name in LAYER_RULES[layer]]
    for module, path in MODULES.items():
        if not in_package(module, layer):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            for target in import_targets(module, node):
                bad = [f for f in forbidden if in_package(target, f)]
                assert not bad, f"{module} imports {target}"


@pytest.mark.parametrize("module", sorted(m for m in MODULES if not in_package(m, GUI_LAYER)))
def test_only_the_panels_import_qt_or_napari(module: str) -> None:
    tree = ast.parse(MODULES[module].read_text())
    gui = sorted(
        target
        for node in ast.walk(tree)  # function-level and TYPE_CHECKING imports count too
        for target in import_targets(module, node)
        if target.split(".")[0] in GUI_PACKAGES
    )
    assert not gui, f"{module} imports {gui}: only {GUI_LAYER} may import Qt or napari"


#: planted violations, one per kind of rule: (module replaced or added, its source, its layer)
PLANTED = [
    ("napari_segloss.losses.probe", "from .. import engine\n", "napari_segloss.losses"),
    ("napari_segloss.losses.probe", "from ..data import io\n", "napari_segloss.losses"),
    (
        "napari_segloss.metrics.probe",
        "def f():\n    from ..losses import get_loss\n",
        "napari_segloss.metrics",
    ),
    ("napari_segloss.data.probe", "import napari_segloss.whatif\n", "napari_segloss.data"),
    ("napari_segloss.engine.probe", "from .. import cli\n", "napari_segloss.engine"),
    ("napari_segloss.maps", "from ._widgets import loss_explorer\n", "napari_segloss.maps"),
    ("napari_segloss.cli", "def f():\n    from . import _widgets\n", "napari_segloss.cli"),
]


@pytest.mark.parametrize(("module", "source", "layer"), PLANTED)
def test_layer_rules_can_fail(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, module: str, source: str, layer: str
) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text(source)
    monkeypatch.setitem(MODULES, module, probe)
    with pytest.raises(AssertionError, match=re.escape(f"{module} imports napari_segloss")):
        test_layers_point_one_way(layer)


@pytest.mark.parametrize("source", ["import napari\n", "def f():\n    from qtpy import QtCore\n"])
def test_gui_rule_can_fail(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, source: str) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text(source)
    monkeypatch.setitem(MODULES, "napari_segloss.engine.probe", probe)
    with pytest.raises(AssertionError, match=re.escape("only napari_segloss._widgets may import")):
        test_only_the_panels_import_qt_or_napari("napari_segloss.engine.probe")

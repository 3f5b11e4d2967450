"""The Jupyter door: the committed notebooks are the source people edit, so check them directly.

They must be stripped of outputs, linted by ruff (the lint step covers ``*.ipynb``), free of paths
outside the repository, and run top to bottom in quick mode. Execution uses nbclient with the
``python3`` kernel; jupyter_client starts a kernelspec whose ``argv[0]`` is ``python`` with
``sys.executable``, so the kernel runs in the same interpreter (the project venv) as pytest —
checked explicitly by an extra cell. ``SEGLOSS_NB_MODE=quick`` makes every notebook tiny (the
whole set runs in a minute or two on 2 CPU cores).
"""

from __future__ import annotations

import base64
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = ROOT / "notebooks"
EXPECTED = [
    "01_pm_dice_modulating_maps.ipynb",
    "02_loss_landscapes_prediction_space.ipynb",
    "03_loss_landscapes_parameter_space.ipynb",
    "04_compare_losses.ipynb",
]
MODE_LINE = 'MODE = os.environ.get("SEGLOSS_NB_MODE", "full")'


def _read(name: str) -> nbformat.NotebookNode:
    return nbformat.read(NOTEBOOK_DIR / name, as_version=4)


def test_all_notebooks_present():
    found = sorted(p.name for p in NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb"))
    assert found == EXPECTED


@pytest.mark.parametrize("name", EXPECTED)
def test_committed_notebook_is_stripped(name):
    nb = _read(name)
    nbformat.validate(nb)
    code_cells = [c for c in nb.cells if c.cell_type == "code"]
    assert code_cells, f"{name} has no code"
    how = "clear all outputs before committing (see notebooks/README.md, Editing)"
    for k, cell in enumerate(code_cells):
        assert cell.outputs == [], f"{name}: code cell {k} has outputs: {how}"
        assert cell.execution_count is None, f"{name}: code cell {k} was executed: {how}"
    assert "widgets" not in nb.metadata
    assert nb.metadata["kernelspec"]["name"] == "python3"


@pytest.mark.parametrize("name", EXPECTED)
def test_notebook_has_mode_switch_and_uses_package_helpers(name):
    nb = _read(name)
    first_code = next(c for c in nb.cells if c.cell_type == "code")
    assert MODE_LINE in first_code.source
    source = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    # plotting helpers live in the package, not in the notebooks
    assert "from napari_segloss.plotting import" in source
    assert "def show_maps_grid" not in source and "def contour_landscape" not in source
    assert "shared/data" not in source  # the product must not need ../shared at run time


def _ruff() -> str:
    ruff = shutil.which("ruff") or shutil.which("ruff", path=str(Path(sys.executable).parent))
    if ruff is None:
        pytest.skip("ruff is not installed")
    return ruff


def test_ruff_lints_the_notebooks():
    """The notebooks are code: ruff must see them (extend-include) and find them clean."""
    ruff = _ruff()
    listed = subprocess.run(
        [ruff, "check", "--show-files", "notebooks"], cwd=ROOT, capture_output=True, text=True
    )
    seen = {Path(line.strip()).name for line in listed.stdout.splitlines()}
    assert set(EXPECTED) <= seen, f"ruff does not check {sorted(set(EXPECTED) - seen)}"
    for args in (["check"], ["format", "--check"]):
        result = subprocess.run(
            [ruff, *args, *EXPECTED], cwd=NOTEBOOK_DIR, capture_output=True, text=True
        )
        assert result.returncode == 0, f"ruff {' '.join(args)}:\n{result.stdout}{result.stderr}"


# What the notebooks and docs must not point to: the developers' shared folder, the design card
# and the papers' files exist only next to this repository, not for its users.
OUTSIDE = re.compile(r"\.\./shared|shared/(data|papers)|DESIGN\.md|papers/")
LINK = re.compile(r"\]\(([^)\s]+)\)")


DOCUMENTS = [
    *(f"notebooks/{name}" for name in EXPECTED),
    "notebooks/README.md",
    *sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "docs").glob("*.md")),
]


@pytest.mark.parametrize("document", DOCUMENTS)
def test_no_path_outside_the_repository(document):
    path = ROOT / document
    if path.suffix == ".ipynb":
        text = "\n".join(c.source for c in nbformat.read(path, as_version=4).cells)
    else:
        text = path.read_text(encoding="utf-8")
    hits = sorted({m.group(0) for m in OUTSIDE.finditer(text)})
    assert not hits, f"{document} refers to {hits}: cite papers as in docs/REFERENCES.md"
    # relative links (Markdown cells, README, docs) must lead to a file of the repository
    for target in LINK.findall(text):
        if re.match(r"[a-z]+:|#", target):
            continue  # a URL or an anchor
        resolved = (path.parent / target.split("#")[0]).resolve()
        assert resolved.is_relative_to(ROOT), f"{document}: link {target} leaves the repository"
        assert resolved.exists(), f"{document}: link {target} points to nothing"


@pytest.mark.slow
@pytest.mark.parametrize("name", EXPECTED)
def test_notebook_runs_in_quick_mode(name, tmp_path, monkeypatch, capsys):
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    monkeypatch.setenv("SEGLOSS_NB_MODE", "quick")
    monkeypatch.setenv("SEGLOSS_NB_OUTPUT", str(tmp_path))  # run folders of notebook 04
    monkeypatch.delenv("SEGLOSS_COMPARE_DIR", raising=False)
    # tiny tensors: one thread avoids oversubscribing shared CI cores (10x faster here)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    nb = _read(name)
    nb.cells.append(nbformat.v4.new_code_cell("import sys\nprint(sys.executable)"))
    client = nbclient.NotebookClient(
        nb,
        timeout=300,
        kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOK_DIR)}},
    )
    client.execute()

    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    streams = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "Traceback" not in streams
    assert "mode=quick" in streams
    kernel_python = nb.cells[-1].outputs[0]["text"].strip()
    assert Path(kernel_python).resolve() == Path(sys.executable).resolve()
    pngs = [o["data"]["image/png"] for o in outputs if "image/png" in o.get("data", {})]
    assert len(pngs) >= 2, f"{name} rendered {len(pngs)} figures"
    assert all(base64.b64decode(p)[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)
    if name == "04_compare_losses.ipynb":  # the compare wrote into SEGLOSS_NB_OUTPUT
        _check_compare_notebook(nb, tmp_path / "nb04_compare_quick", streams, monkeypatch, capsys)


def _check_compare_notebook(nb, folder: Path, streams: str, monkeypatch, capsys) -> None:
    """Notebook 04 shows what the one reader (``read_compare``, also the napari panel's) finds
    in the folder its demo wrote: the same table, and each loss's prediction on each of the 3
    unseen frames with its title; the ``segloss compare`` command it prints is the same
    comparison from any folder (the CLI reuses every run instead of training)."""
    from napari_segloss.cli import main
    from napari_segloss.engine import read_compare

    results = read_compare(folder)
    assert [(r.loss, r.seed, r.status) for r in results.runs] == [
        (loss, seed, "ok") for loss in ("dice", "ce+pm_dice") for seed in (0, 1)
    ]  # quick mode keeps what full mode runs: a compound loss, the augmented data pipeline
    import yaml

    configs = [yaml.safe_load((r.run_dir / "config.yaml").read_text()) for r in results.runs]
    assert all(c["data"]["augment"] is True for c in configs)
    tables = [
        o["data"]["text/markdown"]
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.outputs
        if "text/markdown" in o.get("data", {})
    ]
    assert tables == [results.to_markdown(rank_by="mDice")]
    assert [Path(n).name for n in results.image_names()] == [
        "cju30df2j09dd08351ayx2t6w.jpg",
        "cju5thdbrjp1108715xdfx356.jpg",
        "cju7ebe962hr409872ovibahw.jpg",
    ]  # the bundled `kvasir` frames, not the kvasir_train pairs the runs trained on
    for i in range(3):
        cells = results.view(i).cells
        assert [c.loss for c in cells] == ["dice", "ce+pm_dice"]
        assert all(c.errors is not None and c.errors.shape == (64, 64) for c in cells)
        missing = [c.title for c in cells if c.title not in streams]
        assert not missing, f"notebook 04 does not show the overlay titles {missing}"

    command = next(ln for ln in streams.splitlines() if ln.startswith("segloss compare "))
    elsewhere = folder.parent / "elsewhere"  # the command needs no repository checkout
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    capsys.readouterr()
    assert main(shlex.split(command)[1:]) == 0
    printed = capsys.readouterr().err  # the run lines; stdout has the table
    assert printed.count("eval.json exists with the same settings, reused") == 4, printed

"""Compare Losses panel (issue 19): losses x seeds trained from napari, the table, the error
overlays side by side in the grid, Stop and resume, and the CLI's messages for bad inputs.

The scenario: 2 losses x 1 seed x 1 epoch on the 32 bundled ``kvasir_train`` pairs, scored on
the 3 unseen ``kvasir`` frames; a tiny U-Net (mobilenet_v2, encoder depth 3) at 64 px on one
torch thread, as in tests/engine/test_compare_engine.py.
"""

from __future__ import annotations

import itertools
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from qtpy.QtCore import Qt, QTimer

from napari_segloss._widgets._common import PanelError, find_owned, grid_of, is_owned
from napari_segloss._widgets._compare_setup import layer_pairs, parse_overrides, parse_seeds
from napari_segloss._widgets._compare_view import (
    BEST_MARK,
    GRID_STRIDE,
    PANEL,
    OverlayGrid,
    column_tooltip,
    two_lines,
)
from napari_segloss._widgets._state import CHECKPOINTS
from napari_segloss.cli import main
from napari_segloss.data.io import read_image, read_mask
from napari_segloss.engine.compare import iter_compare
from napari_segloss.engine.compare_results import (
    METRICS,
    ImageView,
    OverlayCell,
    TableRow,
    read_compare,
)
from napari_segloss.engine.events import (
    CompareDone,
    CompareRunProgress,
    CompareRunStart,
    TrainStart,
    TrainStep,
)
from napari_segloss.samples import load_sample, sample_files, sample_pairs_dir

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # see tests/conftest.py

NAME = "Compare Losses"
LOSSES: list[Any] = ["dice", {"name": "pm_dice", "params": {"gamma": 2.0}}]
#: what the panel's "more settings" box takes: the tiny model of the engine tests
TINY = "model.kwargs={encoder_depth: 3, decoder_channels: [16, 8, 4]}\ndata.augment=false\noptim.lr=0.001"  # fmt: skip
RUN_TIMEOUT = 240_000  # ms: CI shares 2 cores between everything


def dock_ready(dock, wait_idle, viewer=None):
    """The panel docked from the manifest, once its loss list and engine are loaded."""
    viewer, widget = dock(NAME, viewer)
    wait_idle(widget, timeout=120_000)
    assert widget.setup.add_button.isEnabled(), widget.status.text()
    return viewer, widget


def configure(widget, output: Path, *, epochs: int = 1, folder: str | None = None) -> None:
    s = widget.setup
    if folder is not None:
        s.source_combo.setCurrentText("folder")
        s.folder_edit.setText(folder)
    s.encoder_combo.setCurrentText("mobilenet_v2")
    s.size_spin.setValue(64)
    s.epochs_spin.setValue(epochs)
    s.device_combo.setCurrentText("cpu")
    s.more_edit.setPlainText(TINY)
    s.output_edit.setText(str(output))
    widget.set_losses(LOSSES)


class Heartbeat:
    """A 10 ms QTimer on the main thread: the longest gap between two ticks is the longest
    time the window could not answer."""

    def __init__(self) -> None:
        self.ticks: list[float] = []
        self.timer = QTimer()
        self.timer.setInterval(10)
        self.timer.timeout.connect(lambda: self.ticks.append(time.perf_counter()))
        self.timer.start()

    def longest_gap(self, start: float, end: float) -> float:
        ticks = [t for t in self.ticks if start <= t <= end]
        return max((b - a for a, b in itertools.pairwise(ticks)), default=0.0)


def record(widget) -> list[tuple[float, Any]]:
    events: list[tuple[float, Any]] = []
    widget.compare_event.connect(lambda e: events.append((time.perf_counter(), e)))
    return events


def test_manifest_offers_the_panel():
    npe2 = pytest.importorskip("npe2")
    manifest = npe2.PluginManifest.from_distribution("napari-segloss")
    commands = {c.id: c for c in manifest.contributions.commands or []}
    widgets = {w.display_name: w for w in manifest.contributions.widgets or []}
    python_name = commands[widgets[NAME].command].python_name
    assert python_name == "napari_segloss._widgets:CompareLossesWidget"  # imported in a pause


def test_two_losses_on_kvasir_train(dock, wait_idle, tmp_path, qtbot):
    """The issue's scenario from the panel: table, titled overlays in the grid, exports, best
    loss offered to Predict & Compare, another image picked; the window keeps answering."""
    viewer, widget = dock_ready(dock, wait_idle)
    frames = viewer.open_sample("napari-segloss", "kvasir")  # the user's own layers
    output = tmp_path / "cmp"
    configure(widget, output, folder=str(sample_pairs_dir("kvasir_train")))
    widget.setup.score_combo.setCurrentText("held-out folder")
    widget.setup.heldout_edit.setText("bundled:kvasir")
    events = record(widget)
    beat = Heartbeat()
    t0 = time.perf_counter()
    widget.start()
    assert widget.running and not widget.start_button.isEnabled()
    wait_idle(widget, timeout=RUN_TIMEOUT)
    seconds = time.perf_counter() - t0
    assert not widget.status.is_error, widget.status.text()
    trained = [t for t, e in events if isinstance(e, CompareRunStart)]
    done_at = next(t for t, e in events if isinstance(e, CompareDone))
    stall = beat.longest_gap(trained[0], done_at)
    print(f"\npanel scenario: {seconds:.1f} s start to idle, training {done_at - trained[0]:.1f} s,"
          f" longest main-thread stall while training {stall * 1000:.0f} ms")  # fmt: skip
    # a frozen window (training on the main thread) stalls for seconds; a responsive one for
    # a few ms (0.2 s is the goal; CI shares its 2 cores, hence the margin)
    assert stall < 0.5

    results = read_compare(output)
    assert widget.last_done.statuses == ("ok", "ok") and widget.overall.value() == 1000
    # runs: progress bars full, live validation Dice per run
    assert [bar.value() for bar in widget.runs_table.bars] == [1000, 1000]
    assert all(len(d) == 1 and 0 <= d[0] <= 1 for d in widget.runs_table.val_dice)
    # in % as the "done · mDice 59.7 %" beside it and the results table
    shown = widget.runs_table.item(0, 2).text()
    assert shown == f"{100 * widget.runs_table.val_dice[0][0]:.1f} %", shown
    assert widget.runs_table.status_of(1).startswith("done · mDice")
    # the table: one row per loss, mean of each metric, rank; the best highlighted
    table = widget.results_table
    assert table.rowCount() == 2 and table.displayed_losses() == ["dice", "pm_dice:gamma=2.0"]
    headers = [table.horizontalHeaderItem(c).text() for c in range(table.columnCount())]
    # "Dice" for mDice: the tooltip says it is a mean (short headers fit the dock)
    assert headers[:8] == ["loss", "Dice", "IoU", "NSD", "Prec.", "Rec.", "HD95", "rank"]
    rows = results.table("mDice")
    for r, row in enumerate(rows):
        assert table.item(r, 1).text() == two_lines(row.cell("mDice"))
        assert table.item(r, 7).text() == str(row.rank)
    best = results.best("mDice")
    best_row = table.displayed_losses().index(best.loss)
    assert table.item(best_row, 0).text().startswith("★ ") and table.item(best_row, 0).font().bold()
    # under the table: what the numbers rest on (one seed here: too little to rank)
    assert widget.evidence_note.text() == results.evidence()
    assert "1 seed: too little to rank losses" in widget.evidence_note.text()
    # sortable: by mDice, highest first
    table.sortItems(1, Qt.SortOrder.DescendingOrder)
    by_dice = sorted(rows, key=lambda row: -row.mean["mDice"])
    assert table.displayed_losses() == [row.loss for row in by_dice]
    # the best loss's checkpoint is offered to Predict & Compare
    assert CHECKPOINTS.paths()[0] == best.checkpoint.resolve()
    _, predict = dock("Predict & Compare", viewer)
    assert predict.ckpt_picker.path() == best.checkpoint.resolve()
    # ... or any loss's, by selecting its row
    other = next(row for row in rows if row.loss != best.loss)
    table.selectRow(table.displayed_losses().index(other.loss))
    assert widget.offer_selected() == other.checkpoint
    assert predict.ckpt_picker.path() == other.checkpoint.resolve()
    # ranked by another metric: the rank column, the star and the offer follow
    # the box names metrics as the headers do
    assert [widget.rank_combo.itemText(i) for i in range(2)] == ["Dice", "IoU"]
    widget.rank_combo.setCurrentText("HD95")
    by_hd95 = results.best("mHD95")
    assert (
        widget.best_loss == by_hd95.loss and CHECKPOINTS.paths()[0] == by_hd95.checkpoint.resolve()
    )
    assert table.horizontalHeaderItem(7).toolTip() == "rank by HD95"
    # every metric column says what it averages, its unit and which way is better
    heads = {table.horizontalHeaderItem(j).text(): j for j in range(table.columnCount())}
    assert "in %; higher is better" in table.horizontalHeaderItem(heads["Dice"]).toolTip()
    hd95 = table.horizontalHeaderItem(heads["HD95"]).toolTip()
    assert "in pixels" in hd95 and "lower is better" in hd95
    wait_idle(widget, timeout=60_000)  # the grid's titles move the star too

    # the grid: ground truth, then one titled error overlay per loss over its image copy
    grid = grid_of(viewer)
    assert grid.enabled and grid.stride == GRID_STRIDE
    view = results.view(0)
    overlays = [find_owned(viewer, PANEL, f"errors:{cell.loss}") for cell in view.cells]
    assert len(overlays) == 2 and all(ly.name_overlay.visible for ly in overlays)
    for layer, cell in zip(overlays, view.cells, strict=True):
        np.testing.assert_array_equal(layer.data, cell.errors)
        assert (
            f"loss · Dice {100 * cell.dice:.1f} %" in layer.name
            and cell.display.split(" (")[0] in layer.name
        )
    starred = [ly.name for ly in overlays if ly.name.startswith("★ ")]
    assert len(starred) == 1 and by_hd95.display.split(" (")[0] in starred[0]
    owned = [ly for ly in viewer.layers if is_owned(ly, PANEL)]
    assert len(owned) == 6 and owned[-1].name.startswith("ground truth")  # top-left cell
    assert not any(ly.visible for ly in frames)  # the user's layers wait hidden

    # another image: every cell follows
    widget.set_image(2)
    wait_idle(widget, timeout=60_000)
    view2 = results.view(2)
    for cell in view2.cells:
        layer = find_owned(viewer, PANEL, f"errors:{cell.loss}")
        np.testing.assert_array_equal(layer.data, cell.errors)
        assert f"loss · Dice {100 * cell.dice:.1f} %" in layer.name
    assert len([ly for ly in viewer.layers if is_owned(ly, PANEL)]) == 6

    # exports
    csv_path = widget.export_csv(tmp_path / "table.csv")
    lines = csv_path.read_text().splitlines()
    assert len(lines) == 3 and lines[0].startswith("loss,name,n_ok,n_failed,mDice_mean,mDice_std")
    # ranked by the metric the panel shows (mHD95 since above), not the default mDice: the
    # two rankings agree only when one loss wins both
    assert csv_path.read_text() == results.to_csv(rank_by="mHD95")
    md = widget.export_markdown(tmp_path / "table.md").read_text()
    assert "| Dice |" in md and "| PM Dice (gamma=2.0) |" in md

    # side by side off: the user's layout and layers come back
    widget.grid_check.setChecked(False)
    assert not grid.enabled and all(ly.visible for ly in frames)


def _stack(name: str, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """The bundled pairs ``name`` cropped to one ``shape``: a stack of frames as one layer."""
    h, w = shape
    files = sample_files(name)
    images = np.stack([read_image(i)[:h, :w] for i, _ in files])
    masks = np.stack([read_mask(m)[:h, :w] for _, m in files])
    return images, masks


def _add_layers(viewer) -> dict[str, Any]:
    images, masks = _stack("kvasir_train", (112, 192))
    h_images, h_masks = _stack("kvasir", (273, 320))
    return {
        "image": viewer.add_image(images, name="train frames", rgb=True),
        "mask": viewer.add_labels(masks, name="train masks"),
        "h_image": viewer.add_image(h_images, name="held-out frames", rgb=True),
        "h_mask": viewer.add_labels(h_masks, name="held-out masks"),
    }


def _pick(widget, layers: dict[str, Any]) -> None:
    s = widget.setup
    s.source_combo.setCurrentText("layers")
    s.image_picker.set_layer(layers["image"])
    s.mask_picker.set_layer(layers["mask"])
    s.score_combo.setCurrentText("held-out layers")
    s.heldout_image_picker.set_layer(layers["h_image"])
    s.heldout_mask_picker.set_layer(layers["h_mask"])


def test_closing_the_panel_stops_the_comparison(dock, wait_idle, tmp_path, qtbot):
    """napari's close button only takes the panel out of its dock (no closeEvent): the
    comparison must stop all the same, not train every run with no panel left."""
    _, widget = dock_ready(dock, wait_idle)
    configure(widget, tmp_path / "cmp", epochs=200, folder=str(sample_pairs_dir("kvasir_train")))
    events = record(widget)
    widget.start()
    qtbot.waitUntil(
        lambda: any(isinstance(e, CompareRunProgress) for _, e in events), timeout=RUN_TIMEOUT
    )
    widget.parent().title.close_button.click()  # the dock's "x"
    assert widget.parent() is None
    wait_idle(widget, timeout=60_000)
    done = next(e for _, e in events if isinstance(e, CompareDone))
    assert done.stopped and "ok" not in done.statuses


def test_stop_in_the_second_run_then_reopen_resumes(dock, wait_idle, tmp_path, qtbot):
    """Layers in (a stack of frames, held-out layers); Stop during the second run keeps the
    first; a new panel opened on the folder fills itself from it and resumes the second."""
    viewer, widget = dock_ready(dock, wait_idle)
    layers = _add_layers(viewer)
    output = tmp_path / "cmp"
    configure(widget, output, epochs=2)
    _pick(widget, layers)

    def press_stop(event: Any) -> None:  # Stop as soon as the second run has taken a step
        if isinstance(event, CompareRunProgress) and event.run.index == 1:
            if isinstance(event.event, TrainStep):
                widget.stop()

    widget.compare_event.connect(press_stop)
    widget.start()
    wait_idle(widget, timeout=RUN_TIMEOUT)
    done = widget.last_done
    assert done is not None and done.stopped, widget.status.text()
    assert done.statuses == ("ok", "stopped")
    assert "Start again resumes the rest" in widget.status.text()
    assert widget.status.text().startswith("stopped by request after")  # no "stopped (stopped"
    assert widget.runs_table.status_of(1).startswith("stopped")
    first = output / "runs" / "dice" / "seed0"
    second = output / "runs" / "pm_dice__gamma=2.0" / "seed0"
    assert (first / "eval.json").is_file() and (second / "checkpoint.pt").is_file()
    assert not (second / "eval.json").exists()
    table = widget.results_table
    assert table.rowCount() == 2 and table.item(1, table.columnCount() - 1).text() == "0 (1 to run)"
    kept = (first / "eval.json").read_bytes()
    # only the finished loss has an overlay; the other cell says why it is empty
    pm = find_owned(viewer, PANEL, "errors:pm_dice:gamma=2.0")
    assert "(run stopped)" in pm.name and not pm.data.any()
    viewer.close()

    # a new session: the same layers, the folder opened again (after a refused Start, whose
    # red message stayed over the folder's "1 of 2 run(s) finished")
    viewer, widget = dock_ready(dock, wait_idle)
    widget.start()
    assert widget.status.is_error
    layers = _add_layers(viewer)
    assert widget.open_folder(output)
    wait_idle(widget, timeout=60_000)
    s = widget.setup
    assert widget.losses() == [
        {"name": "dice", "params": {}, "label": "dice"},
        {"name": "pm_dice", "params": {"gamma": 2.0}, "label": "pm_dice:gamma=2.0"},
    ]
    assert s.epochs_spin.value() == 2 and s.size_spin.value() == 64
    assert s.encoder_combo.currentText() == "mobilenet_v2" and s.seeds_edit.text() == "0"
    assert s.source_combo.currentText() == "layers"
    assert s.score_combo.currentText() == "held-out layers"
    assert "1 of 2 run(s) finished" in widget.status.text() and "resumes the other 1" in (
        widget.status.text()
    )
    assert widget.results_table.rowCount() == 2
    _pick(widget, layers)
    events = record(widget)
    widget.start()
    wait_idle(widget, timeout=RUN_TIMEOUT)
    assert not widget.status.is_error, widget.status.text()
    assert widget.last_start.actions == ("reuse", "resume")
    resumed = [e.event for _, e in events if isinstance(e, CompareRunProgress)]
    assert isinstance(resumed[0], TrainStart) and resumed[0].iteration > 0  # not from scratch
    assert widget.last_done.statuses == ("ok", "ok") and not widget.last_done.stopped
    assert (first / "eval.json").read_bytes() == kept
    assert [row.n_ok for row in widget.results_table.rows.values()] == [1, 1]
    assert widget.image_combo.count() == 3  # the held-out frames
    pm = find_owned(viewer, PANEL, "errors:pm_dice:gamma=2.0")
    assert "run stopped" not in pm.name and "Dice" in pm.name


def _cli_error(capsys, config: dict, losses: list[str], output: Path) -> str:
    """What ``segloss compare`` prints for these inputs (after ``segloss compare: error: ``)."""
    path = output.parent / "config.json"  # JSON is YAML
    path.write_text(json.dumps(config))
    argv = ["compare", "--config", str(path), "--losses", *losses, "--seeds", "0"]
    assert main([*argv, "--output", str(output)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("segloss compare: error: ")
    return err.removeprefix("segloss compare: error: ").strip()


def _folder_config(root: Path) -> dict:
    return {"data": {"root": str(root), "size": [64, 64]}, "model": {"encoder": "mobilenet_v2"}}


@pytest.mark.parametrize("case", ["unknown loss", "empty folder"])
def test_bad_inputs_show_the_cli_message(dock, wait_idle, tmp_path, capsys, case):
    _, widget = dock_ready(dock, wait_idle)
    root = sample_pairs_dir("kvasir_train")
    losses = ["dice", "no_such_loss"] if case == "unknown loss" else ["dice"]
    if case == "empty folder":
        root = tmp_path / "data"
        (root / "images").mkdir(parents=True)
        (root / "masks").mkdir()
    output = tmp_path / "out"
    expected = _cli_error(capsys, _folder_config(root), losses, output)
    assert ("unknown loss name" if case == "unknown loss" else "contains no files") in expected
    configure(widget, output, folder=str(root))
    widget.set_losses(losses)
    widget.start()
    wait_idle(widget, timeout=60_000)
    assert widget.status.is_error and widget.status.text() == expected
    assert not output.exists()  # nothing written


def test_no_mask_layer_gives_the_engine_message(dock, wait_idle, tmp_path):
    viewer, widget = dock_ready(dock, wait_idle)
    image, _ = load_sample("kvasir", 0)
    viewer.add_image(image, name="frame")
    output = tmp_path / "out"
    configure(widget, output)
    assert widget.setup.mask_picker.layer() is None
    with pytest.raises(ValueError) as info:  # what Python users of the engine get
        next(iter_compare({"data": {}}, ["dice"], [0], output, data=([image], None)))
    widget.start()
    wait_idle(widget, timeout=60_000)
    assert widget.status.is_error and widget.status.text() == str(info.value)
    assert "no masks given" in widget.status.text()
    assert not output.exists()


def test_a_picked_row_shows_its_loss_and_parameters_in_the_form(dock, wait_idle):
    """Picking "PM Dice (gamma=2)" left the form at whatever was last shown (pm_dice, γ 1.0):
    the form now shows the row's loss and parameters, defaults for the rest."""
    _, widget = dock_ready(dock, wait_idle)
    s = widget.setup
    widget.set_losses([
        "dice",
        {"name": "pm_dice", "params": {"gamma": 2.0}},
        {"name": "ce+pm_dice", "params": {"weights": [0.5, 1.0], "pm_dice": {"gamma": 0.5}}},
        {"name": "pm_dice", "params": {"gamma": [0.5, 3.0]}},
    ])  # fmt: skip
    s.loss_list.setCurrentRow(1)
    assert s.loss_combo.currentText() == "pm_dice"
    form = s.param_stack.currentWidget()
    assert form.name == "pm_dice" and form.editors["gamma"].text() == "2.0"
    assert form.values() == {"gamma": 2.0}
    s.loss_list.setCurrentRow(2)
    form = s.param_stack.currentWidget()
    assert form.name == "ce+pm_dice"
    assert form.values() == {"weights": (0.5, 1.0), "pm_dice": {"gamma": 0.5}}
    s.loss_list.setCurrentRow(3)  # back to pm_dice: its own γ, not the row before's
    assert s.param_stack.currentWidget().values() == {"gamma": (0.5, 3.0)}
    s.loss_list.setCurrentRow(0)
    assert s.loss_combo.currentText() == "dice"
    assert s.param_stack.currentWidget().values() == {}
    assert s.add_loss() is None and "already listed" in widget.status.text()


def test_loss_rows_from_the_forms(dock, wait_idle, tmp_path):
    """PM Dice at two γ as separate rows, a typed compound, refusals; the request."""
    _, widget = dock_ready(dock, wait_idle)
    s = widget.setup
    widget.set_losses([])
    s.loss_combo.setCurrentText("pm_dice")
    s._show_form()  # what choosing it in the list does
    form = s.param_stack.currentWidget()
    form.editors["gamma"].setText("2.0")
    assert s.add_loss() == {
        "name": "pm_dice",
        "params": {"gamma": 2.0},
        "label": "pm_dice:gamma=2.0",
    }
    assert s.add_loss() is None and "already listed" in widget.status.text()
    form.editors["gamma"].setText("0.5")
    assert s.add_loss()["label"] == "pm_dice:gamma=0.5"
    s.loss_combo.setCurrentText("focal+tversky")
    s._show_form()
    assert s.add_loss()["name"] == "focal+tversky"
    s.loss_combo.setCurrentText("nope")
    assert s.add_loss() is None
    assert widget.status.text().startswith("losses: 'nope': unknown loss name 'nope'")
    assert [s.loss_list.item(i).text() for i in range(s.loss_list.count())] == [
        "PM Dice (gamma=2.0)", "PM Dice (gamma=0.5)", "Focal CE + Tversky",
    ]  # fmt: skip
    # the request the widgets describe: a folder, the validation split, the training settings
    s.source_combo.setCurrentText("folder")
    s.folder_edit.setText("bundled:kvasir_train")
    s.seeds_edit.setText("0, 1 2")
    s.epochs_spin.setValue(3)
    s.size_spin.setValue(96)
    s.output_edit.setText(str(tmp_path / "out"))
    request = s.build_request()
    assert request.seeds == [0, 1, 2] and request.data is None and request.heldout is None
    assert [loss["label"] for loss in request.losses] == [
        "pm_dice:gamma=2.0", "pm_dice:gamma=0.5", "focal+tversky",
    ]  # fmt: skip
    base = request.base
    assert base["data"] == {
        "val_fraction": 0.2, "size": [96, 96], "kind": "folder", "root": "bundled:kvasir_train",
        "masks": "masks", "test_root": None,
    }  # fmt: skip
    assert base["train"]["epochs"] == 3 and base["train"]["num_workers"] == 0
    s.seeds_edit.setText("zero")
    with pytest.raises(PanelError, match="seeds: expected non-negative integers"):
        s.build_request()


def test_layer_pairs_seeds_and_overrides():
    stack = np.zeros((4, 8, 9, 3), np.uint8)
    images, masks, names = layer_pairs(stack, np.zeros((4, 8, 9), np.uint8), rgb=True, name="f")
    assert len(images) == len(masks) == 4 and images[0].shape == (8, 9, 3)
    assert names == ["f[0]", "f[1]", "f[2]", "f[3]"]
    images, masks, names = layer_pairs(np.zeros((5, 6)), None, rgb=False, name="one")
    assert len(images) == 1 and masks is None and names == ["one"]
    images, _, _ = layer_pairs(np.zeros((3, 5, 6)), np.zeros((3, 5, 6)), rgb=False, name="vol")
    assert len(images) == 3 and images[0].shape == (5, 6)  # a volume as 2D slices
    with pytest.raises(PanelError, match="expected a 2D image or a 3D stack"):
        layer_pairs(np.zeros((2, 3, 5, 6)), None, rgb=False, name="4d")
    assert parse_seeds(" 3,4  5 ") == [3, 4, 5]
    with pytest.raises(PanelError, match="seeds"):
        parse_seeds("")
    assert parse_overrides("# lr\noptim.lr=0.001\n\ntrain.batch_size=2") == [
        "optim.lr=0.001", "train.batch_size=2",
    ]  # fmt: skip
    with pytest.raises(PanelError, match="key=value"):
        parse_overrides("optim.lr 0.001")


class _Results:
    """What ResultsTable.fill reads of a CompareResults: three losses over two seeds."""

    def __init__(self) -> None:
        self.columns = [m.column for m in METRICS]
        names = [("dice", "Dice"), ("pm_dice:gamma=2.0", "PM Dice (gamma=2.0)"),
                 ("asymmetric_unified_focal", "Asymmetric Unified Focal")]  # fmt: skip
        mean = {c: 88.88 for c in self.columns} | {"mHD95": 123.45}
        std = {c: 2.34 for c in self.columns} | {"mHD95": 10.12}
        self.rows = [
            TableRow(loss, name, {}, 2, 0, 0, mean, std, r + 1, 0, None)
            for r, (loss, name) in enumerate(names)
        ]

    def table(self, rank_by: str) -> list[TableRow]:
        return self.rows

    def best(self, rank_by: str) -> TableRow:
        return self.rows[0]


def test_results_table_fits_the_dock_without_scrolling(make_napari_viewer, qtbot):
    """Every column of the results table shows at the default dock width: it used to scroll
    sideways (rank and runs out of view) because of "mean ± std" on one line, long headers
    and room for a sort arrow in every header."""
    viewer = make_napari_viewer(show=True)  # sizes are laid out in a shown window only
    viewer.window._qt_window.resize(1400, 950)
    _, widget = viewer.window.add_plugin_dock_widget("napari-segloss", NAME)
    widget.tabs.setCurrentIndex(2)
    table = widget.results_table
    table.fill(_Results(), "mDice")
    qtbot.wait(200)

    def fits() -> None:
        assert table.horizontalHeader().length() <= table.viewport().width()
        assert table.horizontalScrollBar().maximum() == 0
        # the loss names wrap, no word is cut
        metrics = table.fontMetrics()
        for r in range(table.rowCount()):
            text = table.item(r, 0).text()
            assert "\n" not in text and table.rowHeight(r) >= metrics.height()
            widest = max(metrics.horizontalAdvance(w) for w in text.split())
            assert table.columnWidth(0) > widest
        assert table.item(0, 1).text() == "88.88\n±2.34"

    fits()
    table.sortItems(6, Qt.SortOrder.AscendingOrder)  # a sort arrow in the HD95 header
    qtbot.wait(100)
    fits()


def test_gpu_out_of_memory_says_what_to_lower(dock, wait_idle, tmp_path, monkeypatch):
    """torch's out-of-memory paragraph (allocator figures) becomes one line saying what to
    lower, as in the Train panel."""
    import torch

    from napari_segloss._widgets import compare_panel

    def full(request, should_stop):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 ...")
        yield  # a generator, as iter_request is

    monkeypatch.setattr(compare_panel, "iter_request", full)
    _, widget = dock_ready(dock, wait_idle)
    configure(widget, tmp_path / "cmp", folder=str(sample_pairs_dir("kvasir_train")))
    widget.start()
    wait_idle(widget, timeout=60_000)
    assert widget.status.is_error
    assert widget.status.text() == (
        "CUDA out of memory. Tried to allocate 2.00 GiB: lower the batch size or the crop, "
        "or free the GPU"
    )


def _fake_view(names: list[str]) -> ImageView:
    """A held-out 24x32 RGB image with its truth and one error map per loss name."""
    rng = np.random.default_rng(0)
    truth = (rng.random((24, 32)) > 0.5).astype(np.uint8)
    errors = (truth * 2).astype(np.uint8)
    cells = [
        OverlayCell(name, name, {}, 0, Path("."), truth, errors, 0.5, f"{name} · Dice 0.500")
        for name in names
    ]
    image = rng.integers(0, 255, (24, 32, 3), dtype=np.uint8)
    return ImageView(index=0, name="frame ʬ", seed=0, split="test", n_images=1, image=image,
                     ground_truth=truth, cells=cells)  # fmt: skip


def test_overlays_load_title_glyphs_ahead_and_leave_the_selection(make_napari_viewer):
    """The comparison grid: every title's glyphs are rendered before its first draw (a title
    drawn with new glyphs froze the window for 0.1-0.3 s), and adding the overlays neither
    selects them nor changes the layer controls the user had (napari selects each inserted
    layer, and showing new controls froze the window once per layer)."""
    viewer = make_napari_viewer()
    mine = viewer.add_image(np.zeros((24, 32)), name="my image")
    viewer.layers.selection.active = mine
    grid = OverlayGrid(viewer, lambda enabled: None)
    font = viewer.window._qt_viewer.canvas._font_info
    font = font.font_manager.get_font(font.face, False, False)
    missing: list[str] = []
    decorate = grid.grid_view.decorate

    def checked(maps, others):
        missing.extend(c for ly in [*maps, *others] for c in ly.name if c not in font._glyphs)
        decorate(maps, others)

    grid.grid_view.decorate = checked
    view = _fake_view(["dice ʭ", "pm_dice ʮ"])  # characters no other test renders
    for step in grid.draw_steps(view, best="dice ʭ", grid=True):
        step()
    titled = [ly.name for ly in grid.titled]
    assert len(titled) == 3 and "ʭ" in titled[1] and titled[1].startswith(BEST_MARK)
    assert missing == []
    assert list(viewer.layers.selection) == [mine] and viewer.layers.selection.active is mine
    # napari's own behaviour is back for layers added afterwards
    added = viewer.add_image(np.zeros((24, 32)), name="added later")
    assert viewer.layers.selection.active is added


def test_acdc_layers_name_their_classes_and_are_no_held_out_data(dock, wait_idle, tmp_path):
    """The table's per-class columns read "Dice class 1" for the acdc sample, whose mask layer
    names RV, MYO, LV; and "held-out layers", left on the training layers, scored the models
    on the data they trained on, reported as held-out."""
    viewer, widget = dock_ready(dock, wait_idle)
    viewer.open_sample("napari-segloss", "acdc")
    configure(widget, tmp_path / "out")
    request = widget.setup.build_request()
    assert request.base["data"]["class_names"] == ["background", "RV", "MYO", "LV"]
    widget.setup.score_combo.setCurrentText("held-out layers")
    assert widget.setup.heldout_image_picker.layer() is viewer.layers["acdc image"]
    widget.start()
    assert widget.status.is_error
    assert widget.status.text().startswith(
        "held-out image: it is the training image; the scores would be on data the models "
        "trained on"
    )
    assert widget._worker is None and not (tmp_path / "out").exists()


def test_an_output_folder_that_cannot_be_written_is_named(dock, wait_idle, tmp_path):
    """It read "NotADirectoryError: [Errno 20] Not a directory: '.../afile/cmp'"."""
    viewer, widget = dock_ready(dock, wait_idle)
    viewer.open_sample("napari-segloss", "kvasir")
    (tmp_path / "afile").write_text("not a folder")
    output = tmp_path / "afile" / "cmp"
    configure(widget, output)
    widget.start()
    wait_idle(widget, timeout=120_000)
    assert widget.status.is_error
    text = widget.status.text()
    assert text.startswith(f"output folder {str(output)!r}: cannot write "), text
    assert "pick a folder you can write to" in text and "Errno" not in text


def test_a_multi_class_truth_cell_has_the_masks_colours(make_napari_viewer):
    """napari's default colours gave RV dark red and LV blue, beside the FP red / FN blue
    legend of the error cells; the cells name the error under the cursor too."""
    from napari_segloss._napari_io import MASK_COLORS

    viewer = make_napari_viewer()
    view = _fake_view(["dice"])
    view.ground_truth[:4, :4] = 3
    grid = OverlayGrid(viewer, lambda enabled: None)
    for step in grid.draw_steps(view, best=None, grid=True):
        step()
    truth = find_owned(viewer, PANEL, "truth")
    for label in (1, 3):
        np.testing.assert_allclose(truth.get_color(label), MASK_COLORS[label])
    errors = find_owned(viewer, PANEL, "errors:dice")
    assert list(errors.features["error"]) == [
        "true negative",
        "true positive",
        "false positive",
        "false negative",
    ]


@pytest.mark.parametrize(
    ("column", "start"),
    [("Dice RV", "Dice of class RV over"), ("Dice class 1", "Dice of class 1 over")],
)
def test_per_class_tooltips_name_the_class_once(column: str, start: str) -> None:
    assert column_tooltip(column).startswith(start)  # read "Dice of class class 1"


def test_the_output_folder_shows_whole_at_the_default_dock_width(
    make_napari_viewer, dock, wait_idle, qtbot
):
    """Beside its label, with Browse, the output folder showed "'napari-segloss-compare" at
    the dock's default width: no folder above it. It has a row of its own under its label."""
    viewer = make_napari_viewer(show=True)
    viewer.window._qt_window.resize(1500, 950)
    _, widget = dock_ready(dock, wait_idle, viewer)
    edit = widget.setup.output_edit
    qtbot.waitUntil(lambda: edit.isVisible() and edit.width() > 50)
    qtbot.wait(50)  # the dock's layout settles
    text = edit.fontMetrics().horizontalAdvance(edit.text())
    assert text < edit.contentsRect().width() - 8, (text, edit.width())

"""Predict & Compare panel, docked from the manifest."""

from __future__ import annotations

import csv
import gc
import time

import numpy as np
import pytest
from napari.layers import Image, Labels
from qtpy.QtCore import QTimer

from napari_segloss._widgets._common import TAG, grid_of, is_owned
from napari_segloss.metrics import evaluate, evaluate_frames
from napari_segloss.overlay import ERROR_COLORS, FN, FP, TN, TP

NAME = "Predict & Compare"


def _owned(viewer, key: str):
    hits = [
        ly for ly in viewer.layers if is_owned(ly, "predict") and ly.metadata[TAG]["key"] == key
    ]
    return hits[0] if hits else None


def _table(widget) -> dict[int, dict[str, float]]:
    """The metrics table (one column per class, one row per metric) as {class: {metric: v}}."""
    t = widget.table
    rows = [t.verticalHeaderItem(i).text() for i in range(t.rowCount())]
    return {
        int(t.horizontalHeaderItem(j).text().removeprefix("class ").split()[0]): {
            rows[i]: float(t.item(i, j).text()) for i in range(t.rowCount())
        }
        for j in range(t.columnCount())
    }


def _visible(viewer) -> set[str]:
    return {ly.name for ly in viewer.layers if ly.visible}


def _compare(viewer, widget, wait_idle, gt: np.ndarray, pred: np.ndarray):
    """Add ``gt`` ("truth") and ``pred`` ("guess") as Labels layers, compare them, wait;
    returns the two layers."""
    gt_layer = viewer.add_labels(gt, name="truth")
    pred_layer = viewer.add_labels(pred, name="guess")
    widget.pred_picker.set_layer(pred_layer)
    widget.gt_picker.set_layer(gt_layer)
    widget.compare()
    wait_idle(widget)
    return gt_layer, pred_layer


def test_compare_two_labels_layers_hand_computed(dock, wait_idle, tmp_path):
    gt = np.zeros((10, 10), dtype=np.uint8)
    gt[2:6, 2:6] = 1  # 16 px
    pred = np.zeros_like(gt)
    pred[3:7, 2:6] = 1  # shifted down by one row: TP 12, FP 4, FN 4
    viewer, widget = dock(NAME)
    gt_layer, pred_layer = _compare(viewer, widget, wait_idle, gt, pred)
    assert not widget.status.is_error, widget.status.text()

    errors = _owned(viewer, "errors")
    assert errors is not None
    assert _visible(viewer) == {errors.name}  # the compared layers would tint the overlay
    expected = np.zeros_like(gt)
    expected[3:6, 2:6] = 1  # TP
    expected[6, 2:6] = 2  # FP: predicted, not in truth
    expected[2, 2:6] = 3  # FN: missed
    # the status bar names the error under the cursor (it showed the bare code "2")
    status = errors.get_status((6.0, 3.0), world=True)
    assert "false positive" in str(status), status
    np.testing.assert_array_equal(errors.data, expected)
    # FP red, FN blue, TP translucent green, TN transparent (PM-Dice paper fig. 5)
    for value in (TN, TP, FP, FN):
        np.testing.assert_allclose(
            errors.colormap.map(np.array([value]))[0], ERROR_COLORS[value], atol=1e-6
        )
    assert errors.opacity == 1.0 and errors.blending == "translucent"

    row = _table(widget)[1]
    assert row["dice"] == pytest.approx(2 * 12 / (2 * 12 + 4 + 4), abs=1e-4)  # 0.75
    assert row["iou"] == pytest.approx(12 / 20, abs=1e-4)
    assert row["precision"] == pytest.approx(12 / 16, abs=1e-4)
    assert row["recall"] == pytest.approx(12 / 16, abs=1e-4)
    assert row["hd95"] == pytest.approx(1.0, abs=1e-4)  # every boundary point within 1 px
    assert row["nsd"] == pytest.approx(
        widget.metrics[1]["nsd"], abs=1e-4
    )  # table shows the core's value

    assert widget.table_caption.text() == "metrics of guess vs truth"
    widget.gt_picker.set_layer(None)  # a refused compare: the table and its caption stay
    widget.compare()
    wait_idle(widget)
    assert widget.status.is_error and widget.table_caption.text() == "metrics of guess vs truth"
    out = widget.export_csv(tmp_path / "m.csv")
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 1 and rows[0]["class"] == "1"
    assert float(rows[0]["dice"]) == pytest.approx(0.75)
    assert rows[0]["comparison"] == "guess vs truth"
    # user layers untouched
    np.testing.assert_array_equal(gt_layer.data, gt)
    np.testing.assert_array_equal(pred_layer.data, pred)


def test_the_overlay_lies_over_the_image_with_the_loss_explorer_open(dock, wait_idle):
    """The Loss Explorer turns napari's grid on and draws its maps: the overlay had a cell of
    its own on black, away from the image, and the maps would cover it without the grid."""
    viewer, explorer = dock("Loss Explorer")
    viewer.open_sample("napari-segloss", "kvasir")
    wait_idle(explorer, timeout=60_000)
    assert grid_of(viewer).enabled and explorer.map_layers()
    _, widget = dock(NAME, viewer)
    mask = viewer.layers["kvasir mask"]
    shifted = viewer.add_labels(np.roll(mask.data, 15, -1), name="shifted")
    widget.pred_picker.set_layer(shifted)
    widget.gt_picker.set_layer(mask)
    widget.compare()
    wait_idle(widget)
    assert not grid_of(viewer).enabled
    errors = _owned(viewer, "errors")
    assert _visible(viewer) == {"kvasir image", errors.name}
    assert all(not ly.visible for ly in explorer.map_layers())  # hidden, not removed
    n = len(explorer.map_layers())
    assert widget.status.text().endswith(
        f"hid 'shifted', 'kvasir mask' and {n} map layers of other panels; "
        "grid view off (the overlay lies over the image)"
    )
    assert not explorer.grid_check.value  # the Explorer's check box follows the grid
    explorer.grid_check.value = True  # the maps back, side by side
    wait_idle(explorer)
    assert grid_of(viewer).enabled and all(ly.visible for ly in explorer.map_layers())


def test_a_stack_of_frames_is_scored_frame_by_frame(dock, wait_idle):
    """The kvasir sample is 3 unrelated frames: scored as one volume, every polyp shifted by
    6 px read HD95 0 and NSD 0.98 (each frame's mask faced the next frame's), Dice pooled."""
    viewer, widget = dock(NAME)
    viewer.open_sample("napari-segloss", "kvasir")
    mask = viewer.layers["kvasir mask"]
    shifted = viewer.add_labels(np.roll(mask.data, 6, axis=1), name="shifted")
    widget.pred_picker.set_layer(shifted)
    widget.gt_picker.set_layer(mask)
    assert widget.frames_check.value and widget.frames_check.enabled  # the reader's stack
    widget.tolerance.value = 2.0
    widget.compare()
    wait_idle(widget)
    per_frame = [
        evaluate(p, g, tolerance=2.0)[1] for p, g in zip(shifted.data, mask.data, strict=True)
    ]
    table = _table(widget)[1]
    assert table["hd95"] == pytest.approx(6.0)
    for key in ("dice", "nsd", "hd95"):
        assert table[key] == pytest.approx(np.mean([m[key] for m in per_frame]), abs=1e-4)
    assert widget.table_caption.text() == "metrics of shifted vs kvasir mask, mean over 3 frames"
    # the counts are totals, and the status says over what
    assert "(blue) px in all 3 frames" in widget.status.text()
    # unticked: one volume, as for a NIfTI scan (the caption says nothing of frames)
    widget.frames_check.value = False
    widget.compare()
    wait_idle(widget)
    volume = evaluate(shifted.data, mask.data, tolerance=2.0, spacing=(1.0, 1.0, 1.0))[1]
    assert _table(widget)[1]["hd95"] == pytest.approx(volume["hd95"], abs=1e-4)
    assert widget.table_caption.text() == "metrics of shifted vs kvasir mask"
    # a volume from elsewhere (no reader mark) is not ticked; a 2D pair cannot be either
    widget.gt_picker.set_layer(viewer.add_labels(mask.data.copy(), name="volume"))
    assert widget.pred_picker.layer() is shifted and "frames" not in shifted.metadata
    assert not widget.frames_check.value and widget.frames_check.enabled
    flat = viewer.add_labels(mask.data[0], name="flat")
    widget.gt_picker.set_layer(flat)
    widget.pred_picker.set_layer(viewer.add_labels(mask.data[1], name="flat2"))
    assert not widget.frames_check.enabled


def test_the_overlay_class_choices_follow_the_compared_layers(dock, wait_idle):
    """The choices were "class 1" to "class 15" whatever the data; now the labels of the
    compared layers, named as the ACDC sample names them, and the overlay shows the one picked."""
    viewer, widget = dock(NAME)
    viewer.open_sample("napari-segloss", "acdc")
    truth = viewer.layers["acdc labels"]
    guess = viewer.add_labels(np.roll(truth.data, 2, -1), name="guess")
    widget.pred_picker.set_layer(guess)
    widget.gt_picker.set_layer(truth)
    choices = [widget.overlay_class.native.itemText(i)
               for i in range(widget.overlay_class.native.count())]  # fmt: skip
    assert choices == ["any foreground", "1 RV", "2 MYO", "3 LV"]
    widget.overlay_class.value = 2
    widget.compare()
    wait_idle(widget)
    errors = _owned(viewer, "errors").data
    mine = (truth.data == 2) | (guess.data == 2)
    assert errors[mine].any() and not errors[~mine].any()  # MYO's errors alone
    plain = viewer.add_labels((truth.data > 0).astype(np.uint8), name="plain")
    widget.gt_picker.set_layer(plain)
    widget.pred_picker.set_layer(plain)
    assert widget.overlay_class.native.count() == 2  # "any foreground", "class 1"
    assert widget.overlay_class.value is None  # class 2 is gone


def test_run_checkpoint_on_kvasir_sample_then_compare(dock, wait_idle, tiny_checkpoint):
    viewer, widget = dock(NAME)
    # the plugin's own sample: 3 RGB frames (3, 273, 320, 3) + masks (3, 273, 320)
    layers = viewer.open_sample("napari-segloss", "kvasir")
    img_layer = next(ly for ly in layers if ly.rgb)
    gt_layer = next(ly for ly in layers if not getattr(ly, "rgb", False))
    mask = np.asarray(gt_layer.data)
    widget.image_picker.set_layer(img_layer)
    widget.gt_picker.set_layer(gt_layer)
    widget.ckpt_picker.set_path(tiny_checkpoint)
    # the box shows the end of a long path; the whole path on hover
    assert widget.ckpt_picker.combo.toolTip() == str(tiny_checkpoint)
    widget.tile.value = 128  # tiled: 273 x 320 frames in 128-px tiles
    widget.device.value = "cpu"
    # the probability layer comes in an event-loop turn after the prediction's (each new
    # layer builds napari's controls and visual: both in one turn froze the window)
    turns: list[str] = []
    heartbeat = QTimer()  # ticks once per pass of the event loop
    heartbeat.setInterval(0)
    heartbeat.timeout.connect(lambda: turns.append("tick") if turns[-1:] != ["tick"] else None)
    viewer.layers.events.inserted.connect(lambda event: turns.append(event.value.name))
    heartbeat.start()
    widget.run_model()
    # no full collection from Run until the layers are drawn (the worker imports smp)
    assert not gc.isenabled()
    wait_idle(widget)  # prediction (frame by frame), then the automatic comparison
    assert not widget.status.is_error, widget.status.text()
    assert gc.isenabled()
    heartbeat.stop()
    added = [t for t in turns if t != "tick"]
    assert added[:2] == ["pred tiny", "prob tiny"]
    assert turns[turns.index(added[0]) + 1] == "tick"  # the loop ran in between

    pred = _owned(viewer, "prediction")
    prob = _owned(viewer, "prob:1")
    errors = _owned(viewer, "errors")
    assert isinstance(pred, Labels) and pred.data.shape == mask.shape
    assert set(np.unique(pred.data)) <= {0, 1}
    assert isinstance(prob, Image) and prob.data.shape == mask.shape
    assert 0.0 <= prob.data.min() and prob.data.max() <= 1.0
    np.testing.assert_array_equal(pred.data, (prob.data > 0.5).astype(np.uint8))
    # overlay = error classes of the model output vs the truth
    e = errors.data
    assert np.array_equal(e == 1, (pred.data == 1) & (mask == 1))
    assert np.array_equal(e == 2, (pred.data == 1) & (mask == 0))
    assert np.array_equal(e == 3, (pred.data == 0) & (mask == 1))
    assert set(_table(widget)) == {1}
    assert widget.pred_picker.layer().unique_id == pred.unique_id
    # a class in the mask's colour (napari's default gave class 1 a dark brown)
    np.testing.assert_allclose(pred.get_color(1), gt_layer.get_color(1))
    # the 3 frames scored one by one (they were pooled into one volume, distances across them)
    assert pred.metadata["frames"] and widget.frames_check.value
    assert widget.table_caption.text().endswith(", mean over 3 frames")
    expected = evaluate_frames(pred.data, mask, tolerance=widget.tolerance.value)
    assert _table(widget)[1]["dice"] == pytest.approx(expected[1]["dice"], abs=1e-4)
    # after Predict: the error overlay over the image, nothing else; one click shows the rest
    assert _visible(viewer) == {img_layer.name, errors.name}
    assert viewer.layers.index(errors) > viewer.layers.index(img_layer)
    assert not pred.visible and not prob.visible and not gt_layer.visible
    # the overlay is selected (its opacity at hand in the layer controls), as napari selects a
    # layer a user adds; the hidden layers did not take the selection on the way
    assert list(viewer.layers.selection) == [errors]
    # probabilities, when shown, do not tint the image where p = 0
    assert prob.blending == "translucent"
    assert prob.colormap.map(np.array([0.0]))[0][3] == 0
    assert prob.colormap.map(np.array([1.0]))[0][3] > 0.5

    # running again re-uses the same layers
    n = len(viewer.layers)
    widget.run_model()
    wait_idle(widget)
    assert len(viewer.layers) == n
    assert _owned(viewer, "prediction") is pred


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        ("no_checkpoint", "checkpoint: none chosen"),
        ("missing_file", "checkpoint: expected an existing .pt file"),
        ("no_image", "image: no layer selected"),
        ("shape_mismatch", "expected the same shape"),
        # "(none)" picked while Labels layers exist: said "no layer selected (open or add one
        # in the layer list)", as if there were none
        ("no_gt", "ground truth: '(none)' is selected; pick a layer in its list"),
    ],
)
def test_bad_selections_show_a_message(dock, wait_idle, tmp_path, setup, message):
    viewer, widget = dock(NAME)
    if setup != "no_image":
        viewer.add_image(np.zeros((16, 16, 3), dtype=np.uint8), name="img")
    if setup == "missing_file":
        widget.ckpt_picker.set_path(tmp_path / "nope.pt")
    if setup in ("no_checkpoint", "missing_file", "no_image"):
        if setup == "no_image":
            widget.ckpt_picker.set_path(tmp_path / "nope.pt")
        widget.run_model()
    else:
        a = viewer.add_labels(np.zeros((8, 8), dtype=np.uint8), name="a")
        if setup == "shape_mismatch":
            b = viewer.add_labels(np.zeros((8, 9), dtype=np.uint8), name="b")
            widget.gt_picker.set_layer(b)
        else:
            widget.gt_picker.set_layer(None)
        widget.pred_picker.refresh()
        widget.pred_picker.set_layer(a)
        widget.compare()
    wait_idle(widget)
    assert widget.status.is_error
    assert message in widget.status.text()


def test_rgb_checkpoint_on_a_grey_volume_says_so(dock, wait_idle, tiny_checkpoint):
    # issue 17, 11: the RGB Kvasir checkpoint run on a grey ACDC volume
    viewer, widget = dock(NAME)
    volume = viewer.add_image(np.zeros((4, 32, 32), np.float32), name="grey volume")
    widget.image_picker.set_layer(volume)
    widget.ckpt_picker.set_path(tiny_checkpoint)
    widget.device.value = "cpu"
    widget.run_model()
    wait_idle(widget)
    assert widget.status.is_error
    text = widget.status.text()
    assert "expects 3-channel (RGB) images" in text and "is a grey volume" in text


def test_grey_3d_checkpoint_on_colour_frames_says_so(dock, wait_idle, tmp_path, tiny_3d_checkpoint):
    """A 3D model of grey volumes run on the RGB kvasir frames: refused with a message, not
    each (H, W, 3) frame read as a volume of H slices of W x 3 voxels (a 4D "prediction")."""
    viewer, widget = dock(NAME)
    image, _ = viewer.open_sample("napari-segloss", "kvasir")
    widget.image_picker.set_layer(image)
    widget.ckpt_picker.set_path(tiny_3d_checkpoint(tmp_path / "grey3d.pt"))
    widget.device.value = "cpu"
    widget.run_model()
    wait_idle(widget, timeout=60_000)
    assert widget.status.is_error, widget.status.text()
    assert "3D network for grey volumes" in widget.status.text()
    assert _owned(viewer, "prediction") is None


def test_overlay_colours_on_screen(dock, wait_idle, make_napari_viewer):
    """What a person sees: pure red FP, pure blue FN, TP green over the (grey) image, and no
    other colour (nothing tinted by the compared layers)."""
    gt = np.zeros((40, 40), dtype=np.uint8)
    gt[10:30, 10:30] = 1
    pred = np.zeros_like(gt)
    pred[14:34, 10:30] = 1  # 4 rows of FN on top, 16 of TP, 4 rows of FP at the bottom
    viewer, widget = dock(NAME, make_napari_viewer(show=True))  # a shown canvas renders
    viewer.add_image(np.full((40, 40), 128, dtype=np.uint8), name="grey", colormap="gray")
    _compare(viewer, widget, wait_idle, gt, pred)
    viewer.reset_view()
    shot = viewer.screenshot(canvas_only=True, flash=False)[..., :3].reshape(-1, 3)
    colours, counts = np.unique(shot, axis=0, return_counts=True)
    seen = {tuple(int(v) for v in c): int(n) for c, n in zip(colours, counts, strict=True)}
    r, g, b, a = ERROR_COLORS[TP]
    tp = tuple(round(255 * (a * c + (1 - a) * 128 / 255)) for c in (r, g, b))

    def count(rgb, tol=2):
        close = (max(abs(x - y) for x, y in zip(c, rgb, strict=True)) <= tol for c in seen)
        return sum(n for ok, n in zip(close, seen.values(), strict=True) if ok)

    red, blue, green, grey = count((255, 0, 0)), count((0, 0, 255)), count(tp), count((128,) * 3)
    assert red > 0 and blue > 0 and green > 0 and grey > 0, seen
    assert red == pytest.approx(blue, rel=0.05)  # 4 rows each
    assert green == pytest.approx(4 * red, rel=0.05)  # 16 rows
    background = count((0, 0, 0))  # the canvas around the image
    assert red + blue + green + grey + background >= 0.99 * shot.shape[0], seen


def test_compare_defaults_to_two_different_layers(dock, make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.open_sample("napari-segloss", "kvasir")
    _, widget = dock(NAME, viewer)
    assert widget.gt_picker.layer().name == "kvasir mask"
    assert widget.pred_picker.layer() is None  # not the ground truth again
    other = viewer.add_labels(np.zeros((3, 273, 320), np.uint8), name="my segmentation")
    assert widget.pred_picker.layer().unique_id == other.unique_id
    assert widget.gt_picker.layer().name == "kvasir mask"


def test_tile_option_says_what_auto_does(dock, qtbot):
    """Auto runs as the training run's validation did (a 2D image whole): the box says so in
    words, readable at the dock's default width, and the tooltips tell the rest."""
    viewer, widget = dock(NAME)
    viewer.window._qt_window.show()
    qtbot.waitExposed(widget)
    qtbot.waitUntil(lambda: not widget._devices_worker.is_running, timeout=60_000)
    box = widget.tile
    assert box.native is box  # as when the row was a magicgui widget
    line = box.lineEdit()
    assert widget.tile.value == 0
    assert line.text() == "auto (as validation)"
    assert line.fontMetrics().horizontalAdvance(line.text()) < line.width()
    tip = box.toolTip()
    assert "validation" in tip and "2D image whole" in tip and "--tile crop" in tip
    assert "only when the image is cut into tiles" in widget.overlap.native.toolTip()
    widget.tile.value = 128  # a size reads as a size
    assert line.text() == "128" and widget.tile.value == 128
    box.setCurrentIndex(box.findText("training crop"))
    assert widget.tile.value == "crop"


@pytest.mark.parametrize("typed", ["big", "16", "-64", "2.5"])
def test_a_tile_that_is_no_size_is_refused_before_any_work(dock, tiny_checkpoint, typed):
    viewer, widget = dock(NAME)
    viewer.add_image(np.zeros((64, 64, 3), np.uint8), rgb=True, name="img")
    widget.ckpt_picker.set_path(tiny_checkpoint)
    widget.tile.setEditText(typed)
    widget.run_model()
    assert not widget.busy
    assert widget.status.is_error
    assert f"tiles: {typed!r} is not a choice" in widget.status.text()
    assert "at least 32 pixels" in widget.status.text()


def test_training_crop_tiles_as_segloss_predict_tile_crop(
    dock, wait_idle, tiny_checkpoint, tmp_path
):
    """ "training crop" gives what the engine gives with tile="crop" (the CLI's --tile crop),
    and differs from a whole-image run when the crop is smaller than the image."""
    import torch

    from napari_segloss.engine.inference import predict_image

    ckpt = torch.load(tiny_checkpoint, weights_only=False)
    ckpt["meta"]["crop"] = [64, 64]
    path = tmp_path / "crop64.pt"
    torch.save(ckpt, path)
    image = np.random.default_rng(0).integers(0, 255, (96, 160, 3), dtype=np.uint8)
    viewer, widget = dock(NAME)
    layer = viewer.add_image(image, rgb=True, name="img")
    widget.image_picker.set_layer(layer)
    widget.ckpt_picker.set_path(path)
    widget.device.value = "cpu"
    widget.tile.value = "crop"
    widget.run_model()
    wait_idle(widget)
    assert not widget.status.is_error, widget.status.text()
    labels = _owned(viewer, "prediction").data
    probs = _owned(viewer, "prob:1").data
    want_labels, want_probs = predict_image(path, image, rgb=True, tile="crop", device="cpu")
    np.testing.assert_array_equal(labels, want_labels)
    np.testing.assert_allclose(probs, want_probs[-1], atol=1e-6)  # p(class 1)
    _, whole = predict_image(path, image, rgb=True, device="cpu")
    assert not np.allclose(whole[-1], want_probs[-1], atol=1e-4)  # tiling made a difference


def test_metrics_table_fits_the_dock_and_clears_with_its_layers(dock, wait_idle, qtbot):
    gt = np.zeros((10, 10), dtype=np.uint8)
    gt[2:6, 2:6] = 1
    gt[6:9, 6:9] = 2
    pred = np.roll(gt, 1, axis=0)
    viewer, widget = dock(NAME)
    _, pred_layer = _compare(viewer, widget, wait_idle, gt, pred)
    viewer.window._qt_window.show()
    qtbot.waitExposed(widget)
    table = widget.table
    assert set(_table(widget)) == {1, 2}
    metrics = [table.verticalHeaderItem(i).text() for i in range(table.rowCount())]
    assert metrics == ["dice", "iou", "precision", "recall", "nsd", "hd95"]
    assert "scale units" in table.verticalHeaderItem(5).toolTip()  # hd95 says its unit
    # every column and every number fits at the dock's default width: nothing cut off
    header = table.horizontalHeader()
    assert header.length() <= table.viewport().width()
    fm = table.fontMetrics()
    for i in range(table.rowCount()):
        for j in range(table.columnCount()):
            assert fm.horizontalAdvance(table.item(i, j).text()) < header.sectionSize(j)

    viewer.layers.remove(pred_layer)
    assert table.rowCount() == 0 and widget.metrics == {} and widget.table_caption.text() == ""
    assert not widget.export_button.isEnabled()
    assert "metrics cleared" in widget.status.text()


def test_labels_that_do_not_fit_are_refused(dock, wait_idle):
    """A binary mask saved as {0, 9} against one of {0, 1}: no label in common would give a
    table of nan and an overlay of FP only; the panel says why instead."""
    gt = np.zeros((12, 12), dtype=np.uint8)
    gt[2:8, 2:8] = 1
    viewer, widget = dock(NAME)
    _compare(viewer, widget, wait_idle, gt, gt * 9)
    text = widget.status.text()
    assert widget.status.is_error, text
    assert "labels do not fit" in text and "'guess' has labels [9]" in text, text
    assert "'truth' has [1]" in text and "mask > 0" in text, text
    assert _owned(viewer, "errors") is None and widget.table.columnCount() == 0


def test_classes_in_neither_layer_are_not_tabulated(dock, wait_idle):
    gt = np.zeros((12, 12), dtype=np.uint8)
    gt[2:6, 2:6] = 1
    gt[7:11, 7:11] = 4  # labels 2 and 3 appear in neither layer
    viewer, widget = dock(NAME)
    _compare(viewer, widget, wait_idle, gt, gt)
    assert not widget.status.is_error, widget.status.text()
    assert set(_table(widget)) == {1, 4}
    assert _table(widget)[4]["dice"] == 1.0


def test_a_removed_layer_replaced_in_a_picker_is_announced(dock, wait_idle):
    """Removing the ground truth makes its picker select another Labels layer: the status
    says which, and the next Compare names both layers."""
    gt = np.zeros((12, 12), dtype=np.uint8)
    gt[2:8, 2:8] = 1
    viewer, widget = dock(NAME)
    other = viewer.add_labels(np.roll(gt, 2, axis=1), name="other")
    gt_layer, _ = _compare(viewer, widget, wait_idle, gt, np.roll(gt, 1, axis=0))
    assert "guess vs truth" in widget.status.text()
    viewer.layers.remove(gt_layer)
    new = widget.gt_picker.layer()
    assert new is not None and new.name != "truth"
    text = widget.status.text()
    assert "layer 'truth' was removed" in text and "metrics cleared" in text, text
    assert f"ground truth is now {new.name!r}" in text, text
    widget.gt_picker.set_layer(other)
    widget.compare()
    wait_idle(widget)
    assert widget.status.text().startswith("guess vs other:"), widget.status.text()
    # removing a layer no picker shows says nothing about the pickers
    viewer.add_labels(np.zeros_like(gt), name="unused")
    viewer.layers.remove("unused")
    assert "is now" not in widget.status.text()
    # the image to run the model on too (it moved to another image silently)
    viewer.add_image(np.zeros((12, 12)), name="frame B")
    widget.image_picker.set_layer(viewer.add_image(np.ones((12, 12)), name="frame A"))
    viewer.layers.remove("frame A")
    assert "image is now 'frame B'" in widget.status.text(), widget.status.text()


def test_export_dialog_adds_csv_and_a_closed_panel_ignores_a_late_cancel(
    dock, wait_idle, tmp_path, monkeypatch
):
    from qtpy import sip
    from qtpy.QtWidgets import QFileDialog

    gt = np.zeros((12, 12), dtype=np.uint8)
    gt[2:8, 2:8] = 1
    viewer, widget = dock(NAME)
    _compare(viewer, widget, wait_idle, gt, np.roll(gt, 1, axis=0))
    typed = str(tmp_path / "metrics_typed")  # a name typed without its suffix
    monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *a, **k: (typed, "CSV (*.csv)"))
    widget._export_dialog()
    assert (
        tmp_path / "metrics_typed.csv"
    ).is_file() and "metrics_typed.csv" in widget.status.text()
    # a worker's 'aborted' arriving after the viewer was closed (the panel deleted) raised
    # "wrapped C/C++ object ... has been deleted" in another viewer's window
    sip.delete(widget.status)
    widget._on_aborted()


def test_the_checkpoints_class_names_head_the_table(
    dock, wait_idle, tmp_path, tiny_3d_checkpoint, monkeypatch
):
    # an ACDC checkpoint carries [background, RV, MYO, LV]: the table read "class 1/2/3"
    from napari_segloss._widgets import predict_panel

    real_upsert = predict_panel.upsert_layer

    def slow_probability_layers(viewer, panel, key, *args, **kwargs):
        if key.startswith("prob:"):  # a slow first draw: the comparison ends meanwhile
            time.sleep(0.3)
        return real_upsert(viewer, panel, key, *args, **kwargs)

    monkeypatch.setattr(predict_panel, "upsert_layer", slow_probability_layers)
    viewer, widget = dock(NAME)
    image, labels = viewer.open_sample("napari-segloss", "acdc")
    widget.image_picker.set_layer(image)
    widget.gt_picker.set_layer(labels)
    names = ["background", "RV", "MYO", "LV"]
    widget.ckpt_picker.set_path(tiny_3d_checkpoint(tmp_path / "acdc3d.pt", names))
    widget.device.value = "cpu"
    widget.run_model()
    wait_idle(widget, timeout=120_000)  # prediction, then the automatic comparison
    assert not widget.status.is_error, widget.status.text()
    t = widget.table
    assert [t.horizontalHeaderItem(j).text() for j in range(t.columnCount())] == [
        "1 RV",
        "2 MYO",
        "3 LV",
    ]
    assert _owned(viewer, "prob:2").name.startswith("p(MYO) ")
    # the overlay above every probability layer (the comparison ended before the last
    # probability layer was added: shown, it tinted the overlay)
    errors = viewer.layers.index(_owned(viewer, "errors"))
    probs = [viewer.layers.index(ly) for ly in viewer.layers if ly.name.startswith("p(")]
    assert len(probs) == 3 and errors > max(probs), [ly.name for ly in viewer.layers]
    pred = _owned(viewer, "prediction")  # the status bar names the class under the cursor
    assert list(pred.features["class"]) == names
    rows = list(csv.DictReader(widget.export_csv(tmp_path / "m.csv").open()))
    assert [(r["class"], r["name"]) for r in rows] == [("1", "RV"), ("2", "MYO"), ("3", "LV")]


def test_the_ground_truths_class_names_head_the_table(
    dock, wait_idle, tmp_path, tiny_3d_checkpoint
):
    # a checkpoint without names, scored against the acdc sample, whose labels name RV, MYO, LV
    viewer, widget = dock(NAME)
    image, labels = viewer.open_sample("napari-segloss", "acdc")
    widget.image_picker.set_layer(image)
    widget.gt_picker.set_layer(labels)
    widget.ckpt_picker.set_path(tiny_3d_checkpoint(tmp_path / "unnamed.pt"))
    widget.device.value = "cpu"
    widget.run_model()
    wait_idle(widget, timeout=120_000)
    assert not widget.status.is_error, widget.status.text()
    t = widget.table
    heads = [t.horizontalHeaderItem(j).text() for j in range(t.columnCount())]
    assert heads == ["1 RV", "2 MYO", "3 LV"]
    pred = _owned(viewer, "prediction")
    assert pred.metadata["class_names"] is None and pred.features.empty


def test_gpu_out_of_memory_says_what_to_lower(dock, wait_idle, tiny_checkpoint, monkeypatch):
    import torch

    from napari_segloss.engine import inference

    def full(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 8.00 GiB. GPU 0 ...")
        yield  # a generator, as the real one

    monkeypatch.setattr(inference, "iter_predict_image", full)
    viewer, widget = dock(NAME)
    widget.image_picker.set_layer(viewer.add_image(np.zeros((32, 32, 3), np.uint8), rgb=True))
    widget.ckpt_picker.set_path(tiny_checkpoint)
    widget.run_model()
    wait_idle(widget)
    assert widget.status.is_error
    assert widget.status.text() == (  # before: "OutOfMemoryError: CUDA out of memory. Tried ..."
        "CUDA out of memory. Tried to allocate 8.00 GiB: lower the tile size, or choose the cpu "
        "device"
    )


def test_a_second_run_of_one_checkpoint_does_not_load_it_again(
    dock, wait_idle, tiny_checkpoint, monkeypatch
):
    from napari_segloss.engine import checkpoint

    loads: list[str] = []
    real_load = checkpoint.load_model

    def counting_load(path, device="cpu"):
        loads.append(str(path))
        return real_load(path, device)

    monkeypatch.setattr(checkpoint, "load_model", counting_load)
    viewer, widget = dock(NAME)
    widget.image_picker.set_layer(viewer.add_image(np.zeros((32, 32, 3), np.uint8), rgb=True))
    widget.ckpt_picker.set_path(tiny_checkpoint)
    widget.device.value = "cpu"
    for _ in range(2):
        widget.run_model()
        wait_idle(widget)
        assert not widget.status.is_error, widget.status.text()
    assert loads == [str(tiny_checkpoint)]


def test_a_prediction_that_lies_apart_from_the_truth_is_noted(dock, wait_idle):
    """A prediction layer at another scale than the ground truth: the overlay (placed as the
    truth) was not over the prediction's image, and the distances were in the truth's units,
    without a word."""
    gt = np.zeros((12, 12), dtype=np.uint8)
    gt[3:8, 3:8] = 1
    viewer, widget = dock(NAME)
    gt_layer = viewer.add_labels(gt, name="truth")
    pred_layer = viewer.add_labels(gt.copy(), name="guess", scale=(2.0, 2.0))
    widget.pred_picker.set_layer(pred_layer)
    widget.gt_picker.set_layer(gt_layer)
    widget.compare()
    wait_idle(widget)
    assert not widget.status.is_error, widget.status.text()
    assert widget.status.text().endswith(
        "Note: 'guess' and 'truth' do not lie alike (scale (2, 2) vs (1, 1)): napari draws them "
        "apart; results are placed and measured as 'truth'"
    )


def test_metric_columns_are_those_evaluate_computes() -> None:
    """The panel's table and per_image.csv name the metrics in copies of metrics.METRICS
    (kept so that opening a panel or the CLI does not import scikit-image): they must not
    drift."""
    from napari_segloss._cli_io import METRIC_KEYS
    from napari_segloss._widgets.predict_panel import METRIC_COLUMNS
    from napari_segloss.metrics.evaluate import METRICS

    assert METRIC_COLUMNS == METRIC_KEYS == METRICS


def _runs(tmp_path, checkpoint, losses=("dice", "ce+pm_dice")):
    """``best.pt`` of two compare runs (runs/<loss>/seed0) with their metrics.csv: the
    same file and folder names, only the loss folders tell them apart."""
    import shutil

    paths = []
    for i, loss in enumerate(losses):
        run = tmp_path / "runs" / loss / "seed0"
        run.mkdir(parents=True)
        shutil.copy(checkpoint, run / "best.pt")
        (run / "metrics.csv").write_text(
            "epoch,iteration,lr,train_loss,val_loss,val_dice\n"
            f"1,5,0.001,0.9,0.8,0.4\n2,10,0.001,0.7,0.6,0.6{i}\n3,15,0.001,0.6,0.7,0.5\n"
        )
        paths.append(run / "best.pt")
    return paths


def test_checkpoint_entries_name_their_runs(dock, tmp_path, tiny_checkpoint):
    """Runs of a comparison all save best.pt in a seed0 folder: the list showed their paths,
    cut to the same ``/tmp/…eed0/best.pt``. Each entry names its run, the epoch and the
    validation Dice of its weights; its path is the tooltip, and the path the picker gives."""
    from qtpy.QtCore import Qt

    from napari_segloss._widgets._state import CHECKPOINTS

    dice, compound = _runs(tmp_path, tiny_checkpoint)
    CHECKPOINTS.add(dice)
    CHECKPOINTS.add(compound)
    _, widget = dock(NAME)
    combo = widget.ckpt_picker.combo
    entries = [combo.itemText(i) for i in range(combo.count())]
    assert entries == [
        "ce+pm_dice/seed0 (epoch 2, val dice 0.610)",
        "dice/seed0 (epoch 2, val dice 0.600)",
    ]
    tips = [combo.itemData(i, Qt.ItemDataRole.ToolTipRole) for i in range(combo.count())]
    assert tips == [str(compound.resolve()), str(dice.resolve())]
    combo.showPopup()  # the open list shows its entries whole (not cut in the middle)
    assert combo.view().width() >= combo.view().sizeHintForColumn(0)
    combo.hidePopup()
    assert combo.lineEdit().cursorPosition() == 0  # the box shows the run's name
    assert widget.ckpt_picker.path() == compound.resolve()  # the newest, chosen at once
    combo.setCurrentIndex(1)
    assert widget.ckpt_picker.path() == dice.resolve()
    assert combo.toolTip() == str(dice.resolve())
    widget.ckpt_picker.set_path(compound)  # a listed path shows as its entry
    assert combo.currentText() == entries[0]
    widget.ckpt_picker.set_path(tmp_path / "other.pt")  # any other path as typed
    assert widget.ckpt_picker.path() == tmp_path / "other.pt"


def test_layer_names_are_short_and_name_the_run(dock, wait_idle, tmp_path, tiny_checkpoint):
    """The name "errors prediction [seed0/best] vs kvasir mask" was cut in the layer list, and
    "seed0/best" named every compare run alike. The names are short and name the run."""
    viewer, widget = dock(NAME)
    rng = np.random.default_rng(0)
    image = viewer.add_image(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8), rgb=True)
    truth = np.zeros((64, 64), dtype=np.uint8)
    truth[16:40, 16:40] = 1
    gt = viewer.add_labels(truth, name="truth")
    _, compound = _runs(tmp_path, tiny_checkpoint)
    widget.image_picker.set_layer(image)
    widget.gt_picker.set_layer(gt)
    widget.ckpt_picker.set_path(compound)
    widget.device.value = "cpu"
    widget.run_model()
    wait_idle(widget)
    assert not widget.status.is_error, widget.status.text()
    names = [_owned(viewer, k).name for k in ("prediction", "prob:1", "errors")]
    assert names == ["pred ce+pm_dice/seed0", "prob ce+pm_dice/seed0", "errors ce+pm_dice/seed0"]
    # as wide as the layer list shows without eliding (its names are bold)
    from qtpy.QtGui import QFont, QFontMetrics

    font = QFont(viewer.window._qt_window.font())
    font.setBold(True)
    assert max(QFontMetrics(font).horizontalAdvance(n) for n in names) < 200
    # another Labels layer compared keeps its own name in its overlay's
    guess = viewer.add_labels(np.roll(truth, 3, axis=0), name="guess")
    widget.pred_picker.set_layer(guess)
    widget.compare()
    wait_idle(widget)
    assert _owned(viewer, "errors").name == "errors guess"

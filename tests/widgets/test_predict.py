"""Predict & Compare panel, docked from the manifest."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from napari.layers import Image, Labels

from napari_segloss._widgets._common import TAG, is_owned

NAME = "Predict & Compare"


def _owned(viewer, key: str):
    hits = [
        ly for ly in viewer.layers if is_owned(ly, "predict") and ly.metadata[TAG]["key"] == key
    ]
    return hits[0] if hits else None


def _table(widget) -> dict[int, dict[str, float]]:
    t = widget.table
    cols = [t.horizontalHeaderItem(j).text() for j in range(t.columnCount())]
    return {
        int(t.item(r, 0).text()): {cols[j]: float(t.item(r, j).text()) for j in range(1, len(cols))}
        for r in range(t.rowCount())
    }


def test_compare_two_labels_layers_hand_computed(dock, wait_idle, tmp_path):
    gt = np.zeros((10, 10), dtype=np.uint8)
    gt[2:6, 2:6] = 1  # 16 px
    pred = np.zeros_like(gt)
    pred[3:7, 2:6] = 1  # shifted down by one row: TP 12, FP 4, FN 4
    viewer, widget = dock(NAME)
    gt_layer = viewer.add_labels(gt, name="truth")
    pred_layer = viewer.add_labels(pred, name="guess")
    widget.pred_picker.set_layer(pred_layer)
    widget.gt_picker.set_layer(gt_layer)
    widget.compare()
    wait_idle(widget)
    assert not widget.status.is_error, widget.status.text()

    errors = _owned(viewer, "errors")
    assert errors is not None
    expected = np.zeros_like(gt)
    expected[3:6, 2:6] = 1  # TP
    expected[6, 2:6] = 2  # FP: predicted, not in truth
    expected[2, 2:6] = 3  # FN: missed
    np.testing.assert_array_equal(errors.data, expected)
    # FP red, FN blue, TP translucent green, TN transparent (PM-Dice paper fig. 5)
    np.testing.assert_allclose(errors.colormap.map(np.array([2]))[0], [1, 0, 0, 1])
    np.testing.assert_allclose(errors.colormap.map(np.array([3]))[0], [0, 0, 1, 1])
    green = errors.colormap.map(np.array([1]))[0]
    assert green[1] > 0.5 and green[0] == 0 and 0 < green[3] < 1
    assert errors.colormap.map(np.array([0]))[0][3] == 0

    row = _table(widget)[1]
    assert row["dice"] == pytest.approx(2 * 12 / (2 * 12 + 4 + 4), abs=1e-4)  # 0.75
    assert row["iou"] == pytest.approx(12 / 20, abs=1e-4)
    assert row["precision"] == pytest.approx(12 / 16, abs=1e-4)
    assert row["recall"] == pytest.approx(12 / 16, abs=1e-4)
    assert row["hd95"] == pytest.approx(1.0, abs=1e-4)  # every boundary point within 1 px
    assert row["nsd"] == pytest.approx(
        widget.metrics[1]["nsd"], abs=1e-4
    )  # table shows the core's value

    out = widget.export_csv(tmp_path / "m.csv")
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 1 and rows[0]["class"] == "1"
    assert float(rows[0]["dice"]) == pytest.approx(0.75)
    assert rows[0]["comparison"] == "guess vs truth"
    # user layers untouched
    np.testing.assert_array_equal(gt_layer.data, gt)
    np.testing.assert_array_equal(pred_layer.data, pred)


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
    widget.tile_spin.setValue(128)  # tiled: 273 x 320 frames in 128-px tiles
    widget.device_combo.setCurrentText("cpu")
    widget.run_model()
    wait_idle(widget)  # prediction (frame by frame), then the automatic comparison
    assert not widget.status.is_error, widget.status.text()

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
        ("no_gt", "ground truth: no layer selected"),
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
        widget.pred_picker.set_layer(a)
        widget.compare()
    wait_idle(widget)
    assert widget.status.is_error
    assert message in widget.status.text()

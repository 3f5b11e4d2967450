"""Loss Explorer panel, docked from the manifest and run on the bundled samples."""

from __future__ import annotations

import numpy as np
import pytest

from napari_segloss._widgets._common import TAG, grid_of, is_owned
from napari_segloss.samples import load_sample
from napari_segloss.whatif import make_whatif

NAME = "Loss Explorer"


def _owned(viewer, prefix: str = ""):
    return [
        ly
        for ly in viewer.layers
        if is_owned(ly, "loss_explorer") and ly.metadata[TAG]["key"].startswith(prefix)
    ]


def _values(widget) -> dict[str, float]:
    t = widget.table
    return {t.item(r, 0).text(): float(t.item(r, 1).text()) for r in range(t.rowCount())}


def _kvasir(dock):
    image, mask = load_sample("kvasir", 0)
    viewer, widget = dock(NAME)
    img_layer = viewer.add_image(image, name="polyp")
    gt_layer = viewer.add_labels(mask, name="truth")
    widget.image_picker.set_layer(img_layer)
    widget.gt_picker.set_layer(gt_layer)
    return viewer, widget, image, mask


def test_kvasir_whatif_maps_layers_and_values(dock, wait_idle):
    viewer, widget, image, mask = _kvasir(dock)
    widget.set_losses(["dice", "ce"])
    widget.whatif_kind.setCurrentText("blur")
    widget.whatif_strength.setValue(3.0)
    widget.whatif_softness.setValue(1.5)
    widget.update_maps()
    wait_idle(widget)
    assert not widget.status.is_error, widget.status.text()

    contrib = _owned(viewer, "contrib:")
    modul = _owned(viewer, "modulating:")
    assert sorted(ly.metadata[TAG]["key"] for ly in contrib) == ["contrib:ce", "contrib:dice"]
    assert [ly.name for ly in modul] == [f"PM-Dice m γ={g}" for g in ("0.5", "1", "2", "5")]
    assert sorted(ly.name for ly in contrib) == ["ce contribution", "dice contribution"]
    for ly in contrib:
        assert ly.colormap.name == "inferno"
        assert ly.data.shape == mask.shape
        # one shared colour scale so the losses are comparable
        assert tuple(ly.contrast_limits) == tuple(contrib[0].contrast_limits)
    for ly in modul:
        assert ly.colormap.name == "viridis"
        assert tuple(ly.contrast_limits) == (0.0, 1.0)

    # gamma = 1 map is |y - p| of the what-if prediction (PM-Dice eq. 5), aligned with the image
    p = make_whatif(mask, "blur", 3.0, softness=1.5)[0]
    np.testing.assert_allclose(modul[1].data, np.abs(mask - p), atol=1e-6)
    # fig. 2 of the PM-Dice paper: the loss grows with gamma; dice (gamma = 0) is the lowest
    vals = _values(widget)
    pm = [vals[f"pm_dice(gamma={g})"] for g in ("0.5", "1", "2", "5")]
    assert vals["dice"] < pm[0] < pm[1] < pm[2] < pm[3]
    # the user's layers are untouched
    np.testing.assert_array_equal(viewer.layers["polyp"].data, image)
    np.testing.assert_array_equal(viewer.layers["truth"].data, mask)
    assert TAG not in viewer.layers["truth"].metadata
    assert grid_of(viewer).enabled


def test_gamma_slider_updates_live_and_reuses_layers(dock, wait_idle):
    viewer, widget, _, mask = _kvasir(dock)
    widget.set_losses(["dice"])
    widget.update_maps()
    wait_idle(widget)
    before = {ly.metadata[TAG]["key"]: ly for ly in _owned(viewer)}
    n_layers = len(viewer.layers)

    widget.gamma_rows[1].slider.setValue(3.0)  # live: debounced update, no button press
    assert widget.busy
    wait_idle(widget)
    after = {ly.metadata[TAG]["key"]: ly for ly in _owned(viewer)}
    assert len(viewer.layers) == n_layers
    assert all(after[k] is before[k] for k in before)  # same layer objects, updated in place
    layer = after["modulating:1"]
    assert layer.name == "PM-Dice m γ=3"
    p = make_whatif(mask, "blur", 3.0, softness=1.5)[0]
    np.testing.assert_allclose(layer.data, np.abs(mask - p) ** 3, atol=1e-6)
    assert "pm_dice(gamma=3)" in _values(widget)

    # removing a gamma and unticking a loss removes only our layers for them
    widget.remove_gamma(widget.gamma_rows[0])
    widget.set_losses([])
    wait_idle(widget)
    assert len(_owned(viewer, "modulating:")) == 3
    assert _owned(viewer, "contrib:") == []
    assert "truth" in viewer.layers and "polyp" in viewer.layers


def test_probability_image_hand_computed(dock, wait_idle):
    # 4x4, a 2x2 object predicted at 0.8, background at 0.1
    gt = np.zeros((4, 4), dtype=np.uint8)
    gt[1:3, 1:3] = 1
    prob = np.where(gt == 1, 0.8, 0.1).astype(np.float32)
    viewer, widget = dock(NAME)
    viewer.add_labels(gt, name="gt")
    viewer.add_image(prob, name="prob")
    widget.source_combo.setCurrentText("probability image")
    widget.set_losses(["dice"])
    for row in list(widget.gamma_rows)[1:]:
        widget.remove_gamma(row)
    widget.gamma_rows[0].slider.setValue(2.0)
    widget.update_maps()
    wait_idle(widget)
    assert not widget.status.is_error, widget.status.text()
    vals = _values(widget)
    # Dice (eq. 4, squared, background included): fg 6.4/6.68, bg 21.6/21.88
    assert vals["dice"] == pytest.approx(1 - (6.4 / 6.68 + 21.6 / 21.88) / 2, abs=2e-4)
    # PM Dice gamma=2 (eq. 5): m = 0.04 inside, 0.01 outside; fg 0.256/0.2636, bg 0.216/0.2236
    assert vals["pm_dice(gamma=2)"] == pytest.approx(
        1 - (0.256 / 0.2636 + 0.216 / 0.2236) / 2, abs=2e-4
    )
    m = _owned(viewer, "modulating:")[0].data
    np.testing.assert_allclose(m, np.where(gt == 1, 0.04, 0.01), atol=1e-6)
    np.testing.assert_array_equal(viewer.layers["prob"].data, prob)


def test_acdc_multiclass_slice_and_volume(dock, wait_idle):
    image, labels = load_sample("acdc")
    viewer, widget = dock(NAME)
    viewer.add_image(image, name="mri")
    viewer.add_labels(labels, name="heart")
    widget.set_losses(["dice"])
    widget.class_spin.setValue(2)  # myocardium
    widget.whatif_kind.setCurrentText("erode")
    widget.whatif_strength.setValue(1)
    viewer.dims.set_current_step(0, 3)
    widget.update_maps()
    wait_idle(widget)
    assert not widget.status.is_error, widget.status.text()
    m = _owned(viewer, "modulating:")[1].data  # gamma = 1
    assert m.shape == labels.shape
    # current slice only: other slices stay empty
    assert m[3].max() > 0 and m[[0, 1, 2, 4, 5]].max() == 0
    # what-if predictions are made slice by slice (in-plane), 4 class channels
    p3 = make_whatif(labels[3], "erode", 1, softness=1.5, num_classes=4)
    np.testing.assert_allclose(m[3], np.abs((labels[3] == 2) - p3[2]), atol=1e-6)

    widget.scope_combo.setCurrentText("whole volume")
    wait_idle(widget)
    m = _owned(viewer, "modulating:")[1].data
    assert all(m[z].max() > 0 for z in range(labels.shape[0]))
    p = make_whatif(labels, "erode", 1, softness=1.5, in_plane=True)  # (4, Z, Y, X)
    np.testing.assert_allclose(m, np.abs((labels == 2) - p[2]), atol=1e-6)
    np.testing.assert_allclose(p[:, 3], p3, atol=1e-6)


def test_checkpoint_prediction_source(dock, wait_idle, tiny_checkpoint):
    from napari_segloss._widgets.predict_panel import predict_image

    viewer, widget, image, mask = _kvasir(dock)
    widget.source_combo.setCurrentText("checkpoint")
    widget.ckpt_picker.set_path(tiny_checkpoint)
    widget.set_losses(["dice"])
    widget.update_maps()
    wait_idle(widget)
    assert not widget.status.is_error, widget.status.text()
    _, probs = predict_image(tiny_checkpoint, image, rgb=True, device="cpu")
    m = _owned(viewer, "modulating:")[1].data  # gamma = 1: |y - p| of the model's output
    np.testing.assert_allclose(m, np.abs(mask - probs[0]), atol=1e-4)
    assert len(widget._ckpt_cache) == 1  # a gamma change re-uses the prediction


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        ("no_gt", "ground truth: no layer selected"),
        ("prob_out_of_range", "expected probabilities in [0, 1]"),
        ("shape_mismatch", "expected the same shape"),
        ("missing_checkpoint", "checkpoint: none chosen"),
    ],
)
def test_bad_selections_show_a_message(dock, wait_idle, setup, message):
    viewer, widget = dock(NAME)
    gt = np.zeros((8, 8), dtype=np.uint8)
    gt[2:5, 2:5] = 1
    if setup != "no_gt":
        viewer.add_labels(gt, name="gt")
    if setup == "prob_out_of_range":
        viewer.add_image(np.full((8, 8), 3.0, dtype=np.float32), name="logits")
        widget.source_combo.setCurrentText("probability image")
    elif setup == "shape_mismatch":
        viewer.add_labels(np.zeros((9, 8), dtype=np.uint8), name="other")
        widget.source_combo.setCurrentText("labels layer")
        widget.pred_labels_picker.set_layer(viewer.layers["other"])
    elif setup == "missing_checkpoint":
        widget.source_combo.setCurrentText("checkpoint")
    widget.update_maps()
    wait_idle(widget)
    assert widget.status.is_error
    assert message in widget.status.text()
    assert _owned(viewer) == []


def test_compute_explorer_relative_maps_and_classes():
    from napari_segloss._widgets.loss_explorer import LossSpec, compute_explorer
    from napari_segloss.losses import get_loss

    gt = np.array([[0, 1, 2], [0, 2, 2]])
    probs = np.full((3, 2, 3), 0.2, dtype=np.float32)
    for c in range(3):
        probs[c][gt == c] = 0.6  # the true class gets 0.6, the two others 0.2 each
    specs = [LossSpec("dice", {}, get_loss("dice")), LossSpec("ce", {}, get_loss("ce"))]
    res = compute_explorer(probs, gt, specs, [2.0], cls=2, relative=True)
    for m in res.contributions.values():
        assert m.shape == gt.shape
        assert m.mean() == pytest.approx(1.0, rel=1e-5)  # relative to the mean pixel
    # CE: -log(0.6) at every pixel
    assert dict(res.values)["ce"] == pytest.approx(-np.log(0.6), abs=1e-5)
    # class-2 modulating map, gamma 2: |1 - 0.6|^2 = 0.16 on class 2, |0 - 0.2|^2 = 0.04 elsewhere
    np.testing.assert_allclose(res.modulating[0][1], np.where(gt == 2, 0.16, 0.04), atol=1e-6)
    np.testing.assert_allclose(res.prediction, probs[2])
    assert res.num_classes == 3
    with pytest.raises(ValueError, match="class: expected 0 to 2, got 3"):
        compute_explorer(probs, gt, specs, [1.0], cls=3)

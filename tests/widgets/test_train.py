"""Train / Fine-tune panel: a tiny run on the bundled Kvasir sample, Stop, bad selections."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from napari_segloss._widgets._state import CHECKPOINTS
from napari_segloss._widgets.train_panel import layer_pairs, split_pairs
from napari_segloss.engine.events import TrainDone
from napari_segloss.samples import load_sample

NAME = "Train / Fine-tune"


def _setup(dock, tmp_path, *, epochs: int):
    image, mask = load_sample("kvasir", 0)
    viewer, widget = dock(NAME)
    viewer.add_image(image, name="frame")
    viewer.add_labels(mask, name="polyp")
    widget.arch_combo.setCurrentText("Unet")
    widget.encoder_combo.setCurrentText("resnet18")
    widget.size_spin.setValue(64)  # small and fast
    widget.epochs_spin.setValue(epochs)
    widget.batch_spin.setValue(1)
    widget.device_combo.setCurrentText("cpu")
    widget.loss_combo.setCurrentText("pm_dice")
    widget.output_edit.setText(str(tmp_path / "runs"))
    return viewer, widget


def test_one_epoch_on_kvasir_layers(dock, wait_idle, tmp_path, qtbot):
    viewer, widget = _setup(dock, tmp_path, epochs=1)
    form = widget._param_forms["pm_dice"]
    form.editors["gamma"].setText("2.0")
    n_layers = len(viewer.layers)
    widget.start()
    assert widget.busy and not widget.start_button.isEnabled()
    wait_idle(widget, timeout=120_000)
    assert not widget.status.is_error, widget.status.text()

    done = widget.last_result
    assert isinstance(done, TrainDone) and not done.stopped
    ckpt = Path(done.checkpoint)
    assert ckpt.is_file()
    run_dir = Path(done.run_dir)
    assert (run_dir / "metrics.csv").is_file() and (run_dir / "config.yaml").is_file()
    assert "gamma: 2.0" in (run_dir / "config.yaml").read_text()
    # live plot got the step losses and the epoch point (epoch 1)
    assert len(widget.plot.steps) >= 1
    assert [e["epoch"] for e in widget.plot.epochs] == [1]
    assert 0.0 <= widget.plot.epochs[0]["val_dice"] <= 1.0
    # shared with the Predict panel at once
    assert CHECKPOINTS.paths()[0] == ckpt.resolve()
    _, predict = dock("Predict & Compare", viewer)
    assert predict.ckpt_picker.path() == ckpt.resolve()
    assert len(viewer.layers) == n_layers  # training adds no layers
    assert widget.start_button.isEnabled() and not widget.stop_button.isEnabled()


def test_fine_tune_from_checkpoint(dock, wait_idle, tmp_path, tiny_checkpoint):
    from napari_segloss.engine.checkpoint import load_checkpoint

    _viewer, widget = _setup(dock, tmp_path, epochs=1)
    widget.model_combo.setCurrentText("fine-tune checkpoint")
    widget.ckpt_picker.set_path(tiny_checkpoint)
    cfg, datasets, init = widget.build_config()
    assert init == tiny_checkpoint
    # the architecture comes from the checkpoint, not from the (ignored) new-model widgets
    assert cfg.model.encoder == "resnet18" and cfg.model.kwargs["encoder_depth"] == 3
    assert len(datasets[0]) == 1 and len(datasets[1]) == 1  # one 2D image: train = val
    widget.start()
    wait_idle(widget, timeout=120_000)
    assert not widget.status.is_error, widget.status.text()
    meta = load_checkpoint(widget.last_result.checkpoint)["meta"]
    assert meta["model_kwargs"]["decoder_channels"] == [16, 8, 8]


def test_stop_mid_training_keeps_the_model(dock, wait_idle, tmp_path, qtbot):
    _viewer, widget = _setup(dock, tmp_path, epochs=500)
    widget.start()
    qtbot.waitUntil(lambda: len(widget.plot.steps) >= 1 or not widget.busy, timeout=120_000)
    assert widget.busy, widget.status.text()  # still training after its first step
    widget.stop()
    wait_idle(widget, timeout=60_000)
    done = widget.last_result
    assert done is not None and done.stopped
    assert done.epochs < 500
    assert Path(done.checkpoint).is_file()
    assert CHECKPOINTS.paths()[0] == Path(done.checkpoint).resolve()
    assert "stopped" in widget.status.text()


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        ("no_mask", "mask: no layer selected"),
        ("shape_mismatch", "expected the same shape"),
        ("no_folder", "folder: expected an existing folder"),
        ("no_checkpoint", "checkpoint: none chosen"),
        ("bad_param", "pm_dice parameter gamma"),
    ],
)
def test_bad_selections_show_a_message(dock, tmp_path, setup, message):
    viewer, widget = dock(NAME)
    viewer.add_image(np.zeros((32, 32), dtype=np.uint8), name="img")
    if setup != "no_mask":
        shape = (32, 33) if setup == "shape_mismatch" else (32, 32)
        viewer.add_labels(np.zeros(shape, dtype=np.uint8), name="mask")
    if setup == "no_folder":
        widget.source_combo.setCurrentText("folder")
        widget.folder_edit.setText(str(tmp_path / "missing"))
    if setup == "no_checkpoint":
        widget.model_combo.setCurrentText("fine-tune checkpoint")
    if setup == "bad_param":
        widget.loss_combo.setCurrentText("pm_dice")
        widget._param_forms["pm_dice"].editors["gamma"].setText("two")
    widget.output_edit.setText(str(tmp_path / "runs"))
    widget.start()
    assert not widget.busy
    assert widget.status.is_error
    assert message in widget.status.text()


def test_layer_pairs_and_split():
    vol = np.zeros((5, 4, 4))
    masks = np.zeros((5, 4, 4), dtype=np.uint8)
    imgs, msks = layer_pairs(vol, masks, rgb=False)
    assert len(imgs) == 5 and imgs[0].shape == (4, 4)
    (ti, _), (vi, _) = split_pairs(imgs, msks, 0.2)
    assert len(ti) == 4 and len(vi) == 1
    rgb = np.zeros((4, 4, 3))
    imgs, _ = layer_pairs(rgb, masks[0], rgb=True)
    assert len(imgs) == 1
    (ti, _), (vi, _) = split_pairs(imgs, [masks[0]], 0.2)
    assert ti is vi  # one pair: fine-tune and validate on the image in view

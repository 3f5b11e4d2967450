"""Train / Fine-tune panel: tiny runs on the bundled Kvasir sample, its progress bars (its own and
napari's activity), Stop, and messages for bad selections."""

from __future__ import annotations

import gc
import math
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from napari.utils import progress as napari_progress

from napari_segloss._widgets._state import CHECKPOINTS
from napari_segloss._widgets.train_panel import eta_seconds, format_duration
from napari_segloss.engine.events import TrainDone, TrainStart
from napari_segloss.samples import load_sample

NAME = "Train / Fine-tune"


def _setup(dock, qtbot, tmp_path, *, epochs: int, frames: int = 1):
    """The panel on the Kvasir sample (``frames`` > 1: a stack of its flipped copies)."""
    image, mask = load_sample("kvasir", 0)
    if frames > 1:
        flips = [(slice(None), slice(None)), (slice(None), slice(None, None, -1))]
        flips += [(slice(None, None, -1), f[1]) for f in flips]
        image = np.stack([image[flips[i % 4]] for i in range(frames)])
        mask = np.stack([mask[flips[i % 4]] for i in range(frames)])
    viewer, widget = dock(NAME)
    viewer.add_image(image, name="frame")
    viewer.add_labels(mask, name="polyp")
    qtbot.waitUntil(lambda: widget.ready, timeout=60_000)  # the loss list loads in a worker
    widget.arch.value = "Unet"
    widget.encoder.value = "resnet18"
    widget.image_size.value = 64  # small and fast
    widget.epochs.value = epochs
    widget.batch_size.value = 1
    widget.device.value = "cpu"
    widget.loss.value = "pm_dice"
    widget.runs_folder.value = tmp_path / "runs"
    return viewer, widget


@pytest.fixture
def activity_values():
    """Every value napari's activity progress objects report while the test runs (what the
    activity dock's bars are connected to), by description."""
    seen: dict[str, list[int]] = {}

    def on_change(event) -> None:
        for prog in event.added:
            values = seen.setdefault(prog.desc, [])
            prog.events.value.connect(lambda ev, values=values: values.append(ev.value))

    napari_progress._all_instances.events.changed.connect(on_change)
    yield seen
    napari_progress._all_instances.events.changed.disconnect(on_change)


def test_one_epoch_on_kvasir_layers(dock, wait_idle, tmp_path, qtbot, activity_values):
    viewer, widget = _setup(dock, qtbot, tmp_path, epochs=2)
    widget.param_form("pm_dice").editors["gamma"].setText("2.0")
    # a mask layer that names its classes (as the samples do): the run keeps the names
    viewer.layers["polyp"].metadata["class_names"] = ["background", "polyp"]
    n_layers = len(viewer.layers)
    # no empty plot (and no matplotlib paint) until a run starts
    assert widget.plot.isHidden()
    widget.start()
    assert widget.busy and not widget.start_button.isEnabled()
    assert not widget.plot.isHidden()
    # no full collection while the worker imports smp and builds the model (_gc)
    assert not gc.isenabled()
    wait_idle(widget, timeout=120_000)
    assert not widget.status.is_error, widget.status.text()
    assert gc.isenabled()

    done = widget.last_result
    assert isinstance(done, TrainDone) and not done.stopped
    ckpt = Path(done.checkpoint)
    assert ckpt.is_file()
    run_dir = Path(done.run_dir)
    assert (run_dir / "metrics.csv").is_file() and (run_dir / "config.yaml").is_file()
    assert "gamma: 2.0" in (run_dir / "config.yaml").read_text()
    from napari_segloss.engine.checkpoint import load_checkpoint

    meta = load_checkpoint(ckpt)["meta"]
    assert meta["class_names"] == ["background", "polyp"]  # for Predict's table and CSV
    # the panel's own bar: at its maximum (every step of both epochs) when training ends
    bar = widget.progress
    assert bar.maximum() == done.iteration > 0
    assert bar.value() == bar.maximum()
    assert bar.text() == f"done: 2 epochs, {done.iteration} steps"
    # napari's activity progress advanced step by step to the total, then closed
    values = activity_values["segloss training"]
    assert values[-1] == done.iteration and len(set(values)) >= 2, values
    assert values == sorted(values)
    assert not any(p.desc == "segloss training" for p in napari_progress._all_instances)
    # live plot got the step losses and the epoch points, and draws them all at the end
    assert len(widget.plot.steps) >= 2
    assert [e["epoch"] for e in widget.plot.epochs] == [1, 2]
    assert len(widget.plot._l_step.get_xdata()) == len(widget.plot.steps)
    assert list(widget.plot._l_dice.get_xdata()) == [1, 2]
    assert 0.0 <= widget.plot.epochs[0]["val_dice"] <= 1.0
    # the best weights shared with the Predict panel at once
    best = Path(done.best_checkpoint).resolve()
    assert CHECKPOINTS.paths()[0] == best and best.name == "best.pt"
    _, predict = dock("Predict & Compare", viewer)
    assert predict.ckpt_picker.path() == best
    assert len(viewer.layers) == n_layers  # training adds no layers
    assert widget.start_button.isEnabled() and not widget.stop_button.isEnabled()


def test_size_zero_reads_native(dock, qtbot, tmp_path):
    """The size box at 0 says "native" (not a bare 0) and asks for no resize; a size is a
    whole number of pixels."""
    _viewer, widget = _setup(dock, qtbot, tmp_path, epochs=1)
    line = widget.image_size.native.lineEdit()
    assert line.text() == "64"
    assert widget.request().size == 64 and isinstance(widget.request().size, int)
    widget.image_size.value = 0
    assert line.text() == "native"
    assert widget.request().size is None


def test_fine_tune_from_checkpoint(dock, wait_idle, qtbot, tmp_path, tiny_checkpoint):
    from napari_segloss.engine.checkpoint import load_checkpoint
    from napari_segloss.engine.prepare import prepare_request

    _viewer, widget = _setup(dock, qtbot, tmp_path, epochs=1)
    widget.start_from.value = "fine-tune checkpoint"
    widget.ckpt_picker.set_path(tiny_checkpoint)
    run = prepare_request(widget.request())
    assert run.init_checkpoint == tiny_checkpoint
    # the architecture comes from the checkpoint, not from the (ignored) new-model widgets
    assert run.config.model.encoder == "resnet18" and run.config.model.kwargs["encoder_depth"] == 3
    assert len(run.datasets[0]) == 1 and len(run.datasets[1]) == 1  # one 2D image: train = val
    widget.start()
    wait_idle(widget, timeout=120_000)
    assert not widget.status.is_error, widget.status.text()
    meta = load_checkpoint(widget.last_result.checkpoint)["meta"]
    assert meta["model_kwargs"]["decoder_channels"] == [16, 8, 8]


def test_train_from_a_folder(dock, wait_idle, qtbot, tmp_path):
    from napari_segloss.samples import sample_pairs_dir

    _viewer, widget = _setup(dock, qtbot, tmp_path, epochs=1)
    widget.source.value = "folder"
    widget.folder.value = sample_pairs_dir("kvasir_train")  # 32 bundled pairs
    widget.image_size.value = 32
    widget.batch_size.value = 8
    widget.start()
    wait_idle(widget, timeout=120_000)
    assert not widget.status.is_error, widget.status.text()
    done = widget.last_result
    config = (Path(done.run_dir) / "config.yaml").read_text()
    assert "kind: folder" in config and "kvasir_train" in config
    assert widget.progress.value() == widget.progress.maximum() == done.iteration


def test_predict_is_offered_the_best_weights(dock, wait_idle, qtbot, tmp_path):
    """The status reports the best val Dice: Predict & Compare must get those weights
    (best.pt, as segloss train names them), not the last epoch's checkpoint.pt."""
    viewer, widget = _setup(dock, qtbot, tmp_path, epochs=2)
    widget.start()
    wait_idle(widget, timeout=120_000)
    done = widget.last_result
    assert done is not None and done.validated and not done.stopped, widget.status.text()
    best = Path(done.best_checkpoint)
    assert best.name == "best.pt" and f"; checkpoint {best}" in widget.status.text()
    _, predict = dock("Predict & Compare", viewer)
    assert predict.ckpt_picker.path() == best.resolve()


def test_training_without_validation_says_so(dock, wait_idle, qtbot, tmp_path):
    from napari_segloss.samples import sample_pairs_dir

    _viewer, widget = _setup(dock, qtbot, tmp_path, epochs=1)
    widget.source.value = "folder"
    widget.folder.value = sample_pairs_dir("kvasir_train")
    widget.image_size.value = 32
    widget.batch_size.value = 8
    widget.val_fraction.value = 0.0  # nothing held out: no Dice chooses the weights
    widget.start()
    wait_idle(widget, timeout=120_000)
    assert not widget.status.is_error, widget.status.text()
    assert not widget.last_result.validated
    assert "no validation (best.pt holds the last weights)" in widget.status.text()


def test_the_start_notes_stay_under_the_status(dock, wait_idle, qtbot, tmp_path, monkeypatch):
    """What the engine adapted to this machine (``TrainStart.notes``): ``segloss train`` prints
    them, the panel said nothing. Now a line each under the status (which changes every epoch),
    until the next Start; nothing about mixed precision, which the panel has no setting for."""
    import dataclasses

    import torch

    from napari_segloss._widgets import train_panel

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # device auto: the CPU
    note = "train.num_workers 4 lowered to 2: this process may use 2 CPU core(s)"
    real = train_panel.run_training

    def with_a_note(request, stop):  # the panel loads in-memory layers: no worker to lower
        for ev in real(request, stop):
            if isinstance(ev, TrainStart) and request.device == "auto":
                ev = dataclasses.replace(ev, notes=(*ev.notes, note))
            yield ev

    monkeypatch.setattr(train_panel, "run_training", with_a_note)
    _viewer, widget = _setup(dock, qtbot, tmp_path, epochs=2)
    widget.device.value = "auto"  # asks for mixed precision
    assert widget.notes.isHidden()
    widget.start()
    wait_idle(widget, timeout=120_000)
    assert not widget.status.is_error, widget.status.text()
    assert widget.status.text().startswith("finished: 2 epochs, ")
    assert not widget.notes.isHidden()
    assert widget.notes.text().splitlines() == [f"note: {note}"]
    widget.device.value = "cpu"  # nothing to note: the previous run's notes go at Start
    widget.epochs.value = 1
    widget.start()
    assert widget.notes.isHidden()
    wait_idle(widget, timeout=120_000)
    assert widget.notes.isHidden() and widget.notes.text() == ""


def _activity_bar(viewer):
    from napari._qt.widgets.qt_progress_bar import QtLabeledProgressBar

    dialog = viewer.window._qt_window._activity_dialog
    return next(
        (b for b in dialog.findChildren(QtLabeledProgressBar) if b.progress is not None), None
    )


@pytest.mark.parametrize("how", ["stop button", "napari cancel"])
def test_stop_mid_training_keeps_the_model(dock, wait_idle, tmp_path, qtbot, how):
    viewer, widget = _setup(dock, qtbot, tmp_path, epochs=500)
    widget.start()
    qtbot.waitUntil(lambda: widget.progress.value() >= 2 or not widget.busy, timeout=120_000)
    assert widget.busy, widget.status.text()  # still training after its first steps
    assert widget.progress.text().endswith(" left")  # the time left, once the rate is known
    # the bar in napari's activity dock moves too
    qtbot.waitUntil(lambda: (b := _activity_bar(viewer)) is not None and b._get_value() >= 2)
    if how == "stop button":
        widget.stop_button.click()
    else:
        _activity_bar(viewer).cancel_button.click()
    wait_idle(widget, timeout=60_000)
    done = widget.last_result
    assert done is not None and done.stopped
    assert done.epochs < 500
    assert Path(done.checkpoint).is_file()
    offered = done.best_checkpoint or done.checkpoint
    assert CHECKPOINTS.paths()[0] == Path(offered).resolve()
    # the status and the bar agree on the steps and epochs done; the checkpoint named once
    text, bar = widget.status.text(), widget.progress.text()
    assert text.startswith(f"stopped by request after {done.iteration} of "), text
    epochs = f"({done.epochs} of 500 epochs done)"
    assert epochs in text and epochs in bar, (text, bar)
    assert text.count(str(offered)) == 1 and text.count("; checkpoint ") == 1, text
    # the bar stays where training stopped and says so
    assert widget.progress.value() == done.iteration < widget.progress.maximum()
    assert f"stopped at step {done.iteration}/" in bar
    assert _activity_bar(viewer) is None  # napari's activity entry is closed


def test_stop_during_validation_ends_it_at_the_next_batch(
    dock, wait_idle, tmp_path, qtbot, monkeypatch
):
    """Stop pressed while a long validation runs: the run ends at the next validation image
    with the last step saved, instead of scoring the whole split first."""
    # torch-importing modules are imported by the tests that train, as in the rest of the file
    from napari_segloss.engine import evaluation
    from napari_segloss.engine.checkpoint import load_checkpoint

    real_evaluate, scored, validating = evaluation.evaluate, [], threading.Event()

    def slow_evaluate(*args, **kwargs):  # in the worker thread
        validating.set()
        time.sleep(0.5)
        scored.append(1)
        return real_evaluate(*args, **kwargs)

    monkeypatch.setattr(evaluation, "evaluate", slow_evaluate)
    _viewer, widget = _setup(dock, qtbot, tmp_path, epochs=2, frames=8)
    widget.val_fraction.value = 0.5  # 4 validation frames, one a batch (batch size 1)
    widget.start()
    qtbot.waitUntil(lambda: validating.is_set() or not widget.busy, timeout=120_000)
    assert widget.busy, widget.status.text()
    widget.stop_button.click()
    wait_idle(widget, timeout=60_000)
    done = widget.last_result
    assert done is not None and done.stopped and done.epochs == 0
    assert len(scored) <= 2  # of 4: before, all of them, then epoch 2's first step
    assert "during the validation of epoch 1" in widget.status.text(), widget.status.text()
    ck = load_checkpoint(done.checkpoint)
    assert (ck["epoch"], ck["iteration"]) == (0, done.iteration) and ck["epoch_step"] > 0


def test_closing_the_panel_stops_training(dock, wait_idle, tmp_path, qtbot):
    """napari's close button only takes the panel out of its dock (no closeEvent): the run
    must stop all the same, not train on with no panel left to stop it."""
    _, widget = _setup(dock, qtbot, tmp_path, epochs=500)
    widget.start()
    qtbot.waitUntil(lambda: widget.progress.value() >= 2 or not widget.busy, timeout=120_000)
    assert widget.busy, widget.status.text()
    widget.parent().title.close_button.click()  # the dock's "x"
    assert widget.parent() is None  # the panel is gone from the window
    wait_idle(widget, timeout=60_000)
    done = widget.last_result
    assert done is not None and done.stopped and done.epochs < 500


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        ("no_mask", "mask: no layer selected"),
        # napari's reader opens mask.png as an Image layer: the mask seemed to be there
        ("mask_as_image", "mask: no Labels layer to pick; a mask opened as an image ('mask.png'?)"),
        ("shape_mismatch", "expected the same shape"),
        ("no_folder", "folder: expected an existing folder"),
        ("no_checkpoint", "checkpoint: none chosen"),
        ("bad_param", "pm_dice parameter gamma"),
    ],
)
def test_bad_selections_show_a_message(dock, qtbot, tmp_path, setup, message):
    viewer, widget = dock(NAME)
    viewer.add_image(np.zeros((32, 32), dtype=np.uint8), name="img")
    if setup == "mask_as_image":
        viewer.add_image(
            np.repeat([0, 255], 16 * 32).astype(np.uint8).reshape(32, 32), name="mask.png"
        )
    elif setup != "no_mask":
        shape = (32, 33) if setup == "shape_mismatch" else (32, 32)
        viewer.add_labels(np.zeros(shape, dtype=np.uint8), name="mask")
    qtbot.waitUntil(lambda: widget.ready, timeout=60_000)
    if setup == "no_folder":
        widget.source.value = "folder"
        widget.folder.value = tmp_path / "missing"
    if setup == "no_checkpoint":
        widget.start_from.value = "fine-tune checkpoint"
    if setup == "bad_param":
        widget.loss.value = "pm_dice"
        widget.param_form("pm_dice").editors["gamma"].setText("two")
    widget.runs_folder.value = tmp_path / "runs"
    widget.start()
    assert not widget.busy
    assert widget.status.is_error
    assert message in widget.status.text()
    assert widget.progress.text() == "not started"


def test_engine_refusal_is_shown_and_the_bar_says_failed(dock, wait_idle, qtbot, tmp_path):
    """A checkpoint that does not fit the data is refused by the engine (in the worker)."""
    viewer, widget = dock(NAME)
    viewer.add_image(np.zeros((32, 32), dtype=np.uint8), name="grey")
    viewer.add_labels(np.zeros((32, 32), dtype=np.uint8), name="mask")
    qtbot.waitUntil(lambda: widget.ready, timeout=60_000)
    bad = tmp_path / "not-a-checkpoint.pt"
    bad.write_bytes(b"nonsense")
    widget.start_from.value = "fine-tune checkpoint"
    widget.ckpt_picker.set_path(bad)
    widget.runs_folder.value = tmp_path / "runs"
    widget.start()
    wait_idle(widget, timeout=60_000)
    assert widget.status.is_error
    assert (
        "training failed" in widget.status.text() and "not-a-checkpoint.pt" in widget.status.text()
    )
    assert "failed" in widget.progress.text()
    assert widget.start_button.isEnabled()
    assert widget.plot.isHidden()  # nothing was trained: no empty plot under the message


def test_forms_come_from_the_config_models(dock, qtbot):
    from napari_segloss.engine.config import DataConfig, OptimConfig, TrainSection

    _, widget = dock(NAME)
    # bounds and choices of the pydantic fields
    assert widget.epochs.min == TrainSection.model_fields["epochs"].metadata[0].ge == 1
    assert widget.folder_kind.choices == ("folder", "nifti")
    assert widget.lr.min > 0 and widget.lr.value == OptimConfig().lr  # gt=0, default 5e-4
    assert widget.val_fraction.max < 1  # lt=1
    assert DataConfig.model_fields["val_fraction"].metadata[-1].lt == 1
    qtbot.waitUntil(lambda: widget.ready, timeout=60_000)
    assert widget.loss.value == "pm_dice" and "ce+pm_dice" in widget.loss.choices
    widget.loss.value = "ce+pm_dice"  # the shared magicgui loss form follows
    assert "weight__ce" in widget.param_form("ce+pm_dice").widgets
    assert widget.loss_params.currentWidget() is widget.param_form("ce+pm_dice")


def test_duration_and_time_left():
    assert format_duration(42.4) == "42 s"
    assert format_duration(187) == "3:07"
    assert format_duration(3723) == "1:02:03"
    assert eta_seconds(0, 10, 5.0) is None  # no rate yet
    assert eta_seconds(2, 10, 4.0) == pytest.approx(16.0)
    assert eta_seconds(10, 10, 4.0) == 0.0


def test_panel_opens_without_torch(modules_after_import):
    """Importing the panel imports neither torch nor the engine's loop (the window would freeze
    while they load): they come in the panel's workers. Checked in a fresh interpreter."""
    modules = modules_after_import("napari_segloss._widgets.train_panel")
    assert not any(m == "torch" or m.startswith("torch.") for m in modules), modules
    assert "napari_segloss.engine.training" not in modules
    assert "napari_segloss.engine.request" in modules  # plain values: main thread


@pytest.mark.parametrize("start", ["new model", "fine-tune checkpoint"])
def test_mask_labels_that_do_not_fit_are_refused(
    dock, wait_idle, qtbot, tmp_path, tiny_checkpoint, start
):
    """A binary mask saved as {0, 9} trained to "completed" with 8 empty classes (new model);
    a binary checkpoint must refuse label 9 as ``segloss train`` does, naming the layer."""
    viewer, widget = _setup(dock, qtbot, tmp_path, epochs=1)
    polyp = viewer.layers["polyp"]
    viewer.add_labels((np.asarray(polyp.data) > 0).astype(np.uint8) * 9, name="mask9")
    widget.mask_picker.set_layer(viewer.layers["mask9"])
    if start == "fine-tune checkpoint":
        widget.start_from.value = start
        widget.ckpt_picker.set_path(tiny_checkpoint)
    widget.start()
    wait_idle(widget, timeout=120_000)
    text = widget.status.text()
    assert widget.status.is_error and widget.last_result is None, text
    assert "layer 'mask9'" in text and "mask > 0" in text, text
    if start == "new model":
        assert "labels {0, 9}, expected 0..N-1" in text and "10 classes" in text, text
    else:
        assert "has label 9 but the model predicts 2 classes (labels 0..1)" in text, text
    assert "failed" in widget.progress.text()


def test_mask_label_check():
    from napari_segloss.data.pairs import check_mask_labels, mask_labels

    assert mask_labels(np.array([[0, 3], [1, 3]], dtype=np.uint8)) == [0, 1, 3]
    assert mask_labels(np.array([0, 70000])) == [0, 70000]
    check_mask_labels([0, 1, 2], "m")  # contiguous: fine
    check_mask_labels([0], "m")  # empty: refused later, by the training-set check
    check_mask_labels([0, 2], "m", model_classes=3)  # the checkpoint's classes define them
    with pytest.raises(ValueError, match=r"labels \{0, 1, 3\}.*never in the mask \(\{2\}\)"):
        check_mask_labels([0, 1, 3], "m")
    with pytest.raises(ValueError, match="has label 3 but the model predicts 3 classes"):
        check_mask_labels([0, 3], "m", model_classes=3)


def test_the_result_scrolls_into_view_with_another_panel_docked(
    make_napari_viewer, dock, wait_idle, qtbot, tmp_path
):
    # with two panels docked the status (checkpoint, Dice) sat below the panel's visible part
    viewer = make_napari_viewer(show=True)
    viewer.window._qt_window.resize(1600, 1000)
    dock("Predict & Compare", viewer)
    image, mask = load_sample("kvasir", 0)
    viewer.add_image(image, name="frame")
    viewer.add_labels(mask, name="polyp")
    _, widget = dock(NAME, viewer)
    qtbot.waitUntil(lambda: widget.ready, timeout=60_000)
    widget.encoder.value = "resnet18"
    widget.image_size.value = 64
    widget.epochs.value = 1
    widget.batch_size.value = 1
    widget.device.value = "cpu"
    widget.runs_folder.value = tmp_path / "runs"
    qtbot.wait(100)
    assert widget.status.visibleRegion().isEmpty()  # the situation: below the fold
    widget.start()
    wait_idle(widget, timeout=120_000)
    assert widget.last_result is not None, widget.status.text()
    qtbot.wait(100)
    assert not widget.status.visibleRegion().isEmpty(), widget.status.text()


def test_a_removed_layer_replaced_in_a_picker_is_announced(dock, wait_idle, qtbot, tmp_path):
    """Removing the picked mask makes its picker select another Labels layer: the status says
    which (the next Start would train on it), and mid-run that the run keeps its data."""
    viewer, widget = _setup(dock, qtbot, tmp_path, epochs=500)
    other = viewer.add_labels(np.zeros_like(viewer.layers["polyp"].data), name="scribbles")
    widget.mask_picker.set_layer(viewer.layers["polyp"])
    viewer.layers.remove("polyp")
    assert widget.mask_picker.layer().name == other.name
    text = widget.status.text()
    assert text == "layer 'polyp' was removed: mask is now 'scribbles'", text
    # removing a layer no picker shows says nothing about the pickers
    viewer.add_labels(np.zeros((4, 4), np.uint8), name="unused")
    widget.status.info("")
    viewer.layers.remove("unused")
    assert widget.status.text() == ""

    viewer.add_labels(viewer.layers["scribbles"].data.copy(), name="polyp again")
    viewer.layers["polyp again"].data[100:150, 100:150] = 1
    widget.mask_picker.set_layer(viewer.layers["polyp again"])
    widget.start()
    qtbot.waitUntil(lambda: widget.progress.value() >= 1 or not widget.busy, timeout=120_000)
    assert widget.busy, widget.status.text()
    viewer.layers.remove("frame")
    text = widget.status.text()
    assert "layer 'frame' was removed: no image picked" in text, text
    assert "the run goes on with the data it took at Start" in text, text
    widget.stop()
    wait_idle(widget, timeout=60_000)
    assert widget.last_result is not None and widget.last_result.stopped


def test_gpu_out_of_memory_says_what_to_lower(dock, wait_idle, qtbot, tmp_path, monkeypatch):
    import torch

    from napari_segloss.engine import prepare
    from napari_segloss.engine.events import OUT_OF_MEMORY_HINTS

    def full(request):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 ...")

    monkeypatch.setattr(prepare, "prepare_request", full)
    _, widget = _setup(dock, qtbot, tmp_path, epochs=1)
    widget.start()
    wait_idle(widget, timeout=60_000)
    assert widget.status.is_error and "failed" in widget.progress.text()
    expected = "CUDA out of memory. Tried to allocate 2.00 GiB: " + OUT_OF_MEMORY_HINTS["train"]
    assert widget.status.text() == f"training failed: {expected}"  # before: OutOfMemoryError: ..


def test_the_runs_folder_shows_its_whole_path_on_hover(dock, tmp_path):
    # the box shows the end of a long path ("t/napari-segloss-runs")
    _, widget = dock(NAME)
    assert widget.runs_folder.tooltip.endswith(str(Path.home() / "napari-segloss-runs"))
    widget.runs_folder.value = tmp_path / "somewhere" / "runs"
    assert widget.runs_folder.tooltip.endswith(str(tmp_path / "somewhere" / "runs"))


def test_the_live_plot_redraws_at_most_every_interval(qtbot):
    """A fast run makes several steps per event-loop turn: the lines follow the data once per
    REDRAW_MS (each draw holds the main thread), and at once on flush."""
    from napari_segloss._widgets._plot import LivePlot

    plot = LivePlot()
    qtbot.addWidget(plot)
    plot.show()
    draws: list[object] = []
    plot.mpl_connect("draw_event", draws.append)
    for i in range(50):
        plot.add_step(i / 50, 1.0 - i / 100)
    assert len(plot._l_step.get_xdata()) == 0  # not yet: one redraw for the whole burst
    qtbot.waitUntil(lambda: len(plot._l_step.get_xdata()) == 50, timeout=3 * plot.REDRAW_MS)
    qtbot.waitUntil(lambda: len(draws) >= 1, timeout=2000)
    n = len(draws)
    plot.add_epoch(1, 0.5, 0.6, 0.7)
    plot.flush()
    assert list(plot._l_dice.get_ydata()) == [0.7]
    qtbot.wait(plot.REDRAW_MS + 200)
    assert len(draws) == n + 1  # the flush's draw; the timer it stopped drew nothing more


def test_the_live_plot_shows_a_one_epoch_run_whole(qtbot):
    """One epoch: the validation point is not under the legend (before: the legend sat in the
    loss plot's upper right, where a first val loss above the train loss lands), and the epoch
    axis reads whole epochs from 0 (before: "0.95 1.00 1.05")."""
    from napari_segloss._widgets._plot import LivePlot

    plot = LivePlot()
    qtbot.addWidget(plot)
    plot.resize(400, 260)
    plot.show()
    for i in range(1, 9):
        plot.add_step(i / 8, 0.97 - i / 100)
    plot.add_epoch(1, 0.69, 0.9588, 0.6)
    plot.flush()
    plot.draw()
    renderer = plot.figure.canvas.get_renderer()
    (legend,) = plot.figure.legends
    for ax in (plot.ax_loss, plot.ax_dice):
        assert not legend.get_window_extent(renderer).overlaps(ax.get_window_extent(renderer))
        lo, hi = ax.get_xlim()
        assert lo <= 0 < 1 < hi
        ticks = [t for t in ax.get_xticks() if lo <= t <= hi]
        assert ticks and all(float(t).is_integer() for t in ticks), ticks
    lo, hi = plot.ax_loss.get_ylim()
    assert lo < 0.69 and 0.9588 < hi


def test_steps_show_on_the_bars_at_the_next_turn_latest_first(dock, qtbot, tmp_path):
    """``QProgressBar.setValue`` repaints at once: a burst of step events moves the panel's
    bar and napari's activity bar once, to the latest step, in a turn of their own."""
    from napari_segloss.engine.events import TrainStep

    _, widget = dock(NAME)
    qtbot.waitUntil(lambda: widget.ready, timeout=60_000)  # the loss list loads in a worker
    start = TrainStart(
        run_dir=tmp_path, max_iterations=10, device="cpu", epoch=0, iteration=0,
        train_size=4, val_size=1,
    )  # fmt: skip
    widget.progress.preparing(2)
    widget._on_start(start)
    for i in (1, 2, 3):
        widget._on_step(TrainStep(epoch=1, iteration=i, max_iterations=10, loss=0.5, lr=1e-3))
    assert widget.progress.value() == 0 and widget._activity.n == 0
    qtbot.waitUntil(lambda: widget.progress.value() == 3, timeout=2000)
    assert widget._activity.n == 3
    assert len(widget.plot.steps) == 3  # every step's loss is kept for the plot
    # a step still waiting when the run fails is shown first: "failed" stays
    widget._on_step(TrainStep(epoch=1, iteration=4, max_iterations=10, loss=0.5, lr=1e-3))
    widget._on_error(ValueError("the data ran out"))
    widget._on_finished()
    qtbot.wait(50)
    assert widget.progress.value() == 4 and "failed" in widget.progress.text()


def test_a_grey_volume_is_said_to_train_as_slices(dock, wait_idle, qtbot, tmp_path):
    """The panel trains 2D networks: a volume's slices become 2D images, which it did without
    a word (a 3D user expected a 3D network)."""
    image, labels = load_sample("acdc")
    viewer, widget = dock(NAME)
    viewer.add_image(image, name="mri")
    viewer.add_labels(labels, name="heart")
    qtbot.waitUntil(lambda: widget.ready, timeout=60_000)
    widget.arch.value, widget.encoder.value = "Unet", "resnet18"
    widget.image_size.value, widget.epochs.value, widget.batch_size.value = 64, 1, 2
    widget.device.value = "cpu"
    widget.runs_folder.value = tmp_path / "runs"
    widget.start()
    wait_idle(widget, timeout=120_000)
    assert not widget.status.is_error, widget.status.text()
    assert not widget.notes.isHidden()
    assert (
        f"note: the volume's {image.shape[0]} slices are trained as 2D images by a 2D network"
        in widget.notes.text()
    )


def test_a_3d_checkpoint_is_refused_with_what_to_run(dock, qtbot, tmp_path, tiny_3d_checkpoint):
    """Fine-tuning a UNet3D checkpoint failed in the worker with a message about data.slices,
    a config key the panel has no control for."""
    from napari_segloss.engine.prepare import prepare_request

    image, labels = load_sample("acdc")
    viewer, widget = dock(NAME)
    viewer.add_image(image, name="mri")
    viewer.add_labels(labels, name="heart")
    qtbot.waitUntil(lambda: widget.ready, timeout=60_000)
    widget.start_from.value = "fine-tune checkpoint"
    ckpt = tiny_3d_checkpoint(tmp_path / "unet3d.pt")
    widget.ckpt_picker.set_path(ckpt)
    with pytest.raises(ValueError) as err:
        prepare_request(widget.request())
    text = str(err.value)
    assert "checkpoint 'unet3d.pt' is a 3D network (UNet3D); this panel trains 2D networks" in text
    assert f"segloss train --config <its run folder>/config.yaml --init-checkpoint {ckpt}" in text


def test_a_run_leaves_the_checkpoint_to_tune_and_a_later_failure_still_says_so(
    dock, wait_idle, qtbot, tmp_path, tiny_checkpoint
):
    """After a fine-tuning run the picker held the new run's best.pt (a second Start tuned the
    tuned model); a refusal after a finished run left the bar blank (no 'failed')."""
    _viewer, widget = _setup(dock, qtbot, tmp_path, epochs=1)
    widget.start_from.value = "fine-tune checkpoint"
    widget.ckpt_picker.set_path(tiny_checkpoint)
    widget.start()
    wait_idle(widget, timeout=120_000)
    assert not widget.status.is_error, widget.status.text()
    assert widget.status.text().startswith("finished: 1 epoch, 1 step, "), widget.status.text()
    assert widget.progress.text() == "done: 1 epoch, 1 step"
    assert widget.ckpt_picker.path() == tiny_checkpoint  # the new best.pt is in the list only
    bad = tmp_path / "not-a-checkpoint.pt"
    bad.write_bytes(b"nonsense")
    widget.ckpt_picker.set_path(bad)
    widget.start()
    wait_idle(widget, timeout=60_000)
    assert widget.status.is_error and widget.progress.text() == "failed (see the message below)"


def test_a_stop_before_the_first_step_shows_no_empty_plot(
    dock, wait_idle, qtbot, tmp_path, monkeypatch
):
    from napari_segloss.engine import prepare

    real_prepare, preparing, go = prepare.prepare_request, threading.Event(), threading.Event()

    def slow_prepare(request):  # in the worker: Stop is pressed meanwhile
        preparing.set()
        go.wait(30)
        return real_prepare(request)

    monkeypatch.setattr(prepare, "prepare_request", slow_prepare)
    _, widget = _setup(dock, qtbot, tmp_path, epochs=1)
    widget.start()
    qtbot.waitUntil(preparing.is_set, timeout=30_000)
    widget.stop_button.click()
    go.set()
    wait_idle(widget, timeout=60_000)
    text = widget.status.text()
    assert widget.last_result.stopped and "no step ran, nothing was written" in text, text
    assert "nothing saved" not in text  # said once
    assert widget.plot.isHidden()


def test_the_live_plot_says_there_is_no_validation(qtbot):
    """Validation 0: the 'val mean Dice' axes stayed empty with nothing saying why; the
    validation Dice was green while the legend's validation is orange."""
    from napari_segloss._widgets._plot import LivePlot

    plot = LivePlot()
    qtbot.addWidget(plot)
    plot.add_epoch(1, 0.5, math.nan, math.nan)
    plot.flush()
    assert plot._no_val.get_text() == "no validation\n(validation 0)"
    assert plot._l_dice.get_color() == plot._l_val.get_color()
    plot.clear()
    plot.add_epoch(1, 0.5, 0.6, 0.7)
    plot.flush()
    assert plot._no_val.get_text() == ""

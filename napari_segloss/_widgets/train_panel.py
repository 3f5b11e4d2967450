"""Train / Fine-tune panel: train or fine-tune a model on napari layers or a data folder.

The forms are magicgui widgets built from the config models (``TrainSection.epochs``,
``OptimConfig.lr``, ...) and the shared loss-parameter form. Start turns them into a
:class:`napari_segloss.engine.request.TrainRequest` (main thread, plain values); a napari
generator worker then prepares the run (:func:`napari_segloss.engine.prepare.prepare_request`:
data, model, config) and runs :func:`napari_segloss.engine.training.iter_train`, whose typed
events move the panel's own progress bar (steps, epoch, time left), napari's activity progress
and the live plot (hidden until the first Start). The start's notes (``TrainStart.notes``: what
the run adapted to this machine) stay under the status for the whole run. Stop (or Cancel in
napari's activity dock) ends training at the next step, or at the next batch of a validation
or the final evaluation; the model trained so far is saved. Finished checkpoints are
registered in :data:`._state.CHECKPOINTS`, so the Predict & Compare panel offers them at once.

torch is imported in the workers only (the loss list and the GPUs are loaded in one when the
panel opens), so opening the panel never freezes the window.
"""

from __future__ import annotations

import contextlib
import functools
import math
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from magicgui.widgets import ComboBox, FileEdit
from napari.layers import Image, Labels
from napari.utils import cancelable_progress
from qtpy.QtWidgets import (
    QCompleter,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from napari_segloss.engine.config import DataConfig, ModelConfig, OptimConfig, TrainSection
from napari_segloss.engine.events import (
    OUT_OF_MEMORY_HINTS,
    TrainDone,
    TrainEpoch,
    TrainEvent,
    TrainStart,
    TrainStep,
    out_of_memory_text,
    stopped_text,
)
from napari_segloss.engine.request import LayerData, TrainRequest, masks_folder, run_folder

from .._napari_io import FRAMES_KEY
from ._common import (
    CheckpointPicker,
    LayerPicker,
    PanelError,
    StatusLabel,
    counted,
    device_choices,
    exception_text,
    image_and_mask,
    layer_class_names,
    left_the_window,
    release_gpu_memory,
)
from ._compat import guard_triton, preload_torch_libraries
from ._forms import (
    ARCHS,
    ENCODERS,
    LossParamForm,
    SizeSpinBox,
    config_widget,
    describe_loss_items,
    load_loss_catalog,
    loss_tooltip,
)
from ._gc import CollectorPause
from ._layout import (
    PageStack,
    align_label_columns,
    form_page,
    form_row,
    scroll_to,
    scrollable,
    tab_in_layout_order,
)
from ._plot import LivePlot
from ._state import CHECKPOINTS
from ._workers import new_worker, one_shot_timer

if TYPE_CHECKING:
    import inspect

    import napari

DEFAULT_RUNS_DIR = Path.home() / "napari-segloss-runs"
DEFAULT_LOSS = "pm_dice"
SOURCES = ("layers", "folder")
STARTS = ("new model", "fine-tune checkpoint")

Catalog = dict[str, dict[str, "inspect.Parameter"]]


def _prepare() -> ModuleType:
    """:mod:`napari_segloss.engine.prepare` (torch): imported in the training worker."""
    from napari_segloss.engine import prepare  # heavy: see the module docstring

    return prepare


def _training() -> ModuleType:
    """:mod:`napari_segloss.engine.training` (torch, smp): imported in the training worker."""
    from napari_segloss.engine import training  # heavy: see the module docstring

    return training


def load_choices() -> tuple[Catalog, list[str]]:
    """The loss catalog and the devices (imports torch: run in a worker)."""
    preload_torch_libraries()  # keeps the window responsive while torch loads (see _compat)
    return load_loss_catalog(), device_choices()


def run_training(request: TrainRequest, stop: threading.Event) -> Iterator[TrainEvent]:
    """Prepare ``request`` and train it, yielding the engine's events (the worker's job)."""
    preload_torch_libraries()
    try:
        run = _prepare().prepare_request(request)
        yield from _training().iter_train(
            run.config,
            should_stop=stop.is_set,
            datasets=run.datasets,
            init_checkpoint=run.init_checkpoint,
            progress=False,
        )
    finally:
        release_gpu_memory()


def format_duration(seconds: float) -> str:
    """``"42 s"``, ``"3:07"`` (minutes), ``"1:02:03"`` (hours)."""
    s = max(0, round(seconds))
    if s < 60:
        return f"{s} s"
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f"{h}:{m:02d}:{sec:02d}" if h else f"{m}:{sec:02d}"


def eta_seconds(done: int, total: int, elapsed: float) -> float | None:
    """Time left at the rate so far (``done`` of ``total`` steps in ``elapsed`` s); None
    before the rate is known."""
    if done <= 0 or elapsed <= 0 or total <= done:
        return None if total > done else 0.0
    return (total - done) * elapsed / done


class StoppableProgress(cancelable_progress):
    """napari's activity progress whose Cancel button calls ``cancel_callback`` at once
    (napari calls it only for progress objects that are iterated)."""

    def cancel(self) -> None:
        super().cancel()
        if self.cancel_callback is not None:
            self.cancel_callback()


class TrainProgress(QProgressBar):
    """The panel's progress bar: optimiser steps of the run, epoch and time left."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setTextVisible(True)
        self.epochs = 1
        self._first: tuple[int, float] | None = None  # (iteration, time) of the first step
        self.idle()

    def idle(self) -> None:
        self.setRange(0, 1)
        self.setValue(0)
        self.setFormat("not started")

    def preparing(self, epochs: int) -> None:
        self.epochs = epochs
        self._first = None
        self.setRange(0, 0)  # busy: steps unknown until the data and model are ready
        self.setFormat("preparing the data and the model…")

    def started(self, ev: TrainStart) -> None:
        self.setRange(0, max(ev.max_iterations, 1))
        self.setValue(ev.iteration)
        self.setFormat(f"epoch {ev.epoch + 1}/{self.epochs} · step {ev.iteration}/%m")

    def stepped(self, ev: TrainStep) -> None:
        now = time.monotonic()
        if self._first is None:
            self._first = (ev.iteration, now)  # the rate starts here (the first step warms up)
        self.setValue(min(ev.iteration, self.maximum()))
        done, t0 = ev.iteration - self._first[0], self._first[1]
        eta = eta_seconds(done, ev.max_iterations - self._first[0], now - t0)
        left = "time left …" if eta is None else f"{format_duration(eta)} left"
        self.setFormat(f"epoch {ev.epoch}/{self.epochs} · step %v/%m · {left}")

    def finished(self, ev: TrainDone) -> None:
        if ev.stopped:
            self.setFormat(f"stopped at step %v/%m ({ev.epochs} of {self.epochs} epochs done)")
            return
        self.setValue(self.maximum())
        self.setFormat(f"done: {counted(ev.epochs, 'epoch')}, {counted(self.maximum(), 'step')}")

    def failed(self) -> None:
        if self.maximum() == 0:  # failed while preparing (a busy bar)
            self.setRange(0, 1)
            self.setValue(0)  # Qt draws no text for the value -1 a busy bar leaves
        self.setFormat("failed (see the message below)")


class TrainWidget(QWidget):
    """The "Train / Fine-tune" dock widget (see module docstring)."""

    def __init__(self, napari_viewer: napari.viewer.Viewer, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._opening = CollectorPause(self)  # no full collection while torch loads (_gc)
        self.viewer = napari_viewer
        self._worker: Any = None
        self._stop = threading.Event()
        self._panel_notes: list[str] = []  # the panel's own notes on the run (_volume_note)
        self._activity: StoppableProgress | None = None
        # no full collection from Start to the first step: the worker imports smp and timm
        # and builds the model, which would start some, each freezing the window (_gc)
        self._start_pause: CollectorPause | None = None
        # the latest step, shown at the next event-loop turn (see _on_step)
        self._pending_step: TrainStep | None = None
        self._step_timer = one_shot_timer(self, 0, self._show_step)
        self._catalog: Catalog | None = None
        self._param_forms: dict[str, LossParamForm] = {}
        self.last_result: TrainDone | None = None
        root = QVBoxLayout(scrollable(self))
        root.addWidget(self._data_box())
        root.addWidget(self._model_box())
        root.addWidget(self._loss_box())
        root.addWidget(self._training_box())
        root.addLayout(self._actions_row())
        self.progress = TrainProgress(self)
        root.addWidget(self.progress)
        self.status = StatusLabel(self)
        root.addWidget(self.status)
        # the start's notes stay for the whole run (the status line changes every epoch)
        self.notes = StatusLabel(self)
        self.notes.hide()
        root.addWidget(self.notes)
        self.plot = LivePlot(self)
        self.plot.setMinimumHeight(200)
        # shown from the first Start: an empty plot says nothing, and its first paint (a
        # matplotlib figure) would freeze the window while the panel opens
        self.plot.setVisible(False)
        root.addWidget(self.plot)
        root.addStretch(1)
        tab_in_layout_order(self)
        self.viewer.layers.events.removed.connect(self._on_layer_removed)
        self.status.info("loading the losses…")
        self._loader = new_worker(
            load_choices,
            returned=self._on_choices,
            errored=self._on_load_error,
            finished=self._opening.end,
        )
        self._loader.start()

    # ------------------------------------------------------------------ building the panel
    def _data_box(self) -> QGroupBox:
        box = QGroupBox("Data", self)
        form = QFormLayout(box)
        self.source = ComboBox(label="from", choices=SOURCES, value=SOURCES[0])
        form_row(form, self.source)
        self.data_stack = PageStack(box)
        f = form_page(self.data_stack)
        self.image_picker = LayerPicker(self.viewer, (Image,))
        self.mask_picker = LayerPicker(self.viewer, (Labels,))
        f.addRow("image", self.image_picker)
        f.addRow("mask", self.mask_picker)
        f = form_page(self.data_stack)
        self.folder = FileEdit(mode="d", label="root", nullable=True)
        self.folder.line_edit.native.setPlaceholderText("a folder with images/ and masks/")
        self.folder.choose_btn.text = "Browse…"
        self.folder_kind = config_widget(DataConfig, "kind")
        form_row(f, self.folder)
        form_row(f, self.folder_kind)
        self.source.changed.connect(
            lambda value: self.data_stack.setCurrentIndex(SOURCES.index(value))
        )
        form.addRow(self.data_stack)
        self.image_size = SizeSpinBox(
            special="native", label="size", value=256, min=0, max=2048, step=32,
            tooltip="resize images to size x size for training (0: native size)",
        )  # fmt: skip
        self.val_fraction = config_widget(
            DataConfig, "val_fraction", label="validation", value=0.2, max=0.9, step=0.05,
            tooltip="share kept for validation: the last frames of the layers' stack, or files "
            "of a folder drawn with the seed; 0: no validation; a single image: itself",
        )  # fmt: skip
        form_row(form, self.image_size)
        form_row(form, self.val_fraction)
        align_label_columns(box)
        return box

    def _model_box(self) -> QGroupBox:
        box = QGroupBox("Model", self)
        form = QFormLayout(box)
        self.start_from = ComboBox(label="start from", choices=STARTS, value=STARTS[0])
        form_row(form, self.start_from)
        self.model_stack = PageStack(box)
        f = form_page(self.model_stack)
        self.arch = config_widget(
            ModelConfig, "arch", label="architecture", widget_type="ComboBox", choices=ARCHS
        )
        self.encoder = config_widget(ModelConfig, "encoder", tooltip="any smp encoder name")
        self.encoder.native.setCompleter(QCompleter(list(ENCODERS), self.encoder.native))
        self.encoder_weights = config_widget(
            ModelConfig, "encoder_weights", annotation=str, value="none",
            tooltip="none, imagenet (downloads them) or a local weights file",
        )  # fmt: skip
        for w in (self.arch, self.encoder, self.encoder_weights):
            form_row(f, w)
        # a run's new checkpoint is offered in the list, not put in place of the one to tune
        self.ckpt_picker = CheckpointPicker(follow_new=False)
        form_page(self.model_stack).addRow("checkpoint", self.ckpt_picker)
        self.start_from.changed.connect(
            lambda value: self.model_stack.setCurrentIndex(STARTS.index(value))
        )
        form.addRow(self.model_stack)
        align_label_columns(box)
        return box

    def _loss_box(self) -> QGroupBox:
        box = QGroupBox("Loss", self)
        lay = QVBoxLayout(box)
        form = QFormLayout()
        self.loss = ComboBox(label="loss", choices=[DEFAULT_LOSS], value=DEFAULT_LOSS)
        self.loss.enabled = False  # until the loss list is loaded
        form_row(form, self.loss)
        lay.addLayout(form)
        self.loss_params = PageStack(box)
        lay.addWidget(self.loss_params)
        self.loss.changed.connect(self._show_loss_params)
        return box

    def _training_box(self) -> QGroupBox:
        box = QGroupBox("Training", self)
        form = QFormLayout(box)
        self.epochs = config_widget(TrainSection, "epochs", value=20)
        self.batch_size = config_widget(TrainSection, "batch_size", value=4, max=1024)
        self.lr = config_widget(
            OptimConfig, "lr", label="learning rate", min=1e-6, max=1.0, step=1e-4, decimals=6
        )
        self.device = config_widget(
            TrainSection, "device", widget_type="ComboBox", choices=["auto", "cpu"]
        )
        self.runs_folder = FileEdit(mode="d", label="runs folder", value=DEFAULT_RUNS_DIR)

        # the box shows the path's end: the whole of it on hover
        def tip(*_: object) -> None:
            where = self.runs_folder.value
            self.runs_folder.tooltip = f"each run writes a time-stamped folder here:\n{where}"

        self.runs_folder.changed.connect(tip)
        tip()
        self.runs_folder.choose_btn.text = "Browse…"
        for w in (self.epochs, self.batch_size, self.lr, self.device, self.runs_folder):
            form_row(form, w)
        return box

    def _actions_row(self) -> QHBoxLayout:
        row = QHBoxLayout()
        self.start_button = QPushButton("Start", self)
        self.start_button.setEnabled(False)  # until the loss list is loaded
        self.stop_button = QPushButton("Stop", self)
        self.stop_button.setEnabled(False)
        self.stop_button.setToolTip(
            "end training after the current step (or validation batch); the model is saved"
        )
        self.start_button.clicked.connect(self.start)
        self.stop_button.clicked.connect(self.stop)
        row.addWidget(self.start_button)
        row.addWidget(self.stop_button)
        return row

    # ------------------------------------------------------------------ losses and devices
    def _on_choices(self, choices: tuple[Catalog, list[str]]) -> None:
        catalog, devices = choices
        self._catalog = catalog
        self.device.choices = devices
        with self.loss.changed.blocked():
            self.loss.choices = list(catalog)
            self.loss.value = DEFAULT_LOSS if DEFAULT_LOSS in catalog else next(iter(catalog))
        describe_loss_items(self.loss.native)
        self.loss.enabled = True
        self._show_loss_params(self.loss.value)
        self.start_button.setEnabled(True)
        self.status.info("pick data, a model and a loss, then Start")

    def _on_load_error(self, exc: BaseException) -> None:
        self.status.error(f"the losses could not be loaded: {type(exc).__name__}: {exc}")

    def param_form(self, name: str) -> LossParamForm:
        """The parameter form of loss ``name`` (created on first use)."""
        if self._catalog is None:
            raise RuntimeError("the loss list is still loading (wait until ready)")
        if name not in self._param_forms:
            catalog = self._catalog
            form = LossParamForm(name, parameters=lambda n: catalog[n])
            self._param_forms[name] = form
            self.loss_params.addWidget(form)
            tab_in_layout_order(self)  # its fields after the loss, not after Start
        return self._param_forms[name]

    def _show_loss_params(self, name: str) -> None:
        if name and self._catalog is not None:
            self.loss_params.setCurrentWidget(self.param_form(name))
            self.loss.tooltip = loss_tooltip(name)

    @property
    def ready(self) -> bool:
        """The loss list is loaded: Start can run."""
        return self._catalog is not None

    @property
    def busy(self) -> bool:
        """A training run is in progress."""
        return self._worker is not None

    # ------------------------------------------------------------------ the request
    def request(self) -> TrainRequest:
        """The :class:`TrainRequest` the widgets describe (main thread; ``PanelError`` names
        what is missing or wrong)."""
        if self._catalog is None:
            raise PanelError("loss: the loss list is still loading")
        name = self.loss.value
        params = self.param_form(name).values()
        output = run_folder(self.runs_folder.line_edit.value.strip() or DEFAULT_RUNS_DIR, name)
        data: dict[str, Any] = {}
        if self.source.value == "layers":
            data["layers"] = self._layer_data()
        else:
            root, kind = self.folder.line_edit.value.strip(), self.folder_kind.value
            if not root or not Path(root).expanduser().is_dir():
                raise PanelError(
                    f"folder: expected an existing folder with images/ and "
                    f"{masks_folder(kind)}/, got {root!r}"
                )
            data.update(folder=Path(root).expanduser(), folder_kind=kind)
        checkpoint = self.ckpt_picker.require() if self.start_from.value == STARTS[1] else None
        return TrainRequest(
            output=output,
            loss=name,
            loss_params=params,
            arch=self.arch.value,
            encoder=self.encoder.value.strip(),
            encoder_weights=self.encoder_weights.value,
            checkpoint=checkpoint,
            size=self.image_size.value or None,
            val_fraction=self.val_fraction.value,
            epochs=self.epochs.value,
            batch_size=self.batch_size.value,
            lr=self.lr.value,
            device=self.device.value,
            **data,
        )

    def _layer_data(self) -> LayerData:
        layer, image, mask = image_and_mask(self.image_picker, self.mask_picker)
        assert mask is not None  # need_mask: refused above otherwise
        mask_layer = self.mask_picker.layer()
        name = mask_layer.name if mask_layer is not None else "mask"
        names = layer_class_names(mask_layer)  # the run's metrics and checkpoint name them
        return LayerData(
            image=image, mask=mask, rgb=bool(layer.rgb), mask_name=name, class_names=names
        )

    def _on_layer_removed(self, event: Any) -> None:
        """Say what the pickers picked instead of a removed layer: a silent jump to another
        layer would make the next Start train on it unnoticed."""
        notes = []
        try:
            for picker, what in ((self.image_picker, "image"), (self.mask_picker, "mask")):
                picker.refresh()  # whichever of the layer list's callbacks runs first
                if picker.take_lost() is not None:
                    new = picker.layer()
                    notes.append(f"{what} is now {new.name!r}" if new else f"no {what} picked")
        except RuntimeError:  # the panel was closed and deleted: stop listening
            with contextlib.suppress(Exception):
                self.viewer.layers.events.removed.disconnect(self._on_layer_removed)
            return
        if notes:
            going = "; the run goes on with the data it took at Start" if self.busy else ""
            self.status.info(f"layer {event.value.name!r} was removed: {'; '.join(notes)}{going}")

    # ------------------------------------------------------------------ run
    def start(self) -> None:
        """Start training in a thread worker (messages in the panel when an input is wrong)."""
        if self.busy:
            return
        guard_triton()  # before the worker imports the engine (see _compat)
        try:
            request = self.request()
        except (OSError, ValueError) as exc:
            self.status.exception(exc, (PanelError,))
            return
        self._stop.clear()
        self.plot.clear()
        self.plot.setVisible(True)
        self._panel_notes = self._volume_note(request)
        self._show_notes(self._panel_notes)  # not the previous run's
        self.last_result = None
        self.progress.preparing(request.epochs)
        self._start_pause = CollectorPause(self)
        self._worker = new_worker(
            functools.partial(run_training, request, self._stop),  # a generator function
            yielded=self._on_event,
            errored=self._on_error,
            finished=self._on_finished,
        )
        self.start_button.setEnabled(False)
        self.stop_button.setEnabled(True)
        model = "fine-tuning the checkpoint" if request.checkpoint else request.arch
        self.status.info(f"preparing: {model}, loss {request.loss}…")
        scroll_to(self.status)  # the progress bar and the status, just under Start
        self._worker.start()

    def _volume_note(self, request: TrainRequest) -> list[str]:
        """What happens to a grey volume (not a stack of frames the reader made): its slices
        become 2D images; nothing said so before."""
        layers = request.layers
        image_layer = self.image_picker.layer()
        if layers is None or layers.rgb or layers.image.ndim != 3 or image_layer is None:
            return []
        if image_layer.metadata.get(FRAMES_KEY):
            return []
        return [
            f"the volume's {layers.image.shape[0]} slices are trained as 2D images by a 2D "
            "network; for a 3D network use segloss train with a 3D config "
            "(segloss configs acdc_3d_patches)"
        ]

    def stop(self) -> None:
        """Ask the engine to stop at the next step or validation batch (it saves what it
        has)."""
        if self.busy and not self._stop.is_set():
            self._stop.set()
            self.stop_button.setEnabled(False)
            self.status.info("stopping after the current step or validation batch…")

    def _on_event(self, ev: TrainEvent) -> None:
        if isinstance(ev, TrainStart):
            self._on_start(ev)
        elif isinstance(ev, TrainStep):
            self._on_step(ev)
        elif isinstance(ev, TrainEpoch):
            self._on_epoch(ev)
        elif isinstance(ev, TrainDone):
            self._on_done(ev)

    def _show_notes(self, notes: list[str]) -> None:
        self.notes.info("\n".join(f"note: {n}" for n in notes))
        self.notes.setVisible(bool(notes))

    def _on_start(self, ev: TrainStart) -> None:
        self.progress.started(ev)
        self.status.info(f"training on {ev.device} → {ev.run_dir}")
        # what the engine adapted to this machine, as segloss train prints it (not segloss
        # train's mixed-precision note, which is about a config setting the panel has not)
        self._show_notes([*ev.notes, *self._panel_notes])
        self._activity = StoppableProgress(
            total=max(ev.max_iterations, 1), desc="segloss training", cancel_callback=self.stop
        )
        self._activity.update(ev.iteration)

    def _end_start_pause(self) -> None:
        if self._start_pause is not None:
            self._start_pause.end()

    def _on_step(self, ev: TrainStep) -> None:
        """Every step's loss goes to the plot (see ``LivePlot.REDRAW_MS``); the bars show the
        latest step at the next turn. ``QProgressBar.setValue`` repaints at once, and a
        repaint in napari's window composes its OpenGL canvas: both bars at every step, in the
        turn that received it, froze the window (benchmarks/RESULTS.md)."""
        self._end_start_pause()
        per_epoch = ev.max_iterations / max(self.progress.epochs, 1) or 1.0
        self.plot.add_step(ev.iteration / per_epoch, ev.loss)
        self._pending_step = ev
        if not self._step_timer.isActive():
            self._step_timer.start()

    def _show_step(self) -> None:
        ev, self._pending_step = self._pending_step, None
        if ev is None:
            return
        self.progress.stepped(ev)
        if self._activity is not None and ev.iteration > self._activity.n:
            # last: napari's bar processes Qt events while it repaints (later events may run)
            self._activity.update(ev.iteration - self._activity.n)

    def _on_epoch(self, ev: TrainEpoch) -> None:
        val_loss = math.nan if ev.val_loss is None else ev.val_loss
        val_dice = math.nan if ev.val_dice is None else ev.val_dice
        self.plot.add_epoch(ev.epoch, ev.train_loss, val_loss, val_dice)
        self.status.info(
            f"epoch {ev.epoch}: train loss {ev.train_loss:.4f}, "
            f"val loss {val_loss:.4f}, val Dice {val_dice:.4f}"
        )

    def _on_done(self, ev: TrainDone) -> None:
        self._show_step()  # a step still waiting for its turn comes first
        self.last_result = ev
        self.progress.finished(ev)
        # Predict & Compare gets the weights the status reports (best val Dice), as segloss
        # train names them; checkpoint.pt holds the last epoch's (for resuming)
        offered = ev.best_checkpoint or ev.checkpoint
        if offered is not None:
            CHECKPOINTS.add(offered)
        done = f"finished: {counted(ev.epochs, 'epoch')}, {counted(ev.iteration, 'step')}"
        what = stopped_text(ev.reason) if ev.stopped else done
        best = f", best val Dice {ev.best_dice:.4f}" if ev.best_dice is not None else ""
        if not ev.validated:  # as segloss train says it: nothing chose these weights
            best = ", no validation (best.pt holds the last weights)"
        # a stop before any step says "nothing was written" already
        saved = f"; checkpoint {offered}" if offered is not None else ""
        if offered is None and not ev.stopped:
            saved = "; nothing saved"
        self.status.info(f"{what}{best}{saved}")
        self.plot.setVisible(bool(self.plot.steps))  # stopped before its first step: no axes
        scroll_to(self.status)  # the result, where the user may have scrolled away from
        if (
            self._activity is not None
            and not ev.stopped
            and self._activity.n < self._activity.total
        ):
            self._activity.update(self._activity.total - self._activity.n)

    def _on_error(self, exc: BaseException) -> None:
        self._show_step()  # before "failed", which a later step would overwrite
        self.progress.failed()
        # the engine's input errors (ConfigError, DataError, ...) are ValueErrors that say it all
        text = out_of_memory_text(exc, OUT_OF_MEMORY_HINTS["train"])
        self.status.error(f"training failed: {text or exception_text(exc, (ValueError,))}")
        # refused before its first step: no empty plot under the message
        self.plot.setVisible(bool(self.plot.steps))

    def _on_finished(self) -> None:
        self._worker = None
        self._end_start_pause()  # refused or failed before its first step
        self._step_timer.stop()  # shown by _on_done / _on_error, or dropped (a stop)
        self._pending_step = None
        self.plot.flush()  # the last steps and epoch, not REDRAW_MS later
        if self._activity is not None:
            self._activity.close()
            self._activity = None
        self.start_button.setEnabled(self.ready)
        self.stop_button.setEnabled(False)
        release_gpu_memory()

    def changeEvent(self, event: Any) -> None:
        if left_the_window(self, event):  # napari's close button: no closeEvent follows
            self._stop.set()
        super().changeEvent(event)

    def closeEvent(self, event: Any) -> None:
        with contextlib.suppress(Exception):
            self.viewer.layers.events.removed.disconnect(self._on_layer_removed)
        self._stop.set()
        self._end_start_pause()
        release_gpu_memory()
        super().closeEvent(event)

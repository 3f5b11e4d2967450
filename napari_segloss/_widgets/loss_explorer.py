"""Loss Explorer panel: per-pixel loss contributions and PM-Dice modulating maps, side by side.

The computation is the core's (:mod:`napari_segloss.explorer`, :mod:`napari_segloss.whatif`);
this module collects the inputs, runs the core in a napari generator worker (progress in the
panel, Cancel between steps) and draws the results as layers in napari's grid, one titled cell
with its colour bar per map.

The core imports torch (about 2 s the first time). The panel imports it in its first worker,
so the window stays responsive while the panel opens; the maps follow as soon as torch is in.
"""

from __future__ import annotations

import contextlib
import functools
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from magicgui.widgets import CheckBox, ComboBox, FloatSpinBox
from napari.layers import Image, Labels
from qtpy.QtCore import QEvent, Qt, QTimer
from qtpy.QtWidgets import (
    QAbstractItemView,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from napari_segloss.whatif import (
    WHATIF_KINDS,
    num_classes_of,
)

from . import _explorer_jobs as jobs
from ._common import (
    CheckpointPicker,
    LayerPicker,
    PanelError,
    StatusLabel,
    binary_from_255,
    check_same_shape,
    default_probabilities,
    exception_text,
    find_owned,
    geometry_note,
    glyph_steps,
    image_array,
    input_or_output,
    insertion_index,
    is_owned,
    labels_array,
    layer_class_names,
    left_the_window,
    move_off,
    remove_owned,
    rename_layers,
    require_layer,
    same_layer,
    spatial_shape,
    stack_on_top,
    upsert_layer,
)
from ._compat import guard_triton
from ._explorer_layers import Wanted, wanted_layers
from ._forms import ClassSpinBox, GammaList, LossParamForm, loss_tooltip
from ._gc import CollectorPause
from ._grid import GridView, show_maps_hidden_together
from ._layout import PageStack, ValuesTable, align_label_columns, form_page, form_row, scrollable
from ._workers import ModelSlot, ProgressRow, TaskQueue, one_shot_timer, progress_worker

if TYPE_CHECKING:
    import inspect

    import napari
    from napari.layers import Layer

    from napari_segloss.explorer import ExplorerResult

PANEL = "loss_explorer"

DEFAULT_GAMMAS = (0.5, 1.0, 2.0, 5.0)
DEFAULT_LOSSES = ("dice", "ce")
SOURCES = ("what-if from ground truth", "probability image", "labels layer", "checkpoint")
#: words of the map titles and colour-bar ticks other than loss names (see _pre_arrange)
_EXPECTED_TEXT = ("prediction p(class 1)", "|∂L/∂z| contribution |dL/dlogits|", "PM-Dice m, γ = 0.5",
                  "0123456789.e-+")  # fmt: skip
#: the characters vispy measures every text's line height with, at its first draw
_LINE_HEIGHT_TEXT = "ÅÉÑŐjgpqy"


class MissingInput(PanelError):
    """An input that is not there yet (live updates wait quietly for it)."""


class LossExplorerWidget(QWidget):
    """The "Loss Explorer" dock widget (see module docstring)."""

    DEBOUNCE_MS = 200

    def __init__(self, napari_viewer: napari.viewer.Viewer, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        # no full collection from an update's start until its maps are drawn (_gc)
        self._gc_pause = CollectorPause(self)
        self.viewer = napari_viewer
        self._worker: Any = None
        self._pending: bool | None = None  # a queued update: None, or whether it was explicit
        self._catalog: dict[str, dict[str, inspect.Parameter]] | None = None
        self._ckpt_cache: dict[tuple, np.ndarray] = {}
        self._models = ModelSlot()
        self._last_result: ExplorerResult | None = None
        self._last_info: dict[str, Any] = {}  # what _apply drew it with (see _report)
        self._z_index: int | None = None
        self._param_forms: dict[str, LossParamForm] = {}
        self._note = ""  # an input layer was removed and its picker changed (see _watch)
        self._slice_moved = False  # the slice changed while the maps were hidden (_on_step)
        self._closed = False  # closed with napari's X (see _leave_viewer)
        self._timer = one_shot_timer(
            self, self.DEBOUNCE_MS, lambda: self.update_maps(explicit=False)
        )
        self._explicit = True
        self._drawing = TaskQueue(
            self, done=self._after_drawing, errored=self._on_error, progress=self._on_drawn
        )
        self._drawing_maps = False  # the queue draws maps (not the grid arranged on opening)

        root = QVBoxLayout(scrollable(self))
        root.addWidget(self._data_box())
        root.addWidget(self._losses_box())
        box = QGroupBox("PM-Dice focusing parameters γ", self)
        QVBoxLayout(box).addWidget(gammas := GammaList(DEFAULT_GAMMAS, box))
        self.gamma_list = gammas
        root.addWidget(box)
        root.addLayout(self._actions_row())
        self.progress = ProgressRow(self)
        self.progress.cancel.clicked.connect(self.cancel)
        root.addWidget(self.progress)
        self.status = StatusLabel(self)
        root.addWidget(self.status)
        root.addStretch(1)
        self.grid_view = GridView(
            self.viewer, self._on_user_grid, lambda ly: not is_owned(ly, PANEL)
        )
        self._connect()
        self._arranged = threading.Event()
        self._start(
            functools.partial(jobs.load_catalog, self._arranged),
            self._on_catalog,
            "loading PyTorch and the losses…",
        )
        self._drawing.run([self._pre_arrange])  # while torch loads (see jobs.load_catalog)

    # ---------------------------------------------------------------- building the panel
    def _data_box(self) -> QGroupBox:
        box = QGroupBox("Data", self)
        form = QFormLayout(box)
        self.image_picker = LayerPicker(self.viewer, (Image,), allow_none=True)
        self.gt_picker = LayerPicker(self.viewer, (Labels,))
        form.addRow("image", self.image_picker)
        form.addRow("ground truth", self.gt_picker)
        self.source = ComboBox(label="prediction", choices=SOURCES, value=SOURCES[0])
        form_row(form, self.source)
        self.source_stack = PageStack(box)
        f = form_page(self.source_stack)
        self.whatif_kind = ComboBox(label="change", choices=list(WHATIF_KINDS), value="blur")
        self.whatif_strength = FloatSpinBox(label="strength", value=3.0, min=0.0, max=100.0)
        self.whatif_softness = FloatSpinBox(
            label="softness",
            value=1.5,
            min=0.0,
            max=20.0,
            step=0.25,
            tooltip="Gaussian sigma (px) that softens boundaries like a network",
        )
        for w in (self.whatif_kind, self.whatif_strength, self.whatif_softness):
            form_row(f, w)
        # the Predict panel's outputs are predictions too (its errors overlay is not)
        self.pred_image_picker = LayerPicker(
            self.viewer, (Image,), include_owned=True,
            filter=lambda ly: not ly.rgb and input_or_output(ly, PANEL, "prob:"),
            default=lambda c: default_probabilities(c, self.image_picker.layer()),
        )  # fmt: skip
        self.source_stack.addWidget(self.pred_image_picker)
        self.pred_labels_picker = LayerPicker(
            self.viewer, (Labels,), include_owned=True,
            filter=lambda ly: input_or_output(ly, PANEL, "prediction"), default=self._default_pred,
        )  # fmt: skip
        self.source_stack.addWidget(self.pred_labels_picker)
        self.ckpt_picker = CheckpointPicker()
        self.source_stack.addWidget(self.ckpt_picker)
        form.addRow(self.source_stack)
        self.class_spin = ClassSpinBox(
            label="class",
            value=1,
            min=0,
            max=255,
            tooltip="class whose prediction and PM-Dice modulating maps are drawn; a loss's "
            "contribution map sums |∂L/∂z| over every class",
        )
        self.scope = ComboBox(
            label="3D scope",
            choices=["current slice", "whole volume"],
            tooltip="3D data: compute on the displayed slice or on the whole volume",
        )
        form_row(form, self.class_spin)
        form_row(form, self.scope)
        self._update_strength_tip()
        align_label_columns(box)
        return box

    def _losses_box(self) -> QGroupBox:
        box = QGroupBox("Losses", self)
        lay = QVBoxLayout(box)
        self.loss_list = QListWidget(box)
        self.loss_list.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.loss_list.setMaximumHeight(130)
        self.loss_list.addItem("loading the losses…")
        self.param_stack = PageStack(box)
        lay.addWidget(QLabel("tick losses to draw; select one to edit its parameters", box))
        lay.addWidget(self.loss_list)
        # the values under the list that ticks them, in view as the panel opens
        self.table = ValuesTable(box, ("loss", "value"), "each ticked loss of the prediction "
                                 "against the ground truth; PM Dice at each γ below")  # fmt: skip
        lay.addWidget(self.table)
        lay.addWidget(self.param_stack)
        self.relative_check = CheckBox(
            text="contribution relative to the mean pixel",
            value=True,
            tooltip="divide each |dLoss/dlogits| map by its mean: losses share one colour scale",
        )
        lay.addWidget(self.relative_check.native)
        return box

    def _actions_row(self) -> QHBoxLayout:
        row = QHBoxLayout()
        self.live_check = CheckBox(text="live", value=True, tooltip="redraw on every change")
        self.grid_check = CheckBox(
            text="side by side (grid)",
            value=True,
            tooltip="one titled grid cell per map; untick for your previous grid and view (the "
            "maps stay, as layers: hide them with their eye)",
        )
        self.update_button = QPushButton("Update maps", self)
        self.update_button.clicked.connect(lambda: self.update_maps(explicit=True))
        row.addWidget(self.live_check.native)
        row.addWidget(self.grid_check.native)
        row.addWidget(self.update_button, 1)
        return row

    def _connect(self) -> None:
        # Any change schedules a (debounced) update when live.
        self.source.changed.connect(
            lambda *_: self.source_stack.setCurrentIndex(SOURCES.index(self.source.value))
        )
        self.whatif_kind.changed.connect(self._update_strength_tip)
        whatif = (self.whatif_kind, self.whatif_strength, self.whatif_softness)
        for w in (self.source, *whatif, self.class_spin, self.scope, self.relative_check):
            w.changed.connect(self._schedule)
        for picker, what in (
            (self.image_picker, "image"),  # optional: "(none)" when no image is left
            (self.gt_picker, "ground truth"),
            (self.pred_image_picker, "prediction (probability image)"),
            (self.pred_labels_picker, "prediction (labels layer)"),
        ):
            self._watch(picker, what)
        self.gamma_list.changed.connect(self._schedule)
        self.grid_check.changed.connect(self._on_grid_check)
        self.loss_list.itemChanged.connect(self._schedule)
        self.loss_list.currentItemChanged.connect(self._show_params)
        self.viewer.dims.events.current_step.connect(self._on_step)
        self.viewer.dims.events.ndisplay.connect(self._on_ndisplay)  # the status's 3D note
        self.viewer.layers.events.inserted.connect(self._repick_prediction)
        self.gt_picker.currentIndexChanged.connect(self._repick_prediction)
        self.ckpt_picker.changed.connect(lambda: self._schedule() if self._from_ckpt else None)

    def _repick_prediction(self, *_: Any) -> None:
        """The labels prediction moves off the ground truth once another Labels layer exists
        (a Predict panel's prediction first), the probability image off the input image once
        another image does: with only the input open it was the one choice, and it stayed."""
        try:
            gt, image = self.gt_picker.layer(), self.image_picker.layer()
        except RuntimeError:  # the panel was closed and deleted: stop listening
            with contextlib.suppress(Exception):
                self.viewer.layers.events.inserted.disconnect(self._repick_prediction)
            return
        move_off(self.pred_labels_picker, gt, self._default_pred)
        move_off(self.pred_image_picker, image, lambda c: default_probabilities(c, image))

    def _watch(self, picker: LayerPicker, what: str) -> None:
        """Any change of ``picker`` schedules a redraw. A picker whose layer was removed falls
        back to another one, like napari's own: the status line says which (until the next
        maps are drawn), so that the panel never switches data silently."""

        def changed(*_: Any) -> None:
            lost, now = picker.take_lost(), picker.layer()
            used = self.source_stack.indexOf(picker) in (-1, self.source_stack.currentIndex())
            if used and lost is not None:
                none_left = "no image now" if picker is self.image_picker else f"pick {what}"
                then = f"now using '{now.name}'" if now is not None else none_left
                self._note = f"{what} '{lost}' was removed; {then}"
                self.status.info(self._note)
            self._schedule()

        picker.currentIndexChanged.connect(changed)

    def _labels(self, layer: Any, what: str) -> np.ndarray:
        """A Labels layer's array, 0/255 read as 0/1 (noted in the status with the maps)."""
        labels, note = binary_from_255(labels_array(layer, what), layer.name)
        if note and note not in self._note:
            self._note = f"{self._note}; {note}" if self._note else note
        return labels

    def _noted(self, text: str, failed: bool = False) -> str:
        """``text`` after the note on a removed input, if any (see _watch). ``failed``: no
        maps were drawn, so those on screen no longer match the panel's settings: say so."""
        if failed and self.map_layers():
            text = f"{text}; the maps shown are from the previous update"
        return f"{self._note}. {text}" if self._note else text

    def _update_strength_tip(self, *_: Any) -> None:
        self.whatif_strength.tooltip = WHATIF_KINDS[self.whatif_kind.value][1]
        # counts of pixels or objects show as whole numbers: the box says what is applied
        self.whatif_strength.native.setDecimals(2 if self.whatif_kind.value == "blur" else 0)

    # ---------------------------------------------------------------- losses and gammas
    def _on_catalog(self, catalog: dict[str, dict[str, inspect.Parameter]]) -> None:
        self._catalog = catalog
        self.loss_list.blockSignals(True)
        self.loss_list.clear()
        for name in catalog:
            item = QListWidgetItem(name, self.loss_list)
            item.setToolTip(loss_tooltip(name))
            item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
            ticked = name in DEFAULT_LOSSES
            item.setCheckState(Qt.CheckState.Checked if ticked else Qt.CheckState.Unchecked)
        self.loss_list.blockSignals(False)
        ticked = [n for n in catalog if n in DEFAULT_LOSSES]
        if ticked:
            self.loss_list.setCurrentRow(list(catalog).index(ticked[0]))
        # Draw the maps as soon as the panel can (see _on_finished).
        self._pending = bool(self._pending)

    def _show_params(self, item: QListWidgetItem | None, _prev: Any = None) -> None:
        if item is not None and self._catalog is not None:
            self.param_stack.setCurrentWidget(self._param_form(item.text()))

    def _param_form(self, name: str) -> LossParamForm:
        if name not in self._param_forms:
            catalog = self._catalog or {}
            form = LossParamForm(name, parameters=lambda n: catalog[n], heading=True)
            form.changed.connect(self._schedule)
            self._param_forms[name] = form
            self.param_stack.addWidget(form)
        return self._param_forms[name]

    def selected_losses(self) -> list[str]:
        """The ticked losses, in the list's (registry) order."""
        if self._catalog is None:
            return []
        items = (self.loss_list.item(i) for i in range(self.loss_list.count()))
        return [it.text() for it in items if it.checkState() == Qt.CheckState.Checked]

    def set_losses(self, names: Sequence[str]) -> None:
        """Tick exactly ``names`` (unknown names raise ValueError)."""
        if self._catalog is None:
            raise RuntimeError("the loss list is still loading (wait until not busy)")
        unknown = [n for n in names if n not in self._catalog]
        if unknown:
            raise ValueError(f"names: expected registered losses, got unknown {unknown}")
        self.loss_list.blockSignals(True)
        for i in range(self.loss_list.count()):
            item = self.loss_list.item(i)
            state = Qt.CheckState.Checked if item.text() in names else Qt.CheckState.Unchecked
            item.setCheckState(state)
        self.loss_list.blockSignals(False)
        self._schedule()

    def gammas(self) -> list[float]:
        return self.gamma_list.values()

    # ---------------------------------------------------------------- scheduling
    @property
    def _from_ckpt(self) -> bool:
        return self.source.value == SOURCES[3]

    def _schedule(self, *_: Any) -> None:
        if self.live_check.value and not self._closed:
            self._timer.start()

    def _on_ndisplay(self, event: Any = None) -> None:
        """2D <-> 3D view: the status's 3D note follows, from the maps on screen (nothing to
        recompute), unless work is running or an error is shown."""
        try:
            if self._last_result is not None and not self.busy and not self.status.is_error:
                self._report(self._last_result, self._last_info)
        except RuntimeError:  # the panel was closed and deleted: stop listening
            with contextlib.suppress(Exception):
                self.viewer.dims.events.ndisplay.disconnect(self._on_ndisplay)

    def _on_step(self, event: Any = None) -> None:
        # Only a slice change matters, and only when showing one slice of a volume.
        try:
            gt = self.gt_picker.layer()
        except RuntimeError:  # the panel was closed and deleted: stop listening
            with contextlib.suppress(Exception):
                self.viewer.dims.events.current_step.disconnect(self._on_step)
            return
        if gt is None or gt.ndim != 3 or self.scope.value != "current slice":
            return
        maps = self.map_layers()
        if maps and not any(ly.visible for ly in maps):  # hidden (Predict's overlay): later
            self._slice_moved = True
        elif self._current_z(gt) != self._z_index:
            self._schedule()

    def _current_z(self, gt: Any) -> int:
        z = gt.world_to_data(self.viewer.dims.point[-gt.ndim :])[0]
        return int(np.clip(round(float(z)), 0, gt.data.shape[0] - 1))

    @property
    def busy(self) -> bool:
        """True while the panel loads, computes, or waits for the debounce timer."""
        return (
            self._worker is not None
            or self._drawing.active
            or self._timer.isActive()
            or self._pending is not None
        )

    @property
    def drawing(self) -> bool:
        """Map layers are being drawn (a step per event-loop turn; Cancel stops it)."""
        return self._drawing.active

    @property
    def ready(self) -> bool:
        """The loss list is loaded (the panel can compute)."""
        return self._catalog is not None

    # ---------------------------------------------------------------- the update itself
    def _collect(self) -> tuple[jobs.Job, dict[str, Any]]:
        """Read the widgets (main thread): the worker's job and what drawing its result needs."""
        gt_layer = self.gt_picker.layer()
        if gt_layer is None:
            raise MissingInput(
                "ground truth: no layer selected (open or add a Labels layer, e.g. "
                "File > Open Sample > napari-segloss)"
            )
        gt = self._labels(gt_layer, "ground truth")
        image_layer = self.image_picker.layer()
        if image_layer is not None:
            check_same_shape(gt, spatial_shape(image_layer), "the ground truth", "image")
        names = self.selected_losses()
        gamma_uids = self.gamma_list.distinct()
        if not names and not gamma_uids:
            raise PanelError("losses: tick at least one loss or add a γ")
        losses = [(n, self._param_form(n).values()) for n in names]
        z = (
            self._current_z(gt_layer)
            if gt.ndim == 3 and self.scope.value == "current slice"
            else None
        )
        self._z_index = z
        make_probs = self._prediction_job(gt, image_layer, z)
        target = gt if z is None else gt[z]
        cls, relative = self.class_spin.value, self.relative_check.value
        job = jobs.explorer_job(make_probs, target, losses, list(gamma_uids), cls, relative)
        info = {
            "z": z,
            "shape": gt.shape,
            "gt_layer": gt_layer,
            "image_layer": image_layer,
            "gamma_uids": gamma_uids,
            "relative": relative,
            "cls": cls,
        }
        return job, info

    def _prediction_job(self, gt: np.ndarray, image_layer: Any, z: int | None) -> jobs.Job:
        """A generator function (run in the worker) returning ``(C, *spatial)`` probabilities
        of the whole ground truth, or of slice ``z`` only when ``z`` is set."""
        if self.source.value == SOURCES[0]:
            k = num_classes_of(gt)  # from the whole volume: same channels on every slice
            return jobs.whatif_job(
                gt if z is None else gt[z], self.whatif_kind.value,
                self.whatif_strength.value, self.whatif_softness.value, k,
            )  # fmt: skip
        full = self._full_prediction_job(gt, image_layer)
        return full if z is None else jobs.slice_job(full, z)

    def _default_pred(self, candidates: list[Layer]) -> Layer | None:
        """A Labels layer other than the ground truth, a Predict panel's prediction first."""
        gt_picker = getattr(self, "gt_picker", None)
        gt = gt_picker.layer() if gt_picker is not None else None
        others = [ly for ly in candidates if not same_layer(ly, gt)]
        ours = [ly for ly in others if is_owned(ly)]
        return (ours or others or candidates or [None])[0]

    def _full_prediction_job(self, gt: np.ndarray, image_layer: Any) -> jobs.Job:
        if self.source.value == SOURCES[1]:
            layer = require_layer(self.pred_image_picker, "prediction (probability image)")
            return jobs.probability_image_job(image_array(layer), gt.shape)
        if self.source.value == SOURCES[2]:
            layer = require_layer(self.pred_labels_picker, "prediction (labels layer)")
            if same_layer(layer, self.gt_picker.layer()):  # every loss 0, and no word why
                raise PanelError(
                    f"prediction (labels layer): {layer.name!r} is the ground truth itself; "
                    "pick another Labels layer (e.g. a prediction of Predict & Compare)"
                )
            pred = self._labels(layer, "prediction")
            check_same_shape(gt, pred, "the ground truth", "prediction")
            k = max(int(gt.max(initial=0)), int(pred.max(initial=0))) + 1
            return jobs.labels_job(pred, max(k, 2))
        path = self.ckpt_picker.require()
        image_layer = require_layer(image_layer, "image (the checkpoint needs it)")
        image = image_array(image_layer)
        key = (str(path), path.stat().st_mtime, image_layer.unique_id, image.shape)
        return jobs.checkpoint_job(
            path, image, bool(image_layer.rgb), key, self._ckpt_cache, self._models
        )

    def update_maps(self, explicit: bool = True) -> None:
        """Recompute now, or as soon as the running work stops (it is cancelled when it is an
        older computation: its inputs are out of date).

        ``explicit``: the user asked (button): problems pop up as warnings; live updates only
        write them in the panel, and wait quietly for missing inputs.
        """
        self._timer.stop()
        if self._worker is not None or self._drawing.active:
            # the running work is out of date: stop it, then start again (_after_drawing)
            self._pending = explicit or bool(self._pending)
            if self._worker is not None and self._catalog is not None:
                self._worker.quit()
            self._drawing.cancel()
            return
        self._pending = None
        guard_triton()  # before the worker may import torch._dynamo (see _compat)
        try:
            job, info = self._collect()
        except MissingInput as exc:
            text = self._noted(str(exc) if explicit else f"waiting for inputs: {exc}", True)
            if explicit or self.map_layers():  # red once maps are shown: they are out of date
                self.status.error(text, notify=explicit)
            else:
                self.status.info(text)
            return
        except PanelError as exc:
            # a live change that cannot be drawn over maps still shown pops up too (the status
            # line may be scrolled away), or the old maps would pass for new
            stale = bool(self.map_layers())
            self.status.error(self._noted(str(exc), True), notify=explicit or stale)
            return
        self._explicit = explicit
        if not self._gc_pause.active:
            self._gc_pause = CollectorPause(self)
        self._start(job, lambda res: self._apply(res, info), "computing the maps…")

    def _start(self, job: jobs.Job, on_done: Callable[[Any], Any], message: str) -> None:
        self.status.info(message)
        self._worker = progress_worker(
            self.progress,
            job,
            message,
            returned=on_done,
            errored=self._on_error,
            finished=self._on_finished,
        )
        self._worker.aborted.connect(self._on_aborted)
        self._worker.start()

    def cancel(self) -> None:
        """Stop the running computation at its next step, or the drawing of its maps; the
        maps shown stay."""
        self._pending = None
        if self._worker is not None:
            self._worker.quit()
        self._drawing.cancel()

    def _on_drawn(self, done: int, total: int) -> None:
        if self._drawing_maps:  # on opening the bar keeps saying that torch is loading
            self.progress.step(done, total, f"drawing the maps {done}/{total}")

    def _on_aborted(self) -> None:
        if self._pending is None:
            self.status.info("cancelled: the maps shown are from the previous update")

    def _on_finished(self) -> None:
        self._worker = None
        if not self._drawing.active:
            self._after_drawing()

    def _after_drawing(self) -> None:
        self._drawing_maps = False
        self.grid_view.reveal_all()  # a cancelled drawing leaves no layer hidden
        self._arranged.set()  # nothing left to arrange (also when cancelled): torch may load
        if self._worker is None:
            self.progress.stop()
        if self._drawing.cancelled:
            self._drawing.cancelled = False
            if self._pending is None:
                self.status.info("cancelled: some maps are not drawn (Update maps draws them)")
        if self._pending is not None and self._worker is None:
            self.update_maps(explicit=self._pending)
        if self._worker is None and not self._drawing.active:
            self._gc_pause.end()  # the maps are drawn, or cannot be

    def _on_error(self, exc: BaseException) -> None:
        if self._catalog is None:
            self.loss_list.clear()
            self.loss_list.addItem("(the losses could not be loaded)")
            self.status.exception(exc, notify=True)
            return
        text = exception_text(exc, (ValueError,))  # PanelError, the core's: message alone
        self.status.error(self._noted(text, True), notify=getattr(self, "_explicit", True))

    # ---------------------------------------------------------------- drawing the result
    def _apply(self, res: ExplorerResult, info: dict[str, Any]) -> None:
        """Draw ``res`` as layers, one small step per event-loop turn (see TaskQueue).

        Existing map layers are updated in one step (new data: one redraw). Each new map
        costs napari a layer, then vispy a first draw that builds its shaders, then a title
        and a colour bar with shaders of their own: one step each, so that no single draw
        builds more than a few shaders and the window answers in between. All new maps come
        first, then their titles, then their colour bars.
        """
        if self._closed:  # a result that came after the panel was closed
            return
        self._last_result, self._last_info = res, info
        with self.class_spin.changed.blocked():  # the arrows stop at the last class
            self.class_spin.max = max(res.num_classes - 1, 1)
        self.class_spin.set_names(layer_class_names(info["gt_layer"]))
        wanted = wanted_layers(res, info)
        grid, explicit = self.grid_check.value, self._explicit
        exists = {w[0] for w in wanted if find_owned(self.viewer, PANEL, w[0]) is not None}
        new = [w[0] for w in wanted if w[0] not in exists]
        placed: dict[str, Any] = {}  # key -> layer, as they are drawn

        def in_order() -> list[Any]:
            return [placed[w[0]] for w in wanted if w[0] in placed]

        def prepare() -> None:
            remove_owned(self.viewer, PANEL, [w[0] for w in wanted])
            rename_layers([(find_owned(self.viewer, PANEL, k), n) for k, _, n, _ in wanted
                           if k in exists])  # fmt: skip
            if grid or explicit:  # Update maps shows maps that Predict's overlay hid
                show_maps_hidden_together(self.map_layers())
            cells = sum(bool(ly.visible) for ly in self.viewer.layers) + len(new)
            shown = grid and self.grid_view.show(cells)
            self._drawing.run_next(self.grid_view.reveal_steps())  # a grid grown anew
            info["reset"] = shown or bool(new)

        def put(items: list[Wanted]) -> None:
            for key, arr, name, props in items:
                order = [placed.get(k) or find_owned(self.viewer, PANEL, k) for k, *_ in wanted]
                at = insertion_index(self.viewer, order, [k for k, *_ in wanted].index(key))
                if grid and key in new:  # the layers above move one cell on: see hide_overlays
                    self.grid_view.hide_overlays(list(self.viewer.layers)[at:])
                placed[key] = upsert_layer(self.viewer, PANEL, key, "image", arr, name=name,
                                           like=info["gt_layer"], index=at, **props)  # fmt: skip

        def finish() -> None:
            stack_on_top(self.viewer, in_order())
            if grid:  # the cells kept from before, and titles no longer wanted put back
                self.grid_view.decorate(in_order(), self._user_layers())
            self.grid_view.settle()
            if info["reset"]:
                self.grid_view.fit_view()  # fit the (new) grid of maps
                self.grid_view.fitted()
            self._fill_table(res.values)
            self._report(res, info)

        steps: list[Callable[[], Any]] = [prepare, self.grid_view.held_paint.release]
        if exists:
            steps.append(lambda: put([w for w in wanted if w[0] in exists]))
        steps += [lambda w=w: put([w]) for w in wanted if w[0] in new]
        if grid:  # the inputs, new maps and layers whose titles were hidden while they moved
            # (no change for the others; see hide_overlays and GridView._regrow)
            steps += [lambda ly=ly: self.grid_view.add_titles([ly]) for ly in self._user_layers()]
            steps += [lambda k=k: self.grid_view.add_titles([placed[k]]) for k, *_ in wanted]
            steps += [lambda k=k: self.grid_view.add_colorbars([placed[k]]) for k, *_ in wanted]
        self.progress.start("drawing the maps…")
        self._drawing_maps = True
        self._drawing.run([*steps, finish])

    def _report(self, res: ExplorerResult, info: dict[str, Any]) -> None:
        text = jobs.core().summary(res, info["relative"], info["z"])
        if note := geometry_note(self.image_picker.layer(), self.gt_picker.layer()):
            text = f"{text}. Note: {note}"
        if info["z"] is not None and self.viewer.dims.ndisplay == 3:  # a slab in a 3D view
            text += ". In napari's 3D view the maps are of that slice only: set '3D scope' to "
            text += "'whole volume' to see them through the volume"
        self.status.info(self._noted(text))
        self._note = ""  # said once, with the maps it concerns

    def _pre_arrange(self) -> None:
        """Turn the grid on for the maps to come while torch loads (its cells are the slowest
        part of drawing the first maps: one vispy view and camera each)."""
        gt = self.gt_picker.layer()
        if not self.grid_check.value or gt is None:
            self._arranged.set()
            return
        expected = 1 + len(DEFAULT_LOSSES) + len(self.gamma_list.distinct())
        cells = sum(bool(ly.visible) for ly in self.viewer.layers) + expected
        if self.grid_view.show(cells):
            self.grid_view.fit_view()
        inputs = self._user_layers()
        # one title per task, each with a turn for its first paint (its text shaders)
        titles = [lambda ly=ly: self.grid_view.add_title_then_paint(ly) for ly in inputs]
        # glyphs rendered ahead, a few per turn (see glyph_steps): no title's first draw renders
        # any. torch's import waits for the inputs' titles only (see jobs.load_catalog); the glyphs
        # of the maps' titles and colour-bar ticks load while it runs
        now = glyph_steps(self.viewer, [*(ly.name for ly in inputs), _LINE_HEIGHT_TEXT])
        names = layer_class_names(gt) or ()  # the prediction's title names its class
        later = glyph_steps(self.viewer, [*DEFAULT_LOSSES, *_EXPECTED_TEXT, *names])
        steps = [self.grid_view.held_paint.release, *now, *titles]
        self._drawing.run([*steps, lambda: QTimer.singleShot(0, self._arranged.set), *later])

    def _fill_table(self, values: list[tuple[str, float]]) -> None:
        self.table.show_values([(label, jobs.core().format_value(v)) for label, v in values])

    def _user_layers(self) -> list[Any]:
        """The layers titled besides the maps (the inputs, any other layer of the user): each
        visible layer takes a grid cell, so each one says what it shows."""
        return [ly for ly in self.viewer.layers if not is_owned(ly, PANEL)]

    def map_layers(self) -> list[Any]:
        """The panel's map layers, in grid order."""
        return [ly for ly in self.viewer.layers if is_owned(ly, PANEL)]

    def _on_grid_check(self, on: bool) -> None:
        """The grid, titles and colour bars change in turns of their own (see TaskQueue)."""
        view = self.grid_view
        if not on:
            self._drawing.run([*view.decorate_steps([], []), view.restore])
        elif layers := self.map_layers():
            show_maps_hidden_together(layers)
            decorate = view.decorate_steps(layers, self._user_layers())
            self._drawing.run([view.show, view.held_paint.release, *decorate, view.fit_view])
            if self._slice_moved:  # while the maps were hidden: now they are seen
                self._slice_moved = False
                self._schedule()

    def _on_user_grid(self, enabled: bool) -> None:
        """napari's own grid button was used: the check box follows."""
        with self.grid_check.changed.blocked():
            self.grid_check.value = enabled
        if enabled and self.map_layers():
            self.grid_view.decorate(self.map_layers(), self._user_layers())

    def changeEvent(self, event: Any) -> None:
        if left_the_window(self, event):  # napari's close button: no closeEvent follows
            self._leave_viewer()
        elif event.type() == QEvent.Type.ParentChange:  # docked again
            self._closed = False
        super().changeEvent(event)

    def _leave_viewer(self) -> None:
        """Closed with napari's X (the panel lives on, out of the window): no map is drawn
        any more, the user's grid, camera and titles come back, and the maps are hidden; they
        stay in the layer list, so nothing computed is lost. Before, the grid stayed on and
        the maps covered every later layer (the Predict panel's overlay had a cell apart)."""
        self._closed = True
        self._timer.stop()
        if self._worker is not None:
            self._worker.quit()
        self._drawing.cancel()
        self.grid_view.restore()
        for layer in self.map_layers():
            layer.visible = False

    def closeEvent(self, event: Any) -> None:
        with contextlib.suppress(Exception):
            self.viewer.dims.events.current_step.disconnect(self._on_step)
        with contextlib.suppress(Exception):
            self.viewer.dims.events.ndisplay.disconnect(self._on_ndisplay)
        with contextlib.suppress(Exception):
            self.viewer.layers.events.inserted.disconnect(self._repick_prediction)
        self.grid_view.disconnect()
        if self._worker is not None:
            self._worker.quit()
        self._gc_pause.end()
        super().closeEvent(event)

"""Predict & Compare panel: run a checkpoint, show errors in colour, tabulate metrics.

* Run a checkpoint on the current image
  (:func:`napari_segloss.engine.inference.iter_predict_image`: frame by frame, as the
  training run's validation ran, with the checkpoint's own normalisation), adding the labels and the class probabilities, both hidden
  at first (one click on their eye shows them).
* Compare a prediction Labels layer with a ground truth (a model output or any two Labels
  layers): an error overlay (:func:`napari_segloss.overlay.error_labels`: FP red, FN blue, TP
  translucent green as in the PM-Dice paper's fig. 5) shown alone over the image, and a table
  of Dice, IoU, precision, recall, NSD and HD95 per class
  (:func:`napari_segloss.metrics.evaluate`), exportable as CSV.

Inference and metrics run in napari thread workers (torch is imported there, not while the
panel opens); this module only wires widgets to the core.
"""

from __future__ import annotations

import contextlib
import csv
import math
from collections.abc import Generator
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np
from magicgui.widgets import CheckBox, ComboBox, FloatSpinBox
from napari.layers import Image, Labels
from napari.utils.colormaps import Colormap
from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QComboBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from napari_segloss.data.pairs import mask_labels
from napari_segloss.engine.events import out_of_memory_text
from napari_segloss.metrics import evaluate, evaluate_frames
from napari_segloss.overlay import error_labels

from .._napari_io import FRAMES_KEY, class_names_kwargs, mask_colormap
from ._common import (
    TAG,
    CheckpointPicker,
    LayerPicker,
    PanelError,
    StatusLabel,
    check_same_shape,
    class_label,
    class_name,
    class_title,
    device_choices,
    error_layer_props,
    fmt,
    geometry_note,
    grid_of,
    image_array,
    is_owned,
    labels_array,
    layer_class_names,
    release_gpu_memory,
    require_layer,
    same_layer,
    upsert_layer,
)
from ._compat import guard_triton, preload_torch_libraries
from ._gc import CollectorPause
from ._layout import form_row, read_only_table, scrollable, tab_in_layout_order
from ._names import run_name
from ._workers import (
    ModelSlot,
    ProgressRow,
    TaskQueue,
    frame_progress,
    new_worker,
    progress_worker,
)

if TYPE_CHECKING:
    import napari
    from napari.layers import Layer

PANEL = "predict"
#: what this panel's prediction layers are named with, before the run's name (see run_name)
PRED_PREFIX = "pred "
METRIC_COLUMNS = ("dice", "iou", "precision", "recall", "nsd", "hd95")
FRAMES_TOOLTIP = (
    "on: a 3D stack holds unrelated 2D images (a folder of images, the kvasir sample): each "
    "frame is scored on its own and the table shows the mean over frames, as segloss evaluate "
    "reports a folder. off: one 3D volume (Dice over all its voxels, distances across slices "
    "in the layer's scale). Ticked for stacks the plugin's reader made from a folder"
)

#: the distance metrics are in the ground-truth layer's scale units (its voxel spacing)
METRIC_HELP = {
    "nsd": "normalised surface Dice: share of the boundaries within the NSD tolerance "
    "(in the ground-truth layer's scale units: pixels at scale 1)",
    "hd95": "95th-percentile Hausdorff distance, in the ground-truth layer's scale units "
    "(pixels at scale 1, mm for a NIfTI volume opened with its spacing); lower is better",
}
#: the tile choices that are not a size: what the training run's validation (and eval.json)
#: scored, and the training crop (``segloss predict --tile crop``)
TILE_AUTO_TEXT = "auto (as validation)"
TILE_CROP_TEXT = "training crop"
#: smallest tile typed in (the networks downsample by 32)
TILE_MIN = 32
TILE_TOOLTIP = (
    "auto: as the training run's validation and eval.json ran, so the mask is the one the run "
    "was scored on: a 2D image whole (in tiles of the training crop only above 2048 x 2048 "
    "pixels), a 3D volume in tiles of the training patch.\n"
    "training crop: tiles of the crop (or patch) the model was trained on, as segloss predict "
    "--tile crop.\n"
    "Or type a size (pixels): tiles of that edge, blended where they overlap."
)
OVERLAP_TOOLTIP = (
    "fraction of a tile shared with its neighbour; used only when the image is cut into tiles "
    "(not by a 2D image run whole)"
)
#: probabilities when shown: transparent at 0 so the image is not tinted, opaque yellow at 1
PROBABILITY_COLORMAP = Colormap(
    colors=[[1.0, 0.85, 0.0, 0.0], [1.0, 0.55, 0.0, 0.55], [1.0, 1.0, 0.3, 0.9]],
    controls=[0.0, 0.5, 1.0],
    name="segloss probability",
)


def _inference() -> ModuleType:
    """:mod:`napari_segloss.engine.inference`, imported on first call. It imports torch and
    the model zoo (seconds): the panel calls this in its thread workers only."""
    from napari_segloss.engine import inference  # heavy: see the module docstring

    return inference


def _devices() -> list[str]:
    preload_torch_libraries()  # keeps the window responsive while torch loads (see _compat)
    return device_choices()


def compare_job(
    pred: np.ndarray,
    gt: np.ndarray,
    *,
    spacing: tuple[float, ...] | None,
    tolerance: float,
    foreground: int | None,
    include_background: bool = False,
    names: tuple[str, str] = ("prediction", "ground truth"),
    frames: bool = False,
) -> tuple[np.ndarray, dict[int, dict[str, float]]]:
    """Error labels and per-class metrics (what the Compare worker runs); ``names`` (of the
    prediction and ground truth layers) are for the message of labels that do not fit.
    ``frames``: a 3D stack holds unrelated 2D frames, scored one by one and averaged
    (:func:`~napari_segloss.metrics.evaluate_frames`), not as one volume."""
    pred_labels, gt_labels = mask_labels(pred), mask_labels(gt)
    check_labels_fit(pred_labels, gt_labels, names)
    errors = error_labels(pred, gt, foreground=foreground)
    k = max([*pred_labels, *gt_labels], default=0) + 1
    kw = {
        "num_classes": max(k, 2),
        "tolerance": tolerance,
        "include_background": include_background,
    }
    if frames and gt.ndim == 3:
        in_plane = None if spacing is None else spacing[-2:]
        metrics = evaluate_frames(pred, gt, spacing=in_plane, **kw)
    else:
        metrics = evaluate(pred, gt, spacing=spacing, **kw)
    # A class in neither layer (labels 2..8 of {0, 1, 9}) is a column of nan: not a result.
    present = set(pred_labels) | set(gt_labels) | {0}
    return errors, {c: m for c, m in metrics.items() if c in present}


def check_labels_fit(pred_labels: list[int], gt_labels: list[int], names: tuple[str, str]) -> None:
    """Refuse a comparison whose layers label their classes differently: no foreground label in
    common (a binary mask saved as {0, 9} against one of {0, 1}) makes every labelled pixel an
    error, TP 0, which says nothing about the prediction."""
    pred_fg, gt_fg = set(pred_labels) - {0}, set(gt_labels) - {0}
    if pred_fg and gt_fg and not pred_fg & gt_fg:
        raise PanelError(
            f"labels do not fit: prediction {names[0]!r} has labels {sorted(pred_fg)}, ground "
            f"truth {names[1]!r} has {sorted(gt_fg)}; with no label in common every labelled "
            "pixel counts as an error. Relabel one layer so that a class has the same label in "
            "both (a binary mask: mask > 0)"
        )


class TileChoice(QComboBox):
    """How an image is cut for the model: auto (as validation), the training crop, or a size
    typed in. :attr:`value` is 0, ``"crop"`` or the size (what ``iter_predict_image`` takes)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setEditable(True)
        self.setInsertPolicy(QComboBox.InsertPolicy.NoInsert)
        self.addItems([TILE_AUTO_TEXT, TILE_CROP_TEXT, "256", "512"])
        self.setToolTip(TILE_TOOLTIP)

    @property
    def value(self) -> int | str:
        """0 (auto), ``"crop"`` or a size; PanelError for text that is none of them."""
        text = self.currentText().strip()
        if text in ("", TILE_AUTO_TEXT):
            return 0
        if text == TILE_CROP_TEXT:
            return "crop"
        if not text.isdigit() or int(text) < TILE_MIN:
            raise PanelError(
                f"tiles: {text!r} is not a choice; pick {TILE_AUTO_TEXT!r} or "
                f"{TILE_CROP_TEXT!r}, or type a size of at least {TILE_MIN} pixels"
            )
        return int(text)

    @value.setter
    def value(self, value: int | str) -> None:
        texts = {0: TILE_AUTO_TEXT, "crop": TILE_CROP_TEXT}
        self.setCurrentText(texts.get(value, str(value)))

    @property
    def native(self) -> QComboBox:
        """Itself: ``tile.native`` worked when the row was a magicgui spin box."""
        return self


def errors_name(pred: Layer) -> str:
    """The errors overlay's layer name: ``"errors dice/seed0"`` for this panel's prediction
    ``"pred dice/seed0"``, ``"errors <name>"`` for any other Labels layer (the status line and
    the metrics' title name the ground truth too)."""
    name = pred.name
    if is_owned(pred, PANEL) and name.startswith(PRED_PREFIX):
        name = name[len(PRED_PREFIX) :]
    return f"errors {name}"


def _largest_label(layer: Layer) -> int:
    """A Labels layer's largest label (15 when its data is not in memory: reading a lazy
    array whole to list the overlay's classes would stall the panel)."""
    data = layer.data
    if not isinstance(data, np.ndarray):
        return 15
    return int(data.max()) if data.size else 0


class PredictWidget(QWidget):
    """The "Predict & Compare" dock widget (see module docstring)."""

    def __init__(self, napari_viewer: napari.viewer.Viewer, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._opening = CollectorPause(self)  # no full collection while torch loads (_gc)
        self._models = ModelSlot()  # a second run of one checkpoint skips loading it
        self.viewer = napari_viewer
        self._worker: Any = None
        self._compare_after = False
        # no full collection from Run until its layers are drawn: the worker's imports of
        # smp and timm would start some, each freezing the window (_gc)
        self._run_pause: CollectorPause | None = None
        # the probability layers, one per event-loop turn after the prediction's (each new
        # layer builds its napari controls and visual; together they froze the window)
        self._drawing = TaskQueue(self, done=self._end_run_pause, errored=self._on_error)
        self.metrics: dict[int, dict[str, float]] = {}
        self._metrics_source = ""
        self._metrics_layers: tuple[str, ...] = ()  # unique ids of the compared layers
        self._class_names: list[str] | None = None  # of the checkpoint behind the prediction
        root = QVBoxLayout(scrollable(self))
        root.addWidget(self._run_box())
        root.addWidget(self._compare_box())
        self.progress = ProgressRow(self)
        self.progress.cancel.clicked.connect(self.cancel)
        root.addWidget(self.progress)
        self.status = StatusLabel(self)
        root.addWidget(self.status)
        # which comparison the table holds: the status line moves on (a refused compare)
        self.table_caption = QLabel(self)
        self.table_caption.setWordWrap(True)
        root.addWidget(self.table_caption)
        self.table = read_only_table(self, 0, min_height=120)
        self.table.verticalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        root.addWidget(self.table)
        row = QHBoxLayout()
        self.export_button = QPushButton("Export CSV…", self)
        self.export_button.clicked.connect(self._export_dialog)
        self.export_button.setEnabled(False)
        row.addStretch(1)
        row.addWidget(self.export_button)
        root.addLayout(row)
        root.addStretch(1)
        tab_in_layout_order(self)  # Run model / Compare are made before their rows
        self.viewer.layers.events.removed.connect(self._on_layer_removed)
        self.status.info("run a checkpoint on an image, or compare two Labels layers")
        # The GPU list needs torch: fetched in a worker so that opening the panel stays quick.
        self._devices_worker = new_worker(
            _devices,
            returned=self._on_devices,
            errored=lambda exc: None,  # keep auto/cpu
            finished=self._opening.end,
        )
        self._devices_worker.start()

    # ------------------------------------------------------------------ building the panel
    def _run_box(self) -> QGroupBox:
        box = QGroupBox("Run a model", self)
        form = QFormLayout(box)
        self.image_picker = LayerPicker(self.viewer, (Image,))
        self.ckpt_picker = CheckpointPicker()
        self.tile = TileChoice(box)
        self.overlap = FloatSpinBox(
            label="overlap", value=0.25, min=0.0, max=0.9, step=0.05, tooltip=OVERLAP_TOOLTIP
        )
        self.device = ComboBox(label="device", choices=["auto", "cpu"], value="auto")
        self.run_button = QPushButton("Run model", box)
        self.run_button.clicked.connect(self.run_model)
        form.addRow("image", self.image_picker)
        form.addRow("checkpoint", self.ckpt_picker)
        form.addRow("tiles", self.tile)
        for w in (self.overlap, self.device):
            form_row(form, w)
        form.addRow(self.run_button)
        return box

    def _compare_box(self) -> QGroupBox:
        box = QGroupBox("Compare with ground truth", self)
        form = QFormLayout(box)
        # A prediction defaults to ours, else to a Labels layer other than the ground truth.
        self.pred_picker = LayerPicker(
            self.viewer, (Labels,), include_owned=True, allow_none=True, default=self._default_pred
        )
        self.gt_picker = LayerPicker(self.viewer, (Labels,), allow_none=True)
        self.pred_picker.refresh()  # now that the ground truth picker exists
        self.overlay_class = ComboBox(
            label="overlay class",
            choices=[("any foreground", None)],
            value=None,
            tooltip="which class the error overlay shows (multi-class data)",
        )
        for picker in (self.pred_picker, self.gt_picker):
            picker.currentIndexChanged.connect(self._list_overlay_classes)
        self._list_overlay_classes()
        self.tolerance = FloatSpinBox(
            label="NSD tolerance",
            value=1.0,
            min=0.0,
            max=1000.0,
            tooltip="NSD tolerance in the layer's physical units (its scale)",
        )
        self.background_check = CheckBox(text="include background class", value=False)
        self.frames_check = CheckBox(text="score each frame as a 2D image", value=False)
        self.frames_check.tooltip = FRAMES_TOOLTIP
        for picker in (self.pred_picker, self.gt_picker):
            picker.currentIndexChanged.connect(self._suggest_frames)
        self._suggest_frames()
        self.compare_button = QPushButton("Compare", box)
        self.compare_button.clicked.connect(self.compare)
        form.addRow("prediction", self.pred_picker)
        form.addRow("ground truth", self.gt_picker)
        form_row(form, self.overlay_class)
        form_row(form, self.tolerance)
        form.addRow(self.background_check.native)
        form.addRow(self.frames_check.native)
        form.addRow(self.compare_button)
        return box

    def _list_overlay_classes(self, *_: object) -> None:
        """The overlay's class choices: the labels of the compared layers, named as they name
        them (``2 MYO``); before, "class 1" to "class 15" whatever the data."""
        layers = [ly for ly in (self.gt_picker.layer(), self.pred_picker.layer()) if ly]
        names = next(filter(None, map(layer_class_names, layers)), None)
        top = max([1, len(names or ()) - 1, *map(_largest_label, layers)])
        keep = self.overlay_class.value
        self.overlay_class.choices = [
            ("any foreground", None),
            *((class_label(c, names), c) for c in range(1, top + 1)),
        ]
        self.overlay_class.value = keep if keep is None or keep <= top else None

    def _suggest_frames(self, *_: object) -> None:
        """Tick "each frame a 2D image" for layers the reader stacked from a folder of images
        (the ``kvasir`` sample) and predictions made on them; only a 3D stack can be either."""
        layers = [ly for ly in (self.gt_picker.layer(), self.pred_picker.layer()) if ly]
        stacks = [ly for ly in layers if ly.data.ndim == 3]
        self.frames_check.enabled = bool(stacks)
        self.frames_check.value = any(ly.metadata.get(FRAMES_KEY) for ly in stacks)

    def _default_pred(self, candidates: list[Layer]) -> Layer | None:
        ours = [ly for ly in candidates if is_owned(ly, PANEL)]
        if ours:
            return ours[0]
        gt_picker = getattr(self, "gt_picker", None)
        gt = gt_picker.layer() if gt_picker is not None else None
        others = [ly for ly in candidates if not same_layer(ly, gt)]
        # With a single Labels layer there is nothing to compare it with yet: "(none)".
        return others[0] if others and gt is not None else None

    def _on_devices(self, choices: list[str]) -> None:
        current = self.device.value
        self.device.choices = choices
        self.device.value = current if current in choices else "auto"

    # ------------------------------------------------------------------ running work
    @property
    def busy(self) -> bool:
        return self._worker is not None or self._compare_after or self._drawing.active

    def _end_run_pause(self) -> None:
        """The collector back on once nothing runs or waits to be drawn."""
        if self._worker is None and not self._drawing.active and self._run_pause is not None:
            self._run_pause.end()

    def _start(self, fn: Any, on_done: Any, message: str) -> None:
        self.status.info(message)
        if self._run_pause is None or not self._run_pause.active:
            self._run_pause = CollectorPause(self)
        self.run_button.setEnabled(False)
        self.compare_button.setEnabled(False)
        self._worker = progress_worker(
            self.progress,
            fn,
            message,
            returned=on_done,
            errored=self._on_error,
            finished=self._on_finished,
        )
        self._worker.aborted.connect(self._on_aborted)
        self._worker.start()

    def _on_aborted(self) -> None:
        with contextlib.suppress(RuntimeError):  # the viewer was closed: the panel is gone
            self.status.info("cancelled")

    def cancel(self) -> None:
        """Stop the running prediction between two frames (nothing is added)."""
        if self._worker is not None:
            self._compare_after = False
            self._worker.quit()

    def _on_finished(self) -> None:
        self._worker = None
        self.progress.stop()
        self.run_button.setEnabled(True)
        self.compare_button.setEnabled(True)
        if self._compare_after:
            self._compare_after = False
            if self._drawing.active:  # after the probability layers: the overlay lies on top
                self._drawing.run([self.compare])
            else:
                self.compare()
        self._end_run_pause()  # unless a comparison follows or layers wait to be drawn

    def _on_error(self, exc: BaseException) -> None:
        self._compare_after = False
        if oom := out_of_memory_text(exc, "lower the tile size, or choose the cpu device"):
            self.status.error(oom)
        else:
            self.status.exception(exc, (ValueError, FileNotFoundError))

    # ------------------------------------------------------------------ run a model
    def run_model(self) -> None:
        if self.busy:
            return
        guard_triton()  # before the worker imports the engine (see _compat)
        try:
            layer = require_layer(self.image_picker, "image")
            path = self.ckpt_picker.require()
            tile = self.tile.value
        except PanelError as exc:
            self.status.error(str(exc))
            return
        image = image_array(layer)
        rgb = bool(layer.rgb)
        kw = {"tile": tile, "overlap": self.overlap.value, "device": self.device.value}

        def job() -> Generator[tuple[int, int, str], None, tuple[Any, ...]]:
            yield 0, 0, f"loading {path.name}…"
            meta: dict[str, Any] = {}
            frames = _inference().iter_predict_image(
                path, image, rgb=rgb, meta_out=meta, models=self._models.get(), **kw
            )
            labels, probs = yield from frame_progress(frames, "predicting")
            return labels, probs, meta.get("class_names")

        self._run_info = {"layer": layer, "path": path}
        self._start(job, self._on_predicted, f"predicting with {path.name}…")

    def _on_predicted(self, out: tuple[np.ndarray, np.ndarray, list[str] | None]) -> None:
        labels, probs, class_names = out
        like = self._run_info["layer"]
        path = Path(self._run_info["path"])
        # short names, distinct in the layer list: the run (run_name: its folder, a compare
        # run's loss and seed); "prediction [seed0/best]" told no compare run from another,
        # and its errors overlay, named after it and the ground truth, was cut in the middle
        name = run_name(path)
        will_compare = self.gt_picker.layer() is not None
        # Hidden when an error overlay follows: it says more and must not be tinted by them.
        colormap = mask_colormap(labels)  # a class in the colour of the masks the reader opens
        pred_layer = upsert_layer(
            self.viewer, PANEL, "prediction", "labels", labels,
            name=f"{PRED_PREFIX}{name}", like=like, visible=not will_compare,
            select=not will_compare,  # the result shown, unless its error overlay follows
            **({} if colormap is None else {"colormap": colormap}),
        )  # fmt: skip
        # frames in, frames out: Compare scores them one by one (see FRAMES_TOOLTIP)
        pred_layer.metadata[FRAMES_KEY] = bool(like.metadata.get(FRAMES_KEY))
        # the table and the CSV name the classes as the checkpoint does (ACDC: RV, MYO, LV),
        # and so does the status bar under the cursor
        if class_names:
            named = class_names_kwargs(class_names)
            pred_layer.metadata.update(named["metadata"])
            pred_layer.features = named["features"]
        else:
            pred_layer.metadata["class_names"] = None
            pred_layer.features = {}
        channels = [1] if probs.shape[0] == 1 else range(1, probs.shape[0])

        def add_probability(c: int) -> None:
            cls = class_title(c, class_names)
            title = f"prob {name}" if probs.shape[0] == 1 else f"p({cls}) {name}"
            upsert_layer(
                self.viewer, PANEL, f"prob:{c}", "image", probs[0 if probs.shape[0] == 1 else c],
                name=title, like=like, colormap=PROBABILITY_COLORMAP, contrast_limits=(0.0, 1.0),
                blending="translucent", opacity=1.0, visible=False,
            )  # fmt: skip

        self._drawing.run([lambda c=c: add_probability(c) for c in channels])
        like.visible = True
        self.pred_picker.refresh()
        self.pred_picker.set_layer(pred_layer)
        self._list_overlay_classes()  # the layer's data and names may be new
        self._suggest_frames()
        fg = float((labels > 0).mean()) * 100
        self.status.info(
            f"prediction: {probs.shape[0]} channel(s), {fg:.1f} % foreground; the prediction "
            "and probability layers are added hidden (click their eye to show them)"
        )
        # Compare right after this worker has finished (see _on_finished).
        self._compare_after = will_compare

    # ------------------------------------------------------------------ compare
    def compare(self) -> None:
        if self._worker is not None:
            return
        try:
            pred_layer = require_layer(self.pred_picker, "prediction")
            gt_layer = require_layer(self.gt_picker, "ground truth")
            if same_layer(pred_layer, gt_layer):
                raise PanelError("ground truth: pick a different layer from the prediction")
            pred = labels_array(pred_layer, "prediction")
            gt = labels_array(gt_layer, "ground truth")
            check_same_shape(gt, pred, "the ground truth", "prediction")
        except PanelError as exc:
            self.status.error(str(exc))
            return
        spacing = tuple(float(s) for s in gt_layer.scale[-gt.ndim :])
        kw = {
            "spacing": spacing,
            "tolerance": self.tolerance.value,
            "foreground": self.overlay_class.value,
            "include_background": self.background_check.value,
            "names": (pred_layer.name, gt_layer.name),
            "frames": self.frames_check.value and gt.ndim == 3,
        }
        self._compare_info = {"gt": gt_layer, "pred": pred_layer, "frames": kw["frames"]}
        names = layer_class_names(pred_layer) or layer_class_names(gt_layer)
        self._class_names = list(names) if names else None

        def job() -> Generator[tuple[int, int, str], None, tuple[np.ndarray, dict]]:
            yield 0, 0, "computing errors and metrics…"
            return compare_job(pred, gt, **kw)

        self._start(job, self._on_compared, "computing errors and metrics…")

    def _on_compared(self, out: tuple[np.ndarray, dict[int, dict[str, float]]]) -> None:
        errors, metrics = out
        gt_layer, pred_layer = self._compare_info["gt"], self._compare_info["pred"]
        upsert_layer(
            self.viewer, PANEL, "errors", "labels", errors,
            name=errors_name(pred_layer), like=gt_layer,
            **error_layer_props(), visible=True,
            select=True,  # the result shown: its controls (opacity) at hand
        )  # fmt: skip
        note = self._show_overlay_alone(pred_layer, gt_layer)
        self.metrics = metrics
        self._metrics_source = f"{pred_layer.name} vs {gt_layer.name}"
        if self._compare_info["frames"]:
            self._metrics_source += f", mean over {errors.shape[0]} frames"
        self._metrics_layers = (pred_layer.unique_id, gt_layer.unique_id)
        self._fill_table()
        counts = np.bincount(errors.ravel(), minlength=4)
        apart = [geometry_note(ly, gt_layer) for ly in (pred_layer, self.image_picker.layer())]
        apart_text = "".join(f". Note: {n}" for n in apart if n)
        where = f" in all {errors.shape[0]} frames" if self._compare_info["frames"] else ""
        self.status.info(
            f"{pred_layer.name} vs {gt_layer.name}: TP {counts[1]} (green), FP {counts[2]} "
            f"(red), FN {counts[3]} (blue) px{where}{note}{apart_text}"
        )
        self.export_button.setEnabled(True)

    def _show_overlay_alone(self, pred_layer: Layer, gt_layer: Layer) -> str:
        """Only the overlay over the image: the compared layers, this panel's probabilities
        and other panels' maps (the Loss Explorer's) under or over it would tint or cover its
        colours, and napari's grid (the Explorer's side by side) would give it a cell of its
        own, away from the image. Returns what the status line says was changed."""
        hidden = [ly for ly in (pred_layer, gt_layer) if ly.visible]
        for layer in hidden:
            layer.visible = False
        maps = 0
        for layer in self.viewer.layers:
            if not is_owned(layer, PANEL):
                if is_owned(layer) and layer.visible:
                    layer.visible, maps = False, maps + 1
            elif layer.metadata[TAG]["key"].startswith("prob:"):
                layer.visible = False
        parts = [", ".join(repr(ly.name) for ly in hidden)] if hidden else []
        parts += [f"{maps} map layer{'s' * (maps != 1)} of other panels"] if maps else []
        note = f"; hid {' and '.join(parts)}" if parts else ""
        if grid_of(self.viewer).enabled:
            grid_of(self.viewer).enabled = False
            note += "; grid view off (the overlay lies over the image)"
        return note

    def _fill_table(self) -> None:
        """One column per class, one row per metric: fits the dock's width."""
        classes = sorted(self.metrics)
        self.table_caption.setText(f"metrics of {self._metrics_source}" if classes else "")
        self.table.clear()
        self.table.setColumnCount(len(classes))
        self.table.setRowCount(len(METRIC_COLUMNS) if classes else 0)
        self.table.setHorizontalHeaderLabels([class_label(c, self._class_names) for c in classes])
        self.table.setVerticalHeaderLabels(list(METRIC_COLUMNS))
        for i, key in enumerate(METRIC_COLUMNS if classes else ()):
            self.table.verticalHeaderItem(i).setToolTip(METRIC_HELP.get(key, key))
        for j, cls in enumerate(classes):
            for i, key in enumerate(METRIC_COLUMNS):
                item = QTableWidgetItem(fmt(self.metrics[cls].get(key, math.nan)))
                item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                self.table.setItem(i, j, item)

    def clear_metrics(self) -> None:
        self.metrics = {}
        self._metrics_source = ""
        self._metrics_layers = ()
        self._fill_table()
        self.export_button.setEnabled(False)

    def _on_layer_removed(self, event: Any) -> None:
        removed = event.value
        try:
            notes = self._replaced_picks()
            if removed.unique_id in self._metrics_layers:
                self.clear_metrics()
                notes.insert(0, "metrics cleared")
        except RuntimeError:  # the panel was closed and deleted: stop listening
            with contextlib.suppress(Exception):
                self.viewer.layers.events.removed.disconnect(self._on_layer_removed)
            return
        if notes:
            self.status.info(f"layer {removed.name!r} was removed: {'; '.join(notes)}")

    def _replaced_picks(self) -> list[str]:
        """What the pickers picked instead of a removed layer: a silent jump to another
        layer would make the next Run or Compare use it unnoticed."""
        notes = []
        pickers = (
            (self.image_picker, "image"),
            (self.pred_picker, "prediction"),
            (self.gt_picker, "ground truth"),
        )
        for picker, what in pickers:
            picker.refresh()  # whichever of the layer list's callbacks runs first
            if picker.take_lost() is not None:
                new = picker.layer()
                notes.append(f"{what} is now {new.name!r}" if new else f"no {what} picked")
        return notes

    def export_csv(self, path: str | Path) -> Path:
        """Write the metrics (one row per class) to ``path``."""
        if not self.metrics:
            raise PanelError("metrics: nothing to export yet (run Compare first)")
        path = Path(path)
        with path.open("w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["comparison", "class", "name", *METRIC_COLUMNS])
            for cls, vals in sorted(self.metrics.items()):
                values = (repr(float(vals.get(k, math.nan))) for k in METRIC_COLUMNS)
                name = class_name(cls, self._class_names) or ""
                writer.writerow([self._metrics_source, cls, name, *values])
        return path

    def _export_dialog(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Export metrics", "metrics.csv", "CSV (*.csv)")
        if path:
            if not Path(path).suffix:  # Qt's dialog adds no suffix of the filter on Linux
                path += ".csv"
            try:
                self.status.info(f"metrics written to {self.export_csv(path)}")
            except (OSError, PanelError) as exc:
                self.status.error(f"export: {exc}")

    def closeEvent(self, event: Any) -> None:
        with contextlib.suppress(Exception):
            self.viewer.layers.events.removed.disconnect(self._on_layer_removed)
        if self._run_pause is not None:
            self._run_pause.end()
        release_gpu_memory()
        super().closeEvent(event)

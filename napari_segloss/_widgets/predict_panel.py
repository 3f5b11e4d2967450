"""Predict & Compare panel: run a checkpoint, show errors in colour, tabulate metrics.

* Run a checkpoint on the current image (``napari_segloss.engine.inference.predict``: tiled,
  the checkpoint's own normalisation), adding the labels and the class probabilities.
* Compare a prediction Labels layer with a ground truth (a model output or any two Labels
  layers): an error overlay (``napari_segloss.overlay.error_labels``: FP red, FN blue, TP
  translucent green as in the PM-Dice paper's fig. 5) and a per-class table of Dice, IoU,
  precision, recall, NSD and HD95 (``napari_segloss.metrics.evaluate``), exportable as CSV.
Inference and metrics run in napari thread workers; this module only wires widgets to the core.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QPushButton,
    QSpinBox,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from ._common import (
    CheckpointPicker,
    LayerPicker,
    PanelError,
    StatusLabel,
    check_same_shape,
    fmt,
    image_array,
    labels_array,
    new_worker,
    release_gpu_memory,
    require_layer,
    same_layer,
    upsert_layer,
)
from ._compat import guard_triton

if TYPE_CHECKING:
    import napari

PANEL = "predict"
METRIC_COLUMNS = ("dice", "iou", "precision", "recall", "nsd", "hd95")


def device_choices() -> list[str]:
    """``auto``, ``cpu`` and one ``cuda:N`` per visible GPU."""
    out = ["auto", "cpu"]
    try:
        import torch

        out += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    except Exception:  # pragma: no cover - torch always importable in practice
        pass
    return out


def error_colormap() -> Any:
    """``DirectLabelColormap`` from ``overlay.ERROR_COLORS`` (0 transparent)."""
    from napari.utils.colormaps import DirectLabelColormap

    from napari_segloss.overlay import ERROR_COLORS

    colors: dict[int | None, Any] = dict(ERROR_COLORS)
    colors.setdefault(None, (0.0, 0.0, 0.0, 0.0))  # labels missing from the dict: transparent
    return DirectLabelColormap(color_dict=colors)


def predict_image(
    checkpoint: Path,
    image: np.ndarray,
    *,
    rgb: bool,
    tile: int = 0,
    overlap: float = 0.25,
    device: str = "auto",
) -> tuple[np.ndarray, np.ndarray]:
    """Run ``engine.inference.predict`` on a napari image: ``(labels, probs (K, *spatial))``.

    A stack of RGB frames ``(N, Y, X, 3)`` (e.g. the ``kvasir`` sample) is predicted frame by
    frame; a grey volume is sliced by ``predict`` itself.  Mixed precision only on GPUs: CPU
    autocast is slower than float32 for these models.
    """
    from napari_segloss.engine.inference import predict, resolve_device

    dev = resolve_device(device)
    kw: dict[str, Any] = {
        "tile": (tile, tile) if tile else None,
        "overlap": overlap,
        "device": dev,
        "amp": dev.type == "cuda",
        "rgb": rgb,  # an RGB layer for a grey model is refused by predict, not reinterpreted
    }
    try:
        if rgb and image.ndim == 4:
            frames = [predict(checkpoint, frame, **kw) for frame in image]
            labels = np.stack([f[0] for f in frames])
            probs = np.stack([f[1] for f in frames], axis=1)  # (K, N, Y, X)
            return labels, probs
        labels, probs = predict(checkpoint, image, **kw)
    finally:
        release_gpu_memory()
    return labels, channels_first_probs(labels, probs)


def channels_first_probs(labels: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """``predict``'s probabilities as ``(K, *spatial)``: a slice-by-slice volume comes back as
    ``(Z, K, Y, X)`` and is transposed."""
    if tuple(probs.shape[1:]) == tuple(labels.shape):
        return probs
    if (
        probs.ndim == 4
        and probs.shape[0] == labels.shape[0]
        and probs.shape[2:] == labels.shape[1:]
    ):
        return np.ascontiguousarray(np.moveaxis(probs, 1, 0))
    raise PanelError(
        f"prediction: unexpected probability shape {probs.shape} for labels {labels.shape}"
    )


def compare_job(
    pred: np.ndarray,
    gt: np.ndarray,
    *,
    spacing: tuple[float, ...] | None,
    tolerance: float,
    foreground: int | None,
    include_background: bool = False,
) -> tuple[np.ndarray, dict[int, dict[str, float]]]:
    """Error labels and per-class metrics (pure; runs in the worker)."""
    from napari_segloss.metrics import evaluate
    from napari_segloss.overlay import error_labels

    errors = error_labels(pred, gt, foreground=foreground)
    k = max(int(pred.max(initial=0)), int(gt.max(initial=0))) + 1
    metrics = evaluate(
        pred,
        gt,
        num_classes=max(k, 2),
        spacing=spacing,
        tolerance=tolerance,
        include_background=include_background,
    )
    return errors, metrics


class PredictWidget(QWidget):
    """The "Predict & Compare" dock widget (see module docstring)."""

    def __init__(self, napari_viewer: napari.viewer.Viewer, parent: QWidget | None = None) -> None:
        from napari.layers import Image, Labels

        super().__init__(parent)
        self.viewer = napari_viewer
        self._worker: Any = None
        self._compare_after = False
        self.metrics: dict[int, dict[str, float]] = {}
        self._metrics_source = ""
        root = QVBoxLayout(self)

        box = QGroupBox("Run a model", self)
        form = QFormLayout(box)
        self.image_picker = LayerPicker(self.viewer, (Image,))
        self.ckpt_picker = CheckpointPicker()
        self.tile_spin = QSpinBox(box)
        self.tile_spin.setRange(0, 4096)
        self.tile_spin.setSingleStep(32)
        self.tile_spin.setSpecialValueText("auto (checkpoint)")
        self.tile_spin.setToolTip("tile edge in pixels; auto = the training crop/size")
        self.overlap_spin = QDoubleSpinBox(box)
        self.overlap_spin.setRange(0.0, 0.9)
        self.overlap_spin.setSingleStep(0.05)
        self.overlap_spin.setValue(0.25)
        self.device_combo = QComboBox(box)
        self.device_combo.addItems(device_choices())
        self.run_button = QPushButton("Run model", box)
        self.run_button.clicked.connect(self.run_model)
        form.addRow("image", self.image_picker)
        form.addRow("checkpoint", self.ckpt_picker)
        form.addRow("tile", self.tile_spin)
        form.addRow("overlap", self.overlap_spin)
        form.addRow("device", self.device_combo)
        form.addRow(self.run_button)
        root.addWidget(box)

        box = QGroupBox("Compare with ground truth", self)
        form = QFormLayout(box)
        self.pred_picker = LayerPicker(self.viewer, (Labels,), include_owned=True)
        self.gt_picker = LayerPicker(self.viewer, (Labels,), allow_none=True)
        self.class_combo = QComboBox(box)
        self.class_combo.addItem("any foreground", None)
        for c in range(1, 16):
            self.class_combo.addItem(f"class {c}", c)
        self.class_combo.setToolTip("which class the error overlay shows (multi-class data)")
        self.tolerance_spin = QDoubleSpinBox(box)
        self.tolerance_spin.setRange(0.0, 1000.0)
        self.tolerance_spin.setValue(1.0)
        self.tolerance_spin.setToolTip("NSD tolerance in the layer's physical units (its scale)")
        self.background_check = QCheckBox("include background class", box)
        self.compare_button = QPushButton("Compare", box)
        self.compare_button.clicked.connect(self.compare)
        form.addRow("prediction", self.pred_picker)
        form.addRow("ground truth", self.gt_picker)
        form.addRow("overlay class", self.class_combo)
        form.addRow("NSD tolerance", self.tolerance_spin)
        form.addRow(self.background_check)
        form.addRow(self.compare_button)
        root.addWidget(box)

        self.status = StatusLabel(self)
        root.addWidget(self.status)
        self.table = QTableWidget(0, 1 + len(METRIC_COLUMNS), self)
        self.table.setHorizontalHeaderLabels(["class", *METRIC_COLUMNS])
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.table.verticalHeader().setVisible(False)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setMinimumHeight(120)
        root.addWidget(self.table)
        row = QHBoxLayout()
        self.export_button = QPushButton("Export CSV…", self)
        self.export_button.clicked.connect(self._export_dialog)
        self.export_button.setEnabled(False)
        row.addStretch(1)
        row.addWidget(self.export_button)
        root.addLayout(row)
        root.addStretch(1)
        self.status.info("run a checkpoint on an image, or compare two Labels layers")

    @property
    def busy(self) -> bool:
        return self._worker is not None

    def _start(self, fn: Any, on_done: Any, message: str) -> None:
        self.status.info(message)
        self.run_button.setEnabled(False)
        self.compare_button.setEnabled(False)
        self._worker = new_worker(
            fn, returned=on_done, errored=self._on_error, finished=self._on_finished
        )
        self._worker.start()

    def _on_finished(self) -> None:
        self._worker = None
        self.run_button.setEnabled(True)
        self.compare_button.setEnabled(True)
        if self._compare_after:
            self._compare_after = False
            self.compare()

    def _on_error(self, exc: BaseException) -> None:
        self.status.exception(exc, (ValueError, FileNotFoundError))

    # ------------------------------------------------------------------ run a model
    def run_model(self) -> None:
        if self.busy:
            return
        guard_triton()  # before the worker imports the engine (see _compat)
        try:
            layer = require_layer(self.image_picker.layer(), "image")
            path = self.ckpt_picker.require()
        except PanelError as exc:
            self.status.error(str(exc))
            return
        image = image_array(layer)
        rgb = bool(layer.rgb)
        tile = self.tile_spin.value()
        overlap = self.overlap_spin.value()
        device = self.device_combo.currentText()

        def job() -> tuple[np.ndarray, np.ndarray]:
            return predict_image(path, image, rgb=rgb, tile=tile, overlap=overlap, device=device)

        self._run_info = {"layer": layer, "path": path}
        self._start(job, self._on_predicted, f"predicting with {path.name}…")

    def _on_predicted(self, out: tuple[np.ndarray, np.ndarray]) -> None:
        labels, probs = out
        like = self._run_info["layer"]
        path = Path(self._run_info["path"])
        # Engine runs save checkpoint.pt / best.pt: the run folder says which model it is.
        name = (
            f"{path.parent.name}/{path.stem}" if path.stem in ("checkpoint", "best") else path.stem
        )
        pred_layer = upsert_layer(
            self.viewer,
            PANEL,
            "prediction",
            "labels",
            labels,
            name=f"prediction [{name}]",
            like=like,
        )
        if probs.shape[0] == 1:
            upsert_layer(
                self.viewer, PANEL, "prob:1", "image", probs[0], name=f"probability [{name}]",
                like=like, colormap="magma", contrast_limits=(0.0, 1.0), opacity=0.7, blending="additive",
            )  # fmt: skip
        else:
            for c in range(1, probs.shape[0]):
                upsert_layer(
                    self.viewer, PANEL, f"prob:{c}", "image", probs[c],
                    name=f"probability class {c} [{name}]", like=like, colormap="magma",
                    contrast_limits=(0.0, 1.0), opacity=0.7, blending="additive", visible=c == 1,
                )  # fmt: skip
        self.pred_picker.refresh()
        self.pred_picker.set_layer(pred_layer)
        fg = float((labels > 0).mean()) * 100
        self.status.info(f"prediction: {probs.shape[0]} channel(s), {fg:.1f} % foreground")
        # Compare right after this worker has finished (see _on_finished).
        self._compare_after = self.gt_picker.layer() is not None

    # ------------------------------------------------------------------ compare
    def compare(self) -> None:
        if self.busy:
            return
        try:
            pred_layer = require_layer(self.pred_picker.layer(), "prediction")
            gt_layer = require_layer(self.gt_picker.layer(), "ground truth")
            if same_layer(pred_layer, gt_layer):
                raise PanelError("ground truth: pick a different layer from the prediction")
            pred = labels_array(pred_layer, "prediction")
            gt = labels_array(gt_layer, "ground truth")
            check_same_shape(gt, pred, "the ground truth", "prediction")
        except PanelError as exc:
            self.status.error(str(exc))
            return
        spacing = tuple(float(s) for s in gt_layer.scale[-gt.ndim :])
        tolerance = self.tolerance_spin.value()
        foreground = self.class_combo.currentData()
        include_bg = self.background_check.isChecked()
        self._compare_info = {"gt": gt_layer, "pred": pred_layer}

        def job() -> tuple[np.ndarray, dict[int, dict[str, float]]]:
            return compare_job(
                pred, gt, spacing=spacing, tolerance=tolerance, foreground=foreground,
                include_background=include_bg,
            )  # fmt: skip

        self._start(job, self._on_compared, "computing errors and metrics…")

    def _on_compared(self, out: tuple[np.ndarray, dict[int, dict[str, float]]]) -> None:
        errors, metrics = out
        gt_layer, pred_layer = self._compare_info["gt"], self._compare_info["pred"]
        upsert_layer(
            self.viewer, PANEL, "errors", "labels", errors,
            name=f"errors {pred_layer.name} vs {gt_layer.name}", like=gt_layer,
            colormap=error_colormap(), opacity=1.0,
        )  # fmt: skip
        self.metrics = metrics
        self._metrics_source = f"{pred_layer.name} vs {gt_layer.name}"
        self._fill_table()
        counts = np.bincount(errors.ravel(), minlength=4)
        self.status.info(
            f"{self._metrics_source}: TP {counts[1]}, FP {counts[2]} (red), FN {counts[3]} (blue) px"
        )
        self.export_button.setEnabled(True)

    def _fill_table(self) -> None:
        rows = sorted(self.metrics.items())
        self.table.setRowCount(len(rows))
        for r, (cls, vals) in enumerate(rows):
            self.table.setItem(r, 0, QTableWidgetItem(str(cls)))
            for j, key in enumerate(METRIC_COLUMNS, start=1):
                item = QTableWidgetItem(fmt(vals.get(key, math.nan)))
                item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                self.table.setItem(r, j, item)

    def export_csv(self, path: str | Path) -> Path:
        """Write the metrics table (one row per class) to ``path``."""
        if not self.metrics:
            raise PanelError("metrics: nothing to export yet (run Compare first)")
        path = Path(path)
        with path.open("w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["comparison", "class", *METRIC_COLUMNS])
            for cls, vals in sorted(self.metrics.items()):
                writer.writerow(
                    [
                        self._metrics_source,
                        cls,
                        *(repr(float(vals.get(k, math.nan))) for k in METRIC_COLUMNS),
                    ]
                )
        return path

    def _export_dialog(self) -> None:
        from qtpy.QtWidgets import QFileDialog

        path, _ = QFileDialog.getSaveFileName(self, "Export metrics", "metrics.csv", "CSV (*.csv)")
        if path:
            try:
                self.status.info(f"metrics written to {self.export_csv(path)}")
            except (OSError, PanelError) as exc:
                self.status.error(f"export: {exc}")

    def closeEvent(self, event: Any) -> None:
        release_gpu_memory()
        super().closeEvent(event)

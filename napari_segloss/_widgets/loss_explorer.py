"""Loss Explorer panel: per-pixel loss contributions and PM-Dice modulating maps, side by side.

Reproduces, for any image in the viewer, the PM-Dice paper's fig. 2 (Hosseini 2025): the
modulating term ``m = |y - p|^gamma`` (eq. 5) for several focusing parameters next to how much
each pixel drives each chosen loss (``napari_segloss.maps.contribution_map``), plus the scalar
loss values.  The computation is the core's (``losses``, ``maps``, ``whatif``); this module only
collects inputs, runs the core in a napari thread worker and draws the results as layers.
"""

from __future__ import annotations

import ast
import contextlib
import inspect
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from qtpy.QtCore import Qt, QTimer
from qtpy.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QSpinBox,
    QStackedWidget,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from napari_segloss.whatif import (
    WHATIF_KINDS,
    labels_to_probabilities,
    make_whatif,
    num_classes_of,
)

from ._common import (
    CheckpointPicker,
    LayerPicker,
    PanelError,
    StatusLabel,
    check_same_shape,
    fmt,
    grid_of,
    image_array,
    is_owned,
    labels_array,
    new_worker,
    remove_owned,
    require_layer,
    spatial_shape,
    upsert_layer,
)
from ._compat import guard_triton

if TYPE_CHECKING:
    import napari
    import torch

PANEL = "loss_explorer"
DEFAULT_GAMMAS = (0.5, 1.0, 2.0, 5.0)
DEFAULT_LOSSES = ("dice", "ce")
#: arguments every loss shares that make no sense to vary here
HIDDEN_PARAMS = frozenset({"mode", "reduction", "ignore_index", "validate"})
SOURCES = ("what-if from ground truth", "probability image", "labels layer", "checkpoint")
CONTRIB_COLORMAP = "inferno"
MODULATING_COLORMAP = "viridis"
#: contribution maps share one upper contrast limit: this percentile over all of them
CLIM_PERCENTILE = 99.5


# --------------------------------------------------------------------------------------------
# Pure (Qt-free) part: what the worker runs
# --------------------------------------------------------------------------------------------


def loss_parameters(name: str) -> dict[str, inspect.Parameter]:
    """The user-facing keyword parameters of the registered loss ``name``, with defaults.

    Read from the loss class' ``__init__`` signature; when it forwards ``**kwargs`` the parent
    classes' parameters are included too.  Shared plumbing (``HIDDEN_PARAMS``) is left out.
    """
    from napari_segloss.losses import get_loss

    if "+" in name:
        # Compound "a+b": the weights plus one dict of overrides per component
        # (get_loss("ce+pm_dice", weights=(1, 1), pm_dice={"gamma": 2.0})).
        kw = inspect.Parameter.KEYWORD_ONLY
        out = {"weights": inspect.Parameter("weights", kw, default=None)}
        for part in name.split("+"):
            part = part.strip()
            out[part] = inspect.Parameter(part, kw, default={})
        return out
    loss = get_loss(name)
    params: dict[str, inspect.Parameter] = {}
    for cls in type(loss).__mro__:
        init = cls.__dict__.get("__init__")
        if init is None:
            continue
        try:
            sig = inspect.signature(init)
        except (TypeError, ValueError):  # builtins
            break
        forwards = False
        for p in sig.parameters.values():
            if p.kind is p.VAR_KEYWORD:
                forwards = True
            elif (
                p.name != "self" and p.kind is not p.VAR_POSITIONAL and p.name not in HIDDEN_PARAMS
            ):
                params.setdefault(p.name, p)
        if not forwards:
            break
    return params


def probabilities_to_logits(probs: torch.Tensor) -> torch.Tensor:
    """Logits whose activation gives back ``probs``: logit for one channel, log for softmax."""
    import torch

    if probs.shape[1] == 1:
        return torch.logit(probs.clamp(1e-6, 1 - 1e-6))
    return torch.log(probs.clamp_min(1e-6))


@dataclass
class LossSpec:
    """One loss to draw: registry ``name``, its non-default ``params`` and the built module."""

    name: str
    params: dict[str, Any]
    module: Any

    @property
    def label(self) -> str:
        if not self.params:
            return self.name
        args = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"{self.name}({args})"


@dataclass
class ExplorerResult:
    contributions: dict[str, np.ndarray] = field(default_factory=dict)  # loss name -> map
    labels: dict[str, str] = field(default_factory=dict)  # loss name -> display label
    modulating: list[tuple[float, np.ndarray]] = field(default_factory=list)
    values: list[tuple[str, float]] = field(default_factory=list)
    prediction: np.ndarray | None = None  # probability of the displayed class
    clim: tuple[float, float] = (0.0, 1.0)
    num_classes: int = 2


def compute_explorer(
    probs: np.ndarray,
    target: np.ndarray,
    losses: Sequence[LossSpec],
    gammas: Sequence[float],
    *,
    cls: int = 1,
    relative: bool = True,
) -> ExplorerResult:
    """Maps and values for one prediction.

    Args:
        probs: ``(C, *spatial)`` probabilities, ``C == 1`` binary (foreground), else softmax.
        target: integer ground truth ``(*spatial)``.
        losses: losses whose gradient contribution maps and values are computed.
        gammas: PM-Dice focusing parameters; one modulating map ``|y - p|^gamma`` (eq. 5) of
            class ``cls`` and one ``pm_dice`` value each.
        cls: class whose modulating map is drawn (binary: both classes give the same map).
        relative: divide each contribution map by its mean, so 1 means "an average pixel" and
            maps of losses with different scales can share one colour scale.
    """
    import torch

    from napari_segloss.losses import get_loss
    from napari_segloss.maps import contribution_map, modulating_map

    p = torch.from_numpy(np.ascontiguousarray(probs, dtype=np.float32))[None]
    t = torch.from_numpy(np.ascontiguousarray(target, dtype=np.int64))[None]
    c = p.shape[1]
    k = 2 if c == 1 else c
    if not 0 <= cls < k:
        raise PanelError(f"class: expected 0 to {k - 1}, got {cls}")
    logits = probabilities_to_logits(p)
    res = ExplorerResult(num_classes=k)
    res.prediction = (p[0, 0] if c == 1 else p[0, cls]).numpy().copy()
    if c == 1 and cls == 0:
        res.prediction = 1.0 - res.prediction
    for spec in losses:
        with torch.no_grad():
            res.values.append((spec.label, float(spec.module(logits, t))))
        cmap = contribution_map(spec.module, logits, t, kind="gradient")[0].detach()
        cmap = cmap.float().numpy()
        if relative:
            mean = float(cmap.mean())
            cmap = cmap / mean if mean > 0 else cmap
        res.contributions[spec.name] = cmap.astype(np.float32, copy=False)
        res.labels[spec.name] = spec.label
    ch = 0 if c == 1 else cls
    for g in gammas:
        m = modulating_map(p, t, float(g))[0, ch].detach().float().numpy()
        res.modulating.append((float(g), m.astype(np.float32, copy=False)))
        with torch.no_grad():
            res.values.append(
                (f"pm_dice(gamma={g:g})", float(get_loss("pm_dice", gamma=g)(logits, t)))
            )
    if res.contributions:
        hi = max(
            float(np.percentile(m, CLIM_PERCENTILE)) if m.size else 0.0
            for m in res.contributions.values()
        )
        res.clim = (0.0, hi if hi > 0 and math.isfinite(hi) else 1.0)
    return res


def probabilities_from_image(data: np.ndarray, gt_shape: tuple[int, ...]) -> np.ndarray:
    """Validate a probability Image layer's data and return ``(C, *spatial)`` float32.

    Accepted: ``(*spatial)`` (foreground probability of a binary problem) or ``(K, *spatial)``
    (class probabilities, ``K >= 2``), values in [0, 1].
    """
    arr = np.asarray(data)
    if tuple(arr.shape) == tuple(gt_shape):
        arr = arr[None]
    elif not (arr.ndim == len(gt_shape) + 1 and tuple(arr.shape[1:]) == tuple(gt_shape)):
        raise PanelError(
            f"prediction: expected probabilities of shape {tuple(gt_shape)} or (K, "
            f"{', '.join(map(str, gt_shape))}) like the ground truth, got {tuple(arr.shape)}"
        )
    if arr.dtype == bool or not np.issubdtype(arr.dtype, np.number):
        raise PanelError(f"prediction: expected a numeric probability image, got dtype {arr.dtype}")
    arr = arr.astype(np.float32, copy=False)
    lo, hi = float(np.nanmin(arr)), float(np.nanmax(arr))
    if not (np.isfinite(arr).all() and lo >= 0.0 and hi <= 1.0):
        raise PanelError(
            f"prediction: expected probabilities in [0, 1], got values in [{lo:g}, {hi:g}] "
            "(pick a probability map, or use 'labels layer' for a segmentation)"
        )
    return arr


def check_target_fits(probs: np.ndarray, target: np.ndarray) -> None:
    k = 2 if probs.shape[0] == 1 else probs.shape[0]
    top = int(target.max(initial=0))
    if top >= k:
        raise PanelError(
            f"ground truth: has label {top} but the prediction has only {k} classes "
            f"({probs.shape[0]} channel{'s' if probs.shape[0] > 1 else ''})"
        )


# --------------------------------------------------------------------------------------------
# Qt panel
# --------------------------------------------------------------------------------------------


class _LossParamForm(QWidget):
    """Line edits (Python literals) / check boxes for one loss' parameters."""

    def __init__(self, name: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.name = name
        self.defaults: dict[str, Any] = {}
        self.editors: dict[str, Any] = {}
        form = QFormLayout(self)
        form.setContentsMargins(0, 0, 0, 0)
        try:
            params = loss_parameters(name)
        except Exception as exc:  # a broken registry entry must not break the panel
            form.addRow(QLabel(f"(parameters unavailable: {exc})"))
            return
        if not params:
            form.addRow(QLabel("(no parameters)"))
        from qtpy.QtWidgets import QLineEdit

        for pname, p in params.items():
            default = None if p.default is inspect.Parameter.empty else p.default
            self.defaults[pname] = default
            if isinstance(default, bool):
                w = QCheckBox(self)
                w.setChecked(default)
            else:
                w = QLineEdit(repr(default), self)
                w.setToolTip("a Python literal: 0.5, (1.0, 2.0), None, 'mean'")
            self.editors[pname] = w
            form.addRow(pname, w)

    def values(self) -> dict[str, Any]:
        """Parameters that differ from the defaults (so labels stay short)."""
        out: dict[str, Any] = {}
        for pname, w in self.editors.items():
            if isinstance(w, QCheckBox):
                v: Any = w.isChecked()
            else:
                text = w.text().strip()
                try:
                    v = ast.literal_eval(text)
                except (ValueError, SyntaxError):
                    raise PanelError(
                        f"{self.name} parameter {pname}: expected a number or Python literal, "
                        f"got {text!r}"
                    ) from None
            if v != self.defaults.get(pname):
                out[pname] = v
        return out


class _GammaRow(QWidget):
    def __init__(self, value: float, parent: QWidget | None = None) -> None:
        from superqt import QLabeledDoubleSlider

        super().__init__(parent)
        lay = QHBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(QLabel("γ", self))
        self.slider = QLabeledDoubleSlider(Qt.Orientation.Horizontal, self)
        self.slider.setRange(0.0, 10.0)
        self.slider.setSingleStep(0.1)
        self.slider.setDecimals(2)
        self.slider.setValue(value)
        lay.addWidget(self.slider, 1)
        self.remove = QPushButton("−", self)
        self.remove.setFixedWidth(28)
        self.remove.setToolTip("remove this gamma")
        lay.addWidget(self.remove)

    def value(self) -> float:
        return float(self.slider.value())


class LossExplorerWidget(QWidget):
    """The "Loss Explorer" dock widget (see module docstring)."""

    DEBOUNCE_MS = 200

    def __init__(self, napari_viewer: napari.viewer.Viewer, parent: QWidget | None = None) -> None:
        from napari.layers import Image, Labels

        super().__init__(parent)
        self.viewer = napari_viewer
        self._worker: Any = None
        self._pending = False
        self._ckpt_cache: dict[tuple, np.ndarray] = {}
        self._last_result: ExplorerResult | None = None
        self._z_index: int | None = None
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(self.DEBOUNCE_MS)
        self._timer.timeout.connect(self.update_maps)

        root = QVBoxLayout(self)

        # --- inputs
        box = QGroupBox("Data", self)
        form = QFormLayout(box)
        self.image_picker = LayerPicker(self.viewer, (Image,), allow_none=True)
        self.gt_picker = LayerPicker(self.viewer, (Labels,))
        form.addRow("image", self.image_picker)
        form.addRow("ground truth", self.gt_picker)
        self.source_combo = QComboBox(box)
        self.source_combo.addItems(SOURCES)
        form.addRow("prediction", self.source_combo)
        self.source_stack = QStackedWidget(box)
        # what-if
        w_whatif = QWidget()
        f = QFormLayout(w_whatif)
        f.setContentsMargins(0, 0, 0, 0)
        self.whatif_kind = QComboBox(w_whatif)
        self.whatif_kind.addItems(list(WHATIF_KINDS))
        self.whatif_strength = QDoubleSpinBox(w_whatif)
        self.whatif_strength.setRange(0.0, 100.0)
        self.whatif_strength.setValue(3.0)
        self.whatif_softness = QDoubleSpinBox(w_whatif)
        self.whatif_softness.setRange(0.0, 20.0)
        self.whatif_softness.setValue(1.5)
        self.whatif_softness.setToolTip(
            "Gaussian sigma (px) that softens boundaries like a network"
        )
        f.addRow("change", self.whatif_kind)
        f.addRow("strength", self.whatif_strength)
        f.addRow("softness", self.whatif_softness)
        self.source_stack.addWidget(w_whatif)
        self.pred_image_picker = LayerPicker(self.viewer, (Image,), filter=lambda ly: not ly.rgb)
        self.source_stack.addWidget(self.pred_image_picker)
        self.pred_labels_picker = LayerPicker(self.viewer, (Labels,))
        self.source_stack.addWidget(self.pred_labels_picker)
        self.ckpt_picker = CheckpointPicker()
        self.source_stack.addWidget(self.ckpt_picker)
        form.addRow(self.source_stack)
        self.class_spin = QSpinBox(box)
        self.class_spin.setRange(0, 255)
        self.class_spin.setValue(1)
        self.class_spin.setToolTip("class whose modulating map is drawn (multi-class data)")
        form.addRow("class", self.class_spin)
        self.scope_combo = QComboBox(box)
        self.scope_combo.addItems(["current slice", "whole volume"])
        self.scope_combo.setToolTip("3D data: compute on the displayed slice or the whole volume")
        form.addRow("3D scope", self.scope_combo)
        root.addWidget(box)

        # --- losses
        box = QGroupBox("Losses", self)
        lay = QVBoxLayout(box)
        self.loss_list = QListWidget(box)
        self.loss_list.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.loss_list.setMaximumHeight(130)
        self.param_stack = QStackedWidget(box)
        self._param_forms: dict[str, _LossParamForm] = {}
        lay.addWidget(QLabel("tick losses to draw; select one to edit its parameters", box))
        lay.addWidget(self.loss_list)
        lay.addWidget(self.param_stack)
        self.relative_check = QCheckBox("contribution relative to the mean pixel", box)
        self.relative_check.setChecked(True)
        self.relative_check.setToolTip(
            "divide each |dLoss/dlogits| map by its mean so different losses share one colour scale"
        )
        lay.addWidget(self.relative_check)
        root.addWidget(box)
        self._populate_losses()

        # --- gammas
        box = QGroupBox("PM-Dice focusing parameters γ", self)
        self._gamma_layout = QVBoxLayout(box)
        self.gamma_rows: list[_GammaRow] = []
        add = QPushButton("add γ", box)
        add.clicked.connect(lambda: self.add_gamma(1.0))
        self._gamma_layout.addWidget(add)
        root.addWidget(box)
        for g in DEFAULT_GAMMAS:
            self.add_gamma(g, schedule=False)

        # --- actions and output
        row = QHBoxLayout()
        self.live_check = QCheckBox("live", self)
        self.live_check.setChecked(True)
        self.grid_check = QCheckBox("side by side (grid)", self)
        self.grid_check.setChecked(True)
        self.update_button = QPushButton("Update maps", self)
        self.update_button.clicked.connect(self.update_maps)
        row.addWidget(self.live_check)
        row.addWidget(self.grid_check)
        row.addWidget(self.update_button, 1)
        root.addLayout(row)
        self.status = StatusLabel(self)
        root.addWidget(self.status)
        self.table = QTableWidget(0, 2, self)
        self.table.setHorizontalHeaderLabels(["loss", "value"])
        self.table.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        self.table.verticalHeader().setVisible(False)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setMinimumHeight(140)
        root.addWidget(self.table)
        root.addStretch(1)

        # --- signals: any change schedules a (debounced) update when live
        self.source_combo.currentIndexChanged.connect(self.source_stack.setCurrentIndex)
        for sig in (
            self.source_combo.currentIndexChanged,
            self.gt_picker.currentIndexChanged,
            self.pred_image_picker.currentIndexChanged,
            self.pred_labels_picker.currentIndexChanged,
            self.whatif_kind.currentIndexChanged,
            self.whatif_strength.valueChanged,
            self.whatif_softness.valueChanged,
            self.class_spin.valueChanged,
            self.scope_combo.currentIndexChanged,
            self.relative_check.toggled,
        ):
            sig.connect(self._schedule)
        self.loss_list.itemChanged.connect(self._schedule)
        self.loss_list.currentItemChanged.connect(self._show_params)
        self.viewer.dims.events.current_step.connect(self._on_step)
        self._show_params(self.loss_list.currentItem())
        self.status.info("pick a ground truth and a prediction, then tick losses")

    # ---------------------------------------------------------------- loss list and gammas
    def _populate_losses(self) -> None:
        try:
            from napari_segloss.losses import list_losses

            names = list_losses()
        except Exception as exc:
            self.status.error(f"losses: could not load the loss registry ({exc})", notify=False)
            return
        for name in names:
            item = QListWidgetItem(name, self.loss_list)
            item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
            item.setCheckState(
                Qt.CheckState.Checked if name in DEFAULT_LOSSES else Qt.CheckState.Unchecked
            )
        ticked = [
            i
            for i in range(self.loss_list.count())
            if self.loss_list.item(i).text() in DEFAULT_LOSSES
        ]
        if self.loss_list.count():
            self.loss_list.setCurrentRow(ticked[0] if ticked else 0)

    def _show_params(self, item: QListWidgetItem | None, _prev: Any = None) -> None:
        if item is None:
            return
        form = self._param_form(item.text())
        self.param_stack.setCurrentWidget(form)

    def _param_form(self, name: str) -> _LossParamForm:
        if name not in self._param_forms:
            form = _LossParamForm(name)
            for w in form.editors.values():
                sig = w.toggled if isinstance(w, QCheckBox) else w.editingFinished
                sig.connect(self._schedule)
            self._param_forms[name] = form
            self.param_stack.addWidget(form)
        return self._param_forms[name]

    def selected_losses(self) -> list[str]:
        out = []
        for i in range(self.loss_list.count()):
            item = self.loss_list.item(i)
            if item.checkState() == Qt.CheckState.Checked:
                out.append(item.text())
        return out

    def set_losses(self, names: Sequence[str]) -> None:
        """Tick exactly ``names`` (unknown names raise ValueError)."""
        available = {
            self.loss_list.item(i).text(): self.loss_list.item(i)
            for i in range(self.loss_list.count())
        }
        unknown = [n for n in names if n not in available]
        if unknown:
            raise ValueError(f"names: expected registered losses, got unknown {unknown}")
        self.loss_list.blockSignals(True)
        for n, item in available.items():
            item.setCheckState(Qt.CheckState.Checked if n in names else Qt.CheckState.Unchecked)
        self.loss_list.blockSignals(False)
        self._schedule()

    def add_gamma(self, value: float, *, schedule: bool = True) -> _GammaRow:
        row = _GammaRow(value)
        row.slider.valueChanged.connect(self._schedule)
        row.remove.clicked.connect(lambda: self.remove_gamma(row))
        self.gamma_rows.append(row)
        self._gamma_layout.insertWidget(self._gamma_layout.count() - 1, row)
        if schedule:
            self._schedule()
        return row

    def remove_gamma(self, row: _GammaRow) -> None:
        if row in self.gamma_rows:
            self.gamma_rows.remove(row)
            self._gamma_layout.removeWidget(row)
            row.deleteLater()
            self._schedule()

    def gammas(self) -> list[float]:
        return [r.value() for r in self.gamma_rows]

    # ---------------------------------------------------------------- scheduling
    def _schedule(self, *_: Any) -> None:
        if self.live_check.isChecked():
            self._timer.start()

    def _on_step(self, event: Any = None) -> None:
        # Only a slice change matters, and only when showing one slice of a volume.
        try:
            gt = self.gt_picker.layer()
        except RuntimeError:  # the panel was closed and deleted: stop listening
            with contextlib.suppress(Exception):
                self.viewer.dims.events.current_step.disconnect(self._on_step)
            return
        if gt is None or gt.ndim != 3 or self.scope_combo.currentIndex() != 0:
            return
        if self._current_z(gt) != self._z_index:
            self._schedule()

    def _current_z(self, gt: Any) -> int:
        z = gt.world_to_data(self.viewer.dims.point[-gt.ndim :])[0]
        return int(np.clip(round(float(z)), 0, gt.data.shape[0] - 1))

    @property
    def busy(self) -> bool:
        """True while a computation runs or is waiting for the debounce timer."""
        return self._worker is not None or self._timer.isActive()

    # ---------------------------------------------------------------- the update itself
    def _collect(self) -> Callable[[], tuple[ExplorerResult, dict[str, Any]]]:
        """Read the widgets (main thread) and return the job for the worker."""
        gt_layer = require_layer(self.gt_picker.layer(), "ground truth")
        gt = labels_array(gt_layer, "ground truth")
        image_layer = self.image_picker.layer()
        if image_layer is not None:
            check_same_shape(gt, spatial_shape(image_layer), "the ground truth", "image")
        names = self.selected_losses()
        gammas = self.gammas()
        if not names and not gammas:
            raise PanelError("losses: tick at least one loss or add a γ")
        from napari_segloss.losses import get_loss

        specs = []
        for n in names:
            params = self._param_form(n).values()
            try:
                specs.append(LossSpec(n, params, get_loss(n, **params)))
            except (ValueError, TypeError) as exc:
                raise PanelError(f"{n}: {exc}") from None
        source = self.source_combo.currentIndex()
        z = (
            self._current_z(gt_layer)
            if gt.ndim == 3 and self.scope_combo.currentIndex() == 0
            else None
        )
        self._z_index = z
        make_probs = self._prediction_job(source, gt, image_layer, z)
        cls = self.class_spin.value()
        relative = self.relative_check.isChecked()

        def job() -> tuple[ExplorerResult, dict[str, Any]]:
            probs = make_probs()  # already restricted to slice z when z is set
            target = gt if z is None else gt[z]
            check_target_fits(probs, target)
            k = 2 if probs.shape[0] == 1 else probs.shape[0]
            res = compute_explorer(
                probs, target, specs, gammas, cls=min(cls, k - 1), relative=relative
            )
            return res, {"z": z, "shape": gt.shape, "gt_layer": gt_layer}

        return job

    def _prediction_job(
        self, source: int, gt: np.ndarray, image_layer: Any, z: int | None
    ) -> Callable[[], np.ndarray]:
        """A callable (run in the worker) giving ``(C, *spatial)`` probabilities of the whole
        ground truth, or of slice ``z`` only when ``z`` is set."""
        if source == 0:
            kind = self.whatif_kind.currentText()
            strength = self.whatif_strength.value()
            softness = self.whatif_softness.value()
            k = num_classes_of(gt)  # from the whole volume: same channels on every slice
            region = gt if z is None else gt[z]
            # In-plane: napari stacks are often frames or thick-slice volumes (see whatif).
            return lambda: make_whatif(
                region, kind, strength, softness=softness, num_classes=k, in_plane=True
            )
        full = self._full_prediction_job(source, gt, image_layer)
        if z is None:
            return full
        return lambda: full()[:, z]

    def _full_prediction_job(
        self, source: int, gt: np.ndarray, image_layer: Any
    ) -> Callable[[], np.ndarray]:
        if source == 1:
            layer = require_layer(self.pred_image_picker.layer(), "prediction (probability image)")
            data = image_array(layer)
            return lambda: probabilities_from_image(data, gt.shape)
        if source == 2:
            layer = require_layer(self.pred_labels_picker.layer(), "prediction (labels layer)")
            pred = labels_array(layer, "prediction")
            check_same_shape(gt, pred, "the ground truth", "prediction")
            k = max(int(gt.max(initial=0)), int(pred.max(initial=0))) + 1
            return lambda: labels_to_probabilities(pred, max(k, 2))
        path = self.ckpt_picker.require()
        image_layer = require_layer(image_layer, "image (the checkpoint needs it)")
        image = image_array(image_layer)
        key = (str(path), path.stat().st_mtime, image_layer.unique_id, image.shape)
        cache = self._ckpt_cache

        rgb = bool(image_layer.rgb)

        def run_model() -> np.ndarray:
            if key not in cache:
                from .predict_panel import predict_image

                _, probs = predict_image(path, image, rgb=rgb)
                cache.clear()  # keep one prediction: slider moves re-use it
                cache[key] = probs
            return cache[key]

        return run_model

    def update_maps(self) -> None:
        """Recompute now (or right after the running computation)."""
        self._timer.stop()
        if self._worker is not None:
            self._pending = True
            return
        guard_triton()  # before the worker may import torch._dynamo (see _compat)
        try:
            job = self._collect()
        except PanelError as exc:
            self.status.error(str(exc))
            return
        self.status.info("computing…")
        self._worker = new_worker(
            job, returned=self._apply, errored=self._on_error, finished=self._on_finished
        )
        self._worker.start()

    def _on_finished(self) -> None:
        self._worker = None
        if self._pending:
            self._pending = False
            self.update_maps()

    def _on_error(self, exc: BaseException) -> None:
        self.status.exception(exc, (ValueError,))  # PanelError is a ValueError

    def _apply(self, out: tuple[ExplorerResult, dict[str, Any]]) -> None:
        res, info = out
        self._last_result = res
        z, shape, like = info["z"], info["shape"], info["gt_layer"]

        def place(arr: np.ndarray) -> np.ndarray:
            if z is None:
                return arr
            full = np.zeros(shape, dtype=np.float32)
            full[z] = arr
            return full

        keep = []
        n_before = sum(is_owned(ly, PANEL) for ly in self.viewer.layers)
        where = f" (slice {z})" if z is not None else ""
        if res.prediction is not None:
            keep.append("prediction")
            upsert_layer(
                self.viewer, PANEL, "prediction", "image", place(res.prediction),
                name=f"prediction p(class {min(self.class_spin.value(), res.num_classes - 1)})",
                like=like, colormap="gray", contrast_limits=(0.0, 1.0),
            )  # fmt: skip
        units = "× mean" if self.relative_check.isChecked() else "|dL/dlogits|"
        for name, arr in res.contributions.items():
            key = f"contrib:{name}"
            keep.append(key)
            upsert_layer(
                self.viewer, PANEL, key, "image", place(arr),
                name=f"{res.labels[name]} contribution",
                like=like, colormap=CONTRIB_COLORMAP, contrast_limits=res.clim,
            )  # fmt: skip
        for i, (g, arr) in enumerate(res.modulating):
            key = f"modulating:{i}"
            keep.append(key)
            upsert_layer(
                self.viewer, PANEL, key, "image", place(arr),
                name=f"PM-Dice m γ={g:g}",
                like=like, colormap=MODULATING_COLORMAP, contrast_limits=(0.0, 1.0),
            )  # fmt: skip
        remove_owned(self.viewer, PANEL, keep)
        self.table.setRowCount(len(res.values))
        for r, (label, value) in enumerate(res.values):
            self.table.setItem(r, 0, QTableWidgetItem(label))
            item = QTableWidgetItem(fmt(value))
            item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
            self.table.setItem(r, 1, item)
        layout_changed = len(keep) != n_before
        grid = grid_of(self.viewer)
        if self.grid_check.isChecked() and not grid.enabled:
            grid.enabled = True
            layout_changed = True
        if layout_changed:
            self.viewer.reset_view()  # fit the (new) grid of maps
        self.status.info(
            f"{len(res.contributions)} contribution map(s) [{units}], {len(res.modulating)} "
            f"modulating map(s){where}; contribution colour scale 0–{res.clim[1]:.3g} shared"
        )

    def closeEvent(self, event: Any) -> None:
        with contextlib.suppress(Exception):
            self.viewer.dims.events.current_step.disconnect(self._on_step)
        super().closeEvent(event)

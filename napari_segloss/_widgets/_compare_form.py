"""The Setup tab of the Compare Losses panel: data, losses and training settings, and the
:class:`~._compare_setup.CompareRequest` they describe.

The losses are rows of ``{"name", "params", "label"}``; a row is added from the loss picker (any
registered name, or an ``a+b`` compound typed in) with the parameters of its
:class:`~._forms.LossParamForm`, so PM Dice at several γ are separate rows. Everything the
engine checks (loss names and parameters, data, saved runs) is left to it, so that the panel
shows the messages ``segloss compare`` prints.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from napari.layers import Image, Labels
from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QPlainTextEdit,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from napari_segloss.engine.loss_spec import LossSpec
from napari_segloss.engine.request import class_names_for

from ._common import (
    LayerPicker,
    PanelError,
    StatusLabel,
    image_and_mask,
    layer_class_names,
    same_layer,
)
from ._compare_setup import (
    CompareRequest,
    Pairs,
    SavedSettings,
    classes_for,
    format_seeds,
    layer_pairs,
    merged,
    parse_overrides,
    parse_seeds,
    section,
)
from ._forms import (
    ARCHS,
    ENCODERS,
    LossParamForm,
    describe_loss_items,
    loss_tooltip,
    registry_parameters,
)
from ._layout import PageStack, align_label_columns, form_page, tab_in_layout_order

if TYPE_CHECKING:
    import inspect

    import napari

DEFAULT_LOSSES = ("dice", "pm_dice")
DEFAULT_OUTPUT = Path.home() / "napari-segloss-compare"
SOURCES = ("layers", "folder")
SCORE_ON = ("validation split", "held-out layers", "held-out folder")


def loss_row(entry: str | Mapping[str, Any] | LossSpec) -> dict[str, Any]:
    """A loss row as ``{"name", "params", "label"}``; a string keeps its text as the label
    (``"pm_dice:gamma=2"``, as ``segloss compare --losses`` names rows and run folders)."""
    spec = LossSpec.from_any(entry)
    return {"name": spec.name, "params": dict(spec.params), "label": spec.label}


def _folder_text(text: str) -> str:
    text = text.strip()
    return text if text.startswith("bundled:") else str(Path(text).expanduser())


class CompareSetupForm(QWidget):
    """Data, losses and training settings of a comparison (see the module docstring).

    ``status`` shows why a loss could not be added. The loss picker and the devices are filled
    by :meth:`set_catalog` once the panel's first worker has loaded them.
    """

    def __init__(
        self, viewer: napari.viewer.Viewer, status: StatusLabel, parent: QWidget | None = None
    ) -> None:
        super().__init__(parent)
        self.viewer = viewer
        self.status = status
        self._catalog: dict[str, dict[str, inspect.Parameter]] | None = None
        self._forms: dict[str, LossParamForm] = {}
        #: the settings of the folder opened last (the base a resume starts from)
        self.saved: SavedSettings | None = None
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self._data_box(self))
        lay.addWidget(self._losses_box(self))
        lay.addWidget(self._training_box(self))
        lay.addStretch(1)
        self.set_losses(DEFAULT_LOSSES)

    def _folder_row(self, edit: QLineEdit, title: str) -> QHBoxLayout:
        browse = QPushButton("Browse…", edit.parentWidget())
        browse.clicked.connect(lambda: self._browse_into(edit, title))
        row = QHBoxLayout()
        row.addWidget(edit, 1)
        row.addWidget(browse)
        return row

    def _browse_into(self, edit: QLineEdit, title: str) -> None:
        path = QFileDialog.getExistingDirectory(self, title, edit.text())
        if path:
            edit.setText(path)
            edit.editingFinished.emit()

    def _data_box(self, parent: QWidget) -> QGroupBox:
        box = QGroupBox("Data", parent)
        form = QFormLayout(box)
        self.source_combo = QComboBox(box)
        self.source_combo.addItems(SOURCES)
        form.addRow("train on", self.source_combo)
        self.source_stack = PageStack(box)
        f = form_page(self.source_stack)
        self.image_picker = LayerPicker(self.viewer, (Image,))
        self.mask_picker = LayerPicker(self.viewer, (Labels,), allow_none=True)
        f.addRow("image", self.image_picker)
        f.addRow("mask", self.mask_picker)
        f = form_page(self.source_stack)
        self.folder_edit = QLineEdit(f.parentWidget())
        self.folder_edit.setPlaceholderText("folder with images/ and masks/, or bundled:NAME")
        self.folder_kind = QComboBox(f.parentWidget())
        self.folder_kind.addItems(["folder", "nifti"])
        self.folder_kind.setToolTip("nifti: volumes in images/ and labels/, trained as 2D slices")
        f.addRow("root", self._folder_row(self.folder_edit, "Training data folder"))
        f.addRow("kind", self.folder_kind)
        self.source_combo.currentIndexChanged.connect(self.source_stack.setCurrentIndex)
        form.addRow(self.source_stack)
        self.score_combo = QComboBox(box)
        self.score_combo.addItems(SCORE_ON)
        self.score_combo.setToolTip("what the table and the overlays score each run on")
        form.addRow("score on", self.score_combo)
        self.score_stack = PageStack(box)
        self.score_stack.addWidget(QWidget())
        f = form_page(self.score_stack)
        self.heldout_image_picker = LayerPicker(self.viewer, (Image,))
        self.heldout_mask_picker = LayerPicker(self.viewer, (Labels,), allow_none=True)
        f.addRow("held-out image", self.heldout_image_picker)
        f.addRow("held-out mask", self.heldout_mask_picker)
        f = form_page(self.score_stack)
        self.heldout_edit = QLineEdit(f.parentWidget())
        self.heldout_edit.setPlaceholderText("held-out folder (images/, masks/) or bundled:NAME")
        f.addRow("held-out", self._folder_row(self.heldout_edit, "Held-out data folder"))
        self.score_combo.currentIndexChanged.connect(self._show_score_page)
        form.addRow(self.score_stack)
        self.score_stack.setVisible(False)  # the validation split needs no more input
        self.val_spin = QDoubleSpinBox(box)
        self.val_spin.setRange(0.0, 0.9)
        self.val_spin.setSingleStep(0.05)
        self.val_spin.setValue(0.2)
        self.val_spin.setToolTip("fraction held back for validation (best epoch, live Dice)")
        form.addRow("validation fraction", self.val_spin)
        align_label_columns(box)
        return box

    def _losses_box(self, parent: QWidget) -> QGroupBox:
        box = QGroupBox("Losses to compare (one table row each)", parent)
        lay = QVBoxLayout(box)
        self.loss_list = QListWidget(box)
        self.loss_list.setMaximumHeight(90)
        lay.addWidget(self.loss_list)
        row = QHBoxLayout()
        self.loss_combo = QComboBox(box)
        self.loss_combo.setEditable(True)
        self.loss_combo.setToolTip("a registered loss, or any compound 'a+b' typed in")
        self.loss_combo.setEnabled(False)
        self.add_button = QPushButton("Add", box)
        self.add_button.setToolTip("add the loss with the parameters below as a new row")
        self.add_button.setEnabled(False)
        self.remove_button = QPushButton("Remove", box)
        self.remove_button.setToolTip("remove the selected row")
        row.addWidget(self.loss_combo, 1)
        row.addWidget(self.add_button)
        row.addWidget(self.remove_button)
        lay.addLayout(row)
        self.param_stack = PageStack(box)
        lay.addWidget(self.param_stack)
        self.add_button.clicked.connect(self.add_loss)
        self.remove_button.clicked.connect(self._remove_selected)
        self.loss_combo.currentIndexChanged.connect(lambda *_: self._show_form())
        self.loss_combo.lineEdit().editingFinished.connect(self._show_form)
        self.loss_list.currentItemChanged.connect(self._show_row)
        return box

    def _training_box(self, parent: QWidget) -> QGroupBox:
        box = QGroupBox("Training (the same for every loss)", parent)
        form = QFormLayout(box)
        self.arch_combo = QComboBox(box)
        self.arch_combo.addItems(ARCHS)
        self.encoder_combo = QComboBox(box)
        self.encoder_combo.setEditable(True)
        self.encoder_combo.addItems(ENCODERS)
        self.encoder_combo.setCurrentText("resnet34")
        self.weights_combo = QComboBox(box)
        self.weights_combo.setEditable(True)
        self.weights_combo.addItems(["none", "imagenet"])
        self.weights_combo.setToolTip("encoder weights: none, imagenet (download) or a file")
        self.epochs_spin = QSpinBox(box)
        self.epochs_spin.setRange(1, 10000)
        self.epochs_spin.setValue(20)
        self.batch_spin = QSpinBox(box)
        self.batch_spin.setRange(1, 1024)
        self.batch_spin.setValue(4)
        self.size_spin = QSpinBox(box)
        self.size_spin.setRange(0, 2048)
        self.size_spin.setSingleStep(32)
        self.size_spin.setValue(128)
        self.size_spin.setSpecialValueText("native")
        self.size_spin.setToolTip("images resized to size x size (0: native size)")
        self.seeds_edit = QLineEdit("0", box)
        self.seeds_edit.setToolTip("one run per loss and seed; the table gives mean ± std")
        self.device_combo = QComboBox(box)
        self.device_combo.addItems(["auto", "cpu"])
        self.device_combo.setToolTip("auto: the GPU when there is one")
        self.more_edit = QPlainTextEdit(box)
        self.more_edit.setPlaceholderText("key=value per line, e.g. optim.lr=0.001")
        self.more_edit.setToolTip(
            "any config key, one key=value per line, as segloss compare --set "
            "(optim.lr=0.001, data.augment=false, model.kwargs={encoder_depth: 4})"
        )
        self.more_edit.setMaximumHeight(52)
        self.output_edit = QLineEdit(str(DEFAULT_OUTPUT), box)
        self.output_edit.setToolTip("the comparison folder; an existing one is re-opened")
        for label, widget in (
            ("architecture", self.arch_combo),
            ("encoder", self.encoder_combo),
            ("encoder weights", self.weights_combo),
            ("epochs", self.epochs_spin),
            ("batch size", self.batch_spin),
            ("size", self.size_spin),
            ("seeds", self.seeds_edit),
            ("device", self.device_combo),
            ("more settings", self.more_edit),
        ):
            form.addRow(label, widget)
        # a row of its own under its label: beside it, at the dock's default width, the
        # path showed a dozen characters ("'napari-segloss-compare" and no folder above it)
        form.addRow(QLabel("output folder", box))
        form.addRow(self._folder_row(self.output_edit, "Comparison folder"))
        return box

    def _show_score_page(self, index: int) -> None:
        self.score_stack.setCurrentIndex(index)
        self.score_stack.setVisible(index != 0)

    def set_catalog(
        self, catalog: dict[str, dict[str, inspect.Parameter]], devices: Sequence[str]
    ) -> None:
        """The registered losses (with their parameters) and devices, loaded in a worker."""
        self._catalog = catalog
        current = self.device_combo.currentText()
        self.device_combo.clear()
        self.device_combo.addItems(devices)
        self.device_combo.setCurrentText(current if current in devices else "auto")
        self.loss_combo.blockSignals(True)
        self.loss_combo.clear()
        self.loss_combo.addItems(list(self._catalog))
        describe_loss_items(self.loss_combo)
        self.loss_combo.setCurrentText("pm_dice")
        self.loss_combo.blockSignals(False)
        self.loss_combo.setEnabled(True)
        self.add_button.setEnabled(True)
        for i in range(self.loss_list.count()):  # rows listed before the catalog came
            self._describe_row(self.loss_list.item(i))
        self._show_form()

    def set_architectures(self, names: Sequence[str]) -> None:
        """The model factory's architectures (2D ones; loaded in a worker)."""
        current = self.arch_combo.currentText()
        names = [n for n in names if n != "UNet3D"] or list(ARCHS)
        self.arch_combo.clear()
        self.arch_combo.addItems(names)
        self.arch_combo.setCurrentText(current if current in names else names[0])

    def _parameters(self, name: str) -> Mapping[str, inspect.Parameter]:
        catalog = self._catalog or {}
        return catalog[name] if name in catalog else registry_parameters(name)

    def _form(self, name: str) -> LossParamForm:
        if name not in self._forms:
            self._forms[name] = LossParamForm(name, parameters=self._parameters)
            self.param_stack.addWidget(self._forms[name])
            tab_in_layout_order(self)  # its fields after the loss picker, not after Start
        return self._forms[name]

    def _show_form(self) -> None:
        name = self.loss_combo.currentText().strip()
        if self._catalog is None or not name:
            return
        try:
            self._parameters(name)
        except (ValueError, TypeError):
            return  # an unknown name: Add says so
        self.param_stack.setCurrentWidget(self._form(name))

    def _show_row(self, item: QListWidgetItem | None, *_: object) -> None:
        """A row picked in the list: its loss and parameters in the form under it (to check
        them, or to add a variant of them as a new row)."""
        if item is None or self._catalog is None:
            return
        spec = item.data(Qt.ItemDataRole.UserRole)
        self.loss_combo.setCurrentText(spec["name"])
        self._show_form()
        with contextlib.suppress(ValueError, TypeError):  # a name the registry lacks: no form
            self._parameters(spec["name"])
            self._form(spec["name"]).set_values(spec.get("params") or {})

    def add_loss(self) -> dict[str, Any] | None:
        """Add the combo's loss with its form's parameters as a row (None: refused, the status
        says why)."""
        name = self.loss_combo.currentText().strip()
        try:
            if not name:
                raise PanelError("losses: type or pick a loss name")
            try:
                self._parameters(name)
            except (ValueError, TypeError) as exc:
                raise PanelError(f"losses: {name!r}: {exc}") from None
            spec = loss_row({"name": name, "params": self._form(name).values()})
            for other in self.losses():
                if (other["name"], other["params"]) == (spec["name"], spec["params"]):
                    raise PanelError(f"losses: {LossSpec.from_any(spec).display} is already listed")
        except (PanelError, ValueError) as exc:
            self.status.error(str(exc))
            return None
        self._add_row(spec)
        self.status.info(f"added {LossSpec.from_any(spec).display}")
        return spec

    def _add_row(self, spec: dict[str, Any]) -> None:
        loss = LossSpec.from_any(spec)
        item = QListWidgetItem(loss.title, self.loss_list)
        item.setData(Qt.ItemDataRole.UserRole, dict(spec))
        self._describe_row(item)

    def _describe_row(self, item: QListWidgetItem) -> None:
        """The row's tooltip: its run folder, and what the loss computes once the catalog
        (and with it the registry) is loaded."""
        loss = LossSpec.from_any(item.data(Qt.ItemDataRole.UserRole))
        about = loss_tooltip(loss.name) if self._catalog is not None else ""
        item.setToolTip(f"{loss.label} (run folder runs/{loss.folder})\n{about}".strip())

    def _remove_selected(self) -> None:
        for item in self.loss_list.selectedItems():
            self.loss_list.takeItem(self.loss_list.row(item))

    def set_losses(self, entries: Sequence[str | Mapping[str, Any] | LossSpec]) -> None:
        """Replace the rows: ``"pm_dice:gamma=2"``, ``{"name": ..., "params": ...}`` or
        :class:`~napari_segloss.engine.loss_spec.LossSpec` (checked by the engine at Start)."""
        self.loss_list.clear()
        for entry in entries:
            self._add_row(loss_row(entry))

    def losses(self) -> list[dict[str, Any]]:
        """The rows as ``iter_compare`` takes them."""
        return [
            dict(self.loss_list.item(i).data(Qt.ItemDataRole.UserRole))
            for i in range(self.loss_list.count())
        ]

    # ---------------------------------------------------------------- the request
    def _layer_data(self, image_picker: LayerPicker, mask_picker: LayerPicker,
                    what: str) -> tuple[Pairs, int, int]:  # fmt: skip
        """``(pairs, in_channels, top label)`` of an image layer and its mask layer."""
        layer, image, mask = image_and_mask(image_picker, mask_picker, what, need_mask=False)
        rgb = bool(layer.rgb)
        pairs = layer_pairs(image, mask, rgb=rgb, name=layer.name)
        top = int(mask.max(initial=0)) if mask is not None else 1
        return pairs, (image.shape[-1] if rgb else 1), top

    def build_request(self) -> CompareRequest:
        """The comparison the widgets describe (main thread; the engine checks the rest)."""
        losses = self.losses()
        if not losses:
            raise PanelError("losses: add at least one loss to compare")
        seeds = parse_seeds(self.seeds_edit.text())
        overrides = parse_overrides(self.more_edit.toPlainText())
        text = self.output_edit.text().strip()
        if not text:
            raise PanelError("output folder: enter the folder the comparison writes into")
        output = Path(text).expanduser()
        saved = self.saved if self.saved is not None and self.saved.output == output else None
        size = self.size_spin.value()
        weights = self.weights_combo.currentText().strip()
        values: dict[str, Any] = {
            "data": {"val_fraction": self.val_spin.value(), "size": [size, size] if size else None},
            "model": {
                "arch": self.arch_combo.currentText(),
                "encoder": self.encoder_combo.currentText().strip(),
                "encoder_weights": None if weights.lower() in ("", "none") else weights,
            },
            "train": {
                "epochs": self.epochs_spin.value(),
                "batch_size": self.batch_spin.value(),
                "device": self.device_combo.currentText(),
                # Qt already runs the loop in a thread: loader processes would fork napari.
                "num_workers": 0,
                "log_every": 1,  # a progress event per step
            },
        }
        data = heldout = None
        score = self.score_combo.currentText()
        if self.source_combo.currentText() == "layers":
            data, channels, top = self._layer_data(self.image_picker, self.mask_picker, "")
            if score == "held-out layers":
                if same_layer(self.heldout_image_picker.layer(), self.image_picker.layer()):
                    raise PanelError(
                        "held-out image: it is the training image; the scores would be on "
                        "data the models trained on. Pick other layers, or score on the "
                        "validation split"
                    )
                heldout, _, h_top = self._layer_data(
                    self.heldout_image_picker, self.heldout_mask_picker, "held-out "
                )
                top = max(top, h_top)
            values["data"]["kind"] = "folder"
            values["model"].update(in_channels=channels, classes=classes_for(top))
            # the table's columns name the classes as the mask layer does ("Dice RV"); a
            # comparison saved without names keeps none, so that Start still resumes it
            names = class_names_for(layer_class_names(self.mask_picker.layer()), classes_for(top))
            if names and (saved is None or section(saved.base, "data", "class_names")):
                values["data"]["class_names"] = names
        else:
            root = self.folder_edit.text().strip()
            if not root:
                raise PanelError("folder: enter the folder holding images/ and masks/")
            kind = self.folder_kind.currentText()
            values["data"].update(kind=kind, root=_folder_text(root))
            if section(saved and saved.base, "data", "masks") is None:
                values["data"]["masks"] = "labels" if kind == "nifti" else "masks"
            if score == "held-out layers":  # the engine explains why this cannot be
                heldout, _, _ = self._layer_data(
                    self.heldout_image_picker, self.heldout_mask_picker, "held-out "
                )
        if score == "held-out folder":
            held = self.heldout_edit.text().strip()
            if not held:
                raise PanelError("held-out folder: enter it, or score on the validation split")
            values["data"]["test_root"] = _folder_text(held)
        elif score == "validation split":
            values["data"]["test_root"] = None
        base = merged(saved.base if saved is not None else None, values)
        title = saved.title if saved is not None else ""
        return CompareRequest(base, losses, seeds, output, overrides, data, heldout, title)

    def restore(self, saved: SavedSettings) -> None:
        """Fill the widgets from a comparison folder's settings (Start then resumes it)."""
        self.saved = saved
        self.set_losses(saved.losses)
        self.seeds_edit.setText(format_seeds(saved.seeds))
        base = saved.base or {}
        for combo, keys in ((self.arch_combo, ("model", "arch")),
                            (self.encoder_combo, ("model", "encoder"))):  # fmt: skip
            if section(base, *keys):
                combo.setCurrentText(str(section(base, *keys)))
        self.weights_combo.setCurrentText(str(section(base, "model", "encoder_weights") or "none"))
        for spin, keys in ((self.epochs_spin, ("train", "epochs")),
                           (self.batch_spin, ("train", "batch_size")),
                           (self.val_spin, ("data", "val_fraction"))):  # fmt: skip
            if section(base, *keys) is not None:
                spin.setValue(section(base, *keys))
        size = section(base, "data", "size")
        self.size_spin.setValue(int(size[0]) if size else 0)
        self.source_combo.setCurrentText("layers" if saved.from_layers else "folder")
        if not saved.from_layers and saved.data_root:
            self.folder_edit.setText(saved.data_root)
            self.folder_kind.setCurrentText(str(section(base, "data", "kind") or "folder"))
        if saved.test_root is None:
            self.score_combo.setCurrentText("validation split")
        elif saved.heldout_layers:
            self.score_combo.setCurrentText("held-out layers")
        else:
            self.score_combo.setCurrentText("held-out folder")
            self.heldout_edit.setText(saved.test_root)

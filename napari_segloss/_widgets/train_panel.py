"""Train / Fine-tune panel: train or fine-tune a model on napari layers or a folder.

The panel builds a :class:`napari_segloss.engine.config.TrainConfig` from its widgets and runs
:func:`napari_segloss.engine.training.iter_train` in a napari generator thread worker.  Each
event the engine yields ("start", "step", "epoch", "done") updates the napari progress bar and
the embedded live plot on the main thread.  Stop sets a flag the engine checks between steps:
training ends at the next step and the model trained so far is saved.  Finished checkpoints are
registered in :data:`._state.CHECKPOINTS` so the Predict & Compare panel can use them at once.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from qtpy.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QStackedWidget,
    QVBoxLayout,
    QWidget,
)

from napari_segloss.engine.events import TrainDone, TrainEpoch, TrainEvent, TrainStart, TrainStep

from ._common import (
    CheckpointPicker,
    LayerPicker,
    PanelError,
    StatusLabel,
    check_same_shape,
    device_choices,
    image_array,
    labels_array,
    new_worker,
    release_gpu_memory,
    require_layer,
    spatial_shape,
)
from ._compat import guard_triton
from ._plot import LivePlot
from ._state import CHECKPOINTS

if TYPE_CHECKING:
    import napari

ARCHS = ("Unet", "UnetPlusPlus", "FPN", "DeepLabV3Plus", "Linknet", "PSPNet", "MAnet", "PAN")
ENCODERS = (
    "resnet18",
    "resnet34",
    "resnet50",
    "mobilenet_v2",
    "efficientnet-b0",
    "timm-efficientnet-b0",
)
DEFAULT_RUNS_DIR = Path.home() / "napari-segloss-runs"


def layer_pairs(
    image: np.ndarray, mask: np.ndarray, rgb: bool
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Training pairs from one image layer and its mask: one pair for a 2D image, one per frame
    for a stack (``(N, Y, X, 3)`` RGB frames, or a grey volume ``(Z, Y, X)`` sliced for 2D
    models); frames without any label are kept (they teach background)."""
    single = image.ndim == (3 if rgb else 2)
    if single:
        return [image], [mask]
    return [image[z] for z in range(image.shape[0])], [mask[z] for z in range(mask.shape[0])]


def inspect_folder(root: Path, kind: str, masks: str, probe: int = 8) -> tuple[int, int]:
    """``(in_channels, model classes)`` from the first ``probe`` pairs of a data folder, so a
    new model fits the data (1 output channel for binary masks, K for labels 0..K-1)."""
    from napari_segloss.data.io import find_pairs, read_image, read_mask, read_nifti

    try:
        pairs = find_pairs(root, "images", masks, nifti=kind == "nifti")
        if kind == "nifti":
            in_channels = 1
            top = max(int(read_nifti(m)[0].max()) for _, m in pairs[:probe])
        else:
            first = read_image(pairs[0][0])
            in_channels = 3 if first.ndim == 3 else 1
            top = max(int(read_mask(m).max()) for _, m in pairs[:probe])
    except (OSError, ValueError) as exc:
        raise PanelError(f"folder: {exc}") from None
    return in_channels, (1 if top <= 1 else top + 1)


def split_pairs(
    images: list[np.ndarray], masks: list[np.ndarray], val_fraction: float
) -> tuple[tuple[list, list], tuple[list, list]]:
    """Last ``val_fraction`` of the pairs (at least one) for validation; a single pair is used
    for both (fine-tuning on the image in view: validation then measures the fit)."""
    n = len(images)
    if n == 1:
        return (images, masks), (images, masks)
    n_val = min(n - 1, max(1, round(n * val_fraction)))
    return (images[:-n_val], masks[:-n_val]), (images[-n_val:], masks[-n_val:])


class TrainWidget(QWidget):
    """The "Train / Fine-tune" dock widget (see module docstring)."""

    def __init__(self, napari_viewer: napari.viewer.Viewer, parent: QWidget | None = None) -> None:
        from napari.layers import Image, Labels

        from ._forms import LossParamForm as _LossParamForm

        super().__init__(parent)
        self.viewer = napari_viewer
        self._worker: Any = None
        self._stop = threading.Event()
        self._progress: Any = None
        self._max_iterations = 0
        self._epochs = 1
        self.last_result: TrainDone | None = None
        self._LossParamForm = _LossParamForm
        root = QVBoxLayout(self)

        # --- data
        box = QGroupBox("Data", self)
        form = QFormLayout(box)
        self.source_combo = QComboBox(box)
        self.source_combo.addItems(["layers", "folder"])
        form.addRow("from", self.source_combo)
        self.data_stack = QStackedWidget(box)
        w = QWidget()
        f = QFormLayout(w)
        f.setContentsMargins(0, 0, 0, 0)
        self.image_picker = LayerPicker(self.viewer, (Image,))
        self.mask_picker = LayerPicker(self.viewer, (Labels,))
        f.addRow("image", self.image_picker)
        f.addRow("mask", self.mask_picker)
        self.data_stack.addWidget(w)
        w = QWidget()
        f = QFormLayout(w)
        f.setContentsMargins(0, 0, 0, 0)
        self.folder_edit = QLineEdit(w)
        self.folder_edit.setPlaceholderText("folder with images/ and masks/")
        self.folder_kind = QComboBox(w)
        self.folder_kind.addItems(["folder", "nifti"])
        browse = QPushButton("Browse…", w)
        browse.clicked.connect(self._browse_folder)
        row = QHBoxLayout()
        row.addWidget(self.folder_edit, 1)
        row.addWidget(browse)
        f.addRow("root", row)
        f.addRow("kind", self.folder_kind)
        self.data_stack.addWidget(w)
        self.source_combo.currentIndexChanged.connect(self.data_stack.setCurrentIndex)
        form.addRow(self.data_stack)
        self.size_spin = QSpinBox(box)
        self.size_spin.setRange(0, 2048)
        self.size_spin.setSingleStep(32)
        self.size_spin.setValue(256)
        self.size_spin.setSpecialValueText("native")
        self.size_spin.setToolTip("resize images to size x size for training (0: native size)")
        form.addRow("size", self.size_spin)
        root.addWidget(box)

        # --- model
        box = QGroupBox("Model", self)
        form = QFormLayout(box)
        self.model_combo = QComboBox(box)
        self.model_combo.addItems(["new model", "fine-tune checkpoint"])
        form.addRow("start from", self.model_combo)
        self.model_stack = QStackedWidget(box)
        w = QWidget()
        f = QFormLayout(w)
        f.setContentsMargins(0, 0, 0, 0)
        self.arch_combo = QComboBox(w)
        self.arch_combo.addItems(ARCHS)
        self.encoder_combo = QComboBox(w)
        self.encoder_combo.setEditable(True)
        self.encoder_combo.addItems(ENCODERS)
        self.encoder_combo.setCurrentText("resnet34")
        self.weights_combo = QComboBox(w)
        self.weights_combo.setEditable(True)
        self.weights_combo.addItems(["none", "imagenet"])
        self.weights_combo.setToolTip("encoder weights: none, imagenet (download) or a local file")
        f.addRow("architecture", self.arch_combo)
        f.addRow("encoder", self.encoder_combo)
        f.addRow("encoder weights", self.weights_combo)
        self.model_stack.addWidget(w)
        self.ckpt_picker = CheckpointPicker()
        self.model_stack.addWidget(self.ckpt_picker)
        self.model_combo.currentIndexChanged.connect(self.model_stack.setCurrentIndex)
        form.addRow(self.model_stack)
        root.addWidget(box)

        # --- loss and optimisation
        box = QGroupBox("Loss and training", self)
        form = QFormLayout(box)
        self.loss_combo = QComboBox(box)
        try:
            from napari_segloss.losses import list_losses

            self.loss_combo.addItems(list_losses())
        except Exception:  # the panel still opens; Start reports the problem
            pass
        self.loss_combo.setCurrentText("pm_dice")
        self.loss_params = QStackedWidget(box)
        self._param_forms: dict[str, Any] = {}
        self.loss_combo.currentTextChanged.connect(self._show_loss_params)
        form.addRow("loss", self.loss_combo)
        form.addRow(self.loss_params)
        self.epochs_spin = QSpinBox(box)
        self.epochs_spin.setRange(1, 10000)
        self.epochs_spin.setValue(20)
        self.batch_spin = QSpinBox(box)
        self.batch_spin.setRange(1, 1024)
        self.batch_spin.setValue(4)
        self.lr_spin = QDoubleSpinBox(box)
        self.lr_spin.setDecimals(6)
        self.lr_spin.setRange(1e-6, 1.0)
        self.lr_spin.setSingleStep(1e-4)
        self.lr_spin.setValue(5e-4)
        self.device_combo = QComboBox(box)
        self.device_combo.addItems(device_choices())
        self.output_edit = QLineEdit(str(DEFAULT_RUNS_DIR), box)
        self.output_edit.setToolTip("each run writes a time-stamped folder here")
        form.addRow("epochs", self.epochs_spin)
        form.addRow("batch size", self.batch_spin)
        form.addRow("learning rate", self.lr_spin)
        form.addRow("device", self.device_combo)
        form.addRow("runs folder", self.output_edit)
        root.addWidget(box)
        self._show_loss_params(self.loss_combo.currentText())

        row = QHBoxLayout()
        self.start_button = QPushButton("Start", self)
        self.stop_button = QPushButton("Stop", self)
        self.stop_button.setEnabled(False)
        self.start_button.clicked.connect(self.start)
        self.stop_button.clicked.connect(self.stop)
        row.addWidget(self.start_button)
        row.addWidget(self.stop_button)
        root.addLayout(row)
        self.status = StatusLabel(self)
        root.addWidget(self.status)
        self.plot = LivePlot(self)
        self.plot.setMinimumHeight(200)
        root.addWidget(self.plot)
        root.addStretch(1)
        self.status.info("pick data, a model and a loss, then Start")

    # ------------------------------------------------------------------ helpers
    def _show_loss_params(self, name: str) -> None:
        if not name:
            return
        if name not in self._param_forms:
            form = self._LossParamForm(name)
            self._param_forms[name] = form
            self.loss_params.addWidget(form)
        self.loss_params.setCurrentWidget(self._param_forms[name])

    def _browse_folder(self) -> None:
        from qtpy.QtWidgets import QFileDialog

        path = QFileDialog.getExistingDirectory(self, "Training data folder")
        if path:
            self.folder_edit.setText(path)

    @property
    def busy(self) -> bool:
        return self._worker is not None

    # ------------------------------------------------------------------ config
    def build_config(self) -> tuple[Any, tuple[Any, Any] | None, Path | None]:
        """``(TrainConfig, datasets or None, init_checkpoint or None)`` from the widgets."""
        from napari_segloss.engine.config import ConfigError, load_config

        loss_name = self.loss_combo.currentText()
        if not loss_name:
            raise PanelError("loss: none available (the loss registry failed to load)")
        params = self._param_forms[loss_name].values()
        stamp = time.strftime("%Y%m%d-%H%M%S")
        output = Path(self.output_edit.text().strip() or DEFAULT_RUNS_DIR).expanduser()
        size = self.size_spin.value()
        data: dict[str, Any] = {"val_fraction": 0.2}
        if size:
            data["size"] = [size, size]
        datasets = None
        arrays: tuple[list, list, list, list] | None = None
        if self.source_combo.currentIndex() == 0:
            image_layer = require_layer(self.image_picker.layer(), "image")
            mask_layer = require_layer(self.mask_picker.layer(), "mask")
            image = image_array(image_layer)
            mask = labels_array(mask_layer, "mask")
            check_same_shape(spatial_shape(image_layer), mask, "the image", "mask")
            rgb = bool(image_layer.rgb)
            images, masks = layer_pairs(image, mask, rgb)
            (ti, tm), (vi, vm) = split_pairs(images, masks, data["val_fraction"])
            arrays = (ti, tm, vi, vm)
            data.update(kind="folder", root=str(output / "napari-layers"))
            in_channels = 3 if rgb else 1
            top = int(mask.max(initial=0))
            classes = 1 if top <= 1 else top + 1
        else:
            root = self.folder_edit.text().strip()
            if not root or not Path(root).expanduser().is_dir():
                raise PanelError(
                    f"folder: expected an existing folder with images/ and masks/, got {root!r}"
                )
            kind = self.folder_kind.currentText()
            data.update(kind=kind, root=str(Path(root).expanduser()))
            if kind == "nifti":
                data["masks"] = "labels"
            in_channels, classes = inspect_folder(
                Path(data["root"]), kind, data.get("masks", "masks")
            )
        model: dict[str, Any] = {
            "arch": self.arch_combo.currentText(),
            "encoder": self.encoder_combo.currentText(),
        }
        weights = self.weights_combo.currentText().strip()
        model["encoder_weights"] = None if weights.lower() in ("", "none") else weights
        init = None
        if self.model_combo.currentIndex() == 1:
            init = self.ckpt_picker.require()
            from napari_segloss.engine.checkpoint import load_checkpoint, model_config_from_meta

            meta = load_checkpoint(init).get("meta", {})
            model = model_config_from_meta(meta).model_dump()
            model["encoder_weights"] = None  # the checkpoint's weights replace any download
            if in_channels is not None and model["in_channels"] != in_channels:
                raise PanelError(
                    f"checkpoint: expects {model['in_channels']} input channel(s), the image has {in_channels}"
                )
            if classes is not None and model["classes"] < classes:
                raise PanelError(
                    f"checkpoint: predicts {model['classes']} class channel(s), the mask has labels up to {classes - 1}"
                )
        else:
            if in_channels is not None:
                model["in_channels"] = in_channels
            if classes is not None:
                model["classes"] = classes
        device = self.device_combo.currentText()
        cfg_dict = {
            "data": data,
            "model": model,
            "loss": {"name": loss_name, "params": params},
            "optim": {"lr": float(self.lr_spin.value())},
            "train": {
                "epochs": self.epochs_spin.value(),
                "batch_size": self.batch_spin.value(),
                "device": device,
                # Qt already runs the loop in a thread: loader processes would fork napari.
                "num_workers": 0,
                "amp": device != "cpu",
                "log_every": 1,
            },
            "output": str(output / f"{stamp}-{loss_name.replace('+', '_')}"),
        }
        try:
            cfg = load_config(cfg_dict)
        except (ConfigError, ValueError) as exc:
            raise PanelError(str(exc)) from None
        if arrays is not None:
            datasets = self._array_datasets(cfg, *arrays)
        return cfg, datasets, init

    @staticmethod
    def _array_datasets(cfg: Any, ti: list, tm: list, vi: list, vm: list) -> tuple[Any, Any]:
        from napari_segloss.data.datasets import ArrayDataset

        # The same settings build_datasets gives folder data; validation re-uses the
        # training normalisation (as build_datasets does).
        d = cfg.data
        common: dict[str, Any] = {
            "size": d.size,
            "crop": d.crop,
            "augment": d.augment,
            "augmentation": d.augmentation,
            "cache": d.cache,
            "normalize": d.normalize,
            "in_channels": cfg.model.in_channels,
        }
        train_ds = ArrayDataset(ti, tm, train=True, **common)
        val_ds = ArrayDataset(vi, vm, train=False, normalization=train_ds.normalization, **common)
        return train_ds, val_ds

    # ------------------------------------------------------------------ run
    def start(self) -> None:
        if self.busy:
            return
        guard_triton()  # before importing the engine (see _compat)
        try:
            cfg, datasets, init = self.build_config()
        except (OSError, ValueError) as exc:
            self.status.exception(exc, (PanelError,))
            return
        from napari_segloss.engine.training import iter_train

        self._stop.clear()
        stop = self._stop

        def run() -> Any:
            try:
                yield from iter_train(
                    cfg,
                    should_stop=stop.is_set,
                    datasets=datasets,
                    init_checkpoint=init,
                    progress=False,
                )
            finally:
                release_gpu_memory()

        self.plot.clear()
        self.last_result = None
        self._epochs = cfg.train.epochs
        self._worker = new_worker(
            run, yielded=self._on_event, errored=self._on_error, finished=self._on_finished
        )
        self.start_button.setEnabled(False)
        self.stop_button.setEnabled(True)
        self.status.info(f"starting: {cfg.model.arch}/{cfg.model.encoder}, loss {cfg.loss.name}…")
        self._worker.start()

    def stop(self) -> None:
        """Ask the engine to stop at the next step (it saves what it has)."""
        if self.busy:
            self._stop.set()
            self.stop_button.setEnabled(False)
            self.status.info("stopping after the current step…")

    def _on_event(self, ev: TrainEvent) -> None:
        nan = float("nan")
        if isinstance(ev, TrainStart):
            from napari.utils import progress

            self._max_iterations = ev.max_iterations
            self._progress = progress(total=self._max_iterations or None, desc="segloss training")
            self.status.info(f"training on {ev.device} → {ev.run_dir}")
        elif isinstance(ev, TrainStep):
            if self._progress is not None:
                self._progress.n = ev.iteration
                self._progress.refresh()
            per_epoch = self._max_iterations / max(self._epochs, 1) if self._max_iterations else 1
            self.plot.add_step(ev.iteration / per_epoch, ev.loss)
        elif isinstance(ev, TrainEpoch):
            val_loss = nan if ev.val_loss is None else ev.val_loss
            val_dice = nan if ev.val_dice is None else ev.val_dice
            self.plot.add_epoch(ev.epoch, ev.train_loss, val_loss, val_dice)
            self.status.info(
                f"epoch {ev.epoch}: train loss {ev.train_loss:.4f}, "
                f"val loss {val_loss:.4f}, val Dice {val_dice:.4f}"
            )
        elif isinstance(ev, TrainDone):
            self.last_result = ev
            if ev.checkpoint is not None:
                CHECKPOINTS.add(ev.checkpoint)
            how = "stopped" if ev.stopped else "finished"
            best_s = f", best val Dice {ev.best_dice:.4f}" if ev.best_dice is not None else ""
            self.status.info(f"{how} ({ev.reason}){best_s}; checkpoint {ev.checkpoint}")

    def _on_error(self, exc: BaseException) -> None:
        self.status.error(f"training failed: {type(exc).__name__}: {exc}")

    def _on_finished(self) -> None:
        self._worker = None
        if self._progress is not None:
            self._progress.close()
            self._progress = None
        self.start_button.setEnabled(True)
        self.stop_button.setEnabled(False)
        release_gpu_memory()

    def closeEvent(self, event: Any) -> None:
        self._stop.set()
        release_gpu_memory()
        super().closeEvent(event)

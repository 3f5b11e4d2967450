"""A training run described by a few choices (what the napari Train panel asks a person), and
the validated :class:`~.config.TrainConfig` it becomes.

:class:`TrainRequest` holds plain values: the data (arrays of napari layers, or a folder), the
model (a new one, or a checkpoint to fine-tune), the loss and the loop settings.
:func:`build_config` turns it into a ``TrainConfig`` once the model section is known, which
needs the data or the checkpoint: :func:`napari_segloss.engine.prepare.prepare_request` reads those
(torch). This module is torch-free, so the panel builds a request on the main thread and the
heavy work happens in its thread worker.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from .config import ConfigError, ModelConfig, TrainConfig, load_config

__all__ = [
    "LayerData",
    "TrainRequest",
    "build_config",
    "checkpoint_model_section",
    "class_names_for",
    "masks_folder",
    "new_model_section",
    "run_folder",
]

#: validation share of the frames of a layer (or of a folder's pairs)
VAL_FRACTION = 0.2


def class_names_for(names: Sequence[str] | None, classes: int) -> list[str] | None:
    """``data.class_names`` for a model of ``classes`` output channels from a layer's names
    (background first), or None when they do not name every label (a layer may name absent
    labels too: the extra names are dropped)."""
    labels = max(int(classes), 2)  # one channel: binary, two labels
    names = tuple(names or ())
    return list(names[:labels]) if len(names) >= labels else None


@dataclass(frozen=True)
class LayerData:
    """An image (2D, a stack of frames, or an RGB image/stack when ``rgb``) and its integer
    mask of the same spatial shape, e.g. the data of two napari layers. ``mask_name`` names
    the mask in messages (its layer); ``class_names`` (by label value, background first) go
    to the run's ``data.class_names``, its metrics and its checkpoint."""

    image: np.ndarray
    mask: np.ndarray
    rgb: bool = False
    mask_name: str = "mask"
    class_names: tuple[str, ...] | None = None


@dataclass(frozen=True)
class TrainRequest:
    """One training run as a person chooses it; see the module docstring.

    Exactly one of ``layers`` and ``folder`` is given. ``checkpoint``: fine-tune these weights
    (their architecture replaces ``arch``/``encoder``). ``size``: images are resized to
    ``size x size`` for training (None: native size).
    """

    output: Path
    layers: LayerData | None = None
    folder: Path | None = None
    folder_kind: Literal["folder", "nifti"] = "folder"
    loss: str = "pm_dice"
    loss_params: Mapping[str, Any] = field(default_factory=dict)
    arch: str = "Unet"
    encoder: str = "resnet34"
    encoder_weights: str | None = None
    checkpoint: Path | None = None
    size: int | None = 256
    epochs: int = 20
    batch_size: int = 4
    lr: float = 5e-4
    device: str = "auto"
    val_fraction: float = VAL_FRACTION

    def __post_init__(self) -> None:
        if (self.layers is None) == (self.folder is None):
            raise ValueError("TrainRequest: give either layers or folder (exactly one)")


def masks_folder(kind: str) -> str:
    """The masks sub-folder of a data folder: ``masks`` (2D images), ``labels`` (NIfTI)."""
    return "labels" if kind == "nifti" else "masks"


def run_folder(runs_dir: str | Path, loss: str, stamp: str | None = None) -> Path:
    """``runs_dir/<YYYYmmdd-HHMMSS>-<loss>``: a new folder name for each run."""
    stamp = stamp or time.strftime("%Y%m%d-%H%M%S")
    return Path(runs_dir).expanduser() / f"{stamp}-{loss.replace('+', '_')}"


def new_model_section(request: TrainRequest, in_channels: int, classes: int) -> dict[str, Any]:
    """The ``model:`` section of a new model fitted to the data's channels and classes."""
    weights = (request.encoder_weights or "").strip()
    return {
        "arch": request.arch,
        "encoder": request.encoder,
        "encoder_weights": None if weights.lower() in ("", "none") else weights,
        "in_channels": in_channels,
        "classes": classes,
    }


def checkpoint_model_section(model: ModelConfig, in_channels: int, classes: int) -> dict[str, Any]:
    """The ``model:`` section of a checkpoint's model (:class:`ModelConfig` from its meta),
    checked against the data: same input channels, enough class channels.

    Raises:
        ConfigError: naming what the checkpoint expects and what the data has.
    """
    if model.in_channels != in_channels:
        raise ConfigError(
            f"checkpoint: expects {model.in_channels} input channel(s), the images have "
            f"{in_channels}"
        )
    if model.classes < classes:
        raise ConfigError(
            f"checkpoint: predicts {model.classes} class channel(s), the masks have labels up "
            f"to {classes - 1}"
        )
    section = model.model_dump()
    section["encoder_weights"] = None  # the checkpoint's weights replace any download
    return section


def build_config(request: TrainRequest, model: Mapping[str, Any]) -> TrainConfig:
    """The validated :class:`TrainConfig` of ``request`` with ``model`` as its model section.

    Layer data get ``data.kind: folder`` with a placeholder root under the run folder (the
    arrays are passed to the loop as datasets; ``config.yaml`` records the other settings).

    Raises:
        ConfigError: one line naming the bad key.
    """
    data: dict[str, Any] = {"val_fraction": request.val_fraction}
    if request.size:
        data["size"] = [request.size, request.size]
    if request.layers is not None:
        data.update(kind="folder", root=str(request.output.parent / "napari-layers"))
        names = class_names_for(request.layers.class_names, int(model["classes"]))
        if names is not None:
            data["class_names"] = names
    else:
        data.update(kind=request.folder_kind, root=str(Path(request.folder).expanduser()))
        data["masks"] = masks_folder(request.folder_kind)
    tree = {
        "data": data,
        "model": dict(model),
        "loss": {"name": request.loss, "params": dict(request.loss_params)},
        "optim": {"lr": float(request.lr)},
        "train": {
            "epochs": request.epochs,
            "batch_size": request.batch_size,
            "device": request.device,
            # The napari panel runs the loop in a thread: loader processes would fork napari.
            "num_workers": 0,
            "amp": request.device != "cpu",
            "log_every": 1,
        },
        "output": str(request.output),
    }
    return load_config(tree)

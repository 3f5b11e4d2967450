"""Everything a :class:`~.request.TrainRequest` needs before its first step: the model section
(fitted to the data, or read from the checkpoint to fine-tune), the validated config and, for
in-memory data, the datasets.

Reads files and imports torch: the napari Train panel calls :func:`prepare_request` in its thread
worker, then passes the result to :func:`~.training.iter_train`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..data.datasets import ArrayDataset, SegmentationDataset
from ..data.factory import dataset_settings
from ..data.pairs import (
    check_mask_labels,
    inspect_folder,
    layer_frames,
    mask_labels,
    model_classes,
    split_frames,
)
from .checkpoint import load_checkpoint, model_config_from_meta
from .config import ConfigError, TrainConfig
from .model import spatial_dims_of
from .request import (
    TrainRequest,
    build_config,
    checkpoint_model_section,
    masks_folder,
    new_model_section,
)

__all__ = ["PreparedRun", "array_datasets", "prepare_request"]

Frames = tuple[Sequence[np.ndarray], Sequence[np.ndarray]]


@dataclass(frozen=True)
class PreparedRun:
    """What :func:`~.training.iter_train` takes: the config, the datasets of in-memory data
    (None for a folder: the loop builds them from ``config.data``) and the weights to start
    from (None for a new model)."""

    config: TrainConfig
    datasets: tuple[SegmentationDataset, SegmentationDataset] | None
    init_checkpoint: Path | None


def array_datasets(
    cfg: TrainConfig, train: Frames, val: Frames
) -> tuple[ArrayDataset, ArrayDataset | None]:
    """``(train, validation)`` :class:`ArrayDataset` with the settings ``build_datasets`` gives
    folder data (resize, crop, augmentation, caching); validation reuses the training
    normalisation (None without validation frames)."""
    common = dataset_settings(cfg)
    train_ds = ArrayDataset(*train, train=True, **common)
    if not val[0]:
        return train_ds, None
    val_ds = ArrayDataset(*val, train=False, normalization=train_ds.normalization, **common)
    return train_ds, val_ds


def _refuse_3d_network(checkpoint: Path, arch: str) -> None:
    """The panel trains 2D networks (on images, frames or the slices of a volume); a 3D
    checkpoint failed later with a config-key message about data.slices, a key the panel
    has no control for."""
    if spatial_dims_of(arch) == 3:
        raise ConfigError(
            f"checkpoint {Path(checkpoint).name!r} is a 3D network ({arch}); this panel trains 2D "
            "networks (a volume's slices as 2D images). Fine-tune it on NIfTI volumes with "
            f"segloss train --config <its run folder>/config.yaml --init-checkpoint {Path(checkpoint)}"
        )


def prepare_request(request: TrainRequest) -> PreparedRun:
    """The config, datasets and initial weights of ``request`` (see the module docstring).

    Raises:
        ValueError (``ConfigError``, ``CheckpointError``, ``DataError``): naming the folder,
        checkpoint or key that was wrong.
    """
    frames, labels, labels_of = None, None, ""
    if request.layers is not None:
        layers = request.layers
        frames = layer_frames(layers.image, layers.mask, rgb=layers.rgb)
        in_channels = 3 if layers.rgb else 1
        # all labels, not just the highest: {0, 9} must not become 10 classes (see check)
        labels, labels_of = mask_labels(layers.mask), f"layer {layers.mask_name!r}"
        classes = model_classes(max(labels, default=0))
    else:
        summary = inspect_folder(
            request.folder, request.folder_kind, masks=masks_folder(request.folder_kind)
        )
        in_channels, classes = summary.in_channels, summary.classes
        labels, labels_of = list(summary.labels), f"the masks of folder {str(request.folder)!r}"
    if request.checkpoint is not None:
        meta = load_checkpoint(request.checkpoint).get("meta", {})
        ckpt_model = model_config_from_meta(meta)
        _refuse_3d_network(request.checkpoint, ckpt_model.arch)
        if labels is not None:
            check_mask_labels(labels, labels_of, ckpt_model.classes)
        model = checkpoint_model_section(ckpt_model, in_channels, classes)
    else:
        if labels is not None:
            check_mask_labels(labels, labels_of)
        model = new_model_section(request, in_channels, classes)
    cfg = build_config(request, model)
    datasets = None
    if frames is not None:
        datasets = array_datasets(cfg, *split_frames(*frames, cfg.data.val_fraction))
    return PreparedRun(config=cfg, datasets=datasets, init_checkpoint=request.checkpoint)

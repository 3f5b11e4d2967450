"""Training engine: config, model factory, checkpoints, training loop, inference, distributed.

Imports neither Qt nor napari. Sub-modules load lazily so ``import napari_segloss.engine`` is
cheap; the main entry points are re-exported here on first access::

    from napari_segloss.engine import load_config, train, iter_train, build_model, load_model
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "ConfigError": "config",
    "TrainConfig": "config",
    "DataConfig": "config",
    "ModelConfig": "config",
    "LossConfig": "config",
    "OptimConfig": "config",
    "TrainSection": "config",
    "load_config": "config",
    "build_model": "model",
    "UNet3D": "unet3d",
    "CheckpointError": "checkpoint",
    "save_checkpoint": "checkpoint",
    "load_checkpoint": "checkpoint",
    "load_model": "checkpoint",
    "iter_train": "training",
    "train": "training",
    "DistInfo": "distributed",
    "init_distributed": "distributed",
    "is_main_process": "distributed",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    if name in {
        "config",
        "model",
        "unet3d",
        "checkpoint",
        "training",
        "distributed",
        "inference",
        "compare",
    }:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

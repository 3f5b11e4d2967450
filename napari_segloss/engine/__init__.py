"""Training engine: config, model factory, checkpoints, training loop, inference, distributed.

Imports neither Qt nor napari. Sub-modules load lazily so ``import napari_segloss.engine`` is
cheap; the main entry points are re-exported here on first access::

    from napari_segloss.engine import load_config, train, iter_train, build_model, load_model
    from napari_segloss.engine import iter_compare, read_compare

Modules: ``config`` (YAML + pydantic), ``model`` / ``unet3d`` (networks), ``checkpoint``,
``safeload`` (tensors-only ``torch.load``), ``inference`` (prediction) over ``tiling`` (the
whole-image and sliding-window passes validation shares), ``training`` (the
loop) with its stages ``run_state`` (set-up), ``sampling`` (order, seeds, RNG state),
``evaluation`` (validation, eval.json), ``rundir`` (run directory, lock) and ``events`` (what
the loop yields), ``devices`` (the device rule and the autocast dtype), ``runtime`` (loader
workers, determinism, signals), ``request`` / ``prepare`` (a training request from a panel's
form and its datasets), ``distributed``,
``compare`` (losses x seeds, one run after another) with ``loss_spec`` (what is compared) and
``compare_results`` (its results folder and reader; no torch), ``allocator`` (glibc malloc
tuning of the command-line entry points).
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
    "TrainStart": "events",
    "TrainStep": "events",
    "TrainEpoch": "events",
    "TrainDone": "events",
    "TrainEvent": "events",
    "CompareStart": "events",
    "CompareRunInfo": "events",
    "CompareRunStart": "events",
    "CompareRunProgress": "events",
    "CompareRunDone": "events",
    "CompareDone": "events",
    "CompareEvent": "events",
    "iter_compare": "compare",
    "run_compare": "compare",
    "LossSpec": "loss_spec",
    "CompareResults": "compare_results",
    "read_compare": "compare_results",
    "DistInfo": "distributed",
    "init_distributed": "distributed",
    "is_main_process": "distributed",
}

_SUBMODULES = {
    "allocator",
    "checkpoint",
    "compare",
    "compare_results",
    "config",
    "devices",
    "distributed",
    "evaluation",
    "events",
    "inference",
    "loss_spec",
    "model",
    "prepare",
    "request",
    "run_state",
    "rundir",
    "runtime",
    "safeload",
    "sampling",
    "tiling",
    "training",
    "unet3d",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

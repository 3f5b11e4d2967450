"""The tiny training config of the torchrun scripts (``_dist_*_script.py``; not a test module)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from napari_segloss.engine import load_config


def tiny_config(data_root: Path, output: Path, *, epochs: int, **data: Any) -> Any:
    """A 32-px Unet (resnet10t, depth 3) with ``ce+pm_dice``, batch 2, one log per step;
    ``data`` adds keys of the ``data`` section (e.g. ``crop``)."""
    return load_config(
        {
            "data": {"root": str(data_root), "size": [32, 32], "val_fraction": 0.25, **data},
            "model": {
                "arch": "Unet",
                "encoder": "tu-resnet10t",
                "kwargs": {"encoder_depth": 3, "decoder_channels": [16, 8, 4]},
            },
            "loss": {"name": "ce+pm_dice"},
            "train": {"epochs": epochs, "batch_size": 2, "num_workers": 0, "log_every": 1},
            "output": str(output),
        }
    )

"""The tiny training config of the tests that train on the bundled samples (not a test module)."""

from __future__ import annotations

from typing import Any

from napari_segloss.samples import sample_pairs_dir


def sample_config(*, batch_size: int = 4, num_workers: int = 0, **data: Any) -> dict[str, Any]:
    """A tiny U-Net (mobilenet_v2, 3 stages) for 1 CPU epoch on the bundled ``kvasir_train``
    pairs at 64 px, validation on the overlap metrics; ``data`` overrides the data section."""
    return {
        "data": {
            "root": str(sample_pairs_dir("kvasir_train")),
            "val_fraction": 0.2,
            "size": [64, 64],
            "augment": False,
            **data,
        },
        "model": {
            "encoder": "mobilenet_v2",
            "encoder_weights": None,
            "kwargs": {"encoder_depth": 3, "decoder_channels": [16, 8, 4]},
        },
        "train": {
            "epochs": 1,
            "batch_size": batch_size,
            "num_workers": num_workers,
            "device": "cpu",
            "val_metrics": "overlap",
        },
    }

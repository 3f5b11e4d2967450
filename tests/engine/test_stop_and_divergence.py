"""What a stop or a diverging run leaves on disk: never untrained or non-finite weights over a
run's files (CPU, tiny model, seconds)."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import pytest

from napari_segloss.engine import training
from napari_segloss.engine.config import load_config
from napari_segloss.engine.training import train

TINY_MODEL = {
    "arch": "Unet",
    "encoder": "tu-resnet10t",
    "kwargs": {"encoder_depth": 3, "decoder_channels": [16, 8, 4]},
}

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # see tests/conftest.py


def make_cfg(root: Path, out: Path, *overrides: str) -> Any:
    """6 training images, batch 2: 3 steps per epoch; 2 validation images."""
    return load_config(
        {
            "data": {"root": str(root), "size": [32, 32], "crop": [24, 24], "val_fraction": 0.25},
            "model": TINY_MODEL,
            "loss": {"name": "pm_dice", "params": {"gamma": 1.0}},
            "train": {"epochs": 1, "batch_size": 2, "num_workers": 0, "log_every": 1},
            "output": str(out),
        },
        list(overrides),
    )


def _files(run: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(run.iterdir())}


def test_ctrl_c_while_the_data_loads_writes_nothing(
    squares_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = tmp_path / "old"
    assert not train(make_cfg(squares_root, old), progress=False).stopped
    before = _files(old)
    real_prepare = training.prepare_run

    def ctrl_c_during_set_up(*args: Any, **kwargs: Any) -> Any:
        signal.raise_signal(signal.SIGINT)  # a real Ctrl-C, caught by the run's handler
        return real_prepare(*args, **kwargs)

    monkeypatch.setattr(training, "prepare_run", ctrl_c_during_set_up)
    # train.overwrite: the old run is replaced only by a run that trained; none did
    done = train(make_cfg(squares_root, old, "train.overwrite=true"), progress=False)
    assert done.stopped and done.interrupted and done.iteration == 0
    assert _files(old) == before  # best.pt, eval.json, metrics.csv of the old run intact
    assert "nothing was written" in done.reason
    # a new output folder: no untrained "run" left that a rerun would have to overwrite
    new = tmp_path / "new"
    done = train(make_cfg(squares_root, new), progress=False)
    assert done.stopped and done.checkpoint is None and not new.exists()
    # a resumed run stopped at once keeps its checkpoint as it was
    done = train(make_cfg(squares_root, old, "train.epochs=2"), resume=True, progress=False)
    assert done.stopped and _files(old)["checkpoint.pt"] == before["checkpoint.pt"]

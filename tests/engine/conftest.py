"""Fixtures shared by the engine tests: tiny synthetic image folders, checkpoints, CSV rows."""

from __future__ import annotations

import csv
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from napari_segloss.engine.checkpoint import save_checkpoint
from napari_segloss.engine.config import ModelConfig
from napari_segloss.engine.model import build_model

#: a U-Net small enough for CPU tests (mobilenet_v2 encoder, 3 stages)
TINY_KW = {"encoder_depth": 3, "decoder_channels": [16, 8, 4]}


def _write_squares(root: Path, n: int = 8, hw: tuple[int, int] = (40, 40), labels: int = 2) -> Path:
    """Bright squares on a dark noisy background; masks mark the squares (``{0, 255}`` PNGs
    for ``labels=2``, else label ``1 + i % (labels - 1)`` in image ``i``)."""
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in range(n):
        mask = np.zeros(hw, np.uint8)
        y, x = rng.integers(4, hw[0] - 14, 2)
        mask[y : y + 10, x : x + 10] = 1 + (i % (labels - 1))
        img = (rng.random((*hw, 3)) * 60 + (mask[..., None] > 0) * 150).astype(np.uint8)
        Image.fromarray(img).save(root / "images" / f"im{i}.png")
        Image.fromarray(mask if labels > 2 else mask * 255).save(root / "masks" / f"im{i}.png")
    return root


def _write_tiny_checkpoint(
    path: Path, in_channels: int, classes: int = 1, *, scale: str = "uint8", **meta: Any
) -> Path:
    """A random-weight U-Net (mobilenet_v2, :data:`TINY_KW`) checkpoint in the engine's format,
    trained on ``crop`` 32; its normalisation is ``scale`` with mean 0 and std 1 unless
    ``meta`` overrides it (or any other meta key)."""
    torch.manual_seed(0)
    cfg = ModelConfig(
        encoder="mobilenet_v2", in_channels=in_channels, classes=classes, kwargs=TINY_KW
    )
    meta = {
        "format": "napari-segloss/1",
        "arch": "Unet",
        "encoder": "mobilenet_v2",
        "in_channels": in_channels,
        "classes": classes,
        "model_kwargs": TINY_KW,
        "spatial_dims": 2,
        "normalization": {"scale": scale, "mean": [0.0] * in_channels, "std": [1.0] * in_channels},
        "input_size": None,
        "crop": [32, 32],
        **meta,
    }
    save_checkpoint(path, {"model": build_model(cfg).state_dict(), "meta": meta})
    return path


def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="session")
def write_squares() -> Callable[..., Path]:
    """``write_squares(root, n=8, hw=(40, 40), labels=2) -> root``: an ``images/`` +
    ``masks/`` folder of bright squares (see ``_write_squares``)."""
    return _write_squares


@pytest.fixture(scope="module")
def squares_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """8 pairs of :func:`write_squares`, written once per test module (tests only read it)."""
    return _write_squares(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="session")
def write_checkpoint() -> Callable[..., Path]:
    """``write_checkpoint(path, in_channels, classes=1, *, scale="uint8", **meta) -> path``: a
    tiny random-weight checkpoint (see ``_write_tiny_checkpoint``)."""
    return _write_tiny_checkpoint


@pytest.fixture(scope="session")
def read_csv() -> Callable[[Path], list[dict[str, str]]]:
    """``read_csv(path)``: the rows of a CSV file (``metrics.csv``) as dicts."""
    return _read_csv


def _ctrl_c_at_call(n: int) -> Callable[[], bool]:
    """A ``should_stop`` hook that sends this process SIGINT (a real Ctrl-C) on its ``n``-th
    call and never asks to stop itself."""
    calls = {"n": 0}

    def hook() -> bool:
        calls["n"] += 1
        if calls["n"] == n:
            signal.raise_signal(signal.SIGINT)
        return False

    return hook


@pytest.fixture(scope="session")
def ctrl_c_at_call() -> Callable[[int], Callable[[], bool]]:
    """``ctrl_c_at_call(n)``: a ``should_stop`` hook pressing Ctrl-C at its n-th call."""
    return _ctrl_c_at_call

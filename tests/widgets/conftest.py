"""Fixtures for the napari panel tests (run under xvfb: ``xvfb-run -a python -m pytest tests/widgets``)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

PLUGIN = "napari-segloss"


@pytest.fixture
def dock(make_napari_viewer):
    """``dock(name) -> (viewer, widget)``: a fresh viewer with the panel docked from the manifest."""

    def _dock(name: str, viewer=None):
        viewer = viewer if viewer is not None else make_napari_viewer()
        _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, name)
        return viewer, widget

    return _dock


@pytest.fixture
def wait_idle(qtbot):
    """Block (processing Qt events) until a panel's worker is done."""

    def _wait(widget, timeout: int = 30_000) -> None:
        qtbot.waitUntil(lambda: not widget.busy, timeout=timeout)

    return _wait


@pytest.fixture(scope="session")
def modules_after_import() -> Callable[..., set[str]]:
    """``modules_after_import(*modules) -> names``: the ``torch*`` and ``napari_segloss*``
    modules loaded by importing ``modules`` in a fresh interpreter (what opening a panel
    costs before any of its workers runs)."""

    def _imported(*modules: str) -> set[str]:
        code = (
            "import json, sys\n"
            f"import {', '.join(modules)}\n"
            "print(json.dumps(sorted(m for m in sys.modules "
            "if m.startswith(('torch', 'napari_segloss')))))\n"
        )
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
        ).stdout
        return set(json.loads(out.strip().splitlines()[-1]))

    return _imported


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A small random-weight binary RGB U-Net checkpoint in the engine's format (fast on CPU)."""
    import torch

    from napari_segloss._widgets._compat import guard_triton

    guard_triton()  # a viewer may already have loaded Mesa's LLVM (see _compat)
    from napari_segloss.engine.checkpoint import CHECKPOINT_FORMAT, save_checkpoint
    from napari_segloss.engine.config import ModelConfig
    from napari_segloss.engine.model import build_model

    torch.manual_seed(0)
    kwargs = {"encoder_depth": 3, "decoder_channels": [16, 8, 8]}
    cfg = ModelConfig(arch="Unet", encoder="resnet18", in_channels=3, classes=1, kwargs=kwargs)
    model = build_model(cfg)
    meta = {
        "format": CHECKPOINT_FORMAT,
        "arch": "Unet",
        "encoder": "resnet18",
        "in_channels": 3,
        "classes": 1,
        "model_kwargs": kwargs,
        "num_classes": 2,
    }
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    save_checkpoint(path, {"model": model.state_dict(), "meta": meta})
    return path


@pytest.fixture(autouse=True)
def _clean_registry():
    """Session checkpoints registered by one test must not leak into another."""
    from napari_segloss._widgets._state import CHECKPOINTS

    CHECKPOINTS.clear()
    yield
    CHECKPOINTS.clear()


def _build_3d_checkpoint(path, class_names=None):
    """A random-weight grey 3D checkpoint (UNet3D, 4 classes) in the engine's format."""
    from napari_segloss._widgets._compat import guard_triton

    guard_triton()  # a viewer may already have loaded Mesa's LLVM (see _compat)
    from napari_segloss.engine.checkpoint import CHECKPOINT_FORMAT, save_checkpoint
    from napari_segloss.engine.config import ModelConfig
    from napari_segloss.engine.model import build_model

    kwargs = {"channels": [4, 8], "anisotropic_levels": 1}
    cfg = ModelConfig(arch="UNet3D", encoder="none", in_channels=1, classes=4, kwargs=kwargs)
    meta = {
        "format": CHECKPOINT_FORMAT, "arch": "UNet3D", "encoder": "none", "in_channels": 1,
        "classes": 4, "model_kwargs": kwargs, "spatial_dims": 3, "patch": [4, 32, 32],
        "num_classes": 4, "normalization": {"scale": "uint8", "mean": [0.0], "std": [1.0]},
        "class_names": class_names,
    }  # fmt: skip
    save_checkpoint(path, {"model": build_model(cfg).state_dict(), "meta": meta})
    return path


@pytest.fixture
def tiny_3d_checkpoint() -> Callable[..., Path]:
    """``tiny_3d_checkpoint(path, class_names=None)`` writes a random-weight UNet3D checkpoint."""
    return _build_3d_checkpoint

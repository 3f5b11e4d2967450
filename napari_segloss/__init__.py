"""napari-segloss: see, compare and train with imbalance-aware segmentation losses.

The core (``losses``, ``maps``, ``metrics``, ``overlay``, ``data``, ``engine``) imports neither
Qt nor napari, so ``import napari_segloss`` stays fast and works headless and in notebooks.
Sub-modules are imported lazily on first attribute access.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_SUBMODULES = {
    "losses",
    "maps",
    "metrics",
    "overlay",
    "data",
    "engine",
    "explorer",
    "whatif",
    "landscape",
    "plotting",
    "samples",
}

__all__ = ["__version__", *sorted(_SUBMODULES)]


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

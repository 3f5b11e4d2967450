"""napari dock widgets (Qt): thin panels over the core; long work runs in thread workers.

The manifest (``napari.yaml``) points at the panel modules; each panel class takes the viewer
as ``napari_viewer``. The panels are independent: opening one imports only its own module
(the names below are resolved on first access).
"""

from __future__ import annotations

import importlib
from typing import Any

from ._compat import guard_triton

# Before anything can import torch._dynamo (see _compat): a crash here would take napari down.
guard_triton()

_PANELS = {
    "CompareLossesWidget": "compare_panel",
    "LossExplorerWidget": "loss_explorer",
    "PredictWidget": "predict_panel",
    "TrainWidget": "train_panel",
}

__all__ = sorted(_PANELS)


def __getattr__(name: str) -> Any:
    if name in _PANELS:
        return getattr(importlib.import_module(f"{__name__}.{_PANELS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

"""napari dock widgets (Qt): thin panels over the core; long work runs in thread workers.

The manifest (``napari.yaml``) names the panel classes through this package; each takes the
viewer as ``napari_viewer``. The panels are independent: opening one imports only its own module
(the names below are resolved on first access, with the garbage collector paused).
"""

from __future__ import annotations

import importlib
from typing import Any

from ._compat import guard_triton
from ._gc import pause_collection, resume_collection

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
        # napari's manifest names the panels here, so their import (Qt, napari and magicgui
        # modules) runs with the collector paused, as the panel's opening does after it (see
        # _gc): a full collection falling in it froze the dock call for 0.13 s
        pause_collection()
        try:
            module = importlib.import_module(f"{__name__}.{_PANELS[name]}")
        finally:
            resume_collection()
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

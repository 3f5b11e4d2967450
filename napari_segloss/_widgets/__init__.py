"""napari dock widgets (Qt): thin panels over the core; long work runs in thread workers.

The manifest (``napari.yaml``) points at these classes; each takes the viewer as
``napari_viewer``.
"""

from __future__ import annotations

from ._compat import guard_triton

# Before anything can import torch._dynamo (see _compat): a crash here would take napari down.
guard_triton()

from .loss_explorer import LossExplorerWidget  # noqa: E402
from .predict_panel import PredictWidget  # noqa: E402
from .train_panel import TrainWidget  # noqa: E402

__all__ = ["LossExplorerWidget", "PredictWidget", "TrainWidget"]

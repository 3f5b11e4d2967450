"""napari dock widgets (Qt): thin panels over the core; long work runs in thread workers.

The manifest (``napari.yaml``) points at these classes; each takes the viewer as
``napari_viewer``.
"""

from __future__ import annotations

from .loss_explorer import LossExplorerWidget
from .predict_panel import PredictWidget
from .train_panel import TrainWidget

__all__ = ["LossExplorerWidget", "PredictWidget", "TrainWidget"]

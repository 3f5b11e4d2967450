"""Segmentation metrics: Dice, IoU, precision, recall, NSD (surface Dice) and HD95, 2D and 3D.

- :func:`evaluate` — per-class metrics of one label map (the PM-Dice paper's table metrics);
  :func:`evaluate_frames` — of a stack of unrelated 2D frames, frame by frame, then the mean.
- :func:`aggregate` — per-image results -> table rows (mean, std, median, count, NaN count);
  :func:`to_markdown` / :func:`to_csv` render them.
- :func:`confusion_matrix` / :func:`overlap_metrics` — batch overlap metrics in one bincount.
- :func:`surface_dice` — NSD exactly as Nikolov et al. 2018 (PM-Dice paper eq. 6).
- :func:`hausdorff_distance` — percentile Hausdorff distance (HD95), MONAI's definition.

Undefined cases give NaN (never a silent 0 or 1); aggregates skip NaN and count them.
"""

from __future__ import annotations

from .aggregate import AGGREGATE_COLUMNS, aggregate, to_csv, to_markdown
from .evaluate import METRICS, evaluate, evaluate_batch, evaluate_frames
from .overlap import OVERLAP_METRICS, confusion_matrix, overlap_from_confusion, overlap_metrics
from .surface import hausdorff_distance, surface_dice, surface_elements

__all__ = [
    "AGGREGATE_COLUMNS",
    "METRICS",
    "OVERLAP_METRICS",
    "aggregate",
    "confusion_matrix",
    "evaluate",
    "evaluate_batch",
    "evaluate_frames",
    "hausdorff_distance",
    "overlap_from_confusion",
    "overlap_metrics",
    "surface_dice",
    "surface_elements",
    "to_csv",
    "to_markdown",
]

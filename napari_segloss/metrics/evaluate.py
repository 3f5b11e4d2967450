"""Per-class evaluation of one prediction against its reference (the metrics of the PM-Dice tables).

``evaluate`` returns, for each class, the overlap metrics of :mod:`.overlap` and the surface
metrics of :mod:`.surface` (NSD at a tolerance, PM-Dice paper eq. 6, and HD95). The PM-Dice paper
reports the mean over the foreground classes (sec. 3.2), hence ``include_background=False``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from .aggregate import aggregate
from .inputs import (
    as_labels,
    check_same_shape,
    check_spacing,
    check_spatial_ndim,
    check_tolerance,
)
from .overlap import check_num_classes, confusion_counts, overlap_from_confusion
from .surface import nsd_of_masks, percentile_hausdorff

if TYPE_CHECKING:
    import torch

__all__ = ["METRICS", "evaluate", "evaluate_batch", "evaluate_frames"]

METRICS: tuple[str, ...] = ("dice", "iou", "precision", "recall", "nsd", "hd95")


def evaluate(
    pred: np.ndarray | torch.Tensor,
    gt: np.ndarray | torch.Tensor,
    *,
    num_classes: int | None = None,
    spacing: float | Sequence[float] | None = None,
    tolerance: float = 1.0,
    include_background: bool = False,
    surface: bool = True,
) -> dict[int, dict[str, float]]:
    """Per-class Dice, IoU, precision, recall, NSD and HD95 of one 2D or 3D label map.

    Args:
        pred: predicted integer labels (H, W) or (D, H, W), numpy or torch. Float arrays are
            accepted only with integral values (probability maps are rejected). A 3D array
            one voxel deep along any axis ((1, H, W): one slice, or ``argmax`` of a batch of
            one; (X, Y, 1): a one-slice NIfTI in file order) is scored as the 2D image it
            holds: as a slab one voxel deep, its top and bottom faces would count as boundary
            (NSD 0.97 for an eroded mask whose 2D NSD is 0).
        gt: reference labels, same shape.
        num_classes: K; labels must lie in ``[0, K)``. Default: ``max(label) + 1`` (at least 2).
        spacing: voxel size per axis (scalar = isotropic); NSD tolerance and HD95 use its units.
        tolerance: NSD tolerance τ (physical units, inclusive).
        include_background: also report class 0.
        surface: compute the surface metrics ``nsd`` and ``hd95`` (set False for a fast
            overlap-only evaluation; the two keys are then absent).

    Returns:
        ``{class_index: {"dice", "iou", "precision", "recall", "nsd", "hd95"}}``. A class absent
        from both maps has NaN for every metric; present in exactly one, 0 for Dice, IoU and NSD,
        NaN for the precision of an empty prediction and the recall of an empty reference
        (0/0) and ``inf`` for HD95 (distance to an empty set).
    """
    p = as_labels(pred, "pred")
    g = as_labels(gt, "gt")
    check_same_shape(p, g, "pred", "gt")
    check_spatial_ndim(p, "pred")
    sp = check_spacing(spacing, p.ndim)
    if p.ndim == 3 and 1 in p.shape:  # the 2D image it holds (see the docstring)
        axis = p.shape.index(1)
        p, g = p.squeeze(axis), g.squeeze(axis)
        sp = sp[:axis] + sp[axis + 1 :]
    tol = check_tolerance(tolerance)
    top = max(int(p.max()), int(g.max())) if p.size else 0
    k = max(top + 1, 2) if num_classes is None else check_num_classes(num_classes)
    ov = overlap_from_confusion(confusion_counts(p[None], g[None], k)[0])
    out: dict[int, dict[str, float]] = {}
    for c in range(0 if include_background else 1, k):
        row = {name: float(ov[name][c]) for name in ("dice", "iou", "precision", "recall")}
        if surface:
            pm, gm = p == c, g == c
            row["nsd"] = nsd_of_masks(pm, gm, tol, sp)
            row["hd95"] = percentile_hausdorff(pm, gm, 95.0, sp)
        out[c] = row
    return out


def evaluate_batch(
    preds: Iterable[Any], gts: Iterable[Any], **kwargs: Any
) -> list[dict[int, dict[str, float]]]:
    """:func:`evaluate` for each (pred, gt) pair; a batch array is iterated along its first axis.

    The result is what :func:`napari_segloss.metrics.aggregate` takes.
    """
    pred_list, gt_list = list(preds), list(gts)
    if len(pred_list) != len(gt_list):
        raise ValueError(
            f"preds and gts: expected the same number of images, got {len(pred_list)} and {len(gt_list)}"
        )
    if kwargs.get("num_classes") is None and pred_list:
        # One K for the whole batch so that every image reports the same classes.
        top = max(
            max(int(np.max(as_labels(x, "preds"))), int(np.max(as_labels(y, "gts"))))
            for x, y in zip(pred_list, gt_list, strict=True)
        )
        kwargs["num_classes"] = max(top + 1, 2)
    return [evaluate(x, y, **kwargs) for x, y in zip(pred_list, gt_list, strict=True)]


def evaluate_frames(
    pred: np.ndarray | torch.Tensor, gt: np.ndarray | torch.Tensor, **kwargs: Any
) -> dict[int, dict[str, float]]:
    """Per-class metrics of a stack of unrelated 2D frames ``(N, H, W)``: :func:`evaluate` of
    each frame, then the mean over the frames (NaN skipped, ``inf`` kept: the ``mean`` column of
    :func:`aggregate`, what ``segloss evaluate`` reports for a folder of images).

    Scoring such a stack as one volume pools the Dice over the frames and measures distances
    across them: a frame's whole mask becomes a boundary facing the next frame's.

    Args:
        pred, gt: integer labels, same shape ``(N, H, W)``.
        kwargs: as :func:`evaluate`; ``spacing`` is per frame (2 values or a scalar).
    """
    p, g = as_labels(pred, "pred"), as_labels(gt, "gt")
    check_same_shape(p, g, "pred", "gt")
    if p.ndim != 3:
        raise ValueError(f"pred: expected a stack of 2D frames (N, H, W), got shape {p.shape}")
    rows = aggregate(evaluate_batch(p, g, **kwargs), include_mean=False)
    out: dict[int, dict[str, float]] = {}
    for row in rows:
        out.setdefault(int(row["class"]), {})[row["metric"]] = row["mean"]
    return out

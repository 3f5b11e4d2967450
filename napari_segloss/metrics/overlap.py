"""Overlap metrics (Dice, IoU, precision, recall) for a batch of label maps in one pass.

The confusion matrix of every image is built with a single ``bincount`` over
``image * K * K + gt * K + pred`` (numpy, or torch on the tensors' device, so validation on a GPU
does not copy masks to the host). The metrics are the ones of the PM-Dice paper's tables
(Hosseini 2025, sec. 3.2): per class, from TP/FP/FN counts:

- dice = 2 TP / (2 TP + FP + FN)   - iou = TP / (TP + FP + FN)
- precision = TP / (TP + FP)       - recall = TP / (TP + FN)

A ratio 0/0 is undefined and gives NaN, never a silent 0 or 1: every metric of a class absent
from both prediction and reference, the precision of an empty prediction and the recall of an
empty reference. A class present in exactly one of them has Dice and IoU 0 (and precision 0
when only the prediction has it, recall 0 when only the reference has it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from .inputs import as_labels, check_same_shape, is_torch, torch_module

if TYPE_CHECKING:
    import torch

__all__ = [
    "OVERLAP_METRICS",
    "check_num_classes",
    "confusion_counts",
    "confusion_matrix",
    "overlap_from_confusion",
    "overlap_metrics",
]

OVERLAP_METRICS: tuple[str, ...] = ("dice", "iou", "precision", "recall")


def check_num_classes(num_classes: Any) -> int:
    """``num_classes`` as an int >= 2, or a ValueError saying what was wrong."""
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)):
        raise ValueError(f"num_classes: expected an integer >= 2, got {num_classes!r}")
    if num_classes < 2:
        raise ValueError(
            f"num_classes: expected an integer >= 2 (background + at least one class), got {num_classes}"
        )
    return int(num_classes)


def _check_torch_labels(x: Any, name: str) -> Any:
    torch = torch_module()
    if x.is_floating_point():
        if not bool(torch.isfinite(x).all()) or not bool((x == torch.round(x)).all()):
            raise ValueError(
                f"{name}: expected integer labels, got a float tensor with non-integral values "
                "(a probability map?); threshold or argmax it first"
            )
        x = x.long()
    elif x.dtype == torch.bool:
        x = x.long()
    elif x.is_complex():
        raise ValueError(f"{name}: expected integer labels, got dtype {x.dtype}")
    if x.numel() and int(x.min()) < 0:
        raise ValueError(
            f"{name}: expected non-negative integer labels, got minimum {int(x.min())}"
        )
    return x


def confusion_matrix(
    pred: np.ndarray | torch.Tensor, gt: np.ndarray | torch.Tensor, num_classes: int
) -> np.ndarray | torch.Tensor:
    """Per-image confusion matrices of a batch of label maps.

    Args:
        pred: predicted labels ``(B, *spatial)`` (numpy or torch, integer/bool/integral floats).
        gt: reference labels, same shape as ``pred``.
        num_classes: number of classes K (labels must be in ``[0, K)``).

    Returns:
        Counts ``(B, K, K)`` int64 indexed ``[b, gt_class, pred_class]``: a torch tensor on the
        inputs' device when both inputs are tensors, otherwise a numpy array.
    """
    k = check_num_classes(num_classes)
    if is_torch(pred) and is_torch(gt):
        torch = torch_module()
        if pred.shape != gt.shape:
            raise ValueError(
                f"pred and gt: expected the same shape, got {tuple(pred.shape)} and {tuple(gt.shape)}"
            )
        if pred.ndim < 2:
            raise ValueError(f"pred: expected a batch (B, *spatial), got shape {tuple(pred.shape)}")
        p = _check_torch_labels(pred, "pred").to(torch.int64)
        g = _check_torch_labels(gt, "gt").to(device=p.device, dtype=torch.int64)
        top = int(torch.maximum(p.max(), g.max())) if p.numel() else 0
        if top >= k:
            raise ValueError(f"pred/gt: expected labels in [0, {k}), got label {top}")
        b = p.shape[0]
        batch_idx = torch.arange(b, device=p.device).view(-1, *([1] * (p.ndim - 1)))
        flat = (batch_idx * (k * k) + g * k + p).reshape(-1)
        return torch.bincount(flat, minlength=b * k * k).view(b, k, k)
    p = as_labels(pred, "pred")
    g = as_labels(gt, "gt")
    check_same_shape(p, g, "pred", "gt")
    if p.ndim < 2:
        raise ValueError(f"pred: expected a batch (B, *spatial), got shape {tuple(p.shape)}")
    return confusion_counts(p, g, k)


def confusion_counts(p: np.ndarray, g: np.ndarray, k: int) -> np.ndarray:
    """Per-image confusion matrices (B, k, k) of integer label batches ``p`` (prediction) and
    ``g`` (ground truth) of shape (B, ...); ValueError for a label >= k."""
    top = max(int(p.max()), int(g.max())) if p.size else 0
    if top >= k:
        raise ValueError(f"pred/gt: expected labels in [0, {k}), got label {top}")
    b = p.shape[0]
    batch_idx = np.arange(b, dtype=np.int64).reshape(-1, *([1] * (p.ndim - 1)))
    flat = (batch_idx * (k * k) + g.astype(np.int64) * k + p.astype(np.int64)).ravel()
    return np.bincount(flat, minlength=b * k * k).reshape(b, k, k)


def overlap_from_confusion(cm: np.ndarray | torch.Tensor) -> dict[str, np.ndarray]:
    """Dice, IoU, precision and recall per image and class from confusion matrices.

    Args:
        cm: ``(B, K, K)`` or ``(K, K)`` counts indexed ``[.., gt_class, pred_class]``.

    Returns:
        ``{"dice", "iou", "precision", "recall", "tp", "fp", "fn"}`` -> float64 arrays ``(B, K)``
        (or ``(K,)``), with the NaN / 0 conventions of the module docstring.
    """
    c = cm.detach().cpu().numpy() if is_torch(cm) else np.asarray(cm)
    c = c.astype(np.float64)
    if c.ndim not in (2, 3) or c.shape[-1] != c.shape[-2]:
        raise ValueError(f"cm: expected (B, K, K) or (K, K) counts, got shape {c.shape}")
    tp = np.diagonal(c, axis1=-2, axis2=-1)
    n_pred = c.sum(axis=-2)  # column sums: predicted as class k
    n_gt = c.sum(axis=-1)  # row sums: reference class k
    fp, fn = n_pred - tp, n_gt - tp

    def ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)

    return {
        "dice": ratio(2 * tp, 2 * tp + fp + fn),
        "iou": ratio(tp, tp + fp + fn),
        "precision": ratio(tp, tp + fp),
        "recall": ratio(tp, tp + fn),
        "tp": tp,
        "fp": fp,
        "fn": fn,
    }


def overlap_metrics(
    pred: np.ndarray | torch.Tensor, gt: np.ndarray | torch.Tensor, num_classes: int
) -> dict[str, np.ndarray]:
    """Dice, IoU, precision, recall for a batch of label maps ``(B, *spatial)`` in one pass.

    Returns ``{metric: (B, K) float64 array}`` for every class including background (index 0);
    see :func:`overlap_from_confusion` for the keys and the empty-class conventions.
    """
    return overlap_from_confusion(confusion_matrix(pred, gt, num_classes))

"""Prediction-vs-reference error labels and their colours (PM-Dice paper, Hosseini 2025, fig. 5).

``error_labels`` turns a prediction and its reference into a small label image that napari shows
as a ``Labels`` layer with ``ERROR_COLORS`` (false positives red, false negatives blue, as in the
paper's fig. 5; true positives translucent green; true negatives transparent). No napari import
here: the panels build a napari label colormap from it (``_widgets._common.error_colormap``);
``DirectLabelColormap(color_dict=ERROR_COLORS)`` works as well.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

import numpy as np

from .metrics.inputs import as_labels, check_same_shape

if TYPE_CHECKING:
    import torch

__all__ = ["ERROR_CLASS_NAMES", "ERROR_COLORS", "FN", "FP", "TN", "TP", "error_labels"]

TN: Final = 0
TP: Final = 1
FP: Final = 2
FN: Final = 3

ERROR_CLASS_NAMES: Final[dict[int, str]] = {
    TN: "true negative",
    TP: "true positive",
    FP: "false positive",
    FN: "false negative",
}

# RGBA in [0, 1]. The ``None`` key is the default colour napari's DirectLabelColormap requires
# for labels missing from the dict; it is transparent like TN.
ERROR_COLORS: Final[dict[int | None, tuple[float, float, float, float]]] = {
    None: (0.0, 0.0, 0.0, 0.0),
    TN: (0.0, 0.0, 0.0, 0.0),
    TP: (0.0, 0.8, 0.0, 0.35),
    FP: (1.0, 0.0, 0.0, 1.0),
    FN: (0.0, 0.0, 1.0, 1.0),
}


def error_labels(
    pred: np.ndarray | torch.Tensor, gt: np.ndarray | torch.Tensor, foreground: int | None = None
) -> np.ndarray:
    """Per-pixel error class of a prediction: 0 TN, 1 TP, 2 FP, 3 FN (uint8, same shape).

    Args:
        pred: predicted integer labels (numpy or torch, any number of dimensions).
        gt: reference labels, same shape.
        foreground: class treated as positive: ``pred == foreground`` vs ``gt == foreground``
            (the usual binary TP/FP/FN/TN of that class).

    With ``foreground=None`` every non-zero label is foreground and the label must also match:

    - TN: both background; TP: both foreground with the same label;
    - FP: predicted foreground where the reference is background *or another class* (the
      predicted label is wrong there, so a class confusion shows in red);
    - FN: predicted background where the reference is foreground (a missed structure).

    For binary inputs this is the ordinary definition. Float arrays with fractional values
    (probability maps) are rejected.
    """
    p = as_labels(pred, "pred")
    g = as_labels(gt, "gt")
    check_same_shape(p, g, "pred", "gt")
    if foreground is not None:
        if isinstance(foreground, bool) or not isinstance(foreground, (int, np.integer)):
            raise ValueError(
                f"foreground: expected a class index (int) or None, got {foreground!r}"
            )
        if foreground < 0:
            raise ValueError(f"foreground: expected a non-negative class index, got {foreground}")
        pos_p, pos_g = p == foreground, g == foreground
        same = pos_g  # where both are positive the labels agree by construction
    else:
        pos_p, pos_g = p != 0, g != 0
        same = p == g
    out = np.zeros(p.shape, dtype=np.uint8)
    out[pos_p & pos_g & same] = TP
    out[pos_p & ~(pos_g & same)] = FP
    out[~pos_p & pos_g] = FN
    return out

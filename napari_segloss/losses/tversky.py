"""Tversky family: Tversky, Focal Tversky and Cosine Tversky (Yeung et al. 2021 eqs. 12-15).

``TP_c = sum_i y_ic p_ic``, ``FP_c = sum_i (1 - y_ic) p_ic``, ``FN_c = sum_i y_ic (1 - p_ic)``
per image (per batch with ``batch_dice``), float32; class mean as in
:class:`~napari_segloss.losses._base.RegionLoss`.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ._base import TINY, RegionLoss, check_float, class_sums, label_class_counts
from ._input import Prepared
from .registry import register


def tversky_index(
    p: Tensor, y: Tensor, alpha: float, beta: float, eps: float, batch: bool
) -> tuple[Tensor, Tensor]:
    """``TI_c = (TP + eps) / (TP + alpha FP + beta FN + eps)`` (B|1, K), and ``sum_i y_ic``.

    ``alpha`` weights false positives, ``beta`` false negatives. ``p`` must already be zero at
    ignored pixels (and ``y`` is), so FP/FN computed as ``sum p - TP`` / ``sum y - TP`` skip them.
    """
    red = tuple(range(2, p.ndim))
    return _index_from_sums((y * p).sum(red), p.sum(red), y.sum(red), alpha, beta, eps, batch)


def _index_from_sums(
    tp: Tensor, p_sum: Tensor, y_sum: Tensor, alpha: float, beta: float, eps: float, batch: bool
) -> tuple[Tensor, Tensor]:
    """Per-image (B, K) sums -> ``(TI, y_sum)``, summed over the batch first with ``batch``."""
    if batch:
        tp, p_sum, y_sum = (t.sum(0, keepdim=True) for t in (tp, p_sum, y_sum))
    fp = p_sum - tp
    fn = y_sum - tp
    return (tp + eps) / (tp + alpha * fp + beta * fn + eps), y_sum


def label_tversky_index(
    inp: Prepared, alpha: float, beta: float, eps: float, batch: bool
) -> tuple[Tensor, Tensor]:
    """:func:`tversky_index` for hard integer labels (binary or multiclass) without a one-hot
    target: ``TP_c`` sums the label-entry probabilities of class c's pixels,
    ``FP_c = sum_i p_ic - TP_c`` and ``FN_c = n_c - TP_c``."""
    assert inp.labels is not None
    p = inp.probs if inp.valid is None else inp.probs * inp.valid
    b, k = p.shape[:2]
    p = p.flatten(2)
    labels = inp.labels.reshape(b, 1, -1)
    flat = labels.view(b, -1)
    tp = class_sums(flat, p.gather(1, labels).view(b, -1), k)
    y_sum = label_class_counts(labels, inp.valid, k)
    return _index_from_sums(tp, p.sum(-1), y_sum, alpha, beta, eps, batch)


def region_tversky_index(
    inp: Prepared, alpha: float, beta: float, eps: float, batch: bool
) -> tuple[Tensor, Tensor]:
    """Tversky index of every region channel: the label path when the target is hard labels."""
    if inp.labels is not None:
        return label_tversky_index(inp, alpha, beta, eps, batch)
    p = inp.probs if inp.valid is None else inp.probs * inp.valid
    return tversky_index(p, inp.target, alpha, beta, eps, batch)


class _TverskyBase(RegionLoss):
    def __init__(self, *, alpha: float = 0.3, beta: float = 0.7, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.alpha = check_float("alpha", alpha, 0.0, None)
        self.beta = check_float("beta", beta, 0.0, None)
        if self.alpha + self.beta == 0.0:
            raise ValueError("alpha + beta must be > 0, got alpha=0 and beta=0")

    def index(self, inp: Prepared) -> tuple[Tensor, Tensor]:
        return region_tversky_index(inp, self.alpha, self.beta, self.eps, self.batch_dice)


@register("tversky")
class TverskyLoss(_TverskyBase):
    """Tversky loss (Salehi et al. 2017; Yeung et al. 2021 eq. 12-13): ``1 - mean_c TI_c``,
    ``TI_c = (TP + eps) / (TP + alpha FP + beta FN + eps)``.

    Args:
        alpha: weight of false positives (default 0.3).
        beta: weight of false negatives (default 0.7, Yeung's delta = 0.7 on FN).
        include_background, batch_dice, skip_absent, eps: see :class:`RegionLoss`.
        mode, reduction, ignore_index, validate: see :class:`SegLoss`.
    """

    def per_image(self, inp: Prepared) -> Tensor:
        ti, y_sum = self.index(inp)
        return self.class_mean(1.0 - ti, self.class_weights(inp, y_sum))


@register("focal_tversky")
class FocalTverskyLoss(_TverskyBase):
    """Focal Tversky loss (Abraham & Khan 2019; Yeung et al. 2021 eq. 14):
    ``mean_c (1 - TI_c)^gamma``.

    Default ``gamma = 0.75 = 1/(4/3)``: Abraham & Khan write the exponent as ``1/gamma`` with
    gamma = 4/3 (the value Yeung's experiments cite) and their released code uses
    ``pow(1 - TI, 0.75)``; Yeung's eq. 14 literally writes the exponent as gamma, so here
    ``gamma`` is the exponent itself. ``1 - TI`` is clamped at 1e-12 before the power (finite
    gradient at TI = 1).

    Args:
        alpha, beta: FP / FN weights (default 0.3 / 0.7).
        gamma: exponent > 0 (default 0.75).
        include_background, batch_dice, skip_absent, eps: see :class:`RegionLoss`.
        mode, reduction, ignore_index, validate: see :class:`SegLoss`.
    """

    def __init__(self, *, gamma: float = 0.75, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.gamma = check_float("gamma", gamma, 0.0, None, lo_open=True)

    def per_image(self, inp: Prepared) -> Tensor:
        ti, y_sum = self.index(inp)
        t = (1.0 - ti).clamp_min(TINY).pow(self.gamma)
        return self.class_mean(t, self.class_weights(inp, y_sum))


@register("cosine_tversky")
class CosineTverskyLoss(_TverskyBase):
    """Cosine Tversky loss (Yeung et al. 2021 eq. 15): ``mean_c cos^gamma(pi/2 * TI_c)``.

    The cosine is clamped at 1e-12 before the power so a fractional gamma keeps a finite
    gradient at TI = 1.

    Args:
        alpha, beta: FP / FN weights (default 0.3 / 0.7).
        gamma: exponent > 0 (default 1).
        include_background, batch_dice, skip_absent, eps: see :class:`RegionLoss`.
        mode, reduction, ignore_index, validate: see :class:`SegLoss`.
    """

    def __init__(self, *, gamma: float = 1.0, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.gamma = check_float("gamma", gamma, 0.0, None, lo_open=True)

    def per_image(self, inp: Prepared) -> Tensor:
        ti, y_sum = self.index(inp)
        c = torch.cos(0.5 * math.pi * ti)
        t = c if self.gamma == 1.0 else c.clamp_min(TINY).pow(self.gamma)
        return self.class_mean(t, self.class_weights(inp, y_sum))

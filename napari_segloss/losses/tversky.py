"""Tversky family: Tversky, Focal Tversky and Cosine Tversky (Yeung et al. 2021 eqs. 12-15).

``TP_c = sum_i y_ic p_ic``, ``FP_c = sum_i (1 - y_ic) p_ic``, ``FN_c = sum_i y_ic (1 - p_ic)``
per image (per batch with ``batch_dice``), float32, each summed directly (``FN`` from the
complement ``1 - p`` of :class:`~napari_segloss.losses.inputs.Prepared`, never as
``sum y - TP``); class mean as in :class:`~napari_segloss.losses.base.RegionLoss` (Yeung's
equations sum over the classes; the mean, as in the authors' code, divides them by C).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .base import RegionLoss, check_float
from .functional import TINY, tversky_complement, tversky_sums
from .inputs import Prepared
from .registry import register


class _TverskyBase(RegionLoss):
    def __init__(self, *, alpha: float = 0.3, beta: float = 0.7, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.alpha = check_float("alpha", alpha, 0.0, None)
        self.beta = check_float("beta", beta, 0.0, None)
        if self.alpha + self.beta == 0.0:
            raise ValueError("alpha + beta must be > 0, got alpha=0 and beta=0")

    def index_complement(self, inp: Prepared) -> tuple[Tensor, Tensor]:
        """``(1 - TI_c, y_sum_c)``, each (B|1, K), without cancellation at TI ~ 1."""
        tp, fp, fn, y_sum = self.batch_sum(*tversky_sums(inp))
        return tversky_complement(tp, fp, fn, self.alpha, self.beta, self.eps), y_sum


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
        r, y_sum = self.index_complement(inp)
        return self.class_mean(r, self.class_weights(inp, y_sum))


@register("focal_tversky")
class FocalTverskyLoss(_TverskyBase):
    """Focal Tversky loss (Abraham & Khan 2019; Yeung et al. 2021 eq. 14):
    ``mean_c (1 - TI_c)^gamma``.

    Default ``gamma = 0.75 = 1/(4/3)``: Abraham & Khan write the exponent as ``1/gamma`` with
    gamma = 4/3 (the value Yeung's experiments cite) and their released code uses
    ``pow(1 - TI, 0.75)``; Yeung's eq. 14 literally writes the exponent as gamma, so here
    ``gamma`` is the exponent itself. ``1 - TI`` is floored at the smallest normal float before
    the power (finite gradient at TI = 1).

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
        r, y_sum = self.index_complement(inp)
        t = r.clamp_min(TINY).pow(self.gamma)
        return self.class_mean(t, self.class_weights(inp, y_sum))


@register("cosine_tversky")
class CosineTverskyLoss(_TverskyBase):
    """Cosine Tversky loss (Yeung et al. 2021 eq. 15): ``mean_c cos^gamma(pi/2 * TI_c)``.

    The cosine is floored at the smallest normal float before the power so a fractional gamma
    keeps a finite gradient at TI = 1.

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
        r, y_sum = self.index_complement(inp)
        c = torch.sin(0.5 * math.pi * r)  # cos(pi/2 TI) = sin(pi/2 (1 - TI))
        t = c if self.gamma == 1.0 else c.clamp_min(TINY).pow(self.gamma)
        return self.class_mean(t, self.class_weights(inp, y_sum))

"""Cross-entropy family: CE/BCE, Focal CE and TopK CE (PM-Dice paper eqs. 1-3).

All three are pixel-separable: ``pixel_loss(logits, target)`` returns the per-pixel values
``(B, *spatial)`` that the maps module shows as "value" contribution maps.

Per image the pixel values are summed and divided by N, the number of valid (not ignored)
pixels of that image (eq. 1's 1/N); ``reduction="mean"`` then averages the images. Without
``ignore_index`` this equals the usual mean over all pixels of the batch.

Channels: binary logits are expanded to ``[1 - p, p]`` so eq. 1's sum over classes is exactly
BCE; multilabel logits are one binary problem per channel and the per-channel values are
averaged over channels (as ``BCEWithLogitsLoss(reduction="mean")`` does).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ._base import (
    TINY,
    PixelLoss,
    check_choice,
    check_float,
    check_float_or_seq,
    per_channel,
    view_channels,
)
from ._input import Prepared
from ._topk import topk_count, topk_rows
from .registry import register


def _pixel_weights(
    inp: Prepared, name: str, value: float | tuple[float, ...] | None, binary_alpha: bool
) -> Tensor | None:
    """Per pixel-channel weights (P,) from a float (alpha_t style) or a per-class sequence."""
    if value is None:
        return None
    if isinstance(value, tuple):
        k = inp.num_channels
        hint = " (binary logits count 2: [background, foreground])" if inp.mode == "binary" else ""
        w = per_channel(name, value, k, inp.logits, hint)
        return w.repeat_interleave(2) if inp.mode == "multilabel" else w
    if binary_alpha:
        # Lin et al. 2017 alpha_t: alpha for foreground, 1 - alpha for background
        bg = inp.pix_is_background
        return bg * (1.0 - value) + (1.0 - bg) * value
    return torch.full_like(inp.pix_is_background, float(value))


def ce_terms(inp: Prepared) -> Tensor:
    """-y_c log p_c per pixel channel (B, P, *sp), zero at ignored pixels (y is zeroed)."""
    return -(inp.pix_target * inp.pix_logp)


def per_label(values: Tensor, labels: Tensor) -> Tensor:
    """``values[labels]`` for a small per-class table: index_select is several times faster
    than advanced indexing on large label maps (CPU)."""
    return values.index_select(0, labels.reshape(-1)).view(labels.shape)


def label_log_prob(inp: Prepared) -> Tensor:
    """``log p_t`` of the labelled class, (B, 1, *spatial), for hard labels (binary or
    multiclass), computed stably from the logits."""
    assert inp.labels is not None
    x = inp.logits
    if inp.mode == "binary":
        # log p_t = logsigmoid(x) for y = 1 and logsigmoid(-x) for y = 0
        return F.logsigmoid(x * (2.0 * inp.labels - 1.0))
    return F.log_softmax(x, dim=1).gather(1, inp.labels)


def hard_label_pixel_loss(inp: Prepared, gamma: float | Tensor, weights: Tensor | None) -> Tensor:
    """Fast path for integer labels (binary / multiclass): ``-w_t (1 - p_t)^gamma log p_t``
    per pixel (B, *spatial) from the log-probability of the labelled class only (gather), the
    same value as summing eq. 1/3 over one-hot channels without building them. ``gamma`` may
    be one exponent per class (K,) (the asymmetric Unified Focal modulates background only).
    On CPU (float32 logits) the fused numba kernels compute it (:class:`_FusedCPULabelPixelLoss`,
    same values and gradients)."""
    assert inp.labels is not None
    lab = inp.labels
    lp_t = label_log_prob(inp)
    out = -lp_t
    if isinstance(gamma, Tensor) or gamma != 0.0:
        # 1 - p_t = -expm1(log p_t): accurate when p_t is close to 1
        base = (-torch.expm1(lp_t)).clamp_min(TINY)
        if isinstance(gamma, Tensor):
            out = out * base.pow(per_label(gamma, lab))
        else:
            out = out * (base * base if gamma == 2.0 else base.pow(gamma))
    if weights is not None:
        out = out * per_label(weights, lab)
    if inp.valid is not None:
        out = out * inp.valid
    return out[:, 0]


def _finish(inp: Prepared, terms: Tensor, weights: Tensor | None) -> Tensor:
    if weights is not None:
        terms = terms * view_channels(weights, terms.ndim)
    out = terms.sum(1)
    if inp.pix_div != 1:
        out = out / inp.pix_div
    return out


@register("ce", "bce", "cross_entropy")
class CrossEntropyLoss(PixelLoss):
    """Cross-entropy (PM-Dice paper eq. 1): ``-1/N sum_i sum_c w_c y_ic log p_ic``.

    Binary (C == 1) is BCE computed with ``logsigmoid`` (stable for large logits); multiclass
    uses ``log_softmax``. Soft targets are allowed.

    Args:
        weight: optional per-class weights (one per class channel; 2 for binary:
            [background, foreground]; one per label in multilabel). The sum is still divided by
            N (eq. 1), not by the sum of weights as ``torch.nn.CrossEntropyLoss`` does.
        mode, reduction, ignore_index, validate: see :class:`SegLoss`.
    """

    def __init__(self, *, weight: Sequence[float] | None = None, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.weight = None if weight is None else _as_seq("weight", weight)

    def pixel_map(self, inp: Prepared) -> Tensor:
        w = _pixel_weights(inp, "weight", self.weight, binary_alpha=False)
        if inp.labels is not None:
            return hard_label_pixel_loss(inp, 0.0, w)
        return _finish(inp, ce_terms(inp), w)


def _as_seq(name: str, value: object) -> tuple[float, ...]:
    v = check_float_or_seq(name, value, 0.0, None)
    if not isinstance(v, tuple):
        raise ValueError(f"{name} must be a sequence with one value per class, got {value!r}")
    return v


def focal_terms(inp: Prepared, gamma: float | Tensor) -> Tensor:
    """-(1 - p_c)^gamma y_c log p_c per pixel channel (eq. 3)."""
    ce = ce_terms(inp)
    if isinstance(gamma, float) and gamma == 0.0:
        return ce
    # clamp before a fractional power: d/dx x^g is infinite at x = 0 for g < 1
    base = (1.0 - inp.pix_probs).clamp_min(TINY)
    if isinstance(gamma, float) and gamma == 2.0:
        mod = base * base
    else:
        mod = base.pow(gamma)
    return mod * ce


@register("focal", "focal_ce")
class FocalLoss(PixelLoss):
    """Focal CE (PM-Dice paper eq. 3; Lin et al. 2017):
    ``-1/N sum_i sum_c alpha_c (1 - p_ic)^gamma y_ic log p_ic``.

    Binary: the two expanded channels give exactly the sigmoid focal loss
    ``-alpha_t (1 - p_t)^gamma log p_t`` (hard labels). ``(1 - p)`` is clamped at 1e-12 before
    the power so fractional gammas keep finite gradients.

    Args:
        gamma: focusing parameter >= 0 (default 2, Lin et al.).
        alpha: None (default, eq. 3 has no alpha); a float in [0, 1] is Lin's alpha_t (alpha for
            foreground classes, 1 - alpha for background class 0, as MONAI); a sequence gives
            per-class weights (2 for binary: [background, foreground]).
        mode, reduction, ignore_index, validate: see :class:`SegLoss`.
    """

    def __init__(
        self,
        *,
        gamma: float = 2.0,
        alpha: float | Sequence[float] | None = None,
        **kwargs: object,
    ) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.gamma = check_float("gamma", gamma, 0.0)
        self.alpha = None if alpha is None else check_float_or_seq("alpha", alpha, 0.0, 1.0)

    def pixel_map(self, inp: Prepared) -> Tensor:
        w = _pixel_weights(inp, "alpha", self.alpha, binary_alpha=True)
        if inp.labels is not None:
            return hard_label_pixel_loss(inp, self.gamma, w)
        return _finish(inp, focal_terms(inp, self.gamma), w)


@register("topk_ce", "topk")
class TopKCELoss(PixelLoss):
    """TopK CE (PM-Dice paper eq. 2): per image, the k % of valid pixels with the highest CE
    values are kept, summed and divided by N (all valid pixels), literally as eq. 2 writes it.

    ``normalize="selected"`` divides by the number of kept pixels instead (nnU-Net TopKLoss).
    The number kept is ``ceil(k/100 * n_valid)``; selection uses an unsorted ``torch.topk`` with
    a static ``K = ceil(k/100 * N)`` (N pixels per image) and an exact per-image count on those
    (:func:`~napari_segloss.losses._topk.topk_rows`), so no full sort and no host-device
    synchronisation; ties at the threshold share the remaining slots (same loss value).

    Args:
        k: percentage of pixels kept, in (0, 100] (default 10).
        normalize: "pixels" (eq. 2, default) or "selected".
        weight: optional per-class CE weights (see :class:`CrossEntropyLoss`).
        mode, reduction, ignore_index, validate: see :class:`SegLoss`.
    """

    def __init__(
        self,
        *,
        k: float = 10.0,
        normalize: str = "pixels",
        weight: Sequence[float] | None = None,
        **kwargs: object,
    ) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.k = check_float("k", k, 0.0, 100.0, lo_open=True)
        check_choice("normalize", normalize, ("pixels", "selected"))
        self.normalize = normalize
        self.weight = None if weight is None else _as_seq("weight", weight)

    def _ce(self, inp: Prepared) -> Tensor:
        w = _pixel_weights(inp, "weight", self.weight, binary_alpha=False)
        if inp.labels is not None:
            return hard_label_pixel_loss(inp, 0.0, w).flatten(1)  # (B, N)
        return _finish(inp, ce_terms(inp), w).flatten(1)

    def _keep(self, inp: Prepared, ce: Tensor) -> tuple[Tensor, Tensor]:
        """0/1 mask (B, N) of the selected pixels (no gradient) and their count (B,)."""
        n = ce.shape[1]
        k_static = max(1, math.ceil(self.k * n / 100.0))
        scores = ce.detach()
        if inp.valid is None:
            count = torch.full((ce.shape[0],), float(k_static), device=ce.device)
        else:
            v = inp.valid.amax(dim=1) if inp.valid.shape[1] > 1 else inp.valid
            v = v.flatten(1)
            scores = scores * v + (v - 1.0)  # CE >= 0: -1 marks the ignored pixels
            count = topk_count(v.sum(1), self.k)
        return topk_rows(scores, count, k_static), count

    def per_image(self, inp: Prepared) -> Tensor:
        ce = self._ce(inp)
        keep, count = self._keep(inp, ce)
        s = (ce * keep).sum(1)
        if self.normalize == "selected":
            return s / count.clamp_min(1.0)
        return s / inp.valid_count()

    def pixel_map(self, inp: Prepared) -> Tensor:
        """CE values of the selected pixels (0 elsewhere), shape (B, *spatial)."""
        ce = self._ce(inp)
        keep, _ = self._keep(inp, ce)
        return (ce * keep).view(inp.logits.shape[0], *inp.logits.shape[2:])

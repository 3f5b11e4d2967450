"""Cross-entropy family: CE/BCE, Focal CE and TopK CE (PM-Dice paper eqs. 1-3).

All three are pixel-separable: ``pixel_loss(logits, target)`` returns the per-pixel values
``(B, *spatial)`` that the maps module shows as "value" contribution maps.

Per image the pixel values are summed and divided by N, the number of valid (not ignored)
pixels of that image (eq. 1's 1/N); ``reduction="mean"`` then averages the images. Without
``ignore_index`` this equals the usual mean over all pixels of the batch.

Channels: binary logits are expanded to ``[1 - p, p]`` so eq. 1's sum over classes is exactly
BCE; multilabel logits are one binary problem per channel and the per-channel values are
averaged over channels (as ``BCEWithLogitsLoss(reduction="mean")`` does). Multilabel targets
ignore (pixel, label) entries one by one: an image's loss is then the mean over its valid
entries (``BCEWithLogitsLoss`` averaged over the non-ignored elements). ``log p`` and
``1 - p`` are taken from the logits without cancellation at both ends of (0, 1).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from .base import PixelLoss, check_choice, check_float, check_float_or_seq, check_per_class
from .functional import channel_mean, label_pixel_loss, per_channel, pixel_terms
from .inputs import Prepared
from .registry import register
from .topk import topk_count, topk_rows


def pixel_weights(
    inp: Prepared, name: str, value: float | tuple[float, ...] | None, binary_alpha: bool
) -> Tensor | None:
    """Per pixel-channel weights (P,) from a per-class sequence, or from a float: Lin et al.'s
    alpha_t (``binary_alpha``: alpha for foreground channels, 1 - alpha for background) or one
    weight for every channel."""
    if value is None:
        return None
    if isinstance(value, tuple):
        k = inp.num_channels
        hint = " (binary logits count 2: [background, foreground])" if inp.mode == "binary" else ""
        w = per_channel(name, value, k, inp.logits, hint)
        return w.repeat_interleave(2) if inp.mode == "multilabel" else w
    if binary_alpha:
        bg = inp.pix_is_background
        return bg * (1.0 - value) + (1.0 - bg) * value
    return torch.full_like(inp.pix_is_background, float(value))


def focal_pixel_loss(inp: Prepared, gamma: float | Tensor, weights: Tensor | None) -> Tensor:
    """``-sum_c w_c (1 - p_c)^gamma_c y_c log p_c`` per pixel (B, *spatial): eq. 3 (eq. 1 for
    gamma 0), from the label entry alone for integer labels. ``gamma`` a float or one exponent
    per pixel channel (P,)."""
    if inp.labels is not None:
        return label_pixel_loss(inp, gamma, weights)
    g = gamma
    if isinstance(g, Tensor):
        g = g.view(1, -1, *([1] * (inp.logits.ndim - 2)))
    return channel_mean(inp, pixel_terms(inp, g), weights)


def focal_per_image(inp: Prepared, gamma: float, alpha: float | tuple[float, ...] | None) -> Tensor:
    """Focal CE (eq. 3 with Lin's alpha_t) per image: the mean over the valid pixels."""
    w = pixel_weights(inp, "alpha", alpha, binary_alpha=True)
    return focal_pixel_loss(inp, gamma, w).flatten(1).sum(1) / inp.valid_count()


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
        self.weight = None if weight is None else check_per_class("weight", weight)

    def pixel_map(self, inp: Prepared) -> Tensor:
        w = pixel_weights(inp, "weight", self.weight, binary_alpha=False)
        return focal_pixel_loss(inp, 0.0, w)


@register("focal", "focal_ce")
class FocalLoss(PixelLoss):
    """Focal CE (PM-Dice paper eq. 3; Lin et al. 2017):
    ``-1/N sum_i sum_c alpha_c (1 - p_ic)^gamma y_ic log p_ic``.

    Binary: the two expanded channels give exactly the sigmoid focal loss
    ``-alpha_t (1 - p_t)^gamma log p_t`` (hard labels). ``1 - p`` comes from the other
    classes' share / ``sigmoid(-x)`` and is floored at the smallest normal float before the
    power, so fractional gammas keep finite gradients.

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
        w = pixel_weights(inp, "alpha", self.alpha, binary_alpha=True)
        return focal_pixel_loss(inp, self.gamma, w)


@register("topk_ce", "topk")
class TopKCELoss(PixelLoss):
    """TopK CE (PM-Dice paper eq. 2): per image, the k % of valid pixels with the highest CE
    values are kept, summed and divided by N (all valid pixels), literally as eq. 2 writes it.

    ``normalize="selected"`` divides by the number of kept pixels instead (nnU-Net TopKLoss;
    multilabel with ignored entries: by the kept pixels' valid entries / C, the mean over them).
    The number kept is ``ceil(k/100 * n_valid)``; selection uses an unsorted ``torch.topk`` with
    a static ``K = ceil(k/100 * N)`` (N pixels per image) and an exact per-image count on those
    (:func:`~napari_segloss.losses.topk.topk_rows`), so no full sort and no host-device
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
        self.weight = None if weight is None else check_per_class("weight", weight)

    def _ce(self, inp: Prepared) -> Tensor:
        w = pixel_weights(inp, "weight", self.weight, binary_alpha=False)
        return focal_pixel_loss(inp, 0.0, w).flatten(1)  # (B, N)

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
        if self.normalize != "selected":
            return s / inp.valid_count()
        if inp.valid is not None and inp.valid.shape[1] > 1:
            # multilabel entries are ignored one by one and a pixel's value is the sum over
            # its valid labels / C: divide by the selected pixels' valid entries / C, so the
            # loss is the mean over the selected valid entries (as valid_count does for all)
            entries = (inp.valid.flatten(2).mean(1) * keep).sum(1)  # at least 1/C if any
            return s / entries.clamp_min(1.0 / inp.valid.shape[1])
        return s / count.clamp_min(1.0)

    def pixel_map(self, inp: Prepared) -> Tensor:
        """CE values of the selected pixels (0 elsewhere), shape (B, *spatial)."""
        ce = self._ce(inp)
        keep, _ = self._keep(inp, ce)
        return (ce * keep).view(inp.logits.shape[0], *inp.logits.shape[2:])

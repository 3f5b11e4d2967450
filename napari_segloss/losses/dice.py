"""Dice family: Dice, PM Dice, Generalized Dice, Log Dice, Focal Dice (two variants), TopK Dice
and WSDice.

Notation (Hosseini 2025, the PM-Dice paper): ``p_ic`` probability of class c at pixel
i, ``y_ic`` one-hot/soft target, sums over the pixels of one image (of the batch with
``batch_dice``), accumulated in float32. "Class mean" is the mean over the classes that enter
(see :class:`~napari_segloss.losses.base.RegionLoss`: ``include_background``,
``skip_absent``). Every loss is computed as ``1 - Dice = sum m e^2 / (sum m (y^2 + p^2) +
eps)`` (:func:`~napari_segloss.losses.functional.dice_sums`), the same value as the papers'
``1 - (2 sum m y p + eps) / (...)`` without its cancellation for confident predictions.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from .base import (
    AllClassesRegionLoss,
    RegionLoss,
    check_bool,
    check_float,
    check_float_or_seq,
)
from .functional import (
    abs_error,
    dice_sums,
    label_counts,
    log_score,
    per_channel,
    ratio,
    view_channels,
    wsdice_sums,
)
from .inputs import Prepared
from .registry import register
from .topk import topk_count, topk_keep, topk_mask, topk_rows


class _DiceBase(RegionLoss):
    """Shared ``squared`` argument and the per-class ``1 - Dice`` of eqs. 4-5."""

    def __init__(self, *, squared: bool = True, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        check_bool("squared", squared)
        self.squared = squared

    def dice_complement(
        self, inp: Prepared, gamma: float | Tensor = 0.0, **masks: Tensor | None
    ) -> tuple[Tensor, Tensor]:
        """``(1 - Dice_c, y_sum_c)``, each (B|1, K)."""
        s = dice_sums(inp, gamma, squared=self.squared, **masks)
        err, den, y_sum = self.batch_sum(s.err, s.den, s.y_sum)
        return ratio(err, den, self.eps), y_sum

    def log_dice(self, inp: Prepared) -> tuple[Tensor, Tensor]:
        """``(log Dice_c, y_sum_c)``, accurate for Dice near 0 and near 1."""
        s = dice_sums(inp, squared=self.squared, overlap=True)
        assert s.overlap is not None
        err, den, both, y_sum = self.batch_sum(s.err, s.den, s.overlap, s.y_sum)
        return log_score(ratio(both + self.eps, den, self.eps), ratio(err, den, self.eps)), y_sum


@register("dice")
class DiceLoss(_DiceBase):
    """Dice loss, PM-Dice paper eq. 4 (V-Net, Milletari et al. 2016; Liu et al. 2018 DSC loss):
    ``1 - mean_c (2 sum_i y_ic p_ic + eps) / (sum_i (y_ic^2 + p_ic^2) + eps)``.

    Args:
        squared: squared denominator (V-Net, eq. 4; default) or ``sum_i (y_ic + p_ic)``.
        include_background, batch_dice, skip_absent, eps: see :class:`RegionLoss`. The class
            mean runs over the classes present in the image (eq. 4 text) unless
            ``skip_absent=False``.
        mode, reduction, ignore_index, validate: see :class:`SegLoss`.
    """

    def per_image(self, inp: Prepared) -> Tensor:
        r, y_sum = self.dice_complement(inp)
        return self.class_mean(r, self.class_weights(inp, y_sum))


@register("pm_dice")
class PMDiceLoss(_DiceBase):
    """Pixel-wise Modulated Dice loss, PM-Dice paper (Hosseini 2025, arXiv:2506.15744) eq. 5:
    ``1 - mean_c (2 sum_i m_ic y_ic p_ic + eps) / (sum_i m_ic (y_ic^2 + p_ic^2) + eps)`` with
    the modulating term ``m_ic = |y_ic - p_ic|^gamma_c`` computed from **detached**
    probabilities: the paper treats m as a hyperparameter, no gradient flows through it.

    ``gamma = 0`` gives ``dice`` exactly (``0 ** 0 == 1``). ``|y - p|`` of a confident
    prediction is taken from the other classes' share, so m stays exact where ``1 - p`` rounds
    to 0 in float32.

    Args:
        gamma: float >= 0 (default 1.0) or one value per class channel (after binary
            expansion: ``[gamma_BG, gamma_FG]`` for a one-channel binary output); a length
            mismatch raises ValueError at forward.
        squared, include_background, batch_dice, skip_absent, eps: see :class:`DiceLoss`.
        mode, reduction, ignore_index, validate: see :class:`SegLoss`.
    """

    def __init__(self, *, gamma: float | Sequence[float] = 1.0, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.gamma = check_float_or_seq("gamma", gamma, 0.0, None)

    def class_gammas(self, inp: Prepared) -> Tensor:
        """The per-class gamma as a (K,) tensor; ValueError if its length is not K."""
        hint = " ([gamma_BG, gamma_FG] for binary logits)" if inp.mode == "binary" else ""
        return per_channel("gamma", self.gamma, inp.num_channels, inp.logits, hint)

    def gamma_for(self, inp: Prepared) -> float | Tensor:
        """One float, or the (K,) tensor of a per-class gamma."""
        return self.class_gammas(inp) if isinstance(self.gamma, tuple) else self.gamma

    def modulating_term(self, inp: Prepared) -> Tensor:
        """``|y - p|^gamma_c`` (B, K, *spatial), no gradient (what the maps show)."""
        with torch.no_grad():
            err = abs_error(inp.target, inp.probs, inp.complement)
            g = self.gamma_for(inp)
            return err.pow(view_channels(g, err.ndim) if isinstance(g, Tensor) else g)

    def per_image(self, inp: Prepared) -> Tensor:
        r, y_sum = self.dice_complement(inp, self.gamma_for(inp))
        return self.class_mean(r, self.class_weights(inp, y_sum))


@register("generalized_dice", "gdl")
class GeneralizedDiceLoss(AllClassesRegionLoss):
    """Generalized Dice loss (Sudre et al. 2017):
    ``1 - (2 sum_c w_c sum_i y_ic p_ic + eps) / (sum_c w_c sum_i (y_ic + p_ic) + eps)`` with
    ``w_c = 1 / (sum_i y_ic)^2``. Weights of absent classes (infinite) are replaced by the
    largest finite weight of that image (as MONAI's GeneralizedDiceLoss), so the class weights
    themselves handle absent classes (``skip_absent`` is not a parameter here). If no class is
    present all weights are 0 and the loss is 0.

    Args:
        include_background, batch_dice, eps: see :class:`RegionLoss`.
        mode, reduction, ignore_index, validate: see :class:`SegLoss`.
    """

    def per_image(self, inp: Prepared) -> Tensor:
        s = dice_sums(inp, squared=False)
        err, den, y_sum = self.batch_sum(s.err, s.den, s.y_sum)
        keep = self.class_weights(inp, y_sum)  # 0 for a background left out
        w = 1.0 / (y_sum * y_sum)
        inf = torch.isinf(w)
        # the largest weight among the classes in the sum only (as MONAI, which drops the
        # background first): a left-out background must not lend its weight to absent classes
        w = torch.where(inf, torch.zeros_like(w), w) * keep
        w_max = w.amax(dim=1, keepdim=True)
        w = torch.where(inf, w_max.expand_as(w), w) * keep
        return (w * err).sum(1) / ((w * den).sum(1) + self.eps)


@register("log_dice", "exp_log_dice")
class LogDiceLoss(_DiceBase):
    """Exponential logarithmic Dice term (Wong et al. 2018): ``mean_c (-ln Dice_c)^gamma``.

    ``Dice_c`` is floored at 1e-12 before the log, and ``-ln Dice_c`` at 1e-30 before the
    power so the gradient stays finite when ``Dice_c = 1`` (for ``gamma < 1`` the derivative
    of ``x^gamma`` is infinite at 0). Dice_c is the eq. 4 form of this library (squared
    denominator by default; Wong et al. use ``squared=False``).

    Args:
        gamma: exponent > 0 (default 0.3, Wong et al.).
        squared, include_background, batch_dice, skip_absent, eps: see :class:`DiceLoss`.
        mode, reduction, ignore_index, validate: see :class:`SegLoss`.
    """

    def __init__(self, *, gamma: float = 0.3, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.gamma = check_float("gamma", gamma, 0.0, None, lo_open=True)

    def per_image(self, inp: Prepared) -> Tensor:
        log_dsc, y_sum = self.log_dice(inp)
        # floor 1e-30 (not 1e-12): x^0.3 at 1e-12 would leave a 2.5e-4 loss at a perfect score
        t = (-log_dsc).clamp_min(1e-30).pow(self.gamma)
        return self.class_mean(t, self.class_weights(inp, y_sum))


@register("focal_dice")
class FocalDiceLoss(_DiceBase):
    """Focal Dice of Wang & Chung 2018 (reference [39] of the PM-Dice paper):
    ``1 - mean_c Dice_c^(1/beta)``, computed as ``-expm1(ln(Dice_c) / beta)``; Dice_c is
    floored at 1e-12 so the gradient stays finite at Dice_c = 0.

    The PM-Dice tables' row "Focal Dice [40]" cites Prencipe et al. 2022 (Appl. Sci. 12, 3247),
    which the paper calls an improved version of [39] without giving its equation; this loss is
    the [39] form, the closest one the paper defines.

    Args:
        beta: >= 1 (default 2); beta = 1 is the Dice loss.
        squared, include_background, batch_dice, skip_absent, eps: see :class:`DiceLoss`.
        mode, reduction, ignore_index, validate: see :class:`SegLoss`.
    """

    def __init__(self, *, beta: float = 2.0, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.beta = check_float("beta", beta, 1.0, None)

    def per_image(self, inp: Prepared) -> Tensor:
        log_dsc, y_sum = self.log_dice(inp)
        t = -torch.expm1(log_dsc / self.beta)
        return self.class_mean(t, self.class_weights(inp, y_sum))


class _TopKDiceBase(_DiceBase):
    def __init__(self, *, k: float = 10.0, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.k = check_float("k", k, 0.0, 100.0, lo_open=True)

    def mask(self, inp: Prepared) -> Tensor:  # pragma: no cover - abstract
        """0/1 modulation (B, K, *sp) for one-hot/soft targets."""
        raise NotImplementedError

    def label_masks(self, inp: Prepared) -> dict[str, Tensor]:  # pragma: no cover - abstract
        """The same modulation for integer labels: ``label_mask`` (B, 1, N) and/or
        ``off_mask`` (B, K, N) of :func:`~napari_segloss.losses.functional.dice_sums`."""
        raise NotImplementedError

    def per_image(self, inp: Prepared) -> Tensor:
        # the masks are built from detached probabilities (no gradient through the selection)
        by_label = inp.labels is not None and inp.mode != "binary"
        masks = self.label_masks(inp) if by_label else {"mask": self.mask(inp)}
        r, y_sum = self.dice_complement(inp, **masks)
        return self.class_mean(r, self.class_weights(inp, y_sum))


def _valid_for(inp: Prepared) -> Tensor:
    if inp.valid is None:
        return torch.ones((), device=inp.logits.device)
    return inp.valid


@register("focal_dice_zhao")
class FocalDiceZhaoLoss(_TopKDiceBase):
    """Focal Dice of Zhao et al. 2020 (ICDM) as the PM-Dice paper describes it ("Focal Dice
    [41]": "true negatives are ranked based on their error values and the ones that are not in
    top K% are ignored"; it "focuses on false positives and true negatives with low
    confidence").

    Dice in the eq. 5 form with a binary mask ``m_ic``: negatives of class c (``y_ic < 0.5``)
    enter only if their error ``p_ic`` is among the top k % of that image's negatives of class
    c; positives always enter. The mask is computed from detached probabilities.
    Exactly ``ceil(k/100 * n_neg)`` negatives are kept per image and class (unsorted
    ``torch.topk`` plus an exact count, :func:`~napari_segloss.losses.topk.topk_rows`).

    Args:
        k: percentage of negatives kept per image and class, in (0, 100] (default 10; the
            PM-Dice paper does not state it for [41]).
        squared, include_background, batch_dice, skip_absent, eps: see :class:`DiceLoss`.
        mode, reduction, ignore_index, validate: see :class:`SegLoss`.
    """

    def mask(self, inp: Prepared) -> Tensor:
        neg = (inp.target < 0.5).float() * _valid_for(inp)
        keep = topk_mask(neg, inp.probs.detach(), self.k)
        return keep + (1.0 - neg)  # negatives: kept or not; everything else: 1 (keep is 0 there)

    def label_masks(self, inp: Prepared) -> dict[str, Tensor]:
        # negatives of class c: the valid pixels not labelled c, ranked by p_c (the off-label
        # probabilities); label entries keep m = 1 (positives always enter)
        lp = inp.label_probs
        off = lp.off_label.detach()
        n = off.shape[2]
        scores = off.scatter(1, lp.labels, -1.0)  # p >= 0: -1 marks the excluded
        n_valid: float | Tensor = float(n)
        if lp.valid is not None:
            scores = scores * lp.valid + (lp.valid - 1.0)
            n_valid = lp.valid.sum(2)
        count = topk_count(n_valid - label_counts(lp, inp.num_channels), self.k)
        return {"off_mask": topk_rows(scores, count, max(1, math.ceil(self.k * n / 100.0)))}


@register("topk_dice")
class TopKDiceLoss(_TopKDiceBase):
    """TopK Dice (Hosseini, BMVC 2024; "TopK Dice [42]" in the PM-Dice tables): "false
    negatives and true positives are ranked based on their error values and the ones that are
    not in top K% are ignored".

    Dice in the eq. 5 form with a binary mask ``m_ic``: positives of class c (``y_ic >= 0.5``)
    enter only if their error ``1 - p_ic`` is among the top k % of that image's positives of
    class c; negatives always enter. The mask is computed from detached probabilities.
    Exactly ``ceil(k/100 * n_c)`` positives are kept, without sorting and without host sync
    (integer labels: one radix selection over the label pixels for all classes at once,
    :mod:`~napari_segloss.losses.topk`); pixels whose error ties the threshold value share the
    remaining slots (mask value ``remaining / n_tied``: the loss equals that of any exact
    choice, and does not depend on pixel order).

    Args:
        k: percentage of positives kept per image and class, in (0, 100] (default 10).
        squared, include_background, batch_dice, skip_absent, eps: see :class:`DiceLoss`.
        mode, reduction, ignore_index, validate: see :class:`SegLoss`.
    """

    def mask(self, inp: Prepared) -> Tensor:
        pos = (inp.target >= 0.5).float() * _valid_for(inp)
        keep = topk_mask(pos, inp.complement.detach(), self.k)
        return keep + (1.0 - pos)  # positives: kept or not; everything else: 1 (keep is 0 there)

    def label_masks(self, inp: Prepared) -> dict[str, Tensor]:
        # positives are the label entries: one selection per class over the (B, N) label
        # errors 1 - p_y, grouped by label (ignored pixels excluded); negatives keep m = 1
        lp = inp.label_probs
        k = inp.num_channels
        b, _, n = lp.labels.shape
        flat = lp.labels.view(b, n)
        error = lp.label_complement.detach().view(b, n)
        group = flat if lp.valid is None else flat + (k - flat) * (1 - lp.valid.view(b, n).long())
        keep = topk_keep(error, group, topk_count(label_counts(lp, k), self.k))
        return {"label_mask": keep.view(b, 1, n)}


@register("wsdice")
class WSDiceLoss(AllClassesRegionLoss):
    """Weighted soft Dice, WSDice (Wang et al. 2020, eq. 4):
    ``1 - mean_c (2 sum Ghat G + eps) / (sum Ghat^2 + sum G^2 + eps)`` with
    ``G = w (2y - 1)``, ``Ghat = w (2p - 1)``, ``w = y (v2 - v1) + v1``.

    The coefficient lies in [-1, 1] (so the loss in [0, 2]). Because ``2y - 1`` already
    counts the negatives, a one-channel binary output is scored on the foreground channel only
    (the paper's binary formulation); multi-class is one-vs-rest per class ("for each class ...
    regard it as foreground and the rest as background"), mean over classes respecting
    ``include_background``. Absent classes keep a meaningful score (their negatives count), so
    every class enters the mean (no ``skip_absent``). The paper's rule names "each class of
    segmentation object", i.e. the foreground classes: ``include_background=False`` is that
    reading. The default keeps the background channel (this library's class mean), so softmax
    logits ``[0, x]`` score the mean of the background and foreground channels where the
    one-channel logit ``x`` scores the foreground only.

    Args:
        v1: weight of negatives, in [0, 0.5] (default 0.15, the paper's ChestX-ray8 setting).
        v2: weight of positives, in [v1, 1] (default ``1 - v1``). Eq. 4 requires
            ``0 <= v1 <= v2 <= 1``: ``v2 < v1`` (negatives weighted above positives) is refused.
            The paper also ties ``v2 = 1 - v1``; another ``v2`` in [v1, 1] is accepted as a
            generalisation (up to eps only the ratio ``v2 / v1`` matters).
        include_background, batch_dice, eps: see :class:`RegionLoss`.
        mode, reduction, ignore_index, validate: see :class:`SegLoss`.
    """

    def __init__(
        self,
        *,
        v1: float = 0.15,
        v2: float | None = None,
        include_background: bool = True,
        batch_dice: bool = False,
        eps: float = 1e-6,
        **kwargs: object,
    ) -> None:
        super().__init__(
            include_background=include_background, batch_dice=batch_dice, eps=eps, **kwargs
        )
        self.v1 = check_float("v1", v1, 0.0, 0.5)
        self.v2 = 1.0 - self.v1 if v2 is None else check_float("v2", v2, 0.0, 1.0)
        if self.v2 < self.v1:
            raise ValueError(
                f"v2 (weight of positives) must be >= v1 (weight of negatives): WSDice (Wang et "
                f"al. 2020, eq. 4) requires 0 <= v1 <= v2 <= 1, got v1={v1!r}, v2={v2!r}"
            )

    def coefficient_complement(self, inp: Prepared) -> Tensor:
        """``1 - mean_c WSDice_c`` per image (B|1,), without cancellation near 1."""
        err, den = self.batch_sum(*wsdice_sums(inp, self.v1, self.v2))
        # binary: the 2y - 1 form already counts the negatives -> foreground channel only
        first = int(inp.mode == "binary" or self.drops_background(inp))
        return ratio(err, den, self.eps)[:, first:].mean(1)

    def per_image(self, inp: Prepared) -> Tensor:
        return self.coefficient_complement(inp)


__all__ = [
    "DiceLoss",
    "FocalDiceLoss",
    "FocalDiceZhaoLoss",
    "GeneralizedDiceLoss",
    "LogDiceLoss",
    "PMDiceLoss",
    "TopKDiceLoss",
    "WSDiceLoss",
]

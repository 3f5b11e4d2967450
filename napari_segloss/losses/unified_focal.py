"""Focal + Tversky compounds of Yeung et al.: Mixed Focal (2021) and the symmetric and
asymmetric Unified Focal losses (Computerized Medical Imaging and Graphics 2022,
arXiv:2102.04525)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from .base import RegionLoss, check_float, check_float_or_seq, sum_terms
from .cross_entropy import focal_per_image, focal_pixel_loss
from .functional import TINY, dense_tversky_sums, tversky_complement, tversky_sums
from .inputs import Prepared
from .registry import register


def _pixel_channel_weights(loss: RegionLoss, inp: Prepared, y_sum: Tensor) -> Tensor:
    """Class-mean weights over the pixel channels (background channels = ``1 - p``)."""
    bg = inp.pix_is_background
    w = bg.new_ones(bg.shape)
    if not loss.include_background:
        w = w * (1.0 - bg)
    w = w.unsqueeze(0)
    if loss.skip_absent:
        w = w * (y_sum > 0).float()
    return w


def _pixel_tversky_complement(
    loss: RegionLoss, inp: Prepared, delta: float
) -> tuple[Tensor, Tensor]:
    """``1 - mTI`` over the pixel channels (B|1, P), Yeung's
    ``mTI = (TP + eps) / (TP + delta FN + (1 - delta) FP + eps)``, and the channels' y_sum."""
    if inp.mode != "multilabel":  # pixel channels are the region channels
        sums = tversky_sums(inp)
    else:
        sums = dense_tversky_sums(inp.pix_probs, inp.pix_complement, inp.pix_target, inp.pix_valid)
    tp, fp, fn, y_sum = loss.batch_sum(*sums)
    return tversky_complement(tp, fp, fn, 1.0 - delta, delta, loss.eps), y_sum


@register("mixed_focal")
class MixedFocalLoss(RegionLoss):
    """Mixed Focal loss (Yeung et al. 2021 eqs. 19-23):
    ``lam * L_mF + (1 - lam) * L_mFD``.

    ``L_mF``: categorical focal loss with class weights alpha (eqs. 7/21:
    ``alpha_c (1 - p_c)^gamma_f * CE_c``, mean over valid pixels); ``L_mFD``: modified focal
    Dice/Tversky ``mean_c (1 - mTI_c)^gamma_d`` with
    ``mTI_c = (TP + eps) / (TP + delta FN + (1 - delta) FP + eps)`` (eqs. 9, 22). Defaults
    follow the paper's experiments ("the same parameters as for the individual Focal loss and
    Focal Tversky loss"): lam 0.5 (eq. 24, ``L_FT + L_CF``, is twice this loss), delta 0.7,
    gamma_f 2, gamma_d 0.75 (= 1 / (4/3), see :class:`FocalTverskyLoss`). The experiments set
    the focal loss's alpha "as in" Lin et al. (0.25) but not how one number weighs the classes
    of the categorical eq. 7, whose alpha is a vector of class weights; the default None (no
    class weights) is that of the authors' code. Eq. 22 sums over the classes; the class mean
    here (as in the authors' code) divides that term by C.

    Args:
        lam: weight of the focal term in [0, 1].
        delta: weight of false negatives in mTI, in [0, 1].
        gamma_f: focal exponent >= 0. gamma_d: focal-Tversky exponent > 0.
        alpha: None, a float (alpha_t: alpha foreground, 1 - alpha background) or per-class
            weights (see :class:`FocalLoss`).
        include_background, batch_dice, skip_absent, eps: see :class:`RegionLoss`.
        mode, reduction, ignore_index, validate: see :class:`SegLoss`.
    """

    def __init__(
        self,
        *,
        lam: float = 0.5,
        delta: float = 0.7,
        gamma_f: float = 2.0,
        gamma_d: float = 0.75,
        alpha: float | Sequence[float] | None = None,
        **kwargs: object,
    ) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.lam = check_float("lam", lam, 0.0, 1.0)
        self.delta = check_float("delta", delta, 0.0, 1.0)
        self.gamma_f = check_float("gamma_f", gamma_f, 0.0)
        self.gamma_d = check_float("gamma_d", gamma_d, 0.0, None, lo_open=True)
        self.alpha = None if alpha is None else check_float_or_seq("alpha", alpha, 0.0, 1.0)

    def loss_terms(self, inp: Prepared) -> tuple[Tensor, Tensor]:
        focal = focal_per_image(inp, self.gamma_f, self.alpha)
        tp, fp, fn, y_sum = self.batch_sum(*tversky_sums(inp))
        r = tversky_complement(tp, fp, fn, 1.0 - self.delta, self.delta, self.eps)
        ftl = r.clamp_min(TINY).pow(self.gamma_d)
        ftl = self.class_mean(ftl, self.class_weights(inp, y_sum))
        return self.lam * focal, (1.0 - self.lam) * ftl

    def per_image(self, inp: Prepared) -> Tensor:
        return sum_terms(self.loss_terms(inp))


class _UnifiedBase(RegionLoss):
    asymmetric: bool = False

    def __init__(
        self,
        *,
        weight: float = 0.5,
        delta: float = 0.6,
        gamma: float = 0.5,
        **kwargs: object,
    ) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.weight = check_float("weight", weight, 0.0, 1.0)
        self.delta = check_float("delta", delta, 0.0, 1.0)
        self.gamma = check_float("gamma", gamma, 0.0, 1.0)

    def per_image(self, inp: Prepared) -> Tensor:
        return sum_terms(self.loss_terms(inp))

    def loss_terms(self, inp: Prepared) -> tuple[Tensor, Tensor]:
        bg = inp.pix_is_background  # (P,)
        # (asymmetric) focal Tversky over the pixel channels
        r, y_sum = _pixel_tversky_complement(self, inp, self.delta)
        ft = r.clamp_min(TINY).pow(1.0 - self.gamma)
        if self.asymmetric:  # background is not focally modulated (rare classes enhanced)
            ft = torch.where(bg.unsqueeze(0) > 0, r, ft)
        ft = self.class_mean(ft, _pixel_channel_weights(self, inp, y_sum))
        # (asymmetric) focal CE: background weight 1 - delta, foreground delta; asymmetric:
        # no focal suppression of the foreground classes (exponent 0 there)
        cls_w = bg * (1.0 - self.delta) + (1.0 - bg) * self.delta
        gamma: float | Tensor = self.gamma * bg if self.asymmetric else self.gamma
        fl = focal_pixel_loss(inp, gamma, cls_w).flatten(1).sum(1) / inp.valid_count()
        return self.weight * fl, (1.0 - self.weight) * ft


@register("unified_focal")
class UnifiedFocalLoss(_UnifiedBase):
    """Symmetric Unified Focal loss (Yeung et al. 2022, CMIG):
    ``L = weight * L_mF + (1 - weight) * L_mFT`` with

    * ``L_mFT = mean_c (1 - mTI_c)^(1 - gamma)``,
      ``mTI_c = (TP + eps) / (TP + delta FN + (1 - delta) FP + eps)``;
    * ``L_mF = mean_i sum_c delta_c (1 - p_ic)^gamma CE_ic``, ``CE_ic = -y_ic log p_ic``,
      ``delta_c = 1 - delta`` for the background (class 0, or ``1 - p`` for binary) and
      ``delta`` for every foreground class.

    Multilabel: each label is its own binary problem (background ``1 - p_c``), averaged over
    labels. ``include_background=False`` drops background channels from the Tversky part only
    (the CE part needs both terms). ``1 - mTI`` and ``1 - p`` are computed without
    cancellation and floored at the smallest normal float before the fractional powers.

    ``weight`` is the papers' lambda on the focal (CE) term, as in the Mixed Focal loss (eq. 23,
    ``lam`` of ``mixed_focal``) and MONAI's ``AsymmetricUnifiedFocalLoss``. The authors' Keras
    code (mlyg/unified-focal-loss) puts ``weight`` on the Tversky term instead; pass
    ``1 - weight`` to reproduce it (the default 0.5 is the same either way). The class mean
    replaces the papers' class sum (a factor of C, as in the authors' code).

    Args:
        weight: lambda, the weight of the focal (CE) term, in [0, 1] (default 0.5); the
            Tversky term gets 1 - weight.
        delta: in [0, 1] (default 0.6): weight of false negatives in mTI and of the foreground
            classes in the CE term (the background gets 1 - delta).
        gamma: in [0, 1] (default 0.5): focal exponent of the CE term; the Tversky term is
            raised to 1 - gamma.
        include_background, batch_dice, skip_absent, eps: see :class:`RegionLoss`.
        mode, reduction, ignore_index, validate: see :class:`SegLoss`.
    """


@register("asymmetric_unified_focal")
class AsymmetricUnifiedFocalLoss(_UnifiedBase):
    """Asymmetric Unified Focal loss (Yeung et al. 2022, CMIG):
    ``L = weight * L_maF + (1 - weight) * L_maFT`` (``weight`` on the focal term, see
    :class:`UnifiedFocalLoss`) with

    * ``L_maFT = mean_c [bg: 1 - mTI_bg; fg: (1 - mTI_c)^(1 - gamma)]``;
    * ``L_maF = mean_i [(1 - delta)(1 - p_bg)^gamma CE_bg + delta sum_fg CE_c]``: focal
      suppression only for the background, the rare (foreground) classes are not suppressed.

    Background is class 0 (or ``1 - p`` for binary; ``1 - p_c`` per label in multilabel).
    Args as :class:`UnifiedFocalLoss`.
    """

    asymmetric = True

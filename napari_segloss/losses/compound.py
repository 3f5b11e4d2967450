"""Compound losses: the ``a+b`` sum of registered losses, Combo, Mixed Focal, (Asymmetric)
Unified Focal and the WSDice cascade ``beta * Focal - log(WSDice)``."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from ._base import TINY, RegionLoss, SegLoss, check_choice, check_float, check_float_or_seq, reduce
from ._input import REDUCTIONS, Prepared
from .cross_entropy import (
    _finish,
    _pixel_weights,
    focal_terms,
    hard_label_pixel_loss,
)
from .dice import _WSDiceBase, hard_label_dice, modulated_dice
from .registry import register
from .tversky import region_tversky_index, tversky_index

#: every row of the PM-Dice paper's tables 1-3 that is a sum of two losses
PAPER_COMPOUNDS: tuple[str, ...] = (
    "ce+dice",
    "focal+dice",
    "topk_ce+dice",
    "ce+topk_dice",
    "topk_ce+topk_dice",
    "ce+pm_dice",
    "focal+pm_dice",
)


class CompoundLoss(nn.Module):
    """Weighted sum ``sum_j w_j L_j`` of registered losses (PM-Dice paper tables 1-3: plain
    sums, all weights 1.0 by default).

    Components run with ``reduction="none"`` and their per-image vectors are added (a
    ``batch_dice`` component's ``(1,)`` broadcasts over the batch), then reduced. When all
    components share mode / ignore_index / validate, the inputs are prepared (softmax, one-hot)
    only once.

    Attributes:
        components: ``nn.ModuleList`` of the component losses.
        weights: tuple of floats, one per component.
    """

    def __init__(
        self,
        components: Sequence[SegLoss],
        *,
        weights: Sequence[float] | None = None,
        reduction: str = "mean",
        names: Sequence[str] | None = None,
    ) -> None:
        super().__init__()
        if len(components) < 2:
            raise ValueError(f"a compound needs at least 2 components, got {len(components)}")
        for c in components:
            if not isinstance(c, SegLoss):
                raise ValueError(
                    f"compound components must be registered losses, got {type(c).__name__}"
                )
        if weights is None:
            weights = (1.0,) * len(components)
        if isinstance(weights, str) or not isinstance(weights, Sequence):
            raise ValueError(f"weights must be a sequence of floats, got {weights!r}")
        if len(weights) != len(components):
            raise ValueError(
                f"weights needs one value per component ({len(components)}), got {len(weights)}"
            )
        ws = []
        for i, w in enumerate(weights):
            if isinstance(w, bool) or not isinstance(w, int | float):
                raise ValueError(f"weights[{i}] must be a real number, got {w!r}")
            ws.append(float(w))
        check_choice("reduction", reduction, REDUCTIONS)
        self.components = nn.ModuleList(components)
        self.weights = tuple(ws)
        self.reduction = reduction
        self.names = (
            tuple(names)
            if names is not None
            else tuple(getattr(c, "loss_name", type(c).__name__) for c in components)
        )
        keys = {(c.mode, c.ignore_index, c.validate) for c in components}
        self._shared_prepare = len(keys) == 1

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        comps: list[SegLoss] = list(self.components)  # type: ignore[arg-type]
        total: Tensor | None = None
        inp = comps[0].prepare(logits, target) if self._shared_prepare else None
        for w, c in zip(self.weights, comps, strict=True):
            c_inp = inp if inp is not None else c.prepare(logits, target)
            # the mean of a weighted sum is the weighted sum of the means (a batch_dice
            # component's (1,) included), so a component that reduces itself can: the
            # fused CPU Dice then computes its gradient with its value
            v = w * c.per_image(c_inp)
            total = v if total is None else total + v
        assert total is not None
        return reduce(total, self.reduction)

    def extra_repr(self) -> str:
        return f"names={self.names}, weights={self.weights}, reduction={self.reduction!r}"


def _log1m_probs(inp: Prepared) -> tuple[Tensor, Tensor, Tensor]:
    """``(y, log p, log(1 - p))`` of the channels Combo's weighted CE runs over.

    Binary: the foreground channel only (summing both expanded channels would cancel beta);
    multilabel: every label (logsigmoid of +-x); multiclass: every class, with
    ``log(1 - p_c) = log(-expm1(log p_c))`` from log_softmax, the log-prob clamped just below 0
    so a saturated class gives a large finite value instead of -inf.
    """
    x = inp.logits
    if inp.mode == "binary":
        return inp.target[:, 1:], F.logsigmoid(x), F.logsigmoid(-x)
    if inp.mode == "multilabel":
        return inp.target, F.logsigmoid(x), F.logsigmoid(-x)
    lp = F.log_softmax(x, dim=1)
    return inp.target, lp, _log1m_exp(lp)


#: log-probabilities are clamped just below 0 before ``log(1 - p)`` (see _log1m_probs)
_LOG1M_CLAMP = -1e-7


def _log1m_exp(lp: Tensor) -> Tensor:
    """``log(1 - exp(lp))``, accurate when ``p = exp(lp)`` is close to 1."""
    return torch.log(-torch.expm1(lp.clamp(max=_LOG1M_CLAMP)))


class _SumLog1mP(torch.autograd.Function):
    """``sum_c log(1 - p_c)`` over the class axis of log-probabilities (B, K, N) -> (B, N),
    with the gradient ``-1 / expm1(-lp)`` written out (0 where the clamp is active): one
    full-size temporary in each direction instead of four chained autograd nodes."""

    @staticmethod
    def forward(ctx, lp):  # type: ignore[override]
        t = lp.clamp(max=_LOG1M_CLAMP)
        out = t.expm1_().neg_().log_().sum(1)
        ctx.save_for_backward(lp)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, g):  # type: ignore[override]
        (lp,) = ctx.saved_tensors
        d = lp.clamp(max=_LOG1M_CLAMP).neg_().expm1_().reciprocal_().neg_()
        d.masked_fill_(lp > _LOG1M_CLAMP, 0.0)  # clamped entries carry no gradient
        return d.mul_(g.unsqueeze(1))


@register("combo")
class ComboLoss(RegionLoss):
    """Combo loss (Taghanaki et al. 2019; Yeung et al. 2021 eqs. 16-17):
    ``alpha * L_mCE - (1 - alpha) * DSC`` with the weighted CE
    ``L_mCE = -1/N sum_i [beta y log p + (1 - beta)(1 - y) log(1 - p)]`` (summed over class
    channels for multi-class; the foreground channel for binary; mean over labels for
    multilabel) and ``DSC`` the class-mean plain Dice coefficient
    ``(2 sum y p + eps) / (sum (y + p) + eps)`` (eq. 10 form, not squared).

    The loss can be negative (its minimum is ``-(1 - alpha)``).

    Args:
        alpha: weight of the CE term in [0, 1] (default 0.5).
        beta: weight of positives inside the CE term in [0, 1] (default 0.5; beta > 0.5
            penalises false negatives more).
        include_background, batch_dice, skip_absent, eps: see :class:`RegionLoss` (they shape
            the DSC term).
        mode, reduction, ignore_index, validate: see :class:`SegLoss`.
    """

    def __init__(self, *, alpha: float = 0.5, beta: float = 0.5, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.alpha = check_float("alpha", alpha, 0.0, 1.0)
        self.beta = check_float("beta", beta, 0.0, 1.0)

    def _weighted_ce(self, inp: Prepared) -> Tensor:
        """Per-pixel ``L_mCE`` terms summed over the class channels, (B, *sp) or (B, N)."""
        b = self.beta
        if inp.labels is not None and inp.mode == "multiclass":
            # one-hot-free: sum_c [b y log p + (1 - b)(1 - y) log(1 - p)]
            #   = b log p_y + (1 - b) (sum_c log(1 - p_c) - log(1 - p_y))
            lp = F.log_softmax(inp.logits, dim=1).flatten(2)
            lab = inp.labels.reshape(lp.shape[0], 1, -1)
            lp_y = lp.gather(1, lab).squeeze(1)
            px = -(b * lp_y + (1.0 - b) * (_SumLog1mP.apply(lp) - _log1m_exp(lp_y)))
            return px if inp.valid is None else px * inp.valid.flatten(1)
        y, lp, l1mp = _log1m_probs(inp)
        px = -(b * y * lp + (1.0 - b) * (1.0 - y) * l1mp)
        if inp.valid is not None:
            px = px * inp.valid
        px = px.sum(1)
        return px / inp.logits.shape[1] if inp.mode == "multilabel" else px

    def per_image(self, inp: Prepared) -> Tensor:
        mce = self._weighted_ce(inp).flatten(1).sum(1) / inp.valid_count()
        if inp.labels is not None:
            dsc, y_sum = hard_label_dice(
                inp, 0.0, squared=False, eps=self.eps, batch=self.batch_dice
            )
        else:
            dsc, y_sum = modulated_dice(
                self.masked_probs(inp),
                inp.target,
                None,
                squared=False,
                eps=self.eps,
                batch=self.batch_dice,
            )
        dsc_mean = self.class_mean(dsc, self.class_weights(inp, y_sum))
        return self.alpha * mce - (1.0 - self.alpha) * dsc_mean


def _focal_per_image(
    inp: Prepared, gamma: float, alpha: float | tuple[float, ...] | None
) -> Tensor:
    """Focal CE (eq. 3 with alpha_t) per image: mean over valid pixels."""
    w = _pixel_weights(inp, "alpha", alpha, binary_alpha=True)
    if inp.labels is not None:
        px = hard_label_pixel_loss(inp, gamma, w)
    else:
        px = _finish(inp, focal_terms(inp, gamma), w)
    return px.flatten(1).sum(1) / inp.valid_count()


def _pix_class_weights(loss: RegionLoss, inp: Prepared, y_sum: Tensor) -> Tensor:
    """Class-mean weights over the pixel channels (background channels = ``1 - p``)."""
    w = torch.ones_like(inp.pix_is_background)
    if not loss.include_background:
        w = w * (1.0 - inp.pix_is_background)
    w = w.unsqueeze(0)
    if loss.skip_absent:
        w = w * (y_sum > 0).float()
    return w


def _pix_tversky(loss: RegionLoss, inp: Prepared, delta: float) -> tuple[Tensor, Tensor]:
    """Yeung's mTI = (TP + eps)/(TP + delta FN + (1 - delta) FP + eps) over pixel channels."""
    if inp.mode != "multilabel":  # pixel channels are the region channels
        return region_tversky_index(inp, 1.0 - delta, delta, loss.eps, loss.batch_dice)
    p = inp.pix_probs if inp.pix_valid is None else inp.pix_probs * inp.pix_valid
    return tversky_index(p, inp.pix_target, 1.0 - delta, delta, loss.eps, loss.batch_dice)


def _pixel_mean(inp: Prepared, px: Tensor) -> Tensor:
    """(B, P, *sp) pixel-channel terms -> per-image mean over valid pixels (mean over labels)."""
    out = px.sum(1)
    if inp.pix_div != 1:
        out = out / inp.pix_div
    return out.flatten(1).sum(1) / inp.valid_count()


@register("mixed_focal")
class MixedFocalLoss(RegionLoss):
    """Mixed Focal loss (Yeung et al. 2021 eqs. 19-23):
    ``lam * L_mF + (1 - lam) * L_mFD``.

    ``L_mF``: categorical focal loss with class weights alpha (eqs. 7/21:
    ``alpha_c (1 - p_c)^gamma_f * CE_c``, mean over valid pixels); ``L_mFD``: modified focal
    Dice/Tversky ``mean_c (1 - mTI_c)^gamma_d`` with
    ``mTI_c = (TP + eps) / (TP + delta FN + (1 - delta) FP + eps)`` (eqs. 9, 22). Defaults
    follow the paper's experiments ("the same parameters as for the individual Focal loss and
    Focal Tversky loss"): lam 0.5, delta 0.7, gamma_f 2, gamma_d 0.75, alpha None.

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

    def per_image(self, inp: Prepared) -> Tensor:
        focal = _focal_per_image(inp, self.gamma_f, self.alpha)
        ti, y_sum = region_tversky_index(
            inp, 1.0 - self.delta, self.delta, self.eps, self.batch_dice
        )
        ftl = (1.0 - ti).clamp_min(TINY).pow(self.gamma_d)
        ftl = self.class_mean(ftl, self.class_weights(inp, y_sum))
        return self.lam * focal + (1.0 - self.lam) * ftl


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
        bg = inp.pix_is_background  # (P,)
        bgv = bg.view(1, -1, *([1] * (inp.logits.ndim - 2)))
        # --- (asymmetric) focal Tversky over pixel channels
        ti, y_sum = _pix_tversky(self, inp, self.delta)
        base = (1.0 - ti).clamp_min(TINY)
        ft = base.pow(1.0 - self.gamma)
        if self.asymmetric:  # background is not focally modulated (rare classes enhanced)
            ft = torch.where(bg.unsqueeze(0) > 0, 1.0 - ti, ft)
        ft = self.class_mean(ft, _pix_class_weights(self, inp, y_sum))
        # --- (asymmetric) focal CE: background (1 - delta), foreground delta
        cls_w = bgv * (1.0 - self.delta) + (1.0 - bgv) * self.delta
        if inp.labels is not None:  # only the label entry has y = 1: gather, no one-hot
            fl = self._label_focal(inp, cls_w.flatten())
        else:
            ce = -(inp.pix_target * inp.pix_logp)
            mod = (1.0 - inp.pix_probs).clamp_min(TINY).pow(self.gamma)
            if self.asymmetric:  # no suppression of the foreground classes
                mod = torch.where(bgv > 0, mod, torch.ones_like(mod))
            fl = _pixel_mean(inp, cls_w * mod * ce)
        return self.weight * ft + (1.0 - self.weight) * fl

    def _label_focal(self, inp: Prepared, cls_w: Tensor) -> Tensor:
        """``mean_i delta_t (1 - p_t)^gamma (-log p_t)`` for hard labels (t: the label);
        asymmetric: no modulation of foreground labels (exponent 0 there)."""
        gamma = self.gamma * inp.pix_is_background if self.asymmetric else self.gamma
        px = hard_label_pixel_loss(inp, gamma, cls_w)
        return px.flatten(1).sum(1) / inp.valid_count()


@register("unified_focal")
class UnifiedFocalLoss(_UnifiedBase):
    """Symmetric Unified Focal loss (Yeung et al. 2022, CMIG; official code
    mlyg/unified-focal-loss): ``L = weight * L_mFT + (1 - weight) * L_mF`` with

    * ``L_mFT = mean_c (1 - mTI_c)^(1 - gamma)``,
      ``mTI_c = (TP + eps) / (TP + delta FN + (1 - delta) FP + eps)``;
    * ``L_mF = mean_i sum_c delta_c (1 - p_ic)^gamma CE_ic``, ``CE_ic = -y_ic log p_ic``,
      ``delta_c = 1 - delta`` for the background (class 0, or ``1 - p`` for binary) and
      ``delta`` for every foreground class.

    Multilabel: each label is its own binary problem (background ``1 - p_c``), averaged over
    labels. ``include_background=False`` drops background channels from the Tversky part only
    (the CE part needs both terms). The paper text in papers/ has only the abstract: this
    follows the published equations and code. ``1 - mTI`` and ``1 - p`` are clamped at 1e-12
    before the fractional powers.

    Args:
        weight: lambda in [0, 1] (default 0.5). delta: in [0, 1] (default 0.6).
        gamma: in [0, 1] (default 0.5).
        include_background, batch_dice, skip_absent, eps: see :class:`RegionLoss`.
        mode, reduction, ignore_index, validate: see :class:`SegLoss`.
    """


@register("asymmetric_unified_focal")
class AsymmetricUnifiedFocalLoss(_UnifiedBase):
    """Asymmetric Unified Focal loss (Yeung et al. 2022, CMIG; official code):
    ``L = weight * L_maFT + (1 - weight) * L_maF`` with

    * ``L_maFT = mean_c [bg: 1 - mTI_bg; fg: (1 - mTI_c)^(1 - gamma)]``;
    * ``L_maF = mean_i [(1 - delta)(1 - p_bg)^gamma CE_bg + delta sum_fg CE_c]``: focal
      suppression only for the background, the rare (foreground) classes are not suppressed.

    Background is class 0 (or ``1 - p`` for binary; ``1 - p_c`` per label in multilabel).
    Args as :class:`UnifiedFocalLoss`.
    """

    asymmetric = True


@register("focal_log_wsdice")
class FocalLogWSDiceLoss(_WSDiceBase):
    """Cascade ``beta * FL - log(WSDice)`` (Wang et al. 2020, Fig. 7 and Table 1).

    FL is the focal loss (eq. 1; Lin's alpha_t: alpha for foreground, 1 - alpha for
    background) and WSDice the class-mean WSDice coefficient of :class:`WSDiceLoss`. That
    coefficient lies in [-1, 1]; it is clamped below at ``eps`` before the log so the loss stays
    finite. While the coefficient is <= eps the log term gives no gradient and the focal term
    drives training.

    Args:
        beta: weight of the focal term >= 0 (default 7, the paper's ChestX-ray8 optimum).
        alpha: focal alpha_t in [0, 1] (default 0.3). gamma: focal exponent >= 0 (default 3.5).
        v1, v2: WSDice weights (default 0.15, 1 - v1).
        include_background, batch_dice, eps: see :class:`RegionLoss`.
        mode, reduction, ignore_index, validate: see :class:`SegLoss`.
    """

    def __init__(
        self,
        *,
        beta: float = 7.0,
        alpha: float | Sequence[float] | None = 0.3,
        gamma: float = 3.5,
        v1: float = 0.15,
        v2: float | None = None,
        include_background: bool = True,
        batch_dice: bool = False,
        eps: float = 1e-6,
        **kwargs: object,
    ) -> None:
        super().__init__(
            v1=v1,
            v2=v2,
            include_background=include_background,
            batch_dice=batch_dice,
            eps=eps,
            **kwargs,
        )
        self.beta = check_float("beta", beta, 0.0)
        self.alpha = None if alpha is None else check_float_or_seq("alpha", alpha, 0.0, 1.0)
        self.gamma = check_float("gamma", gamma, 0.0)

    def per_image(self, inp: Prepared) -> Tensor:
        fl = _focal_per_image(inp, self.gamma, self.alpha)
        coef = self.wsdice_mean(inp)
        return self.beta * fl - torch.log(coef.clamp_min(self.eps))

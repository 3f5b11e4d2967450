"""Cross-checks against MONAI and segmentation_models_pytorch where they define the same quantity.

Parameter mapping is spelled out per test. Our region losses average over the classes present
in the image by default (PM-Dice eq. 4 text); MONAI and smp average over all classes, so the
cross-checks use ``skip_absent=False`` (or inputs where every class is present).
"""

from __future__ import annotations

import pytest
import torch

from napari_segloss.losses import get_loss

monai_losses = pytest.importorskip("monai.losses")
smp_losses = pytest.importorskip("segmentation_models_pytorch.losses")

EPS = 1e-6


def make(kind: str, seed: int = 0, shape=(2, 3, 6, 5)):
    g = torch.Generator().manual_seed(seed)
    b, c, *sp = shape
    if kind == "binary":
        x = torch.randn(b, 1, *sp, generator=g) * 2
        y = torch.randint(0, 2, (b, *sp), generator=g)
    else:
        x = torch.randn(b, c, *sp, generator=g) * 2
        y = torch.randint(0, c, (b, *sp), generator=g)
    return x, y


def as_two_channels(x: torch.Tensor) -> torch.Tensor:
    """softmax([0, x]) == [1 - sigmoid(x), sigmoid(x)]: our binary expansion for MONAI."""
    return torch.cat([torch.zeros_like(x), x], dim=1)


@pytest.mark.parametrize("kind", ["binary", "multiclass"])
@pytest.mark.parametrize("shape", [(2, 3, 6, 5), (2, 3, 3, 4, 5)])
@pytest.mark.parametrize("squared", [True, False])
def test_dice_vs_monai(kind: str, shape, squared: bool) -> None:
    # ours dice(eps, squared, skip_absent=False) == MONAI DiceLoss(softmax=True, to_onehot_y=True,
    # squared_pred=squared, smooth_nr=eps, smooth_dr=eps); binary via two-channel softmax
    x, y = make(kind, shape=shape)
    ref_fn = monai_losses.DiceLoss(
        softmax=True, to_onehot_y=True, squared_pred=squared, smooth_nr=EPS, smooth_dr=EPS
    )
    xm = as_two_channels(x) if kind == "binary" else x
    ref = ref_fn(xm, y.unsqueeze(1))
    ours = get_loss("dice", squared=squared, skip_absent=False, eps=EPS)(x, y)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-6)
    # batch dice == MONAI batch=True
    ref_b = monai_losses.DiceLoss(
        softmax=True,
        to_onehot_y=True,
        squared_pred=squared,
        smooth_nr=EPS,
        smooth_dr=EPS,
        batch=True,
    )(xm, y.unsqueeze(1))
    ours_b = get_loss("dice", squared=squared, skip_absent=False, batch_dice=True)(x, y)
    torch.testing.assert_close(ours_b, ref_b, rtol=1e-5, atol=1e-6)
    # include_background=False on both sides
    ref_nb = monai_losses.DiceLoss(
        softmax=True,
        to_onehot_y=True,
        squared_pred=squared,
        smooth_nr=EPS,
        smooth_dr=EPS,
        include_background=False,
    )(xm, y.unsqueeze(1))
    ours_nb = get_loss("dice", squared=squared, skip_absent=False, include_background=False)(x, y)
    torch.testing.assert_close(ours_nb, ref_nb, rtol=1e-5, atol=1e-6)


def test_pm_dice_gamma0_vs_monai() -> None:
    x, y = make("multiclass")
    ref = monai_losses.DiceLoss(
        softmax=True, to_onehot_y=True, squared_pred=True, smooth_nr=EPS, smooth_dr=EPS
    )(x, y.unsqueeze(1))
    ours = get_loss("pm_dice", gamma=0.0, skip_absent=False)(x, y)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-6)


def test_dice_vs_smp() -> None:
    # smp DiceLoss("multiclass", from_logits=True, smooth=s) sums over batch and space (dims
    # (0, 2)), plain denominator: (2I + 2s) / (sum p + sum y + 2s) -> ours batch_dice=True,
    # squared=False, eps = 2 s. Every class is present in the batch so smp's mask is all ones.
    x, y = make("multiclass", shape=(2, 3, 8, 8))
    assert all(bool((y == c).any()) for c in range(3))
    s = 5e-7
    ref = smp_losses.DiceLoss("multiclass", from_logits=True, smooth=s, eps=1e-12)(x, y)
    ours = get_loss("dice", squared=False, batch_dice=True, eps=2 * s)(x, y)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-6)
    # binary: smp "binary" scores the foreground only -> include_background=False
    xb, yb = make("binary", shape=(2, 1, 8, 8))
    ref_b = smp_losses.DiceLoss("binary", from_logits=True, smooth=s, eps=1e-12)(
        xb, yb.unsqueeze(1)
    )
    ours_b = get_loss("dice", squared=False, batch_dice=True, eps=2 * s, include_background=False)(
        xb, yb
    )
    torch.testing.assert_close(ours_b, ref_b, rtol=1e-5, atol=1e-6)


def test_tversky_vs_smp() -> None:
    # smp TverskyLoss(alpha=FP weight, beta=FN weight, gamma=1) in batch mode, smooth s:
    # (TP + s) / (TP + a FP + b FN + s) -> ours tversky(batch_dice=True, eps=s)
    x, y = make("multiclass", shape=(2, 3, 8, 8))
    ref = smp_losses.TverskyLoss("multiclass", from_logits=True, alpha=0.3, beta=0.7, smooth=EPS)(
        x, y
    )
    ours = get_loss("tversky", alpha=0.3, beta=0.7, batch_dice=True, eps=EPS)(x, y)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind", ["binary", "multiclass"])
def test_tversky_vs_monai(kind: str) -> None:
    # MONAI TverskyLoss: alpha weights FP, beta weights FN (same as ours)
    x, y = make(kind)
    xm = as_two_channels(x) if kind == "binary" else x
    ref = monai_losses.TverskyLoss(
        alpha=0.3, beta=0.7, softmax=True, to_onehot_y=True, smooth_nr=EPS, smooth_dr=EPS
    )(xm, y.unsqueeze(1))
    ours = get_loss("tversky", alpha=0.3, beta=0.7, skip_absent=False)(x, y)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind", ["binary", "multiclass"])
def test_generalized_dice_vs_monai(kind: str) -> None:
    # MONAI GeneralizedDiceLoss(w_type="square"): inf weights of absent classes -> image max
    x, y = make(kind, shape=(2, 4, 5, 5))
    y[0][y[0] == 1] = 0  # class 1 absent from image 0
    xm = as_two_channels(x) if kind == "binary" else x
    ref = monai_losses.GeneralizedDiceLoss(
        softmax=True, to_onehot_y=True, smooth_nr=EPS, smooth_dr=EPS
    )(xm, y.unsqueeze(1))
    ours = get_loss("generalized_dice", eps=EPS)(x, y)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("alpha", [None, 0.25])
@pytest.mark.parametrize("gamma", [2.0, 0.5])
def test_focal_vs_monai(alpha, gamma: float) -> None:
    # binary: MONAI FocalLoss(use_softmax=False) on (B,1,...) = sigmoid focal, mean over pixels
    x, y = make("binary")
    ref = monai_losses.FocalLoss(gamma=gamma, alpha=alpha)(x, y.unsqueeze(1).float())
    ours = get_loss("focal", gamma=gamma, alpha=alpha)(x, y)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-6)
    # multiclass: MONAI use_softmax=True returns per-channel terms averaged over B*C*N; eq. 3
    # sums over classes, so ours = C * MONAI. MONAI alpha float: 1-alpha bg, alpha others.
    xm, ym = make("multiclass")
    c = xm.shape[1]
    ref_m = monai_losses.FocalLoss(gamma=gamma, alpha=alpha, use_softmax=True, to_onehot_y=True)(
        xm, ym.unsqueeze(1)
    )
    ours_m = get_loss("focal", gamma=gamma, alpha=alpha)(xm, ym)
    torch.testing.assert_close(ours_m, c * ref_m, rtol=1e-5, atol=1e-6)


def test_dice_ce_vs_monai() -> None:
    # MONAI DiceCELoss = CE (mean) + DiceLoss; ours "ce+dice" with skip_absent=False
    x, y = make("multiclass")
    ref = monai_losses.DiceCELoss(
        softmax=True, to_onehot_y=True, squared_pred=True, smooth_nr=EPS, smooth_dr=EPS
    )(x, y.unsqueeze(1))
    ours = get_loss("ce+dice", skip_absent=False)(x, y)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-6)


def test_ce_vs_torch() -> None:
    x, y = make("multiclass")
    torch.testing.assert_close(get_loss("ce")(x, y), torch.nn.functional.cross_entropy(x, y))
    y2 = y.clone()
    y2[0, 0, :] = 255
    ref = torch.nn.functional.cross_entropy(x, y2, ignore_index=255, reduction="none")
    per_img = ref.flatten(1).sum(1) / (y2 != 255).flatten(1).sum(1)
    torch.testing.assert_close(get_loss("ce", ignore_index=255)(x, y2), per_img.mean())
    xb, yb = make("binary")
    ref_b = torch.nn.functional.binary_cross_entropy_with_logits(xb, yb.unsqueeze(1).float())
    torch.testing.assert_close(get_loss("bce")(xb, yb), ref_b)


@pytest.mark.parametrize("weight", [0.0, 0.3, 0.5, 1.0])
def test_asymmetric_unified_focal_vs_monai(weight: float) -> None:
    # ``weight`` is the papers' lambda on the focal term, as MONAI's AsymmetricUnifiedFocalLoss.
    # MONAI's parts take probabilities; its focal part averages over the two classes where the
    # paper (and the authors' code) sums them, hence the 2. Its epsilon (1e-7, also a clip of p)
    # differs from ours by ~1e-7.
    unified = pytest.importorskip("monai.losses.unified_focal_loss")
    x, y = make("binary", shape=(2, 1, 8, 7))
    x = x.clamp(-6.0, 6.0)  # away from MONAI's clip of p at 1e-7
    p = torch.sigmoid(x)
    probs, onehot = torch.cat([1 - p, p], 1), torch.stack([1 - y, y], 1).float()
    focal = unified.AsymmetricFocalLoss(gamma=0.5, delta=0.7)(probs, onehot)
    tversky = unified.AsymmetricFocalTverskyLoss(gamma=0.5, delta=0.7)(probs, onehot)
    ours = get_loss("asymmetric_unified_focal", weight=weight, gamma=0.5, delta=0.7)(x, y)
    torch.testing.assert_close(
        ours, weight * 2 * focal + (1 - weight) * tversky, rtol=1e-5, atol=1e-6
    )

"""Semantics audit: divisors of ignored multilabel entries, WSDice's v1 <= v2, and the "sum"
reduction of losses that add a per-image term to a batch_dice term."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from napari_segloss.losses import get_loss, list_losses

LN2 = math.log(2.0)


# ----- multilabel CE with ignored entries: mean over the valid entries ---------------------------
def _multilabel_hand_case() -> tuple[torch.Tensor, torch.Tensor]:
    # (B=1, C=2, W=2). Entries (label, pixel): (0, 0) x=0 y=1 -> ln 2; (0, 1) x=ln 3 y=1 ->
    # -ln(3/4) = ln(4/3); (1, 0) ignored; (1, 1) x=0 y=0 -> ln 2
    x = torch.tensor([[[0.0, math.log(3.0)], [5.0, 0.0]]])
    t = torch.tensor([[[1.0, 1.0], [255.0, 0.0]]])
    return x, t


def test_multilabel_topk_ce_selected_divides_by_the_selected_valid_entries() -> None:
    # k = 100 keeps every pixel: "selected" and "pixels" both average the 3 valid entries
    x, t = _multilabel_hand_case()
    expected = (2.0 * LN2 + math.log(4.0 / 3.0)) / 3.0
    for normalize in ("pixels", "selected"):
        loss = get_loss(
            "topk_ce", k=100.0, normalize=normalize, mode="multilabel", ignore_index=255
        )
        assert float(loss(x, t)) == pytest.approx(expected, rel=1e-6), normalize
    # k = 50 keeps pixel 1, the higher pixel value ((ln 4/3 + ln 2) / 2 against pixel 0's
    # ln 2 / 2: a pixel's value is the sum over its valid labels / C): its 2 entries' mean
    selected = get_loss(
        "topk_ce", k=50.0, normalize="selected", mode="multilabel", ignore_index=255
    )
    assert float(selected(x, t)) == pytest.approx((math.log(4.0 / 3.0) + LN2) / 2.0, rel=1e-6)
    # a selected pixel with one valid label of two: that entry's CE, not half of it
    t_one = torch.tensor([[[1.0, 255.0], [255.0, 255.0]]])
    assert float(selected(x, t_one)) == pytest.approx(LN2, rel=1e-6)


def test_multilabel_ce_divides_by_the_valid_entries_hand_values() -> None:
    x, t = _multilabel_hand_case()
    expected = (2.0 * LN2 + math.log(4.0 / 3.0)) / 3.0  # 3 valid entries (was / 4: 2 x 2)
    got = get_loss("ce", mode="multilabel", ignore_index=255)(x, t)
    assert float(got) == pytest.approx(expected, rel=1e-6)
    # the same as torch's BCE averaged over the non-ignored entries
    valid = t != 255
    ref = F.binary_cross_entropy_with_logits(x[valid], t[valid])
    assert float(got) == pytest.approx(float(ref), rel=1e-6)
    # the CE terms of the mixtures share the divisor: combo with alpha = 1 is its eq. 17
    # term, beta (y log p) + (1 - beta)((1 - y) log(1 - p)), half the BCE at beta = 1/2
    combo = get_loss("combo", alpha=1.0, beta=0.5, mode="multilabel", ignore_index=255)
    assert float(combo(x, t)) == pytest.approx(expected / 2.0, rel=1e-6)


@pytest.mark.parametrize("name", ["ce", "focal", "topk_ce"])
def test_multilabel_single_valid_entry_is_its_own_bce(name: str) -> None:
    # C = 3, one pixel, labels 1 and 2 ignored: the loss is label 0's BCE alone, ln 2 at x = 0
    # (was ln 2 / 3); focal with gamma 0 and topk_ce with k = 100 are CE
    x = torch.zeros(1, 3, 1)
    t = torch.tensor([[[1.0], [255.0], [255.0]]])
    params = {"gamma": 0.0} if name == "focal" else {"k": 100.0} if name == "topk_ce" else {}
    got = get_loss(name, mode="multilabel", ignore_index=255, **params)(x, t)
    assert float(got) == pytest.approx(LN2, rel=1e-6)


def test_multilabel_ce_per_image_divisor_with_reduction_none() -> None:
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 3, 4, 4, generator=g)
    t = torch.randint(0, 2, (2, 3, 4, 4), generator=g).float()
    t[0, :2, 0, :3] = 255.0  # 6 entries of image 0 ignored, some pixels partly
    t[1, 2, 1, 1] = 255.0
    valid = (t != 255).float()
    bce = F.binary_cross_entropy_with_logits(x, t * valid, reduction="none") * valid
    expected = bce.flatten(1).sum(1) / valid.flatten(1).sum(1)  # 42 and 47 entries
    got = get_loss("ce", mode="multilabel", ignore_index=255, reduction="none")(x, t)
    torch.testing.assert_close(got, expected)


# ----- WSDice: eq. 4 requires 0 <= v1 <= v2 <= 1 -------------------------------------------------
@pytest.mark.parametrize("name", ["wsdice", "focal_log_wsdice"])
def test_wsdice_refuses_v2_below_v1(name: str) -> None:
    with pytest.raises(ValueError, match=r"v1 <= v2.*v1=0\.3, v2=0\.2"):
        get_loss(name, v1=0.3, v2=0.2)
    # the boundary v1 == v2 is allowed by the paper, and so is v2 != 1 - v1 (generalisation)
    assert get_loss(name, v1=0.3, v2=0.3).v2 == 0.3
    assert get_loss(name, v1=0.1, v2=0.6).v2 == 0.6


def test_wsdice_non_default_v2_hand_value() -> None:
    # binary, one image of 2 pixels, p = sigmoid(0) = 1/2 everywhere, y = [1, 0], v1=0.2,
    # v2=0.6: 2p - 1 = 0 so sum Ghat G = 0 and sum Ghat^2 = 0; sum G^2 = v2^2 + v1^2.
    # WSDice = eps / (v2^2 + v1^2 + eps); loss = 1 - that
    x = torch.zeros(1, 1, 2)
    y = torch.tensor([[1, 0]])
    eps = 1e-6
    expected = 1.0 - eps / (0.36 + 0.04 + eps)
    got = get_loss("wsdice", v1=0.2, v2=0.6, eps=eps)(x, y)
    assert float(got) == pytest.approx(expected, rel=1e-6)


# ----- reduction="sum" counts a batch_dice term once ---------------------------------------------
def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(5)
    return torch.randn(4, 3, 6, 6, generator=g), torch.randint(0, 3, (4, 6, 6), generator=g)


def test_compound_sum_is_the_sum_of_its_components_with_batch_dice() -> None:
    x, y = _batch()
    ce = get_loss("ce", reduction="sum")(x, y)
    dice = get_loss("dice", batch_dice=True, reduction="sum")(x, y)
    got = get_loss("ce+dice", batch_dice=True, reduction="sum")(x, y)
    torch.testing.assert_close(got, ce + dice)  # was ce + 4 * dice (B = 4)
    # "mean" was already the sum of the components' means
    ce_m = get_loss("ce")(x, y)
    got_m = get_loss("ce+dice", batch_dice=True)(x, y)
    torch.testing.assert_close(got_m, ce_m + dice)


def test_compound_sum_matches_monai_dice_ce_with_batch() -> None:
    monai_losses = pytest.importorskip("monai.losses")
    x, y = _batch()
    ref = monai_losses.DiceCELoss(
        softmax=True, to_onehot_y=True, batch=True, reduction="sum", squared_pred=True
    )(x, y.unsqueeze(1))
    # MONAI's "sum" sums the CE over the pixels and the batch Dice over the classes (ours
    # averages both): compare the Dice parts, counted once per batch in both (was B times here)
    compound = get_loss("ce+dice", batch_dice=True, reduction="sum", skip_absent=False, eps=1e-5)
    ours = compound(x, y) - get_loss("ce", reduction="sum")(x, y)
    monai_dice = ref - F.cross_entropy(x, y, reduction="sum")
    torch.testing.assert_close(ours * x.shape[1], monai_dice, rtol=1e-4, atol=1e-5)


# each mixed loss's per-image term, from an independent loss: the mixture with the region term
# weighted 0, or the focal loss it is built on, times the mixture's weight
PER_IMAGE_TERM = {
    "combo": (0.5, "combo", {"alpha": 1.0}),
    "mixed_focal": (0.5, "focal", {"gamma": 2.0}),
    "unified_focal": (0.5, "unified_focal", {"weight": 1.0}),
    "asymmetric_unified_focal": (0.5, "asymmetric_unified_focal", {"weight": 1.0}),
    "focal_log_wsdice": (7.0, "focal", {"gamma": 3.5, "alpha": 0.3}),
}


@pytest.mark.parametrize("name", sorted(PER_IMAGE_TERM))
def test_mixed_losses_sum_counts_the_batch_term_once(name: str) -> None:
    x, y = _batch()
    weight, term_name, term_params = PER_IMAGE_TERM[name]
    per_image = weight * get_loss(term_name, reduction="none", **term_params)(x, y)  # (B,)
    mean = get_loss(name, batch_dice=True)(x, y)
    batch_term = mean - per_image.mean()  # "mean" = mean of the per-image term + batch term
    assert abs(float(batch_term)) > 1e-3  # the check below needs a batch term
    total = get_loss(name, batch_dice=True, reduction="sum")(x, y)
    torch.testing.assert_close(total, per_image.sum() + batch_term)  # was + B * batch_term
    none = get_loss(name, batch_dice=True, reduction="none")(x, y)
    torch.testing.assert_close(none, per_image + batch_term)  # "none": broadcast, unchanged


# ----- WSDice at non-default settings against eq. 4 written out (float64) -------------------------
def _wsdice_eq4(x, y, v1, v2, include_background, batch, ignore, eps=1e-6):
    """WSDice coefficient per image (or batch) of eq. 4: one-vs-rest per class for softmax
    logits, the foreground alone for one sigmoid channel; ignored pixels weigh 0."""
    valid = (y != ignore).double()
    y = torch.where(y == ignore, 0, y)
    if x.shape[1] == 1:
        p, t = torch.sigmoid(x.double()), y[:, None].double()
    else:
        p, t = torch.softmax(x.double(), 1), F.one_hot(y, x.shape[1]).movedim(-1, 1).double()
    w = (t * (v2 - v1) + v1) * valid[:, None]
    g, g_hat = w * (2 * t - 1), w * (2 * p - 1)
    dims = (0, 2, 3) if batch else (2, 3)
    coef = (2 * (g_hat * g).sum(dims) + eps) / ((g_hat**2).sum(dims) + (g**2).sum(dims) + eps)
    if x.shape[1] > 1 and not include_background:
        coef = coef[..., 1:]
    return coef.mean(-1).reshape(-1)  # (B,), or (1,) for the batch


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize(("v1", "v2"), [(0.3, 0.6), (0.0, 1.0), (0.5, 0.5)])
@pytest.mark.parametrize(
    "settings",
    [{}, {"include_background": False}, {"batch_dice": True}, {"ignore_index": 255}],
)
def test_wsdice_and_focal_log_wsdice_match_eq4(channels, v1, v2, settings) -> None:
    g = torch.Generator().manual_seed(8)
    x = torch.randn(3, channels, 5, 6, generator=g) * 2
    y = torch.randint(0, max(channels, 2), (3, 5, 6), generator=g)
    y[1] = 0
    if "ignore_index" in settings:
        y[0, :2, :2] = 255
    coef = _wsdice_eq4(
        x,
        y,
        v1,
        v2,
        settings.get("include_background", True),
        settings.get("batch_dice", False),
        255,
    ).float()
    got = get_loss("wsdice", v1=v1, v2=v2, reduction="none", **settings)(x, y)
    torch.testing.assert_close(got, 1.0 - coef, rtol=1e-5, atol=1e-5)
    # beta * FL - log(max(WSDice, eps)), FL Lin's focal (alpha 0.3, gamma 3.5)
    ignore = settings.get("ignore_index")
    focal = get_loss("focal", gamma=3.5, alpha=0.3, reduction="none", ignore_index=ignore)(x, y)
    expected = 7.0 * focal - torch.log(coef.clamp_min(1e-6))
    got = get_loss("focal_log_wsdice", v1=v1, v2=v2, reduction="none", **settings)(x, y)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-4)


# ----- a fully ignored image has no loss: "mean" leaves it out -----------------------------------
@pytest.mark.parametrize("name", sorted({*list_losses(), "ce+dice", "ce+pm_dice"}))
@pytest.mark.parametrize("mode", ["multiclass", "binary"])
def test_a_fully_ignored_image_leaves_the_batch_mean(name: str, mode: str) -> None:
    """It gave 0 and counted: the loss and the gradients of the other images were scaled by
    the share of images with valid pixels (ce 0.99 where cross_entropy gives 1.98)."""
    gen = torch.Generator().manual_seed(0)
    channels, classes = (3, 3) if mode == "multiclass" else (1, 2)
    x = torch.randn(2, channels, 8, 8, generator=gen) * 2.0
    y = torch.randint(0, classes, (2, 8, 8), generator=gen)
    ignored = y.clone()
    ignored[1] = 255
    xg = x.clone().requires_grad_(True)
    got = get_loss(name, ignore_index=255)(xg, ignored)
    got.backward()
    first = x[:1].clone().requires_grad_(True)
    alone = get_loss(name)(first, y[:1])
    alone.backward()
    assert float(got.detach()) == pytest.approx(float(alone.detach()), rel=1e-5, abs=1e-7)
    assert torch.allclose(xg.grad[:1], first.grad, rtol=1e-4, atol=1e-7)
    assert float(xg.grad[1].abs().max()) == 0.0
    # "none" keeps the per-image vector: 0 for the ignored image; "sum" adds it
    none = get_loss(name, ignore_index=255, reduction="none")(x, ignored)
    assert float(none[-1]) == 0.0


def test_a_batch_with_every_pixel_ignored_gives_zero_and_a_gradient() -> None:
    x = torch.randn(2, 3, 4, 4, requires_grad=True)
    loss = get_loss("ce+pm_dice", ignore_index=255)(x, torch.full((2, 4, 4), 255))
    loss.backward()
    assert float(loss.detach()) == 0.0 and float(x.grad.abs().max()) == 0.0


# ----- double backward: refused where the gradient is written by hand, exact elsewhere ---------
def _penalty_grad(loss: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    (g,) = torch.autograd.grad(loss, x, create_graph=True)
    (gg,) = torch.autograd.grad(g.pow(2).sum(), x)
    return gg


@pytest.mark.parametrize("name", ["ce", "focal", "topk_ce", "pm_dice", "combo"])
def test_double_backward_on_integer_labels_is_refused(name: str) -> None:
    """ce's hand-written backward gave a gradient that did not depend on the logits under
    create_graph=True: a gradient penalty built on it ran and added nothing."""
    x = torch.randn(2, 3, 6, 6, requires_grad=True)
    y = torch.randint(0, 3, (2, 6, 6))
    with pytest.raises(RuntimeError, match=r"first-order only.*one-hot target"):
        torch.autograd.grad(get_loss(name)(x, y), x, create_graph=True)
    # a plain backward is unaffected
    get_loss(name)(x, y).backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


def test_double_backward_through_one_hot_and_binary_targets_matches_torch() -> None:
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, 6, 6, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 3, (2, 6, 6), generator=gen)
    onehot = F.one_hot(y, 3).movedim(-1, 1).float()
    ours, ref = x.float().requires_grad_(True), x.clone().requires_grad_(True)
    got = _penalty_grad(get_loss("ce")(ours, onehot), ours)
    want = _penalty_grad(F.cross_entropy(ref, y), ref)
    assert torch.allclose(got.double(), want, rtol=1e-3, atol=1e-6)
    xb = torch.randn(2, 1, 6, 6, generator=gen, dtype=torch.float64)
    yb = torch.randint(0, 2, (2, 1, 6, 6), generator=gen).double()
    ours, ref = xb.float().requires_grad_(True), xb.clone().requires_grad_(True)
    got = _penalty_grad(get_loss("ce")(ours, yb.float()), ours)
    want = _penalty_grad(F.binary_cross_entropy_with_logits(ref, yb), ref)
    assert float(want.abs().max()) > 0
    assert torch.allclose(got.double(), want, rtol=1e-3, atol=1e-6)


def test_compound_parts_with_their_own_ignore_index_each_average_their_images() -> None:
    """ce ignoring label 2 next to a dice that ignores nothing: image 1 (all 2) counted in
    ce's mean as a 0 because dice scores it (1.36 instead of 2.18)."""
    from napari_segloss.losses import CompoundLoss

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 4, 4, generator=gen)
    y = torch.randint(0, 3, (2, 4, 4), generator=gen)
    y[1] = 2
    ce, dice = get_loss("ce", ignore_index=2), get_loss("dice")
    both = CompoundLoss([ce, dice])(x, y)
    assert float(both) == pytest.approx(float(ce(x, y)) + float(dice(x, y)), rel=1e-6)
    assert float(ce(x, y)) == pytest.approx(float(ce(x[:1], y[:1])), rel=1e-6)


def test_double_backward_of_a_saturated_binary_pixel_matches_float64() -> None:
    """Under create_graph the log-sigmoid's gradient sigmoid(-x) was differentiated by
    autograd as q (1 - q): 0 at logit -20 where the exact second derivative is -p q."""
    x = torch.tensor([-20.0, -17.0, 3.0, 12.0]).view(1, 1, 1, 4)
    y = torch.tensor([1, 1, 0, 1]).view(1, 1, 4)
    ours, ref = x.clone().requires_grad_(True), x.double().requires_grad_(True)
    got = _penalty_grad(get_loss("ce")(ours, y), ours)
    want = _penalty_grad(F.binary_cross_entropy_with_logits(ref, y[:, None].double()), ref)
    torch.testing.assert_close(got.double(), want, rtol=1e-4, atol=0)

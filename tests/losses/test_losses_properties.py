"""Hypothesis properties and gradient checks of the loss library."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from napari_segloss.losses import get_loss, list_losses

# Dice-family losses whose value lies in [0, 1]
UNIT_RANGE = [
    "dice",
    "pm_dice",
    "generalized_dice",
    "focal_dice",
    "focal_dice_zhao",
    "topk_dice",
    "tversky",
    "focal_tversky",
    "cosine_tversky",
]
ALL = [n for n in list_losses() if "+" not in n] + ["ce+pm_dice", "topk_ce+topk_dice"]

small = settings(max_examples=12, deadline=None)


@st.composite
def problems(draw, channels=None):
    b = draw(st.integers(1, 3))
    c = channels if channels is not None else draw(st.sampled_from([1, 2, 3]))
    h = draw(st.integers(1, 5))
    w = draw(st.integers(1, 5))
    seed = draw(st.integers(0, 2**16))
    scale = draw(st.sampled_from([0.1, 1.0, 5.0]))
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, c, h, w, generator=g) * scale
    y = torch.randint(0, max(c, 2), (b, h, w), generator=g)
    return x, y


@small
@given(problems(), st.sampled_from(UNIT_RANGE), st.booleans(), st.booleans())
def test_dice_family_in_unit_interval(prob, name: str, skip_absent: bool, batch_dice: bool) -> None:
    x, y = prob
    kw = {"batch_dice": batch_dice, "reduction": "none"}
    if name != "generalized_dice":  # its class weights handle absent classes
        kw["skip_absent"] = skip_absent
    v = get_loss(name, **kw)(x, y)
    assert bool(((v >= -1e-6) & (v <= 1 + 1e-6)).all()), (name, v)


@small
@given(problems())
def test_wsdice_in_0_2(prob) -> None:
    x, y = prob
    v = get_loss("wsdice", reduction="none")(x, y)
    assert bool(((v >= -1e-6) & (v <= 2 + 1e-6)).all())


def perfect_logits(y: torch.Tensor, c: int) -> torch.Tensor:
    if c == 1:
        return (y.unsqueeze(1).float() * 2 - 1) * 30.0
    return (torch.nn.functional.one_hot(y, c).permute(0, 3, 1, 2).float() * 2 - 1) * 30.0


@small
@given(problems(), st.sampled_from([*UNIT_RANGE, "log_dice", "wsdice", "ce", "focal", "topk_ce"]))
def test_perfect_prediction_is_zero(prob, name: str) -> None:
    x, y = prob
    v = get_loss(name)(perfect_logits(y, x.shape[1]), y)
    assert float(v) == pytest.approx(0.0, abs=1e-4), (name, float(v))


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("case", ["extreme", "empty", "full"])
@pytest.mark.parametrize("c", [1, 3])
def test_finite_gradients(name: str, case: str, c: int) -> None:
    g = torch.Generator().manual_seed(3)
    if case == "extreme":
        x = (torch.randint(0, 2, (2, c, 4, 4), generator=g).float() * 2 - 1) * 1e4
        y = torch.randint(0, max(c, 2), (2, 4, 4), generator=g)
    else:
        x = torch.randn(2, c, 4, 4, generator=g) * 3
        y = torch.full((2, 4, 4), 0 if case == "empty" else max(c, 2) - 1)
    x.requires_grad_(True)
    loss = get_loss(name)
    v = loss(x, y)
    v.backward()
    assert torch.isfinite(v), (name, case, v)
    assert bool(torch.isfinite(x.grad).all()), (name, case)


@settings(max_examples=10, deadline=None)
@given(problems(), st.sampled_from(ALL), st.randoms(use_true_random=False))
def test_batch_order_invariance(prob, name: str, rnd) -> None:
    x, y = prob
    perm = list(range(x.shape[0]))
    rnd.shuffle(perm)
    loss = get_loss(name, reduction="none")
    a = loss(x, y)[perm]
    b = loss(x[perm], y[perm])
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@settings(max_examples=10, deadline=None)
@given(problems(), st.sampled_from(ALL))
def test_2d_equals_3d_depth_one(prob, name: str) -> None:
    x, y = prob
    loss = get_loss(name, reduction="none")
    torch.testing.assert_close(
        loss(x, y), loss(x.unsqueeze(2), y.unsqueeze(1)), rtol=1e-5, atol=1e-6
    )


@settings(max_examples=12, deadline=None)
@given(problems(), st.booleans(), st.booleans())
def test_pm_dice_gamma0_equals_dice(prob, skip_absent: bool, include_background: bool) -> None:
    x, y = prob
    kw = dict(skip_absent=skip_absent, include_background=include_background, reduction="none")
    a = get_loss("pm_dice", gamma=0.0, **kw)(x, y)
    b = get_loss("dice", **kw)(x, y)
    assert float((a - b).abs().max()) <= 1e-6


@pytest.mark.parametrize("c", [1, 3])
@pytest.mark.parametrize("gamma", [1.0, 2.0, (0.5, 1.0, 2.0)])
def test_pm_dice_modulating_term_has_no_gradient(c: int, gamma) -> None:
    # autograd gradient == manual gradient of eq. 5 with m held constant
    if isinstance(gamma, tuple) and c == 1:
        gamma = gamma[:2]
    g = torch.Generator().manual_seed(5)
    x = torch.randn(2, c, 3, 4, generator=g, dtype=torch.float64).float().requires_grad_(True)
    y = torch.randint(0, max(c, 2), (2, 3, 4), generator=g)
    eps = 1e-6
    get_loss("pm_dice", gamma=gamma, skip_absent=False, eps=eps)(x, y).backward()

    xd = x.detach().double()
    if c == 1:
        s = torch.sigmoid(xd)
        p = torch.cat([1 - s, s], 1)
        yy = torch.stack([1 - y, y], 1).double()
    else:
        p = torch.softmax(xd, 1)
        yy = torch.nn.functional.one_hot(y, c).permute(0, 3, 1, 2).double()
    k = p.shape[1]
    gam = torch.tensor(gamma if isinstance(gamma, tuple) else (gamma,) * k, dtype=torch.float64)
    m = (yy - p).abs() ** gam.view(1, k, 1, 1)
    inter = (m * yy * p).sum((2, 3))
    den = (m * (yy**2 + p**2)).sum((2, 3))
    # L = mean_b (1 - mean_c (2I+eps)/(D+eps)); dL/dp = -(1/(B K)) m (2y (D+eps) - 2p (2I+eps)) / (D+eps)^2
    b = x.shape[0]
    d_inter = (-1.0 / (b * k)) * 2 / (den + eps)
    d_den = (1.0 / (b * k)) * (2 * inter + eps) / (den + eps) ** 2
    dp = m * (d_inter[..., None, None] * yy + d_den[..., None, None] * 2 * p)
    if c == 1:
        s = p[:, 1:]
        manual = (dp[:, 1:] - dp[:, :1]) * s * (1 - s)
    else:
        manual = p * (dp - (p * dp).sum(1, keepdim=True))
    torch.testing.assert_close(x.grad.double(), manual, rtol=1e-4, atol=1e-7)

    # and differs from the gradient with m NOT detached (the condition matters)
    xg = x.detach().clone().requires_grad_(True)
    pg = torch.softmax(xg, 1) if c > 1 else torch.cat([1 - torch.sigmoid(xg), torch.sigmoid(xg)], 1)
    mg = (yy.float() - pg).abs() ** gam.float().view(1, k, 1, 1)
    ig = (mg * yy.float() * pg).sum((2, 3))
    dg = (mg * (yy.float() ** 2 + pg**2)).sum((2, 3))
    (1 - ((2 * ig + eps) / (dg + eps)).mean(1)).mean().backward()
    assert not torch.allclose(xg.grad, x.grad, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("name", ["pm_dice", "dice", "generalized_dice", "ce+pm_dice"])
def test_low_precision_inputs_accumulate_in_float32(dtype, name: str) -> None:
    # 102400 pixels in one image: an fp16 per-class sum of y^2 + p^2 would pass 65504 and
    # overflow; losses must stay finite and match the float32 result
    g = torch.Generator().manual_seed(0)
    x32 = torch.randn(1, 2, 320, 320, generator=g) * 4
    y = torch.randint(0, 2, (1, 320, 320), generator=g)
    x = x32.to(dtype).requires_grad_(True)
    v = get_loss(name)(x, y)
    assert v.dtype == torch.float32
    v.backward()
    assert bool(torch.isfinite(x.grad.float()).all())
    ref = get_loss(name)(x.detach().float(), y)
    assert float(v.detach()) == pytest.approx(float(ref), rel=1e-4, abs=1e-5)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_autocast_keeps_float32_sums(dtype) -> None:
    # under CPU autocast matmul-like ops (e.g. vecdot) run in low precision; the loss value
    # must equal the float32 value computed outside autocast
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 3, 64, 64, generator=g) * 4
    y = torch.randint(0, 3, (1, 64, 64), generator=g)
    for name, kw in [
        ("pm_dice", {"gamma": 2.0}),
        ("pm_dice", {}),
        ("dice", {}),
        ("ce+pm_dice", {}),
    ]:
        ref = get_loss(name, **kw)(x, y)
        with torch.autocast("cpu", dtype=dtype):
            v = get_loss(name, **kw)(x, y)
        assert v.dtype == torch.float32
        assert float(v) == pytest.approx(float(ref), rel=1e-6, abs=1e-7), name

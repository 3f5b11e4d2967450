"""float32 losses against an arbitrary-precision evaluation of the papers' equations, for
confident predictions (logit margins up to 40) where ``1 - p`` by subtraction is 0 in float32
(and in float64 beyond a margin of ~37).

The reference evaluates each equation literally (``|y - p|``, ``1 - p``, ``1 - TI``) with
mpmath at 50 digits, so it is independent of the tricks the library uses to avoid the
cancellation.
"""

from __future__ import annotations

import itertools

import pytest
import torch
from mpmath import mp, mpf

from napari_segloss.losses import get_loss

mp.dps = 50
EPS = mpf("1e-6")

# per pixel: (label, signed margin of the labelled class); negative margins are wrong predictions
MARGINS_CONFIDENT = [40.0, 35.0, 30.0, 25.0, 20.0, 15.0, 12.0, 10.0]
MARGINS_MIXED = [40.0, 30.0, 20.0, 10.0, 3.0, 0.5, -1.0, -5.0, -20.0, -40.0]


def make_inputs(num_classes: int, margins: list[float]) -> tuple[torch.Tensor, torch.Tensor]:
    """Two images, every class present in each, pixels cycling through ``margins``.

    Binary (``num_classes == 1``): logit ``+m`` for label 1 and ``-m`` for label 0.
    Multi-class: the labelled class gets logit ``m``, the others fixed small offsets, so the
    other classes share ``1 - p_y`` unevenly.
    """
    k = max(num_classes, 2)
    n = 16
    labels = torch.tensor([[(i + b) % k for i in range(n)] for b in range(2)])
    cycle = itertools.cycle(margins)
    m = torch.tensor([[next(cycle) for _ in range(n)] for _ in range(2)], dtype=torch.float64)
    if num_classes == 1:
        x = torch.where(labels == 1, m, -m).view(2, 1, 4, 4)
    else:
        offsets = torch.tensor([0.0, 0.7, -0.4, 1.1], dtype=torch.float64)[:k]
        x = offsets.view(1, k, 1).expand(2, k, n).clone()
        x.scatter_(1, labels.view(2, 1, n), m.view(2, 1, n))
        x = x.view(2, k, 4, 4)
    return x.float(), labels.view(2, 4, 4)


def reference_probs(x: torch.Tensor) -> list[list[list[mpf]]]:
    """Per image, per pixel, the class probabilities (binary expanded to [1 - p, p])."""
    xs = x.double().flatten(2).tolist()
    out = []
    for img in xs:
        k, n = len(img), len(img[0])
        pixels = []
        for i in range(n):
            if k == 1:
                p = 1 / (1 + mp.exp(-mpf(img[0][i])))
                pixels.append([1 - p, p])
            else:
                e = [mp.exp(mpf(img[c][i])) for c in range(k)]
                z = sum(e)
                pixels.append([v / z for v in e])
        out.append(pixels)
    return out


def onehot(labels: torch.Tensor, k: int) -> list[list[list[int]]]:
    return [[[int(t == c) for c in range(k)] for t in img] for img in labels.flatten(1).tolist()]


def ref_pm_dice(probs, ys, gamma: float, squared: bool = True) -> mpf:
    total = mpf(0)
    for p_img, y_img in zip(probs, ys, strict=True):
        k = len(p_img[0])
        per_class = []
        for c in range(k):
            num = den = mpf(0)
            for p_px, y_px in zip(p_img, y_img, strict=True):
                p, y = p_px[c], y_px[c]
                m = abs(y - p) ** gamma
                num += m * y * p
                den += m * (y * y + p * p if squared else y + p)
            per_class.append((2 * num + EPS) / (den + EPS))
        total += 1 - sum(per_class) / k
    return total / len(probs)


def ref_focal(probs, ys, gamma: float) -> mpf:
    total = mpf(0)
    for p_img, y_img in zip(probs, ys, strict=True):
        s = mpf(0)
        for p_px, y_px in zip(p_img, y_img, strict=True):
            for p, y in zip(p_px, y_px, strict=True):
                if y:
                    s += -((1 - p) ** gamma) * mp.log(p)
        total += s / len(p_img)
    return total / len(probs)


def ref_tversky_complement(p_img, y_img, c: int, alpha, beta) -> mpf:
    tp = sum(p[c] * y[c] for p, y in zip(p_img, y_img, strict=True))
    fp = sum(p[c] * (1 - y[c]) for p, y in zip(p_img, y_img, strict=True))
    fn = sum((1 - p[c]) * y[c] for p, y in zip(p_img, y_img, strict=True))
    return 1 - (tp + EPS) / (tp + alpha * fp + beta * fn + EPS)


def ref_focal_tversky(probs, ys, gamma: float) -> mpf:
    total = mpf(0)
    for p_img, y_img in zip(probs, ys, strict=True):
        k = len(p_img[0])
        terms = [ref_tversky_complement(p_img, y_img, c, mpf("0.3"), mpf("0.7")) for c in range(k)]
        total += sum(t**gamma for t in terms) / k
    return total / len(probs)


def ref_unified_focal(probs, ys, gamma: float, asymmetric: bool) -> mpf:
    weight, delta = mpf("0.5"), mpf("0.6")
    total = mpf(0)
    for p_img, y_img in zip(probs, ys, strict=True):
        k = len(p_img[0])
        ft = mpf(0)
        for c in range(k):
            r = ref_tversky_complement(p_img, y_img, c, 1 - delta, delta)
            ft += r if (asymmetric and c == 0) else r ** (1 - gamma)
        fl = mpf(0)
        for p_px, y_px in zip(p_img, y_img, strict=True):
            for c, (p, y) in enumerate(zip(p_px, y_px, strict=True)):
                if y:
                    w = 1 - delta if c == 0 else delta
                    g = gamma if (c == 0 or not asymmetric) else 0
                    fl += -w * (1 - p) ** g * mp.log(p)
        total += weight * ft / k + (1 - weight) * fl / len(p_img)
    return total / len(probs)


def assert_matches(value: torch.Tensor, expected: mpf, rtol: float = 2e-5) -> None:
    got = float(value.detach())
    ref = float(expected)
    assert got == pytest.approx(ref, rel=rtol, abs=1e-9), f"got {got!r}, reference {ref!r}"


def assert_value_and_finite_gradient(
    loss_fn: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, expected: mpf
) -> None:
    """The loss matches the float64 reference and its gradient is finite everywhere."""
    x = x.requires_grad_(True)
    loss = loss_fn(x, y)
    assert_matches(loss, expected)
    loss.backward()
    assert bool(torch.isfinite(x.grad).all())


GAMMAS = [0.25, 0.5, 1.0, 2.0, 5.0]
CASES = [
    pytest.param(c, margins, id=f"{'binary' if c == 1 else f'{c}class'}-{name}")
    for c in (1, 4)
    for name, margins in (("confident", MARGINS_CONFIDENT), ("mixed", MARGINS_MIXED))
]


def test_issue_example_binary_pm_dice() -> None:
    # all four pixels confident: 1 - p rounds to 0 in float32, the modulating term must not
    x = torch.tensor([20.0, 20.0, -20.0, -20.0]).view(1, 1, 2, 2)
    y = torch.tensor([1, 1, 0, 1]).view(1, 2, 2)
    probs = reference_probs(x)
    expected = ref_pm_dice(probs, onehot(torch.tensor([[1, 1, 0, 1]]), 2), 0.5)
    assert float(expected) == pytest.approx(0.999862819, abs=1e-9)
    assert float(get_loss("pm_dice", gamma=0.5)(x, y)) == pytest.approx(0.999862819, abs=1e-6)


@pytest.mark.parametrize(("c", "margins"), CASES)
@pytest.mark.parametrize("gamma", GAMMAS)
@pytest.mark.parametrize("squared", [True, False])
def test_pm_dice_matches_eq5(c: int, margins: list[float], gamma: float, squared: bool) -> None:
    x, y = make_inputs(c, margins)
    ref = ref_pm_dice(reference_probs(x), onehot(y, max(c, 2)), gamma, squared)
    assert_value_and_finite_gradient(get_loss("pm_dice", gamma=gamma, squared=squared), x, y, ref)


@pytest.mark.parametrize(("c", "margins"), CASES)
def test_dice_matches_eq4(c: int, margins: list[float]) -> None:
    x, y = make_inputs(c, margins)
    ref = ref_pm_dice(reference_probs(x), onehot(y, max(c, 2)), 0.0)
    assert_matches(get_loss("dice")(x, y), ref)


@pytest.mark.parametrize(("c", "margins"), CASES)
@pytest.mark.parametrize("gamma", [0.0, *GAMMAS])
def test_focal_matches_eq3(c: int, margins: list[float], gamma: float) -> None:
    x, y = make_inputs(c, margins)
    ref = ref_focal(reference_probs(x), onehot(y, max(c, 2)), gamma)
    assert_value_and_finite_gradient(get_loss("focal", gamma=gamma), x, y, ref)


@pytest.mark.parametrize(("c", "margins"), CASES)
@pytest.mark.parametrize("gamma", GAMMAS)
def test_focal_tversky_matches_eq14(c: int, margins: list[float], gamma: float) -> None:
    x, y = make_inputs(c, margins)
    ref = ref_focal_tversky(reference_probs(x), onehot(y, max(c, 2)), gamma)
    assert_value_and_finite_gradient(get_loss("focal_tversky", gamma=gamma), x, y, ref)


@pytest.mark.parametrize(("c", "margins"), CASES)
@pytest.mark.parametrize("gamma", [0.25, 0.5, 1.0])
@pytest.mark.parametrize("name", ["unified_focal", "asymmetric_unified_focal"])
def test_unified_focal_matches_equations(
    c: int, margins: list[float], gamma: float, name: str
) -> None:
    x, y = make_inputs(c, margins)
    asymmetric = name.startswith("asymmetric")
    ref = ref_unified_focal(reference_probs(x), onehot(y, max(c, 2)), gamma, asymmetric)
    assert_value_and_finite_gradient(get_loss(name, gamma=gamma), x, y, ref)


@pytest.mark.parametrize(("c", "margins"), CASES)
@pytest.mark.parametrize("gamma", [0.5, 2.0])
def test_one_hot_targets_match_the_label_path(c: int, margins: list[float], gamma: float) -> None:
    # the dense (one-hot) path has its own complement code: same precision required
    x, y = make_inputs(c, margins)
    k = max(c, 2)
    target = y.unsqueeze(1).float() if c == 1 else torch.nn.functional.one_hot(y, k)
    if c > 1:
        target = target.permute(0, 3, 1, 2).float()
    probs, ys = reference_probs(x), onehot(y, k)
    assert_matches(get_loss("pm_dice", gamma=gamma)(x, target), ref_pm_dice(probs, ys, gamma))
    assert_matches(get_loss("focal", gamma=gamma)(x, target), ref_focal(probs, ys, gamma))
    assert_matches(
        get_loss("focal_tversky", gamma=gamma)(x, target), ref_focal_tversky(probs, ys, gamma)
    )


# ----- the vectorised building blocks ---------------------------------------------------------
def test_log1p_matches_float64_to_float32_precision() -> None:
    # the CE / focal label paths take log p_t = log1p(-(1 - p_t)) from inputs.log1p (torch's
    # CPU log1p is scalar code): every float32 z in these decades, including z where 1 + z
    # rounds to 1, must match float64 to a few float32 ulps of the result
    from napari_segloss.losses.inputs import log1p

    mags = torch.logspace(-30, -0.0001, 20001, dtype=torch.float64)
    z = torch.cat([-mags * 0.999, mags, torch.zeros(1, dtype=torch.float64)]).float()
    z = z[z > -1]
    got = log1p(z).double()
    ref = torch.log1p(z.double())
    rel = ((got - ref).abs() / ref.abs().clamp_min(1e-300))[ref != 0]
    assert float(rel.max()) < 3e-7
    assert float(got[z == 0].abs().max()) == 0.0
    # its gradient is 1 / (1 + z)
    zg = z[(z > -0.99) & (z < 10)].clone().requires_grad_(True)
    log1p(zg).sum().backward()
    torch.testing.assert_close(
        zg.grad.double(), 1.0 / (1.0 + zg.detach().double()), rtol=1e-6, atol=0
    )


def test_at_least_is_an_exact_step() -> None:
    from napari_segloss.losses.inputs import at_least

    tiny = torch.finfo(torch.float32).tiny
    for t in (1e-7, 0.5, tiny, 0.0):
        t32 = torch.tensor(t, dtype=torch.float32)
        below = torch.nextafter(t32, torch.tensor(-1.0))
        above = torch.nextafter(t32, torch.tensor(1.0))
        x = torch.stack(
            [
                t32,
                below,
                above,
                t32 / 2,
                t32 * 2,
                torch.tensor(-3e38),
                torch.tensor(3e38),
                torch.tensor(1e-45),
                torch.tensor(-1e-45),
                torch.tensor(float("inf")),
                torch.tensor(-float("inf")),
            ]
        )
        torch.testing.assert_close(at_least(x, t), (x >= t32).float(), rtol=0, atol=0)


def test_log_sigmoid_matches_float64_to_float32_precision() -> None:
    # binary CE / focal / Combo take log sigmoid(x) from inputs.log_sigmoid (torch's CPU
    # log_sigmoid is scalar code): relative accuracy across the float32 range, including
    # log sigmoid(x) ~ -exp(-x) far below float32's resolution of 1 for large x
    from napari_segloss.losses.inputs import log_sigmoid

    x = torch.cat([torch.linspace(-100, 100, 40001), torch.tensor([0.0, 1e-30, -1e-30, 80.0])])
    got = log_sigmoid(x).double()
    ref = torch.nn.functional.logsigmoid(x.double())
    normal = ref.abs() >= torch.finfo(torch.float32).tiny  # below: subnormal float32 results
    assert float(((got - ref).abs() / ref.abs())[normal].max()) < 3e-7
    assert float((got - ref)[~normal].abs().max()) < 1e-44
    xg = x.clone().requires_grad_(True)
    log_sigmoid(xg).sum().backward()
    torch.testing.assert_close(xg.grad, torch.sigmoid(-x), rtol=0, atol=0)


# ----- gradients of saturated predictions -----------------------------------------------------
SATURATING = [
    "dice",
    "pm_dice",
    "generalized_dice",
    "log_dice",
    "focal_dice",
    "topk_dice",
    "focal_dice_zhao",
    "combo",
    "ce+pm_dice",
]


@pytest.mark.parametrize("name", SATURATING)
@pytest.mark.parametrize("margin", [15.0, 20.0])
def test_integer_labels_keep_the_gradient_of_a_saturated_image(name: str, margin: float) -> None:
    """Every pixel right with p_y rounding to 1 in float32: the label path's softmax backward
    ``p g - p sum p g`` cancelled to 0 at the labelled logit (81 % of log_dice's gradient lost),
    and combo's ``log(1 - p_c)`` read ``log(q_c) = 0``. Reference: float64 one-hot, where
    ``1 - p_y`` ~ 1e-9 keeps 7 digits."""
    labels = torch.tensor([[[0, 1, 2, 0, 1, 2], [2, 2, 1, 0, 0, 1]]])
    onehot_t = torch.nn.functional.one_hot(labels, 3).movedim(-1, 1)
    # margins differ by pixel: TopK selections have no ties to break differently
    margins = margin + 0.25 * torch.arange(12.0).view(1, 1, 2, 6)
    x = margins * onehot_t.float() + torch.tensor([0.3, -0.2, 0.1]).view(1, 3, 1, 1)
    x32 = x.clone().requires_grad_(True)
    loss32 = get_loss(name)(x32, labels)
    loss32.backward()
    x64 = x.double().requires_grad_(True)
    loss64 = get_loss(name)(x64, onehot_t.double())
    loss64.backward()
    assert loss32.item() == pytest.approx(loss64.item(), rel=1e-5, abs=1e-12)
    scale = float(x64.grad.abs().max())
    assert scale > 0
    torch.testing.assert_close(x32.grad.double(), x64.grad, rtol=1e-3, atol=1e-4 * scale)
    # softmax gradients sum to 0 over the classes at each pixel (up to float32 rounding)
    assert float(x32.grad.sum(1).abs().max()) <= 1e-4 * scale


def _pm_dice_float64(probs: torch.Tensor, onehot: torch.Tensor, gamma: float) -> torch.Tensor:
    """Eq. 5 in float64, every class present: mean over classes of sum m (y - p)^2 /
    (sum m (y^2 + p^2) + eps), ``m = |y - p|^gamma`` detached."""
    m = (onehot - probs).abs().detach() ** gamma
    err = (m * (onehot - probs) ** 2).flatten(2).sum(-1)
    den = (m * (onehot**2 + probs**2)).flatten(2).sum(-1)
    return (err / (den + 1e-6)).mean()


@pytest.mark.parametrize(("name", "gamma"), [("dice", 0.0), ("pm_dice", 2.0), ("pm_dice", 0.5)])
def test_a_confidently_wrong_pixel_keeps_the_largest_gradient(name: str, gamma: float) -> None:
    """Logits of +-20 with one false positive. Binary: autograd's sigmoid backward
    ``p (1 - p)`` was 0 once p rounded to 1, and the wrong pixel's gradient was 1e9 times too
    small, the smallest of the image. Two softmax classes: the off-label channel of the
    wrong pixel got 0 (``p g - p sum p g`` cancelled) instead of minus the label's."""
    params = {"gamma": gamma} if name == "pm_dice" else {}
    y = torch.tensor([1, 1, 0, 0]).view(1, 1, 4)
    x = torch.tensor([20.0, 20.0, -20.0, 20.0]).view(1, 1, 1, 4)  # pixel 3: false positive
    binary = x.clone().requires_grad_(True)
    get_loss(name, **params)(binary, y).backward()
    x64 = x.double().requires_grad_(True)
    p64 = torch.cat([torch.sigmoid(-x64), torch.sigmoid(x64)], 1)
    onehot = torch.nn.functional.one_hot(y, 2).movedim(-1, 1).double()
    _pm_dice_float64(p64, onehot, gamma).backward()
    torch.testing.assert_close(binary.grad.double(), x64.grad, rtol=1e-4, atol=0)
    assert int(binary.grad.abs().argmax()) == 3
    # the same pixels as two softmax logits [0, x], labels and one-hot alike
    two = torch.cat([torch.zeros_like(x), x], 1)
    for target in (y, onehot.float()):
        z = two.clone().requires_grad_(True)
        get_loss(name, **params)(z, target).backward()
        torch.testing.assert_close(z.grad[:, 1].double(), x64.grad[:, 0], rtol=1e-4, atol=0)
        torch.testing.assert_close(z.grad[:, 0], -z.grad[:, 1], rtol=0, atol=0)

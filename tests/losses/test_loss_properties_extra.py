"""Invariants of every registered loss, on hypothesis-generated inputs.

What ``test_losses_properties.py`` does not cover: the equivalences between input forms
(integer labels vs one-hot, one-channel binary vs two-channel softmax) for all 26 names and
their options, symmetries (classes with their per-class parameters, pixels, batch split),
``ignore_index`` as a true no-op, ``reduction`` and ``pixel_loss`` consistency, and the
float32 values of the losses the precision tests leave out against a 50-digit evaluation of
their equations. Inputs are small and include saturated logits (margins up to 60), absent
classes and one-class images, 2D and 3D.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from mpmath import mp, mpf

from napari_segloss.losses import get_loss, list_losses, loss_parameters

ALL = list_losses()
PIXEL_LOSSES = ("ce", "focal", "topk_ce")
#: class 0 is special (background weights / exponents, or the 2y - 1 one-vs-rest with a
#: foreground-only binary form): only permutations that keep class 0 in place apply
BACKGROUND_SPECIAL = ("unified_focal", "asymmetric_unified_focal", "focal_log_wsdice", "combo")
#: documented to score a one-channel output differently from [0, x] softmax logits:
#: WSDice uses the foreground channel only for binary outputs; combo floors the softmax CE's
#: log(1 - p) at log(1e-7), which the one-channel logsigmoid(-x) does not
BINARY_DIFFERS = ("combo", "wsdice", "focal_log_wsdice")
IGNORE = 255

#: per loss name (pytest parameter) a few hypothesis examples: every name is exercised
fast = settings(max_examples=3, deadline=None)


def accepts(name: str, key: str) -> bool:
    if "+" in name:
        return any(key in loss_parameters(part) for part in name.split("+"))
    return key in loss_parameters(name)


def is_batch_level(name: str) -> bool:
    """``batch_dice=True`` gives one (1,) value (pure region losses, not mixtures)."""
    return "+" not in name and accepts(name, "batch_dice") and name not in _MIXTURES


_MIXTURES = (
    "combo",
    "mixed_focal",
    "unified_focal",
    "asymmetric_unified_focal",
    "focal_log_wsdice",
)


@st.composite
def inputs(draw, channels: int | None = None, ndim: int | None = None, batch: int | None = None):
    """``(logits, labels)``: (B, C, *sp) float32 logits, some entries saturated to +-60, and
    (B, *sp) labels, sometimes one class only or with a class absent."""
    b = batch if batch is not None else draw(st.integers(1, 3))
    c = channels if channels is not None else draw(st.sampled_from([1, 3]))
    nd = ndim if ndim is not None else draw(st.sampled_from([2, 3]))
    spatial = tuple(draw(st.integers(1, 4 if nd == 2 else 3)) for _ in range(nd))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    scale = draw(st.sampled_from([0.3, 3.0, 10.0]))
    x = torch.randn(b, c, *spatial, generator=g) * scale
    if draw(st.booleans()):  # confident entries: margins 20..60 of either sign
        sat = torch.rand(x.shape, generator=g) < 0.5
        big = (torch.rand(x.shape, generator=g) * 40 + 20) * torch.sign(x + 1e-3)
        x = torch.where(sat, big, x)
    k = max(c, 2)
    y = torch.randint(0, k, (b, *spatial), generator=g)
    layout = draw(st.sampled_from(["random", "one_class", "absent"]))
    if layout == "one_class":
        y.fill_(draw(st.integers(0, k - 1)))
    elif layout == "absent":
        y[y == draw(st.integers(0, k - 1))] = 0 if k > 2 else y.max()
    return x, y


def with_ignored(y: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Labels with about a third of the pixels set to ``IGNORE`` (the first pixel always)."""
    y = y.clone()
    y[torch.rand(y.shape, generator=g) < 0.35] = IGNORE
    y.view(-1)[0] = IGNORE
    return y


def dense_target(y: torch.Tensor, c: int) -> torch.Tensor:
    """The float target equal to labels ``y`` (binary: foreground probability (B, 1, *sp);
    multi-class: one-hot), ``IGNORE`` in every channel of an ignored pixel."""
    ignored = (y == IGNORE).unsqueeze(1)
    if c == 1:
        t = y.unsqueeze(1).float()
    else:
        t = F.one_hot(torch.where(y == IGNORE, 0, y), c).movedim(-1, 1).float()
    return torch.where(ignored, torch.full_like(t, float(IGNORE)), t)


def value_and_grad(
    loss, x: torch.Tensor, target: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    x = x.clone().requires_grad_(True)
    v = loss(x, target)
    v.sum().backward()
    assert x.grad is not None
    return v.detach(), x.grad


def assert_same(a: torch.Tensor, b: torch.Tensor, what: str) -> None:
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=lambda m: f"{what}: {m}")


OPTIONS = [{}, {"ignore_index": IGNORE}, {"batch_dice": True}, {"include_background": False}]
OPTIONS += [{"skip_absent": False}, {"squared": False}]


def build(name: str, options: dict) -> torch.nn.Module | None:
    """``get_loss(name, reduction="none", **options)``, None if the loss lacks an option."""
    if not all(accepts(name, k) for k in options):
        return None
    return get_loss(name, reduction="none", **options)


# ----- input forms ------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ALL)
@fast
@given(inputs(), st.sampled_from(OPTIONS), st.randoms())
def test_labels_and_dense_target_give_same_value_and_gradient(name, case, options, rnd) -> None:
    x, y = case
    loss = build(name, options)
    if loss is None:
        return
    if "ignore_index" in options:
        y = with_ignored(y, torch.Generator().manual_seed(rnd.randint(0, 2**31)))
    c = x.shape[1]
    va, ga = value_and_grad(loss, x, y)
    vb, gb = value_and_grad(loss, x, dense_target(y, c))
    vc, gc = value_and_grad(loss, x, y.unsqueeze(1))  # (B, 1, *sp) labels
    assert_same(va, vb, f"{name} value, labels vs dense")
    assert_same(ga, gb, f"{name} gradient, labels vs dense")
    assert_same(va, vc, f"{name} value, (B, *sp) vs (B, 1, *sp) labels")
    assert_same(ga, gc, f"{name} gradient, (B, *sp) vs (B, 1, *sp) labels")
    assert bool(torch.isfinite(ga).all()), name


@pytest.mark.parametrize("name", [n for n in ALL if n not in BINARY_DIFFERS])
@fast
@given(inputs(channels=1))
def test_binary_equals_two_channel_softmax(name, case) -> None:
    # softmax([0, x]) = [sigmoid(-x), sigmoid(x)]: the expansion [1 - p, p] of a one-channel
    # output; the value and the gradient of x must be those of the second channel
    x, y = case
    loss = get_loss(name, reduction="none")
    va, ga = value_and_grad(loss, x, y)
    vb, gb = value_and_grad(loss, torch.cat([torch.zeros_like(x), x], 1), y)
    assert_same(va, vb, name)
    assert_same(ga, gb[:, 1:], name)


# ----- symmetries -------------------------------------------------------------------------------
PER_CLASS = {"pm_dice": "gamma", "ce": "weight", "topk_ce": "weight", "focal": "alpha"}
PER_CLASS |= {"mixed_focal": "alpha"}


@pytest.mark.parametrize("name", ALL)
@fast
@given(inputs(channels=4), st.booleans(), st.randoms())
def test_class_permutation(name, case, per_class, rnd) -> None:
    # renaming the classes (logit channels and labels together, per-class parameters with
    # them) changes nothing; background-special losses keep class 0 in place
    x, y = case
    c = x.shape[1]
    perm = list(range(c))
    if name in BACKGROUND_SPECIAL:
        rest = perm[1:]
        rnd.shuffle(rest)
        perm = [0, *rest]
    else:
        rnd.shuffle(perm)
    params_a: dict = {}
    params_b: dict = {}
    if per_class and name in PER_CLASS:
        values = [0.1 + 0.9 * rnd.random() for _ in range(c)]
        params_a = {PER_CLASS[name]: tuple(values)}
        params_b = {PER_CLASS[name]: tuple(values[j] for j in perm)}
    inv = torch.argsort(torch.tensor(perm))
    va, ga = value_and_grad(get_loss(name, reduction="none", **params_a), x, y)
    vb, gb = value_and_grad(get_loss(name, reduction="none", **params_b), x[:, perm], inv[y])
    assert_same(va, vb, name)
    assert_same(ga[:, perm], gb, name)


@pytest.mark.parametrize("name", ALL)
@fast
@given(inputs(), st.booleans(), st.randoms())
def test_pixel_permutation(name, case, batch_dice, rnd) -> None:
    # every loss is a function of per-pixel terms summed (or top-k selected) over an image,
    # so moving pixels around, a different shuffle per image, changes no value
    x, y = case
    options = {"batch_dice": True} if batch_dice and accepts(name, "batch_dice") else {}
    loss = get_loss(name, reduction="none", **options)
    b, c = x.shape[:2]
    n = y[0].numel()
    xs, ys = [], []
    for i in range(b):
        p = list(range(n))
        rnd.shuffle(p)
        idx = torch.tensor(p)
        xs.append(x[i].reshape(c, n)[:, idx].reshape(x[i].shape))
        ys.append(y[i].reshape(n)[idx].reshape(y[i].shape))
    assert_same(loss(x, y), loss(torch.stack(xs), torch.stack(ys)), name)


@pytest.mark.parametrize("name", ALL)
@fast
@given(inputs(batch=3))
def test_batch_split(name, case) -> None:
    # per-image losses: image b's value does not depend on the rest of the batch, and the
    # mean and sum reductions are the mean and sum of those values
    x, y = case
    loss = get_loss(name, reduction="none")
    v = loss(x, y)
    assert v.shape == (3,), (name, v.shape)
    alone = torch.cat([loss(x[i : i + 1], y[i : i + 1]) for i in range(3)])
    assert_same(v, alone, name)
    assert_same(get_loss(name)(x, y), v.mean(), f"{name} mean")
    assert_same(get_loss(name, reduction="sum")(x, y), v.sum(), f"{name} sum")


@pytest.mark.parametrize("name", [n for n in ALL if accepts(n, "batch_dice")])
@fast
@given(inputs(batch=3))
def test_batch_dice_shape_and_reductions(name, case) -> None:
    # batch_dice=True: one value for a region loss, (B,) for a mixture with per-image terms
    x, y = case
    v = get_loss(name, reduction="none", batch_dice=True)(x, y)
    assert v.shape == ((1,) if is_batch_level(name) else (3,)), (name, v.shape)
    assert_same(get_loss(name, batch_dice=True)(x, y), v.mean(), f"{name} mean")
    if is_batch_level(name) and name not in ("topk_dice", "focal_dice_zhao"):
        # the batch is one image (the top-k losses select k % per image even then) laid out along the first spatial axis
        x1 = x.movedim(0, 1).reshape(1, x.shape[1], -1, *x.shape[3:])
        y1 = y.reshape(1, -1, *y.shape[2:])
        assert_same(v, get_loss(name, reduction="none")(x1, y1), f"{name} as one image")


# ----- ignore_index -----------------------------------------------------------------------------
@pytest.mark.parametrize("name", ALL)
@fast
@given(inputs(), st.booleans(), st.randoms())
def test_ignored_pixels_are_a_no_op(name, case, batch_dice, rnd) -> None:
    x, y = case
    g = torch.Generator().manual_seed(rnd.randint(0, 2**31))
    y = with_ignored(y, g)
    options = {"ignore_index": IGNORE}
    if batch_dice and accepts(name, "batch_dice"):
        options["batch_dice"] = True
    loss = get_loss(name, reduction="none", **options)
    v, grad = value_and_grad(loss, x, y)
    ignored = (y == IGNORE).unsqueeze(1).expand_as(x)
    assert float(grad[ignored].abs().max()) == 0.0, name
    # other logits (up to +-60) and other labels at the ignored pixels: same value
    moved = torch.where(ignored, torch.randn(x.shape, generator=g) * 60, x)
    assert_same(loss(moved, y), v, f"{name} logits at ignored pixels")
    if x.shape[1] > 1:
        # a dense target: 255 in one channel ignores the pixel, whatever its other channels hold
        dense = dense_target(y, x.shape[1])
        noise = torch.rand(dense.shape, generator=g)
        keep_one = torch.zeros_like(dense, dtype=torch.bool)
        keep_one[:, rnd.randrange(x.shape[1])] = True
        dense = torch.where(ignored & ~keep_one, noise, dense)
        assert_same(loss(x, dense), v, f"{name} other channels of ignored pixels")


@pytest.mark.parametrize("name", ALL)
@fast
@given(inputs(channels=3), st.randoms())
def test_multilabel_ignored_entries_are_a_no_op(name, case, rnd) -> None:
    # multilabel: each (pixel, label) entry is ignored on its own
    x, _ = case
    g = torch.Generator().manual_seed(rnd.randint(0, 2**31))
    t = (torch.rand(x.shape, generator=g) < 0.4).float()
    hit = torch.rand(x.shape, generator=g) < 0.3
    hit.view(-1)[0] = True
    t = torch.where(hit, float(IGNORE), t)
    loss = get_loss(name, mode="multilabel", ignore_index=IGNORE, reduction="none")
    v, grad = value_and_grad(loss, x, t)
    assert float(grad[hit].abs().max()) == 0.0, name
    moved = torch.where(hit, torch.randn(x.shape, generator=g) * 60, x)
    assert_same(loss(moved, t), v, name)


# ----- extremes -----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ALL)
@fast
@given(inputs(), st.sampled_from([20.0, 40.0, 60.0]))
def test_perfect_prediction_is_the_minimum_with_finite_gradients(name, case, margin) -> None:
    x, y = case
    c = x.shape[1]
    if c == 1:
        perfect = (y.unsqueeze(1).float() * 2 - 1) * margin
    else:
        perfect = (F.one_hot(y, c).movedim(-1, 1).float() * 2 - 1) * margin
    loss = get_loss(name, reduction="none")
    best, g_best = value_and_grad(loss, perfect, y)
    other, g_other = value_and_grad(loss, x, y)
    _, g_wrong = value_and_grad(loss, -perfect, y)
    for g in (g_best, g_other, g_wrong):
        assert bool(torch.isfinite(g).all()), name
    floor = -0.5 if name == "combo" else 0.0  # combo: alpha CE - (1 - alpha) DSC
    assert float((best - floor).abs().max()) < 1e-4, (name, best)
    assert bool((other >= floor - 1e-6).all()), (name, other)


# ----- per-pixel maps ---------------------------------------------------------------------------
@pytest.mark.parametrize("name", PIXEL_LOSSES)
@fast
@given(inputs(), st.booleans(), st.randoms())
def test_pixel_loss_sums_to_the_loss(name, case, ignore, rnd) -> None:
    # eq. 1's 1/N: the per-pixel map summed over an image, divided by its valid pixels
    x, y = case
    options = {}
    if ignore:
        y = with_ignored(y, torch.Generator().manual_seed(rnd.randint(0, 2**31)))
        options["ignore_index"] = IGNORE
    loss = get_loss(name, reduction="none", **options)
    pixel = loss.pixel_loss(x, y)
    assert pixel.shape == y.shape
    assert float(pixel[y == IGNORE].abs().sum()) == 0.0
    n_valid = (y != IGNORE).flatten(1).sum(1).clamp_min(1).float()
    assert_same(pixel.flatten(1).sum(1) / n_valid, loss(x, y), name)


# ----- float32 against a 50-digit evaluation of the equations --------------------------------------
mp.dps = 50
EPS = mpf("1e-6")
ALPHA, BETA, V1 = mpf("0.3"), mpf("0.7"), mpf("0.15")
MARGINS = [40.0, 30.0, 20.0, 12.0, 3.0, 0.5, -1.0, -5.0, -20.0, -40.0]


def precision_inputs(c: int, confident: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Two 4x4 images, every class present; logit margins of the labelled class cycle through
    [40, 30, 20, 12] (confident) or the mixed list (wrong predictions too, each confident in
    another class)."""
    k = max(c, 2)
    n = 16
    margins = MARGINS[:4] if confident else MARGINS
    labels = torch.tensor([[(i + b) % k for i in range(n)] for b in range(2)])
    m = torch.tensor([[margins[(i + 3 * b) % len(margins)] for i in range(n)] for b in range(2)])
    if c == 1:
        x = torch.where(labels == 1, m, -m).view(2, 1, 4, 4)
    else:
        x = torch.tensor([0.0, 0.7, -0.4, 1.1])[:k].view(1, k, 1).expand(2, k, n).clone()
        x.scatter_(1, labels.view(2, 1, n), m.view(2, 1, n))
        # a wrong prediction is confident in one other class: 1 - p_c of that class is tiny
        wrong = ((labels + 1) % k).view(2, 1, n)
        x.scatter_(1, wrong, torch.where(m < 0, -m, x.gather(1, wrong).view(2, n)).view(2, 1, n))
        x = x.view(2, k, 4, 4)
    return x, labels.view(2, 4, 4)


def mp_probs(x: torch.Tensor) -> list[list[list[mpf]]]:
    """Per image, per pixel, the class probabilities (binary: [1 - p, p]) at 50 digits."""
    out = []
    for img in x.double().flatten(2).tolist():
        k = len(img)
        pixels = []
        for i in range(len(img[0])):
            if k == 1:
                p = 1 / (1 + mp.exp(-mpf(img[0][i])))
                pixels.append([1 - p, p])
            else:
                e = [mp.exp(mpf(img[j][i])) for j in range(k)]
                pixels.append([v / sum(e) for v in e])
        out.append(pixels)
    return out


def mp_sums(p_img, y_img, c):
    tp = sum(p[c] * y[c] for p, y in zip(p_img, y_img, strict=True))
    fp = sum(p[c] * (1 - y[c]) for p, y in zip(p_img, y_img, strict=True))
    fn = sum((1 - p[c]) * y[c] for p, y in zip(p_img, y_img, strict=True))
    return tp, fp, fn


def mp_dice(p_img, y_img, c, squared=True):
    tp = sum(p[c] * y[c] for p, y in zip(p_img, y_img, strict=True))
    den = sum(
        (y[c] ** 2 + p[c] ** 2) if squared else (y[c] + p[c])
        for p, y in zip(p_img, y_img, strict=True)
    )
    return (2 * tp + EPS) / (den + EPS)


def mp_ti(p_img, y_img, c):
    """Tversky index, FP weight 0.3, FN weight 0.7 (the defaults)."""
    tp, fp, fn = mp_sums(p_img, y_img, c)
    return (tp + EPS) / (tp + ALPHA * fp + BETA * fn + EPS)


def mp_wsdice(p_img, y_img, c):
    """WSDice coefficient (Wang et al. eq. 4), v1 = 0.15, v2 = 1 - v1."""
    v1 = V1
    num = den = mpf(0)
    for p, y in zip(p_img, y_img, strict=True):
        w = y[c] * (1 - 2 * v1) + v1
        g_true, g_pred = w * (2 * y[c] - 1), w * (2 * p[c] - 1)
        num += g_pred * g_true
        den += g_pred**2 + g_true**2
    return (2 * num + EPS) / (den + EPS)


def class_mean(f):
    def mean(p_img, y_img, binary):
        k = len(p_img[0])
        return sum(f(p_img, y_img, c) for c in range(k)) / k

    return mean


def ref_gdl(p_img, y_img, binary):
    k = len(p_img[0])
    vol = [sum(y[c] for y in y_img) for c in range(k)]
    w = [1 / v**2 for v in vol]
    inter = sum(
        w[c] * sum(p[c] * y[c] for p, y in zip(p_img, y_img, strict=True)) for c in range(k)
    )
    den = sum(w[c] * sum(p[c] + y[c] for p, y in zip(p_img, y_img, strict=True)) for c in range(k))
    return 1 - (2 * inter + EPS) / (den + EPS)


def ref_wsdice(p_img, y_img, binary):
    classes = [1] if binary else range(len(p_img[0]))
    return sum(1 - mp_wsdice(p_img, y_img, c) for c in classes) / len(classes)


def ref_combo(p_img, y_img, binary):
    # eq. 16-17, alpha = beta = 0.5, the CE over the foreground classes c >= 1; softmax
    # log(1 - p) floored at log(1e-7) (documented)
    floor = -mp.expm1(mpf("-1e-7"))
    classes = [1] if binary else range(1, len(p_img[0]))
    ce = mpf(0)
    for p, y in zip(p_img, y_img, strict=True):
        for c in classes:
            q = 1 - p[c] if binary else max(1 - p[c], floor)
            ce -= (y[c] * mp.log(p[c]) + (1 - y[c]) * mp.log(q)) / 2
    dsc = sum(mp_dice(p_img, y_img, c, False) for c in range(len(p_img[0]))) / len(p_img[0])
    return ce / len(p_img) / 2 - dsc / 2


def ref_mixed_focal(p_img, y_img, binary):
    k = len(p_img[0])
    fl = sum(
        -((1 - p[c]) ** 2) * mp.log(p[c])
        for p, y in zip(p_img, y_img, strict=True)
        for c in range(k)
        if y[c]
    ) / len(p_img)
    ft = sum((1 - mp_ti(p_img, y_img, c)) ** mpf("0.75") for c in range(k)) / k
    return fl / 2 + ft / 2


def ref_focal_log_wsdice(p_img, y_img, binary):
    fl = mpf(0)
    for p, y in zip(p_img, y_img, strict=True):
        for c in range(len(p)):
            if y[c]:
                alpha = mpf("0.3") if c else mpf("0.7")
                fl -= alpha * (1 - p[c]) ** mpf("3.5") * mp.log(p[c])
    classes = [1] if binary else range(len(p_img[0]))
    ws = sum(mp_wsdice(p_img, y_img, c) for c in classes) / len(classes)
    return 7 * fl / len(p_img) - mp.log(max(ws, EPS))


def ref_topk_ce(p_img, y_img, binary, k=30):
    ce = sorted(
        (-mp.log(p[c]) for p, y in zip(p_img, y_img, strict=True) for c in range(len(p)) if y[c]),
        reverse=True,
    )
    return sum(ce[: math.ceil(k * len(p_img) / 100)]) / len(p_img)


REFERENCES = {
    "dice-plain": (
        {"name": "dice", "squared": False},
        class_mean(lambda p, y, c: 1 - mp_dice(p, y, c, False)),
    ),
    "tversky": ({"name": "tversky"}, class_mean(lambda p, y, c: 1 - mp_ti(p, y, c))),
    "cosine_tversky": (
        {"name": "cosine_tversky", "gamma": 0.5},
        class_mean(lambda p, y, c: mp.cos(mp.pi / 2 * mp_ti(p, y, c)) ** mpf("0.5")),
    ),
    "log_dice": (
        {"name": "log_dice"},
        class_mean(lambda p, y, c: (-mp.log(mp_dice(p, y, c))) ** mpf("0.3")),
    ),
    "focal_dice": (
        {"name": "focal_dice"},
        class_mean(lambda p, y, c: 1 - mp.sqrt(mp_dice(p, y, c))),
    ),
    "generalized_dice": ({"name": "generalized_dice"}, ref_gdl),
    "wsdice": ({"name": "wsdice"}, ref_wsdice),
    "combo": ({"name": "combo"}, ref_combo),
    "mixed_focal": ({"name": "mixed_focal"}, ref_mixed_focal),
    "focal_log_wsdice": ({"name": "focal_log_wsdice"}, ref_focal_log_wsdice),
    "topk_ce": ({"name": "topk_ce", "k": 30.0}, ref_topk_ce),
}


@pytest.mark.parametrize("key", sorted(REFERENCES))
@pytest.mark.parametrize("c", [1, 4])
@pytest.mark.parametrize("confident", [True, False])
def test_float32_matches_50_digit_equations(key: str, c: int, confident: bool) -> None:
    # losses the precision tests do not cover, at margins up to 40 where 1 - p by
    # subtraction is 0 in float32 (and in float64 beyond ~37)
    params, ref = REFERENCES[key]
    params = dict(params)
    name = params.pop("name")
    x, y = precision_inputs(c, confident)
    k = max(c, 2)
    ys = [[[int(t == j) for j in range(k)] for t in img] for img in y.flatten(1).tolist()]
    probs = mp_probs(x)
    expected = sum(ref(p, t, c == 1) for p, t in zip(probs, ys, strict=True)) / len(probs)
    x = x.requires_grad_(True)
    got = get_loss(name, **params)(x, y)
    got.backward()
    assert float(got.detach()) == pytest.approx(float(expected), rel=2e-5, abs=1e-9)
    assert x.grad is not None and bool(torch.isfinite(x.grad).all())

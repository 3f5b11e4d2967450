"""Hand-computed expected values for every loss on tiny tensors.

Probabilities are chosen first and the logits are built from them (log-odds / log-probs), so
every expected value below is computed from the paper's equation with plain Python numbers.
"""

from __future__ import annotations

import math

import pytest
import torch

from napari_segloss.losses import get_loss

# binary case: 4 pixels, p = foreground probability, y = foreground label
PB = [0.9, 0.2, 0.7, 0.4]
YB = [1, 0, 1, 0]
# multiclass case: 4 pixels, 3 classes
PM = [[0.7, 0.2, 0.1], [0.1, 0.6, 0.3], [0.2, 0.2, 0.6], [0.5, 0.4, 0.1]]
YM = [0, 1, 2, 1]
EPS = 1e-6


def binary_inputs() -> tuple[torch.Tensor, torch.Tensor]:
    logits = torch.tensor([math.log(p / (1 - p)) for p in PB], dtype=torch.float64)
    return logits.view(1, 1, 2, 2).float(), torch.tensor(YB).view(1, 2, 2)


def multiclass_inputs() -> tuple[torch.Tensor, torch.Tensor]:
    lg = torch.tensor([[math.log(v) for v in row] for row in PM])  # (4, 3)
    return lg.t().reshape(1, 3, 2, 2).float(), torch.tensor(YM).view(1, 2, 2)


def expanded_binary() -> tuple[list[list[float]], list[list[int]]]:
    """Per class channel [background, foreground]: probabilities and labels."""
    return [[1 - p for p in PB], PB], [[1 - y for y in YB], YB]


def multiclass_channels() -> tuple[list[list[float]], list[list[int]]]:
    probs = [[PM[i][c] for i in range(4)] for c in range(3)]
    ys = [[1 if YM[i] == c else 0 for i in range(4)] for c in range(3)]
    return probs, ys


def channels(kind: str):
    return expanded_binary() if kind == "binary" else multiclass_channels()


def inputs(kind: str):
    return binary_inputs() if kind == "binary" else multiclass_inputs()


def close(value: torch.Tensor, expected: float, tol: float = 2e-5) -> None:
    assert float(value.detach()) == pytest.approx(expected, rel=tol, abs=tol)


# --------------------------------------------------------------------------- literal numbers
def test_dice_binary_literal() -> None:
    # fg: I = .9 + .7, sum y^2 = 2, sum p^2 = .81+.04+.49+.16 = 1.5
    # bg: p = [.1,.8,.3,.6], I = .8 + .6, sum p^2 = .01+.64+.09+.36 = 1.1
    x, y = binary_inputs()
    expected = 1 - ((3.2 + EPS) / (3.5 + EPS) + (2.8 + EPS) / (3.1 + EPS)) / 2
    close(get_loss("dice")(x, y), expected)
    # plain denominator: sum (y + p): fg 2 + 2.2, bg 2 + 1.8
    close(get_loss("dice", squared=False)(x, y), 1 - (3.2 / 4.2 + 2.8 / 3.8) / 2)
    # without background: foreground only
    close(get_loss("dice", include_background=False)(x, y), 1 - 3.2 / 3.5)


def test_pm_dice_binary_literal() -> None:
    # m = |y - p| = [.1,.2,.3,.4] for both channels
    # fg: sum m y p = .1*.9 + .3*.7 = .30; sum m (y^2+p^2) = .181+.008+.447+.064 = .70
    # bg: sum m y p = .2*.8 + .4*.6 = .40; sum m (y^2+p^2) = .001+.328+.027+.544 = .90
    x, y = binary_inputs()
    close(get_loss("pm_dice")(x, y), 1 - (0.6 / 0.7 + 0.8 / 0.9) / 2)
    # gamma = 2: m = [.01,.04,.09,.16]
    # fg: num 2*(.009+.063) = .144; den .0181+.0016+.1341+.0256 = .1794
    # bg: num 2*(.032+.096) = .256; den .0001+.0656+.0081+.2176 = .2914
    close(get_loss("pm_dice", gamma=2.0)(x, y), 1 - (0.144 / 0.1794 + 0.256 / 0.2914) / 2)


def test_per_class_gamma_binary() -> None:
    # gamma_BG = 0 (plain Dice term for background), gamma_FG = 1
    x, y = binary_inputs()
    expected = 1 - ((2.8 + EPS) / (3.1 + EPS) + 0.6 / 0.7) / 2
    close(get_loss("pm_dice", gamma=(0.0, 1.0))(x, y), expected)


def test_ce_focal_binary_literal() -> None:
    x, y = binary_inputs()
    pt = [0.9, 0.8, 0.7, 0.6]  # probability of the true class per pixel
    close(get_loss("ce")(x, y), -sum(math.log(v) for v in pt) / 4)
    fl = -sum((1 - v) ** 2 * math.log(v) for v in pt) / 4
    close(get_loss("focal")(x, y), fl)
    # alpha_t: pixels 0, 2 foreground (0.25), 1, 3 background (0.75)
    a = [0.25, 0.75, 0.25, 0.75]
    fla = -sum(ai * (1 - v) ** 2 * math.log(v) for ai, v in zip(a, pt, strict=True)) / 4
    close(get_loss("focal", alpha=0.25)(x, y), fla)


def test_topk_ce_binary_literal() -> None:
    x, y = binary_inputs()
    # k=50 %: K = 2 of 4 pixels with highest CE: -ln .6 and -ln .7
    top = -math.log(0.6) - math.log(0.7)
    close(get_loss("topk_ce", k=50)(x, y), top / 4)  # eq. 2: divided by N
    close(get_loss("topk_ce", k=50, normalize="selected")(x, y), top / 2)
    # k=100 equals CE
    close(get_loss("topk_ce", k=100)(x, y), float(get_loss("ce")(x, y)))


def test_wsdice_binary_literal() -> None:
    # w = .85 on positives, .15 on negatives; G = [.85,-.15,.85,-.15]
    # Ghat = w(2p-1) = [.68,-.09,.34,-.03]; sum Ghat G = .885, sum Ghat^2 = .587, sum G^2 = 1.49
    x, y = binary_inputs()
    close(get_loss("wsdice")(x, y), 1 - (1.77 + EPS) / (2.077 + EPS))


def test_focal_dice_zhao_binary_literal() -> None:
    # k=50: keep the 1 hardest negative per class. fg negatives p = .2 (px1), .4 (px3) -> px3
    # bg negatives (px0 p_bg=.1, px2 p_bg=.3) -> px2.  fg mask [1,0,1,1], bg mask [0,1,1,1]
    # fg: I = 1.6, D = 1.81 + 1.49 + .16 = 3.46; bg: I = 1.4, D = .09 + 1.64 + 1.36 = 3.09
    x, y = binary_inputs()
    expected = 1 - ((3.2 + EPS) / (3.46 + EPS) + (2.8 + EPS) / (3.09 + EPS)) / 2
    close(get_loss("focal_dice_zhao", k=50)(x, y), expected)


def test_topk_dice_binary_literal() -> None:
    # k=50: keep the 1 hardest positive per class. fg positives err .1 (px0), .3 (px2) -> px2
    # bg positives err .2 (px1), .4 (px3) -> px3. fg mask [0,1,1,1]: I=.7, D=.04+1.49+.16=1.69
    # bg mask [1,0,1,1]: I=.6, D=.01+.09+1.36=1.46
    x, y = binary_inputs()
    expected = 1 - ((1.4 + EPS) / (1.69 + EPS) + (1.2 + EPS) / (1.46 + EPS)) / 2
    close(get_loss("topk_dice", k=50)(x, y), expected)


def test_tversky_family_binary_literal() -> None:
    # fg: TP 1.6, FP .6, FN .4; bg: TP 1.4, FP .4, FN .6 ; alpha=.3 (FP), beta=.7 (FN)
    x, y = binary_inputs()
    ti = [(1.6 + EPS) / (1.6 + 0.18 + 0.28 + EPS), (1.4 + EPS) / (1.4 + 0.12 + 0.42 + EPS)]
    close(get_loss("tversky")(x, y), 1 - sum(ti) / 2)
    close(get_loss("focal_tversky")(x, y), sum((1 - t) ** 0.75 for t in ti) / 2)
    close(get_loss("cosine_tversky")(x, y), sum(math.cos(math.pi / 2 * t) for t in ti) / 2)
    close(
        get_loss("cosine_tversky", gamma=2.0)(x, y),
        sum(math.cos(math.pi / 2 * t) ** 2 for t in ti) / 2,
    )


def test_combo_binary_literal() -> None:
    x, y = binary_inputs()
    # beta = .7: positives weighted .7, negatives .3 (foreground channel only)
    mce = (
        -sum(
            0.7 * yi * math.log(p) + 0.3 * (1 - yi) * math.log(1 - p)
            for p, yi in zip(PB, YB, strict=True)
        )
        / 4
    )
    dsc = ((3.2 + EPS) / (4.2 + EPS) + (2.8 + EPS) / (3.8 + EPS)) / 2
    close(get_loss("combo", alpha=0.4, beta=0.7)(x, y), 0.4 * mce - 0.6 * dsc)


def test_unified_focal_binary_literal() -> None:
    x, y = binary_inputs()
    d, g = 0.6, 0.5
    # mTI = TP / (TP + delta FN + (1-delta) FP): fg 1.6/(1.6+.24+.24), bg 1.4/(1.4+.36+.16)
    mti_bg = (1.4 + EPS) / (1.4 + 0.36 + 0.16 + EPS)
    mti_fg = (1.6 + EPS) / (1.6 + 0.24 + 0.24 + EPS)
    pbg = [1 - p for p in PB]
    sym_ft = ((1 - mti_bg) ** (1 - g) + (1 - mti_fg) ** (1 - g)) / 2
    asym_ft = ((1 - mti_bg) + (1 - mti_fg) ** (1 - g)) / 2
    sym_fl = asym_fl = 0.0
    for i in range(4):
        ce_bg = -(1 - YB[i]) * math.log(pbg[i])
        ce_fg = -YB[i] * math.log(PB[i])
        sym_fl += (1 - d) * (1 - pbg[i]) ** g * ce_bg + d * (1 - PB[i]) ** g * ce_fg
        asym_fl += (1 - d) * (1 - pbg[i]) ** g * ce_bg + d * ce_fg
    sym_fl /= 4
    asym_fl /= 4
    close(get_loss("unified_focal")(x, y), 0.5 * sym_ft + 0.5 * sym_fl)
    close(get_loss("asymmetric_unified_focal")(x, y), 0.5 * asym_ft + 0.5 * asym_fl)
    # weight is lambda on the focal term (Mixed Focal eq. 23, MONAI), not the authors' code's
    close(get_loss("unified_focal", weight=1.0)(x, y), sym_fl)
    close(get_loss("asymmetric_unified_focal", weight=0.0)(x, y), asym_ft)
    close(get_loss("unified_focal", weight=0.2)(x, y), 0.2 * sym_fl + 0.8 * sym_ft)


def test_focal_log_wsdice_binary_literal() -> None:
    x, y = binary_inputs()
    pt = [0.9, 0.8, 0.7, 0.6]
    a = [0.3, 0.7, 0.3, 0.7]  # alpha_t, alpha = .3 on foreground
    fl = -sum(ai * (1 - v) ** 3.5 * math.log(v) for ai, v in zip(a, pt, strict=True)) / 4
    coef = (1.77 + EPS) / (2.077 + EPS)
    close(get_loss("focal_log_wsdice")(x, y), 7 * fl - math.log(coef))


def test_focal_log_wsdice_floor_is_eps() -> None:
    # every pixel confidently wrong: WSDice <= eps, the log term is -log(eps) exactly (a floor
    # at 1 - eps would round in float32 to 1 - 1.013e-6) and its gradient is 0
    y = torch.tensor([[[1, 0], [0, 1]]])
    x = (-12.0 * (2 * y - 1)).float().unsqueeze(1).requires_grad_()
    fl = get_loss("focal", alpha=0.3, gamma=3.5)(x, y)
    loss = get_loss("focal_log_wsdice")(x, y)
    close(loss - 7 * fl, -math.log(1e-6))
    (g_all,) = torch.autograd.grad(loss, x)
    (g_focal,) = torch.autograd.grad(7 * fl, x)
    torch.testing.assert_close(g_all, g_focal)


# --------------------------------------------------------------------------- from equations
def dice_coeffs(kind: str, squared: bool = True, m=None):
    probs, ys = channels(kind)
    out = []
    for c, (pc, yc) in enumerate(zip(probs, ys, strict=True)):
        mc = [1.0] * 4 if m is None else m[c]
        num = 2 * sum(mi * yi * pi for mi, yi, pi in zip(mc, yc, pc, strict=True)) + EPS
        if squared:
            den = sum(mi * (yi**2 + pi**2) for mi, yi, pi in zip(mc, yc, pc, strict=True))
        else:
            den = sum(mi * (yi + pi) for mi, yi, pi in zip(mc, yc, pc, strict=True))
        out.append(num / (den + EPS))
    return out


@pytest.mark.parametrize("kind", ["binary", "multiclass"])
@pytest.mark.parametrize("squared", [True, False])
def test_dice_eq4(kind: str, squared: bool) -> None:
    x, y = inputs(kind)
    d = dice_coeffs(kind, squared)
    close(get_loss("dice", squared=squared)(x, y), 1 - sum(d) / len(d))


@pytest.mark.parametrize("kind", ["binary", "multiclass"])
@pytest.mark.parametrize("gamma", [0.5, 1.0, 3.0])
def test_pm_dice_eq5(kind: str, gamma: float) -> None:
    x, y = inputs(kind)
    probs, ys = channels(kind)
    m = [
        [abs(yi - pi) ** gamma for yi, pi in zip(yc, pc, strict=True)]
        for pc, yc in zip(probs, ys, strict=True)
    ]
    d = dice_coeffs(kind, True, m)
    close(get_loss("pm_dice", gamma=gamma)(x, y), 1 - sum(d) / len(d))


def test_pm_dice_per_class_gamma_multiclass() -> None:
    x, y = multiclass_inputs()
    probs, ys = multiclass_channels()
    gammas = [0.0, 1.0, 2.0]
    m = [
        [abs(yi - pi) ** g for yi, pi in zip(yc, pc, strict=True)]
        for g, pc, yc in zip(gammas, probs, ys, strict=True)
    ]
    d = dice_coeffs("multiclass", True, m)
    close(get_loss("pm_dice", gamma=gammas)(x, y), 1 - sum(d) / 3)


@pytest.mark.parametrize("kind", ["binary", "multiclass"])
def test_generalized_dice(kind: str) -> None:
    x, y = inputs(kind)
    probs, ys = channels(kind)
    w = [1 / sum(yc) ** 2 for yc in ys]
    num = 2 * sum(
        wc * sum(a * b for a, b in zip(yc, pc, strict=True))
        for wc, pc, yc in zip(w, probs, ys, strict=True)
    )
    den = sum(wc * (sum(yc) + sum(pc)) for wc, pc, yc in zip(w, probs, ys, strict=True))
    close(get_loss("generalized_dice")(x, y), 1 - (num + EPS) / (den + EPS))


@pytest.mark.parametrize("kind", ["binary", "multiclass"])
def test_log_dice_and_focal_dice(kind: str) -> None:
    x, y = inputs(kind)
    d = dice_coeffs(kind)
    close(get_loss("log_dice")(x, y), sum((-math.log(v)) ** 0.3 for v in d) / len(d))
    close(get_loss("log_dice", gamma=1.0)(x, y), sum(-math.log(v) for v in d) / len(d))
    close(get_loss("focal_dice")(x, y), 1 - sum(v**0.5 for v in d) / len(d))
    close(get_loss("focal_dice", beta=1.0)(x, y), 1 - sum(d) / len(d))


def test_multiclass_ce_focal_topk() -> None:
    x, y = multiclass_inputs()
    pt = [PM[i][YM[i]] for i in range(4)]  # .7, .6, .6, .4
    close(get_loss("ce")(x, y), -sum(math.log(v) for v in pt) / 4)
    close(get_loss("focal", gamma=2)(x, y), -sum((1 - v) ** 2 * math.log(v) for v in pt) / 4)
    close(get_loss("focal", gamma=0.5)(x, y), -sum((1 - v) ** 0.5 * math.log(v) for v in pt) / 4)
    # per-class alpha weights .2/.3/.5 by the true class
    a = [0.2, 0.3, 0.5]
    fa = -sum(a[YM[i]] * (1 - pt[i]) ** 2 * math.log(pt[i]) for i in range(4)) / 4
    close(get_loss("focal", alpha=a)(x, y), fa)
    # class-weighted CE still divides by N (eq. 1)
    close(get_loss("ce", weight=a)(x, y), -sum(a[YM[i]] * math.log(pt[i]) for i in range(4)) / 4)
    # k=25 % of 4 pixels: the single worst pixel (p_t = .4)
    close(get_loss("topk_ce", k=25)(x, y), -math.log(0.4) / 4)


def test_multiclass_tversky_and_wsdice() -> None:
    x, y = multiclass_inputs()
    probs, ys = multiclass_channels()
    ti, ws = [], []
    for pc, yc in zip(probs, ys, strict=True):
        tp = sum(a * b for a, b in zip(yc, pc, strict=True))
        fp = sum((1 - a) * b for a, b in zip(yc, pc, strict=True))
        fn = sum(a * (1 - b) for a, b in zip(yc, pc, strict=True))
        ti.append((tp + EPS) / (tp + 0.3 * fp + 0.7 * fn + EPS))
        w = [a * 0.7 + 0.15 for a in yc]
        g = [wi * (2 * a - 1) for wi, a in zip(w, yc, strict=True)]
        gh = [wi * (2 * b - 1) for wi, b in zip(w, pc, strict=True)]
        num = 2 * sum(a * b for a, b in zip(g, gh, strict=True)) + EPS
        ws.append(num / (sum(v * v for v in g) + sum(v * v for v in gh) + EPS))
    close(get_loss("tversky")(x, y), 1 - sum(ti) / 3)
    close(get_loss("wsdice")(x, y), 1 - sum(ws) / 3)
    close(get_loss("wsdice", include_background=False)(x, y), 1 - sum(ws[1:]) / 2)


def test_mixed_focal_is_its_two_terms() -> None:
    # eq. 23: lam * focal + (1 - lam) * focal Tversky with mTI (delta on FN = Tversky beta)
    for x, y in (binary_inputs(), multiclass_inputs()):
        mf = get_loss("mixed_focal", lam=0.3, delta=0.7, gamma_f=2.0, gamma_d=0.75)(x, y)
        f = get_loss("focal", gamma=2.0)(x, y)
        ft = get_loss("focal_tversky", alpha=0.3, beta=0.7, gamma=0.75)(x, y)
        close(mf, 0.3 * float(f) + 0.7 * float(ft))


def test_skip_absent_and_include_background() -> None:
    # class 2 absent from the image: skip_absent=True averages over classes 0, 1 only
    x, _ = multiclass_inputs()
    y = torch.tensor([0, 1, 1, 1]).view(1, 2, 2)
    probs, _ = multiclass_channels()
    ys = [[1, 0, 0, 0], [0, 1, 1, 1], [0, 0, 0, 0]]
    d = []
    for pc, yc in zip(probs, ys, strict=True):
        num = 2 * sum(a * b for a, b in zip(yc, pc, strict=True)) + EPS
        d.append(num / (sum(a * a + b * b for a, b in zip(yc, pc, strict=True)) + EPS))
    close(get_loss("dice")(x, y), 1 - (d[0] + d[1]) / 2)
    close(get_loss("dice", skip_absent=False)(x, y), 1 - sum(d) / 3)
    close(get_loss("dice", include_background=False)(x, y), 1 - d[1])
    # no class enters (background dropped, only background present): loss 0
    y0 = torch.zeros(1, 2, 2, dtype=torch.long)
    close(get_loss("dice", include_background=False)(x, y0), 0.0)


def test_ignore_index_drops_pixels() -> None:
    # ignoring pixel 3 must equal the loss on the first 3 pixels (as a 1x3 image)
    x, y = multiclass_inputs()
    y_ign = y.clone().view(-1)
    y_ign[3] = 255
    x3 = x.view(1, 3, 4)[:, :, :3].reshape(1, 3, 1, 3)
    y3 = y.view(1, 4)[:, :3].reshape(1, 1, 3)
    for name in [
        "ce",
        "focal",
        "dice",
        "pm_dice",
        "tversky",
        "wsdice",
        "combo",
        "topk_ce",
        "unified_focal",
    ]:
        a = get_loss(name, ignore_index=255)(x, y_ign.view(1, 2, 2))
        b = get_loss(name)(x3, y3)
        close(a, float(b))
    # binary with ignore
    xb, yb = binary_inputs()
    yb_ign = yb.clone().view(-1)
    yb_ign[1] = 255
    keep = [0, 2, 3]
    xb3 = xb.view(-1)[keep].view(1, 1, 1, 3)
    yb3 = yb.view(-1)[keep].view(1, 1, 3)
    for name in ["ce", "pm_dice", "generalized_dice", "focal_dice_zhao", "topk_dice", "log_dice"]:
        close(
            get_loss(name, ignore_index=255)(xb, yb_ign.view(1, 2, 2)),
            float(get_loss(name)(xb3, yb3)),
        )


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int32, torch.float32])
def test_label_dtypes(dtype) -> None:
    for x, y in (multiclass_inputs(), binary_inputs()):
        for name in ["ce", "dice", "pm_dice", "topk_dice"]:
            close(get_loss(name)(x, y.to(dtype)), float(get_loss(name)(x, y)))
    xb, yb = binary_inputs()
    close(get_loss("pm_dice")(xb, yb.bool()), float(get_loss("pm_dice")(xb, yb)))


def test_onehot_and_label_targets_agree() -> None:
    x, y = multiclass_inputs()
    onehot = torch.nn.functional.one_hot(y, 3).permute(0, 3, 1, 2).float()
    for name in ["ce", "dice", "pm_dice", "generalized_dice", "tversky", "unified_focal", "combo"]:
        close(get_loss(name)(x, onehot), float(get_loss(name)(x, y)))
        close(get_loss(name)(x, y.unsqueeze(1)), float(get_loss(name)(x, y)))


def test_multilabel_is_per_channel_binary() -> None:
    # multilabel = each channel its own binary problem; Dice family: no background channel
    torch.manual_seed(0)
    x = torch.randn(2, 3, 4, 4)
    t = (torch.rand(2, 3, 4, 4) > 0.5).float()
    ce = get_loss("ce", mode="multilabel")(x, t)
    ref = torch.nn.functional.binary_cross_entropy_with_logits(x, t)
    close(ce, float(ref), 1e-5)
    dl = get_loss("dice", mode="multilabel", reduction="none")(x, t)
    per_chan = torch.stack(
        [
            get_loss("dice", include_background=False, reduction="none")(x[:, c : c + 1], t[:, c])
            for c in range(3)
        ],
        dim=1,
    )
    torch.testing.assert_close(dl, per_chan.mean(1))
    uf = get_loss("unified_focal", mode="multilabel", reduction="none")(x, t)
    per_uf = torch.stack(
        [get_loss("unified_focal", reduction="none")(x[:, c : c + 1], t[:, c]) for c in range(3)],
        dim=1,
    )
    torch.testing.assert_close(uf, per_uf.mean(1))


def test_batch_dice_and_reductions() -> None:
    torch.manual_seed(1)
    x = torch.randn(3, 2, 4, 4)
    y = torch.randint(0, 2, (3, 4, 4))
    none = get_loss("dice", reduction="none")(x, y)
    assert none.shape == (3,)
    close(get_loss("dice", reduction="mean")(x, y), float(none.mean()))
    close(get_loss("dice", reduction="sum")(x, y), float(none.sum()))
    bd = get_loss("dice", batch_dice=True, reduction="none")(x, y)
    assert bd.shape == (1,)
    # batch dice = dice of the batch laid out as one image
    x1 = x.permute(1, 0, 2, 3).reshape(1, 2, 12, 4)
    y1 = y.reshape(1, 12, 4)
    close(bd, float(get_loss("dice")(x1, y1)))
    for name in ["ce", "focal", "topk_ce", "wsdice", "unified_focal", "ce+pm_dice"]:
        assert get_loss(name, reduction="none")(x, y).shape == (3,)


def soft_like(y: torch.Tensor, c: int) -> torch.Tensor:
    """The float (one-hot / foreground-probability) target equal to labels ``y`` for ``c``
    logit channels, 255 = ignored: it takes the generic (soft-target) path of every loss."""
    if c == 1:
        valid = (y != 255).float().unsqueeze(1)
        return torch.where(y == 255, 0, y).unsqueeze(1).float() * valid + 255 * (1 - valid)
    oh = torch.nn.functional.one_hot(torch.where(y == 255, 0, y), c).permute(0, 3, 1, 2).float()
    return torch.where((y == 255).unsqueeze(1), torch.full_like(oh, 255.0), oh)


def assert_label_and_soft_paths_agree(loss, x: torch.Tensor, y: torch.Tensor, c: int) -> None:
    """Integer labels and the equal float target give the same values and gradients."""
    xa = x.clone().requires_grad_(True)
    xb = x.clone().requires_grad_(True)
    va, vb = loss(xa, y), loss(xb, soft_like(y, c))
    torch.testing.assert_close(va, vb, rtol=1e-5, atol=1e-6)
    va.sum().backward()
    vb.sum().backward()
    torch.testing.assert_close(xa.grad, xb.grad, rtol=1e-4, atol=1e-6)


FAST_CASES = [("dice", 0.0), ("log_dice", 0.0)] + [("pm_dice", g) for g in (0.0, 0.5, 1.0, 2.0)]


@pytest.mark.parametrize(("name", "gamma"), FAST_CASES)
@pytest.mark.parametrize("squared", [True, False])
@pytest.mark.parametrize("c", [1, 3])
@pytest.mark.parametrize("extra", [{}, {"ignore_index": 255}, {"batch_dice": True}])
def test_label_fast_path_matches_onehot_path(name, gamma, squared, c, extra) -> None:
    # integer labels take the gather/scatter path with a hand-written backward; one-hot
    # targets take the generic autograd path: values and gradients must agree
    g = torch.Generator().manual_seed(int(gamma * 10) + c)
    x = torch.randn(2, c, 3, 5, generator=g) * 2
    y = torch.randint(0, max(c, 2), (2, 3, 5), generator=g)
    y[1] = 0  # some classes absent in image 1
    kw = dict(squared=squared, **extra)
    if name == "pm_dice":
        kw["gamma"] = gamma
    if "ignore_index" in extra:
        y[0, 0, :3] = 255
    assert_label_and_soft_paths_agree(get_loss(name, reduction="none", **kw), x, y, c)


@pytest.mark.parametrize("gamma", [0.5, 1.0, 2.0, 5.0])
@pytest.mark.parametrize("squared", [True, False])
def test_pm_dice_label_path_is_accurate_for_confident_predictions(gamma, squared) -> None:
    # regression: the integer-label path once summed p^(gamma + s) over all pixels and then
    # subtracted the label entries, which cancels in float32 when p ~ 0.99 on 16k pixels
    # (it gave -2.15 instead of ~3e-4). Reference: eq. 5 in float64 with one-hot targets.
    size, conf = 128, 0.99
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    y = (((yy - 64) ** 2 + (xx - 64) ** 2) < 23**2).long().view(1, size, size)
    p_fg = torch.where(y == 1, conf, 1 - conf).double()
    logits = torch.log(p_fg / (1 - p_fg)).unsqueeze(1)
    probs = torch.cat([1 - p_fg, p_fg]).unsqueeze(0)  # (1, 2, H, W): background, foreground
    onehot = torch.stack([1 - y[0], y[0]]).unsqueeze(0).double()
    m = (onehot - probs).abs() ** gamma
    p_s = probs**2 if squared else probs
    y_s = onehot**2 if squared else onehot
    dsc = (2 * (m * onehot * probs).sum((2, 3)) + EPS) / ((m * (y_s + p_s)).sum((2, 3)) + EPS)
    expected = float(1 - dsc.mean())
    got = get_loss("pm_dice", gamma=gamma, squared=squared)(logits.float(), y)
    assert 0.0 <= float(got) < 0.05  # near-perfect prediction: small and never negative
    close(got, expected, tol=1e-5)


@pytest.mark.parametrize(
    ("name", "kw"),
    [
        ("ce", {}),
        ("ce", {"weight": (0.2, 0.3, 0.5)}),
        ("focal", {}),
        ("focal", {"gamma": 0.5, "alpha": 0.25}),
        ("topk_ce", {"k": 30}),
        ("mixed_focal", {}),
        ("focal_log_wsdice", {}),
    ],
)
@pytest.mark.parametrize("c", [1, 3])
@pytest.mark.parametrize("ignore", [False, True])
def test_pixel_label_fast_path_matches_onehot_path(name, kw, c, ignore) -> None:
    # integer labels gather log p_t; soft/one-hot targets sum over channels: same values/grads
    if c == 1 and "weight" in kw:
        kw = {"weight": (0.4, 0.6)}
    g = torch.Generator().manual_seed(c)
    x = torch.randn(2, c, 3, 5, generator=g) * 3
    y = torch.randint(0, max(c, 2), (2, 3, 5), generator=g)
    extra = {"ignore_index": 255} if ignore else {}
    if ignore:
        y[0, 0, :3] = 255
    loss = get_loss(name, reduction="none", **kw, **extra)
    assert_label_and_soft_paths_agree(loss, x, y, c)


@pytest.mark.parametrize("gamma", [0.0, 1.0, 2.5])
@pytest.mark.parametrize("extra", [{}, {"ignore_index": 255}])
def test_label_fast_path_twice_backward_and_uneven_pixel_runs(gamma, extra) -> None:
    # 7x9 = 63 pixels: three 16-pixel runs of the per-class label sums plus a 15-pixel tail;
    # the hand-written backward consumes its saved buffer, so a second backward through the
    # same graph (retain_graph=True) must rebuild it and give the same gradient
    g = torch.Generator().manual_seed(7)
    x = torch.randn(2, 3, 7, 9, generator=g) * 2
    y = torch.randint(0, 3, (2, 7, 9), generator=g)
    if extra:
        y[0, :2] = 255
    soft = soft_like(y, 3)
    loss = get_loss("pm_dice", gamma=gamma, reduction="none", **extra)
    xa = x.clone().requires_grad_(True)
    xb = x.clone().requires_grad_(True)
    va, vb = loss(xa, y), loss(xb, soft)
    torch.testing.assert_close(va, vb, rtol=1e-5, atol=1e-6)
    (first,) = torch.autograd.grad(va.sum(), xa, retain_graph=True)
    (second,) = torch.autograd.grad(va.sum(), xa)
    (ref,) = torch.autograd.grad(vb.sum(), xb)
    torch.testing.assert_close(first, ref, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(second, first, rtol=0, atol=0)


@pytest.mark.parametrize(
    ("name", "kw"),
    [
        ("topk_dice", {"k": 30}),
        ("focal_dice_zhao", {"k": 30}),
        ("wsdice", {}),
        ("wsdice", {"include_background": False}),
        ("focal_log_wsdice", {}),
        ("combo", {}),
        ("combo", {"alpha": 0.3, "beta": 0.8}),
        ("tversky", {}),
        ("focal_tversky", {}),
        ("cosine_tversky", {}),
        ("mixed_focal", {}),
        ("unified_focal", {}),
        ("asymmetric_unified_focal", {}),
        ("asymmetric_unified_focal", {"include_background": False}),
    ],
)
@pytest.mark.parametrize("c", [1, 3])
@pytest.mark.parametrize("extra", [{}, {"ignore_index": 255}, {"batch_dice": True}])
def test_region_label_paths_match_onehot_path(name, kw, c, extra) -> None:
    # integer labels take one-hot-free paths (grouped top-k selection, label-entry sums);
    # one-hot/soft targets take the generic one: same values and gradients. 7x9 pixels: the
    # per-class label sums run over 16-pixel chunks plus a tail
    g = torch.Generator().manual_seed(c)
    x = torch.randn(2, c, 7, 9, generator=g) * 2
    y = torch.randint(0, max(c, 2), (2, 7, 9), generator=g)
    y[1, :3] = 0
    if "ignore_index" in extra:
        y[0, :2] = 255
    assert_label_and_soft_paths_agree(get_loss(name, reduction="none", **kw, **extra), x, y, c)


@pytest.mark.parametrize("beta", [0.5, 0.8])
@pytest.mark.parametrize("ignore", [False, True])
def test_combo_label_gradient_is_float64_accurate_at_saturated_logits(beta, ignore) -> None:
    # the integer-label Combo CE has a hand-written backward: confident right pixels (margins
    # up to 30: 1 - p_y far below float32's 6e-8 resolution of 1 - p) and confidently wrong
    # ones (1 - p_c under the 1e-7 floor: no gradient through that log) must give the
    # gradient of the one-hot path evaluated in float64
    g = torch.Generator().manual_seed(7)
    x = torch.randn(2, 4, 6, 8, generator=g)
    y = torch.randint(0, 4, (2, 6, 8), generator=g)
    margin = torch.linspace(5.0, 30.0, 48).view(6, 8)
    sign = torch.where(torch.arange(48).view(6, 8) % 5 == 0, -1.0, 1.0)  # every 5th wrong
    wrong = (y + 1) % 4
    x.scatter_add_(1, y.unsqueeze(1), (margin * (sign > 0)).expand(2, 1, 6, 8).contiguous())
    x.scatter_add_(1, wrong.unsqueeze(1), (margin * (sign < 0)).expand(2, 1, 6, 8).contiguous())
    kw = {"alpha": 1.0, "beta": beta, "reduction": "sum"}  # alpha = 1: the CE term alone
    if ignore:
        y[0, 0] = 255
        kw["ignore_index"] = 255
    valid = (y != 255).unsqueeze(1).double()
    onehot = torch.nn.functional.one_hot(y.masked_fill(y == 255, 0), 4).permute(0, 3, 1, 2)
    onehot = onehot.double() * valid
    xa = x.clone().requires_grad_(True)
    get_loss("combo", **kw)(xa, y).backward()
    # float64 reference: eq. 17's weighted CE over the foreground channels 1..3 with the
    # reference code's floor of 1 - p
    xr = x.double().requires_grad_(True)
    log_q = torch.log((-torch.softmax(xr, 1)).add(1.0).clamp_min(-math.expm1(-1e-7)))
    ce = -(beta * onehot * torch.log_softmax(xr, 1) + (1 - beta) * (valid - onehot) * log_q)
    ce = ce[:, 1:]
    (ce.flatten(1).sum(1) / valid.flatten(1).sum(1)).sum().backward()
    expected = xr.grad
    torch.testing.assert_close(xa.grad.double(), expected, rtol=1e-4, atol=1e-9)


@pytest.mark.parametrize("c", [1, 3])
@pytest.mark.parametrize("extra", [{}, {"ignore_index": 255}, {"batch_dice": True}])
def test_per_class_gamma_is_the_same_on_every_path(c: int, extra: dict) -> None:
    # labels (B, H, W) and (B, 1, H, W), one-hot (float), float64 logits and the eq. 5 sum over
    # explicit channels all give one value and one gradient for a per-class gamma
    g = torch.Generator().manual_seed(3)
    k = max(c, 2)
    gammas = (0.5, 2.0) if c == 1 else (0.0, 1.0, 3.0)
    x = torch.randn(2, c, 5, 6, generator=g) * 3
    y = torch.randint(0, k, (2, 5, 6), generator=g)
    if "ignore_index" in extra:
        y[0, :2, :3] = 255
    loss = get_loss("pm_dice", gamma=gammas, **extra)
    targets = {"labels": y, "labels_b1": y.unsqueeze(1), "labels_uint8": y.to(torch.uint8)}
    if "ignore_index" not in extra:
        if c == 1:
            targets["soft"] = y.unsqueeze(1).float()
        else:
            targets["onehot"] = torch.nn.functional.one_hot(y, k).permute(0, 3, 1, 2).float()
    ref = None
    for name, t in targets.items():
        xi = x.clone().requires_grad_(True)
        v = loss(xi, t)
        v.backward()
        if ref is None:
            ref = (v.detach(), xi.grad)
            continue
        torch.testing.assert_close(v.detach(), ref[0], rtol=1e-5, atol=1e-6, msg=name)
        torch.testing.assert_close(xi.grad, ref[1], rtol=1e-4, atol=1e-6, msg=name)
    x64 = x.double().requires_grad_(True)
    v64 = loss(x64, y)
    torch.testing.assert_close(v64.detach().float(), ref[0], rtol=1e-5, atol=1e-6)
    # a per-class gamma equal for every class is the float gamma
    same = get_loss("pm_dice", gamma=(1.5,) * k, **extra)(x, y)
    torch.testing.assert_close(same, get_loss("pm_dice", gamma=1.5, **extra)(x, y))


@pytest.mark.parametrize("name", ["dice", "pm_dice", "ce", "ce+pm_dice", "topk_ce", "wsdice"])
@pytest.mark.parametrize("shape", [(0, 2, 4, 4), (2, 2, 0, 4)])
def test_empty_batch_is_a_clear_error(name: str, shape: tuple[int, ...]) -> None:
    x = torch.zeros(shape)
    y = torch.zeros((shape[0], *shape[2:]), dtype=torch.long)
    with pytest.raises(ValueError, match="empty"):
        get_loss(name)(x, y)

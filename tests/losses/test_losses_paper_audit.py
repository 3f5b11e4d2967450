"""Losses against their papers' equations: cases found by the paper audit, each expected value
computed in float64 Python straight from the equation cited."""

from __future__ import annotations

import math

import pytest
import torch

from napari_segloss.losses import get_loss

EPS = 1e-6
# 4 pixels, 3 classes (class 0 background): softmax probabilities and labels
PM = [[0.7, 0.2, 0.1], [0.1, 0.6, 0.3], [0.2, 0.2, 0.6], [0.5, 0.4, 0.1]]
YM = [0, 1, 2, 1]


def multiclass_inputs() -> tuple[torch.Tensor, torch.Tensor]:
    lg = torch.tensor([[math.log(v) for v in row] for row in PM], dtype=torch.float64)
    return lg.t().reshape(1, 3, 2, 2).float(), torch.tensor(YM).view(1, 2, 2)


def close(value: torch.Tensor, expected: float, tol: float = 2e-5) -> None:
    assert float(value) == pytest.approx(expected, rel=tol, abs=tol)


@pytest.mark.parametrize("beta", [0.2, 0.5, 0.8])
@pytest.mark.parametrize("target", ["labels", "onehot"])
def test_combo_multiclass_is_eq17_over_the_foreground_classes(beta: float, target: str) -> None:
    # Yeung et al. eq. 16-17: L_mCE is the binary CE of a foreground probability; per
    # foreground class c >= 1 (one-vs-rest), summed over those classes, mean over the pixels
    x, y = multiclass_inputs()
    if target == "onehot":
        y = torch.nn.functional.one_hot(y, 3).permute(0, 3, 1, 2).float()
    mce = 0.0
    for p, lab in zip(PM, YM, strict=True):
        for c in (1, 2):
            t = 1.0 if lab == c else 0.0
            mce -= beta * t * math.log(p[c]) + (1 - beta) * (1 - t) * math.log(1 - p[c])
    mce /= 4
    dsc = 0.0
    for c in range(3):
        t = [1.0 if lab == c else 0.0 for lab in YM]
        p = [row[c] for row in PM]
        inter = sum(a * b for a, b in zip(t, p, strict=True))
        dsc += (2 * inter + EPS) / (sum(t) + sum(p) + EPS)
    dsc /= 3
    close(get_loss("combo", alpha=0.4, beta=beta)(x, y), 0.4 * mce - 0.6 * dsc)


@pytest.mark.parametrize("beta", [0.1, 0.5, 0.9])
def test_combo_softmax_over_background_and_foreground_is_the_binary_loss(beta: float) -> None:
    # softmax([0, x]) = [1 - sigmoid(x), sigmoid(x)]: eq. 17 on the foreground probability,
    # so beta must act (before, the background channel's terms cancelled it to plain BCE)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 1, 4, 4, generator=g, dtype=torch.float64)
    y = torch.randint(0, 2, (2, 4, 4), generator=g)
    p = torch.sigmoid(x)[:, 0]
    t = y.double()
    mce = -(beta * t * torch.log(p) + (1 - beta) * (1 - t) * torch.log1p(-p)).mean()
    two = torch.cat([torch.zeros_like(x), x], 1).float()
    ce_only = get_loss("combo", alpha=1.0, beta=beta)
    close(ce_only(two, y), float(mce))
    close(ce_only(x.float(), y), float(mce))
    onehot = torch.stack([1 - y, y], 1).float()
    close(ce_only(two, onehot), float(mce))


def tversky_complement(c: int, delta: float) -> float:
    """``1 - mTI_c`` of the 3-class example, with delta on the false negatives."""
    t = [1.0 if lab == c else 0.0 for lab in YM]
    p = [row[c] for row in PM]
    tp = sum(a * b for a, b in zip(t, p, strict=True))
    fn = sum(a * (1 - b) for a, b in zip(t, p, strict=True))
    fp = sum((1 - a) * b for a, b in zip(t, p, strict=True))
    return 1 - (tp + EPS) / (tp + delta * fn + (1 - delta) * fp + EPS)


@pytest.mark.parametrize("asymmetric", [False, True])
def test_unified_focal_multiclass_background_is_class_0_only(asymmetric: bool) -> None:
    # Yeung et al. 2022 (CMIG), as the authors' code: mTI = TP / (TP + delta FN + (1 - delta)
    # FP); focal CE weights 1 - delta for the background, delta for every foreground class.
    # Asymmetric: only class 0 keeps (1 - mTI) unmodulated and (1 - p)^gamma in the CE; each
    # foreground class (1 and 2 alike) gets (1 - mTI)^(1 - gamma) and an unsuppressed CE
    x, y = multiclass_inputs()
    d, g, lam = 0.6, 0.5, 0.3
    ft = 0.0
    for c in range(3):
        r = tversky_complement(c, d)
        ft += r if (asymmetric and c == 0) else r ** (1 - g)
    ft /= 3
    fl = 0.0
    for row, lab in zip(PM, YM, strict=True):
        w = 1 - d if lab == 0 else d
        focus = (1 - row[lab]) ** g if (lab == 0 or not asymmetric) else 1.0
        fl -= w * focus * math.log(row[lab])
    fl /= 4
    name = "asymmetric_unified_focal" if asymmetric else "unified_focal"
    close(get_loss(name, weight=lam)(x, y), lam * fl + (1 - lam) * ft)


def test_mixed_focal_multiclass_eq23() -> None:
    # Yeung et al. 2021 eq. 23 with eq. 7 (categorical focal, gamma_f) and eq. 22 (focal
    # Tversky with delta on FN, exponent gamma_d), class mean over the 3 classes
    x, y = multiclass_inputs()
    lam, d, gf, gd = 0.3, 0.7, 2.0, 0.75
    fl = -sum((1 - row[lab]) ** gf * math.log(row[lab]) for row, lab in zip(PM, YM, strict=True))
    fl /= 4
    ftd = 0.0
    for c in range(3):
        ftd += tversky_complement(c, d) ** gd
    ftd /= 3
    loss = get_loss("mixed_focal", lam=lam, delta=d, gamma_f=gf, gamma_d=gd)(x, y)
    close(loss, lam * fl + (1 - lam) * ftd)

"""Regression tests of the loss API audit: input paths that must give the same loss and
gradient as their documented equivalents."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from napari_segloss.losses import get_loss


def _multilabel_with_ignored_entry() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, 3, 3, generator=g)
    t = torch.randint(0, 2, (2, 3, 3, 3), generator=g).float()
    t[0, 1, 0, 0] = 255.0  # label 1 of one pixel ignored, labels 0 and 2 of it kept
    return x, t


# losses with a per-pixel CE / focal term over the multilabel pixel channels
@pytest.mark.parametrize(
    "name",
    [
        "ce",
        "focal",
        "topk_ce",
        "mixed_focal",
        "unified_focal",
        "asymmetric_unified_focal",
        "focal_log_wsdice",
        "ce+dice",
    ],
)
def test_multilabel_ignored_entry_contributes_nothing(name: str) -> None:
    # an ignored entry used to count as a negative (target 0): it changed the loss and got a
    # gradient pulling its logit down
    x, t = _multilabel_with_ignored_entry()
    loss = get_loss(name, mode="multilabel", ignore_index=255)
    xx = x.clone().requires_grad_(True)
    value = loss(xx, t)
    value.backward()
    assert xx.grad is not None
    assert float(xx.grad[0, 1, 0, 0]) == 0.0
    for shift in (-4.0, 4.0):
        moved = x.clone()
        moved[0, 1, 0, 0] += shift
        torch.testing.assert_close(loss(moved, t), value.detach())


def test_multilabel_ce_with_ignored_entry_value() -> None:
    # per image: the mean BCE over its valid (pixel, label) entries (26 in image 0, 27 in 1)
    x, t = _multilabel_with_ignored_entry()
    valid = (t != 255).float()
    bce = F.binary_cross_entropy_with_logits(x, t * valid, reduction="none") * valid
    expected = (bce.flatten(1).sum(1) / valid.flatten(1).sum(1)).mean()
    got = get_loss("ce", mode="multilabel", ignore_index=255)(x, t)
    torch.testing.assert_close(got, expected)


def _gdl_reference(x: torch.Tensor, y: torch.Tensor, batch: bool) -> torch.Tensor:
    """Sudre et al.'s GDL over the foreground classes only, absent classes weighted by the
    largest foreground weight (MONAI GeneralizedDiceLoss(include_background=False))."""
    p = torch.softmax(x.double(), 1)[:, 1:]
    y1 = F.one_hot(y, x.shape[1]).permute(0, 3, 1, 2).double()[:, 1:]
    dims = (0, 2, 3) if batch else (2, 3)
    w = 1.0 / y1.sum(dims) ** 2
    inf = torch.isinf(w)
    w = torch.where(inf, 0.0, w)
    w = torch.where(inf, w.amax(-1, keepdim=True), w)
    inter, den = (y1 * p).sum(dims), (y1 + p).sum(dims)
    return (1.0 - (2.0 * (w * inter).sum(-1) + 1e-6) / ((w * den).sum(-1) + 1e-6)).mean().float()


@pytest.mark.parametrize("batch_dice", [False, True])
def test_generalized_dice_without_background_ignores_its_weight(batch_dice: bool) -> None:
    # background rarer than the foreground class 1, class 2 absent: the absent class used to
    # take the (large) weight of the dropped background (0.9945 instead of 0.6405)
    g = torch.Generator().manual_seed(7)
    x = torch.randn(2, 3, 6, 6, generator=g)
    y = torch.ones(2, 6, 6, dtype=torch.long)
    y[:, 0, :2] = 0
    loss = get_loss("generalized_dice", include_background=False, batch_dice=batch_dice)
    expected = _gdl_reference(x, y, batch_dice)
    torch.testing.assert_close(loss(x, y), expected)
    torch.testing.assert_close(loss(x, F.one_hot(y, 3).permute(0, 3, 1, 2).float()), expected)


def test_generalized_dice_binary_without_background_on_empty_foreground() -> None:
    # the only class in the sum is absent: no weight, loss 0 (as documented and as MONAI);
    # it used to borrow the background's weight and give 1
    g = torch.Generator().manual_seed(7)
    x = torch.randn(2, 1, 6, 6, generator=g)
    y = torch.zeros(2, 6, 6, dtype=torch.long)
    y[1, :3] = 1
    loss = get_loss("generalized_dice", include_background=False, reduction="none")
    out = loss(x, y)
    assert float(out[0]) == 0.0
    p = torch.sigmoid(x[1, 0].double())
    t = y[1].double()
    # w (sum (y + p) - 2 sum y p) / (w sum (y + p) + eps) with w = 1 / (sum y)^2
    den = (t + p).sum()
    expected = (den - 2.0 * (t * p).sum()) / (den + 1e-6 * t.sum() ** 2)
    torch.testing.assert_close(out[1], expected.float())


@pytest.mark.parametrize("ignore_index", [0, 1])
@pytest.mark.parametrize("name", ["ce", "dice", "tversky", "ce+dice"])
def test_ignore_index_that_is_a_one_hot_value_is_refused(name: str, ignore_index: int) -> None:
    # a one-hot pixel has a 0 and a 1 among its channels: the whole target was ignored and
    # the loss was 0 with a zero gradient
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, 3, 4, 4, generator=g)
    y = torch.randint(0, 3, (2, 4, 4), generator=g)
    onehot = F.one_hot(y, 3).permute(0, 3, 1, 2).float()
    loss = get_loss(name, ignore_index=ignore_index)
    with pytest.raises(ValueError, match=rf"ignore_index={ignore_index} cannot mark pixels"):
        loss(x, onehot)
    # integer labels keep ignore_index as a class to leave out
    labels = loss(x, y)
    assert torch.isfinite(labels) and float(labels) > 0.0
    # marked with a value outside [0, 1], the one-hot target gives the label loss
    marked = torch.where((y == ignore_index).unsqueeze(1), 255.0, onehot)
    torch.testing.assert_close(get_loss(name, ignore_index=255)(x, marked), labels)

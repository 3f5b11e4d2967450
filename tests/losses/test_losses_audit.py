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
    # per pixel: the BCE of the valid labels over C; per image: over its (partly) valid pixels
    x, t = _multilabel_with_ignored_entry()
    valid = (t != 255).float()
    bce = F.binary_cross_entropy_with_logits(x, t * valid, reduction="none") * valid
    expected = (bce.sum(1).flatten(1).sum(1) / 3 / 9).mean()
    got = get_loss("ce", mode="multilabel", ignore_index=255)(x, t)
    torch.testing.assert_close(got, expected)

"""The grouped top-k selection behind the TopK losses (napari_segloss.losses.topk)."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from napari_segloss.losses import get_loss
from napari_segloss.losses.topk import topk_keep, topk_mask, topk_rows


def reference_keep_sum(
    error: torch.Tensor, group: torch.Tensor, count: torch.Tensor
) -> torch.Tensor:
    """Sum of the ``count`` largest errors per (image, group), by sorting."""
    b, g = count.shape
    out = torch.zeros(b, g, dtype=torch.float64)
    for i in range(b):
        for j in range(g):
            e = error[i][group[i] == j].double().sort(descending=True).values
            out[i, j] = e[: int(count[i, j])].sum()
    return out


@st.composite
def selections(draw):
    b = draw(st.integers(1, 3))
    n = draw(st.integers(1, 70))
    g = draw(st.integers(1, 4))
    levels = draw(st.sampled_from([0, 3, 1000]))  # 0: continuous errors; else many ties
    seed = draw(st.integers(0, 2**31 - 1))
    gen = torch.Generator().manual_seed(seed)
    if levels:
        error = torch.randint(0, levels, (b, n), generator=gen).float() / levels
    else:
        error = torch.rand(b, n, generator=gen) ** 3 * draw(st.sampled_from([1.0, 1e-30, 1e30]))
    group = torch.randint(0, g + 1, (b, n), generator=gen)  # g = excluded
    sizes = torch.stack([(group == j).sum(1) for j in range(g)], 1)
    frac = torch.rand(b, g, generator=gen)
    count = torch.floor(frac * (sizes + 1)).clamp(max=sizes).float()
    return error, group, count


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(sel=selections())
def test_topk_keep_selects_the_largest_per_group(sel) -> None:
    error, group, count = sel
    keep = topk_keep(error, group, count)
    assert keep.shape == error.shape and keep.dtype == torch.float32
    assert bool(((keep >= 0) & (keep <= 1)).all())
    assert float(keep[group == count.shape[1]].abs().sum()) == 0.0  # excluded: never kept
    g = count.shape[1]
    for j in range(g):
        kept = (keep * (group == j)).sum(1)
        torch.testing.assert_close(kept, count[:, j], rtol=0, atol=1e-4)
    # the kept mass carries exactly the errors of an exact top-k (ties share their slots)
    ours = torch.stack([(keep * error * (group == j)).double().sum(1) for j in range(g)], 1)
    torch.testing.assert_close(ours, reference_keep_sum(error, group, count), rtol=1e-6, atol=0)


def test_topk_keep_ties_share_the_remaining_slots() -> None:
    error = torch.tensor([[0.9, 0.5, 0.5, 0.5, 0.1]])
    keep = topk_keep(error, torch.zeros(1, 5, dtype=torch.long), torch.tensor([[2.0]]))
    torch.testing.assert_close(keep, torch.tensor([[1.0, 1 / 3, 1 / 3, 1 / 3, 0.0]]))


def test_topk_keep_edge_values() -> None:
    # -0.0 equals 0.0, inf and NaN rank as the largest finite float, count 0 keeps nothing
    error = torch.tensor([[-0.0, 0.0, float("inf"), 2.0, float("nan"), 3.4e38]])
    group = torch.tensor([[0, 0, 1, 1, 1, 1]])
    keep = topk_keep(error, group, torch.tensor([[0.0, 1.0]]))
    assert float(keep[0, :2].sum()) == 0.0
    torch.testing.assert_close(keep[0, 2:].sum(), torch.tensor(1.0))
    assert float(keep[0, 3]) == 0.0  # 2.0 is below the three "largest" values


def test_topk_rows_and_mask_match_a_sorted_selection() -> None:
    g = torch.Generator().manual_seed(3)
    error = torch.rand(2, 3, 40, generator=g)
    cand = (torch.rand(2, 3, 40, generator=g) > 0.4).float()
    k = 25.0
    mask = topk_mask(cand, error, k)
    for i in range(2):
        for c in range(3):
            e = error[i, c][cand[i, c] > 0]
            cnt = math.ceil(k * e.numel() / 100)
            expected = e.sort(descending=True).values[:cnt].sum()
            torch.testing.assert_close((mask[i, c] * error[i, c]).sum(), expected)
            assert float(mask[i, c][cand[i, c] == 0].sum()) == 0.0
    scores = error.flatten(0, 1)
    rows = topk_rows(scores, torch.full((6,), 4.0), 10)
    torch.testing.assert_close(rows.sum(1), torch.full((6,), 4.0))


@pytest.mark.parametrize("name", ["topk_dice", "focal_dice_zhao", "topk_ce"])
def test_topk_losses_are_order_invariant_with_ties(name: str) -> None:
    # saturated logits make many exactly equal errors; the loss value does not depend on
    # where a pixel sits in the image. TopK Dice's grouped selection shares ties over the whole
    # image, so its gradient is order invariant too; the others hand ties at their torch.topk
    # cut to torch.topk (see topk_rows), so only their values are order invariant
    g = torch.Generator().manual_seed(0)
    x = torch.randint(-1, 2, (1, 3, 6, 6), generator=g).float() * 30.0
    y = torch.randint(0, 3, (1, 6, 6), generator=g)
    perm = torch.randperm(36, generator=g)
    xp = x.flatten(2)[..., perm].view_as(x)
    yp = y.flatten(1)[..., perm].view_as(y)
    loss = get_loss(name, k=30)
    xa = x.clone().requires_grad_(True)
    xb = xp.clone().requires_grad_(True)
    la, lb = loss(xa, y), loss(xb, yp)
    torch.testing.assert_close(la, lb)
    if name == "topk_dice":
        la.backward()
        lb.backward()
        torch.testing.assert_close(xa.grad.flatten(2)[..., perm], xb.grad.flatten(2))

"""Tests for napari_segloss.landscape (controlled-error predictions, Li et al. directions)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from napari_segloss.landscape import (
    as_logits,
    boundary_shift,
    controlled_prediction,
    disk_target,
    evaluate_losses,
    filter_normalized_direction,
    logit_gradient,
    loss_grid,
    loss_surface,
    random_directions,
    soft_boundary_prediction,
)


def square(size: int = 20, side: int = 10) -> np.ndarray:
    mask = np.zeros((size, size), dtype=np.uint8)
    lo = (size - side) // 2
    mask[lo : lo + side, lo : lo + side] = 1
    return mask


def bce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(logits[:, 0], target.float())


# ---------------------------------------------------------------- prediction space
@pytest.mark.parametrize(
    ("fn", "fp", "reference", "n_fn", "n_fp"),
    [
        (0.0, 0.0, "foreground", 0, 0),
        (0.25, 0.0, "foreground", 25, 0),
        (0.0, 0.5, "foreground", 0, 50),
        (1.0, 2.0, "foreground", 100, 200),
        (0.1, 0.1, "background", 10, 30),  # 300 background pixels
    ],
)
@pytest.mark.parametrize("order", ["boundary", "random"])
def test_controlled_prediction_counts(fn, fp, reference, n_fn, n_fp, order):
    target = square()
    probs = controlled_prediction(
        target, fn_fraction=fn, fp_fraction=fp, fp_reference=reference, order=order, seed=3
    )
    assert probs.shape == target.shape and probs.dtype == np.float32
    predicted = probs > 0.5
    assert int((~predicted & (target == 1)).sum()) == n_fn
    assert int((predicted & (target == 0)).sum()) == n_fp
    assert (np.isclose(probs, 0.1) | np.isclose(probs, 0.9)).all()


def test_boundary_order_takes_the_outer_ring_first():
    target = square()  # 10x10 square in a 20x20 image
    # 36 = the outer ring of the square: exactly the pixels at distance 1 from background.
    probs = controlled_prediction(target, fn_fraction=0.36)
    expected = square(20, 8)
    np.testing.assert_array_equal(probs > 0.5, expected.astype(bool))
    # 44 false positives = 40 edge neighbours (distance 1) + 4 diagonal corners (sqrt 2):
    # the prediction becomes the 12x12 square.
    probs = controlled_prediction(target, fp_fraction=0.44)
    np.testing.assert_array_equal(probs > 0.5, square(20, 12).astype(bool))


def test_controlled_prediction_confidence_values():
    target = square()
    probs = controlled_prediction(target, fn_fraction=0.5, confidence=0.7)
    fg = target == 1
    # predicted-positive pixels get the confidence, the rest 1 - confidence
    assert np.isclose(probs[fg & (probs > 0.5)], 0.7).all()
    assert np.isclose(probs[fg & (probs < 0.5)], 0.3).all()
    assert np.isclose(probs[~fg], 0.3).all()


def test_controlled_prediction_is_reproducible_and_seeded():
    target = square()
    a = controlled_prediction(target, fn_fraction=0.3, order="random", seed=1)
    b = controlled_prediction(target, fn_fraction=0.3, order="random", seed=1)
    c = controlled_prediction(target, fn_fraction=0.3, order="random", seed=2)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


@settings(max_examples=30, deadline=None)
@given(
    mask=st.lists(st.booleans(), min_size=64, max_size=64),
    fn=st.floats(0, 1),
    fp=st.floats(0, 1),
    conf=st.floats(0.51, 0.99),
    order=st.sampled_from(["boundary", "random"]),
)
def test_controlled_prediction_property(mask, fn, fp, conf, order):
    target = np.array(mask, dtype=bool).reshape(8, 8)
    n_fg = int(target.sum())
    n_bg = target.size - n_fg
    probs = controlled_prediction(
        target,
        fn_fraction=fn,
        fp_fraction=fp,
        confidence=conf,
        fp_reference="background",
        order=order,
    )
    predicted = probs > 0.5
    assert int((~predicted & target).sum()) == round(fn * n_fg)
    assert int((predicted & ~target).sum()) == round(fp * n_bg)


def test_controlled_prediction_3d():
    target = np.zeros((6, 6, 6), dtype=bool)
    target[1:5, 1:5, 1:5] = True  # 64 voxels
    probs = controlled_prediction(target, fn_fraction=0.5, fp_fraction=0.25)
    assert int((~(probs > 0.5) & target).sum()) == 32
    assert int(((probs > 0.5) & ~target).sum()) == 16


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"fn_fraction": 1.5}, "fn_fraction must be a number in"),
        ({"fn_fraction": -0.1}, "fn_fraction must be a number in"),
        ({"fp_fraction": -1.0}, "fp_fraction must be a number in"),
        ({"fp_fraction": 4.0}, "only 300 background pixels"),
        ({"fp_fraction": 1.5, "fp_reference": "background"}, "fp_fraction must be a number in"),
        ({"confidence": 1.0}, "confidence must be strictly between 0 and 1"),
        # 0.3 flipped every pixel: an "error-free" prediction wrong everywhere
        ({"confidence": 0.3}, r"confidence must be in \[0.5, 1\)"),
        ({"fp_reference": "image"}, "fp_reference must be"),
        ({"order": "spiral"}, "order must be"),
    ],
)
def test_controlled_prediction_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        controlled_prediction(square(), **kwargs)


def test_controlled_prediction_rejects_non_binary_target():
    with pytest.raises(ValueError, match=r"target must be binary .*got values \[0, 1, 2\]"):
        controlled_prediction(np.array([[0, 1], [2, 0]]))
    with pytest.raises(ValueError, match="target must be a 2D or 3D binary mask"):
        controlled_prediction(np.zeros(5))


@pytest.mark.parametrize(("fraction", "count"), [(5 / 121, 5), (9 / 121, 9), (1.0, 121)])
def test_disk_target_exact_area(fraction, count):
    disk = disk_target((11, 11), fraction)
    assert disk.dtype == bool and int(disk.sum()) == count
    assert disk[5, 5]  # centred


def test_disk_target_shape_is_a_disk():
    # 5 pixels nearest to the centre: the centre and its 4 edge neighbours (a plus sign).
    disk = disk_target((5, 5), 5 / 25)
    expected = np.zeros((5, 5), dtype=bool)
    expected[2, 1:4] = True
    expected[1:4, 2] = True
    np.testing.assert_array_equal(disk, expected)
    assert disk_target((4, 5, 6), 0.1).sum() == 12


def test_disk_target_rejects_bad_arguments():
    with pytest.raises(ValueError, match="at least one pixel"):
        disk_target((4, 4), 0.01)
    with pytest.raises(ValueError, match="fraction must be a number in"):
        disk_target((4, 4), 1.2)
    with pytest.raises(ValueError, match="shape must be 2 or 3"):
        disk_target((4,), 0.5)
    with pytest.raises(ValueError, match=r"shape must be \(H, W\) or \(D, H, W\), got 64"):
        disk_target(64, 0.1)  # a bare TypeError before
    assert disk_target(np.array([8, 8]), 0.25).shape == (8, 8)


@pytest.mark.parametrize(
    ("shift", "count"),
    [
        (0, 100),
        (1, 140),  # 40 edge neighbours; corners are sqrt(2) away
        (1.5, 144),  # the 12x12 square
        (-1, 64),  # the 8x8 square
        (-4.5, 4),  # the central 2x2 is 5 pixels from the background
        (-5, 0),
    ],
)
def test_boundary_shift(shift, count):
    assert int(boundary_shift(square(), shift).sum()) == count


def test_boundary_shift_grows_only_outward():
    target = square().astype(bool)
    grown = boundary_shift(target, 2)
    assert (grown | target).sum() == grown.sum()  # superset
    with pytest.raises(ValueError, match="shift must be a finite"):
        boundary_shift(target, math.inf)


def test_soft_boundary_prediction_values():
    target = square()  # 10x10 square, rows/cols 5..14
    p = soft_boundary_prediction(target, width=1.0, confidence=0.9)
    sig = lambda s: 1 / (1 + math.exp(-s))  # noqa: E731
    # inner boundary pixel: s = 1 - 0.5; outer neighbour: s = 0.5 - 1; 3 pixels deep: s = 3 - 0.5
    assert p[5, 9] == pytest.approx(0.1 + 0.8 * sig(0.5), rel=1e-6)
    assert p[4, 9] == pytest.approx(0.1 + 0.8 * sig(-0.5), rel=1e-6)
    assert p[7, 9] == pytest.approx(0.1 + 0.8 * sig(2.5), rel=1e-6)
    assert ((p > 0.5) == target.astype(bool)).all()  # thresholded, it is the target
    np.testing.assert_allclose(soft_boundary_prediction(np.ones((3, 3)), confidence=0.8), 0.8)
    with pytest.raises(ValueError, match="width must be a positive"):
        soft_boundary_prediction(target, width=0)


def test_as_logits():
    logits = as_logits(np.array([[0.5, 0.75], [0.0, 1.0]]))
    assert logits.shape == (1, 1, 2, 2) and logits.dtype == torch.float32
    assert logits[0, 0, 0, 0] == 0
    assert torch.isclose(logits[0, 0, 0, 1], torch.tensor(math.log(3.0)))
    assert torch.isfinite(logits).all()
    with pytest.raises(ValueError, match="probabilities in"):
        as_logits(np.array([[1.5, 0.0]]))


def test_loss_grid_matches_hand_computed_bce():
    target = square()
    grid = loss_grid({"bce": bce}, target, [0.0, 0.36], [0.0, 0.44], confidence=0.8)["bce"]
    assert grid.shape == (2, 2)
    # mean BCE = ((N - E) * -log(0.8) + E * -log(0.2)) / N with N = 400 and E errors
    for i, fn_errors in enumerate((0, 36)):
        for j, fp_errors in enumerate((0, 44)):
            errors = fn_errors + fp_errors
            expected = ((400 - errors) * -math.log(0.8) + errors * -math.log(0.2)) / 400
            assert grid[i, j] == pytest.approx(expected, rel=1e-5)


def test_evaluate_losses_shape_mismatch():
    with pytest.raises(ValueError, match="same shape"):
        evaluate_losses({"bce": bce}, np.full((4, 4), 0.5), np.zeros((4, 5)))


def test_logit_gradient_hand_computed():
    target = square(4, 2)  # 4 foreground pixels of 16
    probs = np.full((4, 4), 0.2, dtype=np.float32)
    grad = logit_gradient(bce, probs, target)
    # d mean BCE / dz = (p - y) / N
    assert grad.shape == (4, 4)
    assert grad[0, 0] == pytest.approx(0.2 / 16, rel=1e-5)
    assert grad[1, 1] == pytest.approx(-0.8 / 16, rel=1e-5)


def _registered_losses() -> list[str]:
    from napari_segloss.losses import list_losses

    return list_losses()


@pytest.mark.parametrize("name", _registered_losses())
def test_every_loss_pushes_controlled_errors_the_right_way(name):
    """With the package losses: a missed object pixel gets a negative logit gradient (raise it),
    a false positive a positive one — the sign the prediction-space notebook relies on."""
    from napari_segloss.losses import get_loss

    target = disk_target((24, 24), 0.15)
    probs = controlled_prediction(target, fn_fraction=0.2, fp_fraction=0.2, confidence=0.8)
    grad = logit_gradient(get_loss(name), probs, target)
    assert (grad[target & (probs < 0.5)] < 0).all()
    assert (grad[~target & (probs > 0.5)] > 0).all()


# ---------------------------------------------------------------- parameter space
class TinyNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.head = nn.Conv2d(4, 1, 1)
        self.fc = nn.Linear(5, 6)  # unused in forward; checks 2D weights

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.bn(self.conv(x))))


@pytest.mark.parametrize("ignore_bias_bn", [True, False])
def test_filter_normalized_direction_norms(ignore_bias_bn):
    torch.manual_seed(0)
    model = TinyNet()
    gen = torch.Generator().manual_seed(1)
    direction = filter_normalized_direction(model, generator=gen, ignore_bias_bn=ignore_bias_bn)
    params = list(model.parameters())
    assert len(direction) == len(params)
    for d, w in zip(direction, params, strict=True):
        assert d.shape == w.shape and d.dtype == w.dtype
        if w.dim() > 1:
            # every filter (slice along dim 0) has the norm of the weights' filter
            torch.testing.assert_close(
                d.flatten(1).norm(dim=1), w.detach().flatten(1).norm(dim=1), rtol=1e-5, atol=1e-6
            )
            assert not torch.allclose(d, w.detach())  # a random direction, not the weights
        elif ignore_bias_bn:
            assert torch.count_nonzero(d) == 0
        else:
            torch.testing.assert_close(d.norm(), w.detach().norm(), rtol=1e-5, atol=1e-6)


def test_random_directions_seeded():
    model = TinyNet()
    a = random_directions(model, seed=4)
    b = random_directions(model, seed=4)
    c = random_directions(model, seed=5)
    assert len(a) == 2
    for x, y in zip(a[0], b[0], strict=True):
        assert torch.equal(x, y)
    assert not torch.equal(a[0][0], a[1][0])  # two independent directions
    assert not torch.equal(a[0][0], c[0][0])
    with pytest.raises(ValueError, match="n must be a positive"):
        random_directions(model, n=0)


def test_loss_surface_linear_model_hand_computed():
    model = nn.Conv2d(1, 1, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(2.0)
    model.train()
    d1, d2 = random_directions(model, seed=0)
    # one filter of norm 2: each direction is +-2
    assert abs(float(d1[0])) == pytest.approx(2.0) and abs(float(d2[0])) == pytest.approx(2.0)
    images = torch.arange(12, dtype=torch.float32).reshape(3, 1, 2, 2)  # mean 5.5
    targets = torch.zeros(3, 2, 2, dtype=torch.long)
    alphas, betas = [-1.0, 0.0, 0.5], [0.0, 1.0]
    surface = loss_surface(
        model,
        {"mean_logit": lambda logits, _t: logits.mean()},
        images,
        targets,
        (d1, d2),
        alphas,
        betas,
        batch_size=2,  # 2 + 1 images: checks the size-weighted mean over batches
    )
    values = surface.values["mean_logit"]
    assert values.shape == (2, 3)
    for i, b in enumerate(betas):
        for j, a in enumerate(alphas):
            w = 2.0 + a * float(d1[0]) + b * float(d2[0])
            assert values[i, j] == pytest.approx(w * 5.5, rel=1e-6)
    # weights and mode restored
    assert float(model.weight.detach()) == 2.0 and model.training


def test_loss_surface_centre_equals_model_loss():
    torch.manual_seed(0)
    model = TinyNet().eval()
    images = torch.randn(2, 3, 8, 8)
    targets = (torch.rand(2, 8, 8) > 0.5).long()
    with torch.no_grad():
        expected = float(bce(model(images), targets))
    dirs = random_directions(model, seed=0)
    surface = loss_surface(model, {"bce": bce}, images, targets, dirs, [-0.5, 0.0, 0.5])
    assert surface.values["bce"][1, 1] == pytest.approx(expected, rel=1e-5)
    assert surface.values["bce"][0, 0] != pytest.approx(expected, rel=1e-3)
    assert not model.training


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"directions": "one"}, "exactly 2 directions"),
        ({"losses": {}}, "at least one loss"),
        ({"alphas": []}, "non-empty 1D"),
        ({"batch_size": 0}, "batch_size must be >= 1"),
        ({"targets": torch.zeros(3, 4, 4, dtype=torch.long)}, "same non-zero number"),
    ],
)
def test_loss_surface_rejects_bad_arguments(kwargs, message):
    model = nn.Conv2d(1, 1, 1)
    args = {
        "losses": {"bce": bce},
        "images": torch.zeros(2, 1, 4, 4),
        "targets": torch.zeros(2, 4, 4, dtype=torch.long),
        "directions": random_directions(model),
        "alphas": [0.0, 1.0],
    }
    if kwargs.get("directions") == "one":
        kwargs = {"directions": args["directions"][:1]}
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        loss_surface(model, **args)


def test_loss_surface_rejects_mismatched_directions():
    model = nn.Conv2d(1, 1, 1)
    other = random_directions(nn.Conv2d(2, 1, 1))
    with pytest.raises(ValueError, match=r"directions\[0\] must match model.parameters"):
        loss_surface(
            model, {"bce": bce}, torch.zeros(1, 1, 2, 2), torch.zeros(1, 2, 2).long(), other, [0]
        )


def test_loss_surface_restores_each_submodules_mode():
    # a fine-tuning model keeps its batch norm frozen (eval) inside a model in train mode;
    # model.train(True) at the end switched that batch norm back to train mode
    torch.manual_seed(0)
    model = TinyNet().train()
    model.bn.eval()
    images = torch.randn(2, 3, 8, 8)
    targets = (torch.rand(2, 8, 8) > 0.5).long()
    dirs = random_directions(model, seed=0)
    loss_surface(model, {"bce": bce}, images, targets, dirs, [0.0, 0.5])
    assert model.training and model.conv.training and not model.bn.training

    def failing(logits, target):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        loss_surface(model, {"bad": failing}, images, targets, dirs, [0.0])
    assert model.training and model.conv.training and not model.bn.training


def test_hard_probabilities_give_the_loss_explorer_values() -> None:
    """A 0/1 prediction: the 1e-6 clamp of as_logits gave PM Dice (gamma 0.5) 0.9855 where the
    Loss Explorer, from the same probabilities, gives the exact 1.0."""
    from napari_segloss.losses import get_loss
    from napari_segloss.maps import probabilities_to_logits

    target = np.zeros((15, 17), dtype=np.int64)
    target[4:11, 5:12] = 1
    pred = np.zeros((15, 17), dtype=np.float32)
    pred[5:10, 6:11] = 1.0  # eroded by one pixel
    logits = as_logits(pred)
    explorer_logits = probabilities_to_logits(torch.from_numpy(pred)[None, None])
    assert torch.equal(logits, explorer_logits)
    loss = get_loss("pm_dice", gamma=0.5)
    y = torch.from_numpy(target)[None]
    assert float(loss(logits, y)) == pytest.approx(float(loss(explorer_logits, y)))
    clamped = float(loss(as_logits(pred, eps=1e-6), y))
    assert abs(clamped - float(loss(logits, y))) > 1e-3  # what the old floor changed

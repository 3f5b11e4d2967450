"""PM-Dice modulating maps and per-pixel loss contribution maps."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from napari_segloss.losses import get_loss, list_losses
from napari_segloss.maps import contribution_map, error_map, modulating_map

# ---------------------------------------------------------------- modulating_map


def test_modulating_map_binary_hand_computed():
    p = torch.tensor([[[[0.9, 0.2], [0.5, 0.0]]]])  # (1, 1, 2, 2) foreground probability
    y = torch.tensor([[[1, 0], [1, 0]]])
    m = modulating_map(p, y, gamma=1.0)
    assert m.shape == (1, 2, 2, 2)  # binary -> (bg, fg), as the losses expand it
    expected_fg = torch.tensor([[0.1, 0.2], [0.5, 0.0]])
    torch.testing.assert_close(m[0, 1], expected_fg)
    torch.testing.assert_close(m[0, 0], expected_fg)  # |(1-y) - (1-p)| = |y - p|
    m2 = modulating_map(p, y, gamma=[0.0, 2.0])
    torch.testing.assert_close(m2[0, 0], torch.ones(2, 2))  # 0 ** 0 == 1: plain Dice
    torch.testing.assert_close(m2[0, 1], expected_fg**2)


def test_modulating_map_multiclass_labels_and_onehot():
    p = torch.tensor([[0.7, 0.1], [0.2, 0.3], [0.1, 0.6]]).view(1, 3, 1, 2)
    labels = torch.tensor([[[0, 2]]])
    m = modulating_map(p, labels, gamma=2.0)
    expected = torch.tensor([[0.3, 0.1], [0.2, 0.3], [0.1, 0.4]]).view(1, 3, 1, 2) ** 2
    torch.testing.assert_close(m, expected)
    onehot = torch.nn.functional.one_hot(labels, 3).permute(0, 3, 1, 2)
    torch.testing.assert_close(modulating_map(p, onehot, gamma=2.0), expected)
    torch.testing.assert_close(modulating_map(p, labels[:, None], gamma=2.0), expected)


@pytest.mark.parametrize("c", [1, 3])
@pytest.mark.parametrize("gamma", [0.0, 0.5, 1.0, 2.0])
@pytest.mark.parametrize("spatial", [(6, 5), (3, 4, 5)])
def test_modulating_map_matches_pm_dice_loss(c, gamma, spatial):
    torch.manual_seed(0)
    logits = torch.randn(2, c, *spatial)
    target = torch.randint(0, max(c, 2), (2, *spatial))
    loss = get_loss("pm_dice", gamma=gamma)
    probs = torch.sigmoid(logits) if c == 1 else torch.softmax(logits, 1)
    ref = loss.modulating_term(loss.prepare(logits, target))
    torch.testing.assert_close(modulating_map(probs, target, gamma), ref)


def test_modulating_map_confident_pixels_match_float64():
    # |y - p| of a confident, right prediction is tiny but not 0: the binary background channel
    # used to be |(1 - y) - (1 - p)| with 1 - p rounded (0 instead of 1e-10), and float64
    # probabilities were rounded to float32 before the subtraction (p = 1 - 1e-12 -> m = 0)
    x = torch.tensor([[[[-23.0, 23.0, -5.0, 4.0]]]], dtype=torch.float64)
    y = torch.tensor([[[0, 1, 0, 0]]])
    err = (y[:, None].double() - torch.sigmoid(x)).abs()  # float64 reference, (1, 1, 1, 4)
    for gamma in (0.5, 1.0, 2.0):
        expected = (err**gamma).expand(1, 2, 1, 4).float()
        torch.testing.assert_close(
            modulating_map(torch.sigmoid(x), y, gamma), expected, rtol=1e-6, atol=0
        )
        # float32 probabilities: the background channel is still exact (the foreground's
        # p = 1 - 1e-10 is 1 in float32 already: that pixel is left out)
        m32 = modulating_map(torch.sigmoid(x).float(), y, gamma)
        keep = [0, 2, 3]
        torch.testing.assert_close(m32[..., keep], expected[..., keep], rtol=1e-6, atol=0)
    logits = torch.tensor([30.0, 0.0, -2.0], dtype=torch.float64).view(1, 3, 1, 1)
    probs = torch.softmax(logits, 1)
    one_hot = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64).view(1, 3, 1, 1)
    expected = (one_hot - probs).abs()
    # 1 - p_0 = 1.1e-13, not 0: the other classes' share (the float64 subtraction itself is
    # only good to 1e-3 of it)
    expected[:, 0] = probs[:, 1:].sum(1)
    expected = expected.float()
    assert float(expected[0, 0]) > 0
    torch.testing.assert_close(
        modulating_map(probs, torch.zeros(1, 1, 1, dtype=torch.long), 1.0),
        expected,
        rtol=1e-6,
        atol=0,
    )


@settings(max_examples=25, deadline=None)
@given(
    gamma=st.floats(0.0, 5.0),
    seed=st.integers(0, 10_000),
)
def test_modulating_map_properties(gamma, seed):
    g = torch.Generator().manual_seed(seed)
    probs = torch.softmax(torch.randn(1, 3, 4, 4, generator=g), 1)
    target = torch.randint(0, 3, (1, 4, 4), generator=g)
    m = modulating_map(probs, target, gamma)
    assert m.shape == (1, 3, 4, 4) and not m.requires_grad
    assert bool(((m >= 0) & (m <= 1)).all())
    # larger gamma focuses on harder pixels: m never grows with gamma (errors are <= 1)
    assert bool((modulating_map(probs, target, gamma + 1.0) <= m + 1e-7).all())


@pytest.mark.parametrize(
    ("probs", "target", "gamma", "match"),
    [
        (torch.rand(1, 2, 3, 3), torch.zeros(1, 3, 4, dtype=torch.long), 1.0, "target"),
        (torch.rand(1, 2, 3, 3) + 1.0, torch.zeros(1, 3, 3, dtype=torch.long), 1.0, "probs"),
        (torch.rand(1, 2, 3, 3), torch.full((1, 3, 3), 2), 1.0, "labels must be in"),
        (torch.rand(1, 3, 3, 3), torch.zeros(1, 3, 3, dtype=torch.long), -1.0, "gamma"),
        (torch.rand(1, 3, 3, 3), torch.zeros(1, 3, 3, dtype=torch.long), [1.0, 2.0], "gamma"),
        (torch.rand(1, 1, 3, 3), torch.full((1, 3, 3), 2.0), 1.0, "binary targets"),
        (torch.rand(3, 3), torch.zeros(3, 3), 1.0, "probs"),
        (torch.rand(1, 2, 3, 3), torch.full((1, 3, 3), 0.5), 1.0, "integer class indices"),
    ],
)
def test_modulating_map_bad_input(probs, target, gamma, match):
    with pytest.raises(ValueError, match=match):
        modulating_map(probs, target, gamma)


# ---------------------------------------------------------------- contribution_map


def _inputs(c: int, spatial: tuple[int, ...], seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(2, c, *spatial, generator=g)
    target = torch.randint(0, max(c, 2), (2, *spatial), generator=g)
    return logits, target


@pytest.mark.parametrize("name", list_losses())
@pytest.mark.parametrize(("c", "spatial"), [(1, (8, 8)), (3, (3, 4, 4))])  # binary 2D, 3-class 3D
def test_every_loss_gives_maps(name, c, spatial):
    logits, target = _inputs(c, spatial)
    before = logits.clone()
    for kind in ("gradient", "value"):
        m = contribution_map(name, logits, target, kind=kind)
        assert m.shape == (2, *spatial), (name, kind)
        assert m.dtype == torch.float32 and not m.requires_grad
        assert bool(torch.isfinite(m).all()), (name, kind)
    # the gradient map is the L1 norm over channels of the autograd gradient of the summed
    # per-image losses (so an image's map does not depend on its batch mates)
    x = logits.clone().requires_grad_(True)
    get_loss(name, reduction="none")(x, target).sum().backward()
    torch.testing.assert_close(
        contribution_map(name, logits, target), x.grad.abs().sum(1), rtol=1e-5, atol=1e-7
    )
    torch.testing.assert_close(logits, before)  # the caller's logits are not modified


def test_gradient_map_hand_computed_ce():
    # CE per image = mean over pixels of -log softmax; d/dlogits = (p - y) / N
    logits = torch.tensor([[[[2.0, 0.0]], [[0.0, 1.0]]]])  # (1, 2, 1, 2)
    target = torch.tensor([[[0, 0]]])
    p = torch.softmax(logits, 1)
    expected = ((p[0, 0] - 1).abs() + p[0, 1].abs()) / 2
    torch.testing.assert_close(contribution_map("ce", logits, target)[0], expected)


def test_gradient_map_does_not_depend_on_batch_or_reduction():
    logits, target = _inputs(3, (6, 6))
    alone = contribution_map("pm_dice", logits[:1], target[:1])
    in_batch = contribution_map("pm_dice", logits, target)[:1]
    torch.testing.assert_close(alone, in_batch)
    module_mean = get_loss("pm_dice")  # reduction="mean": rescaled by the batch size
    torch.testing.assert_close(
        contribution_map(module_mean, logits, target), contribution_map("pm_dice", logits, target)
    )


def test_value_map_pixel_loss_and_errors():
    logits, target = _inputs(3, (5, 5))
    ce = contribution_map("ce", logits, target, kind="value")
    expected = -torch.log_softmax(logits, 1).gather(1, target[:, None])[:, 0]
    torch.testing.assert_close(ce, expected)
    # region loss: sum_c |y - p| / 2
    p = torch.softmax(logits, 1)
    y = torch.nn.functional.one_hot(target, 3).permute(0, 3, 1, 2).float()
    err = (y - p).abs().sum(1) / 2
    torch.testing.assert_close(contribution_map("dice", logits, target, kind="value"), err)
    # pm_dice: the modulated error sum_c |y - p|^(1 + gamma) / 2
    pm = contribution_map("pm_dice", logits, target, kind="value", gamma=2.0)
    torch.testing.assert_close(pm, ((y - p).abs() ** 3).sum(1) / 2)
    # compound: weighted sum of the components' maps
    both = contribution_map("ce+dice", logits, target, kind="value", weights=(2.0, 0.5))
    torch.testing.assert_close(both, 2.0 * expected + 0.5 * err)


def test_value_map_binary_is_absolute_error():
    logits = torch.tensor([[[[3.0, -1.0, 0.0]]]])
    target = torch.tensor([[[1, 1, 0]]])
    p = torch.sigmoid(logits)[0, 0]
    torch.testing.assert_close(
        error_map(get_loss("dice"), logits, target)[0], (target[0] - p).abs()
    )


def test_ignore_index_zeroes_maps():
    logits, target = _inputs(3, (5, 5))
    target[:, 0, :] = 255
    for kind in ("gradient", "value"):
        for name in ("ce", "dice", "pm_dice"):
            m = contribution_map(name, logits, target, kind=kind, ignore_index=255)
            assert bool((m[:, 0, :] == 0).all()), (name, kind)
            assert bool((m[:, 1:, :] > 0).any())


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"kind": "hessian"}, "kind"),
        ({"loss": "no_such_loss"}, "unknown loss"),
        ({"loss": 3}, "loss"),
        ({"logits": torch.zeros(2, 3, dtype=torch.long)}, "logits"),
        ({"gamma": 2.0, "loss": get_loss("pm_dice")}, "only accepted with a loss name"),
    ],
)
def test_contribution_map_bad_input(kwargs, match):
    logits, target = _inputs(3, (4, 4))
    args = {"loss": "pm_dice", "logits": logits, "target": target} | kwargs
    with pytest.raises(ValueError, match=match):
        contribution_map(**args)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("name", ["dice", "pm_dice", "tversky", "generalized_dice", "wsdice"])
def test_gradient_map_of_a_batch_dice_module_counts_the_batch_loss_once(
    name: str, reduction: str
) -> None:
    # a get_loss module with reduction="mean" used to be rescaled by B, which for a
    # batch_dice loss (one value per batch) made its map B = 3 times the map of the name
    g = torch.Generator().manual_seed(4)
    x = torch.randn(3, 3, 5, 4, generator=g)
    y = torch.randint(0, 3, (3, 5, 4), generator=g)
    xx = x.clone().requires_grad_(True)
    get_loss(name, batch_dice=True)(xx, y).backward()  # the batch loss itself
    assert xx.grad is not None
    expected = xx.grad.abs().sum(1)
    module = get_loss(name, batch_dice=True, reduction=reduction)
    torch.testing.assert_close(contribution_map(module, x, y), expected)
    torch.testing.assert_close(contribution_map(name, x, y, batch_dice=True), expected)
    assert module.reduction == reduction  # the caller's module is left as it was


def test_value_map_refuses_a_loss_it_cannot_read():
    # a torch CrossEntropyLoss is pixel-separable, but its "value" map was the error map
    # sum_c |y - p| / 2 (0.43 where its per-pixel CE is 0.56), with nothing saying so
    logits, target = _inputs(3, (4, 4))
    torch_ce = torch.nn.CrossEntropyLoss()
    with pytest.raises(ValueError, match=r'kind="value" needs a loss from get_loss'):
        contribution_map(torch_ce, logits, target, kind="value")
    # the gradient map works for any module: CE's d/dlogits = (p - y) / N
    p = torch.softmax(logits, 1)
    y = torch.nn.functional.one_hot(target, 3).permute(0, 3, 1, 2).float()
    expected = (p - y).abs().sum(1) / target[0].numel()
    torch.testing.assert_close(contribution_map(torch_ce, logits, target), expected)


def test_value_map_of_region_losses_is_the_error_whatever_their_settings():
    # as documented: a region loss's value map is error_map, the same for every region loss
    # but pm_dice (tversky's alpha/beta or the class weights of generalized_dice do not enter)
    logits, target = _inputs(3, (5, 5))
    p = torch.softmax(logits, 1)
    y = torch.nn.functional.one_hot(target, 3).permute(0, 3, 1, 2).float()
    err = (y - p).abs().sum(1) / 2
    for name, params in [("tversky", {"alpha": 0.9, "beta": 0.1}), ("generalized_dice", {})]:
        m = contribution_map(name, logits, target, kind="value", **params)
        torch.testing.assert_close(m, err)


def _pm_dice_reference(logits: torch.Tensor, target: torch.Tensor, gamma: float) -> torch.Tensor:
    """Sum over images of eq. 5 written out in float64, m = |y - p|^gamma held constant."""
    x = logits.double()
    if x.shape[1] == 1:  # binary: [background, foreground]
        p = torch.cat([torch.sigmoid(-x), torch.sigmoid(x)], 1)
        y = torch.stack([1 - target, target], 1).double()
    else:
        p = torch.softmax(x, 1)
        y = torch.nn.functional.one_hot(target, x.shape[1]).movedim(-1, 1).double()
    m = (y - p).detach().abs() ** gamma
    dims = tuple(range(2, x.ndim))
    score = (2 * (m * y * p).sum(dims) + 1e-6) / ((m * (y**2 + p**2)).sum(dims) + 1e-6)
    present = (y.sum(dims) > 0).double()  # eq. 4 text: the classes present in the image
    return (1 - (score * present).sum(1) / present.sum(1)).sum()


@pytest.mark.parametrize(("c", "spatial"), [(1, (7, 6)), (3, (6, 5)), (4, (3, 4, 5))])
@pytest.mark.parametrize("gamma", [0.0, 1.0, 2.0])
def test_gradient_map_matches_pm_dice_written_out(c, spatial, gamma):
    # independent of the losses' code (their hand-written backward of the label sums): the
    # map is sum_c |d eq. 5 / d logits| with m held constant, as the paper trains it
    g = torch.Generator().manual_seed(c)
    logits = 3 * torch.randn(2, c, *spatial, generator=g)
    target = torch.randint(0, max(c, 2), (2, *spatial), generator=g)
    x = logits.double().requires_grad_(True)
    (grad,) = torch.autograd.grad(_pm_dice_reference(x, target, gamma), x)
    expected = grad.abs().sum(1).float()
    name = "dice" if gamma == 0 else "pm_dice"
    params = {} if gamma == 0 else {"gamma": gamma}
    got = contribution_map(name, logits, target, **params)
    torch.testing.assert_close(got, expected, rtol=2e-4, atol=1e-7)


@pytest.mark.parametrize(("c", "spatial"), [(1, (7, 6)), (3, (6, 5)), (4, (3, 4, 5))])
@pytest.mark.parametrize("gamma", [0.0, 2.0])
def test_gradient_map_matches_focal_written_out_with_ignored_pixels(c, spatial, gamma):
    # eq. 3 per image: -1/N_valid sum_i (1 - p_t)^gamma log p_t, in float64 with autograd
    g = torch.Generator().manual_seed(10 + c)
    logits = 3 * torch.randn(2, c, *spatial, generator=g)
    target = torch.randint(0, max(c, 2), (2, *spatial), generator=g)
    target[0, 0] = 255
    valid = (target != 255).double()
    t = target.clamp_max(max(c, 2) - 1)
    x = logits.double().requires_grad_(True)
    if c == 1:
        p_t = torch.sigmoid(torch.where(t == 1, x[:, 0], -x[:, 0]))
    else:
        p_t = torch.softmax(x, 1).gather(1, t[:, None])[:, 0]
    pixel = -((1 - p_t) ** gamma) * torch.log(p_t) * valid
    dims = tuple(range(1, pixel.ndim))
    (grad,) = torch.autograd.grad((pixel.sum(dims) / valid.sum(dims)).sum(), x)
    expected = grad.abs().sum(1).float()
    got = contribution_map("focal", logits, target, gamma=gamma, ignore_index=255)
    torch.testing.assert_close(got, expected, rtol=2e-4, atol=1e-7)
    assert bool((got[0, 0] == 0).all())


# per-image term of a mixture, from an independent loss (weight, name, params)
_PER_IMAGE_TERM = {
    "ce+dice": (1.0, "ce", {}),
    "ce+pm_dice": (1.0, "ce", {}),
    "combo": (0.5, "combo", {"alpha": 1.0}),
    "focal_log_wsdice": (7.0, "focal", {"gamma": 3.5, "alpha": 0.3}),
}


@pytest.mark.parametrize("name", sorted(_PER_IMAGE_TERM))
def test_gradient_map_of_a_batch_dice_mixture_counts_the_batch_term_once(name: str) -> None:
    # the map differentiates the per-image terms summed over the batch plus the batch term
    # once; the (B,) vector of "none", summed, counted the batch term B = 3 times
    g = torch.Generator().manual_seed(6)
    y = torch.randint(0, 3, (3, 5, 4), generator=g)
    # logits that lean towards the labels: WSDice > eps, so -log(WSDice) has a gradient
    x = torch.randn(3, 3, 5, 4, generator=g) + 2.0 * F.one_hot(y, 3).movedim(-1, 1)
    weight, term, params = _PER_IMAGE_TERM[name]
    xx = x.clone().requires_grad_(True)
    per_image = weight * get_loss(term, reduction="none", **params)(xx, y)
    batch_term = get_loss(name, batch_dice=True)(xx, y) - per_image.mean()
    (per_image.sum() + batch_term).backward()
    assert xx.grad is not None
    expected = xx.grad.abs().sum(1)
    torch.testing.assert_close(contribution_map(name, x, y, batch_dice=True), expected)
    module = get_loss(name, batch_dice=True, reduction="none")
    torch.testing.assert_close(contribution_map(module, x, y), expected)


def test_modulating_map_ignore_index_hand_computed():
    # multiclass labels: the ignored pixel (255) gets m = 0 in every channel, as the losses
    # leave it out and contribution_map gives it 0
    p = torch.tensor([[0.7, 0.1], [0.2, 0.3], [0.1, 0.6]]).view(1, 3, 1, 2)
    labels = torch.tensor([[[0, 255]]])
    m = modulating_map(p, labels, gamma=2.0, ignore_index=255)
    expected = torch.tensor([[0.3, 0.0], [0.2, 0.0], [0.1, 0.0]]).view(1, 3, 1, 2) ** 2
    torch.testing.assert_close(m, expected)
    assert float(contribution_map("pm_dice", p.log(), labels, ignore_index=255)[0, 0, 1]) == 0.0
    # binary: the pixel is 0 in both expanded channels
    pb = torch.tensor([[[[0.9, 0.2]]]])
    mb = modulating_map(pb, torch.tensor([[[1, 255]]]), gamma=1.0, ignore_index=255)
    torch.testing.assert_close(mb, torch.tensor([[0.1, 0.0], [0.1, 0.0]]).view(1, 2, 1, 2))
    # one-hot/soft targets: the entries that hold ignore_index
    onehot = torch.tensor([[1.0, 255.0], [0.0, 255.0], [0.0, 255.0]]).view(1, 3, 1, 2)
    torch.testing.assert_close(modulating_map(p, onehot, 2.0, ignore_index=255), expected)
    with pytest.raises(ValueError, match="ignore_index=1 cannot mark"):
        modulating_map(p, onehot, ignore_index=1)
    with pytest.raises(ValueError, match="ignore_index"):
        modulating_map(p, labels, ignore_index=2.5)
    with pytest.raises(ValueError, match="labels must be in"):  # still checked without it
        modulating_map(p, labels)


def test_error_map_multilabel_leaves_ignored_entries_out():
    # one pixel, 2 labels: label 0 y=1 p=0.8 (error 0.2), label 1 ignored (p=0.9, target
    # read as 0 would add an error of 0.9): the mean over the valid labels is 0.2
    x = torch.logit(torch.tensor([0.8, 0.9])).view(1, 2, 1, 1)
    t = torch.tensor([1.0, 255.0]).view(1, 2, 1, 1)
    loss = get_loss("dice", mode="multilabel", ignore_index=255)
    torch.testing.assert_close(error_map(loss, x, t), torch.tensor([[[0.2]]]))


@pytest.mark.parametrize("loss", ["pm_dice", "pmdice", 3])
def test_error_map_refuses_what_is_not_a_loss(loss: object) -> None:
    """A name returned the plain Dice error map: PM Dice's modulating term silently dropped."""
    logits, target = torch.randn(1, 2, 8, 8), torch.randint(0, 2, (1, 8, 8))
    with pytest.raises(ValueError, match="loss: expected a loss module such as get_loss"):
        error_map(loss, logits, target)  # type: ignore[arg-type]


def test_modulating_map_takes_the_softmax_complement_from_the_other_classes():
    """A right pixel at logit margin 35 over 3 classes: p_0 is 1.0 in float32, so |y - p|
    by subtraction gave m = 0 where the loss's own m is (2e-35)^0.1 = 0.032."""
    logits = torch.tensor([35.0, 0.0, 0.0]).view(1, 3, 1, 1)
    target = torch.zeros(1, 1, 1, dtype=torch.long)
    loss = get_loss("pm_dice", gamma=0.1)
    m = modulating_map(torch.softmax(logits, 1), target, 0.1)
    exact = (2.0 * math.exp(-35.0)) ** 0.1
    assert float(m[0, 0]) == pytest.approx(exact, rel=1e-5)
    torch.testing.assert_close(m, loss.modulating_term(loss.prepare(logits, target)))
    # probabilities that are not a softmax output keep |y - p| as given
    loose = torch.tensor([0.5, 0.4, 0.4]).view(1, 3, 1, 1)
    torch.testing.assert_close(
        modulating_map(loose, target, 1.0)[0, :, 0, 0], torch.tensor([0.5, 0.4, 0.4])
    )


def test_modulating_map_is_exact_per_pixel_within_the_explorers_tolerance():
    """A pixel summing to 1.003 (within the Loss Explorer's tolerance) switched every pixel to
    the subtraction: a confident right pixel's m was 0 where the loss's is 1.4e-4."""
    from napari_segloss.explorer import probabilities_to_logits

    probs = torch.tensor([[1.0, 1e-8, 1e-8], [0.5, 0.3, 0.203]]).T.reshape(1, 3, 1, 2)
    target = torch.tensor([[[0, 1]]])
    m = modulating_map(probs, target, 0.5)
    loss = get_loss("pm_dice", gamma=0.5)
    want = loss.modulating_term(loss.prepare(probabilities_to_logits(probs), target))
    assert float(m[0, 0, 0, 0]) == pytest.approx(math.sqrt(2e-8), rel=1e-3)
    torch.testing.assert_close(m, want, rtol=1e-5, atol=1e-7)

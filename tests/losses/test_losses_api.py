"""Registry, compounds, argument validation, bad inputs and the no-sync guarantee."""

from __future__ import annotations

import math

import pytest
import torch

from napari_segloss.losses import CompoundLoss, PixelLoss, get_loss, list_losses

DESIGN_NAMES = [
    "ce", "focal", "topk_ce", "dice", "generalized_dice", "log_dice", "focal_dice",
    "focal_dice_zhao", "topk_dice", "pm_dice", "wsdice", "tversky", "focal_tversky",
    "cosine_tversky", "combo", "mixed_focal", "unified_focal", "asymmetric_unified_focal",
    "focal_log_wsdice", "ce+dice", "focal+dice", "topk_ce+dice", "ce+topk_dice",
    "topk_ce+topk_dice", "ce+pm_dice", "focal+pm_dice",
]  # fmt: skip


def xy(c: int = 3, b: int = 2):
    g = torch.Generator().manual_seed(0)
    return torch.randn(b, c, 4, 4, generator=g), torch.randint(0, max(c, 2), (b, 4, 4), generator=g)


def test_every_design_name_is_listed_and_builds() -> None:
    names = list_losses()
    x, y = xy()
    for n in DESIGN_NAMES:
        assert n in names
        assert torch.isfinite(get_loss(n)(x, y))


def test_aliases_and_defaults() -> None:
    assert type(get_loss("bce")) is type(get_loss("ce"))
    assert get_loss("pm_dice").gamma == 1.0
    assert get_loss("pm_dice").eps == 1e-6
    assert get_loss("focal").gamma == 2.0
    assert get_loss("topk_ce").k == 10.0
    assert get_loss("log_dice").gamma == 0.3
    assert get_loss("wsdice").v2 == pytest.approx(0.85)
    u = get_loss("unified_focal")
    assert (u.weight, u.delta, u.gamma) == (0.5, 0.6, 0.5)


def test_compound_parts_weights_and_params() -> None:
    x, y = xy()
    y[0, 0, 0] = 255
    loss = get_loss("ce+pm_dice", weights=(0.5, 2.0), pm_dice={"gamma": 2.0}, ignore_index=255)
    assert isinstance(loss, CompoundLoss)
    assert loss.weights == (0.5, 2.0)
    ce, pm = loss.components
    assert pm.gamma == 2.0 and pm.ignore_index == 255 and ce.ignore_index == 255
    expected = 0.5 * get_loss("ce", ignore_index=255)(x, y) + 2.0 * get_loss(
        "pm_dice", gamma=2.0, ignore_index=255
    )(x, y)
    torch.testing.assert_close(loss(x, y), expected)
    # default weights are 1.0 (plain sums, PM-Dice tables); three components work
    x, y = xy()
    tri = get_loss("ce+dice+tversky", reduction="none")
    ref = get_loss("ce", reduction="none")(x, y) + get_loss("dice", reduction="none")(x, y)
    ref = ref + get_loss("tversky", reduction="none")(x, y)
    torch.testing.assert_close(tri(x, y), ref)
    # shared params go only to components that accept them (ce has no include_background)
    comp = get_loss("ce+dice", include_background=False)
    assert comp.components[1].include_background is False


@pytest.mark.parametrize(
    ("name", "params", "match"),
    [
        ("dcie", {}, "did you mean 'dice'"),
        ("pm_dcie", {}, "pm_dice"),
        ("ce+dcie", {}, "dice"),
        ("dice", {"gama": 1.0}, "gama.*accepted parameters"),
        ("pm_dice", {"gamma": -1.0}, "gamma must be in"),
        ("focal", {"alpha": 1.5}, "alpha must be in"),
        ("topk_ce", {"k": 0}, r"k must be in \(0"),
        ("topk_ce", {"normalize": "x"}, "normalize must be one of"),
        ("dice", {"reduction": "avg"}, "reduction must be one of"),
        ("dice", {"mode": "soft"}, "mode must be one of"),
        ("dice", {"batch_dice": 1}, "batch_dice must be a bool"),
        ("wsdice", {"v1": 0.7}, r"v1 must be in \[0, 0.5\]"),
        ("focal_dice", {"beta": 0.5}, "beta must be in"),
        ("unified_focal", {"gamma": 2.0}, "gamma must be in"),
        ("pm_dice", {"gamma": float("inf")}, "gamma must be a finite number, got inf"),
        ("focal", {"gamma": float("nan")}, "gamma must be a finite number, got nan"),
        ("ce+dice", {"weights": (1.0,)}, "one value per component"),
        ("ce+dice", {"gamma": 1.0}, "accepted by none"),
        ("ce+dice", {"dice": {"gamma": 1.0}}, "gamma"),
        ("dice", {"weights": (1.0,)}, "only accepted by compound"),
        ("dice", {"ignore_index": 1.5}, "ignore_index must be an int"),
    ],
)
def test_bad_arguments(name: str, params: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        get_loss(name, **params)


@pytest.mark.parametrize(
    ("values", "n_bad"),
    [([float("-inf")], 1), ([float("inf"), float("-inf")], 2), ([float("nan"), 1e38], 1)],
)
def test_every_kind_of_non_finite_logit_is_refused(values: list[float], n_bad: int) -> None:
    x = torch.zeros(1, 2, 2, 2)
    x.view(-1)[: len(values)] = torch.tensor(values)
    with pytest.raises(ValueError, match=f"logits must be finite, got {n_bad} NaN/Inf"):
        get_loss("pm_dice")(x, torch.zeros(1, 2, 2, dtype=torch.long))


def test_finite_logits_whose_sum_overflows_are_accepted() -> None:
    x = torch.zeros(1, 2, 2, 2)
    x[0, 0] = 3e38  # four of them: their float32 sum is inf
    assert not torch.isfinite(x.sum())
    value = get_loss("pm_dice")(x, torch.zeros(1, 2, 2, dtype=torch.long))
    assert torch.isfinite(value)


@pytest.mark.parametrize("name", ["ce", "dice", "pm_dice", "tversky", "ce+pm_dice"])
def test_bad_inputs(name: str) -> None:
    loss = get_loss(name)
    x, y = xy(3)
    with pytest.raises(ValueError, match="does not match logits"):
        loss(x, y[:, :3])  # spatial shape mismatch
    with pytest.raises(ValueError, match="does not match logits"):
        loss(x, torch.zeros(2, 4, 4, 4))  # wrong number of classes (one-hot with 4)
    with pytest.raises(ValueError, match=r"labels must be in \[0, 2\].*got values in \[3, 3\]"):
        loss(x, torch.full((2, 4, 4), 3))
    with pytest.raises(ValueError, match="labels must be in"):
        loss(x, torch.full((2, 4, 4), -1))
    bad = x.clone()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="logits must be finite, got 1 NaN/Inf"):
        loss(bad, y)
    bad[0, 0, 0, 0] = float("inf")
    with pytest.raises(ValueError, match="finite"):
        loss(bad, y)
    soft = torch.full((2, 3, 4, 4), 0.5)
    soft[0, 0, 0, 0] = 1.5
    with pytest.raises(ValueError, match=r"values must be in \[0, 1\], got values in \[0.5, 1.5\]"):
        loss(x, soft)
    with pytest.raises(ValueError, match="logits must have shape"):
        loss(x[0, 0], y[0])
    xb, yb = xy(1)
    with pytest.raises(ValueError, match=r"binary logits .* need a target of shape"):
        loss(xb, yb[:, :2])
    with pytest.raises(
        ValueError, match=r"must be in \[0, 1\] for binary .* got values in \[2, 2\]"
    ):
        loss(xb, torch.full((2, 4, 4), 2))
    with pytest.raises(ValueError, match=r"values must be in \[0, 1\], got values in \[0, 1.5\]"):
        loss(xb, torch.full((2, 4, 4), 1.5) * (torch.arange(4) > 1))


def test_mode_mismatch_and_per_class_length() -> None:
    x, y = xy(3)
    with pytest.raises(ValueError, match="mode='binary' expects logits with 1 channel"):
        get_loss("dice", mode="binary")(x, y)
    with pytest.raises(ValueError, match=r"multilabel logits .* need a target of the same shape"):
        get_loss("dice", mode="multilabel")(x, y)
    with pytest.raises(ValueError, match="gamma has 2 values but the loss sees 3 class channels"):
        get_loss("pm_dice", gamma=(1.0, 2.0))(x, y)
    xb, yb = xy(1)
    with pytest.raises(ValueError, match=r"gamma has 3 values .* 2 class channels.*gamma_BG"):
        get_loss("pm_dice", gamma=(1.0, 2.0, 3.0))(xb, yb)
    with pytest.raises(ValueError, match="alpha has 2 values"):
        get_loss("focal", alpha=(0.5, 0.5))(x, y)


def test_ignore_index_skips_label_check() -> None:
    x, y = xy(3)
    y[0, 0, 0] = 255
    with pytest.raises(ValueError, match="labels must be in"):
        get_loss("dice")(x, y)
    assert torch.isfinite(get_loss("dice", ignore_index=255)(x, y))


@pytest.fixture
def no_sync(monkeypatch):
    def boom(*args, **kwargs):
        raise AssertionError("host-device synchronisation in forward")

    for attr in ("item", "__bool__", "__int__", "__float__", "nonzero", "tolist"):
        monkeypatch.setattr(torch.Tensor, attr, boom)
    yield


@pytest.mark.parametrize("name", list_losses())
@pytest.mark.parametrize("c", [1, 3])
def test_validate_false_forward_has_no_sync(name: str, c: int, no_sync) -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, c, 4, 4, generator=g).requires_grad_(True)
    y = torch.randint(0, max(c, 2), (2, 4, 4), generator=g)
    y[0, 0, 0] = 255
    loss = get_loss(name, validate=False, ignore_index=255)
    v = loss(x, y)
    v.backward()
    # and a validated loss does synchronise (so the monkeypatch is effective)
    with pytest.raises(AssertionError, match="synchronisation"):
        get_loss(name, ignore_index=255)(x, y)


def test_pixel_loss_maps() -> None:
    x, y = xy(3)
    for name in ["ce", "focal", "topk_ce"]:
        loss = get_loss(name)
        assert isinstance(loss, PixelLoss) and loss.pixel_separable
        pm = loss.pixel_loss(x, y)
        assert pm.shape == (2, 4, 4)
        # the per-image loss is the pixel map summed over pixels divided by N (eqs. 1-3)
        torch.testing.assert_close(
            pm.flatten(1).sum(1) / 16, get_loss(name, reduction="none")(x, y)
        )
    assert not get_loss("dice").pixel_separable
    assert not hasattr(get_loss("pm_dice"), "pixel_loss")


def test_torch_compile_smoke() -> None:
    # dynamo traces validate=False losses as one graph (no data-dependent Python branches);
    # the "eager" backend keeps the test fast (no code generation)
    x, y = xy(3)
    for name, kw in [
        ("pm_dice", {}),
        ("ce+pm_dice", {}),
        ("topk_dice", {}),
        ("pm_dice", {"gamma": (0.5, 1.0, 2.0)}),
    ]:
        loss = get_loss(name, validate=False, ignore_index=255, **kw)
        compiled = torch.compile(loss, backend="eager", fullgraph=True)
        torch.testing.assert_close(compiled(x, y), loss(x, y))


def test_torch_compile_of_a_validating_loss_breaks_only_the_full_graph() -> None:
    # the README: the default checks read values back, so fullgraph=True refuses them, and
    # without it the loss compiles in pieces with the same value and checks
    x, y = xy(3)
    loss = get_loss("pm_dice")
    torch.testing.assert_close(torch.compile(loss, backend="eager")(x, y), loss(x, y))
    with pytest.raises(ValueError, match="target labels must be in"):
        torch.compile(loss, backend="eager")(x, y + 10)
    torch._dynamo.reset()  # else the pieces compiled above are reused
    with pytest.raises(torch._dynamo.exc.UserError):
        torch.compile(get_loss("pm_dice"), backend="eager", fullgraph=True)(x, y)


@pytest.mark.parametrize("name", ["pm_dice", "topk_dice", "combo"])
def test_torch_compile_traces_the_hand_written_backwards(name: str) -> None:
    # aot_eager traces forward and backward as graphs: the label split, the complements and
    # the radix top-k must trace without graph breaks and agree
    x, y = xy(3)
    loss = get_loss(name, validate=False)
    compiled = torch.compile(loss, backend="aot_eager", fullgraph=True)
    xa = x.clone().requires_grad_(True)
    xb = x.clone().requires_grad_(True)
    va, vb = compiled(xa, y), loss(xb, y)
    va.backward()
    vb.backward()
    torch.testing.assert_close(va, vb)
    torch.testing.assert_close(xa.grad, xb.grad)


def test_compound_shared_parameters_with_one_meaning_go_to_every_term() -> None:
    loss = get_loss("dice+pm_dice", eps=1e-4, include_background=False, squared=False)
    for c in loss.components:
        assert (c.eps, c.include_background, c.squared) == (1e-4, False, False)
    _, pm = get_loss("ce+pm_dice", gamma=2.0).components  # ce has no gamma: no ambiguity
    assert pm.gamma == 2.0


@pytest.mark.parametrize(("key", "value"), [("ignore_index", 255), ("mode", "multiclass")])
def test_compound_label_reading_is_set_on_the_compound_not_one_term(key: str, value: object):
    # ce alone ignoring 255 made the dice term refuse the labels: "target labels must be in
    # [0, 2] ..., got values in [0, 255]", which blamed the data
    with pytest.raises(ValueError, match=f"give {key} to the compound, not to component 'ce'"):
        get_loss("ce+dice", ce={key: value})
    loss = get_loss("ce+dice", **{key: value}, ce={key: value})  # the same: accepted
    assert all(getattr(c, key) == value for c in loss.components)


@pytest.mark.parametrize(
    ("name", "param", "term"),
    [("focal+pm_dice", "gamma", "pm_dice"), ("focal+tversky", "alpha", "tversky"),
     ("topk_ce+topk_dice", "k", "topk_dice"), ("ce+unified_focal", "weight", "unified_focal")],
)  # fmt: skip
def test_compound_parameter_with_two_meanings_must_be_given_per_term(
    name: str, param: str, term: str
) -> None:
    # focal's gamma is its focusing exponent, PM Dice's the modulating one: never both at once
    with pytest.raises(ValueError, match=f"parameter '{param}' means different things") as err:
        get_loss(name, **{param: 0.5})
    assert f"{term}={{'{param}': 0.5}}" in str(err.value)
    loss = get_loss(name, **{term: {param: 0.5}})
    assert getattr(loss.components[1], param) == 0.5
    assert getattr(loss.components[0], param) != 0.5


@pytest.mark.parametrize(
    ("name", "params"),
    [("dice", {"gama": 1.0}), ("dice", {"weights": (1.0,)}), ("ce+dice", {"gamma": 1.0})],
)
def test_parameters_no_loss_takes_raise_unknown_parameter_error(name: str, params: dict) -> None:
    # a ValueError as before; its own type lets a config layer say where the parameter came from
    from napari_segloss.losses import UnknownParameterError

    with pytest.raises(UnknownParameterError):
        get_loss(name, **params)


@pytest.mark.parametrize("name", ["dice", "pm_dice", "ce", "ce+pm_dice"])
def test_a_softmax_target_that_does_not_sum_to_one_is_refused(name: str) -> None:
    """Batch-less binary logits (1, 16, 16) with a 0/1 mask (1, 16, 16) were read as 16
    classes over 16 pixels with a 'one-hot' target: loss 0.877 instead of 0.370, no error."""
    logits = torch.randn(1, 16, 16)
    mask = torch.randint(0, 2, (1, 16, 16))
    with pytest.raises(ValueError, match="must sum to 1 over its channels at every pixel"):
        get_loss(name)(logits, mask)
    get_loss(name)(logits[None], mask)  # the batch axis added: a binary mask, accepted
    # soft targets that do sum to 1, and ignored pixels (0 in every channel), pass
    soft = torch.softmax(torch.randn(2, 3, 4, 4), 1)
    get_loss(name)(torch.randn(2, 3, 4, 4), soft)
    soft[0, :, 0, 0] = 255.0
    get_loss(name, ignore_index=255)(torch.randn(2, 3, 4, 4), soft)


def test_numpy_numbers_and_zero_d_tensors_are_numbers() -> None:
    """alpha=torch.tensor(0.25) was read as a list of one per-class value (refused only at
    the forward), and numpy numbers from arrays or configs were refused."""
    import numpy as np

    x, y = torch.randn(2, 3, 4, 4), torch.randint(0, 3, (2, 4, 4))
    want = get_loss("focal", alpha=0.25, gamma=2.0)(x, y)
    for alpha, gamma in [(torch.tensor(0.25), np.float32(2)), (np.float64(0.25), np.int64(2))]:
        assert torch.equal(get_loss("focal", alpha=alpha, gamma=gamma)(x, y), want)
    per_class = get_loss("focal", alpha=[0.2, 0.3, 0.5])(x, y)
    assert torch.equal(get_loss("focal", alpha=np.array([0.2, 0.3, 0.5]))(x, y), per_class)
    assert get_loss("ce", ignore_index=np.int64(255)).ignore_index == 255
    with pytest.raises(ValueError, match="gamma must be a real number"):
        get_loss("focal", gamma=np.bool_(True))


@pytest.mark.parametrize(
    ("weights", "message"),
    [((math.nan, 1.0), "finite"), ((math.inf, 1.0), "finite"), ((-1.0, 1.0), r"\[0, inf\]")],
)
def test_compound_weights_must_be_finite_and_not_negative(weights, message) -> None:
    """A NaN weight made the whole loss NaN with no word."""
    with pytest.raises(ValueError, match=rf"weights\[0\] must be .*{message}"):
        get_loss("ce+dice", weights=weights)


def test_a_target_that_requires_grad_is_checked_without_a_warning() -> None:
    import warnings

    x = torch.randn(2, 3, 4, 4)
    soft = torch.softmax(torch.randn(2, 3, 4, 4), 1).requires_grad_(True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        get_loss("ce")(x, soft).backward()
    assert soft.grad is not None


def test_a_misspelt_parameter_or_name_gets_a_suggestion() -> None:
    from napari_segloss.losses import UnknownLossError, UnknownParameterError

    with pytest.raises(UnknownParameterError, match=r"\['gama'\]; did you mean 'gamma'\?"):
        get_loss("pm_dice", gama=2.0)
    with pytest.raises(UnknownLossError, match="did you mean 'pm_dice'"):
        get_loss("pmdice")
    with pytest.raises(ValueError, match="did you mean 'pm_dice'"):  # still a ValueError
        get_loss("pmdice")

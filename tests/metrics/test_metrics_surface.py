"""NSD (surface Dice, PM-Dice paper eq. 6) and HD95: hand-computed values and MONAI as reference."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from napari_segloss.metrics import hausdorff_distance, surface_dice, surface_elements
from napari_segloss.metrics import surface as surface_module

monai_metrics = pytest.importorskip("monai.metrics", reason="MONAI is the NSD/HD95 reference")
# MONAI runs torch ops: one thread (tests/conftest.py) is faster on a busy shared CI machine
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _onehot(mask: np.ndarray) -> torch.Tensor:
    t = torch.from_numpy(mask.astype(np.int64))
    return torch.nn.functional.one_hot(t, 2).movedim(-1, 0)[None].float()


def monai_nsd(pred: np.ndarray, gt: np.ndarray, tol: float, spacing=None) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return monai_metrics.compute_surface_dice(
            _onehot(pred), _onehot(gt), [tol], spacing=spacing, use_subvoxels=True
        ).item()


def monai_hd95(pred: np.ndarray, gt: np.ndarray, spacing=None) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return monai_metrics.compute_hausdorff_distance(
            _onehot(pred), _onehot(gt), percentile=95, spacing=spacing
        ).item()


def ellipse(shape, center, radii) -> np.ndarray:
    grid = np.meshgrid(*[np.arange(s) for s in shape], indexing="ij")
    return sum(((g - c) / r) ** 2 for g, c, r in zip(grid, center, radii, strict=True)) <= 1.0


def pixel(shape, *idx) -> np.ndarray:
    m = np.zeros(shape, dtype=bool)
    m[idx] = True
    return m


# ---------------------------------------------------------------- hand-computed values
@pytest.mark.parametrize(
    ("tol", "spacing", "expected"),
    [
        (0.0, None, 0.0),
        (0.99, None, 0.0),
        # pred corners at column 2.5 are exactly 1 from gt corners at column 3.5: inclusive
        (1.0, None, 0.5),
        (1.9, None, 0.5),
        (2.0, None, 1.0),
        # columns 0.5 apart: the same distances halve
        (0.5, (1.0, 0.5), 0.5),
        (1.0, (1.0, 0.5), 1.0),
    ],
)
def test_two_single_pixels_hand_computed(tol, spacing, expected):
    # pred pixel (2, 2), gt pixel (2, 4): each has 4 corner surfels of equal length; per mask two
    # corners are 1 column from the other's nearest corner and two are 2 columns away.
    pred, gt = pixel((7, 7), 2, 2), pixel((7, 7), 2, 4)
    assert surface_dice(pred, gt, tol, spacing) == pytest.approx(expected, abs=1e-12)


def test_unequal_surfel_lengths_hand_computed():
    # pred = pixels (2,2),(3,2); gt = pixel (2,2); tolerance 0 (coinciding corners only).
    # pred surfels: 4 corner cuts of sqrt(2)/2 and 2 straight edges of 1 -> 2*sqrt(2) + 2
    # gt surfels: 4 corner cuts -> 2*sqrt(2), all coinciding with pred corners.
    # matched pred: the 2 upper corner cuts + the 2 straight edges = sqrt(2) + 2
    pred = np.zeros((6, 5), bool)
    pred[2:4, 2] = True
    gt = pixel((6, 5), 2, 2)
    expected = (2 * math.sqrt(2) + math.sqrt(2) + 2) / (4 * math.sqrt(2) + 2)
    assert surface_dice(pred, gt, 0.0) == pytest.approx(expected, abs=1e-12)
    assert surface_dice(gt, pred, 0.0) == pytest.approx(expected, abs=1e-12)


def test_surface_elements_lengths_and_areas():
    # a 3x4 rectangle: the contour through the edge midpoints has 3 + 3 unit segments along
    # axis 1, 2 + 2 along axis 0 and 4 corner cuts of sqrt(2)/2.
    # spacing (2, 1): axis-0 segments are 2 long, corner cuts 0.5 * |(2, 1)| = sqrt(5)/2
    m = np.zeros((8, 8), bool)
    m[2:5, 1:5] = True
    pts, length = surface_elements(m)
    assert length.sum() == pytest.approx(10 + 2 * math.sqrt(2))
    assert pts.shape == (len(length), 2)
    _, length_s = surface_elements(m, spacing=(2.0, 1.0))
    assert length_s.sum() == pytest.approx(6 * 1 + 4 * 2 + 2 * math.sqrt(5))
    # a single voxel in 3D: 8 corner triangles of area sqrt(3)/8 each
    _, area = surface_elements(pixel((3, 3, 3), 1, 1, 1))
    assert area.sum() == pytest.approx(8 * math.sqrt(3) / 8)


def test_identical_masks_give_one():
    m = ellipse((40, 50), (20, 25), (12, 17))
    assert surface_dice(m, m, 0.0) == 1.0
    assert hausdorff_distance(m, m) == 0.0


# ---------------------------------------------------------------- empty conventions
@pytest.mark.parametrize("shape", [(9, 9), (5, 6, 7)])
def test_empty_cases(shape):
    empty = np.zeros(shape, bool)
    one = pixel(shape, *([2] * len(shape)))
    assert math.isnan(surface_dice(empty, empty, 1.0))
    assert surface_dice(one, empty, 1.0) == 0.0
    assert surface_dice(empty, one, 1.0) == 0.0
    assert math.isnan(hausdorff_distance(empty, empty))
    assert hausdorff_distance(one, empty) == math.inf
    assert hausdorff_distance(empty, one) == math.inf


# ---------------------------------------------------------------- MONAI reference, named shapes
def _cases():
    e1 = ellipse((64, 72), (30, 36), (20, 14))
    e2 = ellipse((64, 72), (33, 34), (17, 18))
    thin_a = np.zeros((40, 40), bool)
    thin_a[5:35, 20] = True  # one-pixel-wide line
    thin_b = np.zeros((40, 40), bool)
    thin_b[6:36, 21] = True
    diag = np.eye(30, dtype=bool)  # 8-connected diagonal line: saddle codes
    diag_b = np.roll(np.eye(30, dtype=bool), 1, axis=1)
    border_a = np.zeros((30, 30), bool)
    border_a[:12, :] = True  # touches three image borders
    border_b = np.zeros((30, 30), bool)
    border_b[:14, 3:] = True
    e3 = ellipse((24, 30, 28), (12, 15, 14), (7, 11, 9))
    e4 = ellipse((24, 30, 28), (11, 16, 13), (8, 10, 10))
    thin3 = np.zeros((12, 14, 16), bool)
    thin3[2:10, 7, 3:13] = True  # a one-voxel-thick sheet
    thin3b = np.zeros((12, 14, 16), bool)
    thin3b[3:11, 8, 4:14] = True
    border3 = np.zeros((10, 12, 14), bool)
    border3[:, :6, :] = True
    border3b = np.zeros((10, 12, 14), bool)
    border3b[:, :5, 2:] = True
    cases = [
        ("ellipses", e1, e2, (1.0, 1.0), 1.0),
        ("ellipses_aniso", e1, e2, (0.7, 1.9), 2.0),
        ("thin_line", thin_a, thin_b, None, 1.0),
        ("diagonal", diag, diag_b, None, 1.0),
        ("border", border_a, border_b, None, 1.0),
        ("border_aniso", border_a, border_b, (2.5, 0.5), 1.2),
        ("single_pixels", pixel((9, 9), 3, 3), pixel((9, 9), 4, 5), None, 1.5),
        ("pixel_vs_ellipse", pixel((64, 72), 12, 36), e1, None, 3.0),
        ("ellipsoids_aniso", e3, e4, (2.5, 0.8, 1.1), 1.5),
        ("ellipsoids", e3, e4, None, 1.0),
        ("sheets_3d", thin3, thin3b, (1.0, 1.0, 3.0), 1.0),
        ("border_3d", border3, border3b, (1.5, 1.0, 0.5), 1.0),
        ("single_voxels", pixel((5, 6, 7), 2, 2, 2), pixel((5, 6, 7), 2, 3, 4), None, 2.0),
    ]
    return [pytest.param(*c, id=c[0]) for c in cases]


@pytest.mark.parametrize("search", ["auto", "kdtree"])
@pytest.mark.parametrize(("name", "pred", "gt", "spacing", "tol"), _cases())
def test_nsd_matches_monai(name, pred, gt, spacing, tol, search, monkeypatch):
    if search == "kdtree":  # force the k-d tree path instead of the tolerance-ball dilation
        monkeypatch.setattr(surface_module, "_DILATION_BUDGET", 0)
    ref = monai_nsd(pred, gt, tol, spacing)
    assert 0.0 < ref < 1.0, "the case should be non-trivial"
    assert surface_dice(pred, gt, tol, spacing) == pytest.approx(ref, abs=1e-6), name


@pytest.mark.parametrize(("name", "pred", "gt", "spacing", "tol"), _cases())
def test_hd95_matches_monai(name, pred, gt, spacing, tol):
    ref = monai_hd95(pred, gt, spacing)
    assert hausdorff_distance(pred, gt, 95, spacing) == pytest.approx(ref, rel=1e-5), name


def test_nsd_accepts_torch_and_int_masks():
    e1 = ellipse((32, 32), (15, 16), (9, 7))
    e2 = ellipse((32, 32), (16, 15), (8, 8))
    ref = surface_dice(e1, e2, 1.0)
    assert surface_dice(torch.from_numpy(e1), torch.from_numpy(e2.astype(np.uint8)), 1.0) == ref
    assert surface_dice(e1.astype(np.int32), e2.astype(np.float32), 1.0) == ref
    assert surface_dice(e1, e2, 1.0, spacing=2.0) == surface_dice(e1, e2, 1.0, (2.0, 2.0))


# ---------------------------------------------------------------- properties
masks_2d = arrays(np.bool_, st.tuples(st.integers(2, 9), st.integers(2, 9)))
masks_3d = arrays(np.bool_, st.tuples(st.integers(2, 5), st.integers(2, 5), st.integers(2, 5)))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=st.data(),
    tol=st.floats(0.0, 3.0),
    three_d=st.booleans(),
)
def test_nsd_property_vs_monai(data, tol, three_d):
    # small grids and tolerances take the dilation path; the k-d tree path is forced above
    pred = data.draw(masks_3d if three_d else masks_2d)
    gt = data.draw(arrays(np.bool_, st.just(pred.shape)))
    spacing = tuple(data.draw(st.floats(0.3, 3.0)) for _ in range(pred.ndim))
    ours = surface_dice(pred, gt, tol, spacing)
    if not pred.any() and not gt.any():
        assert math.isnan(ours)
        return
    # symmetric, bounded, and equal to the reference
    assert 0.0 <= ours <= 1.0
    assert surface_dice(gt, pred, tol, spacing) == pytest.approx(ours, abs=1e-12)
    assert ours == pytest.approx(monai_nsd(pred, gt, tol, spacing), abs=1e-6)


@settings(max_examples=30, deadline=None)
@given(mask=masks_2d, pad=st.tuples(st.integers(0, 4), st.integers(0, 4)), tol=st.floats(0, 2))
def test_nsd_translation_and_padding_invariant(mask, pad, tol):
    other = np.roll(mask, 1, axis=1)
    base = surface_dice(mask, other, tol)
    padded = surface_dice(
        np.pad(mask, [(pad[0], 0), (0, pad[1])]), np.pad(other, [(pad[0], 0), (0, pad[1])]), tol
    )
    if math.isnan(base):
        assert math.isnan(padded)
    else:
        assert padded == pytest.approx(base, abs=1e-12)


@settings(max_examples=30, deadline=None)
@given(mask=masks_2d, t1=st.floats(0, 3), t2=st.floats(0, 3))
def test_nsd_monotone_in_tolerance(mask, t1, t2):
    other = np.roll(mask, (1, 2), axis=(0, 1))
    lo, hi = sorted((t1, t2))
    a, b = surface_dice(mask, other, lo), surface_dice(mask, other, hi)
    if not math.isnan(a):
        assert a <= b + 1e-12


# ---------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    ("pred", "gt", "kwargs", "match"),
    [
        (np.zeros((4, 4)), np.zeros((4, 5)), {}, "same shape"),
        (np.zeros((4, 4)), np.zeros((4, 4)), {"tolerance": -1.0}, "tolerance"),
        (np.zeros((4, 4)), np.zeros((4, 4)), {"tolerance": float("nan")}, "tolerance"),
        (np.zeros((4, 4)), np.zeros((4, 4)), {"spacing": (1.0, 1.0, 1.0)}, "spacing"),
        (np.zeros((4, 4)), np.zeros((4, 4)), {"spacing": (1.0, 0.0)}, "spacing"),
        (np.full((4, 4), 0.3), np.zeros((4, 4)), {}, "probability map"),
        (np.full((4, 4), 2), np.zeros((4, 4)), {}, "binary mask"),
        (np.zeros(4), np.zeros(4), {}, "2D"),
        (np.zeros((2, 2, 2, 2)), np.zeros((2, 2, 2, 2)), {}, "2D"),
    ],
)
def test_surface_dice_bad_input(pred, gt, kwargs, match):
    kwargs = {"tolerance": 1.0, **kwargs}
    with pytest.raises(ValueError, match=match):
        surface_dice(pred, gt, **kwargs)


def test_hausdorff_bad_percentile():
    with pytest.raises(ValueError, match="percentile"):
        hausdorff_distance(np.ones((3, 3)), np.ones((3, 3)), percentile=101)

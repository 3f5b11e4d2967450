"""Tests for the Qt-free what-if prediction generators (napari_segloss.whatif)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from napari_segloss import whatif


def _square(size: int = 9, lo: int = 2, hi: int = 7, label: int = 1) -> np.ndarray:
    a = np.zeros((size, size), dtype=np.uint8)
    a[lo:hi, lo:hi] = label
    return a


def test_erode_square_by_one_leaves_inner_square():
    out = whatif.erode_labels(_square(), 1)
    expected = np.zeros((9, 9), dtype=np.int64)
    expected[3:6, 3:6] = 1  # 5x5 square minus a one-pixel rim -> 3x3
    np.testing.assert_array_equal(out, expected)


def test_dilate_single_pixel_gives_cross():
    a = np.zeros((5, 5), dtype=np.int64)
    a[2, 2] = 1
    out = whatif.dilate_labels(a, 1)
    expected = np.zeros((5, 5), dtype=np.int64)
    expected[2, 1:4] = 1
    expected[1:4, 2] = 1
    np.testing.assert_array_equal(out, expected)


def test_dilate_does_not_overwrite_other_class_and_lower_id_wins_ties():
    a = np.array([[1, 0, 2, 2]])
    out = whatif.dilate_labels(a, 1)
    # pixel (0,1) is reachable from class 1 and class 2: class 1 (lower id) wins; class 2 kept.
    np.testing.assert_array_equal(out, [[1, 1, 2, 2]])


def test_shift_moves_without_wraparound():
    a = np.zeros((4, 5), dtype=np.int64)
    a[0, 0] = 1
    a[3, 4] = 2
    out = whatif.shift_labels(a, (1, 2))
    expected = np.zeros((4, 5), dtype=np.int64)
    expected[1, 2] = 1  # the class-2 pixel leaves the image instead of wrapping
    np.testing.assert_array_equal(out, expected)


def test_shift_3d_in_plane_only():
    a = np.zeros((2, 3, 3), dtype=np.int64)
    a[1, 0, 0] = 1
    out = whatif.shift_labels(a, (1, 1))
    assert out[1, 1, 1] == 1 and out.sum() == 1


def test_remove_smallest_object_removes_only_the_small_one():
    a = np.zeros((10, 10), dtype=np.int64)
    a[1:6, 1:6] = 1  # 25 px
    a[8, 8] = 1  # 1 px
    out = whatif.remove_smallest_objects(a, 1)
    assert out[8, 8] == 0
    assert out.sum() == 25


def test_remove_smallest_across_classes():
    a = np.zeros((6, 6), dtype=np.int64)
    a[0:3, 0:3] = 2  # 9 px class 2
    a[5, 5] = 3  # 1 px class 3
    a[5, 0:2] = 1  # 2 px class 1
    out = whatif.remove_smallest_objects(a, 2)
    np.testing.assert_array_equal(np.unique(out), [0, 2])


def test_blur_binary_preserves_mass_and_channels():
    a = _square(15, 5, 10)
    p = whatif.blur_probabilities(a, 1.5)
    assert p.shape == (1, 15, 15)
    assert p.sum() == pytest.approx(25.0, rel=1e-4)  # Gaussian is normalised, object far from edge
    assert 0.0 < p[0, 5, 5] < 1.0  # boundary became soft


def test_blur_zero_sigma_is_hard():
    a = _square()
    np.testing.assert_array_equal(whatif.blur_probabilities(a, 0)[0], a.astype(np.float32))


def test_labels_to_probabilities_multiclass_is_onehot():
    a = np.array([[0, 1], [2, 3]])
    p = whatif.labels_to_probabilities(a)
    assert p.shape == (4, 2, 2)
    np.testing.assert_array_equal(p.argmax(0), a)
    np.testing.assert_array_equal(p.sum(0), np.ones((2, 2)))


@pytest.mark.parametrize(
    ("kind", "strength", "expected_fg"),
    [
        ("erode", 1, 9.0),  # 5x5 -> 3x3
        ("dilate", 1, 45.0),  # 25 + 4 sides * 5
        ("shift", 1, 25.0),  # moved, area kept
        ("remove small object", 1, 0.0),  # the only object
        ("blur", 0, 25.0),
    ],
)
def test_make_whatif_hard_areas(kind, strength, expected_fg):
    p = whatif.make_whatif(_square(11, 3, 8), kind, strength, softness=0.0)
    assert p.shape == (1, 11, 11)
    assert p.sum() == pytest.approx(expected_fg)


@pytest.mark.parametrize(
    ("strength", "expected_fg"),
    [(0.49, 25.0), (0.5, 9.0), (1.5, 1.0), (2.5, 0.0)],  # 5x5 eroded by 0, 1, 2, 3 px
)
def test_fractional_strengths_round_half_up(strength, expected_fg):
    # round() rounds halves to even: 0.5 eroded nothing, 1.5 and 2.5 both eroded 2 px
    p = whatif.make_whatif(_square(11, 3, 8), "erode", strength, softness=0.0)
    assert p.sum() == pytest.approx(expected_fg)


def test_make_whatif_shift_location():
    p = whatif.make_whatif(_square(11, 3, 8), "shift", 2, softness=0.0)
    assert p[0, 5:10, 5:10].sum() == 25.0


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"kind": "melt", "strength": 1}, "kind"),
        ({"kind": "blur", "strength": -1}, "strength"),
        ({"kind": "blur", "strength": 1, "softness": float("nan")}, "softness"),
        ({"kind": "blur", "strength": 1, "num_classes": 1}, "num_classes"),
    ],
)
def test_make_whatif_validates(kwargs, match):
    with pytest.raises(ValueError, match=match):
        whatif.make_whatif(_square(), **kwargs)


@pytest.mark.parametrize(
    ("labels", "match"),
    [
        (np.zeros(5, dtype=int), "2D or 3D"),
        (np.full((3, 3), 0.5), "integer"),
        (np.full((3, 3), -1), "non-negative"),
    ],
)
def test_bad_labels(labels, match):
    with pytest.raises(ValueError, match=match):
        whatif.make_whatif(labels, "blur", 1)


def test_bad_offset_and_iterations():
    with pytest.raises(ValueError, match="offset"):
        whatif.shift_labels(_square(), (1, 1, 1))
    with pytest.raises(ValueError, match="iterations"):
        whatif.erode_labels(_square(), 1.5)


@settings(max_examples=25, deadline=None)
@given(
    labels=arrays(
        np.int64, st.tuples(st.integers(2, 12), st.integers(2, 12)), elements=st.integers(0, 3)
    ),
    kind=st.sampled_from(sorted(whatif.WHATIF_KINDS)),
    strength=st.integers(0, 3),
    softness=st.floats(0, 2),
)
def test_whatif_is_a_probability_map(labels, kind, strength, softness):
    k = 4
    p = whatif.make_whatif(labels, kind, strength, softness=softness, num_classes=k)
    assert p.shape == (k, *labels.shape)
    assert p.dtype == np.float32
    assert np.all((p >= 0) & (p <= 1))
    np.testing.assert_allclose(p.sum(0), 1.0, atol=1e-5)


@settings(max_examples=25, deadline=None)
@given(
    labels=arrays(
        np.int64, st.tuples(st.integers(2, 10), st.integers(2, 10)), elements=st.integers(0, 1)
    ),
    n=st.integers(0, 3),
)
def test_erode_subset_dilate_superset(labels, n):
    assert np.all(whatif.erode_labels(labels, n) <= labels)
    assert np.all(whatif.dilate_labels(labels, n) >= labels)


def test_in_plane_does_not_leak_across_slices():
    a = np.zeros((3, 9, 9), dtype=np.int64)
    a[1, 3:6, 3:6] = 1
    p3d = whatif.make_whatif(a, "dilate", 2, softness=0.0)
    assert p3d[0, 0].sum() > 0  # 3D dilation reaches the neighbouring slices
    p2d = whatif.make_whatif(a, "dilate", 2, softness=1.0, in_plane=True)
    assert p2d.shape == (1, 3, 9, 9)
    assert p2d[0, 0].sum() == 0 and p2d[0, 2].sum() == 0
    np.testing.assert_allclose(p2d[:, 1], whatif.make_whatif(a[1], "dilate", 2, softness=1.0))


def test_dilation_grows_through_background_only() -> None:
    """Class 1 grew past a thin class 2 into the background beyond it ([1,1,1,2,1,1,2,0]):
    each class was dilated alone by n and the lower id written over everything it reached."""
    labels = np.array([[0, 0, 1, 2, 0, 0, 0, 0]])
    np.testing.assert_array_equal(whatif.dilate_labels(labels, 3), [[1, 1, 1, 2, 2, 2, 2, 0]])
    # two classes reaching a pixel in the same step: the lower id takes it
    np.testing.assert_array_equal(whatif.dilate_labels(np.array([[2, 0, 1]]), 1), [[2, 1, 1]])
    # a single class grows as a plain dilation by n
    one = np.zeros((9, 9), dtype=np.int64)
    one[4, 4] = 1
    from scipy import ndimage as ndi

    want = ndi.binary_dilation(
        one == 1, structure=ndi.generate_binary_structure(2, 1), iterations=3
    )
    assert (whatif.dilate_labels(one, 3) == 1).sum() == want.sum()

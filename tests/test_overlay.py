"""Error overlay labels (TN/TP/FP/FN) and their napari colours (PM-Dice paper fig. 5)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from napari_segloss.overlay import ERROR_CLASS_NAMES, ERROR_COLORS, FN, FP, TN, TP, error_labels


def test_binary_hand_computed():
    pred = np.array([[0, 1], [1, 0]])
    gt = np.array([[0, 1], [0, 1]])
    out = error_labels(pred, gt)
    np.testing.assert_array_equal(out, [[TN, TP], [FP, FN]])
    assert out.dtype == np.uint8
    assert (TN, TP, FP, FN) == (0, 1, 2, 3)


def test_multiclass_without_foreground_counts_confusion_as_fp():
    pred = np.array([0, 1, 2, 2, 0, 1])
    gt = np.array([0, 1, 1, 0, 2, 2])
    # bg/bg TN, 1/1 TP, 2-vs-1 wrong class FP, 2-vs-bg FP, missed 2 FN, 1-vs-2 wrong class FP
    np.testing.assert_array_equal(error_labels(pred, gt), [TN, TP, FP, FP, FN, FP])


@pytest.mark.parametrize(
    ("foreground", "expected"),
    [
        # class 1 as positive: pixel 2 (gt 1, pred 2) is a missed 1; pixel 5 (pred 1, gt 2) FP
        (1, [TN, TP, FN, TN, TN, FP]),
        (2, [TN, TN, FP, FP, FN, FN]),
        (0, [TP, TN, TN, FN, FP, TN]),
    ],
)
def test_multiclass_foreground(foreground, expected):
    pred = np.array([0, 1, 2, 2, 0, 1])
    gt = np.array([0, 1, 1, 0, 2, 2])
    np.testing.assert_array_equal(error_labels(pred, gt, foreground=foreground), expected)


@settings(max_examples=30, deadline=None)
@given(data=st.data(), k=st.integers(2, 4))
def test_counts_match_confusion(data, k):
    labels = arrays(np.int64, (5, 7), elements=st.integers(0, k - 1))
    pred, gt = data.draw(labels), data.draw(labels)
    c = data.draw(st.integers(1, k - 1))
    out = error_labels(pred, gt, foreground=c)
    assert np.sum(out == TP) == np.sum((pred == c) & (gt == c))
    assert np.sum(out == FP) == np.sum((pred == c) & (gt != c))
    assert np.sum(out == FN) == np.sum((pred != c) & (gt == c))
    # foreground=None: TP only where labels agree; every error pixel is FP or FN
    full = error_labels(pred, gt)
    assert np.array_equal(full == TP, (pred == gt) & (gt != 0))
    assert np.array_equal((full == FP) | (full == FN), pred != gt)


def test_3d_and_torch_input():
    pred = torch.zeros(2, 3, 4, dtype=torch.int64)
    gt = torch.zeros(2, 3, 4, dtype=torch.int64)
    pred[0, 0, 0] = 1
    gt[1, 2, 3] = 1
    out = error_labels(pred, gt)
    assert isinstance(out, np.ndarray) and out.shape == (2, 3, 4)
    assert out[0, 0, 0] == FP and out[1, 2, 3] == FN and out.sum() == FP + FN


def test_colours():
    assert ERROR_COLORS[None][3] == 0.0 and ERROR_COLORS[TN][3] == 0.0
    assert ERROR_COLORS[FP][:3] == (1.0, 0.0, 0.0)  # red (paper fig. 5)
    assert ERROR_COLORS[FN][:3] == (0.0, 0.0, 1.0)  # blue
    r, g, b, a = ERROR_COLORS[TP]
    assert g > max(r, b) and 0.0 < a < 1.0  # translucent green
    assert set(ERROR_CLASS_NAMES) == {TN, TP, FP, FN}


def test_colours_work_with_napari_direct_colormap():
    colormaps = pytest.importorskip("napari.utils.colormaps")
    cmap = colormaps.DirectLabelColormap(color_dict=ERROR_COLORS)
    mapped = cmap.map(np.array([TN, TP, FP, FN, 9]))
    np.testing.assert_allclose(mapped[:4], [ERROR_COLORS[i] for i in (TN, TP, FP, FN)])
    np.testing.assert_allclose(mapped[4], ERROR_COLORS[None])


@pytest.mark.parametrize(
    ("pred", "gt", "kwargs", "match"),
    [
        (np.zeros((2, 2)), np.zeros((2, 3)), {}, "same shape"),
        (np.full((2, 2), 0.4), np.zeros((2, 2)), {}, "probability map"),
        (np.zeros((2, 2)), np.zeros((2, 2)), {"foreground": 1.5}, "foreground"),
        (np.zeros((2, 2)), np.zeros((2, 2)), {"foreground": -1}, "foreground"),
    ],
)
def test_bad_input(pred, gt, kwargs, match):
    with pytest.raises(ValueError, match=match):
        error_labels(pred, gt, **kwargs)

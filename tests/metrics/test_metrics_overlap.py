"""Batch confusion matrices and overlap metrics (Dice, IoU, precision, recall)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from napari_segloss.metrics import confusion_matrix, overlap_from_confusion, overlap_metrics

# One 3x4 image, 3 classes. gt rows / pred rows:
GT = np.array([[0, 0, 1, 1], [0, 2, 2, 1], [0, 0, 0, 0]])
PRED = np.array([[0, 1, 1, 1], [0, 2, 0, 0], [0, 0, 0, 2]])
# counts [gt, pred]: gt0 (7 px): pred0 x5, pred1 x1, pred2 x1; gt1 (3 px): pred1 x2, pred0 x1;
# gt2 (2 px): pred2 x1, pred0 x1
CM = np.array([[5, 1, 1], [1, 2, 0], [1, 0, 1]])


def test_confusion_matrix_hand_computed():
    cm = confusion_matrix(PRED[None], GT[None], 3)
    np.testing.assert_array_equal(cm, CM[None])
    assert cm.dtype == np.int64


def test_overlap_hand_computed():
    m = overlap_metrics(PRED[None], GT[None], 3)
    # class 0: TP 5, FP 2, FN 2; class 1: TP 2, FP 1, FN 1; class 2: TP 1, FP 1, FN 1
    np.testing.assert_allclose(m["dice"][0], [10 / 14, 4 / 6, 2 / 4])
    np.testing.assert_allclose(m["iou"][0], [5 / 9, 2 / 4, 1 / 3])
    np.testing.assert_allclose(m["precision"][0], [5 / 7, 2 / 3, 1 / 2])
    np.testing.assert_allclose(m["recall"][0], [5 / 7, 2 / 3, 1 / 2])
    np.testing.assert_array_equal(m["tp"][0], [5, 2, 1])
    np.testing.assert_array_equal(m["fp"][0], [2, 1, 1])
    np.testing.assert_array_equal(m["fn"][0], [2, 1, 1])


def test_empty_class_conventions():
    gt = np.array([[[0, 1], [0, 0]]])
    pred = np.array([[[0, 0], [0, 3]]])
    m = overlap_metrics(pred, gt, 4)
    for name in ("dice", "iou"):
        assert m[name][0, 1] == 0.0, name  # only in gt
        assert m[name][0, 3] == 0.0, name  # only in pred
    # 0/0 is undefined, never a silent 0: precision of an empty prediction, recall of an empty
    # reference
    assert math.isnan(m["precision"][0, 1]) and m["recall"][0, 1] == 0.0
    assert m["precision"][0, 3] == 0.0 and math.isnan(m["recall"][0, 3])
    for name in ("dice", "iou", "precision", "recall"):
        assert math.isnan(m[name][0, 2]), name  # in neither: undefined


def test_torch_matches_numpy_and_stays_torch():
    rng = np.random.default_rng(0)
    pred = rng.integers(0, 4, (3, 5, 6, 7))
    gt = rng.integers(0, 4, (3, 5, 6, 7))
    cm_t = confusion_matrix(torch.from_numpy(pred), torch.from_numpy(gt), 4)
    assert isinstance(cm_t, torch.Tensor) and cm_t.shape == (3, 4, 4)
    np.testing.assert_array_equal(cm_t.numpy(), confusion_matrix(pred, gt, 4))
    # torch float labels with integral values and bool masks are accepted
    cm_f = confusion_matrix(torch.from_numpy(pred).float(), torch.from_numpy(gt).double(), 4)
    np.testing.assert_array_equal(cm_f.numpy(), cm_t.numpy())
    m = overlap_from_confusion(cm_t)
    np.testing.assert_allclose(m["dice"], overlap_metrics(pred, gt, 4)["dice"])


@settings(max_examples=40, deadline=None)
@given(
    data=st.data(),
    b=st.integers(1, 3),
    k=st.integers(2, 5),
    shape=st.tuples(st.integers(1, 6), st.integers(1, 6)),
)
def test_batch_equals_per_image_loop(data, b, k, shape):
    labels = arrays(np.int64, (b, *shape), elements=st.integers(0, k - 1))
    pred, gt = data.draw(labels), data.draw(labels)
    cm = confusion_matrix(pred, gt, k)
    assert cm.sum() == pred.size
    for i in range(b):
        for g in range(k):
            for p in range(k):
                assert cm[i, g, p] == np.sum((gt[i] == g) & (pred[i] == p))
    m = overlap_from_confusion(cm)
    for i in range(b):
        for c in range(1, k):
            tp = np.sum((gt[i] == c) & (pred[i] == c))
            denom = np.sum(gt[i] == c) + np.sum(pred[i] == c)
            if denom:
                assert m["dice"][i, c] == pytest.approx(2 * tp / denom)
                assert 0.0 <= m["iou"][i, c] <= m["dice"][i, c] <= 1.0
            else:
                assert math.isnan(m["dice"][i, c])


@pytest.mark.parametrize(
    ("pred", "gt", "k", "match"),
    [
        (np.zeros((1, 3, 3)), np.zeros((1, 3, 4)), 2, "same shape"),
        (np.full((1, 3, 3), 0.5), np.zeros((1, 3, 3)), 2, "probability map"),
        (np.full((1, 3, 3), -1), np.zeros((1, 3, 3), int), 2, "non-negative"),
        (np.full((1, 3, 3), 2), np.zeros((1, 3, 3), int), 2, r"labels in \[0, 2\)"),
        (np.zeros((1, 3, 3)), np.zeros((1, 3, 3)), 1, "num_classes"),
        (np.zeros((1, 3, 3)), np.zeros((1, 3, 3)), 2.0, "num_classes"),
        (np.zeros(3), np.zeros(3), 2, "batch"),
        (torch.full((1, 3, 3), 0.7), torch.zeros(1, 3, 3), 2, "probability map"),
        (torch.zeros(1, 3, 3), torch.zeros(1, 3, 2), 2, "same shape"),
        (torch.full((1, 3, 3), 5), torch.zeros(1, 3, 3), 2, r"labels in \[0, 2\)"),
    ],
)
def test_bad_input(pred, gt, k, match):
    with pytest.raises(ValueError, match=match):
        confusion_matrix(pred, gt, k)

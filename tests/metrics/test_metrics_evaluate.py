"""evaluate / evaluate_batch (per-class metrics of label maps) and aggregate / to_markdown / to_csv."""

from __future__ import annotations

import csv
import io
import math

import numpy as np
import pytest
import torch

from napari_segloss.metrics import (
    AGGREGATE_COLUMNS,
    METRICS,
    aggregate,
    evaluate,
    evaluate_batch,
    evaluate_frames,
    hausdorff_distance,
    surface_dice,
    to_csv,
    to_markdown,
)


def _labels_2d() -> tuple[np.ndarray, np.ndarray]:
    gt = np.zeros((12, 12), np.int64)
    gt[2:6, 2:6] = 1  # 16 px
    gt[8:10, 8:11] = 2  # 6 px
    pred = np.zeros((12, 12), np.int64)
    pred[2:6, 3:7] = 1  # 12 px overlap with gt 1, 4 FP
    pred[8:10, 8:10] = 2  # 4 px, all TP
    return pred, gt


def test_evaluate_hand_computed_overlap():
    pred, gt = _labels_2d()
    res = evaluate(pred, gt, tolerance=1.0)
    assert set(res) == {1, 2}
    assert set(res[1]) == set(METRICS)
    # class 1: TP 12, FP 4, FN 4; class 2: TP 4, FP 0, FN 2
    assert res[1]["dice"] == pytest.approx(24 / 32)
    assert res[1]["iou"] == pytest.approx(12 / 20)
    assert res[1]["precision"] == pytest.approx(12 / 16)
    assert res[1]["recall"] == pytest.approx(12 / 16)
    assert res[2]["dice"] == pytest.approx(8 / 10)
    assert res[2]["precision"] == 1.0
    assert res[2]["recall"] == pytest.approx(4 / 6)
    # the 4x4 square shifted by one column: every corner surfel is within 1 of the other's
    assert res[1]["nsd"] == 1.0
    assert res[1]["hd95"] == pytest.approx(1.0)
    # the surface metrics are those of the per-class masks
    assert res[2]["nsd"] == surface_dice(pred == 2, gt == 2, 1.0)
    assert res[2]["hd95"] == hausdorff_distance(pred == 2, gt == 2)


def test_evaluate_background_absent_classes_and_num_classes():
    pred, gt = _labels_2d()
    res = evaluate(pred, gt, num_classes=4, include_background=True, surface=False)
    assert set(res) == {0, 1, 2, 3}
    assert "nsd" not in res[1] and "hd95" not in res[1]
    assert all(math.isnan(v) for v in res[3].values())  # absent from both: undefined
    assert 0.9 < res[0]["dice"] < 1.0


def test_evaluate_one_empty_conventions():
    gt = np.zeros((8, 8), int)
    gt[2:4, 2:4] = 1
    res = evaluate(np.zeros_like(gt), gt)
    precision = res[1].pop("precision")
    assert math.isnan(precision)  # TP / (TP + FP) = 0/0 for an empty prediction
    assert res[1] == {"dice": 0.0, "iou": 0.0, "recall": 0.0, "nsd": 0.0, "hd95": math.inf}
    only_pred = evaluate(gt, np.zeros_like(gt))[1]
    assert math.isnan(only_pred.pop("recall"))  # TP / (TP + FN) = 0/0 for an empty reference
    assert only_pred == {"dice": 0.0, "iou": 0.0, "precision": 0.0, "nsd": 0.0, "hd95": math.inf}
    both_empty = evaluate(np.zeros_like(gt), np.zeros_like(gt))
    assert set(both_empty) == {1}
    assert all(math.isnan(v) for v in both_empty[1].values())


def test_evaluate_3d_anisotropic_and_torch():
    gt = np.zeros((6, 10, 10), np.uint8)
    gt[1:5, 2:8, 2:8] = 1
    pred = np.zeros_like(gt)
    pred[1:5, 2:8, 4:8] = 1  # shifted face 2 voxels along the last axis
    res = evaluate(pred, gt, spacing=(3.0, 1.0, 0.5), tolerance=1.0)
    assert res[1]["dice"] == pytest.approx(2 * 96 / (96 + 144))
    assert res[1]["hd95"] == pytest.approx(hausdorff_distance(pred, gt, 95, (3.0, 1.0, 0.5)))
    # 2 voxels * 0.5 = 1.0 physical: within the inclusive tolerance
    assert res[1]["nsd"] == pytest.approx(1.0)
    res_t = evaluate(torch.from_numpy(pred), torch.from_numpy(gt), spacing=(3.0, 1.0, 0.5))
    assert res_t == res
    strict = evaluate(pred, gt, spacing=(3.0, 1.0, 0.5), tolerance=0.9)
    assert strict[1]["nsd"] < 1.0


def test_evaluate_batch_uses_one_num_classes():
    pred, gt = _labels_2d()
    results = evaluate_batch([pred, pred * 0], [gt, gt == 1], surface=False)
    assert [set(r) for r in results] == [{1, 2}, {1, 2}]
    assert math.isnan(results[1][2]["dice"])
    batch = evaluate_batch(np.stack([pred, pred]), np.stack([gt, gt]))
    assert batch[0] == batch[1] == evaluate(pred, gt)
    with pytest.raises(ValueError, match="same number"):
        evaluate_batch([pred], [gt, gt])


@pytest.mark.parametrize(
    ("pred", "gt", "kwargs", "match"),
    [
        (np.zeros((4, 4), int), np.zeros((4, 5), int), {}, "same shape"),
        (np.random.default_rng(0).random((4, 4)), np.zeros((4, 4), int), {}, "probability map"),
        (np.zeros((4, 4), int), np.zeros((4, 4), int), {"spacing": (1.0,)}, "spacing"),
        (np.zeros((4, 4), int), np.zeros((4, 4), int), {"tolerance": -0.5}, "tolerance"),
        (np.zeros((4, 4), int), np.zeros((4, 4), int), {"num_classes": 1}, "num_classes"),
        (np.full((4, 4), 3), np.zeros((4, 4), int), {"num_classes": 3}, "labels in"),
        (np.zeros((2, 2, 2, 2), int), np.zeros((2, 2, 2, 2), int), {}, "2D"),
        (np.zeros((4, 4), complex), np.zeros((4, 4), int), {}, "dtype"),
        ("labels", np.zeros((4, 4), int), {}, "numpy array or torch tensor"),
    ],
)
def test_evaluate_bad_input(pred, gt, kwargs, match):
    with pytest.raises(ValueError, match=match):
        evaluate(pred, gt, **kwargs)


# ---------------------------------------------------------------- aggregate
RESULTS = [
    {1: {"dice": 0.5, "hd95": 2.0}, 2: {"dice": float("nan"), "hd95": float("nan")}},
    {1: {"dice": 1.0, "hd95": 4.0}, 2: {"dice": 0.2, "hd95": float("inf")}},
    {1: {"dice": 0.0, "hd95": 6.0}, 2: {"dice": 0.4, "hd95": 1.0}},
]


def _row(rows, cls, metric):
    (r,) = [r for r in rows if r["class"] == cls and r["metric"] == metric]
    return r


def test_aggregate_skips_nan_and_counts():
    rows = aggregate(RESULTS, class_names=["bg", "RV", "LV"])
    r = _row(rows, 1, "dice")
    assert r["name"] == "RV"
    assert r["mean"] == pytest.approx(0.5)
    assert r["std"] == pytest.approx(math.sqrt((0.25 + 0.25 + 0) / 3))
    assert (r["count"], r["nan_count"], r["inf_count"]) == (3, 0, 0)
    r2 = _row(rows, 2, "dice")
    assert r2["mean"] == pytest.approx(0.3)
    assert (r2["count"], r2["nan_count"]) == (2, 1)
    # inf is a real failure (one mask empty): kept and counted
    h2 = _row(rows, 2, "hd95")
    assert h2["mean"] == math.inf and h2["median"] == math.inf
    assert (h2["count"], h2["nan_count"], h2["inf_count"]) == (2, 1, 1)
    # macro mean over classes of the per-class means (mDice as in the PM-Dice tables)
    m = _row(rows, "mean", "dice")
    assert m["mean"] == pytest.approx((0.5 + 0.3) / 2)
    assert m["count"] == 2
    assert set(rows[0]) == set(AGGREGATE_COLUMNS)


def test_aggregate_all_nan_class_and_single_class():
    rows = aggregate([{1: {"dice": float("nan")}}, {1: {"dice": float("nan")}}])
    assert math.isnan(rows[0]["mean"]) and rows[0]["nan_count"] == 2 and rows[0]["count"] == 0
    assert all(r["class"] != "mean" for r in rows)  # a single class needs no macro row
    assert aggregate([]) == []
    with pytest.raises(ValueError, match=r"results\[0\]"):
        aggregate([[0.5]])


def test_to_markdown_and_csv(tmp_path):
    rows = aggregate(RESULTS, class_names={1: "RV", 2: "LV"})
    md = to_markdown(rows, digits=2)
    lines = md.strip().splitlines()
    assert lines[0] == "| class | dice | hd95 |"
    assert lines[2].startswith("| 1 RV | 0.50 ± 0.41 | 4.00 ± 1.63 |")
    assert "(1 NaN)" in lines[3] and "(1 NaN, 1 inf)" in lines[3]
    assert lines[4].startswith("| mean |")
    path = tmp_path / "table.csv"
    text = to_csv(rows, path)
    assert path.read_text() == text
    parsed = list(csv.DictReader(io.StringIO(text)))
    assert tuple(parsed[0]) == AGGREGATE_COLUMNS
    assert len(parsed) == len(rows)
    assert float(parsed[0]["mean"]) == pytest.approx(0.5)


def test_aggregate_mean_row_leaves_the_background_out():
    """The macro mean is the PM-Dice tables' mDice: foreground classes only (sec. 3.2). With
    the background evaluated too, it was averaged in: (0.95 + 0.5 + 0.3) / 3, not 0.4."""
    with_bg = [{0: {"dice": 0.9}, **r} for r in RESULTS[:2]]
    with_bg[1][0] = {"dice": 1.0}
    rows = aggregate(with_bg)
    assert _row(rows, 0, "dice")["mean"] == pytest.approx(0.95)  # still listed
    m = _row(rows, "mean", "dice")
    # class 1: (0.5 + 1.0) / 2 = 0.75; class 2: 0.2 (one NaN skipped)
    assert m["mean"] == pytest.approx((0.75 + 0.2) / 2)
    assert m["count"] == 2
    # one foreground class: its own row is the mean, no macro row (binary + background)
    binary = aggregate([{0: {"dice": 0.9}, 1: {"dice": 0.5}}])
    assert [r["class"] for r in binary] == [0, 1]


def test_evaluate_frames_is_the_mean_of_its_frames() -> None:
    """A stack of unrelated 2D frames: per frame, then the mean (NaN skipped, inf kept)."""
    gt = np.zeros((3, 12, 12), np.uint8)
    gt[0, 2:6, 2:6] = 1
    gt[1, 4:10, 3:9] = 1
    pred = np.roll(gt, 2, axis=2)  # each square shifted 2 px: HD95 2 in frames 0 and 1
    pred[2, 0, 0] = 1  # frame 2: empty truth, one false positive -> Dice 0, HD95 inf
    out = evaluate_frames(pred, gt, spacing=(1.0, 1.0), tolerance=1.0)
    frames = [
        evaluate(p, g, num_classes=2, spacing=1.0, tolerance=1.0)[1]
        for p, g in zip(pred, gt, strict=True)
    ]
    for key in ("dice", "iou", "recall", "nsd"):
        assert out[1][key] == pytest.approx(np.nanmean([f[key] for f in frames]))
    assert frames[0]["hd95"] == 2.0 and out[1]["hd95"] == math.inf
    assert out[1]["recall"] == pytest.approx(np.mean([frames[0]["recall"], frames[1]["recall"]]))
    # the volume reading differs: the distances run across the frames
    assert evaluate(pred[:2], gt[:2], spacing=1.0)[1]["dice"] != pytest.approx(
        np.mean([frames[0]["dice"], frames[1]["dice"]])
    )
    with pytest.raises(ValueError, match=r"stack of 2D frames \(N, H, W\), got shape \(12, 12\)"):
        evaluate_frames(gt[0], gt[0])


def test_a_one_slice_stack_is_scored_as_its_2d_image() -> None:
    """argmax(1) of a batch of one is (1, H, W): scored as a slab one voxel deep, the eroded
    mask's NSD read 0.97 (its top and bottom faces were boundary) instead of 0."""
    from scipy import ndimage

    gt = np.zeros((40, 40), np.uint8)
    gt[8:32, 8:32] = 1
    pred = ndimage.binary_erosion(gt, iterations=3).astype(np.uint8)
    flat = evaluate(pred, gt, tolerance=1.0)[1]
    assert flat["nsd"] == 0.0 and flat["hd95"] > 3.0
    stacked = evaluate(pred[None], gt[None], tolerance=1.0, spacing=(5.0, 1.0, 1.0))[1]
    assert stacked == flat  # the slice spacing of a one-slice stack plays no part
    # a one-slice NIfTI in file order (X, Y, 1), as segloss evaluate reads it and segloss
    # predict writes it: scored as a slab, NSD read 0.83 and HD95 3.0
    last = evaluate(pred[..., None], gt[..., None], tolerance=1.0, spacing=(1.0, 1.0, 5.0))[1]
    assert last == flat
    middle = evaluate(pred[:, None], gt[:, None], tolerance=1.0, spacing=(1.0, 7.0, 1.0))[1]
    assert middle == flat

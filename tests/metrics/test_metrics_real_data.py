"""NSD / HD95 / evaluate on real masks (Kvasir polyp, ACDC heart) against MONAI.

Needs ``../shared/data`` (skipped with a message when absent, see tests/conftest.py).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from scipy import ndimage

from napari_segloss.metrics import evaluate, surface_dice

monai_metrics = pytest.importorskip("monai.metrics", reason="MONAI is the NSD/HD95 reference")

# MONAI runs torch ops: one thread (tests/conftest.py) is faster on a busy shared CI machine
pytestmark = [pytest.mark.shared_data, pytest.mark.usefixtures("one_torch_thread")]


def _monai(pred: np.ndarray, gt: np.ndarray, k: int, tol: float, spacing) -> tuple:
    def onehot(x):
        return torch.nn.functional.one_hot(torch.from_numpy(x.astype(np.int64)), k).movedim(-1, 0)[
            None
        ]

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        nsd = monai_metrics.compute_surface_dice(
            onehot(pred).float(),
            onehot(gt).float(),
            [tol] * (k - 1),
            spacing=spacing,
            use_subvoxels=True,
        )[0]
        hd = monai_metrics.compute_hausdorff_distance(
            onehot(pred), onehot(gt), percentile=95, spacing=spacing
        )[0]
    return nsd.numpy(), hd.numpy()


def test_kvasir_mask_vs_perturbed(kvasir_dir):
    from napari_segloss.data.io import read_mask

    path = sorted((kvasir_dir / "masks").glob("*.jpg"))[0]
    gt = read_mask(path) > 0
    # a plausible prediction: eroded, shifted, plus a small false-positive blob
    pred = np.roll(ndimage.binary_erosion(gt, iterations=3), (4, -3), axis=(0, 1))
    pred[10:20, 10:25] = True
    for tol, spacing in [(2.0, None), (3.0, (0.8, 1.2))]:
        nsd, hd = _monai(pred, gt, 2, tol, spacing)
        assert 0.0 < nsd[0] < 1.0
        assert surface_dice(pred, gt, tol, spacing) == pytest.approx(float(nsd[0]), abs=1e-6)
        res = evaluate(pred.astype(np.uint8), gt.astype(np.uint8), spacing=spacing, tolerance=tol)
        assert res[1]["nsd"] == pytest.approx(float(nsd[0]), abs=1e-6)
        assert res[1]["hd95"] == pytest.approx(float(hd[0]), rel=1e-5)


def test_acdc_volume_multiclass_anisotropic(acdc_dir):
    nib = pytest.importorskip("nibabel")
    gt = np.asarray(nib.load(acdc_dir / "labels" / "patient001_frame01.nii.gz").dataobj)
    # the heart and a margin (keeps the MONAI reference fast; border handling is tested elsewhere)
    box = tuple(
        slice(max(s.start - 4, 0), s.stop + 4)
        for s in ndimage.find_objects((gt > 0).astype(np.int32))[0]
    )
    gt = gt[box].astype(np.int64)
    # prediction: each structure dilated or eroded by one voxel in-plane, then relabelled
    pred = np.zeros_like(gt)
    for c, op in [
        (3, ndimage.binary_dilation),
        (2, ndimage.binary_erosion),
        (1, ndimage.binary_dilation),
    ]:
        structure = np.zeros((3, 3, 3), bool)
        structure[:, :, 1] = ndimage.generate_binary_structure(2, 1)  # in-plane only
        pred[op(gt == c, structure=structure)] = c
    spacing = (1.5, 1.5, 10.0)  # a typical short-axis cine spacing: slices far apart
    nsd, hd = _monai(pred, gt, 4, 2.0, spacing)
    res = evaluate(pred, gt, num_classes=4, spacing=spacing, tolerance=2.0)
    for c in (1, 2, 3):
        assert res[c]["nsd"] == pytest.approx(float(nsd[c - 1]), abs=1e-6), c
        assert res[c]["hd95"] == pytest.approx(float(hd[c - 1]), rel=1e-5), c

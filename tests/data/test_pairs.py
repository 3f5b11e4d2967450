"""Tests for napari_segloss.data.pairs: frames of in-memory data, splits, folder inspection."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from napari_segloss.data.pairs import inspect_folder, layer_frames, model_classes, split_frames
from napari_segloss.samples import sample_pairs_dir


def test_model_classes():
    assert model_classes(0) == 1  # an empty binary mask: one sigmoid channel
    assert model_classes(1) == 1
    assert model_classes(3) == 4  # labels 0..3: softmax over 4


def test_layer_frames_2d_rgb_and_stacks():
    grey, mask = np.zeros((4, 5)), np.zeros((4, 5), np.uint8)
    images, masks = layer_frames(grey, mask, rgb=False)
    assert len(images) == 1 and images[0] is grey and masks[0] is mask
    rgb = np.zeros((4, 5, 3))
    assert len(layer_frames(rgb, mask, rgb=True)[0]) == 1
    volume, labels = np.zeros((6, 4, 5)), np.zeros((6, 4, 5), np.uint8)
    images, masks = layer_frames(volume, labels, rgb=False)
    assert len(images) == 6 and images[2].shape == (4, 5) and masks[2].shape == (4, 5)
    frames = np.zeros((3, 4, 5, 3))
    images, masks = layer_frames(frames, labels[:3], rgb=True)
    assert len(images) == 3 and images[0].shape == (4, 5, 3)
    with pytest.raises(ValueError, match="one frame per image frame"):
        layer_frames(frames, labels, rgb=True)


def test_split_frames():
    images = [np.full((2, 2), i) for i in range(5)]
    masks = [np.zeros((2, 2), np.uint8)] * 5
    (ti, tm), (vi, vm) = split_frames(images, masks, 0.2)
    assert [int(a[0, 0]) for a in ti] == [0, 1, 2, 3] and [int(a[0, 0]) for a in vi] == [4]
    assert len(tm) == 4 and len(vm) == 1
    (ti, _), (vi, vm) = split_frames(images, masks, 0.0)
    # none validates, as data.val_fraction: 0 says for folders (one frame was held out while
    # the run's config.yaml recorded 0)
    assert len(ti) == 5 and vi == [] and vm == []
    (ti, _), (vi, _) = split_frames(images[:1], masks[:1], 0.0)
    assert len(ti) == 1 and vi == []
    (ti, _), (vi, _) = split_frames(images[:2], masks[:2], 0.9)
    assert len(ti) == 1  # at least one frame trains
    (ti, _), (vi, _) = split_frames(images[:1], masks[:1], 0.2)
    assert ti == vi  # one pair: fine-tune and validate on the image in view
    with pytest.raises(ValueError, match="at least one image/mask pair"):
        split_frames([], [], 0.2)


def test_inspect_the_bundled_kvasir_folder():
    summary = inspect_folder(sample_pairs_dir("kvasir_train"))
    assert summary.in_channels == 3 and summary.classes == 1 and summary.pairs >= 3


def test_inspect_a_grey_label_folder_and_its_errors(tmp_path):
    for name, top in (("a", 2), ("b", 3)):
        (tmp_path / "images").mkdir(exist_ok=True)
        (tmp_path / "masks").mkdir(exist_ok=True)
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "images" / f"{name}.png")
        mask = np.zeros((8, 8), np.uint8)
        mask[0, 0] = top
        Image.fromarray(mask).save(tmp_path / "masks" / f"{name}.png")
    summary = inspect_folder(tmp_path)
    assert (summary.pairs, summary.in_channels, summary.classes) == (2, 1, 4)
    assert summary.labels == (0, 2, 3)  # every mask's labels
    (tmp_path / "masks" / "b.png").unlink()
    with pytest.raises(ValueError, match=r"folder .*: unmatched image/mask files.*b\.png"):
        inspect_folder(tmp_path)
    with pytest.raises(ValueError, match=r"folder .*missing"):
        inspect_folder(tmp_path / "missing")

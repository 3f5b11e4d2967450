"""Datasets, splits, normalisation and paired augmentation (napari_segloss.data.datasets)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from napari_segloss.data.datasets import (
    ArrayDataset,
    DataError,
    FolderDataset,
    NiftiSliceDataset,
)
from napari_segloss.data.factory import build_datasets, build_test_dataset, read_split, split_ids
from napari_segloss.data.transforms import IMAGENET_MEAN, IMAGENET_STD, Normalization
from napari_segloss.engine.config import load_config


def write_folder(
    root: Path,
    n: int = 6,
    hw: tuple[int, int] = (20, 24),
    *,
    mask_ext: str = ".png",
    labels: int = 2,
    seed: int = 0,
) -> Path:
    """n RGB PNG images whose red channel encodes the mask (255 on foreground)."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        mask = np.zeros(hw, np.uint8)
        y, x = rng.integers(2, hw[0] - 8), rng.integers(2, hw[1] - 8)
        mask[y : y + 6, x : x + 6] = rng.integers(1, labels) if labels > 2 else 1
        img = np.zeros((*hw, 3), np.uint8)
        img[..., 0] = (mask > 0) * 255
        img[..., 1] = rng.integers(0, 50, hw)
        Image.fromarray(img).save(root / "images" / f"case{i:02d}.png")
        out = mask * 255 if labels == 2 else mask
        Image.fromarray(out).save(root / "masks" / f"case{i:02d}{mask_ext}", quality=90)
    return root


def cfg_for(root: Path, **data: object) -> object:
    return load_config({"data": {"root": str(root), **data}, "train": {"seed": 0}})


def test_folder_item_types_and_imagenet_normalisation(tmp_path: Path) -> None:
    root = tmp_path / "d"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    img = np.full((8, 10, 3), 255, np.uint8)
    img[:, :, 1] = 0
    Image.fromarray(img).save(root / "images" / "a.png")
    mask = np.zeros((8, 10), np.uint8)
    mask[2:4, 3:6] = 255
    Image.fromarray(mask).save(root / "masks" / "a.png")
    ds = FolderDataset(root, train=False)
    image, target = ds[0]
    assert image.dtype == torch.float32 and image.shape == (3, 8, 10)
    assert target.dtype == torch.int64 and target.shape == (8, 10)
    # R = 255 -> (1 - 0.485) / 0.229; G = 0 -> (0 - 0.456) / 0.224
    assert image[0, 0, 0].item() == pytest.approx((1 - 0.485) / 0.229, rel=1e-5)
    assert image[1, 0, 0].item() == pytest.approx((0 - 0.456) / 0.224, rel=1e-5)
    assert target.sum().item() == 6 and set(target.unique().tolist()) == {0, 1}
    assert ds.normalization == Normalization("uint8", IMAGENET_MEAN, IMAGENET_STD)


def test_gray_uint16_images_use_minmax_and_no_imagenet_stats() -> None:
    img = np.array([[100, 300], [500, 100]], np.uint16)
    ds = ArrayDataset([img], [np.zeros((2, 2), np.uint8)], in_channels=1)
    image, _ = ds[0]
    assert ds.normalization.scale == "minmax" and ds.normalization.mean == (0.0,)
    # (x - 100) / (500 - 100)
    assert image[0].flatten().tolist() == pytest.approx([0.0, 0.5, 1.0, 0.0])


def test_gray_images_are_repeated_for_rgb_models() -> None:
    img = np.full((4, 4), 51, np.uint8)  # 51 / 255 = 0.2
    ds = ArrayDataset([img], [np.zeros((4, 4), np.uint8)], in_channels=3)
    image, _ = ds[0]
    assert image.shape == (3, 4, 4)
    expected = [(0.2 - m) / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD, strict=True)]
    assert image[:, 0, 0].tolist() == pytest.approx(expected, rel=1e-5)


def test_jpeg_masks_are_binarised(tmp_path: Path) -> None:
    root = write_folder(tmp_path / "d", n=2, mask_ext=".jpg")
    ds = FolderDataset(root)
    for i in range(len(ds)):
        assert set(ds[i][1].unique().tolist()) <= {0, 1}


def test_resize_and_train_crop_shapes(tmp_path: Path) -> None:
    root = write_folder(tmp_path / "d", n=2, hw=(30, 40))
    val = FolderDataset(root, size=(32, 48), train=False)
    assert val[0][0].shape == (3, 32, 48) and val[0][1].shape == (32, 48)
    tr = FolderDataset(root, size=(32, 48), crop=(16, 24), train=True)
    image, mask = tr[(0, 7)]
    assert image.shape == (3, 16, 24) and mask.shape == (16, 24)
    # crop larger than the image: padded, not an error
    big = FolderDataset(root, crop=(36, 44), train=True, augment=False)
    assert big[(1, 3)][0].shape == (3, 36, 44)


def test_augmentation_moves_image_and_mask_together(tmp_path: Path) -> None:
    root = write_folder(tmp_path / "d", n=4, hw=(48, 48))
    strong = {"hflip": 0.5, "vflip": 0.5, "rotate": 40.0, "zoom": (0.8, 1.2), "elastic_p": 1.0}
    ds = FolderDataset(root, train=True, crop=(40, 40), augmentation=strong, normalize="none")
    norm = ds.normalization
    changed = 0
    for i in range(len(ds)):
        for seed in range(5):
            image, mask = ds[(i, seed)]
            red = image[0] * norm.std[0] + norm.mean[0]  # undo standardisation: 0..255 scale
            fg_img = red > 127
            fg_mask = mask > 0
            inter = (fg_img & fg_mask).sum().item()
            union = (fg_img | fg_mask).sum().item()
            if union:
                # bilinear image vs nearest mask differ only on boundary pixels
                assert inter / union > 0.6, (i, seed, inter, union)
            plain = FolderDataset(root, train=False, normalize="none")[i][1]
            changed += int(mask.shape != plain.shape or not torch.equal(mask, plain[:40, :40]))
    assert changed > 10  # the augmentation really does something


def test_seeded_items_are_reproducible(tmp_path: Path) -> None:
    root = write_folder(tmp_path / "d", n=2, hw=(32, 32))
    ds = FolderDataset(root, train=True, crop=(24, 24), augmentation={"elastic_p": 1.0})
    a, b = ds[(1, 11)], ds[(1, 11)]
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    c = ds[(1, 12)]
    assert not torch.equal(a[0], c[0])
    # The global RNG is untouched by seeded items (fork_rng).
    torch.manual_seed(0)
    before = torch.rand(1)
    torch.manual_seed(0)
    ds[(0, 5)]
    assert torch.equal(torch.rand(1), before)


def test_cache_decodes_each_file_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = write_folder(tmp_path / "d", n=3)
    ds = FolderDataset(root, size=(16, 16))
    calls = []
    original = ds._read
    monkeypatch.setattr(ds, "_read", lambda i: calls.append(i) or original(i))
    ds.validate(num_classes=2)
    for _ in range(3):
        for i in range(len(ds)):
            ds[i]
    assert sorted(calls) == [0, 1, 2]


@pytest.mark.parametrize(
    ("problem", "match"),
    [
        # names the mask file, not the image: the label is the mask's fault
        ("label_out_of_range", r"masks[/\\]case01\.png: mask has label 3.*2 classes"),
        ("size_mismatch", r"case00\.png.*image size \(20, 24\) != mask size \(10, 12\)"),
        ("channels", r"case00\.png.*3 channel\(s\) but model.in_channels=2"),
    ],
)
def test_validate_reports_bad_pairs(tmp_path: Path, problem: str, match: str) -> None:
    root = write_folder(tmp_path / "d", n=3)
    in_channels = None
    if problem == "label_out_of_range":
        Image.fromarray(np.full((20, 24), 3, np.uint8)).save(root / "masks" / "case01.png")
    elif problem == "size_mismatch":
        Image.fromarray(np.zeros((10, 12), np.uint8)).save(root / "masks" / "case00.png")
    else:
        in_channels = 2
    with pytest.raises(DataError, match=match) as info:
        FolderDataset(root).validate(num_classes=2, in_channels=in_channels)
    assert "\n" not in str(info.value)


def test_validate_requires_a_common_size_for_batches(tmp_path: Path) -> None:
    root = write_folder(tmp_path / "d", n=2, hw=(20, 24))
    Image.fromarray(np.zeros((30, 30, 3), np.uint8)).save(root / "images" / "odd.png")
    Image.fromarray(np.zeros((30, 30), np.uint8)).save(root / "masks" / "odd.png")
    with pytest.raises(DataError, match=r"different sizes.*data\.size"):
        FolderDataset(root).validate(need_uniform_size=True)
    stats = FolderDataset(root, size=(16, 16)).validate(need_uniform_size=True)
    assert stats["sizes"] == [(16, 16)] and stats["count"] == 3


def test_validate_reads_with_the_cores_this_process_may_use(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The check's reading threads follow the affinity mask (taskset, cgroups), not every core
    of the machine (os.cpu_count)."""
    import napari_segloss.data.datasets as datasets

    pools: list[int] = []

    class Recording(datasets.ThreadPoolExecutor):
        def __init__(self, max_workers: int) -> None:
            pools.append(max_workers)
            super().__init__(max_workers=max_workers)

    monkeypatch.setattr(datasets, "ThreadPoolExecutor", Recording)
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    if hasattr(os, "sched_getaffinity"):
        monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2})
    root = write_folder(tmp_path / "d", n=2)
    FolderDataset(root).validate()
    assert pools == [3 if hasattr(os, "sched_getaffinity") else 8]


@pytest.mark.parametrize(
    ("layout", "match"),
    [
        ("no_root", r"'data\.root'.*folder not found"),
        (
            "no_masks_dir",
            r"'data\.root'.*no 'masks' folder \(data\.masks\); its sub-folders: images, labels",
        ),
        ("empty", r"contains no files"),
        ("unmatched", r"without a mask.*extra\.png"),
    ],
)
def test_build_datasets_bad_folders(tmp_path: Path, layout: str, match: str) -> None:
    root = tmp_path / "d"
    if layout == "no_masks_dir":
        (root / "images").mkdir(parents=True)
        (root / "labels").mkdir()
    elif layout == "empty":
        (root / "images").mkdir(parents=True)
        (root / "masks").mkdir()
    elif layout == "unmatched":
        write_folder(root, n=2)
        Image.fromarray(np.zeros((4, 4), np.uint8)).save(root / "images" / "extra.png")
    with pytest.raises(DataError, match=match):
        build_datasets(cfg_for(root))


def test_split_is_deterministic_and_disjoint(tmp_path: Path) -> None:
    root = write_folder(tmp_path / "d", n=20)
    a_tr, a_va = build_datasets(cfg_for(root, val_fraction=0.25))
    b_tr, b_va = build_datasets(cfg_for(root, val_fraction=0.25))
    assert a_va.pairs == b_va.pairs and a_tr.pairs == b_tr.pairs
    assert len(a_va) == 5 and len(a_tr) == 15
    assert not set(a_va.pairs) & set(a_tr.pairs)
    other = load_config({"data": {"root": str(root), "val_fraction": 0.25}, "train": {"seed": 1}})
    assert build_datasets(other)[1].pairs != a_va.pairs
    assert a_tr.train and not a_va.train
    assert a_va.normalization == a_tr.normalization
    limited_tr, limited_va = build_datasets(cfg_for(root, val_fraction=0.25, limit=8))
    assert (len(limited_tr), len(limited_va)) == (6, 2)


def test_split_file_folder_and_txt(tmp_path: Path) -> None:
    root = write_folder(tmp_path / "d", n=6)
    splits = root / "splits"
    splits.mkdir()
    (splits / "train.txt").write_text("case00\ncase01\ncase02\n")
    (splits / "val.txt").write_text("case03\n")
    (splits / "test.txt").write_text("case04\ncase05\n")
    cfg = cfg_for(root, split_file="splits")  # relative to data.root
    tr, va = build_datasets(cfg)
    assert [p[0].stem for p in tr.pairs] == ["case00", "case01", "case02"]
    assert [p[0].stem for p in va.pairs] == ["case03"]
    te = build_test_dataset(cfg)
    assert te is not None and [p[0].stem for p in te.pairs] == ["case04", "case05"]
    # a single .txt lists the validation ids; everything else trains
    (tmp_path / "val.txt").write_text("# held out\ncase01\ncase04\n")
    tr, va = build_datasets(cfg_for(root, split_file=str(tmp_path / "val.txt")))
    assert [p[0].stem for p in va.pairs] == ["case01", "case04"] and len(tr) == 4
    (splits / "val.txt").write_text("case99\n")
    with pytest.raises(DataError, match=r"'data\.split_file'.*val split.*'case99'"):
        build_datasets(cfg)


def test_read_split_yaml(tmp_path: Path) -> None:
    f = tmp_path / "s.yaml"
    f.write_text("train: [a, b]\nval: [c]\n")
    assert read_split(f) == {"train": ["a", "b"], "val": ["c"]}
    with pytest.raises(DataError, match="not found"):
        read_split(tmp_path / "missing")


def test_a_split_of_train_and_test_draws_its_validation_from_train(tmp_path: Path) -> None:
    """train.txt + test.txt: test.txt served as the validation split, chose best.pt, and was
    then scored as held out. Now validation comes from train.txt (data.val_fraction)."""
    root = write_folder(tmp_path / "d", n=8)
    splits = tmp_path / "s"
    splits.mkdir()
    (splits / "train.txt").write_text("".join(f"case{i:02d}\n" for i in range(6)))
    (splits / "test.txt").write_text("case06\ncase07\n")
    cfg = cfg_for(root, split_file=str(splits), val_fraction=0.34)
    tr, va = build_datasets(cfg)
    train_ids = {p[0].stem for p in tr.pairs}
    val_ids = {p[0].stem for p in va.pairs}
    assert len(val_ids) == 2 and len(train_ids) == 4
    assert train_ids | val_ids == {f"case{i:02d}" for i in range(6)}  # test never validates
    te = build_test_dataset(cfg)
    assert [p[0].stem for p in te.pairs] == ["case06", "case07"]


def test_an_id_in_two_splits_is_refused(tmp_path: Path) -> None:
    root = write_folder(tmp_path / "d", n=4)
    f = tmp_path / "s.yaml"
    f.write_text("train: [case00, case01, case02]\nval: [case02, case03]\n")
    with pytest.raises(DataError, match=r"1 id\(s\) are in both the train and the val split "
                       r"\(e\.g\. 'case02'\)"):  # fmt: skip
        build_datasets(cfg_for(root, split_file=str(f)))
    f.write_text("train: case00\nval: [case03]\n")  # read as the ids 'c', 'a', 's', ...
    with pytest.raises(DataError, match=r"'train' must be a list of ids, got str 'case00'"):
        build_datasets(cfg_for(root, split_file=str(f)))


def test_a_split_group_that_matches_no_name_is_refused(tmp_path: Path) -> None:
    # "(.+)_frame\d" (a "+" left out) matched no name: the split went file by file, and the
    # frames of one patient sat on both sides
    root = tmp_path / "d"
    write_folder(root, n=4)
    for i, path in enumerate(sorted((root / "images").iterdir())):
        for sub in ("images", "masks"):
            (root / sub / path.name).rename(
                root / sub / f"patient{i // 2}_frame{i % 2 + 1:02d}.png"
            )
    typo = r"(.+)_frame\d"
    with pytest.raises(DataError, match=re.escape(f"'data.split_group': {typo!r} matches none")):
        build_datasets(cfg_for(root, split_group=typo, val_fraction=0.5))
    tr, va = build_datasets(cfg_for(root, split_group=r"(.+)_frame\d+", val_fraction=0.5))
    assert {p[0].stem[:8] for p in tr.pairs}.isdisjoint({p[0].stem[:8] for p in va.pairs})
    kvasir_like = write_folder(tmp_path / "k", n=4)  # the default pattern, unset: no refusal
    assert len(build_datasets(cfg_for(kvasir_like))[0]) == 3


def test_missing_split_file_says_how_to_do_without(tmp_path: Path) -> None:
    root = write_folder(tmp_path / "d", n=4)
    with pytest.raises(DataError) as info:
        build_datasets(cfg_for(root, split_file="splits"))
    msg = str(info.value)
    assert "'data.split_file': not found: 'splits'" in msg and str(root) in msg
    assert "pass data.split_file=null" in msg and "\n" not in msg


@pytest.mark.parametrize(
    ("n", "data", "match"),
    [
        (1, {"val_fraction": 0.5}, r"validation set is empty: 1 image under .* val_fraction 0\.5"),
        (1, {"val_fraction": 0.7}, r"training set is empty: 1 image under"),
        (
            4,
            {"val_fraction": 0.2, "limit": 1},
            r"validation set is empty: 1 of 4 images \(data\.limit 1\)",
        ),
    ],
)
def test_validation_asked_for_but_empty_is_refused(
    tmp_path: Path, n: int, data: dict, match: str
) -> None:
    """Without a validation set training would select nothing and write no eval.json."""
    root = write_folder(tmp_path / "d", n=n)
    with pytest.raises(DataError, match=r"'data\.val_fraction': " + match) as info:
        build_datasets(cfg_for(root, **data))
    assert "data.val_fraction=0 to train without validation" in str(info.value)


def test_no_validation_when_asked_for_and_empty_split_lists(tmp_path: Path) -> None:
    root = write_folder(tmp_path / "d", n=1)
    train_ds, val_ds = build_datasets(cfg_for(root, val_fraction=0.0))  # explicitly none
    assert len(train_ds) == 1 and len(val_ds) == 0
    root = write_folder(tmp_path / "e", n=3)
    (tmp_path / "split.yaml").write_text("train: [case00, case01]\nval: []\n")
    with pytest.raises(DataError, match=r"'data\.split_file'.*lists no validation ids"):
        build_datasets(cfg_for(root, split_file=str(tmp_path / "split.yaml")))


def _write_nifti(path: Path, array: np.ndarray) -> None:
    import nibabel as nib

    nib.save(nib.Nifti1Image(array, np.eye(4)), str(path))


def test_nifti_slices_in_napari_order(tmp_path: Path) -> None:
    root = tmp_path / "n"
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    rng = np.random.default_rng(0)
    vols = {}
    for name, depth in (("p1", 3), ("p2", 2)):
        img = rng.integers(0, 1000, (6, 5, depth)).astype(np.int16)  # (X, Y, Z)
        lab = rng.integers(0, 4, (6, 5, depth)).astype(np.uint8)
        _write_nifti(root / "images" / f"{name}.nii.gz", img)
        _write_nifti(root / "labels" / f"{name}.nii.gz", lab)
        vols[name] = (img, lab)
    cfg = load_config(
        {"data": {"kind": "nifti", "root": str(root), "masks": "labels", "val_fraction": 0.5}}
    )
    tr, va = build_datasets(cfg)
    assert isinstance(tr, NiftiSliceDataset) and len(tr) + len(va) == 5
    ds = NiftiSliceDataset(
        [(root / "images" / "p1.nii.gz", root / "labels" / "p1.nii.gz")], in_channels=1
    )
    img, lab = vols["p1"]
    image, mask = ds[2]
    assert image.shape == (1, 5, 6)  # (Y, X): slice z of the (Z, Y, X) napari array
    assert torch.equal(mask, torch.from_numpy(lab[:, :, 2].T.astype(np.int64)))
    lo, hi = float(img.min()), float(img.max())  # min-max over the whole volume, not the slice
    expected = (img[:, :, 2].T.astype(np.float32) - lo) / (hi - lo)
    assert np.allclose(image[0].numpy(), expected, atol=1e-6)
    assert ds.validate(num_classes=4)["max_label"] == int(lab.max())
    with pytest.raises(DataError, match=r"labels[/\\]p1\.nii\.gz slice \d: mask has label 3"):
        ds.validate(num_classes=3)


def test_nifti_labels_with_another_spacing_are_warned_about(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # eval.json measures distances in the image's spacing, segloss evaluate in the label's
    import nibabel as nib

    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    _write_nifti(tmp_path / "images" / "a.nii.gz", np.zeros((4, 4, 2), np.uint8))
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 2), np.uint8), np.diag([1.5, 1.5, 10.0, 1.0])),
             str(tmp_path / "labels" / "a.nii.gz"))  # fmt: skip
    ds = NiftiSliceDataset([(tmp_path / "images" / "a.nii.gz", tmp_path / "labels" / "a.nii.gz")])
    with caplog.at_level("WARNING"):
        ds[0]
    assert "give another voxel spacing ((1.0, 1.0, 1.0) vs (1.5, 1.5, 10.0))" in caplog.text


def test_nifti_shape_mismatch(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    _write_nifti(tmp_path / "images" / "a.nii.gz", np.zeros((4, 4, 2), np.uint8))
    _write_nifti(tmp_path / "labels" / "a.nii.gz", np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(DataError, match=r"a\.nii\.gz.*\(4, 4, 2\) != label shape \(4, 4, 3\)"):
        NiftiSliceDataset([(tmp_path / "images" / "a.nii.gz", tmp_path / "labels" / "a.nii.gz")])


def test_nifti_float_labels_round_near_integers(tmp_path: Path) -> None:
    """Float label volumes from resampling hold 0.99999 for 1: they were refused as "not
    non-negative integers"; now rounded, while a real fraction (0.5) is refused naming it."""
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    label = np.zeros((6, 5, 2), np.float32)
    label[1:4, 1:3] = 0.99999
    label[4, 4] = 2.0001
    image = tmp_path / "images" / "a.nii.gz"
    _write_nifti(image, np.arange(60, dtype=np.uint8).reshape(6, 5, 2))
    _write_nifti(tmp_path / "labels" / "a.nii.gz", label)
    ds = NiftiSliceDataset([(image, tmp_path / "labels" / "a.nii.gz")])
    assert ds.validate(num_classes=3)["class_pixels"] == [60 - 14, 12, 2]
    _write_nifti(tmp_path / "labels" / "b.nii.gz", label * 0.5)
    with pytest.raises(DataError, match=r"b\.nii\.gz.*found 0\.49.*nearest neighbour"):
        NiftiSliceDataset([(image, tmp_path / "labels" / "b.nii.gz")]).validate()


def test_nifti_3d_needs_a_patch_size(tmp_path: Path) -> None:
    # 3D patches with model.arch UNet3D: tests/engine/test_3d.py (the model check is the engine's)
    cfg = load_config({"data": {"kind": "nifti", "root": str(tmp_path), "slices": "3d"}})
    with pytest.raises(DataError, match=r"'data\.patch': data\.slices: 3d needs a patch size"):
        build_datasets(cfg)


def test_array_dataset_validation() -> None:
    with pytest.raises(DataError, match="same length"):
        ArrayDataset([np.zeros((4, 4))], [])
    with pytest.raises(DataError, match=r"masks\[0\] must be 2D"):
        ArrayDataset([np.zeros((4, 4))], [np.zeros((1, 4, 4), np.uint8)])
    stacked = ArrayDataset(np.zeros((3, 8, 8, 3), np.uint8), np.zeros((3, 8, 8), np.uint8))
    assert len(stacked) == 3 and stacked[2][0].shape == (3, 8, 8)


def test_bundled_samples_root() -> None:
    cfg = load_config({"data": {"root": "bundled:kvasir", "size": 64, "val_fraction": 0.34}})
    tr, va = build_datasets(cfg)
    assert len(tr) + len(va) == 3
    assert tr.validate(num_classes=2)["max_label"] == 1
    with pytest.raises(DataError, match=r"'data\.root'"):
        build_datasets(load_config({"data": {"root": "bundled:nope"}}))


def test_quickstart_config_trains_on_kvasir_train() -> None:
    # the README's main job: 32 bundled pairs split 26 / 6, none of them a `kvasir` sample frame
    config = Path(__file__).resolve().parents[2] / "training" / "configs" / "quickstart.yaml"
    tr, va = build_datasets(load_config(config))
    assert (len(tr), len(va)) == (26, 6)
    assert tr.validate(num_classes=2)["max_label"] == 1


@pytest.mark.shared_data
def test_real_kvasir_protocol(kvasir_dir: Path) -> None:
    cfg = load_config(
        {
            "data": {
                "root": str(kvasir_dir),
                "size": 320,
                "crop": 256,
                "limit": 4,
                "val_fraction": 0.25,
            }
        }
    )
    tr, va = build_datasets(cfg)
    tr.validate(num_classes=2, need_uniform_size=True)
    image, mask = tr[(0, 1)]
    assert image.shape == (3, 256, 256) and mask.shape == (256, 256)
    assert set(mask.unique().tolist()) <= {0, 1}
    assert va[0][0].shape == (3, 320, 320)  # validation: resized, not cropped


@pytest.mark.shared_data
def test_real_acdc_protocol(acdc_dir: Path) -> None:
    cfg = load_config(
        {
            "data": {
                "kind": "nifti",
                "root": str(acdc_dir),
                "masks": "labels",
                "split_file": "splits",
                "size": 256,
                "limit": 1,
            },
            "model": {"in_channels": 1, "classes": 4},
        }
    )
    tr, va = build_datasets(cfg)
    assert tr.normalization.scale == "uint8" and tr.normalization.mean == (0.0,)
    stats = tr.validate(num_classes=4, in_channels=1)
    assert stats["sizes"] == [(256, 256)] and stats["max_label"] == 3
    image, _ = va[0]
    assert image.shape == (1, 256, 256) and 0.0 <= image.min() and image.max() <= 1.0
    te = build_test_dataset(cfg, tr.normalization)
    assert te is not None and len(te) > 0
    train_ids = {p[0].name for p in tr.pairs}
    assert train_ids.isdisjoint({p[0].name for p in te.pairs})


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_raw_output_with_device_affine_matches_standardised_items(dtype: type) -> None:
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 200, (8, 8, 3)).astype(dtype) for _ in range(2)]
    masks = [np.zeros((8, 8), np.uint8)] * 2
    ds = ArrayDataset(images, masks, train=True, crop=(6, 6))
    raw = ds.with_raw_output()
    assert raw._cache is ds._cache  # a view: the decoded cache is shared
    for i in range(2):
        ref, ref_mask = ds[(i, 3)]
        x, mask = raw[(i, 3)]
        assert x.dtype == (torch.uint8 if dtype == np.uint8 else torch.float32)
        a, b = ds.normalization.device_affine(x.dtype, "cpu")
        got = torch.addcmul(b, x[None].float(), a)[0]
        assert torch.allclose(got, ref, atol=1e-5) and torch.equal(mask, ref_mask)


def test_nifti_dataset_decodes_each_volume_once_and_pickles(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pickle

    import napari_segloss.data.datasets as datasets_module

    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    for name in ("a", "b"):
        _write_nifti(tmp_path / "images" / f"{name}.nii.gz", np.zeros((8, 8, 6), np.uint8))
        _write_nifti(tmp_path / "labels" / f"{name}.nii.gz", np.ones((8, 8, 6), np.uint8))
    pairs = [
        (tmp_path / "images" / f"{n}.nii.gz", tmp_path / "labels" / f"{n}.nii.gz") for n in "ab"
    ]
    ds = NiftiSliceDataset(pairs, in_channels=1)
    reads: list[str] = []
    real = datasets_module.read_nifti
    monkeypatch.setattr(
        datasets_module, "read_nifti", lambda p: reads.append(Path(p).name) or real(p)
    )
    assert ds.validate(num_classes=2, workers=4)["count"] == 12
    assert sorted(reads) == ["a.nii.gz", "a.nii.gz", "b.nii.gz", "b.nii.gz"]  # image + label
    clone = pickle.loads(pickle.dumps(ds))  # what a spawned DataLoader worker receives
    assert torch.equal(clone[7][1], ds[7][1])


# ------------------------------------------------------------------------------ refusals


def test_non_finite_pixels_are_refused_with_the_count() -> None:
    images = [np.ones((8, 8), np.float32) for _ in range(3)]
    images[1][0, :4] = np.nan
    images[2][0, 0] = np.inf
    masks = [np.eye(8, dtype=np.uint8)] * 3
    with pytest.raises(
        DataError, match=r"images\[1\]: 4 non-finite pixel value\(s\) \(NaN or Inf\)"
    ):
        ArrayDataset(images, masks, in_channels=1).validate(num_classes=2, workers=1)
    # a grey image repeated to an RGB model's 3 channels: pixels counted, not values
    with pytest.raises(DataError, match=r"images\[1\]: 4 non-finite pixel value\(s\) .* of 64;"):
        ArrayDataset(images, masks, in_channels=3).validate(num_classes=2, workers=1)


def test_all_empty_training_masks_are_refused_most_empty_warned(
    caplog: pytest.LogCaptureFixture,
) -> None:
    images = [np.zeros((8, 8), np.uint8) for _ in range(4)]
    empty = [np.zeros((8, 8), np.uint8) for _ in range(4)]
    with pytest.raises(DataError, match=r"all 4 training masks are empty.*> 127.*PNG"):
        ArrayDataset(images, empty, train=True).validate(num_classes=2)
    # a validation set may be empty (nothing is learnt from it)
    ArrayDataset(images, empty, train=False).validate(num_classes=2)
    one = [*empty[:3], np.eye(8, dtype=np.uint8)]
    with caplog.at_level("WARNING"):
        ArrayDataset(images, one, train=True).validate(num_classes=2)
    assert "3 of 4 training masks are empty" in caplog.text
    caplog.clear()
    half = [*empty[:2], np.eye(8, dtype=np.uint8), np.eye(8, dtype=np.uint8)]
    with caplog.at_level("WARNING"):
        ArrayDataset(images, half, train=True).validate(num_classes=2)
    assert caplog.text == ""


def test_jpeg_binary_masks_read_as_empty_are_refused(tmp_path: Path) -> None:
    """{0, 1} masks saved as JPEG binarise to all background (> 127): the first one read is
    refused, naming it and PNG."""
    root = write_folder(tmp_path, n=3)
    for p in sorted((root / "masks").iterdir()):
        mask = (np.asarray(Image.open(p)) > 0).astype(np.uint8)
        Image.fromarray(mask).save(p.with_suffix(".jpg"), quality=95)
        p.unlink()
    ds = FolderDataset(root, train=True)
    with pytest.raises(DataError, match=r"case0[0-2]\.jpg.*at most 1.*read as empty.*PNG"):
        ds.validate(num_classes=2)


def test_sixteen_bit_images_keep_their_type_in_messages(tmp_path: Path) -> None:
    import tifffile

    root = write_folder(tmp_path, n=2)
    for p in sorted((root / "images").iterdir()):
        tifffile.imwrite(p.with_suffix(".tif"), np.full((20, 24), 700, np.uint16))
        p.unlink()
    ds = FolderDataset(root, normalize="uint8", in_channels=1)
    with pytest.raises(DataError, match=r"case00\.tif: pixel type uint16 but normalize='uint8'"):
        ds.validate(num_classes=2)
    # min-max normalisation of the same files: read as uint16, scaled to float32
    image, _ = FolderDataset(root, in_channels=1)[0]
    assert image.dtype == torch.float32


@pytest.mark.parametrize("hw", [(960, 960), (530, 622), (200, 200)])
def test_resized_mask_stays_on_its_image(hw: tuple[int, int]) -> None:
    """data.size resizes the mask onto the same pixel centres as the image: plain NEAREST
    (floor(i * scale)) put Kvasir masks 0.3-0.5 px down/right of their polyp at 320 px."""
    yy, xx = np.mgrid[: hw[0], : hw[1]]
    disc = (yy - hw[0] * 0.5) ** 2 + (xx - hw[1] * 0.45) ** 2 < (min(hw) * 0.2) ** 2
    mask = disc.astype(np.uint8)
    ds = ArrayDataset([mask * 255], [mask], train=False, size=(320, 320), normalize="none")
    image, label = ds[0]
    grid = np.mgrid[:320, :320].reshape(2, -1)
    weights = image[0].numpy().ravel()
    img_centre = grid @ (weights / weights.sum())
    lab_centre = grid @ (label.numpy().ravel() / label.sum().item())
    assert np.abs(lab_centre - img_centre).max() < 0.1, (lab_centre, img_centre)


def test_rotation_and_zoom_resample_images_bilinearly_masks_nearest() -> None:
    """RandomAffine's default (NEAREST) also applied to images: rotated/zoomed training images
    were blocky copies of their pixels, not the bilinear resampling the module promises."""
    mask = np.zeros((64, 64), np.uint8)
    mask[:, 32:] = 1
    aug = {"hflip": 0.0, "vflip": 0.0, "rotate": 30.0, "zoom": (0.8, 1.2), "elastic_p": 0.0}
    ds = ArrayDataset([mask * 255], [mask], train=True, augmentation=aug, normalize="none")
    ds = ds.with_raw_output()
    image, label = ds[(0, 3)]
    values = image[0].unique()
    assert ((values > 0) & (values < 255)).any()  # blended pixels along the rotated edge
    assert set(label.unique().tolist()) <= {0, 1}


def test_val_fraction_split_keeps_the_frames_of_a_patient_together(tmp_path: Path) -> None:
    """ACDC-style volumes (patientNNN_frameMM: two frames of one heart) split with
    data.val_fraction: a patient's frames were drawn independently, so most validation patients
    also had a frame in training (32 of 36 on the real ACDC at val_fraction 0.2)."""
    root = tmp_path / "n"
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    for p in range(8):
        for frame in (1, 12):
            lab = np.zeros((8, 8, 2), np.uint8)
            lab[2:5, 2:5] = 1
            _write_nifti(root / "images" / f"patient{p:03d}_frame{frame:02d}.nii.gz", lab * 9)
            _write_nifti(root / "labels" / f"patient{p:03d}_frame{frame:02d}.nii.gz", lab)

    def patients(ds: NiftiSliceDataset) -> set[str]:
        return {a.name.split("_")[0] for a, _ in ds.pairs}

    for seed in range(4):
        data = {"kind": "nifti", "root": str(root), "masks": "labels", "val_fraction": 0.25}
        cfg = load_config({"data": data, "train": {"seed": seed}})
        tr, va = build_datasets(cfg)
        assert len(va.pairs) == 4 and len(tr.pairs) == 12  # 2 of 8 patients, both frames
        assert not patients(tr) & patients(va), seed


def test_grouped_split_is_the_plain_split_for_ungrouped_ids() -> None:
    """Stems without a frame suffix (Kvasir) split exactly as before grouping existed."""
    stems = [f"case{i:02d}" for i in range(30)]
    plain = split_ids(stems, 0.2, 3, limit=25)
    assert split_ids(stems, 0.2, 3, limit=25, group=lambda s: s) == plain
    pairs = split_ids(stems, 0.5, 1, group=lambda s: s[:-1])  # case0x together, ...
    assert not {s[:-1] for s in pairs[0]} & {s[:-1] for s in pairs[1]}


def test_grey_level_labels_are_called_so_not_asked_for_256_classes() -> None:
    """A lossless mask holding grey levels {0, 128, 255} (three classes saved as grey) got
    "label 255 ... set model.classes", nudging towards 256 classes; it now names the levels
    and says to relabel them 0..2. Contiguous labels keep the model.classes advice."""
    from napari_segloss.data.datasets import LabelTally

    tally = LabelTally(num_classes=2, hint=" (model.classes)")
    counts = np.zeros(256, np.int64)
    counts[[0, 128, 255]] = 5
    with pytest.raises(DataError, match=r"labels \{0, 128, 255\}.*relabel it to 0\.\.2"):
        tally.add("a.png", counts)
    with pytest.raises(DataError, match=r"has label 2 but the model predicts 2 classes"):
        tally.add("b.png", np.array([5, 5, 5]))


def _tagged_jpeg(path: Path, stored: np.ndarray, orientation: int) -> None:
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(stored).save(path, quality=95, exif=exif)


@pytest.mark.parametrize("drawn_on", ["viewer", "stored"])
def test_exif_rotated_photo_is_paired_as_its_mask_was_drawn(tmp_path: Path, drawn_on: str) -> None:
    """A phone photo stored 40x60 with orientation 6 shows as 60x40 in photo viewers. A mask
    drawn there (60x40) was refused as a size mismatch; the image is now turned as the viewer
    shows it. A mask drawn on the stored pixels (as napari shows them) keeps them."""
    from PIL import ImageOps

    root = tmp_path / "data"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    stored = np.zeros((40, 60), np.uint8)
    stored[5:15, 40:55] = 255  # a bright object top right in the stored pixels
    _tagged_jpeg(root / "images" / "a.jpg", stored, 6)
    with Image.open(root / "images" / "a.jpg") as img:
        seen = np.asarray(ImageOps.exif_transpose(img))  # what a photo viewer shows
    picture = seen if drawn_on == "viewer" else stored
    Image.fromarray((picture > 127).astype(np.uint8)).save(root / "masks" / "a.png")
    image, target = FolderDataset(root, train=False, normalize="none")[0]
    assert tuple(image.shape[-2:]) == picture.shape
    bright = image[0] > image[0].mean()
    assert (bright == target.bool()).float().mean() > 0.97  # the mask lies on the object


@pytest.mark.parametrize("orientation", [3, 2])
def test_exif_tag_with_a_shape_that_fits_both_ways_is_refused(
    tmp_path: Path, orientation: int
) -> None:
    """Flipped or turned by 180 degrees, the shapes cannot tell on which picture the mask was
    drawn: guessing could train on a mask upside down."""
    root = tmp_path / "data"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    _tagged_jpeg(root / "images" / "a.jpg", np.zeros((40, 60), np.uint8), orientation)
    Image.fromarray(np.zeros((40, 60), np.uint8)).save(root / "masks" / "a.png")
    with pytest.raises(DataError, match=r"a\.jpg: the image carries an EXIF orientation tag"):
        FolderDataset(root, train=False)[0]


def test_folder_dataset_opens_each_image_once(tmp_path: Path, monkeypatch) -> None:
    """The EXIF tag is read in the open that decodes the pixels: _read opened every image a
    second time (exif_orientation) just for the tag. Same pixels, same orientation."""
    from napari_segloss.data import io

    root = tmp_path / "data"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    stored = np.zeros((40, 60), np.uint8)
    stored[5:15, 40:55] = 255
    for stem in ("a", "b"):
        _tagged_jpeg(root / "images" / f"{stem}.jpg", stored, 6)  # viewers show it 60x40
        Image.fromarray(np.zeros((60, 40), np.uint8)).save(root / "masks" / f"{stem}.png")
    opened: list[str] = []
    real_open = io.Image.open

    def counting_open(fp, *args, **kwargs):
        opened.append(Path(fp).name)
        return real_open(fp, *args, **kwargs)

    monkeypatch.setattr(io.Image, "open", counting_open)
    dataset = FolderDataset(root, train=False, normalize="none")
    dataset[0]  # item 0 also settles the normalisation: it was decoded twice for that
    assert opened == ["a.png", "a.jpg"], opened
    image, _ = dataset[1]
    assert opened[2:] == ["b.png", "b.jpg"], opened
    assert tuple(image.shape[-2:]) == (60, 40)  # still turned as the tag says
    pixels, orientation = io.read_image_and_orientation(root / "images" / "a.jpg")
    assert orientation == io.exif_orientation(root / "images" / "a.jpg") == 6
    assert np.array_equal(pixels, io.read_image(root / "images" / "a.jpg"))

"""Held-out sets and in-memory data in the dataset factory: data.test_root, split_ids shared by
folders and arrays, build_array_datasets, fingerprints and the layers: root."""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from napari_segloss.data.datasets import DataError
from napari_segloss.data.factory import (
    array_fingerprint,
    build_array_datasets,
    build_datasets,
    build_eval_dataset,
    build_test_dataset,
    resolve_root,
    split_ids,
)
from napari_segloss.data.io import path_stem, read_image, read_mask
from napari_segloss.samples import sample_files, sample_pairs_dir


def cfg(seed: int = 0, **data: Any) -> Any:
    """What the factory reads of a TrainConfig (engine.config validates the real one)."""
    d = {
        "kind": "folder",
        "root": str(sample_pairs_dir("kvasir_train")),
        "images": "images",
        "masks": "masks",
        "val_fraction": 0.2,
        "split_file": None,
        "test_root": None,
        "size": (32, 32),
        "crop": None,
        "slices": "2d",
        "cache": True,
        "augment": False,
        "augmentation": None,
        "limit": None,
        "normalize": "auto",
        **data,
    }
    return SimpleNamespace(
        data=SimpleNamespace(**d),
        model=SimpleNamespace(in_channels=3),
        train=SimpleNamespace(seed=seed),
    )


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_folders_and_arrays_split_alike(seed: int) -> None:
    train_ds, val_ds = build_datasets(cfg(seed))
    stems = [path_stem(img) for img, _ in sample_files("kvasir_train")]
    train_ids, val_ids = split_ids(stems, 0.2, seed)
    assert [Path(val_ds.item_name(i)).stem for i in range(len(val_ds))] == val_ids
    assert len(train_ds) == len(train_ids) == 26 and len(val_ids) == 6
    # arrays: the same permutation of positions (stems are sorted like positions)
    files = sample_files("kvasir_train")
    images = [read_image(i) for i, _ in files]
    masks = [read_mask(m) for _, m in files]
    _, a_val, a_test = build_array_datasets(cfg(seed), (images, masks))
    val_pos = [int(a_val.item_name(i)[len("images[") : -1]) for i in range(len(a_val))]
    assert [stems[p] for p in val_pos] == val_ids and a_test is None
    np.testing.assert_array_equal(a_val.load_pair(0)[1], val_ds.load_pair(0)[1])


def test_split_ids_edge_cases() -> None:
    assert split_ids([3, 1, 2], 0.0, 0) == ([1, 2, 3], [])
    train, val = split_ids(range(10), 0.01, 0)
    assert len(val) == 1 and len(train) == 9  # at least one validation item
    train, val = split_ids(range(2), 0.9, 0)
    assert len(val) == 1 and len(train) == 1  # at least one training item
    assert len(split_ids(range(10), 0.5, 0, limit=4)[1]) == 2


def test_held_out_folder_and_its_conflict_with_a_split_file(tmp_path: Path) -> None:
    test_ds = build_test_dataset(cfg(test_root="bundled:kvasir"))
    assert test_ds is not None and len(test_ds) == 3
    assert [Path(test_ds.item_name(i)).name for i in range(3)] == [
        img.name for img, _ in sample_files("kvasir")
    ]
    ds, split = build_eval_dataset(cfg(test_root="bundled:kvasir"))
    assert split == "test" and len(ds) == 3
    ds, split = build_eval_dataset(cfg())
    assert split == "val" and len(ds) == 6
    assert build_test_dataset(cfg()) is None
    split_dir = tmp_path / "splits"
    split_dir.mkdir()
    stems = [path_stem(img) for img, _ in sample_files("kvasir_train")]
    (split_dir / "train.txt").write_text("\n".join(stems[:20]))
    (split_dir / "val.txt").write_text("\n".join(stems[20:26]))
    (split_dir / "test.txt").write_text("\n".join(stems[26:]))
    with pytest.raises(DataError, match=r"'data\.test_root': data\.split_file already has a test"):
        build_test_dataset(cfg(split_file=split_dir, test_root="bundled:kvasir"))
    with pytest.raises(DataError, match=r"'data\.test_root': folder not found"):
        build_test_dataset(cfg(test_root=tmp_path / "nope"))


def test_array_datasets_names_heldout_and_errors() -> None:
    images = [np.full((8, 8, 3), i, np.uint8) for i in range(5)]
    masks = [np.eye(8, dtype=np.uint8) for _ in range(5)]
    train, val, test = build_array_datasets(
        cfg(val_fraction=0.4), (images, masks, [f"layer {i}" for i in range(5)]),
        heldout=(images[:2], masks[:2]),
    )  # fmt: skip
    assert len(train) == 3 and len(val) == 2 and len(test) == 2
    assert {train.item_name(0), val.item_name(0)} <= {f"layer {i}" for i in range(5)}
    assert [test.item_name(i) for i in range(2)] == ["heldout[0]", "heldout[1]"]
    assert test.normalization == train.normalization
    _, no_val, _ = build_array_datasets(cfg(val_fraction=0.0), (images, masks))
    assert no_val is None
    for pairs, message in [
        ((images, None), "data: no masks given"),
        ((images, masks[:3]), "5 image(s) but 3 mask(s)"),
        ((images, masks, ["a"]), "1 name(s) for 5 image(s)"),
        ("images", "expected (images, masks)"),
    ]:
        with pytest.raises(DataError, match=re.escape(message)):
            build_array_datasets(cfg(), pairs)  # type: ignore[arg-type]


def test_fingerprint_changes_with_any_pixel_shape_or_dtype() -> None:
    images = [np.zeros((4, 4), np.uint8), np.ones((4, 4), np.uint8)]
    masks = [np.zeros((4, 4), np.uint8)] * 2
    base = array_fingerprint(images, masks)
    assert base == array_fingerprint([a.copy() for a in images], masks) and len(base) == 12
    changed = [images[0].copy(), images[1]]
    changed[0][3, 3] = 1
    assert array_fingerprint(changed, masks) != base
    assert array_fingerprint([images[0].astype(np.uint16), images[1]], masks) != base
    assert array_fingerprint([images[0].reshape(2, 8), images[1]], masks) != base
    assert array_fingerprint(images[::-1], masks) != base


def test_a_layers_root_is_explained_not_searched() -> None:
    with pytest.raises(DataError, match="in-memory images and masks"):
        resolve_root("layers:0123456789ab")
    with pytest.raises(DataError, match=r"'data\.test_root'"):
        resolve_root("layers:0123456789ab", "data.test_root")

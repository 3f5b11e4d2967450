"""Tests for the shipped sample data (napari_segloss.samples)."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from napari_segloss.data.io import find_pairs, read_mask
from napari_segloss.samples import (
    SAMPLES_DIR,
    list_samples,
    load_sample,
    sample_class_names,
    sample_files,
    sample_pairs_dir,
)

# Polyp area fractions of the three shipped Kvasir frames (also written in NOTICE.md); the
# point of shipping these three is that they span small/medium/large foreground.
KVASIR_FOREGROUND = [0.111, 0.024, 0.436]


def test_list_samples() -> None:
    assert list_samples() == ["acdc", "kvasir", "kvasir_train"]


def test_sample_class_names_by_label_value() -> None:
    assert sample_class_names("acdc") == ["background", "RV", "MYO", "LV"]
    assert sample_class_names("kvasir") == sample_class_names("kvasir_train")
    assert sample_class_names("kvasir") == ["background", "polyp"]
    for name in list_samples():  # a name for every label the sample's masks hold
        _, mask = load_sample(name)
        assert int(mask.max()) < len(sample_class_names(name))
    with pytest.raises(ValueError, match="name must be one of"):
        sample_class_names("acdc2")


def test_kvasir_train_is_disjoint_from_the_kvasir_frames() -> None:
    # the quickstart trains on kvasir_train and scores on kvasir: no image may be in both
    train = sample_files("kvasir_train")
    assert len(train) == 32
    assert not {p.stem for p, _ in train} & {p.stem for p, _ in sample_files("kvasir")}
    fractions = []
    for index in (0, 15, 31):
        image, mask = load_sample("kvasir_train", index)
        assert image.ndim == 3 and image.shape[1] == 192 and image.shape[:2] == mask.shape
        assert set(np.unique(mask)) == {0, 1}
        fractions.append(mask.mean())
    assert 0.0 < min(fractions) and max(fractions) < 0.7


@pytest.mark.parametrize("index", [0, 1, 2])
def test_load_kvasir(index: int) -> None:
    image, mask = load_sample("kvasir", index)
    assert image.shape == (273, 320, 3) and image.dtype == np.uint8
    assert mask.shape == (273, 320) and mask.dtype == np.uint8
    assert set(np.unique(mask)) == {0, 1}
    assert mask.mean() == pytest.approx(KVASIR_FOREGROUND[index], abs=0.002)
    # polyp frames are not blank: a real picture has spread in every channel
    assert (image.reshape(-1, 3).std(axis=0) > 10).all()


def test_kvasir_default_index_and_negative_index() -> None:
    first = load_sample("kvasir")
    last = load_sample("kvasir", -1)
    assert np.array_equal(first[1], load_sample("kvasir", 0)[1])
    assert np.array_equal(last[1], load_sample("kvasir", 2)[1])


def test_load_acdc_napari_order() -> None:
    image, labels = load_sample("acdc")
    # file order (X, Y, Z) = (256, 216, 6) -> napari order (Z, Y, X)
    assert image.shape == labels.shape == (6, 216, 256)
    assert image.dtype == np.uint8 and labels.dtype == np.uint8
    assert set(np.unique(labels)) == {0, 1, 2, 3}
    # severe imbalance, as in the paper: background dominates
    assert (labels == 0).mean() > 0.9
    assert image.flags["C_CONTIGUOUS"] and labels.flags["C_CONTIGUOUS"]


@pytest.mark.parametrize(
    ("name", "index", "match"),
    [
        ("mnist", 0, r"name must be one of \['acdc', 'kvasir', 'kvasir_train'\], got 'mnist'"),
        ("kvasir", 3, r"index must be in \[-3, 2\] for sample 'kvasir' \(3 pair\(s\)\), got 3"),
        ("acdc", 1, r"index must be in \[-1, 0\].*got 1"),
        ("kvasir", 1.0, r"index must be an int, got float"),
    ],
)
def test_load_sample_validates(name: str, index, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        load_sample(name, index)


def test_sample_pairs_dir_is_a_pair_folder() -> None:
    root = sample_pairs_dir()
    assert root == sample_pairs_dir("kvasir") == SAMPLES_DIR / "kvasir"
    pairs = find_pairs(root)
    assert [p.suffix for p, _ in pairs] == [".jpg"] * 3
    assert [m.suffix for _, m in pairs] == [".png"] * 3
    assert pairs == sample_files("kvasir")
    assert (sample_pairs_dir("acdc") / "labels").is_dir()
    with pytest.raises(ValueError, match="name must be one of"):
        sample_pairs_dir("nope")


def test_shipped_jpeg_mask_needs_binarisation() -> None:
    jpeg = SAMPLES_DIR / "kvasir" / "jpeg_masks" / "cju5thdbrjp1108715xdfx356.jpg"
    raw = np.asarray(Image.open(jpeg))
    assert len(np.unique(raw)) > 18  # lossy grey levels, not a clean binary mask
    binarised = read_mask(jpeg)
    png = read_mask(SAMPLES_DIR / "kvasir" / "masks" / "cju5thdbrjp1108715xdfx356.png")
    assert set(np.unique(binarised)) == {0, 1}
    # same mask up to a handful of JPEG-edge pixels (the polyp itself is ~2 000 pixels)
    assert np.count_nonzero(binarised != png) < 0.01 * png.sum()


def test_samples_small_and_attributed() -> None:
    files = [p for p in SAMPLES_DIR.rglob("*") if p.is_file() and "__pycache__" not in p.parts]
    total = sum(p.stat().st_size for p in files)
    assert total < 5 * 1024 * 1024, f"samples are {total / 2**20:.1f} MiB, budget is 5 MiB"
    notice = (SAMPLES_DIR / "NOTICE.md").read_text(encoding="utf-8")
    for needle in (
        "Jha",
        "MMM 2020",
        "Bernard",
        "IEEE Transactions on Medical Imaging",
        "non-commercial",
    ):
        assert needle in notice
    # every shipped data file is named in the notice, so provenance stays traceable
    for p in files:
        if p.suffix in (".jpg", ".png", ".gz"):
            assert p.name.split(".")[0] in notice, p.name


def test_samples_match_shared_originals(kvasir_dir: Path, acdc_dir: Path) -> None:
    """The shipped files are faithful derivatives of the real data (resize only)."""
    for _, mask_path in sample_files("kvasir"):
        original = read_mask(kvasir_dir / "masks" / f"{mask_path.stem}.jpg")
        assert read_mask(mask_path).mean() == pytest.approx(original.mean(), abs=0.003)
    image, labels = load_sample("acdc")
    for sub, arr in (("labels", labels), ("images", image)):
        ref = np.asarray(nib.load(acdc_dir / sub / "patient080_frame01.nii.gz").dataobj)
        assert np.array_equal(arr, ref.T)


@pytest.mark.parametrize("name", ["kvasir", "kvasir_train", "acdc"])
def test_loaded_arrays_are_writable(name: str) -> None:
    # torch.from_numpy warns on read-only arrays, and notebooks edit masks in place
    image, mask = load_sample(name, 0)
    assert image.flags.writeable and mask.flags.writeable

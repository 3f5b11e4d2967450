"""napari reader + sample data: headless LayerData checks, then a real viewer (run under xvfb)."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from napari_segloss._napari_io import (
    MASK_COLORS,
    MAX_SEPARATE_PAIRS,
    acdc_sample,
    get_reader,
    is_labels_path,
    kvasir_sample,
    read_nifti_layers,
    read_pair_folder,
)

PLUGIN = "napari-segloss"


def _pair(root: Path, stem: str, shape=(6, 8), rgb=True, mask_ext=".png") -> None:
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(len(stem))
    image = rng.integers(0, 255, (*shape, 3) if rgb else shape, dtype=np.uint8)
    Image.fromarray(image).save(root / "images" / f"{stem}.jpg", quality=95)
    mask = np.zeros(shape, np.uint8)
    mask[1:3, 2:5] = 255
    Image.fromarray(mask).save(root / "masks" / f"{stem}{mask_ext}")


def _nifti(path: Path, arr: np.ndarray, zooms=(1.0, 1.0, 1.0)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = nib.Nifti1Image(arr, np.eye(4))
    img.header.set_zooms(zooms)
    nib.save(img, path)
    return path


# ------------------------------------------------------------------ headless: reader contract


@pytest.mark.parametrize(
    ("name", "labels"),
    [
        ("patient001_frame01_gt.nii.gz", True),
        ("case_seg.nii", True),
        ("segmentation.nii.gz", True),
        ("brainmask.nii.gz", True),
        ("Labels_01.nii.gz", True),
        ("images/length.nii.gz", False),  # 'gt' inside a word is not a label hint
        ("t1.nii.gz", False),
        ("labels/patient001.nii.gz", True),  # labels/ folder
        ("masks/patient001.nii.gz", True),
    ],
)
def test_is_labels_path(name: str, labels: bool) -> None:
    assert is_labels_path(Path("/data") / name) is labels


def test_get_reader_claims_only_what_it_reads(tmp_path: Path) -> None:
    _pair(tmp_path / "pairs", "a")
    vol = _nifti(tmp_path / "v.nii.gz", np.zeros((2, 3, 4), np.uint8))
    (tmp_path / "plain").mkdir()
    assert callable(get_reader(str(tmp_path / "pairs")))
    assert callable(get_reader(str(vol)))
    assert callable(get_reader([str(vol), str(vol)]))
    assert get_reader(str(tmp_path / "pairs" / "images" / "a.jpg")) is None
    assert get_reader(str(tmp_path / "plain")) is None
    assert get_reader([str(vol), str(tmp_path / "pairs" / "images" / "a.jpg")]) is None
    assert get_reader([]) is None


def test_pair_folder_same_size_is_stacked(tmp_path: Path) -> None:
    for stem in ("b", "a", "c"):
        _pair(tmp_path / "set", stem, mask_ext=".jpg" if stem == "c" else ".png")
    (image, ikw, itype), (labels, lkw, ltype) = get_reader(str(tmp_path / "set"))(
        str(tmp_path / "set")
    )
    assert (itype, ltype) == ("image", "labels")
    assert image.shape == (3, 6, 8, 3) and ikw["rgb"] is True
    assert labels.shape == (3, 6, 8) and labels.dtype == np.uint8
    assert (ikw["name"], lkw["name"]) == ("set images", "set masks")
    assert [Path(p).name for p in lkw["metadata"]["paths"]] == ["a.png", "b.png", "c.jpg"]
    expected = np.zeros((6, 8), np.uint8)
    expected[1:3, 2:5] = 1
    for k in range(3):  # the JPEG mask ('c') is binarised too: no grey levels
        assert np.array_equal(labels[k], expected)
    assert ikw["scale"] == (1.0, 1.0, 1.0) and lkw["scale"] == (1.0, 1.0, 1.0)


def test_pair_folder_different_sizes_open_separately(tmp_path: Path) -> None:
    _pair(tmp_path, "small", shape=(4, 4))
    _pair(tmp_path, "wide", shape=(4, 10), rgb=False)
    layers = read_pair_folder(tmp_path)
    assert [(kw["name"], t, d.shape) for d, kw, t in layers] == [
        ("small image", "image", (4, 4, 3)),
        ("small mask", "labels", (4, 4)),
        ("wide image", "image", (4, 10)),
        ("wide mask", "labels", (4, 10)),
    ]
    assert layers[2][1]["rgb"] is False and layers[2][1]["colormap"] == "gray"


def test_pair_folder_too_many_different_sizes_refused(tmp_path: Path) -> None:
    for k in range(MAX_SEPARATE_PAIRS + 1):
        _pair(tmp_path, f"p{k:02d}", shape=(4, 4 + k), rgb=False)
    with pytest.raises(ValueError, match=rf"{MAX_SEPARATE_PAIRS + 1} pairs.*different shapes"):
        read_pair_folder(tmp_path)


def test_pair_folder_mixed_bit_depths_says_so(tmp_path: Path) -> None:
    # one shape, 8-bit and 16-bit images: the refusal must not claim "different shapes"
    for k in range(MAX_SEPARATE_PAIRS + 1):
        _pair(tmp_path, f"p{k:02d}", shape=(4, 6), rgb=False)
    (tmp_path / "images" / "p00.jpg").unlink()
    Image.fromarray(np.full((4, 6), 40000, np.uint16)).save(tmp_path / "images" / "p00.png")
    with pytest.raises(ValueError, match=r"mix bit depths \(16-bit/float and 8-bit\)") as err:
        read_pair_folder(tmp_path)
    assert "different shapes" not in str(err.value)
    assert "one bit depth" in str(err.value)


def test_pair_folder_unmatched_names_file(tmp_path: Path) -> None:
    _pair(tmp_path, "a")
    Image.fromarray(np.zeros((6, 8), np.uint8)).save(tmp_path / "images" / "lonely.png")
    with pytest.raises(ValueError, match=r"without a mask: lonely\.png"):
        get_reader(str(tmp_path))(str(tmp_path))


def test_pair_folder_unreadable_file_names_it(tmp_path: Path) -> None:
    _pair(tmp_path, "a")
    (tmp_path / "images" / "b.png").write_bytes(b"not an image")
    (tmp_path / "masks" / "b.png").write_bytes(b"not an image")
    with pytest.raises(ValueError, match=r"cannot read .*(images|masks)/b\.png"):
        read_pair_folder(tmp_path)


def test_pair_folder_mask_shape_mismatch(tmp_path: Path) -> None:
    _pair(tmp_path, "a", shape=(6, 8))
    Image.fromarray(np.zeros((5, 8), np.uint8)).save(tmp_path / "masks" / "a.png")
    with pytest.raises(ValueError, match=r"a\.jpg.*\(6, 8\).*a\.png.*\(5, 8\)"):
        read_pair_folder(tmp_path)


def test_pair_folder_orients_an_exif_tagged_photo_as_training_does(tmp_path: Path) -> None:
    """A photo stored 40x60 with EXIF orientation 6 and its mask drawn on the rotated view
    (60x40) trained, but the reader refused the pair for its sizes."""
    stored = np.random.default_rng(1).integers(0, 255, (40, 60, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = 6
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    Image.fromarray(stored).save(tmp_path / "images" / "a.jpg", quality=95, exif=exif)
    Image.fromarray(np.zeros((60, 40), np.uint8)).save(tmp_path / "masks" / "a.png")
    (image, *_), (labels, *_) = read_pair_folder(tmp_path)
    assert image.shape == (1, 60, 40, 3) and labels.shape == (1, 60, 40)


def test_pair_folder_of_volumes_with_a_stray_2d_file_says_so(tmp_path: Path) -> None:
    _nifti(tmp_path / "images" / "p1.nii.gz", np.ones((4, 3, 2), np.uint8))
    _nifti(tmp_path / "labels" / "p1.nii.gz", np.ones((4, 3, 2), np.uint8))
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "images" / "preview.png")
    with pytest.raises(ValueError, match=r"both NIfTI volumes and 2D image files"):
        read_pair_folder(tmp_path)


def test_pair_folder_needs_subfolders(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"must contain 'images/' and 'masks/'"):
        read_pair_folder(tmp_path)


def test_nifti_reader_orders_axes_and_picks_layer_type(tmp_path: Path) -> None:
    arr = np.arange(24, dtype=np.uint8).reshape(4, 3, 2) % 4  # (X, Y, Z)
    img = _nifti(tmp_path / "heart.nii.gz", arr, (0.5, 0.75, 2.0))
    seg = _nifti(tmp_path / "heart_gt.nii.gz", arr, (0.5, 0.75, 2.0))
    [(data, kw, ltype)] = read_nifti_layers(img)
    assert ltype == "image" and data.shape == (2, 3, 4) and kw["scale"] == (2.0, 0.75, 0.5)
    assert data[1, 2, 3] == arr[3, 2, 1]
    assert kw["rgb"] is False and kw["name"] == "heart"
    [(data, kw, ltype)] = read_nifti_layers(seg)
    assert ltype == "labels" and kw["name"] == "heart_gt" and data.dtype == np.uint8


def _nifti_affine(path: Path, arr: np.ndarray, affine: np.ndarray) -> Path:
    """A NIfTI file whose header (sform, qform and pixdim) comes from ``affine``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(arr, affine), path)
    return path


#: anisotropic (X, Y, Z) spacing, different on every axis so a swap shows (exact in the
#: header's float32), and an origin in mm
_SPACING, _ORIGIN = (0.75, 1.5, 10.0), (-100.0, 50.0, 20.0)


def _marked_volume() -> tuple[np.ndarray, tuple[int, int, int]]:
    arr = np.zeros((5, 4, 3), np.uint8)  # (X, Y, Z)
    marked = (3, 1, 2)
    arr[marked] = 2
    return arr, marked


def test_nifti_image_and_labels_files_overlay_in_header_space(tmp_path: Path) -> None:
    """Two files with one header (image, labels): spacing on the matching napari axes (Z, Y, X)
    and the origin as translate, so a voxel sits where the header puts it, in both layers. The
    reader ignored the origin: voxel 0 sat at 0 instead of the header's (-100, 50, 20) mm."""
    arr, (i, j, k) = _marked_volume()
    affine = np.diag([*_SPACING, 1.0])
    affine[:3, 3] = _ORIGIN
    [(image, ikw, _)] = read_nifti_layers(_nifti_affine(tmp_path / "ct.nii.gz", arr, affine))
    [(labels, lkw, _)] = read_nifti_layers(_nifti_affine(tmp_path / "ct_seg.nii.gz", arr, affine))
    for data, kw in ((image, ikw), (labels, lkw)):
        assert kw["scale"] == (10.0, 1.5, 0.75) and kw["translate"] == (20.0, 50.0, -100.0)
        assert data[k, j, i] == 2 and data.sum() == 2
        world = np.asarray(kw["translate"]) + np.asarray(kw["scale"]) * (k, j, i)
        assert np.allclose(world[::-1], (affine @ (i, j, k, 1))[:3])  # header's (x, y, z) mm


@pytest.mark.parametrize("kind", ["oblique", "flipped"])
def test_nifti_origin_not_used_where_it_would_misplace_the_volume(
    tmp_path: Path, kind: str
) -> None:
    """A rotated or flipped affine: voxel 0 is not at the origin along the array axes, so no
    translate (a shift by the origin would put the volume somewhere it is not)."""
    arr, _ = _marked_volume()
    if kind == "oblique":
        c, s = np.cos(0.5), np.sin(0.5)
        affine = np.diag([1.0, 1.0, 1.0, 1.0])
        affine[:3, :3] = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]]) @ np.diag(_SPACING)
    else:
        affine = np.diag([-_SPACING[0], -_SPACING[1], _SPACING[2], 1.0])
    affine[:3, 3] = _ORIGIN
    [(_, kw, _)] = read_nifti_layers(_nifti_affine(tmp_path / "mr.nii.gz", arr, affine))
    assert kw["translate"] == (0.0, 0.0, 0.0)
    assert np.allclose(kw["scale"], (10.0, 1.5, 0.75))


def test_nifti_pair_folder_overlays_when_the_labels_header_lost_the_origin(
    make_napari_viewer, tmp_path: Path
) -> None:
    """A pair folder is a voxel-for-voxel pairing (as it trains): both layers take the image's
    geometry, even when the labels were saved with an identity affine."""
    arr, (i, j, k) = _marked_volume()
    affine = np.diag([*_SPACING, 1.0])
    affine[:3, 3] = _ORIGIN
    _nifti_affine(tmp_path / "images" / "p1.nii.gz", arr, affine)
    _nifti_affine(tmp_path / "labels" / "p1.nii.gz", arr, np.eye(4))
    viewer = make_napari_viewer()
    viewer.open(str(tmp_path), plugin=PLUGIN)
    image, labels = viewer.layers["p1 image"], viewer.layers["p1 labels"]
    assert tuple(image.translate) == (20.0, 50.0, -100.0)
    assert tuple(labels.scale) == tuple(image.scale) == (10.0, 1.5, 0.75)
    world = image.data_to_world((k, j, i))
    assert tuple(np.round(labels.world_to_data(world)).astype(int)) == (k, j, i)
    assert labels.data[k, j, i] == 2


def test_nifti_labels_must_be_integers(tmp_path: Path) -> None:
    seg = _nifti(tmp_path / "x_seg.nii", np.full((2, 2, 2), 0.5, np.float32))
    with pytest.raises(ValueError, match=r"x_seg\.nii.*as labels.*must be integers, found 0\.5"):
        read_nifti_layers(seg)
    # resampled labels stored as float hold 0.99999 for 1: label 1, not refused
    arr = np.zeros((2, 2, 2), np.float32)
    arr[0] = 0.99999
    ((data, _, ltype),) = read_nifti_layers(_nifti(tmp_path / "y_seg.nii", arr))
    assert ltype == "labels" and data.dtype == np.uint8
    assert np.array_equal(data, arr.round().astype(np.uint8).T)


def test_nifti_4d_refused_naming_file(tmp_path: Path) -> None:
    cine = _nifti(tmp_path / "cine.nii.gz", np.zeros((2, 2, 2, 3), np.uint8), (1, 1, 1, 1))
    with pytest.raises(ValueError, match=r"cine\.nii\.gz"):
        get_reader(str(cine))(str(cine))


def test_nifti_pair_folder(tmp_path: Path) -> None:
    for stem, z in (("p1", 2), ("p2", 3)):
        _nifti(tmp_path / "images" / f"{stem}.nii.gz", np.ones((4, 3, z), np.uint8))
        _nifti(tmp_path / "labels" / f"{stem}.nii.gz", np.full((4, 3, z), 2, np.uint8))
    layers = read_pair_folder(tmp_path)
    assert [(kw["name"], t, d.shape) for d, kw, t in layers] == [
        ("p1 image", "image", (2, 3, 4)),
        ("p1 labels", "labels", (2, 3, 4)),
        ("p2 image", "image", (3, 3, 4)),
        ("p2 labels", "labels", (3, 3, 4)),
    ]


def test_sample_functions_return_layer_data() -> None:
    (image, ikw, itype), (mask, mkw, mtype) = kvasir_sample()
    assert (ikw["name"], itype, image.shape) == ("kvasir image", "image", (3, 273, 320, 3))
    assert (mkw["name"], mtype, mask.shape) == ("kvasir mask", "labels", (3, 273, 320))
    assert set(np.unique(mask)) == {0, 1}
    (image, ikw, _), (labels, lkw, _) = acdc_sample()
    assert (ikw["name"], lkw["name"]) == ("acdc image", "acdc labels")
    assert image.shape == labels.shape == (6, 216, 256)
    assert set(np.unique(labels)) == {0, 1, 2, 3}
    # the classes are named in the layer: the panels read the metadata, napari's status bar
    # the "class" feature under the cursor
    assert mkw["metadata"]["class_names"] == ["background", "polyp"]
    assert lkw["metadata"]["class_names"] == ["background", "RV", "MYO", "LV"]
    assert list(lkw["features"]["class"]) == lkw["metadata"]["class_names"]
    assert lkw["metadata"]["paths"]  # kept beside the names


# ------------------------------------------------------------------------- npe2 + real viewer


def test_manifest_discovered_by_npe2() -> None:
    npe2 = pytest.importorskip("npe2")
    pm = npe2.PluginManager.instance()
    pm.discover()
    manifest = pm.get_manifest(PLUGIN)
    assert [s.key for s in manifest.contributions.sample_data] == ["kvasir", "acdc"]
    readers = {r.command for r in pm.iter_compatible_readers(["/x/patient_gt.nii.gz"])}
    assert f"{PLUGIN}.get_reader" in readers


def test_viewer_opens_samples(make_napari_viewer) -> None:
    viewer = make_napari_viewer()
    viewer.open_sample(PLUGIN, "kvasir")
    _, acdc = viewer.open_sample(PLUGIN, "acdc")
    z, y, x = np.argwhere(acdc.data == 2)[0]  # a MYO voxel: the status bar names its class
    status = acdc.get_status(
        acdc.data_to_world((z, y, x)), view_direction=None, dims_displayed=[1, 2], world=True
    )
    assert status["value"] == "2; class: MYO"
    layers = {layer.name: layer for layer in viewer.layers}
    assert list(layers) == ["kvasir image", "kvasir mask", "acdc image", "acdc labels"]
    assert type(layers["kvasir image"]).__name__ == "Image" and layers["kvasir image"].rgb
    assert type(layers["kvasir mask"]).__name__ == "Labels"
    assert type(layers["acdc labels"]).__name__ == "Labels"
    assert layers["kvasir image"].data.shape == (3, 273, 320, 3)
    assert layers["kvasir mask"].data.shape == (3, 273, 320)
    assert set(np.unique(layers["kvasir mask"].data)) == {0, 1}
    assert layers["acdc image"].data.shape == (6, 216, 256)
    assert set(np.unique(layers["acdc labels"].data)) == {0, 1, 2, 3}
    assert viewer.dims.ndim == 3  # slice slider for the stack / the short-axis slices


def test_viewer_opens_files_through_reader(make_napari_viewer, tmp_path: Path) -> None:
    _pair(tmp_path / "pairs", "a")
    _pair(tmp_path / "pairs", "b")
    seg = _nifti(tmp_path / "labels" / "vol.nii.gz", np.zeros((4, 3, 2), np.uint8), (1, 1, 3))
    viewer = make_napari_viewer()
    viewer.open(str(tmp_path / "pairs"), plugin=PLUGIN)
    viewer.open(str(seg), plugin=PLUGIN)
    assert [layer.name for layer in viewer.layers] == ["pairs images", "pairs masks", "vol labels"]
    assert type(viewer.layers["vol labels"]).__name__ == "Labels"
    assert tuple(viewer.layers["vol labels"].scale) == (3.0, 1.0, 1.0)


def test_stacked_labels_layer_is_named_after_its_folder(make_napari_viewer, tmp_path) -> None:
    _pair(tmp_path / "set", "a")
    (tmp_path / "set" / "masks").rename(tmp_path / "set" / "labels")
    viewer = make_napari_viewer()
    viewer.open(str(tmp_path / "set"), plugin=PLUGIN)
    assert [layer.name for layer in viewer.layers] == ["set images", "set labels"]


def test_separate_pairs_show_only_the_top_pair(make_napari_viewer, tmp_path: Path) -> None:
    # different sizes (2D) and a NIfTI pair folder open as separate pairs on one canvas: a mask
    # drawn over another file's image would be misleading, so only the last pair is visible
    _pair(tmp_path / "sizes", "small", shape=(4, 4))
    _pair(tmp_path / "sizes", "wide", shape=(4, 10), rgb=False)
    for stem, z in (("p1", 2), ("p2", 3)):
        _nifti(tmp_path / "vols" / "images" / f"{stem}.nii.gz", np.ones((4, 3, z), np.uint8))
        _nifti(tmp_path / "vols" / "labels" / f"{stem}.nii.gz", np.ones((4, 3, z), np.uint8))
    viewer = make_napari_viewer()
    for folder, top in (
        ("sizes", {"wide image", "wide mask"}),
        ("vols", {"p2 image", "p2 labels"}),
    ):
        viewer.layers.clear()
        viewer.open(str(tmp_path / folder), plugin=PLUGIN)
        assert len(viewer.layers) == 4
        assert {layer.name for layer in viewer.layers if layer.visible} == top


def test_nifti_image_and_labels_with_one_name_get_distinct_names(
    make_napari_viewer, tmp_path: Path
) -> None:
    """ACDC-style layout: images/x.nii.gz + labels/x.nii.gz must not become 'x' and 'x [1]'."""
    arr = np.zeros((4, 3, 2), np.uint8)
    image = _nifti(tmp_path / "images" / "patient001_frame01.nii.gz", arr)
    labels = _nifti(tmp_path / "labels" / "patient001_frame01.nii.gz", arr)
    viewer = make_napari_viewer()
    viewer.open(str(image), plugin=PLUGIN)
    viewer.open(str(labels), plugin=PLUGIN)
    assert [ly.name for ly in viewer.layers] == [
        "patient001_frame01",
        "patient001_frame01 labels",
    ]
    # a file whose name says it holds labels keeps its name
    [(_, kw, _)] = read_nifti_layers(_nifti(tmp_path / "p_gt.nii.gz", arr))
    assert kw["name"] == "p_gt"


@pytest.mark.parametrize("sub", ["images", "masks"])
def test_reader_says_what_to_open_for_a_sub_folder(make_napari_viewer, tmp_path, sub) -> None:
    _pair(tmp_path / "set", "a")
    viewer = make_napari_viewer()
    with pytest.raises(Exception, match=rf"{sub}/ sub-folder of a pair folder: open its parent"):
        viewer.open(str(tmp_path / "set" / sub), plugin=PLUGIN)
    assert len(viewer.layers) == 0


def test_reader_messages_for_folders_it_cannot_open(tmp_path: Path) -> None:
    (tmp_path / "only_images" / "images").mkdir(parents=True)
    with pytest.raises(ValueError, match=r"has images/ but no masks/ or labels/.*a NIfTI file"):
        get_reader(str(tmp_path / "only_images"))(str(tmp_path / "only_images"))
    _nifti(tmp_path / "vols" / "a.nii.gz", np.zeros((2, 2, 2), np.uint8))
    with pytest.raises(ValueError, match=r"holds NIfTI files but no images/ and labels/"):
        get_reader(str(tmp_path / "vols"))(str(tmp_path / "vols"))
    (tmp_path / "plain").mkdir()  # nothing of ours: other readers may take it
    assert get_reader(str(tmp_path / "plain")) is None


def test_too_many_nifti_volumes_gives_the_real_limit(tmp_path: Path) -> None:
    for k in range(MAX_SEPARATE_PAIRS + 2):
        _nifti(tmp_path / "images" / f"p{k:02d}.nii.gz", np.zeros((2, 2, 2), np.uint8))
        _nifti(tmp_path / "labels" / f"p{k:02d}.nii.gz", np.zeros((2, 2, 2), np.uint8))
    with pytest.raises(ValueError) as info:
        read_pair_folder(tmp_path)
    text = str(info.value)
    assert f"{MAX_SEPARATE_PAIRS + 2} NIfTI volume pairs" in text
    assert f"at most {MAX_SEPARATE_PAIRS} at once" in text
    assert "p00.nii.gz" in text and "open its two files" in text
    assert "Resize" not in text  # resizing does not apply to volumes


def test_sample_masks_stand_out_on_the_tissue(make_napari_viewer) -> None:
    viewer = make_napari_viewer()
    viewer.open_sample(PLUGIN, "kvasir")
    image, mask = viewer.layers["kvasir image"], viewer.layers["kvasir mask"]
    color = np.asarray(mask.colormap.map(np.array([1]))[0])
    assert color[3] == 1.0 and mask.opacity >= 0.5
    assert mask.colormap.map(np.array([0]))[0][3] == 0  # background transparent
    tissue = np.asarray(image.data)[np.asarray(mask.data) == 1].mean(axis=0) / 255
    # far from the (reddish) tissue under it: not napari's dark brown default
    assert np.abs(color[:3] - tissue).sum() > 1.0, (color, tissue)
    viewer.open_sample(PLUGIN, "acdc")
    acdc = viewer.layers["acdc labels"]
    colors = acdc.colormap.map(np.array([1, 2, 3]))
    assert len({tuple(np.round(c, 3)) for c in colors}) == 3  # RV, MYO, LV distinct


def test_sample_masks_use_a_cyclic_colormap(make_napari_viewer) -> None:
    """The masks get MASK_COLORS as napari's cyclic colormap (a list), not a direct one (a
    dict): the same colours for labels 0..3, without the numba compile napari runs for the
    first direct colormap of a process (0.6 s of opening the sample, benchmarks/RESULTS.md)."""
    from napari.utils.colormaps import CyclicLabelColormap

    viewer = make_napari_viewer()
    for sample, name in (("kvasir", "kvasir mask"), ("acdc", "acdc labels")):
        viewer.open_sample(PLUGIN, sample)
        colormap = viewer.layers[name].colormap
        assert isinstance(colormap, CyclicLabelColormap), type(colormap)
        expected = [MASK_COLORS[label] for label in range(4)]
        np.testing.assert_allclose(colormap.map(np.arange(4, dtype=np.uint8)), expected, atol=1e-6)


def test_error_overlay_colormap_is_cyclic() -> None:
    """The panels' error overlay: ERROR_COLORS for the labels 0-3 of ``error_labels``, as a
    cyclic colormap, so that the first overlay drawn does not pay napari's numba compile of a
    direct one on the main thread (now that opening the sample no longer pays it first)."""
    from napari.utils.colormaps import CyclicLabelColormap

    from napari_segloss._widgets._common import error_colormap
    from napari_segloss.overlay import ERROR_COLORS

    colormap = error_colormap()
    assert isinstance(colormap, CyclicLabelColormap), type(colormap)
    expected = [ERROR_COLORS[label] for label in range(4)]
    np.testing.assert_allclose(colormap.map(np.arange(4, dtype=np.uint8)), expected, atol=1e-6)


def test_viewer_reports_bad_folder_and_loads_nothing(make_napari_viewer, tmp_path: Path) -> None:
    _pair(tmp_path, "a")
    Image.fromarray(np.zeros((6, 8), np.uint8)).save(tmp_path / "masks" / "orphan.png")
    viewer = make_napari_viewer()
    with pytest.raises(Exception, match=r"orphan\.png") as info:
        viewer.open(str(tmp_path), plugin=PLUGIN)
    assert info.value is not None
    assert len(viewer.layers) == 0

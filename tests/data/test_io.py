"""Tests for napari_segloss.data.io: image/mask readers, pair discovery, NIfTI."""

from __future__ import annotations

import time
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import tifffile
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from napari_segloss.data.io import (
    IMAGE_EXTENSIONS,
    MASK_EXTENSIONS,
    NIFTI_EXTENSIONS,
    find_pairs,
    integer_labels,
    is_nifti,
    label_files_by_name,
    nifti_to_napari,
    path_stem,
    read_image,
    read_mask,
    read_nifti,
)


def _save(path: Path, arr: np.ndarray, **kwargs) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() in (".tif", ".tiff"):
        rgb = arr.ndim == 3 and arr.shape[-1] in (3, 4)
        tifffile.imwrite(path, arr, photometric="rgb" if rgb else "minisblack")
    else:
        Image.fromarray(arr).save(path, **kwargs)
    return path


def _touch_image(path: Path) -> Path:
    return _save(path, np.zeros((4, 4), np.uint8))


# --------------------------------------------------------------------------------- constants


def test_extensions_are_lowercase_dotted() -> None:
    for ext in ("png", "jpg", "jpeg", "tif", "tiff", "bmp"):
        assert f".{ext}" in IMAGE_EXTENSIONS
        assert f".{ext}" in MASK_EXTENSIONS
    assert NIFTI_EXTENSIONS == (".nii", ".nii.gz")


@pytest.mark.parametrize(
    ("name", "stem", "nifti"),
    [
        ("a.png", "a", False),
        ("scan.nii.gz", "scan", True),
        ("SCAN.NII.GZ", "SCAN", True),
        ("scan.nii", "scan", True),
        ("case.v2.jpg", "case.v2", False),
    ],
)
def test_path_stem_and_is_nifti(name: str, stem: str, nifti: bool) -> None:
    assert path_stem(name) == stem
    assert is_nifti(name) is nifti


# ---------------------------------------------------------------------------------- read_image


def test_read_image_gray_rgb_and_rgba(tmp_path: Path) -> None:
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4)
    rgb = np.arange(36, dtype=np.uint8).reshape(3, 4, 3)
    rgba = np.concatenate([rgb, np.full((3, 4, 1), 7, np.uint8)], axis=-1)
    out = read_image(_save(tmp_path / "g.png", gray))
    assert out.dtype == np.uint8 and np.array_equal(out, gray)
    assert np.array_equal(read_image(_save(tmp_path / "c.bmp", rgb)), rgb)
    out = read_image(_save(tmp_path / "a.png", rgba))
    assert out.shape == (3, 4, 3) and np.array_equal(out, rgb)  # alpha dropped, colours kept


def test_read_image_palette_and_bilevel(tmp_path: Path) -> None:
    idx = np.array([[0, 1], [2, 1]], np.uint8)
    img = Image.fromarray(idx, mode="P")
    img.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0] + [0] * (256 * 3 - 9))
    img.save(tmp_path / "p.png")
    out = read_image(tmp_path / "p.png")  # a palette photo is shown in its colours
    assert out.shape == (2, 2, 3)
    assert out[0, 1].tolist() == [255, 0, 0] and out[1, 0].tolist() == [0, 255, 0]
    Image.fromarray(np.array([[True, False]])).save(tmp_path / "b.png")
    assert read_image(tmp_path / "b.png").tolist() == [[255, 0]]


def test_read_image_16bit_and_float_tiff_keep_values(tmp_path: Path) -> None:
    deep = np.array([[0, 1000], [40000, 65535]], np.uint16)
    out = read_image(_save(tmp_path / "d.png", deep))
    assert out.dtype == np.float32 and np.array_equal(out, deep.astype(np.float32))
    flt = np.array([[0.25, -1.5], [3.0, 1e3]], np.float32)
    out = read_image(_save(tmp_path / "f.tif", flt))
    assert out.dtype == np.float32 and np.array_equal(out, flt)


def test_read_image_missing_file_names_it(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"nope\.png"):
        read_image(tmp_path / "nope.png")


def test_read_image_rejects_unknown_extension(tmp_path: Path) -> None:
    path = tmp_path / "x.gif"
    path.write_bytes(b"GIF89a")
    with pytest.raises(ValueError, match=r"x\.gif.*unsupported extension '\.gif'"):
        read_image(path)


def test_read_image_corrupt_file_names_it(tmp_path: Path) -> None:
    path = tmp_path / "broken.png"
    path.write_bytes(b"definitely not a png")
    with pytest.raises(ValueError, match=r"cannot read .*broken\.png"):
        read_image(path)


def test_read_image_rejects_stacks(tmp_path: Path) -> None:
    path = _save(tmp_path / "stack.tif", np.zeros((2, 3, 4, 5), np.uint8))
    with pytest.raises(ValueError, match=r"stack\.tif.*\(2, 3, 4, 5\)"):
        read_image(path)


# ----------------------------------------------------------------------------------- read_mask


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([[0, 255], [255, 0]], [[0, 1], [1, 0]]),  # 8-bit binary mask -> {0, 1}
        ([[255, 255], [255, 255]], [[1, 1], [1, 1]]),  # all foreground
        ([[0, 0], [0, 0]], [[0, 0], [0, 0]]),  # empty mask
        ([[0, 1], [1, 0]], [[0, 1], [1, 0]]),  # already {0, 1}
        ([[0, 1], [2, 3]], [[0, 1], [2, 3]]),  # label map kept
        ([[0, 127], [128, 255]], [[0, 127], [128, 255]]),  # lossless: not {0,255} -> kept
    ],
)
@pytest.mark.parametrize("ext", [".png", ".tif", ".bmp"])
def test_read_mask_lossless_rules(tmp_path: Path, values, expected, ext: str) -> None:
    path = _save(tmp_path / f"m{ext}", np.array(values, np.uint8))
    out = read_mask(path)
    assert out.dtype == np.uint8
    assert np.array_equal(out, np.array(expected, np.uint8))


def test_read_mask_jpeg_binarised_at_127(tmp_path: Path) -> None:
    # Flat, block-aligned 8x8 tiles at quality 100 decode exactly, so the threshold is testable.
    mask = np.zeros((16, 16), np.uint8)
    # (grey regions between 64 and 191 are refused: test_read_mask_refuses_jpeg_grey_levels)
    mask[:8, :8], mask[:8, 8:], mask[8:, :8] = 40, 200, 255
    path = _save(tmp_path / "m.jpg", mask, quality=100)
    assert np.array_equal(np.asarray(Image.open(path)), mask)
    out = read_mask(path)
    expected = np.zeros((16, 16), np.uint8)
    expected[:8, 8:] = 1  # 200 > 127
    expected[8:, :8] = 1  # 255
    assert np.array_equal(out, expected)


def test_read_mask_lossy_jpeg_gives_two_values(tmp_path: Path) -> None:
    yy, xx = np.mgrid[:64, :64]
    disc = ((yy - 30) ** 2 + (xx - 33) ** 2 < 15**2).astype(np.uint8) * 255
    path = _save(tmp_path / "disc.jpeg", disc, quality=60)
    raw = np.asarray(Image.open(path))
    assert len(np.unique(raw)) > 2  # JPEG ringing made grey levels
    out = read_mask(path)
    assert set(np.unique(out)) == {0, 1}
    assert np.count_nonzero(out != disc // 255) <= 0.02 * disc.size


def test_read_mask_rgb_takes_max_over_channels(tmp_path: Path) -> None:
    rgb = np.zeros((2, 3, 3), np.uint8)
    rgb[0, 0] = rgb[0, 1] = (255, 0, 0)  # one colour: a binary mask
    rgb[1, 2] = (255, 0, 0)
    out = read_mask(_save(tmp_path / "m.png", rgb))
    assert np.array_equal(out, [[1, 1, 0], [0, 0, 1]])


def test_read_mask_rgb_jpeg(tmp_path: Path) -> None:
    rgb = np.zeros((32, 32, 3), np.uint8)
    rgb[:16, :16, 0] = 255  # red -> 1
    rgb[16:, 16:, 0] = 200  # red 200 > 127 -> 1
    rgb[:16, 16:, 0] = 40  # red 40 <= 127 -> 0
    out = read_mask(_save(tmp_path / "m.jpg", rgb, quality=100, subsampling=0))
    expected = np.zeros((32, 32), np.uint8)
    expected[:16, :16] = 1
    expected[16:, 16:] = 1
    assert np.array_equal(out, expected)


def test_read_mask_palette_png_keeps_indices(tmp_path: Path) -> None:
    idx = np.array([[0, 1], [2, 1]], np.uint8)
    img = Image.fromarray(idx, mode="P")
    img.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0] + [0] * (256 * 3 - 9))
    img.save(tmp_path / "p.png")
    assert np.array_equal(read_mask(tmp_path / "p.png"), idx)


def test_read_mask_bilevel_png(tmp_path: Path) -> None:
    Image.fromarray(np.array([[True, False], [False, True]])).save(tmp_path / "b.png")
    out = read_mask(tmp_path / "b.png")
    assert out.dtype == np.uint8 and np.array_equal(out, [[1, 0], [0, 1]])


def test_read_mask_integral_float_tiff(tmp_path: Path) -> None:
    path = _save(tmp_path / "f.tif", np.array([[0.0, 2.0], [3.0, 0.0]], np.float32))
    assert np.array_equal(read_mask(path), [[0, 2], [3, 0]])


@pytest.mark.parametrize(
    ("arr", "match"),
    [
        (np.array([[0.0, 0.5]], np.float32), r"f\.tif.*must be integers, found 0\.5"),
        (np.array([[0, 300]], np.uint16), r"f\.tif.*\[0, 300\].*0\.\.255"),
        (np.array([[0, -1]], np.int16), r"f\.tif.*non-negative, found -1"),
    ],
)
def test_read_mask_rejects_bad_values(tmp_path: Path, arr: np.ndarray, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        read_mask(_save(tmp_path / "f.tif", arr))


def _disc(shape=(64, 80), centre=(32, 40), r2=200) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 < r2


def test_read_mask_refuses_jpeg_grey_levels(tmp_path: Path) -> None:
    """Classes saved as grey levels 0/128/255 in a JPEG were merged into one class by the
    > 127 threshold; a 0/255 JPEG (Kvasir-SEG style, ringing on the edges) still reads."""
    grey = _disc().astype(np.uint8) * 128
    grey[_disc(centre=(10, 12), r2=50)] = 255
    with pytest.raises(ValueError, match=r"g\.jpg.*region of grey level.*losslessly"):
        read_mask(_save(tmp_path / "g.jpg", grey, quality=75))
    binary = _disc().astype(np.uint8) * 255
    assert np.array_equal(read_mask(_save(tmp_path / "b.jpg", binary, quality=30)), _disc())


def test_read_mask_refuses_jpeg_small_labels(tmp_path: Path) -> None:
    """Labels {0, 1, 2} saved as JPEG read as an empty mask."""
    labels = _disc().astype(np.uint8)
    labels[_disc(centre=(10, 12), r2=50)] = 2
    with pytest.raises(ValueError, match=r"l\.jpg.*at most [0-9]+.*read as empty"):
        read_mask(_save(tmp_path / "l.jpg", labels, quality=95))
    assert not read_mask(_save(tmp_path / "e.jpg", np.zeros((16, 16), np.uint8))).any()


@pytest.mark.parametrize(("ext", "quality"), [(".png", None), (".jpg", 75)])
def test_read_mask_refuses_colour_coded_classes(tmp_path: Path, ext: str, quality) -> None:
    """Red = class 1, green = class 2 was merged to one class by the max over channels."""
    rgb = np.zeros((64, 80, 3), np.uint8)
    rgb[_disc()] = (255, 0, 0)
    rgb[_disc(centre=(10, 12), r2=50)] = (0, 255, 0)
    kwargs = {"quality": quality} if quality else {}
    with pytest.raises(ValueError, match=r"2 foreground colours.*label map") as refused:
        read_mask(_save(tmp_path / f"c{ext}", rgb, **kwargs))
    assert "photo" not in str(refused.value)  # flat colours on black: not taken for a photo
    one = np.zeros((64, 80, 3), np.uint8)
    one[_disc()] = (255, 255, 0)  # one colour, JPEG-blurred edges: still a binary mask
    assert np.array_equal(read_mask(_save(tmp_path / f"y{ext}", one, **kwargs)), _disc())


def test_a_photo_read_as_a_mask_is_named_as_such() -> None:
    """`segloss evaluate --gt images/` said only 'colour-coded classes' of a Kvasir photo."""
    from napari_segloss.samples import sample_pairs_dir

    photo = sorted((sample_pairs_dir("kvasir") / "images").glob("*.jpg"))[0]
    with pytest.raises(
        ValueError, match=r"foreground colours.*as in a photo: is this an image given as a"
    ):
        read_mask(photo)


def test_read_mask_transparent_pixels_are_background(tmp_path: Path) -> None:
    """An overlay exported with white transparent background read as all foreground."""
    rgba = np.zeros((64, 80, 4), np.uint8)
    rgba[..., :3] = 255  # white, fully transparent
    rgba[_disc()] = (255, 0, 0, 255)
    assert np.array_equal(read_mask(_save(tmp_path / "o.png", rgba)), _disc())
    alpha_only = np.zeros((64, 80, 4), np.uint8)  # black everywhere, the object opaque
    alpha_only[_disc(), 3] = 255
    assert np.array_equal(read_mask(_save(tmp_path / "a.png", alpha_only)), _disc())


def test_read_mask_fully_transparent_is_empty(tmp_path: Path) -> None:
    """An empty overlay (white, alpha 0 everywhere) read as all foreground."""
    rgba = np.zeros((16, 20, 4), np.uint8)
    rgba[..., :3] = 255
    assert not read_mask(_save(tmp_path / "e.png", rgba)).any()


@pytest.mark.parametrize("level", [100, 40])
def test_read_mask_refuses_dark_colour_coded_classes(tmp_path: Path, level: int) -> None:
    """Dark red = class 1, dark green = class 2 were merged into one label (the colour check
    looked only at pixels brighter than 127)."""
    rgb = np.zeros((64, 80, 3), np.uint8)
    rgb[_disc()] = (level, 0, 0)
    rgb[_disc(centre=(10, 12), r2=50)] = (0, level, 0)
    with pytest.raises(ValueError, match=r"2 foreground colours"):
        read_mask(_save(tmp_path / "c.png", rgb))
    grey = np.zeros((64, 80, 3), np.uint8)  # an RGB label map: R = G = B = label
    grey[_disc()] = 1
    grey[_disc(centre=(10, 12), r2=50)] = 2
    assert sorted(np.unique(read_mask(_save(tmp_path / "g.png", grey)))) == [0, 1, 2]


def _png_rgb16(path: Path, rgb: np.ndarray) -> Path:
    """A 16-bit RGB PNG written by hand (Pillow cannot write one)."""
    h, w, _ = rgb.shape
    rows = b"".join(b"\x00" + rgb[i].astype(">u2").tobytes() for i in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return len(data).to_bytes(4, "big") + body + zlib.crc32(body).to_bytes(4, "big")

    ihdr = w.to_bytes(4, "big") + h.to_bytes(4, "big") + bytes([16, 2, 0, 0, 0])
    png = chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + png)
    return path


def test_16bit_colour_png_is_refused_not_cut_to_8_bits(tmp_path: Path) -> None:
    rgb = np.arange(5 * 6 * 3, dtype=np.uint16).reshape(5, 6, 3) * 700
    path = _png_rgb16(tmp_path / "deep.png", rgb)
    assert Image.open(path).mode == "RGB"  # what Pillow makes of it: 8 bits per channel
    for read in (read_image, read_mask):
        with pytest.raises(ValueError, match=r"deep\.png.*16-bit colour PNG.*TIFF"):
            read(path)


def test_planar_rgb_tiff_and_leading_singleton_axis(tmp_path: Path) -> None:
    rgb = np.random.default_rng(0).integers(0, 255, (20, 30, 3), dtype=np.uint8)
    planar = tmp_path / "planar.tif"
    tifffile.imwrite(planar, np.moveaxis(rgb, -1, 0), photometric="rgb", planarconfig="separate")
    assert np.array_equal(read_image(planar), rgb)
    mask = (rgb[..., 0] > 127).astype(np.uint8)
    lead = tmp_path / "lead.tif"
    tifffile.imwrite(lead, mask[None], photometric="minisblack")
    assert np.array_equal(read_mask(lead), mask)
    assert np.array_equal(read_image(lead), mask)


def test_imagej_composite_tiff_reads_channels_last(tmp_path: Path) -> None:
    """Fiji saves an RGB composite as an ImageJ hyperstack with axes CYX (channels first); it
    was refused as a (3, H, W) stack. A single-channel hyperstack (CYX, C = 1) is a 2D image."""
    rgb = np.random.default_rng(1).integers(0, 255, (20, 30, 3), dtype=np.uint8)
    composite = tmp_path / "composite.tif"
    tifffile.imwrite(composite, np.moveaxis(rgb, -1, 0), imagej=True, metadata={"axes": "CYX"})
    assert tifffile.TiffFile(composite).series[0].axes == "CYX"
    assert np.array_equal(read_image(composite), rgb)
    grey = tmp_path / "grey.tif"
    tifffile.imwrite(grey, rgb[None, ..., 0], imagej=True, metadata={"axes": "CYX"})
    assert np.array_equal(read_image(grey), rgb[..., 0])
    stack = tmp_path / "stack.tif"  # Z slices are not channels: still refused
    tifffile.imwrite(stack, np.moveaxis(rgb, -1, 0), imagej=True, metadata={"axes": "ZYX"})
    with pytest.raises(ValueError, match=r"got \(3, 20, 30\)"):
        read_image(stack)


def test_read_mask_grey_palette_reads_grey_levels(tmp_path: Path) -> None:
    """A palette PNG whose index 0 is white (Pillow's adaptive palette of a 0/255 mask) was
    read inverted; a grey palette now reads its grey levels, a colour palette its indices."""
    mask = _disc().astype(np.uint8) * 255
    Image.fromarray(mask).convert("P", palette=Image.ADAPTIVE, colors=2).save(tmp_path / "p.png")
    assert Image.open(tmp_path / "p.png").getpalette()[:3] == [255, 255, 255]
    assert np.array_equal(read_mask(tmp_path / "p.png"), _disc())


@pytest.mark.parametrize("ext", [".png", ".tif"])
def test_read_mask_16bit_binary(tmp_path: Path, ext: str) -> None:
    mask = _disc().astype(np.uint16) * 65535
    assert np.array_equal(read_mask(_save(tmp_path / f"m{ext}", mask)), _disc())


def test_read_mask_rounds_near_integer_floats(tmp_path: Path) -> None:
    """0.9999999 (resampled labels) was refused as non-integer; it is label 1."""
    labels = _disc().astype(np.float32) * np.float32(0.9999999)
    assert np.array_equal(read_mask(_save(tmp_path / "f.tif", labels)), _disc())


def test_as_labels() -> None:
    out = integer_labels(np.array([0.0, 0.99999, 2.0004]), "x")
    assert out.dtype == np.uint8 and out.tolist() == [0, 1, 2]
    assert integer_labels(np.array([0, 300], np.int32), "x").dtype == np.int64
    with pytest.raises(ValueError, match=r"'vol\.nii'.*found 0\.5.*nearest neighbour"):
        integer_labels(np.array([0.0, 0.5]), "vol.nii")
    with pytest.raises(ValueError, match="found nan"):
        integer_labels(np.array([0.0, np.nan]), "x")


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    data=st.lists(st.integers(0, 254), min_size=6, max_size=6).filter(
        lambda v: not set(v) <= {0, 255}
    )
)
def test_read_mask_png_label_roundtrip_property(tmp_path: Path, data: list[int]) -> None:
    """Any PNG label map that is not a {0,255} binary mask comes back unchanged."""
    arr = np.array(data, np.uint8).reshape(2, 3)
    assert np.array_equal(read_mask(_save(tmp_path / "l.png", arr)), arr)


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(bits=st.lists(st.booleans(), min_size=6, max_size=6))
def test_read_mask_binary_png_property(tmp_path: Path, bits: list[bool]) -> None:
    """A {0,255} PNG mask always becomes exactly mask // 255."""
    arr = np.array(bits, np.uint8).reshape(2, 3) * 255
    assert np.array_equal(read_mask(_save(tmp_path / "b.png", arr)), arr // 255)


# ---------------------------------------------------------------------------------- find_pairs


def test_find_pairs_matches_by_stem_sorted(tmp_path: Path) -> None:
    for stem in ("b", "a", "c"):
        _touch_image(tmp_path / "images" / f"{stem}.jpg")
    _touch_image(tmp_path / "masks" / "a.png")
    _touch_image(tmp_path / "masks" / "b.tif")
    _touch_image(tmp_path / "masks" / "c.JPG")  # extension case does not matter
    (tmp_path / "images" / ".hidden.jpg").write_bytes(b"")  # ignored
    (tmp_path / "masks" / "notes.txt").write_text("ignored")
    pairs = find_pairs(tmp_path)
    assert [(i.name, m.name) for i, m in pairs] == [
        ("a.jpg", "a.png"),
        ("b.jpg", "b.tif"),
        ("c.jpg", "c.JPG"),
    ]
    assert all(isinstance(i, Path) and i.is_absolute() == tmp_path.is_absolute() for i, _ in pairs)


def test_find_pairs_custom_folder_names(tmp_path: Path) -> None:
    _touch_image(tmp_path / "img" / "x.png")
    _touch_image(tmp_path / "gt" / "x.png")
    assert find_pairs(tmp_path, images="img", masks="gt") == [
        (tmp_path / "img" / "x.png", tmp_path / "gt" / "x.png")
    ]


def test_find_pairs_names_unmatched_in_both_directions(tmp_path: Path) -> None:
    _touch_image(tmp_path / "images" / "a.png")
    _touch_image(tmp_path / "images" / "only_image.png")
    _touch_image(tmp_path / "masks" / "a.png")
    _touch_image(tmp_path / "masks" / "only_mask.png")
    with pytest.raises(ValueError) as info:
        find_pairs(tmp_path)
    msg = str(info.value)
    assert "only_image.png" in msg and "without a mask" in msg
    assert "only_mask.png" in msg and "without an image" in msg
    assert "a.png" not in msg.replace("only_image.png", "").replace("only_mask.png", "")


def test_find_pairs_truncates_long_lists(tmp_path: Path) -> None:
    _touch_image(tmp_path / "masks" / "m.png")
    for i in range(15):
        _touch_image(tmp_path / "images" / f"i{i:02d}.png")
    _touch_image(tmp_path / "images" / "m.png")
    with pytest.raises(ValueError, match=r"15 image\(s\).*i00\.png.*\(5 more\)"):
        find_pairs(tmp_path)


@pytest.mark.parametrize("missing", ["images", "masks"])
def test_find_pairs_missing_folder(tmp_path: Path, missing: str) -> None:
    other = "masks" if missing == "images" else "images"
    _touch_image(tmp_path / other / "a.png")
    with pytest.raises(ValueError, match=rf"{missing} folder not found"):
        find_pairs(tmp_path)


def test_find_pairs_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "readme.txt").write_text("no images here")
    _touch_image(tmp_path / "masks" / "a.png")
    with pytest.raises(ValueError, match=r"images folder .* contains no files"):
        find_pairs(tmp_path)


def test_find_pairs_says_which_sub_folders_it_does_not_read(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Files in sub-folders were skipped without a word (only the top level is matched)."""
    _touch_image(tmp_path / "images" / "case1" / "a.png")
    _touch_image(tmp_path / "masks" / "case1" / "a.png")
    with pytest.raises(ValueError, match=r"only in its sub-folders 'case1', which are not read"):
        find_pairs(tmp_path)
    _touch_image(tmp_path / "images" / "b.png")
    _touch_image(tmp_path / "masks" / "b.png")
    with caplog.at_level("WARNING"):
        assert [a.name for a, _ in find_pairs(tmp_path)] == ["b.png"]
    assert "its sub-folders 'case1' are not read" in caplog.text


def test_find_pairs_duplicate_stem(tmp_path: Path) -> None:
    _touch_image(tmp_path / "images" / "a.png")
    _touch_image(tmp_path / "images" / "a.jpg")
    _touch_image(tmp_path / "masks" / "a.png")
    with pytest.raises(ValueError, match=r"two files with the stem 'a'"):
        find_pairs(tmp_path)


def test_label_files_by_name_and_find_pairs_refuse_one_stem_twice_alike(tmp_path: Path) -> None:
    """One lister for both: `segloss evaluate`'s label folders and find_pairs' folders refuse
    two files of one stem with one message naming the folder and both files (evaluate said
    "gt folder: a.jpg and a.png are one name", without the folder's path)."""
    _touch_image(tmp_path / "images" / "a.png")
    _touch_image(tmp_path / "images" / "a.jpg")
    _touch_image(tmp_path / "masks" / "a.png")
    expected = (
        f"images folder {str(tmp_path / 'images')!r} has two files with the stem 'a': "
        "'a.jpg' and 'a.png'; files are matched by stem, keep one"
    )
    with pytest.raises(ValueError) as from_pairs:
        find_pairs(tmp_path)
    with pytest.raises(ValueError) as from_labels:
        label_files_by_name(tmp_path / "images", "images")
    assert str(from_pairs.value) == str(from_labels.value) == expected


def test_label_files_by_name_takes_nifti_and_skips_probability_maps(tmp_path: Path) -> None:
    _touch_image(tmp_path / "a.png")
    (tmp_path / "b.nii.gz").write_bytes(b"")
    _touch_image(tmp_path / "c_probs.tif")
    (tmp_path / "b_probs.nii.gz").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("not a label file")
    files = label_files_by_name(tmp_path, "pred")
    assert files == {"a": tmp_path / "a.png", "b": tmp_path / "b.nii.gz"}


def test_find_pairs_root_must_exist(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"root must be an existing folder.*nowhere"):
        find_pairs(tmp_path / "nowhere")


def test_find_pairs_nifti(tmp_path: Path) -> None:
    for sub in ("images", "labels"):
        (tmp_path / sub).mkdir()
        for stem in ("p2", "p1"):
            nib.save(
                nib.Nifti1Image(np.zeros((2, 2, 2), np.uint8), np.eye(4)),
                tmp_path / sub / f"{stem}.nii.gz",
            )
    pairs = find_pairs(
        tmp_path,
        "images",
        "labels",
        image_extensions=NIFTI_EXTENSIONS,
        mask_extensions=NIFTI_EXTENSIONS,
    )
    assert [(i.name, m.name) for i, m in pairs] == [
        ("p1.nii.gz", "p1.nii.gz"),
        ("p2.nii.gz", "p2.nii.gz"),
    ]
    assert find_pairs(tmp_path, "images", "labels", nifti=True) == pairs
    with pytest.raises(ValueError, match="images"):  # 2D extensions find no volumes
        find_pairs(tmp_path, "images", "labels")


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    stems=st.sets(st.sampled_from(["a", "b", "c", "d", "e", "f"]), min_size=1),
    drop=st.sets(st.sampled_from(["a", "b", "c", "d", "e", "f"])),
)
def test_find_pairs_property(
    tmp_path_factory: pytest.TempPathFactory, stems: set[str], drop: set[str]
) -> None:
    """Pairs are exactly the common stems; any stem left without a partner is named."""
    root = tmp_path_factory.mktemp("pairs")
    for s in stems:
        _touch_image(root / "images" / f"{s}.jpg")
    masks = stems - drop or stems
    for s in masks:
        _touch_image(root / "masks" / f"{s}.png")
    if masks == stems:
        assert [path_stem(i) for i, _ in find_pairs(root)] == sorted(stems)
    else:
        with pytest.raises(ValueError) as info:
            find_pairs(root)
        for s in stems - masks:
            assert f"{s}.jpg" in str(info.value)


# ---------------------------------------------------------------------------------- NIfTI


def _nifti(path: Path, arr: np.ndarray, zooms: tuple[float, ...] | None = None) -> Path:
    img = nib.Nifti1Image(arr, np.eye(4))
    if zooms is not None:
        img.header.set_zooms(zooms)
    nib.save(img, path)
    return path


@pytest.mark.parametrize("ext", [".nii", ".nii.gz"])
def test_read_nifti_keeps_axes_dtype_and_spacing(tmp_path: Path, ext: str) -> None:
    arr = np.arange(24, dtype=np.uint8).reshape(4, 3, 2)
    path = _nifti(tmp_path / f"vol{ext}", arr, (0.5, 0.75, 2.0))
    out, spacing = read_nifti(path)
    assert out.dtype == np.uint8 and out.shape == (4, 3, 2)
    assert np.array_equal(out, arr)
    assert spacing == (0.5, 0.75, 2.0)


def test_read_nifti_2d_and_trailing_singleton(tmp_path: Path) -> None:
    out, spacing = read_nifti(_nifti(tmp_path / "a.nii", np.ones((3, 2), np.int16), (1.5, 2.5)))
    assert out.shape == (3, 2) and spacing == (1.5, 2.5)
    out, spacing = read_nifti(
        _nifti(tmp_path / "b.nii", np.ones((3, 2, 4, 1), np.int16), (1, 2, 3, 9))
    )
    assert out.shape == (3, 2, 4) and spacing == (1.0, 2.0, 3.0)


def test_read_nifti_rejects_4d_naming_file(tmp_path: Path) -> None:
    path = _nifti(tmp_path / "cine.nii.gz", np.zeros((3, 2, 4, 5), np.uint8))
    with pytest.raises(ValueError, match=r"cine\.nii\.gz.*\(3, 2, 4, 5\)"):
        read_nifti(path)


def test_read_nifti_corrupt_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.nii.gz"
    path.write_bytes(b"garbage")
    with pytest.raises(ValueError, match=r"cannot read .*bad\.nii\.gz"):
        read_nifti(path)


def test_nifti_to_napari_reorders_axes_and_scale() -> None:
    arr = np.arange(24).reshape(4, 3, 2)  # (X, Y, Z)
    out, scale = nifti_to_napari(arr, (0.5, 0.75, 2.0))
    assert out.shape == (2, 3, 4)
    assert out[1, 2, 3] == arr[3, 2, 1]  # (z, y, x) == (x, y, z)
    assert scale == (2.0, 0.75, 0.5)
    out2, scale2 = nifti_to_napari(arr[:, :, 0])
    assert out2.shape == (3, 4) and scale2 == (1.0, 1.0)


@pytest.mark.parametrize(
    ("shape", "spacing", "match"),
    [
        ((2,), None, r"array must be 2D or 3D.*\(2,\)"),
        ((2, 2, 2, 2), None, r"array must be 2D or 3D"),
        ((2, 2, 2), (1.0, 1.0), r"spacing must have one value per axis \(3\), got 2"),
    ],
)
def test_nifti_to_napari_validates(shape, spacing, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        nifti_to_napari(np.zeros(shape), spacing)


# ------------------------------------------------------------------------------- real data


@pytest.mark.shared_data
def test_real_kvasir_jpeg_masks_binarised(kvasir_dir: Path) -> None:
    pairs = find_pairs(kvasir_dir)
    assert len(pairs) == 1000
    for image_path, mask_path in pairs[::250]:
        raw = np.asarray(Image.open(mask_path).convert("L"))
        assert len(np.unique(raw)) > 2  # the lossy grey levels the reader must remove
        mask = read_mask(mask_path)
        image = read_image(image_path)
        assert set(np.unique(mask)) <= {0, 1}
        assert mask.shape == image.shape[:2] and image.shape[2] == 3
        assert 0.0 < mask.mean() < 1.0


@pytest.mark.shared_data
def test_real_acdc_nifti(acdc_dir: Path) -> None:
    labels, spacing = read_nifti(acdc_dir / "labels" / "patient001_frame01.nii.gz")
    image, _ = read_nifti(acdc_dir / "images" / "patient001_frame01.nii.gz")
    assert labels.shape == image.shape and labels.ndim == 3
    assert labels.dtype == np.uint8 and set(np.unique(labels)) == {0, 1, 2, 3}
    assert spacing == (1.0, 1.0, 1.0)  # identity affine, see the data README
    assert 6 <= labels.shape[2] <= 21


def test_read_mask_costs_little_more_than_decoding(tmp_path: Path) -> None:
    """The colour and grey-level checks of an RGB JPEG mask (every Kvasir-SEG mask) cost a few
    decodes, not 40-70 (they were most of `segloss train`'s "checking data" pass)."""
    yy, xx = np.mgrid[:1072, :1344]
    disc = ((yy - 536) ** 2 + (xx - 672) ** 2 < 480**2).astype(np.uint8) * 255
    path = _save(tmp_path / "big.jpg", np.dstack([disc] * 3), quality=90)

    def decode() -> None:
        with Image.open(path) as img:
            np.asarray(img)

    times: dict[str, list[float]] = {"decode": [], "read": []}
    for _ in range(7):  # interleaved: both see the same machine load
        for name, call in (("decode", decode), ("read", lambda: read_mask(path))):
            start = time.perf_counter()
            call()
            times[name].append(time.perf_counter() - start)
    ratio = min(times["read"]) / min(times["decode"])  # the least-disturbed run of each
    assert ratio < 12, f"read_mask took {ratio:.1f}x the decode of the same JPEG"

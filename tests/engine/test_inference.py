"""Tiled inference: a pointwise model must give the same result tiled as untiled."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from napari_segloss.engine.inference import (
    gaussian_importance_map,
    normalise_image,
    predict,
    rgb_to_grey,
    sliding_window_predict,
    tile_starts,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # see tests/conftest.py


def _pointwise(in_ch: int, out_ch: int, dims: int = 2, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    conv = nn.Conv2d if dims == 2 else nn.Conv3d
    return conv(in_ch, out_ch, kernel_size=1)


def _untiled(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        logits = model(x)
    return torch.sigmoid(logits) if logits.shape[1] == 1 else torch.softmax(logits, 1)


class _Recorder(nn.Module):
    """1x1 conv that records the batch sizes and tile shapes it is called with."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, 1)
        self.calls: list[tuple[int, ...]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls.append(tuple(x.shape))
        return self.conv(x)


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        ((10, 4, 0.5), [0, 2, 4, 6]),  # stride 2, ends exactly at 10
        ((10, 4, 0.0), [0, 4, 6]),  # 10 is not a multiple of 4: last tile shifted back
        ((4, 4, 0.25), [0]),
        ((9, 4, 0.25), [0, 3, 5]),  # stride int(4 * 0.75) = 3
        ((5, 4, 0.99), [0, 1]),  # stride never below 1
    ],
)
def test_tile_starts_hand_computed(size: tuple[int, int, float], expected: list[int]) -> None:
    assert tile_starts(*size) == expected


def test_tile_starts_rejects_too_small_size() -> None:
    with pytest.raises(ValueError, match="size"):
        tile_starts(3, 4, 0.25)


def test_gaussian_importance_map_shape_peak_symmetry_floor() -> None:
    w = gaussian_importance_map((9, 6))
    assert w.shape == (9, 6)
    assert w.dtype == torch.float32
    assert torch.isclose(w.max(), torch.tensor(1.0))
    assert w[4, 2] == w[4, 3] == w.max()  # centre row, the two middle columns
    assert torch.allclose(w, w.flip(0)) and torch.allclose(w, w.flip(1))
    assert w.min() >= 1e-3
    # sigma = 9 / 8 along axis 0: one pixel from the centre weighs exp(-0.5 * (8/9)^2).
    assert w[3, 2] / w[4, 2] == pytest.approx(np.exp(-0.5 * (8 / 9) ** 2), rel=1e-5)


@pytest.mark.parametrize("blend", ["gaussian", "constant"])
@pytest.mark.parametrize("overlap", [0.0, 0.25, 0.5])
@pytest.mark.parametrize("classes", [1, 3])
def test_2d_tiled_equals_untiled(blend: str, overlap: float, classes: int) -> None:
    model = _pointwise(2, classes)
    x = torch.randn(2, 70, 45)  # neither axis a multiple of the tile
    out = sliding_window_predict(model, x, tile=(32, 16), overlap=overlap, blend=blend)
    assert out.shape == (classes, 70, 45)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, _untiled(model, x[None])[0], atol=1e-5, rtol=0)


def test_batched_input_keeps_batch_axis() -> None:
    model = _pointwise(1, 2)
    x = torch.randn(3, 1, 40, 33)
    out = sliding_window_predict(model, x, tile=(16, 16), overlap=0.5, batch_size=5)
    assert out.shape == (3, 2, 40, 33)
    torch.testing.assert_close(out, _untiled(model, x), atol=1e-5, rtol=0)


def test_image_smaller_than_tile_is_padded_and_cropped_back() -> None:
    model = _Recorder(3, 2)
    x = torch.randn(3, 20, 13)
    out = sliding_window_predict(model, x, tile=(32, 32))
    assert out.shape == (2, 20, 13)
    assert model.calls == [(1, 3, 32, 32)]  # one full-size tile
    torch.testing.assert_close(out, _untiled(model.conv, x[None])[0], atol=1e-5, rtol=0)


def test_tiles_are_batched_and_bounded() -> None:
    model = _Recorder(1, 2)
    x = torch.randn(1, 64, 64)
    sliding_window_predict(model, x, tile=(16, 16), overlap=0.0, batch_size=3)
    # 4 x 4 = 16 windows in batches of at most 3: 5 full batches and one of 1.
    assert [c[0] for c in model.calls] == [3, 3, 3, 3, 3, 1]
    assert all(c[2:] == (16, 16) for c in model.calls)


@pytest.mark.parametrize("overlap", [0.0, 0.5])
def test_3d_tiled_equals_untiled(overlap: float) -> None:
    model = _pointwise(2, 3, dims=3)
    x = torch.randn(2, 9, 20, 17)
    out = sliding_window_predict(model, x, tile=(8, 16, 16), overlap=overlap, batch_size=2)
    assert out.shape == (3, 9, 20, 17)
    torch.testing.assert_close(out, _untiled(model, x[None])[0], atol=1e-5, rtol=0)


def test_3d_smaller_than_tile_along_one_axis() -> None:
    model = _pointwise(1, 1, dims=3)
    x = torch.randn(1, 5, 24, 24)
    out = sliding_window_predict(model, x, tile=(8, 16, 16))
    torch.testing.assert_close(out, _untiled(model, x[None])[0], atol=1e-5, rtol=0)


def test_constant_blend_averages_overlapping_tiles() -> None:
    """A model whose output is the tile's mean: overlap regions average the tile means."""

    class TileMean(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.dummy = nn.Parameter(torch.zeros(()))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.mean(dim=(2, 3), keepdim=True).expand_as(x).clone()

    x = torch.zeros(1, 1, 6)
    x[0, 0, :] = torch.tensor([0.0, 0.0, 0.0, 0.0, 4.0, 8.0])
    # tile (1, 4), overlap 0.5 -> windows start at 0 and 2 along the last axis.
    # sigmoid is applied per tile, so the expected value mixes the sigmoids of the tile means.
    out = sliding_window_predict(TileMean(), x, tile=(1, 4), overlap=0.5, blend="constant")
    s0, s1 = torch.sigmoid(torch.tensor(0.0)), torch.sigmoid(torch.tensor(3.0))
    expected = torch.stack([s0, s0, (s0 + s1) / 2, (s0 + s1) / 2, s1, s1])
    torch.testing.assert_close(out[0, 0], expected, atol=1e-6, rtol=0)


def test_model_training_mode_is_restored() -> None:
    model = _pointwise(1, 2).train()
    sliding_window_predict(model, torch.randn(1, 8, 8), tile=(8, 8))
    assert model.training


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"tile": (0, 8)}, "tile"),
        ({"tile": (8, 8, 8, 8)}, "tile"),
        ({"tile": (8, 8), "overlap": 1.0}, "overlap"),
        ({"tile": (8, 8), "overlap": -0.1}, "overlap"),
        ({"tile": (8, 8), "batch_size": 0}, "batch_size"),
        ({"tile": (8, 8), "blend": "linear"}, "blend"),
        ({"tile": (8, 8, 8)}, "image"),  # 2D image with a 3D tile
    ],
)
def test_bad_arguments_raise_value_error_naming_them(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        sliding_window_predict(_pointwise(1, 2), torch.randn(1, 8, 8), **kwargs)


def test_model_with_wrong_output_size_is_reported() -> None:
    model = nn.Conv2d(1, 2, 3)  # no padding: output shrinks by 2
    with pytest.raises(ValueError, match="output shape"):
        sliding_window_predict(model, torch.randn(1, 16, 16), tile=(8, 8))


@settings(max_examples=25, deadline=None)
@given(
    h=st.integers(1, 40),
    w=st.integers(1, 40),
    th=st.integers(1, 24),
    tw=st.integers(1, 24),
    overlap=st.floats(0.0, 0.9),
    batch=st.integers(1, 5),
)
def test_property_pointwise_model_tiled_equals_untiled(
    h: int, w: int, th: int, tw: int, overlap: float, batch: int
) -> None:
    model = _pointwise(2, 2, seed=1)
    x = torch.randn(2, h, w, generator=torch.Generator().manual_seed(h * 41 + w))
    out = sliding_window_predict(model, x, tile=(th, tw), overlap=overlap, batch_size=batch)
    torch.testing.assert_close(out, _untiled(model, x[None])[0], atol=1e-5, rtol=0)


# ------------------------------------------------------------------------------- predict()


def test_normalise_image_defaults_imagenet_for_rgb_uint8() -> None:
    img = np.full((3, 2, 2), 255, dtype=np.uint8)
    out = normalise_image(img, {})
    expected = [(1 - 0.485) / 0.229, (1 - 0.456) / 0.224, (1 - 0.406) / 0.225]
    np.testing.assert_allclose(out[:, 0, 0], expected, rtol=1e-6)


def test_normalise_image_uses_meta_mean_std() -> None:
    img = np.array([[[0, 51], [102, 255]]], dtype=np.uint8)  # 1 channel
    out = normalise_image(img, {"normalization": {"mean": [0.2], "std": [0.5]}})
    np.testing.assert_allclose(out[0], [[-0.4, 0.0], [0.4, 1.6]], atol=1e-6)


def test_predict_rgb_binary_threshold_and_shapes() -> None:
    # Hand-set 1x1 conv: logit = R - B (in normalised units) -> foreground where red dominates.
    model = nn.Conv2d(3, 1, 1)
    with torch.no_grad():
        model.weight.zero_()
        model.bias.zero_()
        model.weight[0, 0] = 1.0
        model.weight[0, 2] = -1.0
    img = np.zeros((37, 50, 3), dtype=np.uint8)
    img[:10, :, 0] = 255  # red band
    img[10:, :, 2] = 255  # blue elsewhere
    meta = {"in_channels": 3, "mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0]}
    labels, probs = predict(model, img, meta=meta, tile=(32, 32), device="cpu")
    assert labels.shape == (37, 50) and labels.dtype == np.uint8
    assert probs.shape == (1, 37, 50)
    assert labels[:10].all() and not labels[10:].any()
    np.testing.assert_allclose(probs[0, 0, 0], 1 / (1 + np.exp(-1.0)), rtol=1e-5)


def test_predict_resizes_to_training_size_and_back() -> None:
    model = _Recorder(1, 3)
    img = np.random.default_rng(0).integers(0, 255, (50, 70), dtype=np.uint8)
    meta = {"size": [32, 32], "crop": [16, 16]}
    labels, probs = predict(model, img, meta=meta, device="cpu")
    assert labels.shape == (50, 70) and probs.shape == (3, 50, 70)
    assert model.calls == [(1, 1, 32, 32)]  # the whole resized image, as validation runs it
    model.calls.clear()
    predict(model, img, meta=meta, device="cpu", tile="crop")
    assert model.calls and all(c[2:] == (16, 16) for c in model.calls)  # the training crop
    np.testing.assert_allclose(probs.sum(0), 1.0, atol=1e-5)
    np.testing.assert_array_equal(labels, probs.argmax(0))


def test_predict_grey_volume_slice_by_slice() -> None:
    model = _pointwise(1, 4)
    vol = np.random.default_rng(1).random((3, 20, 24)).astype(np.float32)
    labels, probs = predict(model, vol, tile=(16, 16), device="cpu")
    assert labels.shape == (3, 20, 24) and probs.shape == (3, 4, 20, 24)
    x = torch.from_numpy(vol[:, None])
    np.testing.assert_allclose(probs, _untiled(model, x).numpy(), atol=1e-5)


@pytest.mark.parametrize(
    ("image", "match"),
    [
        (np.zeros((4, 5, 6, 7)), "image"),
        (np.zeros((0, 5)), "image: expected a non-empty"),
        (np.zeros((8, 8, 4), dtype=np.uint8), "image"),  # RGBA into an RGB model
    ],
)
def test_predict_bad_image(image: np.ndarray, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        predict(_pointwise(3, 2), image, meta={"in_channels": 3}, device="cpu")


@pytest.mark.parametrize(
    ("kw", "match"),
    [({"overlap": 1.0}, r"overlap: expected a fraction in \[0, 1\)"),
     ({"batch_size": 0}, "batch_size: expected a positive integer")],
)  # fmt: skip
def test_tiling_arguments_are_checked_without_tiles(kw: dict, match: str) -> None:
    # the whole image used neither, so a bad value passed unseen until --tile was given
    with pytest.raises(ValueError, match=match):
        predict(_pointwise(3, 2), np.zeros((8, 8, 3), np.uint8), device="cpu", **kw)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA for the AMP path")
def test_cuda_amp_close_to_float32() -> None:
    model = _pointwise(3, 2).cuda()
    x = torch.randn(3, 100, 90)
    ref = _untiled(model.cpu(), x[None])[0]
    model.cuda()
    out = sliding_window_predict(model, x, tile=(64, 64), amp=True, device="cuda")
    assert out.device.type == "cpu"
    torch.testing.assert_close(out, ref, atol=2e-2, rtol=0)


def _identity_conv() -> nn.Module:
    model = nn.Conv2d(1, 1, 1)
    with torch.no_grad():
        model.weight.fill_(1.0)
        model.bias.zero_()
    return model


@pytest.mark.parametrize("data_kind", ["nifti", "folder", None])
def test_predict_minmax_scales_a_stack_as_training_did(data_kind: str | None) -> None:
    # NIfTI training scales each volume as one; folder / napari-frame training each 2D image
    vol = np.zeros((2, 8, 8), np.float32)
    vol[0, 0, 0] = 10.0  # slice 0 spans 0..10, slice 1 spans 0..100: volume range 0..100
    vol[1, 0, 0] = 100.0
    meta = {"normalization": {"scale": "minmax", "mean": [0.0], "std": [1.0]}}
    if data_kind:
        meta["data_kind"] = data_kind
    _, probs = predict(_identity_conv(), vol, meta=meta, tile=(8, 8), device="cpu")
    assert probs.shape == (2, 1, 8, 8)
    slice0_max = 0.1 if data_kind == "nifti" else 1.0
    np.testing.assert_allclose(probs[0, 0, 0, 0], 1 / (1 + np.exp(-slice0_max)), rtol=1e-5)
    np.testing.assert_allclose(probs[1, 0, 0, 0], 1 / (1 + np.exp(-1.0)), rtol=1e-5)
    np.testing.assert_allclose(probs[0, 0, 1, 1], 0.5, rtol=1e-6)


class _InputRecorder(nn.Module):
    """Records the (whole-image) input it is called with; predicts 0 logits."""

    def __init__(self) -> None:
        super().__init__()
        self.inputs: list[torch.Tensor] = []
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.inputs.append(x.detach().clone())
        return x[:, :1] * 0


@pytest.mark.parametrize("shape", [(273, 320), (90, 200), (40, 30)])
def test_predict_feeds_the_model_what_training_fed_it(shape: tuple[int, int]) -> None:
    # the training resize is torchvision's antialiased one (data.transforms.resize_pair); a
    # prediction that shrinks without antialiasing differs by up to 0.9 in normalised units
    from napari_segloss.data.transforms import Normalization, resize_pair

    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
    norm = Normalization(scale="uint8", mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    meta = {"normalization": norm.to_meta(), "input_size": [64, 64], "in_channels": 3}
    model = _InputRecorder()
    predict(model, image, meta=meta, device="cpu")
    trained, _ = resize_pair(torch.from_numpy(np.moveaxis(image, -1, 0).copy()), None, (64, 64))
    mean, std = (torch.tensor(v).view(3, 1, 1) for v in (norm.mean, norm.std))
    expected = (torch.from_numpy(norm.scale_array(trained.numpy())) - mean) / std
    (got,) = model.inputs
    assert got.shape == (1, 3, 64, 64)
    # training resizes the uint8 image (rounded to integers), prediction the float one
    torch.testing.assert_close(got[0], expected, atol=1 / 255 / 0.224 + 1e-4, rtol=0)


def test_a_grey_napari_stack_of_three_frames_is_not_read_as_rgb() -> None:
    stack = np.zeros((3, 16, 16), np.uint8)
    with pytest.raises(ValueError, match="grey volume"):
        predict(_pointwise(3, 1), stack, meta={"in_channels": 3}, rgb=False, device="cpu")
    # without the hint a (3, H, W) array stays channels-first RGB (e.g. a TIFF)
    labels, _ = predict(_pointwise(3, 1), stack, meta={"in_channels": 3}, device="cpu")
    assert labels.shape == (16, 16)


def test_predict_uint8_checkpoint_rejects_float_image() -> None:
    meta = {"normalization": {"scale": "uint8", "mean": [0.0], "std": [1.0]}}
    with pytest.raises(ValueError, match="8-bit"):
        predict(_identity_conv(), np.zeros((8, 8), np.float32), meta=meta, device="cpu")


def test_predict_grey_image_into_rgb_model_repeats_channels() -> None:
    model = _pointwise(3, 2)
    grey = np.random.default_rng(2).integers(0, 256, (12, 10), dtype=np.uint8)
    _, probs = predict(model, grey, meta={"in_channels": 3}, tile=(16, 16), device="cpu")
    _, probs_rgb = predict(
        model,
        np.repeat(grey[..., None], 3, -1),
        meta={"in_channels": 3},
        tile=(16, 16),
        device="cpu",
    )
    np.testing.assert_allclose(probs, probs_rgb, atol=1e-6)


def test_grey_volume_for_an_rgb_model_says_what_the_checkpoint_expects() -> None:
    # the RGB Kvasir checkpoint on a grey ACDC volume: name both, do not list layouts
    volume = np.random.default_rng(4).random((6, 20, 18)).astype(np.float32)
    with pytest.raises(ValueError) as err:
        predict(_pointwise(3, 2), volume, meta={"in_channels": 3}, device="cpu")
    message = str(err.value)
    assert "expects 3-channel (RGB) images" in message
    assert "(6, 20, 18) is a grey volume" in message
    assert "for a 1-channel model" not in message


def test_predict_3d_model_tiles_in_3d() -> None:
    model = _pointwise(1, 2, dims=3)
    vol = np.random.default_rng(3).random((6, 20, 18)).astype(np.float32)
    meta = {"spatial_dims": 3, "in_channels": 1, "patch": [4, 16, 16]}
    labels, probs = predict(model, vol, meta=meta, device="cpu")
    assert labels.shape == (6, 20, 18) and probs.shape == (2, 6, 20, 18)
    ref = _untiled(model, torch.from_numpy(vol)[None, None])[0].numpy()
    np.testing.assert_allclose(probs, ref, atol=1e-5)


# ------------------------------------------------------------------------------ image checks
# predict() is what the CLI and the napari Predict panel both call: these checks cover both.


def test_colour_image_for_a_grey_model_is_refused_not_reinterpreted() -> None:
    rgb = np.random.default_rng(0).integers(0, 256, (20, 24, 3), dtype=np.uint8)
    with pytest.raises(ValueError, match=r"shape \(20, 24, 3\) is a colour image.*takes 1 channel"):
        predict(_pointwise(1, 2), rgb, meta={"in_channels": 1}, device="cpu")
    # the panel says whether its layer is RGB: a layer flagged RGB is refused whatever its shape
    with pytest.raises(ValueError, match="colour image"):
        predict(_pointwise(1, 2), rgb, meta={"in_channels": 1}, device="cpu", rgb=True)
    # an explicit, documented conversion instead: BT.601 luma, then the grey model
    labels, probs = predict(
        _pointwise(1, 2), rgb, meta={"in_channels": 1}, device="cpu", to_grey=True
    )
    assert labels.shape == (20, 24) and probs.shape == (2, 20, 24)
    ref = predict(_pointwise(1, 2), rgb_to_grey(rgb), meta={"in_channels": 1}, device="cpu")
    np.testing.assert_array_equal(probs, ref[1])
    # rgb=False: the same array is a grey volume of 20 slices, predicted slice by slice
    labels, _ = predict(_pointwise(1, 2), rgb, meta={"in_channels": 1}, device="cpu", rgb=False)
    assert labels.shape == (20, 24, 3)


def test_rgb_to_grey_uses_bt601_weights() -> None:
    rgb = np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 255], [10, 20, 30]]], np.uint8)
    grey = rgb_to_grey(rgb)
    assert grey.dtype == np.uint8
    assert grey.tolist() == [[76, 150, 29, round(0.299 * 10 + 0.587 * 20 + 0.114 * 30)]]
    assert rgb_to_grey(rgb.astype(np.float32)).dtype == np.float32


@pytest.mark.parametrize(
    ("image", "meta", "match"),
    [
        (np.full((8, 8), np.nan, np.float32), {"in_channels": 1}, r"64 non-finite value\(s\)"),
        (np.ones((4, 8, 8), np.float32) * np.inf, {"in_channels": 1}, r"256 non-finite"),
        (
            np.zeros((8, 8), np.uint16),
            {"in_channels": 1, "normalization": {"scale": "uint8", "mean": [0], "std": [1]}},
            r"pixel type uint16.*8-bit",
        ),
        (np.zeros((8, 8, 4), np.uint8), {"in_channels": 3}, r"alpha channel.*image\[\.\.\., :3\]"),
    ],
)
def test_check_image_refusals(image: np.ndarray, meta: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        predict(_pointwise(meta["in_channels"], 2), image, meta=meta, device="cpu")


@pytest.mark.parametrize(
    ("classes", "dtype"), [(1, torch.uint8), (256, torch.uint8), (300, torch.int32)]
)
def test_labels_from_logits_keep_every_class(classes: int, dtype: torch.dtype) -> None:
    from napari_segloss.engine.tiling import labels_from_logits

    logits = torch.zeros(1, classes, 2, 2)
    if classes == 1:
        logits[0, 0, 0, 0] = 1.0  # probability > 0.5: foreground
        expected = [[1, 0], [0, 0]]
    else:
        logits[0, classes - 1, 0, 0] = 5.0  # the last class wins at one pixel
        expected = [[classes - 1, 0], [0, 0]]
    labels = labels_from_logits(logits)
    assert labels.dtype == dtype
    assert labels[0].tolist() == expected  # class 299 in uint8 would read 43

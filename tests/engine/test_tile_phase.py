"""Tiles on the pixel phase of a whole-image pass: a strided network is not shift-invariant, so
a window that starts off the output stride's grid predicts other probabilities than validation
(which runs the whole image, padded at the end) for the same pixels."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from napari_segloss.cli import main
from napari_segloss.engine import tiling
from napari_segloss.engine.checkpoint import load_model
from napari_segloss.engine.config import load_config
from napari_segloss.engine.evaluation import EvalSettings, evaluate_dataset
from napari_segloss.engine.inference import predict, sliding_window_predict, tile_starts
from napari_segloss.engine.model import output_stride
from napari_segloss.engine.training import train
from napari_segloss.engine.unet3d import UNet3D

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # see tests/conftest.py


class _Encoder(nn.Module):
    output_stride = 4  # what smp encoders expose


class _Blocks(nn.Module):
    """Each output pixel is the mean of its 4x4 (or (fz, 4, 4)) input block: exactly the phase
    dependence of a stride-4 encoder, with no receptive field beyond the block."""

    def __init__(self, dims: int = 2, factor: tuple[int, ...] | None = None) -> None:
        super().__init__()
        self.dims = dims
        self.scale = nn.Parameter(torch.ones(()))
        if factor is None:
            self.encoder = _Encoder()
        else:
            self.factor = factor  # what UNet3D exposes
        self.block = factor or (4,) * dims

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pool = F.avg_pool2d if self.dims == 2 else F.avg_pool3d
        pooled = pool(x[:, :1] * self.scale, self.block)
        return F.interpolate(pooled, scale_factor=self.block, mode="nearest")


def _whole(model: nn.Module, x: torch.Tensor, multiple: tuple[int, ...]) -> torch.Tensor:
    """Validation's rule: the whole image, zero-padded at the end to the output stride."""
    pad: list[int] = []
    for s, m in zip(reversed(x.shape[1:]), reversed(multiple), strict=True):
        pad += [0, (-s) % m]
    with torch.no_grad():
        out = torch.sigmoid(model(F.pad(x, pad)[None]))[0]
    return out[(slice(None), *(slice(0, s) for s in x.shape[1:]))]


def test_output_stride_reads_smp_encoders_and_unet3d() -> None:
    assert output_stride(_Blocks()) == 4
    assert output_stride(UNet3D(1, 1, channels=4, depth=3, anisotropic_levels=1)) == (2, 4, 4)
    assert output_stride(nn.Conv2d(1, 1, 1)) == 1


@pytest.mark.parametrize(("size", "tile", "overlap"), [(30, 16, 0.25), (37, 16, 0.5), (50, 12, 0)])
def test_tile_starts_on_the_stride_grid(size: int, tile: int, overlap: float) -> None:
    padded = tile + -(-(size - tile) // 4) * 4
    starts = tile_starts(padded, tile, overlap, 4)
    assert all(s % 4 == 0 for s in starts) and starts[-1] == padded - tile
    with pytest.raises(ValueError, match="multiple"):
        tile_starts(padded + 1, tile, overlap, 4)


@pytest.mark.parametrize("overlap", [0.0, 0.25, 0.5])
@pytest.mark.parametrize("shape", [(45, 70), (37, 50), (10, 13), (1, 40), (16, 16)])
def test_2d_tiles_predict_what_the_whole_image_does(overlap: float, shape: tuple[int, int]) -> None:
    model = _Blocks()
    x = torch.randn(1, *shape)
    # before the fix, the last tile started at 45 - 16 = 29 (not a multiple of 4): 1.0 apart
    out = sliding_window_predict(model, x, tile=(16, 16), overlap=overlap, multiple=4)
    torch.testing.assert_close(out, _whole(model, x, (4, 4)), atol=1e-6, rtol=0)


def test_predict_tiles_on_the_models_stride() -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (45, 70), dtype=np.uint8)
    meta: dict[str, Any] = {
        "normalization": {"scale": "uint8", "mean": [0.5], "std": [0.25]},
        "in_channels": 1,
        "crop": [16, 16],
    }
    model = _Blocks()
    _, probs = predict(model, image, meta=meta, device="cpu", overlap=0.25)
    x = torch.from_numpy((image[None] / 255.0 - 0.5) / 0.25).float()
    np.testing.assert_allclose(probs, _whole(model, x, (4, 4)).numpy(), atol=1e-6)


def test_3d_tiles_and_validation_use_the_per_axis_factor() -> None:
    model = _Blocks(dims=3, factor=(1, 4, 4))
    vol = torch.randn(1, 7, 30, 41)
    out = sliding_window_predict(model, vol, tile=(4, 16, 16), overlap=0.5, multiple=(1, 4, 4))
    torch.testing.assert_close(out, _whole(model, vol, (1, 4, 4)), atol=1e-6, rtol=0)

    class Volumes:  # the slice of NiftiPatchDataset the validation reads
        spatial_dims = 3
        patch = (4, 16, 16)

        def __len__(self) -> int:
            return 1

        def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
            return vol, torch.zeros(vol.shape[1:], dtype=torch.long)

    kept: list[np.ndarray] = []
    settings = EvalSettings(device=torch.device("cpu"), num_classes=2)
    evaluate_dataset(model, Volumes(), [0], settings, surface=False, predictions=kept)  # type: ignore[arg-type]
    expected = (_whole(model, vol, (1, 4, 4))[0] > 0.5).numpy()
    np.testing.assert_array_equal(kept[0], expected)


_TINY_UNET = {  # stride 8: a 44-pixel side is padded, as validation pads it
    "arch": "Unet",
    "encoder": "tu-resnet10t",
    "kwargs": {"encoder_depth": 3, "decoder_channels": [16, 8, 4]},
}


def test_segloss_predict_writes_the_masks_eval_json_scored(
    write_squares: Callable[..., Path], tmp_path: Path
) -> None:
    # native size 40 x 44 (no resize), crop 24: validation runs each image whole; predict
    # tiled it with the 24-pixel crop and wrote other masks than eval.json had scored
    root = write_squares(tmp_path / "data", n=8, hw=(40, 44))
    cfg = load_config(
        {
            "data": {"root": str(root), "size": None, "crop": [24, 24], "val_fraction": 0.25},
            "model": _TINY_UNET,
            "loss": {"name": "pm_dice", "params": {"gamma": 1.0}},
            "optim": {"lr": 3e-3},
            "train": {"epochs": 3, "batch_size": 2, "num_workers": 0, "val_metrics": "overlap"},
            "output": str(tmp_path / "run"),
        }
    )
    train(cfg, progress=False, save_predictions=True)
    run = tmp_path / "run"
    scored = np.load(run / "predictions.npz")
    names = [Path(str(n)) for n in scored["names"]]
    assert len(names) == 2
    out = tmp_path / "pred"
    args = ["predict", "--checkpoint", str(run / "best.pt"), "--device", "cpu"]
    assert main([*args, "--input", *map(str, names), "--output", str(out)]) == 0
    for i, name in enumerate(names):
        written = np.asarray(Image.open(out / f"{name.stem}.png"))
        np.testing.assert_array_equal(written, scored[f"pred_{i}"])  # pixel for pixel
    assert any(len(np.unique(scored[f"pred_{i}"])) > 1 for i in range(2))  # not blank


class _Pairs:
    """The slice of a 2D dataset that validation reads: normalised image, labels."""

    spatial_dims = 2

    def __init__(self, image: np.ndarray) -> None:
        self.image = torch.from_numpy(image[None] / 255.0).float()

    def __len__(self) -> int:
        return 1

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.image, torch.zeros(self.image.shape[1:], dtype=torch.long)


@pytest.mark.parametrize("limit", [None, 100])  # whole / tiled with the training crop
def test_validation_and_predict_take_the_same_pass(
    write_checkpoint: Callable[..., Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    limit: int | None,
) -> None:
    if limit is not None:  # an image over the limit: both tile it with the training crop
        monkeypatch.setattr(tiling, "WHOLE_IMAGE_MAX_PIXELS", limit)
    ckpt = write_checkpoint(tmp_path / "c.pt", 1)  # crop 32, stride 8, random weights
    model, meta = load_model(ckpt, device="cpu")
    image = np.random.default_rng(1).integers(0, 256, (52, 70), dtype=np.uint8)
    kept: list[np.ndarray] = []
    settings = EvalSettings(torch.device("cpu"), 2, multiple=8, tile=(32, 32))
    evaluate_dataset(model, _Pairs(image), [0], settings, surface=False, predictions=kept)  # type: ignore[arg-type]
    labels, _ = predict(model, image, meta=meta, device="cpu")
    np.testing.assert_array_equal(labels, kept[0])
    assert 0.02 < labels.mean() < 0.98  # both classes present: a real comparison
    tiled, _ = predict(model, image, meta=meta, device="cpu", tile="crop")
    whole = tiling.inference_window(image.shape, (32, 32)) is None
    assert whole == (limit is None) and (whole != np.array_equal(tiled, labels))


@pytest.mark.parametrize(
    ("model", "ok", "bad"),
    [  # smp U-Nets pad themselves (no size check); these architectures need multiples
        ({"arch": "PSPNet", "encoder": "resnet18"}, (24, 16), (20, 24)),  # stride 8
        ({"arch": "DeepLabV3Plus", "encoder": "resnet18"}, (16, 32), (24, 24)),  # stride 16
        ({"arch": "FPN", "encoder": "resnet18"}, (32, 32), (16, 16)),  # stride 32
    ],
)
def test_training_checks_sizes_against_the_stride_tiling_uses(
    squares_root: Path, tmp_path: Path, model: dict[str, Any], ok: tuple, bad: tuple
) -> None:
    # one stride for the training size check, validation padding, tiles and 3D placement
    from napari_segloss.engine.config import ConfigError
    from napari_segloss.engine.distributed import DistInfo
    from napari_segloss.engine.run_state import prepare_run

    def cfg(crop: tuple) -> Any:
        return load_config(
            {
                "data": {"root": str(squares_root), "size": [40, 40], "crop": list(crop)},
                "model": {"kwargs": {}, **model},
                "train": {"epochs": 1, "batch_size": 2, "num_workers": 0},
                "output": str(tmp_path / f"run{crop}"),
            }
        )

    state = prepare_run(cfg(ok), DistInfo(), torch.device("cpu"))
    stride = output_stride(state.model)
    assert stride == state.eval_settings.multiple == state.model.encoder.output_stride
    assert all(s % stride == 0 for s in ok) and any(s % stride for s in bad)
    with pytest.raises(ConfigError, match=rf"must be divisible by {stride} "):
        prepare_run(cfg(bad), DistInfo(), torch.device("cpu"))

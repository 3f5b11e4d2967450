"""CUDA checks: losses on the GPU, bf16 autocast, and a training run with AMP + channels_last.

Skipped without a CUDA device (these development machines have none); on a GPU machine run
``python -m pytest -q tests/test_gpu.py tests/engine/test_inference.py``.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from napari_segloss.engine.checkpoint import load_model
from napari_segloss.engine.config import load_config
from napari_segloss.engine.training import train
from napari_segloss.losses import get_loss, list_losses

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

LOSSES = list_losses()  # every label path (fused Dice, radix top-k, ...) on CUDA


def _batch(device: str) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, 64, 64, generator=g) * 3
    y = torch.randint(0, 4, (2, 64, 64), generator=g)
    return x.to(device), y.to(device)


@pytest.mark.parametrize("name", LOSSES)
def test_losses_on_cuda_match_cpu(name: str) -> None:
    x_cpu, y_cpu = _batch("cpu")
    x_gpu, y_gpu = _batch("cuda")
    x_cpu.requires_grad_(True)
    x_gpu.requires_grad_(True)
    ref = get_loss(name)(x_cpu, y_cpu)
    got = get_loss(name, validate=False)(x_gpu, y_gpu)  # the training setting: no host sync
    assert got.device.type == "cuda" and got.dtype == torch.float32
    torch.testing.assert_close(got.detach().cpu(), ref.detach(), rtol=1e-4, atol=1e-5)
    ref.backward()
    got.backward()
    torch.testing.assert_close(x_gpu.grad.cpu(), x_cpu.grad, rtol=1e-3, atol=1e-6)


@pytest.mark.parametrize("name", LOSSES)
def test_bf16_autocast_keeps_float32_losses(name: str) -> None:
    conv = torch.nn.Conv2d(3, 4, 3, padding=1).cuda()
    image = torch.randn(2, 3, 64, 64, device="cuda")
    _, y = _batch("cuda")
    ref = get_loss(name)(conv(image), y)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        logits = conv(image)
        assert logits.dtype == torch.bfloat16
        value = get_loss(name, validate=False)(logits, y)
    assert value.dtype == torch.float32 and torch.isfinite(value)
    value.backward()
    assert all(torch.isfinite(p.grad).all() for p in conv.parameters())
    assert float(value) == pytest.approx(float(ref), rel=3e-2, abs=3e-3)  # bf16 logits


def test_training_run_on_cuda_with_amp_and_channels_last(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for sub in ("images", "masks"):
        (tmp_path / "data" / sub).mkdir(parents=True)
    for i in range(8):
        mask = np.zeros((48, 48), np.uint8)
        r, c = rng.integers(4, 28, 2)
        mask[r : r + 14, c : c + 14] = 1
        img = (rng.random((48, 48, 3)) * 60 + mask[..., None] * 150).astype(np.uint8)
        Image.fromarray(img).save(tmp_path / "data" / "images" / f"im{i}.png")
        Image.fromarray(mask * 255).save(tmp_path / "data" / "masks" / f"im{i}.png")
    cfg = load_config(
        {
            "data": {"root": str(tmp_path / "data"), "size": [32, 32], "val_fraction": 0.25},
            "model": {
                "arch": "Unet",
                "encoder": "tu-resnet10t",
                "kwargs": {"encoder_depth": 3, "decoder_channels": [16, 8, 4]},
            },
            "loss": {"name": "ce+pm_dice"},
            "train": {
                "epochs": 2,
                "batch_size": 2,
                "num_workers": 0,
                "device": "cuda",
                "amp": True,
                "amp_dtype": "bfloat16",
                "channels_last": True,
            },
            "output": str(tmp_path / "run"),
        }
    )
    done = train(cfg, progress=False)
    assert not done.stopped, done.reason
    with open(tmp_path / "run" / "metrics.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 2
    assert all(math.isfinite(float(r["train_loss"])) for r in rows)
    assert 0.0 <= float(rows[-1]["val_dice"]) <= 1.0
    model, _ = load_model(tmp_path / "run" / "best.pt", device="cuda")
    assert next(model.parameters()).is_cuda

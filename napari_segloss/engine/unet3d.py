"""A compact 3D U-Net in plain torch (segmentation-models-pytorch builds only 2D networks).

Selected with ``model.arch: UNet3D`` (any case) and trained on NIfTI patches
(``data.kind: nifti``, ``data.slices: 3d``). The layout follows the 3D U-Net of Cicek et al. 2016
with the nnU-Net conventions (Isensee et al. 2021) that matter for small medical batches:

* each level is two ``Conv3d(3x3x3) -> norm -> ReLU`` blocks; levels below the first start with
  a *strided* convolution instead of max-pooling (learnable, and its backward pass is
  deterministic on CUDA where ``max_pool3d``'s is not);
* instance normalisation by default (batch statistics are noisy with 2-4 patches per batch);
* the decoder upsamples with ``ConvTranspose3d``, concatenates the skip and applies a block;
* ``anisotropic_levels`` first downsamplings halve only Y and X, for scans whose slices are
  much thicker than the in-plane pixels (ACDC: ~10 mm vs ~1.5 mm), so Z is not reduced to
  one voxel after a few levels.

The network takes ``(B, C, Z, Y, X)`` and returns logits ``(B, classes, Z, Y, X)`` of the same
spatial size for *any* input size: inputs are zero-padded at the end of each axis to the total
downsampling factor and the logits cropped back (``requires_divisible_input_shape = False``).

``model.kwargs`` (all optional): ``channels`` (a list, one width per level, or one int = the
first level's width, doubled per level), ``depth`` (number of levels when ``channels`` is an int
or absent), ``norm`` (``instance``, ``batch`` or ``group``), ``anisotropic_levels``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["UNet3D"]

_NORMS = ("instance", "batch", "group")


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "instance":
        return nn.InstanceNorm3d(channels, affine=True)
    if kind == "batch":
        return nn.BatchNorm3d(channels)
    return nn.GroupNorm(min(8, channels), channels)


class _Block(nn.Sequential):
    """Two ``Conv3d -> norm -> ReLU``; the first conv may be strided (downsampling)."""

    def __init__(
        self, c_in: int, c_out: int, norm: str, stride: tuple[int, int, int] = (1, 1, 1)
    ) -> None:
        super().__init__(
            nn.Conv3d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
            _norm(norm, c_out),
            nn.ReLU(inplace=True),
            nn.Conv3d(c_out, c_out, 3, padding=1, bias=False),
            _norm(norm, c_out),
            nn.ReLU(inplace=True),
        )


class UNet3D(nn.Module):
    """3D U-Net: ``(B, in_channels, Z, Y, X)`` -> logits ``(B, classes, Z, Y, X)``.

    Args:
        in_channels: input channels (1 for a grey MRI/CT volume).
        classes: output channels (1: binary/sigmoid, K >= 2: softmax over K classes).
        channels: one width per level (e.g. ``[32, 64, 128, 256]``: 4 levels, 3 downsamplings),
            or the first level's width as an int (doubled at each of ``depth`` levels).
        depth: number of levels when ``channels`` is an int (default 4); must match a list.
        norm: ``"instance"`` (default), ``"batch"`` or ``"group"`` (GroupNorm, 8 groups).
        anisotropic_levels: how many of the first downsamplings halve only Y and X (keep Z).
    """

    #: read by the training loop and inference (3D tiles, channels_last_3d).
    spatial_dims = 3
    #: the forward pass pads to the downsampling factor itself.
    requires_divisible_input_shape = False

    def __init__(
        self,
        in_channels: int = 1,
        classes: int = 1,
        channels: Sequence[int] | int = 32,
        depth: int | None = None,
        norm: str = "instance",
        anisotropic_levels: int = 0,
    ) -> None:
        super().__init__()
        widths = self._widths(channels, depth)
        if norm not in _NORMS:
            raise ValueError(f"norm must be one of {', '.join(_NORMS)}, got {norm!r}")
        if isinstance(anisotropic_levels, bool) or not 0 <= int(anisotropic_levels) < len(widths):
            raise ValueError(
                f"anisotropic_levels must be in 0..{len(widths) - 1} (the number of "
                f"downsamplings), got {anisotropic_levels!r}"
            )
        if int(in_channels) < 1 or int(classes) < 1:
            raise ValueError(f"in_channels and classes must be >= 1, got {in_channels}, {classes}")
        self.norm = norm
        self.strides = [
            (1, 2, 2) if i < int(anisotropic_levels) else (2, 2, 2) for i in range(len(widths) - 1)
        ]
        # Total downsampling per axis: inputs are padded to a multiple of it.
        self.factor = tuple(math.prod(s[a] for s in self.strides) for a in range(3))
        self.encoder = nn.ModuleList([_Block(int(in_channels), widths[0], norm)])
        for i, stride in enumerate(self.strides):
            self.encoder.append(_Block(widths[i], widths[i + 1], norm, stride=stride))
        self.up = nn.ModuleList()
        self.decoder = nn.ModuleList()
        for i in reversed(range(len(self.strides))):
            s = self.strides[i]
            self.up.append(nn.ConvTranspose3d(widths[i + 1], widths[i], s, stride=s, bias=False))
            self.decoder.append(_Block(2 * widths[i], widths[i], norm))
        self.head = nn.Conv3d(widths[0], int(classes), 1)
        for m in self.modules():
            if isinstance(m, nn.Conv3d | nn.ConvTranspose3d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    @staticmethod
    def _widths(channels: Sequence[int] | int, depth: int | None) -> list[int]:
        if isinstance(channels, bool):
            raise ValueError(f"channels must be an int or a list of ints, got {channels!r}")
        if isinstance(channels, int):
            levels = 4 if depth is None else int(depth)
            if levels < 1:
                raise ValueError(f"depth must be >= 1, got {depth!r}")
            widths = [int(channels) * 2**i for i in range(levels)]
        else:
            widths = [int(c) for c in channels]
            if depth is not None and int(depth) != len(widths):
                raise ValueError(
                    f"depth={depth} does not match the {len(widths)} entries of channels={widths}"
                )
        if not widths or any(w < 1 for w in widths):
            raise ValueError(f"channels must be positive widths, one per level, got {channels!r}")
        return widths

    def bottleneck(self, size: Sequence[int]) -> tuple[int, ...]:
        """Spatial size ``(Z, Y, X)`` of the deepest level for an input of ``size``."""
        return tuple(-(-int(s) // f) for s, f in zip(size, self.factor, strict=True))

    def check_input_size(self, size: Sequence[int]) -> None:
        """``ValueError`` when instance norm would meet a one-voxel deepest level (torch fails
        there at the first step, naming neither the patch nor the depth)."""
        deepest = self.bottleneck(size)
        if self.norm == "instance" and math.prod(deepest) == 1:
            raise ValueError(
                f"a {list(size)} input shrinks to one voxel at the deepest of the "
                f"{len(self.strides) + 1} levels (total downsampling {list(self.factor)}), where "
                "instance normalisation has nothing to normalise; use a larger patch or fewer "
                "levels (model.kwargs.channels)"
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 5:
            raise ValueError(f"UNet3D expects (B, C, Z, Y, X) input, got shape {tuple(x.shape)}")
        size = x.shape[2:]
        pad = [(-s) % f for s, f in zip(size, self.factor, strict=True)]
        if any(pad):
            x = F.pad(x, (0, pad[2], 0, pad[1], 0, pad[0]))
        skips = []
        for block in self.encoder:
            x = block(x)
            skips.append(x)
        x = skips.pop()
        for up, block in zip(self.up, self.decoder, strict=True):
            x = block(torch.cat([up(x), skips.pop()], dim=1))
        logits = self.head(x)
        return logits[..., : size[0], : size[1], : size[2]]

"""Input validation shared by the metric functions (numpy and torch label arrays)."""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np


def torch_module() -> Any:
    """The torch module if it has been imported, else None.

    A tensor can only exist once torch is imported, so the metrics never import torch
    themselves (``import napari_segloss.metrics`` stays fast, e.g. for the CLI's evaluate).
    """
    return sys.modules.get("torch")


def is_torch(x: Any) -> bool:
    """True when ``x`` is a ``torch.Tensor``."""
    torch = torch_module()
    return torch is not None and isinstance(x, torch.Tensor)


def to_numpy(x: Any, name: str) -> np.ndarray:
    """Convert a numpy array, torch tensor or nested sequence to a numpy array (no copy if possible)."""
    if is_torch(x):
        return x.detach().cpu().numpy()
    if isinstance(x, np.ndarray):
        return x
    if isinstance(x, (list, tuple)):
        return np.asarray(x)
    raise ValueError(
        f"{name}: expected a numpy array or torch tensor of integer labels, got {type(x).__name__}"
    )


def check_labels(x: np.ndarray, name: str) -> np.ndarray:
    """Validate an integer label array and return it with an integer dtype.

    Booleans are accepted (0/1). Floats are accepted only when every value is integral: a float
    array with fractional values is almost always a probability map, and silently thresholding it
    would hide a bug in the caller, so it is rejected.
    """
    if x.dtype == np.bool_:
        return x.view(np.uint8)
    if np.issubdtype(x.dtype, np.integer):
        if np.issubdtype(x.dtype, np.signedinteger) and x.size and x.min() < 0:
            raise ValueError(f"{name}: expected non-negative integer labels, got minimum {x.min()}")
        return x
    if np.issubdtype(x.dtype, np.floating):
        if x.size and not np.all(np.isfinite(x)):
            raise ValueError(f"{name}: expected integer labels, got non-finite float values")
        if x.size and not np.array_equal(x, np.round(x)):
            raise ValueError(
                f"{name}: expected integer labels, got a float array with non-integral values "
                "(a probability map?); threshold or argmax it first"
            )
        if x.size and x.min() < 0:
            raise ValueError(f"{name}: expected non-negative integer labels, got minimum {x.min()}")
        return x.astype(np.int64)
    raise ValueError(f"{name}: expected integer labels, got dtype {x.dtype}")


def as_labels(x: Any, name: str) -> np.ndarray:
    """``to_numpy`` followed by ``check_labels``."""
    return check_labels(to_numpy(x, name), name)


def as_mask(x: Any, name: str) -> np.ndarray:
    """Validate a binary mask (bool, or integers/floats in {0, 1}) and return it as ``bool``."""
    arr = as_labels(x, name)
    if arr.dtype != np.bool_ and arr.size and arr.max() > 1:
        raise ValueError(
            f"{name}: expected a binary mask with values in {{0, 1}}, got maximum {arr.max()}; "
            "select one class first (e.g. labels == c)"
        )
    return arr.astype(bool, copy=False)


def check_same_shape(pred: np.ndarray, gt: np.ndarray, pred_name: str, gt_name: str) -> None:
    if pred.shape != gt.shape:
        raise ValueError(
            f"{pred_name} and {gt_name}: expected the same shape, got {tuple(pred.shape)} "
            f"and {tuple(gt.shape)}"
        )


def check_spatial_ndim(x: np.ndarray, name: str) -> None:
    if x.ndim not in (2, 3):
        raise ValueError(
            f"{name}: expected a 2D (H, W) or 3D (D, H, W) array, got {x.ndim} dimensions "
            f"with shape {tuple(x.shape)}"
        )


def check_spacing(spacing: float | Sequence[float] | None, ndim: int) -> tuple[float, ...]:
    """Return a validated per-axis spacing tuple (a scalar means isotropic, None means 1)."""
    if spacing is None:
        return (1.0,) * ndim
    if is_torch(spacing):
        spacing = spacing.tolist()
    if isinstance(spacing, (int, float, np.integer, np.floating)) and not isinstance(spacing, bool):
        values: list[float] = [float(spacing)] * ndim
    else:
        try:
            values = [float(s) for s in spacing]  # type: ignore[union-attr]
        except (TypeError, ValueError):
            raise ValueError(
                f"spacing: expected a positive number or a sequence of {ndim} positive numbers, "
                f"got {spacing!r}"
            ) from None
        if len(values) != ndim:
            raise ValueError(
                f"spacing: expected {ndim} values (one per spatial axis), got {len(values)}: "
                f"{tuple(values)}"
            )
    if not all(math.isfinite(v) and v > 0 for v in values):
        raise ValueError(f"spacing: expected finite positive values, got {tuple(values)}")
    return tuple(values)


def check_tolerance(tolerance: float) -> float:
    if isinstance(tolerance, bool) or not isinstance(
        tolerance, (int, float, np.integer, np.floating)
    ):
        raise ValueError(f"tolerance: expected a non-negative number, got {tolerance!r}")
    tol = float(tolerance)
    if not math.isfinite(tol) or tol < 0:
        raise ValueError(
            f"tolerance: expected a finite non-negative distance (physical units), got {tol}"
        )
    return tol

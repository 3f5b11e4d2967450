"""Imbalance-aware segmentation losses (pure torch; imports neither Qt nor napari).

``get_loss(name, **params)`` builds any registered loss or an ``a+b`` compound;
``list_losses()`` lists the names. Call convention: ``loss(logits, target)`` with logits
``(B, C, *spatial)`` (2D or 3D) and integer labels ``(B, *spatial)`` / ``(B, 1, *spatial)`` or
one-hot / soft targets ``(B, C, *spatial)``. See DESIGN.md ("Losses") and each class docstring
for the paper and equation it implements.
"""

from __future__ import annotations

from . import compound, cross_entropy, dice, tversky  # noqa: F401  (registers the losses)
from ._base import PixelLoss, RegionLoss, SegLoss
from ._input import Prepared, prepare
from .compound import PAPER_COMPOUNDS, CompoundLoss
from .cross_entropy import CrossEntropyLoss, FocalLoss, TopKCELoss
from .dice import (
    DiceLoss,
    FocalDiceLoss,
    FocalDiceZhaoLoss,
    GeneralizedDiceLoss,
    LogDiceLoss,
    PMDiceLoss,
    TopKDiceLoss,
    WSDiceLoss,
)
from .registry import accepted_params, get_loss, list_losses, loss_parameters, register
from .tversky import CosineTverskyLoss, FocalTverskyLoss, TverskyLoss

__all__ = [
    "PAPER_COMPOUNDS",
    "CompoundLoss",
    "CosineTverskyLoss",
    "CrossEntropyLoss",
    "DiceLoss",
    "FocalDiceLoss",
    "FocalDiceZhaoLoss",
    "FocalLoss",
    "FocalTverskyLoss",
    "GeneralizedDiceLoss",
    "LogDiceLoss",
    "PMDiceLoss",
    "PixelLoss",
    "Prepared",
    "RegionLoss",
    "SegLoss",
    "TopKCELoss",
    "TopKDiceLoss",
    "TverskyLoss",
    "WSDiceLoss",
    "accepted_params",
    "get_loss",
    "list_losses",
    "loss_parameters",
    "prepare",
    "register",
]

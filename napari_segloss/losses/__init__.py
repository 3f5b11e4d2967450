"""Imbalance-aware segmentation losses (pure torch; imports neither Qt nor napari).

``get_loss(name, **params)`` builds any registered loss or an ``a+b`` compound;
``list_losses()`` lists the names, ``loss_parameters(name)`` their parameters and
``loss_parameter_help(name)`` what each parameter does (from the docstrings). Call
convention: ``loss(logits, target)`` with logits ``(B, C, *spatial)`` (2D or 3D) and integer
labels ``(B, *spatial)`` / ``(B, 1, *spatial)`` or one-hot / soft targets
``(B, C, *spatial)``. Each class docstring cites the paper and equation it implements.

Modules: ``inputs`` (the one place inputs are checked and converted), ``functional`` (the sums
and terms every family shares), ``base`` (the classes' contract), one module per family
(``dice``, ``cross_entropy``, ``tversky``, ``combo``, ``unified_focal``), ``topk`` (the top-k
selection of the TopK losses) and ``registry`` (names, ``a+b`` compounds).
"""

from __future__ import annotations

from . import combo, cross_entropy, dice, tversky, unified_focal  # noqa: F401 (registers)
from .base import AllClassesRegionLoss, PixelLoss, RegionLoss, SegLoss
from .combo import ComboLoss, FocalLogWSDiceLoss
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
from .inputs import Prepared, prepare
from .registry import (
    PAPER_COMPOUNDS,
    SHARED_PARAMS,
    CompoundLoss,
    LossParameterError,
    UnknownLossError,
    UnknownParameterError,
    accepted_params,
    get_loss,
    list_losses,
    loss_aliases,
    loss_description,
    loss_parameter_help,
    loss_parameters,
    register,
)
from .tversky import CosineTverskyLoss, FocalTverskyLoss, TverskyLoss
from .unified_focal import AsymmetricUnifiedFocalLoss, MixedFocalLoss, UnifiedFocalLoss

__all__ = [
    "PAPER_COMPOUNDS",
    "SHARED_PARAMS",
    "AllClassesRegionLoss",
    "AsymmetricUnifiedFocalLoss",
    "ComboLoss",
    "CompoundLoss",
    "CosineTverskyLoss",
    "CrossEntropyLoss",
    "DiceLoss",
    "FocalDiceLoss",
    "FocalDiceZhaoLoss",
    "FocalLogWSDiceLoss",
    "FocalLoss",
    "FocalTverskyLoss",
    "GeneralizedDiceLoss",
    "LogDiceLoss",
    "LossParameterError",
    "MixedFocalLoss",
    "PMDiceLoss",
    "PixelLoss",
    "Prepared",
    "RegionLoss",
    "SegLoss",
    "TopKCELoss",
    "TopKDiceLoss",
    "TverskyLoss",
    "UnifiedFocalLoss",
    "UnknownLossError",
    "UnknownParameterError",
    "WSDiceLoss",
    "accepted_params",
    "get_loss",
    "list_losses",
    "loss_aliases",
    "loss_description",
    "loss_parameter_help",
    "loss_parameters",
    "prepare",
    "register",
]

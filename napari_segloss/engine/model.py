"""Model factory over segmentation-models-pytorch.

The PM-Dice paper (Hosseini 2025, section 3.2) trains a U-Net with a ResNet34 encoder on Kvasir
and ACDC: ``ModelConfig()`` defaults to exactly that (``arch="Unet"``, ``encoder="resnet34"``).
Pretrained encoder weights are opt-in (``encoder_weights="imagenet"`` needs internet) or a local
``.pth``/``.pt``/``.safetensors`` file holding an encoder or a whole-model state dict.

``model.arch: UNet3D`` builds the plain-torch 3D U-Net of :mod:`.unet3d` instead (smp has no 3D
networks); ``model.encoder`` is then ignored and ``model.encoder_weights`` may only be a local
file.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file as load_safetensors
from torch import nn

from .config import ConfigError, ModelConfig
from .safeload import safe_torch_load
from .unet3d import UNet3D

# segmentation_models_pytorch (and timm, which it loads) are imported where a model is built or
# a name is checked, not at the top: importing them costs ~1.5 s after torch, and the checkpoint
# and inference modules (which the CLI and the napari panels import) need this module without
# building anything.

__all__ = [
    "UNET3D",
    "available_architectures",
    "available_encoders",
    "build_model",
    "check_model_names",
    "load_weights_file",
    "output_stride",
    "spatial_dims_of",
]

_WEIGHT_SUFFIXES = (".pth", ".pt", ".safetensors", ".bin", ".ckpt")

#: ``model.arch`` of the built-in 3D U-Net (matched case-insensitively, like smp's names).
UNET3D = "UNet3D"


def _is_weights_path(weights: str) -> bool:
    """``model.encoder_weights`` names a local file (a weights suffix or a path separator),
    not a pretrained-weights name such as ``"imagenet"``."""
    return Path(weights).suffix in _WEIGHT_SUFFIXES or "/" in weights or "\\" in weights


def spatial_dims_of(arch: str) -> int:
    """3 for the 3D network (``UNet3D``), 2 for every smp architecture."""
    return 3 if str(arch).lower() == UNET3D.lower() else 2


def output_stride(model: nn.Module) -> int | tuple[int, ...]:
    """The network's total downsampling: :class:`~.unet3d.UNet3D`'s ``factor`` per axis, an smp
    encoder's ``output_stride``, else 1. Strided networks are not shift-invariant: a window
    whose origin is not a multiple of it sees another pixel phase than a whole-image pass.

    The one rule for the stride: training checks its input sizes against it, and validation,
    tiling and the 3D patch placement follow it. A network that declares none is taken to
    take any size (1): guessing smp's 32 would refuse sizes it may well accept, and its first
    step names a size it cannot take."""
    factor = getattr(model, "factor", None)
    if isinstance(factor, tuple | list) and all(isinstance(f, int) and f > 0 for f in factor):
        return tuple(factor)
    stride = getattr(getattr(model, "encoder", None), "output_stride", None)
    return stride if isinstance(stride, int) and stride > 0 else 1


def _import_smp() -> Any:
    """``segmentation_models_pytorch``, imported without drawing from torch's global RNG."""
    # smp < 0.5 imports pretrainedmodels, which builds modules at import: without the fork a
    # seeded run would initialise differently when smp was not yet imported in the process
    with torch.random.fork_rng(devices=[]):
        import segmentation_models_pytorch as smp
    return smp


def available_architectures() -> list[str]:
    """Architecture names accepted by ``model.arch`` (smp's class names and ``UNet3D``)."""
    smp = _import_smp()
    mapping = getattr(smp, "MODEL_ARCHITECTURES_MAPPING", None)
    if mapping is None:  # smp < 0.4 has no mapping: create_model takes the exported models
        from segmentation_models_pytorch.base import SegmentationModel

        exported = (getattr(smp, name) for name in smp.__all__)
        mapping = {
            c.__name__.lower(): c
            for c in exported
            if isinstance(c, type) and issubclass(c, SegmentationModel)
        }
    return sorted([*(cls.__name__ for cls in mapping.values()), UNET3D])


def available_encoders() -> list[str]:
    """Encoder names accepted by ``model.encoder`` (timm models also work as ``tu-<name>``)."""
    _import_smp()
    from segmentation_models_pytorch.encoders import get_encoder_names

    return sorted(get_encoder_names())


def check_model_names(cfg: ModelConfig) -> None:
    """ConfigError naming the key when ``model.arch`` or ``model.encoder`` is unknown (cheap:
    no network is built, so a run can check it before it reads its data)."""
    archs = available_architectures()
    if cfg.arch.lower() not in {a.lower() for a in archs}:
        raise ConfigError(
            f"config key 'model.arch': unknown architecture {cfg.arch!r}"
            f"{_did_you_mean(cfg.arch, archs)} (expected one of: {', '.join(archs)})"
        )
    if spatial_dims_of(cfg.arch) == 3:
        return  # UNet3D has its own encoder: model.encoder is ignored
    if cfg.encoder.startswith("tu-"):
        import timm

        if not timm.list_models(cfg.encoder[3:]):
            raise ConfigError(
                f"config key 'model.encoder': unknown timm model {cfg.encoder[3:]!r} in "
                f"{cfg.encoder!r} (see timm.list_models())"
            )
        return
    encoders = available_encoders()
    if cfg.encoder not in encoders:
        raise ConfigError(
            f"config key 'model.encoder': unknown encoder {cfg.encoder!r}"
            f"{_did_you_mean(cfg.encoder, encoders)} (expected one of: "
            f"{', '.join(encoders)}, or 'tu-<timm model>')"
        )


def _did_you_mean(name: str, known: list[str]) -> str:
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.7)
    return f"; did you mean {', '.join(map(repr, close))}?" if close else ""


def load_weights_file(path: Path | str) -> dict[str, torch.Tensor]:
    """Read a state dict from ``.safetensors`` or a torch file (``{"state_dict": ...}`` unwrapped)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config key 'model.encoder_weights': file not found: {str(path)!r}")
    prefix = "config key 'model.encoder_weights': "
    if path.suffix == ".safetensors":
        try:
            state: Any = load_safetensors(str(path))
        except Exception as exc:
            raise ConfigError(
                f"{prefix}cannot read weights file {str(path)!r}: {type(exc).__name__}: {exc}"
            ) from exc
    else:
        state = safe_torch_load(path, what="weights file", error=ConfigError, prefix=prefix)
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(state, Mapping) and isinstance(state.get(key), Mapping):
            state = state[key]
            break
    if not isinstance(state, Mapping) or not all(
        isinstance(v, torch.Tensor) for v in state.values()
    ):
        raise ConfigError(
            f"config key 'model.encoder_weights': {str(path)!r} is not a state dict of tensors"
        )
    return {str(k).removeprefix("module."): v for k, v in state.items()}


def _apply_local_weights(model: nn.Module, path: Path) -> None:
    """Load an encoder-only or whole-model state dict into ``model``; mismatch is an error."""
    state = load_weights_file(path)
    encoder: nn.Module = model.encoder  # type: ignore[assignment]
    model_keys = set(model.state_dict())
    if set(state) <= model_keys and any(k.startswith("encoder.") for k in state):
        target, name = model, "model"
    else:
        # Encoder-only file (e.g. a torchvision/timm backbone): drop a leading "encoder." if any.
        state = {k.removeprefix("encoder."): v for k, v in state.items()}
        target, name = encoder, "encoder"
    expected = target.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [k for k in state if k in expected and state[k].shape != expected[k].shape]
    # A backbone file may carry a classifier head (fc.*) that smp encoders delete: ignore those.
    unexpected = [k for k in unexpected if not k.startswith(("fc.", "classifier.", "head."))]
    if missing or unexpected or wrong:
        detail = []
        if missing:
            detail.append(f"{len(missing)} missing (e.g. {missing[0]!r})")
        if unexpected:
            detail.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]!r})")
        if wrong:
            k = wrong[0]
            detail.append(
                f"{len(wrong)} with wrong shape (e.g. {k!r}: file {tuple(state[k].shape)} vs "
                f"model {tuple(expected[k].shape)})"
            )
        raise ConfigError(
            f"config key 'model.encoder_weights': {str(path)!r} does not match the {name} of "
            f"this model: " + ", ".join(detail)
        )
    target.load_state_dict({k: state[k] for k in expected}, strict=True)


def build_model(cfg: ModelConfig) -> nn.Module:
    """Build ``smp.create_model(cfg.arch, cfg.encoder, ...)`` (PM-Dice paper section 3.2 setup).

    ``cfg.encoder_weights`` may be ``None`` (random init), an smp weights name such as
    ``"imagenet"`` (downloaded by smp), or a local weights file (encoder or whole model).
    ``cfg.kwargs`` go to ``smp.create_model`` (e.g. ``encoder_depth=3``,
    ``decoder_channels=[32, 16, 8]`` for tiny test models).

    Raises:
        ConfigError: unknown arch/encoder (listing the options), bad kwargs, unusable weights.
    """
    if not isinstance(cfg, ModelConfig):
        raise ConfigError(f"build_model: expected a ModelConfig, got {type(cfg).__name__}")
    check_model_names(cfg)
    if spatial_dims_of(cfg.arch) == 3:
        return _build_unet3d(cfg)
    smp = _import_smp()

    weights = cfg.encoder_weights
    local: Path | None = None
    if weights is not None and _is_weights_path(weights):
        local, weights = Path(weights).expanduser(), None
        if not local.is_file():
            raise ConfigError(f"config key 'model.encoder_weights': file not found: {str(local)!r}")
    try:
        model = smp.create_model(
            cfg.arch,
            encoder_name=cfg.encoder,
            encoder_weights=weights,
            in_channels=cfg.in_channels,
            classes=cfg.classes,
            **cfg.kwargs,
        )
    except TypeError as exc:
        raise ConfigError(
            f"config key 'model.kwargs': {cfg.arch} rejected {sorted(cfg.kwargs)}: {exc}"
        ) from exc
    except (KeyError, ValueError) as exc:
        if weights is not None and "weights" in str(exc).lower():
            raise ConfigError(
                f"config key 'model.encoder_weights': {weights!r} is not available for "
                f"encoder {cfg.encoder!r}: {exc}"
            ) from exc
        raise ConfigError(
            f"config key 'model': cannot build {cfg.arch}/{cfg.encoder}: {exc}"
        ) from exc
    except OSError as exc:  # download failures (URLError is an OSError)
        raise ConfigError(
            f"config key 'model.encoder_weights': could not fetch {weights!r} weights "
            f"({type(exc).__name__}: {exc}); use null or a local weights file path"
        ) from exc
    if local is not None:
        _apply_local_weights(model, local)
    return model


def _build_unet3d(cfg: ModelConfig) -> nn.Module:
    """The plain-torch :class:`~.unet3d.UNet3D`; ``cfg.kwargs`` are its keyword arguments."""
    weights = cfg.encoder_weights
    local = None if weights is None else Path(weights).expanduser()
    if weights is not None and not local.is_file():
        raise ConfigError(
            f"config key 'model.encoder_weights': file not found: {str(local)!r}"
            if _is_weights_path(weights)
            else f"config key 'model.encoder_weights': {UNET3D} has no downloadable pretrained "
            f"weights ({weights!r}); use null or a local weights file (.pt/.pth/.safetensors)"
        )
    try:
        model = UNet3D(in_channels=cfg.in_channels, classes=cfg.classes, **cfg.kwargs)
    except TypeError as exc:
        raise ConfigError(
            f"config key 'model.kwargs': {UNET3D} rejected {sorted(cfg.kwargs)}: {exc} (allowed: "
            "channels, depth, norm, anisotropic_levels)"
        ) from exc
    except ValueError as exc:
        raise ConfigError(f"config key 'model.kwargs': {UNET3D}: {exc}") from exc
    if local is not None:
        _apply_local_weights(model, local)  # whole model, or its "encoder." levels only
    return model

"""Checkpoints: atomic writes, loading, and rebuilding a model from a checkpoint alone.

A checkpoint is a ``torch.save``-d dict with at least ``"model"`` (state dict) and ``"meta"``
(everything needed to rebuild and feed the model without the training config)::

    meta = {
        "format": "napari-segloss/1",
        "arch": "Unet", "encoder": "resnet34", "in_channels": 3, "classes": 1,
        "model_kwargs": {}, "spatial_dims": 2,
        "normalization": {"scale": "uint8", "mean": [...], "std": [...]},
        "input_size": [320, 320] or None,   # images were resized to this before the model
        "crop": [256, 256] or None,          # training crop (the model is fully convolutional)
        "class_names": [...] or None, "num_classes": 2,   # label values 0..num_classes-1
        "loss": "pm_dice", "loss_params": {...},
        "slice_order": "napari",             # NIfTI: 2D slices of the (Z, Y, X) array
    }

A 3D network (``arch: "UNet3D"``) has ``"spatial_dims": 3`` and ``"patch": [Z, Y, X]`` (the
training patch, used as the sliding-window tile); its inputs are whole ``(Z, Y, X)`` volumes.

Training checkpoints (``checkpoint.pt``) also hold optimizer/scheduler/RNG state for ``resume``;
``best.pt`` holds just the model, meta and the validation metrics of its epoch.
"""

from __future__ import annotations

import os
import secrets
import threading
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .config import ConfigError, ModelConfig
from .model import build_model
from .safeload import safe_torch_load

__all__ = [
    "CHECKPOINT_FORMAT",
    "CheckpointError",
    "ModelCache",
    "check_compatible",
    "load_checkpoint",
    "load_model",
    "model_config_from_meta",
    "save_checkpoint",
]

CHECKPOINT_FORMAT = "napari-segloss/1"


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not fit the requested model (one line)."""


def save_checkpoint(path: Path | str, payload: dict[str, Any]) -> Path:
    """Write ``payload`` with ``torch.save`` atomically.

    The data goes to a temporary file in the same directory, is flushed and fsync-ed, then
    ``os.replace``-d over ``path``: a crash or Ctrl-C mid-write never leaves a truncated file,
    and readers see either the old or the new checkpoint.
    """
    if not isinstance(payload, dict):
        raise TypeError(f"payload must be a dict, got {type(payload).__name__}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _create_temporary(path)
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(payload, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        # Also on KeyboardInterrupt: never leave temp files behind.
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _create_temporary(path: Path) -> tuple[int, str]:
    """A new ``.<name>.<random>.tmp`` beside ``path``, opened for writing.

    Not ``tempfile.mkstemp``: its files are mode 0600 whatever the umask, so checkpoints would
    be unreadable to the rest of a group sharing a run folder, unlike every other run file.
    """
    while True:
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)  # Windows
            return os.open(tmp, flags, 0o666), str(tmp)
        except FileExistsError:  # pragma: no cover - 32 random bits
            continue


def load_checkpoint(path: Path | str, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint dict; ``CheckpointError`` names the file if it is missing, empty,
    unreadable or holds more than tensors and plain data (``safeload.safe_torch_load``)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {str(path)!r}")
    # Our checkpoints hold only tensors and plain Python containers/scalars: the safe loader
    # suffices (numpy RNG state is stored as lists for this reason).
    ckpt = safe_torch_load(path, map_location, error=CheckpointError)
    if not isinstance(ckpt, dict) or "model" not in ckpt or "meta" not in ckpt:
        raise CheckpointError(
            f"{str(path)!r} is not a napari-segloss checkpoint (expected a dict with 'model' and "
            "'meta'; a bare state dict cannot be rebuilt without its architecture)"
        )
    return ckpt


def model_config_from_meta(meta: dict[str, Any]) -> ModelConfig:
    """The :class:`ModelConfig` that rebuilds the model described by a checkpoint's meta."""
    try:
        return ModelConfig(
            arch=meta["arch"],
            encoder=meta["encoder"],
            encoder_weights=None,  # the checkpoint carries the trained weights
            in_channels=int(meta["in_channels"]),
            classes=int(meta["classes"]),
            kwargs=dict(meta.get("model_kwargs") or {}),
        )
    except KeyError as exc:
        raise CheckpointError(f"checkpoint meta lacks the key {exc.args[0]!r}") from None


def check_compatible(meta: dict[str, Any], cfg: ModelConfig, path: Path | str) -> None:
    """Raise ``CheckpointError`` (one line) if ``meta`` describes a different model than ``cfg``."""
    have = model_config_from_meta(meta)
    diffs = []
    for key in ("arch", "encoder", "in_channels", "classes", "kwargs"):
        a, b = getattr(have, key), getattr(cfg, key)
        if key == "arch":
            a, b = str(a).lower(), str(b).lower()
        if a != b:
            diffs.append(
                f"model.{key}: checkpoint {getattr(have, key)!r} vs config {getattr(cfg, key)!r}"
            )
    if diffs:
        raise CheckpointError(
            f"checkpoint {str(path)!r} was trained with a different model: " + "; ".join(diffs)
        )


def load_model(
    path: Path | str, device: str | torch.device = "cpu"
) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model of a checkpoint from its meta alone and load its weights.

    Returns ``(model in eval mode on device, meta)``. Raises ``CheckpointError`` naming the file.
    """
    ckpt = load_checkpoint(path, map_location="cpu")
    meta = dict(ckpt["meta"])
    try:
        model = build_model(model_config_from_meta(meta))
    except ConfigError as exc:
        raise CheckpointError(f"checkpoint {str(path)!r}: cannot rebuild its model: {exc}") from exc
    try:
        model.load_state_dict(ckpt["model"], strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        raise CheckpointError(
            f"checkpoint {str(path)!r}: weights do not fit {meta.get('arch')}/{meta.get('encoder')}: "
            + (first[1].strip() if len(first) > 1 else first[0])
        ) from exc
    model.to(device).eval()
    return model, meta


class ModelCache:
    """The last model :func:`load_model` built, kept for the next load of the same file.

    A panel that runs one checkpoint again and again (a new image, another tile size) then
    skips reading the file and rebuilding the network. The file counts as the same while its
    resolved path, size and modification time are; a retrained ``best.pt`` is loaded afresh.
    One model at a time, on the device it was asked for; thread-safe. Callers must not
    change the model they get (it is in eval mode, as :func:`load_model` returns it).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._key: tuple[Any, ...] | None = None
        self._loaded: tuple[nn.Module, dict[str, Any]] | None = None

    def load(
        self, path: Path | str, device: str | torch.device = "cpu"
    ) -> tuple[nn.Module, dict[str, Any]]:
        """:func:`load_model` of ``path`` on ``device``, from the cache when it holds it."""
        try:
            resolved = Path(path).expanduser().resolve()
            stat = resolved.stat()
        except OSError:
            return load_model(path, device)  # load_model says what is wrong with the path
        # save_checkpoint replaces the file: a new inode and modification time
        file_id = (str(resolved), stat.st_ino, stat.st_size, stat.st_mtime_ns)
        key = (*file_id, str(torch.device(device)))
        with self._lock:
            if self._key != key or self._loaded is None:
                self._key, self._loaded = None, None  # free the old model before the new one
                self._loaded = load_model(path, device)
                self._key = key
            model, meta = self._loaded
            return model, dict(meta)

    def clear(self) -> None:
        """Drop the kept model (e.g. to free GPU memory)."""
        with self._lock:
            self._key, self._loaded = None, None

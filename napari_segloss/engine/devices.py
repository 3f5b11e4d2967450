"""The one rule that turns a device setting (``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"``,
``"mps"``) into a ``torch.device`` for training, validation and prediction alike."""

from __future__ import annotations

import torch

__all__ = ["autocast_dtype", "resolve_device"]


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return mps is not None and mps.is_available()


def resolve_device(device: str | torch.device | None, local_rank: int = 0) -> torch.device:
    """``"auto"``/``None`` -> this process's CUDA device, else MPS, else CPU; explicit choices
    are checked here, not at the first tensor moved (where "Found no NVIDIA driver" comes as a
    traceback).

    Args:
        device: the setting.
        local_rank: this process's rank on its machine (``torchrun``); picks the CUDA device for
            ``"auto"`` and for ``"cuda"`` without an index.

    Raises:
        ValueError: not a device name, or a device this machine lacks.
    """
    if device is None or (isinstance(device, str) and device == "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda", local_rank % torch.cuda.device_count())
        return torch.device("mps") if _mps_available() else torch.device("cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(
            f"device: expected 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps', got {device!r}"
        ) from exc
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                f"device {str(device)!r}: CUDA is not available here (use auto or cpu)"
            )
        count = torch.cuda.device_count()
        if dev.index is None:
            return torch.device("cuda", local_rank % count)
        if dev.index >= count:
            raise ValueError(f"device {str(device)!r}: only {count} CUDA device(s) exist")
    if dev.type == "mps" and not _mps_available():
        raise ValueError(f"device {str(device)!r}: MPS is not available here (use auto or cpu)")
    return dev


def autocast_dtype(device: torch.device, setting: str) -> tuple[torch.dtype, str | None]:
    """The autocast dtype for ``train.amp_dtype`` on a CUDA ``device``, and a note when it
    differs: a GPU without native bfloat16 (compute capability below 8.0: T4, V100, RTX 20xx)
    gets float16 with a loss scaler, since torch emulates bfloat16 there, slower than float16
    (``torch.cuda.is_bf16_supported()`` reports the emulation as support)."""
    if setting != "bfloat16":
        return torch.float16, None
    major, minor = torch.cuda.get_device_capability(device)
    if major >= 8:
        return torch.bfloat16, None
    name = torch.cuda.get_device_name(device)
    return torch.float16, (
        f"mixed precision in float16 with a loss scaler: {name} (compute capability "
        f"{major}.{minor}) has no native bfloat16 (train.amp_dtype)"
    )

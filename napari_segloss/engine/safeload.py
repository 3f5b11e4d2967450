"""Loading ``torch.save`` files safely: tensors and plain data only, one-line errors.

``torch.load(..., weights_only=True)`` refuses pickles that hold other Python objects (which
could run code while loading). Its own message then advises loading with
``weights_only=False``; this module says instead that the file was refused for safety, and
reports an empty (0-byte) file as such rather than as a bare ``EOFError``.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch

__all__ = ["safe_torch_load"]


def safe_torch_load(
    path: Path,
    map_location: str | torch.device = "cpu",
    *,
    what: str = "checkpoint",
    error: type[ValueError] = ValueError,
    prefix: str = "",
) -> Any:
    """``torch.load(path, weights_only=True)``; failures raise ``error(prefix + message)``,
    one line naming ``what`` and the file."""
    name = f"{what} {str(path)!r}"
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise error(f"{prefix}cannot read {name}: {exc.strerror or exc}") from None
    if size == 0:
        raise error(
            f"{prefix}{name} is empty (0 bytes): it was not written completely (an interrupted "
            "save or copy?)"
        )
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        if "GLOBAL" in str(exc):  # a class or function to import: code would run on load
            raise error(
                f"{prefix}{name} holds executable Python objects, not only tensors and plain "
                "data: it was refused for safety, since loading it could run arbitrary code"
            ) from None
        raise error(
            f"{prefix}cannot read {name}: not a torch checkpoint (corrupt or another format)"
        ) from None
    except Exception as exc:  # truncated zip, wrong format, ...: many exception types
        # torch's messages run to paragraphs: keep the first sentence
        first = str(exc).strip().splitlines()[0].split(". ")[0] if str(exc).strip() else ""
        raise error(
            f"{prefix}cannot read {name}: {type(exc).__name__}: {first} (truncated or corrupt "
            "file?)"
        ) from None

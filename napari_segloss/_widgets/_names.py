"""The panels' error type and class names, plain Python: the modules that run in thread
workers (:mod:`._explorer_jobs`, :mod:`._explorer_layers`, :mod:`._compare_setup`) take them
from here rather than from :mod:`._common`, the module of Qt widgets."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["PanelError", "class_label", "class_name", "class_title", "layer_class_names"]


class PanelError(ValueError):
    """A bad selection or input in a panel; shown to the user as a message, not a traceback."""


def layer_class_names(layer: Any) -> tuple[str, ...] | None:
    """The class names a Labels layer carries (``metadata["class_names"]``, by label value,
    background first; set by the samples, a prediction, or you), or None."""
    names = getattr(layer, "metadata", {}).get("class_names") if layer is not None else None
    if isinstance(names, list | tuple) and names and all(isinstance(n, str) for n in names):
        return tuple(names)
    return None


def class_name(c: int, names: Sequence[str] | None) -> str | None:
    """Class ``c``'s name from ``class_names`` (a checkpoint's or a layer's; None without)."""
    return names[c] if names and 0 <= c < len(names) else None


def class_title(c: int, names: Sequence[str] | None) -> str:
    """A class as titles name it: ``"MYO"`` with names, else ``"class 2"``."""
    return class_name(c, names) or f"class {c}"


def class_label(c: int, names: Sequence[str] | None) -> str:
    """A class as the tables head it: ``"2 MYO"`` with names, else ``"class 2"``."""
    name = class_name(c, names)
    return f"{c} {name}" if name else f"class {c}"

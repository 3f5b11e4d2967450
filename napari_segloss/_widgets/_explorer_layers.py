"""The Loss Explorer's map layers: what each result is drawn as (data, title, colours), one
list in grid order; plain data, no Qt or napari object is touched (the panel adds the layers)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from . import _explorer_jobs as jobs
from ._names import class_title, layer_class_names

if TYPE_CHECKING:
    from napari_segloss.explorer import ExplorerResult

__all__ = [
    "CONTRIB_COLORMAP",
    "CONTRIB_MARK",
    "MODULATING_COLORMAP",
    "Wanted",
    "wanted_layers",
]

CONTRIB_COLORMAP = "inferno"
MODULATING_COLORMAP = "viridis"
#: what the titles of contribution maps add to the loss's name
CONTRIB_MARK = "|∂L/∂z|"

#: a map layer to draw: (key, data, name, layer properties)
Wanted = tuple[str, np.ndarray, str, dict[str, Any]]


def wanted_layers(res: ExplorerResult, info: dict[str, Any]) -> list[Wanted]:
    """The map layers of ``res`` in grid order: prediction, losses, ascending γ."""
    z, shape = info["z"], info["shape"]
    cls = min(info["cls"], res.num_classes - 1)

    def place(arr: np.ndarray) -> np.ndarray:
        if z is None:
            return arr
        full = np.zeros(shape, dtype=np.float32)
        full[z] = arr
        return full

    c_props = {"colormap": CONTRIB_COLORMAP, "contrast_limits": res.clim}
    m_props = {"colormap": MODULATING_COLORMAP, "contrast_limits": (0.0, 1.0)}
    wanted: list[Wanted] = []
    if res.prediction is not None:
        props = {"colormap": "gray", "contrast_limits": (0.0, 1.0)}
        named = class_title(cls, layer_class_names(info["gt_layer"]))
        wanted.append(("prediction", place(res.prediction), f"prediction p({named})", props))
    for name, arr in res.contributions.items():
        # short: a grid cell is narrow, and loss labels with parameters are long (the
        # status line says what |∂L/∂z| is, and its units)
        title = f"{res.labels[name]} {CONTRIB_MARK}"
        wanted.append((f"contrib:{name}", place(arr), title, c_props))
    for g, arr in res.modulating:
        title = jobs.core().modulating_title(g)
        wanted.append((f"gamma:{info['gamma_uids'].get(g)}", place(arr), title, m_props))
    return wanted

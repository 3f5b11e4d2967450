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
    "contribution_title",
    "wanted_layers",
]

CONTRIB_COLORMAP = "inferno"
MODULATING_COLORMAP = "viridis"
#: what the titles of contribution maps add to the loss's name
CONTRIB_MARK = "|∂L/∂z|"

#: a map layer to draw: (key, data, name, layer properties)
Wanted = tuple[str, np.ndarray, str, dict[str, Any]]


def contribution_title(name: str, label: str) -> str:
    """The title of loss ``name``'s contribution map: ``"dice |∂L/∂z|"``, and the parameters
    of its ``label`` after the mark: ``"ce+pm_dice |∂L/∂z| (weights=(0.5, 1))"``.

    Short: a grid cell is narrow (the status line says what |∂L/∂z| is, and its units). A
    title too wide for its cell at the smallest font is cut at the cell's right edge: the
    parameters (listed in the values table too) go first, never the mark. After the label,
    a compound's long parameter list took the mark away, which said the map is a gradient.
    """
    params = label[len(name) :] if label.startswith(name) else ""
    head = name if params else label
    return f"{head} {CONTRIB_MARK} {params}" if params else f"{head} {CONTRIB_MARK}"


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
        title = contribution_title(name, res.labels[name])
        wanted.append((f"contrib:{name}", place(arr), title, c_props))
    for g, arr in res.modulating:
        title = jobs.core().modulating_title(g)
        wanted.append((f"gamma:{info['gamma_uids'].get(g)}", place(arr), title, m_props))
    return wanted

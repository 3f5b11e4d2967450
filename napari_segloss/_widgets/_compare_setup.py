"""What the Compare Losses panel hands to the engine, and what it reads back (no Qt object
is touched here: it runs in thread workers).

The panel collects its widgets into a :class:`CompareRequest` on the main thread;
:func:`iter_request` runs it in a thread worker through
:func:`napari_segloss.engine.compare.iter_compare`, the one engine behind ``segloss compare``
(every check and message is the engine's). :func:`saved_settings` reads a comparison folder's
settings back, so that re-opening the folder fills the panel and Start resumes it.

napari layers become lists of 2D arrays (:func:`layer_pairs`): a 2D image is one pair, a stack
of RGB frames or a grey volume one pair per frame / slice, as the Train panel trains on them.
"""

from __future__ import annotations

import contextlib
import copy
import json
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import yaml

from napari_segloss.data.io import find_pairs, read_image, read_mask, read_nifti
from napari_segloss.engine.compare_results import MANIFEST

from ._compat import preload_torch_libraries
from ._gc import pause_collection, resume_collection
from ._names import PanelError

if TYPE_CHECKING:
    from napari_segloss.engine.events import CompareEvent

#: ``(images, masks or None, names)``: 2D arrays as ``iter_compare(data=...)`` takes them
Pairs = tuple[list[np.ndarray], list[np.ndarray] | None, list[str]]

#: how many pairs of a folder are read to fit the model's input channels and classes
PROBE_PAIRS = 8


def layer_pairs(image: np.ndarray, mask: np.ndarray | None, *, rgb: bool, name: str) -> Pairs:
    """One pair for a 2D image; one per frame for a stack of RGB frames ``(N, Y, X, 3)`` or a
    grey stack / volume ``(Z, Y, X)`` (sliced for 2D models; empty slices teach background).
    Items are named ``name[i]`` (what eval.json and the overlays call them)."""
    single = image.ndim == (3 if rgb else 2)
    if image.ndim not in ((3, 4) if rgb else (2, 3)):
        kind = "an RGB image or a stack of RGB frames" if rgb else "a 2D image or a 3D stack"
        raise PanelError(f"image {name!r}: expected {kind}, got shape {image.shape}")
    if single:
        return [np.array(image)], None if mask is None else [np.array(mask)], [name]
    n = image.shape[0]
    images = [np.array(image[i]) for i in range(n)]
    masks = None if mask is None else [np.array(mask[i]) for i in range(n)]
    return images, masks, [f"{name}[{i}]" for i in range(n)]


def parse_seeds(text: str) -> list[int]:
    """``"0, 1, 2"`` or ``"0 1 2"`` -> ``[0, 1, 2]`` (the engine refuses duplicates)."""
    parts = [p for p in re.split(r"[,\s]+", text.strip()) if p]
    if not parts or not all(re.fullmatch(r"\d+", p) for p in parts):
        raise PanelError(f"seeds: expected non-negative integers such as '0, 1, 2', got {text!r}")
    return [int(p) for p in parts]


def parse_overrides(text: str) -> list[str]:
    """One ``key=value`` per line (``segloss compare --set``); blank lines and ``#`` comments
    are skipped. The engine validates keys and values with the CLI's messages."""
    out = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if "=" not in line.partition("#")[0]:
            raise PanelError(f"more settings: expected 'key=value' per line, got {line!r}")
        out.append(line)
    return out


def override_keys(overrides: Sequence[str]) -> set[str]:
    return {o.partition("=")[0].strip() for o in overrides}


def classes_for(top_label: int) -> int:
    """Model output channels for masks with labels up to ``top_label`` (1: binary, sigmoid)."""
    return 1 if top_label <= 1 else top_label + 1


@dataclass
class CompareRequest:
    """One comparison as the panel asks for it (built on the main thread, run in a worker)."""

    #: the config tree every run shares (no loss, seed or output)
    base: dict[str, Any]
    #: ``{"name", "params"[, "label"]}`` per table row
    losses: list[dict[str, Any]]
    seeds: list[int]
    output: Path
    #: ``key=value`` config overrides for every run (``--set``)
    overrides: list[str] = field(default_factory=list)
    #: training arrays (napari layers), or None for the folder ``base["data"]["root"]``
    data: Pairs | None = None
    heldout: Pairs | None = None
    title: str = ""


def merged(base: Mapping[str, Any] | None, values: Mapping[str, Any]) -> dict[str, Any]:
    """``values`` (nested sections) written over a copy of ``base``."""
    out = copy.deepcopy(dict(base or {}))
    for key, value in values.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merged(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _folder_fit(base: Mapping[str, Any], overrides: Sequence[str]) -> tuple[int, int] | None:
    """``(in_channels, classes)`` from the first pairs of the training folder, None when the
    folder cannot be read (the engine then names the problem)."""
    from napari_segloss.data.factory import resolve_root  # heavy (torch): worker only
    from napari_segloss.engine.config import load_config  # pydantic: worker only

    try:
        cfg = load_config(dict(base), list(overrides))
        d = cfg.data
        nifti = d.kind == "nifti"
        pairs = find_pairs(resolve_root(d.root), d.images, d.masks, nifti=nifti)[:PROBE_PAIRS]
        if nifti:
            return 1, classes_for(max(int(read_nifti(m)[0].max()) for _, m in pairs))
        first = read_image(pairs[0][0])
        channels = first.shape[-1] if first.ndim == 3 else 1
        return channels, classes_for(max(int(read_mask(m).max()) for _, m in pairs))
    except (OSError, ValueError, IndexError):
        return None


def prepared_base(request: CompareRequest) -> dict[str, Any]:
    """The request's base with the model fitted to a folder's images and labels (unless the
    user set ``model.in_channels`` / ``model.classes`` in the overrides)."""
    base = copy.deepcopy(request.base)
    if request.data is not None:
        return base
    fit = _folder_fit(base, request.overrides)
    if fit is not None:
        keys = override_keys(request.overrides)
        model = base.setdefault("model", {})
        for key, value in zip(("in_channels", "classes"), fit, strict=True):
            if f"model.{key}" not in keys:
                model[key] = value
    return base


@contextlib.contextmanager
def quiet_imports() -> Iterator[None]:
    """Big imports in a worker without freezing the window: napari, torch and smp leave
    millions of long-lived objects that every full cyclic garbage collection walks, 0.3-1 s
    with the GIL held (measured while the panel loads and at random moments of a training).
    No collection runs during the imports (they make next to no garbage), and what exists then
    stays out of the collector's reach until the panel closes (``_gc.resume_collection``
    with ``keep_frozen``; :func:`release_frozen`)."""
    pause_collection()
    try:
        yield
    finally:
        resume_collection(keep_frozen=True)


def warm_up() -> list[str]:
    """Import what the first run needs (the engine, torchvision, smp and its model hub, SciPy's
    KD-tree: about 3 s) in a worker before Start, so that the window does not stutter while
    the first run begins. Returns the architectures the model factory accepts."""
    with quiet_imports():
        import scipy.spatial  # noqa: F401  what the surface metrics import on first use

        from napari_segloss.engine import compare  # noqa: F401  heavy (torch): worker only
        from napari_segloss.engine.model import available_architectures  # heavy: worker only

        return available_architectures()


def iter_request(
    request: CompareRequest, should_stop: Callable[[], bool]
) -> Iterator[CompareEvent]:
    """Run ``request`` (in a thread worker): the events of ``iter_compare``."""
    preload_torch_libraries()  # keeps the window responsive while torch loads (see _compat)
    from napari_segloss.engine.compare import iter_compare  # heavy (torch): worker only

    events = iter_compare(
        prepared_base(request),
        request.losses,
        request.seeds,
        request.output,
        request.overrides,
        data=request.data,
        heldout=request.heldout,
        should_stop=should_stop,
        title=request.title,
        progress=False,
    )
    try:
        yield from events
    finally:
        events.close()  # releases the folder lock when the worker is dropped mid-run


# -- re-opening a folder --------------------------------------------------------------------------


@dataclass
class SavedSettings:
    """What a comparison folder says about how it was run (``compare.json`` and the
    ``config.yaml`` of one of its runs)."""

    output: Path
    losses: list[dict[str, Any]]
    seeds: list[int]
    #: a run's whole config without loss, seed and output: the base a resume starts from
    base: dict[str, Any] | None
    data_root: str | None
    test_root: str | None
    title: str = ""

    @property
    def from_layers(self) -> bool:
        return str(self.data_root or "").startswith("layers:")

    @property
    def heldout_layers(self) -> bool:
        return str(self.test_root or "").startswith("layers:")


def _run_config(output: Path, runs: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
    for run in runs:
        path = output / str(run.get("run_dir", "")) / "config.yaml"
        if path.is_file():
            try:
                tree = yaml.safe_load(path.read_text(encoding="utf-8"))
            except (OSError, yaml.YAMLError):
                continue
            if isinstance(tree, dict):
                for key in ("loss", "output"):
                    tree.pop(key, None)
                tree.get("train", {}).pop("seed", None)
                return tree
    return None


def saved_settings(output: Path | str) -> SavedSettings | None:
    """The settings of the comparison in ``output`` (None when it is not one)."""
    output = Path(output).expanduser()
    try:
        data = json.loads((output / MANIFEST).read_text(encoding="utf-8"))
        losses = [
            {"name": d["name"], "params": dict(d.get("params") or {}), "label": d["label"]}
            for d in data["losses"]
        ]
        seeds = [int(s) for s in data["seeds"]]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    where = data.get("data") if isinstance(data.get("data"), Mapping) else {}
    return SavedSettings(
        output=output,
        losses=losses,
        seeds=seeds,
        base=_run_config(output, data.get("runs") or []),
        data_root=where.get("root"),
        test_root=where.get("test_root"),
        title=str(data.get("title") or ""),
    )


def format_seeds(seeds: Sequence[int]) -> str:
    return ", ".join(str(s) for s in seeds)


def section(tree: Mapping[str, Any] | None, *keys: str) -> Any:
    """``tree[k1][k2]...`` or None."""
    node: Any = tree
    for key in keys:
        if not isinstance(node, Mapping) or key not in node:
            return None
        node = node[key]
    return node

"""The config-driven dataset factory: ``data.root`` resolution, train/val/test splits, datasets.

:func:`build_datasets` turns a training config into ``(train_ds, val_ds)`` of the right kind
(:class:`~.datasets.FolderDataset`, :class:`~.datasets.NiftiSliceDataset` or 3D
:class:`~.patches.NiftiPatchDataset`). It reads ``cfg.data``, ``cfg.model.in_channels`` and
``cfg.train.seed`` of a :class:`napari_segloss.engine.config.TrainConfig`; this module does not
import the engine (arrows point from the engine to the data, never back), so any object with
those attributes works. Whether the *model* fits the data (a 3D network for 3D patches) is the
engine's check.

Protocols (PM-Dice paper, Hosseini 2025, section 3.1): Kvasir-SEG 90/10 split from the seed;
ACDC with the ``splits/`` folder's train/val/test frame lists.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import numpy as np
import yaml

from ..samples import sample_pairs_dir
from .datasets import DataError, FolderDataset, NiftiSliceDataset, SegmentationDataset
from .io import find_pairs, path_stem
from .patches import NiftiPatchDataset
from .transforms import Normalization

__all__ = ["DatasetsConfig", "build_datasets", "build_test_dataset", "read_split", "resolve_root"]

Pairs = list[tuple[Path, Path]]


class DatasetsConfig(Protocol):
    """What the factory reads of a training config (``engine.config.TrainConfig`` has it):
    ``data`` (the ``data:`` section), ``model.in_channels`` and ``train.seed``."""

    @property
    def data(self) -> Any: ...

    @property
    def model(self) -> Any: ...

    @property
    def train(self) -> Any: ...


def resolve_root(root: Path | str) -> Path:
    """``data.root`` as a folder; ``bundled:NAME`` points at the package's sample data."""
    text = str(root)
    if text.startswith("bundled:"):
        name = text.split(":", 1)[1]
        try:
            return Path(sample_pairs_dir(name))
        except ValueError as exc:
            raise DataError(f"config key 'data.root': {exc}") from exc
    path = Path(text).expanduser()
    if not path.is_dir():
        raise DataError(f"config key 'data.root': folder not found: {text!r}")
    return path


def _read_ids(path: Path) -> list[str]:
    ids = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            ids.append(line)
    return ids


def read_split(split_file: Path | str, root: Path | None = None) -> dict[str, list[str]]:
    """Read a split: a folder with ``train.txt``/``val.txt`` (optional ``test.txt``), a ``.txt``
    listing the validation ids (the rest train), or a ``.json``/``.yaml`` mapping
    ``{"train": [...], "val": [...], "test": [...]}``. Ids are file stems (``patient001_frame01``).
    """
    path = Path(split_file).expanduser()
    if not path.exists() and root is not None and (root / path).exists():
        path = root / path
    if not path.exists():
        raise DataError(f"config key 'data.split_file': not found: {str(split_file)!r}")
    if path.is_dir():
        out: dict[str, list[str]] = {}
        for name in ("train", "val", "test"):
            f = path / f"{name}.txt"
            if f.is_file():
                out[name] = _read_ids(f)
        if "train" not in out or ("val" not in out and "test" not in out):
            raise DataError(
                f"config key 'data.split_file': {str(path)!r} must contain train.txt and val.txt "
                "(or test.txt)"
            )
        if "val" not in out:
            out["val"] = out["test"]
        return out
    if path.suffix in (".json", ".yaml", ".yml"):
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            raise DataError(
                f"config key 'data.split_file': {str(path)!r} is not valid YAML/JSON"
            ) from exc
        if not isinstance(loaded, dict) or not {"train", "val"} <= set(loaded):
            raise DataError(
                f"config key 'data.split_file': {str(path)!r} must map 'train' and 'val' to id lists"
            )
        return {k: [str(x) for x in v] for k, v in loaded.items() if k in ("train", "val", "test")}
    return {"val": _read_ids(path)}


def _split_pairs(pairs: Pairs, cfg: DatasetsConfig, root: Path) -> dict[str, Pairs]:
    by_id = {path_stem(img): (img, msk) for img, msk in pairs}
    d = cfg.data
    if d.split_file is not None:
        split = read_split(d.split_file, root)
        if "train" not in split:  # a plain .txt of validation ids
            val_set = set(split["val"])
            split["train"] = [k for k in sorted(by_id) if k not in val_set]
        out = {}
        for name, ids in split.items():
            missing = [i for i in ids if i not in by_id]
            if missing:
                raise DataError(
                    f"config key 'data.split_file': {len(missing)} id(s) of the {name} split have "
                    f"no image/mask pair under {str(root)!r} (e.g. {missing[0]!r})"
                )
            chosen = ids[: d.limit] if d.limit else ids
            out[name] = [by_id[i] for i in chosen]
        return out
    ids = sorted(by_id)
    rng = np.random.default_rng(cfg.train.seed)
    order = [ids[i] for i in rng.permutation(len(ids))]
    if d.limit:
        order = order[: d.limit]
    n_val = round(len(order) * d.val_fraction)
    if d.val_fraction > 0 and len(order) >= 2:
        n_val = min(max(n_val, 1), len(order) - 1)
    val = sorted(order[:n_val])
    train = sorted(order[n_val:])
    return {"train": [by_id[i] for i in train], "val": [by_id[i] for i in val]}


def _pairs_for(cfg: DatasetsConfig) -> tuple[Pairs, Path]:
    d = cfg.data
    root = resolve_root(d.root)
    for key, sub in (("images", d.images), ("masks", d.masks)):
        if not (root / sub).is_dir():
            found = sorted(p.name for p in root.iterdir() if p.is_dir())
            raise DataError(
                f"config key 'data.{key}': folder {str(root / sub)!r} not found "
                f"(sub-folders of data.root: {', '.join(found) or 'none'})"
            )
    try:
        pairs = find_pairs(root, d.images, d.masks, nifti=d.kind == "nifti")
    except ValueError as exc:
        raise DataError(str(exc)) from exc
    return pairs, root


def _make(
    cfg: DatasetsConfig,
    pairs: Pairs,
    *,
    train: bool,
    normalization: Normalization | None,
) -> SegmentationDataset:
    d = cfg.data
    common: dict[str, Any] = {
        "train": train,
        "augment": d.augment,
        "augmentation": d.augmentation,
        "cache": d.cache,
        "normalize": d.normalize,
        "normalization": normalization,
        "in_channels": cfg.model.in_channels,
    }
    if d.kind == "nifti" and d.slices == "3d":
        return NiftiPatchDataset(
            pairs,
            patch=d.patch,  # checked by _check_slices
            patches_per_volume=d.patches_per_volume,
            patch_foreground=d.patch_foreground,
            **common,
        )
    if d.kind == "nifti":
        return NiftiSliceDataset(pairs, size=d.size, crop=d.crop, **common)
    return FolderDataset(pairs=pairs, size=d.size, crop=d.crop, **common)


def _check_slices(cfg: DatasetsConfig) -> None:
    """3D patches (``data.slices: 3d``) need ``data.patch`` and use neither size nor crop."""
    d = cfg.data
    if d.slices == "3d" and d.kind != "nifti":
        raise DataError(
            f"config key 'data.slices': 3d patches are cut from NIfTI volumes (data.kind: "
            f"nifti), got kind {d.kind!r}"
        )
    if d.slices != "3d":
        return
    if d.patch is None:
        raise DataError(
            "config key 'data.patch': data.slices: 3d needs a patch size [Z, Y, X], e.g. [8, 96, 96]"
        )
    for key in ("size", "crop"):
        if getattr(d, key) is not None:
            raise DataError(
                f"config key 'data.{key}': not used with data.slices: 3d (patches of "
                "data.patch are cut at native resolution); set it to null"
            )


def build_datasets(cfg: DatasetsConfig) -> tuple[SegmentationDataset, SegmentationDataset]:
    """``(train_ds, val_ds)`` for ``cfg.data``: deterministic split from ``cfg.train.seed``
    (``val_fraction``) or from ``split_file``. The validation set uses the training set's
    normalisation, no crop and no augmentation. Data is read lazily (see ``validate``).
    """
    _check_slices(cfg)
    pairs, root = _pairs_for(cfg)
    split = _split_pairs(pairs, cfg, root)
    if not split["train"]:
        raise DataError(f"config key 'data.root': no training pairs left under {str(root)!r}")
    train_ds = _make(cfg, split["train"], train=True, normalization=None)
    val_ds = _make(cfg, split.get("val", []), train=False, normalization=train_ds.normalization)
    return train_ds, val_ds


def build_test_dataset(
    cfg: DatasetsConfig, normalization: Normalization | None = None
) -> SegmentationDataset | None:
    """The ``test`` split of ``cfg.data.split_file`` (None when the split has no test list)."""
    _check_slices(cfg)
    if cfg.data.split_file is None:
        return None
    pairs, root = _pairs_for(cfg)
    split = _split_pairs(pairs, cfg, root)
    if not split.get("test"):
        return None
    return _make(cfg, split["test"], train=False, normalization=normalization)

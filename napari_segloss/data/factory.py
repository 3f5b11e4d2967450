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

import hashlib
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import yaml

from ..samples import sample_pairs_dir
from .datasets import (
    ArrayDataset,
    DataError,
    FolderDataset,
    NiftiSliceDataset,
    SegmentationDataset,
)
from .io import find_pairs, path_stem
from .patches import NiftiPatchDataset
from .transforms import Normalization

__all__ = [
    "LAYERS_PREFIX",
    "ArrayPairs",
    "DatasetsConfig",
    "array_fingerprint",
    "build_array_datasets",
    "build_datasets",
    "build_eval_dataset",
    "build_test_dataset",
    "dataset_settings",
    "eval_split",
    "read_split",
    "resolve_root",
    "split_ids",
    "unpack_array_pairs",
]

Pairs = list[tuple[Path, Path]]
#: In-memory data: ``(images, masks)`` or ``(images, masks, names)``, one 2D array per item
#: (``(H, W)``, ``(H, W, 3)`` or ``(C, H, W)`` images; ``(H, W)`` integer masks).
ArrayPairs = (
    tuple[Sequence[np.ndarray], Sequence[np.ndarray]]
    | tuple[Sequence[np.ndarray], Sequence[np.ndarray], Sequence[str]]
)
#: ``data.root`` / ``data.test_root`` of in-memory data: ``layers:<fingerprint>``. There is no
#: folder behind it; the fingerprint makes a saved config name the exact arrays it was run on.
LAYERS_PREFIX = "layers:"


class DatasetsConfig(Protocol):
    """What the factory reads of a training config (``engine.config.TrainConfig`` has it):
    ``data`` (the ``data:`` section), ``model.in_channels`` and ``train.seed``."""

    @property
    def data(self) -> Any: ...

    @property
    def model(self) -> Any: ...

    @property
    def train(self) -> Any: ...


def resolve_root(root: Path | str, key: str = "data.root") -> Path:
    """``data.root`` (or ``key``) as a folder; ``bundled:NAME`` points at the package's sample
    data. ``layers:...`` (in-memory arrays) has no folder and is refused with an explanation."""
    text = str(root)
    if text.startswith("bundled:"):
        name = text.split(":", 1)[1]
        try:
            return Path(sample_pairs_dir(name))
        except ValueError as exc:
            raise DataError(f"config key {key!r}: {exc}") from exc
    if text.startswith(LAYERS_PREFIX):
        raise DataError(
            f"config key {key!r}: {text!r} names in-memory images and masks (napari layers) "
            "that were passed as arrays, not a folder; pass the arrays again (the napari panel, "
            "or datasets/data= in Python) or set a folder"
        )
    path = Path(text).expanduser()
    if not path.is_dir():
        raise DataError(f"config key {key!r}: folder not found: {text!r}")
    return path


def _read_ids(path: Path) -> list[str]:
    ids = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            ids.append(line)
    return ids


def read_split(split_file: Path | str, root: Path | None = None) -> dict[str, list[str]]:
    """Read a split: a folder with ``train.txt``/``val.txt`` (optional ``test.txt``; without
    ``val.txt`` no ``"val"`` key: the validation split is then drawn from ``train.txt``), a
    ``.txt`` listing the validation ids (the rest train), or a ``.json``/``.yaml`` mapping
    ``{"train": [...], "val": [...], "test": [...]}``. Ids are file stems (``patient001_frame01``).
    """
    path = Path(split_file).expanduser()
    if not path.exists() and root is not None and (root / path).exists():
        path = root / path
    if not path.exists():
        where = f" (nor under data.root {str(root)!r})" if root is not None else ""
        raise DataError(
            f"config key 'data.split_file': not found: {str(split_file)!r}{where}; for data "
            "without a split file pass data.split_file=null (data.val_fraction then draws the "
            "validation split)"
        )
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
        # train.txt + test.txt alone: the validation split is drawn from train.txt (see
        # _split_pairs); test.txt stays held out (it chose best.pt, then was scored as unseen)
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
        for key in ("train", "val", "test"):  # a string would be read as a list of letters
            if key in loaded and not isinstance(loaded[key], list):
                raise DataError(
                    f"config key 'data.split_file': {str(path)!r}: {key!r} must be a list of "
                    f"ids, got {type(loaded[key]).__name__} {loaded[key]!r}"
                )
        return {k: [str(x) for x in v] for k, v in loaded.items() if k in ("train", "val", "test")}
    return {"val": _read_ids(path)}


def _split_pairs(pairs: Pairs, cfg: DatasetsConfig, root: Path) -> dict[str, Pairs]:
    by_id = {path_stem(img): (img, msk) for img, msk in pairs}
    d = cfg.data
    group = _group_key(getattr(d, "split_group", None), list(by_id), _custom_split_group(d))
    if d.split_file is None:
        train, val = split_ids(list(by_id), d.val_fraction, cfg.train.seed, d.limit, group=group)
        return {"train": [by_id[i] for i in train], "val": [by_id[i] for i in val]}
    split = read_split(d.split_file, root)
    if "train" not in split:  # a plain .txt of validation ids
        val_set = set(split["val"])
        split["train"] = [k for k in sorted(by_id) if k not in val_set]
    for name, ids in split.items():
        missing = [i for i in ids if i not in by_id]
        if missing:
            raise DataError(
                f"config key 'data.split_file': {len(missing)} id(s) of the {name} split have "
                f"no image/mask pair under {str(root)!r} (e.g. {missing[0]!r})"
            )
    _refuse_shared_ids(split)
    if "val" not in split:  # train.txt + test.txt: validation drawn from train.txt
        split["train"], split["val"] = split_ids(
            split["train"], d.val_fraction, cfg.train.seed, group=group
        )
    return {name: [by_id[i] for i in (ids[: d.limit] if d.limit else ids)]
            for name, ids in split.items()}  # fmt: skip


def _refuse_shared_ids(split: dict[str, list[str]]) -> None:
    """DataError when an id sits in two splits of a split file (a volume trained on and
    validated, or tested, on)."""
    names = list(split)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            shared = sorted(set(split[a]) & set(split[b]))
            if shared:
                raise DataError(
                    f"config key 'data.split_file': {len(shared)} id(s) are in both the {a} and "
                    f"the {b} split (e.g. {shared[0]!r}); each id belongs to one split"
                )


def _custom_split_group(data: Any) -> bool:
    """Whether ``data.split_group`` is another pattern than the default (ACDC's naming, which
    other data do not follow: no refusal for them). Not ``model_fields_set``: a config saved
    and read again (a comparison's runs, a resume) sets every key."""
    field = getattr(type(data), "model_fields", {}).get("split_group")
    return field is not None and data.split_group != field.default


def _group_key(
    pattern: str | None, ids: Sequence[str] = (), given: bool = False
) -> Callable[[str], str] | None:
    """``id -> subject`` of ``data.split_group`` (an id that does not match is its own).
    A pattern the user ``given`` that matches none of ``ids`` is refused: a typo (a missing
    ``+``) split file by file, the very leak the grouping prevents."""
    if pattern is None:
        return None
    regex = re.compile(pattern)
    if given and ids and not any(regex.fullmatch(i) for i in ids):
        raise DataError(
            f"config key 'data.split_group': {pattern!r} matches none of the {len(ids)} file "
            f"name(s) (e.g. {sorted(ids)[0]!r}; the whole name must match); fix it, or set "
            "data.split_group=null to split file by file"
        )

    def key(stem: str) -> str:
        match = regex.fullmatch(stem)
        return match.group(1) if match else stem

    return key


def split_ids(
    ids: Sequence[Any],
    val_fraction: float,
    seed: int,
    limit: int | None = None,
    *,
    group: Callable[[Any], Any] | None = None,
) -> tuple[list[Any], list[Any]]:
    """``(train ids, validation ids)``: a permutation of the sorted ids drawn from ``seed``, cut
    to ``limit`` ids, the first ``round(n * val_fraction)`` (at least 1, at most n - 1 when
    ``val_fraction > 0``) for validation; both lists sorted. Folders and arrays split alike.

    ``group``: ids with the same ``group(id)`` (the frames of one patient) are permuted and
    assigned as one unit, ``n`` counting units; without it (or when every unit is one id)
    the split is the per-id one."""
    members: dict[Any, list[Any]] = {}
    for i in sorted(ids):
        members.setdefault(group(i) if group else i, []).append(i)
    units = sorted(members)
    rng = np.random.default_rng(seed)
    order = [members[units[i]] for i in rng.permutation(len(units))]
    if limit:  # whole units until ``limit`` ids (the last one cut: its rest is unused)
        kept, n = [], 0
        for unit in order:
            if n >= limit:
                break
            kept.append(unit[: limit - n])
            n += len(kept[-1])
        order = kept
    n_val = round(len(order) * val_fraction)
    if val_fraction > 0 and len(order) >= 2:
        n_val = min(max(n_val, 1), len(order) - 1)
    return (
        sorted(i for unit in order[n_val:] for i in unit),
        sorted(i for unit in order[:n_val] for i in unit),
    )


def _pairs_for(cfg: DatasetsConfig, key: str = "data.root") -> tuple[Pairs, Path]:
    d = cfg.data
    root = resolve_root(d.root if key == "data.root" else d.test_root, key)
    for sub_key, sub in (("images", d.images), ("masks", d.masks)):
        if not (root / sub).is_dir():
            found = sorted(p.name for p in root.iterdir() if p.is_dir())
            # the root is more likely wrong than data.images (one level too deep, e.g.
            # data.test_root=.../kvasir-seg/images): name both keys
            raise DataError(
                f"config key {key!r}: {str(root)!r} has no {sub!r} folder (data.{sub_key}); "
                f"its sub-folders: {', '.join(found) or 'none'}. {key} is the folder holding "
                f"{d.images}/ and {d.masks}/"
            )
    try:
        pairs = find_pairs(root, d.images, d.masks, nifti=d.kind == "nifti")
    except ValueError as exc:
        raise DataError(f"config key {key!r}: {exc}") from exc
    return pairs, root


def dataset_settings(cfg: DatasetsConfig) -> dict[str, Any]:
    """The dataset arguments ``cfg`` fixes for every split (``data.size``, ``crop``,
    augmentation, caching, normalisation and ``model.in_channels``): what folder datasets and
    in-memory :class:`~.datasets.ArrayDataset` s alike are built with (``train`` and the
    validation set's ``normalization`` are the caller's)."""
    d = cfg.data
    return {
        "size": d.size,
        "crop": d.crop,
        "augment": d.augment,
        "augmentation": d.augmentation,
        "cache": d.cache,
        "normalize": d.normalize,
        "in_channels": cfg.model.in_channels,
    }


def _make(
    cfg: DatasetsConfig,
    pairs: Pairs,
    *,
    train: bool,
    normalization: Normalization | None,
) -> SegmentationDataset:
    d = cfg.data
    common = {**dataset_settings(cfg), "train": train, "normalization": normalization}
    if d.kind == "nifti" and d.slices == "3d":
        return NiftiPatchDataset(
            pairs,
            patch=d.patch,  # checked by _check_slices (as are size and crop: None)
            patches_per_volume=d.patches_per_volume,
            patch_foreground=d.patch_foreground,
            **common,
        )
    if d.kind == "nifti":
        return NiftiSliceDataset(pairs, **common)
    return FolderDataset(pairs=pairs, **common)


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


def _check_split(cfg: DatasetsConfig, split: dict[str, Pairs], n_pairs: int, root: Path) -> None:
    """Refuse a split without training data, or without validation data when validation was
    asked for (``val_fraction > 0`` or a split file): training would go on with no model
    selection, ``best.pt`` would be the last weights and eval.json would be missing, silently.
    ``val_fraction: 0`` without a split file is the way to train without validation."""
    d = cfg.data
    if d.split_file is None and d.val_fraction > 0 and not (split["train"] and split["val"]):
        unit = "volume" if d.kind == "nifti" else "image"
        units = f"{n_pairs} {unit}{'s' if n_pairs != 1 else ''}"
        if d.limit and d.limit < n_pairs:
            units = f"{d.limit} of {units} (data.limit {d.limit})"
        empty = "validation" if not split["val"] else "training"
        raise DataError(
            f"config key 'data.val_fraction': {empty} set is empty: {units} under "
            f"{str(root)!r} cannot be split with val_fraction {d.val_fraction} (training and "
            f"validation need at least one {unit} each); add data, or set data.val_fraction=0 "
            "to train without validation (best.pt is then the last epoch's weights)"
        )
    if d.split_file is not None and split["train"] and not split.get("val"):
        raise DataError(
            f"config key 'data.split_file': {str(d.split_file)!r} lists no validation ids; "
            "list some, or set data.split_file=null data.val_fraction=0 to train without "
            "validation"
        )
    if not split["train"]:
        raise DataError(f"config key 'data.root': no training pairs left under {str(root)!r}")


def build_datasets(cfg: DatasetsConfig) -> tuple[SegmentationDataset, SegmentationDataset]:
    """``(train_ds, val_ds)`` for ``cfg.data``: deterministic split from ``cfg.train.seed``
    (``val_fraction``) or from ``split_file``. The validation set uses the training set's
    normalisation, no crop and no augmentation. Data is read lazily (see ``validate``).

    Raises :class:`DataError` when the split leaves no training data, or no validation data
    although validation was asked for (see :func:`_check_split`).
    """
    _check_slices(cfg)
    pairs, root = _pairs_for(cfg)
    split = _split_pairs(pairs, cfg, root)
    _check_split(cfg, split, len(pairs), root)
    train_ds = _make(cfg, split["train"], train=True, normalization=None)
    val_ds = _make(cfg, split.get("val", []), train=False, normalization=train_ds.normalization)
    return train_ds, val_ds


def build_test_dataset(
    cfg: DatasetsConfig, normalization: Normalization | None = None
) -> SegmentationDataset | None:
    """The held-out set eval.json scores: the folder ``cfg.data.test_root``, else the ``test``
    list of ``cfg.data.split_file``; None when there is neither (eval.json then scores the
    validation split). Setting both is refused: which one was scored would be ambiguous."""
    _check_slices(cfg)
    d = cfg.data
    split: dict[str, Pairs] = {}
    if d.split_file is not None:
        pairs, root = _pairs_for(cfg)
        split = _split_pairs(pairs, cfg, root)
    if getattr(d, "test_root", None) is not None:
        if split.get("test"):
            raise DataError(
                "config key 'data.test_root': data.split_file already has a test list; set "
                "one of them"
            )
        test_pairs, _ = _pairs_for(cfg, "data.test_root")
        return _make(cfg, test_pairs, train=False, normalization=normalization)
    if not split.get("test"):
        return None
    return _make(cfg, split["test"], train=False, normalization=normalization)


def build_eval_dataset(cfg: DatasetsConfig) -> tuple[SegmentationDataset | None, str]:
    """``(dataset, split)`` that eval.json scores for ``cfg``: the held-out set
    (:func:`build_test_dataset`, ``"test"``) or else the validation split (``"val"``)."""
    train_ds, val_ds = build_datasets(cfg)
    return eval_split(val_ds, build_test_dataset(cfg, train_ds.normalization))


def eval_split(
    val_ds: SegmentationDataset, test_ds: SegmentationDataset | None
) -> tuple[SegmentationDataset | None, str]:
    """``(dataset, split)`` that eval.json scores: the held-out set ``test_ds`` (``"test"``)
    or else the validation split (``"val"``; None when it is empty)."""
    if test_ds is not None:
        return test_ds, "test"
    return (val_ds if len(val_ds) else None), "val"


def array_fingerprint(images: Sequence[np.ndarray], masks: Sequence[np.ndarray]) -> str:
    """12 hex digits that change with any pixel, shape or dtype of ``images``/``masks``: what a
    run's config records as ``data.root: layers:<fingerprint>`` for in-memory data."""
    digest = hashlib.sha1()
    for group in (images, masks):
        digest.update(f"{len(group)};".encode())
        for array in group:
            a = np.ascontiguousarray(array)
            digest.update(f"{a.shape}{a.dtype.str};".encode())
            digest.update(a.tobytes())
    return digest.hexdigest()[:12]


def unpack_array_pairs(
    pairs: ArrayPairs, what: str = "data"
) -> tuple[list, list, list[str] | None]:
    """``(images, masks, names or None)`` of in-memory data, checked: masks present, one per
    image (and one name per image). Raises :class:`DataError` naming ``what``."""
    if not isinstance(pairs, tuple | list) or len(pairs) not in (2, 3):
        raise DataError(f"{what}: expected (images, masks) or (images, masks, names)")
    images, masks = pairs[0], pairs[1]
    if masks is None:
        raise DataError(
            f"{what}: no masks given; every image needs an integer label mask of its size "
            "(0 background, 1.. classes)"
        )
    images, masks = list(images), list(masks)
    if not images:
        raise DataError(f"{what}: no images given")
    if len(images) != len(masks):
        raise DataError(
            f"{what}: {len(images)} image(s) but {len(masks)} mask(s); give one mask per image"
        )
    names = [str(n) for n in pairs[2]] if len(pairs) == 3 and pairs[2] is not None else None
    if names is not None and len(names) != len(images):
        raise DataError(f"{what}: {len(names)} name(s) for {len(images)} image(s)")
    return images, masks, names


def build_array_datasets(
    cfg: DatasetsConfig, data: ArrayPairs, heldout: ArrayPairs | None = None
) -> tuple[SegmentationDataset, SegmentationDataset | None, SegmentationDataset | None]:
    """``(train_ds, val_ds or None, test_ds or None)`` of in-memory 2D arrays (napari layers).

    The same settings :func:`build_datasets` gives folder data (``data.size``, ``crop``,
    augmentation, normalisation) and the same split (:func:`split_ids` with ``train.seed``,
    ``data.val_fraction`` and ``data.limit``); ``heldout`` is scored by eval.json. Items are
    named ``images[i]`` / ``heldout[i]`` (``i``: position in the given lists) unless names are
    given. Raises :class:`DataError` for missing masks or mismatched lengths.
    """
    d = cfg.data
    images, masks, names = unpack_array_pairs(data, "data")
    names = names or [f"images[{i}]" for i in range(len(images))]
    common = dataset_settings(cfg)
    train_ids, val_ids = split_ids(range(len(images)), d.val_fraction, cfg.train.seed, d.limit)

    def subset(ids: list[int], **kw: Any) -> ArrayDataset:
        return ArrayDataset(
            [images[i] for i in ids], [masks[i] for i in ids], names=[names[i] for i in ids], **kw
        )

    train_ds = subset(train_ids, train=True, **common)
    val_ds = subset(val_ids, train=False, normalization=train_ds.normalization, **common)
    test_ds = None
    if heldout is not None:
        h_images, h_masks, h_names = unpack_array_pairs(heldout, "heldout")
        test_ds = ArrayDataset(
            h_images,
            h_masks,
            names=h_names or [f"heldout[{i}]" for i in range(len(h_images))],
            train=False,
            normalization=train_ds.normalization,
            **common,
        )
    return train_ds, (val_ds if val_ids else None), test_ds

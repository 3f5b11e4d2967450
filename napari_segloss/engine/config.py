"""Training configuration: pydantic models, YAML loading and ``a.b=value`` overrides.

The keys are a public contract (the README and training/README.md document them). Every model forbids extra
keys so a typo (``epoch: 10``) fails loudly instead of silently training with the default.
Defaults follow the PM-Dice paper protocol (Hosseini 2025, section 3.2): Adam, weight decay
1e-4, initial LR 5e-4 with the polynomial policy ``lr * (1 - it / max_it) ** 0.9``.

Errors are raised as :class:`ConfigError` (a ``ValueError``) with one line naming the key, what
was expected and what was given, e.g.
``config key 'train.epochs': expected a valid integer, got 'ten'``.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

__all__ = [
    "RESUME_KEYS",
    "RUNTIME_KEYS",
    "SHIPPED_CONFIGS_DIR",
    "AugmentConfig",
    "ConfigError",
    "DataConfig",
    "LossConfig",
    "ModelConfig",
    "OptimConfig",
    "TrainConfig",
    "TrainSection",
    "config_differences",
    "config_to_dict",
    "config_yaml",
    "find_config",
    "load_config",
    "read_config_file",
    "resolve_output",
    "save_config",
    "shipped_configs",
]


class ConfigError(ValueError):
    """A configuration problem, described in one line naming the offending key."""


_STRICT = ConfigDict(extra="forbid", validate_assignment=True)


def _pair(value: Any, name: str) -> Any:
    """Accept ``256`` as ``[256, 256]``; leave lists for pydantic to validate."""
    if isinstance(value, bool):
        raise ValueError(f"{name} must be [height, width] or one integer, got {value!r}")
    if isinstance(value, int):
        return (value, value)
    if isinstance(value, list | tuple) and len(value) != 2:
        # pydantic would report a missing key 'size.1' or an extra item
        raise ValueError(f"{name} must be [height, width] or one integer, got {list(value)}")
    return value


def _positive(values: tuple[int, ...] | None, name: str) -> tuple[int, ...] | None:
    if values is not None and any(v <= 0 for v in values):
        raise ValueError(f"{name} must be positive integers, got {list(values)}")
    return values


class AugmentConfig(BaseModel):
    """Training augmentation parameters (the PM-Dice paper names the kinds, not the magnitudes).

    Section 3.2: "random flipping, rotation, zooming, and elastic deformation". Magnitudes are our
    choice: moderate values that keep anatomy plausible.
    """

    model_config = _STRICT

    hflip: float = Field(0.5, ge=0.0, le=1.0, description="probability of a horizontal flip")
    vflip: float = Field(0.5, ge=0.0, le=1.0, description="probability of a vertical flip")
    rotate: float = Field(15.0, ge=0.0, le=180.0, description="max rotation in degrees (+-)")
    zoom: tuple[float, float] = Field((0.9, 1.1), description="RandomAffine scale range")
    elastic_p: float = Field(0.25, ge=0.0, le=1.0, description="probability of elastic deformation")
    elastic_alpha: float = Field(3.0, ge=0.0, description="elastic displacement std in pixels")
    elastic_sigma: float = Field(16.0, gt=0.0, description="elastic field smoothness in pixels")
    # 3D patches (data.slices: 3d) use only flips (hflip: X, vflip: Y, zflip: Z) and in-plane
    # 90-degree rotations: cheap, exact on the voxel grid, identical for image and label.
    zflip: float = Field(0.5, ge=0.0, le=1.0, description="3D patches: probability of a Z flip")
    rot90: float = Field(
        0.5, ge=0.0, le=1.0, description="3D patches: probability of an in-plane 90-degree turn"
    )

    @field_validator("zoom")
    @classmethod
    def _zoom_ok(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not (0 < v[0] <= v[1]):
            raise ValueError(f"zoom must be [low, high] with 0 < low <= high, got {list(v)}")
        return v


class DataConfig(BaseModel):
    """Where the images and masks are and how they are split, resized and augmented."""

    model_config = _STRICT

    kind: Literal["folder", "nifti"] = "folder"
    root: Path
    images: str = "images"
    masks: str = "masks"
    val_fraction: float = Field(0.1, ge=0.0, lt=1.0)
    split_file: Path | None = None
    # A held-out set scored by eval.json (split "test") instead of the validation split: a
    # folder with the same images/masks sub-folders (or bundled:NAME). Validation still uses
    # val_fraction (model selection never sees the held-out set).
    test_root: Path | None = None
    size: tuple[int, int] | None = None
    crop: tuple[int, int] | None = None
    slices: Literal["2d", "3d"] = "2d"
    # 3D patches (kind nifti, slices 3d): patch size (Z, Y, X) in napari axis order, random
    # patches per volume per epoch, and the probability that a patch is centred on foreground.
    patch: tuple[int, int, int] | None = None
    patches_per_volume: int = Field(1, ge=1)
    patch_foreground: float = Field(0.0, ge=0.0, le=1.0)
    cache: bool = True
    augment: bool = True
    augmentation: AugmentConfig = Field(default_factory=AugmentConfig)
    limit: int | None = Field(None, ge=1)
    # val_fraction splits: file stems matching this regex (re.fullmatch) are kept together by
    # its first group, so the frames of one subject (ACDC patient001_frame01 / _frame12: the
    # same heart) never sit on both sides; other stems are split one by one. null: no grouping.
    split_group: str | None = r"(.+)_frame\d+"
    # Added keys (documented in the report): intensity scaling of the raw pixels.
    normalize: Literal["auto", "uint8", "minmax", "none"] = "auto"
    # Indexed by class id, background first (e.g. [background, RV, MYO, LV]): metrics tables,
    # eval.json and checkpoints all look names up by label value.
    class_names: list[str] | None = None

    @field_validator("split_group")
    @classmethod
    def _group_regex(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                groups = re.compile(v).groups
            except re.error as exc:
                raise ValueError(f"split_group must be a regular expression ({exc})") from None
            if groups < 1:
                raise ValueError(f"split_group needs a (group) naming the subject, got {v!r}")
        return v

    @field_validator("size", "crop", mode="before")
    @classmethod
    def _size_pair(cls, v: Any, info: Any) -> Any:
        return _pair(v, info.field_name)

    @field_validator("size", "crop", "patch")
    @classmethod
    def _size_positive(cls, v: Any, info: Any) -> Any:
        return _positive(v, info.field_name)

    @field_validator("crop")
    @classmethod
    def _crop_fits_size(cls, v: tuple[int, int] | None, info: Any) -> tuple[int, int] | None:
        # Crops are cut from the image resized to data.size and zero-padded up to the crop:
        # a larger crop silently trains on mostly padding. (size is validated before crop.)
        size = info.data.get("size")
        if v is not None and size is not None and any(c > s for c, s in zip(v, size, strict=True)):
            raise ValueError(
                f"data.crop must not exceed data.size on any axis (crops are cut from the image "
                f"resized to data.size; a larger crop is mostly zero padding), got data.crop "
                f"{list(v)} with data.size {list(size)}; use a crop <= data.size or data.crop=null"
            )
        return v


class ModelConfig(BaseModel):
    """A segmentation-models-pytorch model (``smp.create_model``)."""

    model_config = _STRICT

    arch: str = "Unet"
    encoder: str = "resnet34"
    # No internet on most training boxes: default null; "imagenet" or a local file path.
    encoder_weights: str | None = None
    in_channels: int = Field(3, ge=1)
    classes: int = Field(1, ge=1)
    kwargs: dict[str, Any] = Field(default_factory=dict)


class LossConfig(BaseModel):
    """A loss from :func:`napari_segloss.losses.get_loss` by registry name."""

    model_config = _STRICT

    name: str = "pm_dice"
    params: dict[str, Any] = Field(default_factory=dict)


class OptimConfig(BaseModel):
    """Optimiser and LR policy (PM-Dice paper section 3.2: Adam, wd 1e-4, poly 0.9, lr 5e-4)."""

    model_config = _STRICT

    name: Literal["adam", "adamw"] = "adam"
    lr: float = Field(5e-4, gt=0.0)
    weight_decay: float = Field(1e-4, ge=0.0)
    schedule: Literal["poly", "constant"] = "poly"
    power: float = Field(0.9, ge=0.0)


class TrainSection(BaseModel):
    """Loop settings."""

    model_config = _STRICT

    epochs: int = Field(50, ge=1)
    batch_size: int = Field(8, ge=1)
    amp: bool = True
    amp_dtype: Literal["bfloat16", "float16"] = "bfloat16"
    seed: int = Field(0, ge=0)
    device: str = "auto"
    num_workers: int = Field(2, ge=0)
    channels_last: bool = True
    deterministic: bool = True
    val_every: int = Field(1, ge=1)
    log_every: int = Field(10, ge=1)
    # "full": metrics.evaluate per validation image (Dice, IoU, precision, recall, NSD, HD95);
    # "overlap": only the confusion-matrix metrics (no distance transforms: faster epochs).
    val_metrics: Literal["full", "overlap"] = "full"
    val_batch_size: int | None = Field(None, ge=1)
    overwrite: bool = False

    @field_validator("device")
    @classmethod
    def _device_ok(cls, v: str) -> str:
        if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", v):
            raise ValueError(f"device must be auto, cpu, mps, cuda or cuda:N, got {v!r}")
        return v


class TrainConfig(BaseModel):
    """The whole training configuration (one YAML file)."""

    model_config = _STRICT

    data: DataConfig
    model: ModelConfig = Field(default_factory=ModelConfig)
    loss: LossConfig = Field(default_factory=LossConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    train: TrainSection = Field(default_factory=TrainSection)
    # Placeholders {loss}, {seed}, {arch}, {encoder} are filled in by resolve_output().
    output: Path = Path("runs/{loss}-seed{seed}")

    @model_validator(mode="after")
    def _one_name_per_label(self) -> TrainConfig:
        # Names are looked up by label value: one too few (background left out, as
        # `segloss evaluate --class-names` takes them) named every class after the next one.
        names, n = self.data.class_names, max(self.model.classes, 2)
        if names is not None and len(names) != n:
            raise ValueError(
                f"data.class_names: expected {n} names, one per label 0-{n - 1} with the "
                f"background first (model.classes {self.model.classes}"
                f"{', binary' if self.model.classes == 1 else ''}), got {len(names)}: {names}"
            )
        return self


def _format_error(err: ValidationError, prefix: str = "") -> str:
    """Collapse pydantic's multi-line report into one line per problem, joined by '; '."""
    parts = []
    for e in err.errors():
        if not e["loc"]:  # a check across sections: its message names the keys
            parts.append(str(e["msg"]).removeprefix("Value error, "))
            continue
        key = f"{prefix}{'.'.join(str(p) for p in e['loc'])}"
        if e["type"] == "extra_forbidden":
            parts.append(f"config key {key!r}: unknown key{_did_you_mean(e['loc'], prefix)}")
            continue
        if e["type"] == "missing":
            parts.append(f"config key {key!r}: required key is missing")
            continue
        msg = e["msg"]
        msg = msg.removeprefix("Value error, ")
        msg = msg[0].lower() + msg[1:] if msg else msg
        got = "" if ", got " in msg else f", got {e.get('input')!r}"
        parts.append(f"config key {key!r}: {msg}{got}")
    return "; ".join(parts)


def _section_model(loc: Sequence[Any]) -> type[BaseModel] | None:
    """The config model of the section holding the key at ``loc`` (None: not a section)."""
    model: type[BaseModel] = TrainConfig
    for part in loc[:-1]:
        field = model.model_fields.get(str(part))
        ann = getattr(field, "annotation", None)
        if not (isinstance(ann, type) and issubclass(ann, BaseModel)):
            return None
        model = ann
    return model


def _did_you_mean(loc: Sequence[Any], prefix: str = "") -> str:
    """``"; did you mean 'train.epochs'?"`` for a mistyped key (as unknown loss names get)."""
    model = _section_model(loc)
    if model is None or not loc:
        return ""
    close = difflib.get_close_matches(str(loc[-1]), list(model.model_fields), n=2, cutoff=0.6)
    section = "".join(f"{p}." for p in loc[:-1])
    names = " or ".join(repr(f"{prefix}{section}{c}") for c in close)
    if not close:  # a key at the wrong level (`lr` under train: or at the top): where it goes
        elsewhere = [k for k in _all_keys(TrainConfig) if k.rsplit(".", 1)[-1] == str(loc[-1])]
        names = " or ".join(repr(f"{prefix}{k}") for k in elsewhere)
        return f"; {str(loc[-1])!r} belongs in another section: {names}" if elsewhere else ""
    return f"; did you mean {names}?"


def _all_keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    """Every dotted key of a config model, sections included (``optim.lr``, ``data.augmentation.zoom``)."""
    keys = []
    for name, field in model.model_fields.items():
        keys.append(f"{prefix}{name}")
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            keys += _all_keys(ann, f"{prefix}{name}.")
    return keys


def _allowed_keys_hint(data: Mapping[str, Any]) -> str:
    """Name the allowed keys of the section holding an unknown key (first one only)."""
    try:
        TrainConfig.model_validate(data)
    except ValidationError as err:
        for e in err.errors():
            if e["type"] != "extra_forbidden":
                continue
            model = _section_model(e["loc"])
            return f" (allowed: {', '.join(model.model_fields)})" if model is not None else ""
    return ""


def _set_path(tree: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    if not all(keys):
        raise ConfigError(f"override {dotted!r}: expected a dotted key like train.epochs")
    node = tree
    for i, k in enumerate(keys[:-1]):
        child = node.get(k)
        if child is None:
            child = node[k] = {}
        elif not isinstance(child, dict):
            where = ".".join(keys[: i + 1])
            raise ConfigError(
                f"override {dotted!r}: {where!r} is a value ({child!r}), not a section"
            )
        node = child
    node[keys[-1]] = value


_FLOAT_RE = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+$")


def _yaml_floats(value: Any) -> Any:
    """Turn strings like ``1e-6`` into floats, recursively.

    PyYAML follows YAML 1.1, where a float needs a dot (``1.0e-6``); ``1e-6`` stays a string and
    would then reach a loss as text. Users write it both ways, so accept both.
    """
    if isinstance(value, str) and _FLOAT_RE.match(value.strip()):
        return float(value)
    if isinstance(value, list):
        return [_yaml_floats(v) for v in value]
    if isinstance(value, dict):
        return {k: _yaml_floats(v) for k, v in value.items()}
    return value


def _parse_override(item: str) -> tuple[str, Any]:
    if not isinstance(item, str) or "=" not in item:
        raise ConfigError(f"override {item!r}: expected key=value, e.g. train.epochs=10")
    key, raw = item.split("=", 1)
    key = key.strip()
    try:
        value = _yaml_floats(yaml.safe_load(raw)) if raw.strip() else None
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {item!r}: value is not valid YAML ({exc.problem})") from exc
    return key, value


#: The example configs shipped inside the package, so that ``--config quickstart`` works after
#: ``pip install``: links to ``training/configs/`` in the repository, real files in a wheel.
SHIPPED_CONFIGS_DIR = Path(__file__).resolve().parent.parent / "configs"


def shipped_configs() -> dict[str, Path]:
    """The shipped example configs by name (``quickstart``, ``kvasir_pm_dice``, ...)."""
    return {p.stem: p for p in sorted(SHIPPED_CONFIGS_DIR.glob("*.yaml"))}


def find_config(source: Path | str) -> Path:
    """The config file ``source`` names: a path to a file, or the name of a shipped config.

    A file of that name wins; a bare name (no folder, no ``.yaml``) that is not a file is
    looked up in :func:`shipped_configs`. Anything else raises :class:`ConfigError` listing
    the shipped names (and the closest one).
    """
    path = Path(source)
    if path.is_file():
        return path
    shipped = shipped_configs()
    bare = path.name == str(source) and not path.suffix
    if bare and str(source) in shipped:
        return shipped[str(source)]
    what = "a folder, not a config file" if path.is_dir() else "config file not found"
    close = difflib.get_close_matches(path.stem, list(shipped), n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise ConfigError(
        f"{what}: {str(source)!r} (give a YAML file, or a shipped config by name: "
        f"{', '.join(shipped) or 'none found'}{hint}; `segloss configs` lists them)"
    )


class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a key written twice in one mapping.

    PyYAML keeps the last value silently, so ``optim: {lr: 0.1, lr: 0.01}`` or a second
    ``train:`` section further down would override the first without a word.
    """

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # `<<: *anchor` merges are meant to be overridden
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if key in seen:
                raise ConfigError(
                    f"key {key!r} is written twice in one section (lines {seen[key]} and "
                    f"{line}); YAML would keep only the last one: remove one"
                )
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


def read_config_file(path: Path | str) -> dict[str, Any]:
    """The sections of a YAML config file (or shipped config, see :func:`find_config`) as a
    dict, unvalidated (``1e-6`` read as a float).

    The one reader of config files: the CLI, ``load_config`` and ``iter_compare`` all use it,
    so a file means the same thing whichever door reads it.
    """
    path = find_config(path)
    try:
        loaded = _yaml_floats(yaml.load(path.read_text(encoding="utf-8"), _UniqueKeyLoader))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"config file {str(path)!r}{where}: invalid YAML") from exc
    except ConfigError as exc:
        raise ConfigError(f"config file {str(path)!r}: {exc}") from None
    if loaded is None:
        loaded = {}
    if not isinstance(loaded, dict):
        raise ConfigError(
            f"config file {str(path)!r}: expected a mapping of sections, got {type(loaded).__name__}"
        )
    return loaded


def _read_source(source: Path | str | Mapping[str, Any]) -> dict[str, Any]:
    if isinstance(source, Mapping):
        return _deep_copy(dict(source))
    if not isinstance(source, str | Path):
        raise ConfigError(
            f"config source: expected a YAML path or a dict, got {type(source).__name__}"
        )
    return read_config_file(source)


def _deep_copy(tree: Any) -> Any:
    if isinstance(tree, Mapping):
        return {k: _deep_copy(v) for k, v in tree.items()}
    if isinstance(tree, list):
        return [_deep_copy(v) for v in tree]
    return tree


def load_config(
    source: Path | str | Mapping[str, Any] | TrainConfig,
    overrides: Sequence[str] = (),
) -> TrainConfig:
    """Load and validate a training config.

    Args:
        source: a YAML file path, a dict with the same structure, or a ``TrainConfig``.
        overrides: ``"a.b=value"`` strings applied after loading; ``value`` is parsed with
            ``yaml.safe_load`` (``train.epochs=5`` gives an int, ``data.size=[64,64]`` a list).

    Raises:
        ConfigError: one line naming the key and what was expected.
    """
    if isinstance(overrides, str):
        raise ConfigError(f"overrides: expected a list of 'key=value' strings, got {overrides!r}")
    if isinstance(source, TrainConfig):
        tree = source.model_dump(mode="python")
    else:
        tree = _read_source(source)
    for item in overrides:
        key, value = _parse_override(item)
        _set_path(tree, key, value)
    try:
        return TrainConfig.model_validate(tree)
    except ValidationError as err:
        raise ConfigError(_format_error(err) + _allowed_keys_hint(tree)) from None


def config_to_dict(cfg: TrainConfig) -> dict[str, Any]:
    """JSON/YAML-safe nested dict of ``cfg`` (paths as strings, tuples as lists)."""
    return cfg.model_dump(mode="json")


def config_yaml(cfg: TrainConfig) -> str:
    """``cfg`` as YAML text: what a run directory's ``config.yaml`` holds."""
    return yaml.safe_dump(config_to_dict(cfg), sort_keys=False)


def save_config(cfg: TrainConfig, path: Path | str) -> None:
    """Write ``cfg`` as YAML (what a run directory's ``config.yaml`` holds)."""
    Path(path).write_text(config_yaml(cfg), encoding="utf-8")


#: Keys that do not change what a run computes: a saved run is reused or resumed whatever their
#: values (``output`` names the folder itself, so it matches by construction).
RUNTIME_KEYS: tuple[str, ...] = (
    "output",
    "data.cache",
    "train.device",
    "train.num_workers",
    "train.log_every",
    "train.overwrite",
    "train.val_batch_size",
)
#: Keys a resumed run may change besides: ``train.epochs`` extends (or shortens) the run.
RESUME_KEYS: tuple[str, ...] = (*RUNTIME_KEYS, "train.epochs")


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``; empty sections vanish (``{}`` == unset)."""
    if isinstance(tree, Mapping):
        out: dict[str, Any] = {}
        for k, v in tree.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: tree}


def config_differences(
    saved: Mapping[str, Any] | TrainConfig,
    requested: Mapping[str, Any] | TrainConfig,
    ignore: Sequence[str] = (),
) -> list[str]:
    """Keys whose values differ between two configs, as ``"key: saved X, requested Y"``.

    Both are compared as :func:`config_to_dict` gives them (a dict is validated first, so a
    default written out and one left implicit compare equal). Keys in ``ignore`` (and their
    sub-keys) are skipped.
    """
    trees = []
    for c in (saved, requested):
        cfg = c if isinstance(c, TrainConfig) else load_config(c)
        trees.append(_flatten(config_to_dict(cfg)))
    a, b = trees

    def show(tree: dict[str, Any], key: str) -> str:
        return repr(tree[key]) if key in tree else "unset"

    out = []
    for key in sorted(set(a) | set(b)):
        if any(key == k or key.startswith(k + ".") for k in ignore):
            continue
        if key not in a or key not in b or a[key] != b[key]:
            out.append(f"{key}: saved {show(a, key)}, requested {show(b, key)}")
    return out


def resolve_output(cfg: TrainConfig) -> Path:
    """The run directory: ``cfg.output`` with ``{loss}``, ``{seed}``, ``{arch}``, ``{encoder}`` filled."""
    fields = {
        "loss": cfg.loss.name.replace("+", "_"),
        "seed": cfg.train.seed,
        "arch": cfg.model.arch,
        "encoder": cfg.model.encoder,
    }
    try:
        return Path(str(cfg.output).format(**fields))
    except (KeyError, IndexError, ValueError) as exc:
        raise ConfigError(
            f"config key 'output': unknown placeholder {exc} in {str(cfg.output)!r} "
            f"(allowed: {', '.join('{' + k + '}' for k in fields)})"
        ) from None

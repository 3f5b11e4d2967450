"""What a comparison compares: a loss by registry name (or ``a+b`` compound) with parameters.

One :class:`LossSpec` per table row. It is written three ways, all giving the same spec:

* the CLI string ``"pm_dice:gamma=2"`` (``segloss compare --losses``), parsed with
  :func:`parse_loss_spec`;
* the config's loss section as a mapping ``{"name": "pm_dice", "params": {"gamma": 2}}``
  (what the napari forms produce);
* a :class:`LossSpec` itself.

Its ``label`` (``"pm_dice:gamma=2"``) names the row in every results file and, made file-system
safe, the run folder (``runs/pm_dice__gamma=2/seed0``), so PM Dice at several gamma values are
separate rows with distinct run folders. Row labels are shown as the PM-Dice paper writes them
(Hosseini 2025, tables 1-3): ``"focal+pm_dice"`` -> ``"Focal CE + PM Dice"``.

Plain Python and PyYAML only: the results reader imports this module without torch.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

__all__ = ["LossSpec", "display_name", "params_text", "parse_loss_spec", "parse_value"]

# Row labels as the paper writes them (tables 1-3); unknown names are shown as given.
_DISPLAY = {
    "ce": "CE",
    "dice": "Dice",
    "log_dice": "Logarithmic Dice",
    "focal_dice": "Focal Dice (Wang & Chung)",
    "focal_dice_zhao": "Focal Dice (Zhao)",
    "focal": "Focal CE",
    "topk_ce": "TopK CE",
    "topk_dice": "TopK Dice",
    "pm_dice": "PM Dice",
    "generalized_dice": "Generalized Dice",
    "wsdice": "WSDice",
    "tversky": "Tversky",
    "focal_tversky": "Focal Tversky",
    "unified_focal": "Unified Focal",
    "asymmetric_unified_focal": "Asymmetric Unified Focal",
    "mixed_focal": "Mixed Focal",
    "combo": "Combo",
    "cosine_tversky": "Cosine Tversky",
    "focal_log_wsdice": "Focal − log(WSDice)",
}

_NAME_RE = re.compile(r"[A-Za-z0-9_+]+")


def display_name(label: str) -> str:
    """Paper-style row label: ``"focal+pm_dice"`` -> ``"Focal CE + PM Dice"``;
    ``"pm_dice:gamma=2"`` -> ``"PM Dice (gamma=2)"``."""
    name, _, params = label.partition(":")
    text = " + ".join(_DISPLAY.get(part.strip(), part.strip()) for part in name.split("+"))
    return f"{text} ({params})" if params else text


def _value_text(value: Any) -> str:
    """A parameter value as the spec string writes it (JSON flow, which YAML reads back)."""
    if isinstance(value, tuple):
        value = list(value)
    try:
        return json.dumps(value)
    except TypeError:
        return str(value)


def params_text(params: Mapping[str, Any]) -> str:
    """``{"gamma": 2, "eps": 1e-6}`` -> ``"gamma=2,eps=1e-06"`` (the spec string's form)."""
    return ",".join(f"{k}={_value_text(v)}" for k, v in params.items())


def parse_loss_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """``"pm_dice"`` -> ``("pm_dice", {})``; ``"pm_dice:gamma=2,eps=1e-6"`` -> params parsed as YAML.

    Lets one compare grid sweep a loss parameter (e.g. the PM-Dice focusing parameter gamma,
    paper figs. 3-4) next to other losses.
    """
    name, sep, rest = spec.partition(":")
    name = name.strip()
    if not name or not _NAME_RE.fullmatch(name):
        raise ValueError(
            f"losses: expected a registered loss name such as 'ce', 'pm_dice' or 'ce+pm_dice' "
            f"(optionally 'name:key=value,...'), got {spec!r}"
        )
    params: dict[str, Any] = {}
    if sep:
        for item in filter(None, (p.strip() for p in _split_top_level(rest))):
            key, eq, value = item.partition("=")
            if not eq or not key.strip():
                raise ValueError(
                    f"losses: expected 'name:key=value[,key=value]', got {spec!r} (bad part {item!r})"
                )
            try:
                params[key.strip()] = parse_value(value)
            except yaml.YAMLError:
                raise ValueError(
                    f"losses: value of {key.strip()!r} in {spec!r} is not valid YAML: {value!r}"
                ) from None
    return name, params


def parse_value(text: str) -> Any:
    """A parameter value as YAML (scalar or list), plus the numbers YAML 1.1 leaves as
    strings (``1e-6``: YAML 1.1 needs ``1.0e-6``)."""
    value = yaml.safe_load(text)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def _split_top_level(text: str) -> list[str]:
    """Split on commas outside brackets, so ``gamma=[1, 2],eps=1e-6`` keeps the list whole."""
    parts, depth, current = [], 0, []
    for ch in text:
        if ch in "[{(":
            depth += 1
        elif ch in "]})":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    return parts


@dataclass(frozen=True)
class LossSpec:
    """One compared loss: registry ``name`` (``"pm_dice"``, ``"ce+pm_dice"``), ``params``
    (as ``get_loss(name, **params)`` takes them) and the row ``label`` (default: the spec
    string, ``"pm_dice:gamma=2"``)."""

    name: str
    params: dict[str, Any] = field(default_factory=dict)
    label: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME_RE.fullmatch(self.name.strip()):
            raise ValueError(
                f"losses: expected a registered loss name such as 'ce', 'pm_dice' or "
                f"'ce+pm_dice', got {self.name!r}"
            )
        if not isinstance(self.params, Mapping):
            raise ValueError(
                f"losses: params of {self.name!r} must be a mapping, got {self.params!r}"
            )
        object.__setattr__(self, "params", dict(self.params))
        if not self.label:
            text = params_text(self.params)
            object.__setattr__(self, "label", f"{self.name}:{text}" if text else self.name)

    @classmethod
    def from_any(cls, spec: str | Mapping[str, Any] | LossSpec) -> LossSpec:
        """A spec from a CLI string, a config-style mapping (``name``, ``params``, optional
        ``label``) or a :class:`LossSpec`. Raises ``ValueError`` naming what was wrong."""
        if isinstance(spec, LossSpec):
            return spec
        if isinstance(spec, str):
            name, params = parse_loss_spec(spec)
            return cls(name, params, spec.strip())
        if isinstance(spec, Mapping):
            unknown = set(spec) - {"name", "params", "label"}
            if unknown or "name" not in spec:
                raise ValueError(
                    "losses: a mapping needs 'name' and may have 'params' and 'label' (the "
                    f"config's loss section), got keys {sorted(spec)}"
                )
            return cls(str(spec["name"]), dict(spec.get("params") or {}), spec.get("label", ""))
        raise ValueError(
            f"losses: expected a loss name, 'name:key=value' or a mapping, got {spec!r}"
        )

    @property
    def folder(self) -> str:
        """File-system-safe folder name of the label (``pm_dice:gamma=2`` -> ``pm_dice__gamma=2``)."""
        return re.sub(r"[^A-Za-z0-9_.+=-]+", "_", self.label.replace(":", "__")).strip("_")

    @property
    def display(self) -> str:
        """The row label as the paper writes it (:func:`display_name`)."""
        return display_name(self.label)

    @property
    def title(self) -> str:
        """Display name with every parameter, also those not in the label (e.g. taken from
        the base config): ``"PM Dice (gamma=1.0,eps=1e-06)"``."""
        if ":" in self.label or not self.params:
            return self.display
        return f"{self.display} ({params_text(self.params)})"

    def to_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "name": self.name,
            "params": dict(self.params),
            "display": self.display,
        }

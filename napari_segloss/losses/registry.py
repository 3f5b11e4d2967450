"""Loss registry: names -> classes, ``get_loss`` / ``list_losses`` / ``loss_parameters``, and
the ``a+b`` compounds (:class:`CompoundLoss`, the PM-Dice paper's table rows)."""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from torch import Tensor, nn

from .base import SegLoss, check_choice, check_float, reduce_terms, sum_terms
from .inputs import REDUCTIONS
from .param_docs import class_summary, parameter_help

#: every row of the PM-Dice paper's tables 1-3 that is a sum of two losses
PAPER_COMPOUNDS: tuple[str, ...] = (
    "ce+dice",
    "focal+dice",
    "topk_ce+dice",
    "ce+topk_dice",
    "topk_ce+topk_dice",
    "ce+pm_dice",
    "focal+pm_dice",
)


class UnknownLossError(ValueError):
    """A loss name that is not registered (the message lists close matches)."""


class LossParameterError(ValueError):
    """Parameters the loss cannot take as given: unknown to it (:class:`UnknownParameterError`)
    or, in a compound, meaning different things in two terms. Callers that take parameters
    from elsewhere (a config's ``loss.params``) can say where they came from."""


class UnknownParameterError(LossParameterError):
    """A parameter that the loss does not accept (in a compound: none of its terms does)."""


class CompoundLoss(nn.Module):
    """Weighted sum ``sum_j w_j L_j`` of registered losses (PM-Dice paper tables 1-3: plain
    sums, all weights 1.0 by default).

    The components' terms (per image (B,), or (1,) for a ``batch_dice`` term) are weighted
    and reduced together (:func:`~.base.reduce_terms`): with "mean" or "sum" the compound is
    the weighted sum of its components reduced alone (a batch term counts once), with "none"
    the per-image vector (a batch term broadcast to every image). When all
    components share mode / ignore_index / validate, the inputs are prepared once (softmax,
    complements and the label split are computed once and shared).

    Attributes:
        components: ``nn.ModuleList`` of the component losses.
        weights: tuple of floats, one per component.
    """

    def __init__(
        self,
        components: Sequence[SegLoss],
        *,
        weights: Sequence[float] | None = None,
        reduction: str = "mean",
        names: Sequence[str] | None = None,
    ) -> None:
        super().__init__()
        if len(components) < 2:
            raise ValueError(f"a compound needs at least 2 components, got {len(components)}")
        for c in components:
            if not isinstance(c, SegLoss):
                raise ValueError(
                    f"compound components must be registered losses, got {type(c).__name__}"
                )
        if weights is None:
            weights = (1.0,) * len(components)
        if isinstance(weights, str) or not isinstance(weights, Sequence):
            raise ValueError(f"weights must be a sequence of floats, got {weights!r}")
        if len(weights) != len(components):
            raise ValueError(
                f"weights needs one value per component ({len(components)}), got {len(weights)}"
            )
        # finite and >= 0: a NaN weight made every loss NaN, a negative one maximised its term
        ws = [check_float(f"weights[{i}]", w, 0.0) for i, w in enumerate(weights)]
        check_choice("reduction", reduction, REDUCTIONS)
        self.components = nn.ModuleList(components)
        self.weights = tuple(ws)
        self.reduction = reduction
        self.names = (
            tuple(names)
            if names is not None
            else tuple(getattr(c, "loss_name", type(c).__name__) for c in components)
        )
        keys = {(c.mode, c.ignore_index, c.validate) for c in components}
        self._shared_prepare = len(keys) == 1

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        comps: list[SegLoss] = list(self.components)  # type: ignore[arg-type]
        inp = comps[0].prepare(logits, target) if self._shared_prepare else None
        parts: list[tuple[list[Tensor], Tensor | None]] = []  # (weighted terms, scored)
        for w, c in zip(self.weights, comps, strict=True):
            c_inp = inp if inp is not None else c.prepare(logits, target)
            parts.append(([w * t for t in c.loss_terms(c_inp)], c_inp.scored_images))
        if self.reduction == "mean":  # each part over the images it scores (its ignore_index)
            return sum_terms([reduce_terms(terms, "mean", scored) for terms, scored in parts])
        return reduce_terms([t for terms, _ in parts for t in terms], self.reduction)

    def extra_repr(self) -> str:
        return f"names={self.names}, weights={self.weights}, reduction={self.reduction!r}"


_REGISTRY: dict[str, type[SegLoss]] = {}
_ALIASES: dict[str, str] = {}


def register(name: str, *aliases: str) -> Callable[[type[SegLoss]], type[SegLoss]]:
    """Class decorator that registers a loss class under ``name`` (and ``aliases``)."""

    def deco(cls: type[SegLoss]) -> type[SegLoss]:
        for n in (name, *aliases):
            if n in _REGISTRY or n in _ALIASES or "+" in n:
                raise ValueError(f"loss name {n!r} is already registered or invalid")
        _REGISTRY[name] = cls
        for a in aliases:
            _ALIASES[a] = name
        cls.loss_name = name  # type: ignore[attr-defined]
        return cls

    return deco


def list_losses(include_aliases: bool = False) -> list[str]:
    """Sorted names of the registered losses (plus the PM-Dice table compounds).

    Any ``a+b`` of these names is also accepted by :func:`get_loss`; the compound names of
    the PM-Dice paper's tables 1-3 are listed explicitly.
    """
    names = set(_REGISTRY)
    if include_aliases:
        names |= set(_ALIASES)
    return sorted(names) + list(PAPER_COMPOUNDS)


def loss_aliases() -> dict[str, str]:
    """Other names :func:`get_loss` accepts, each with the loss it stands for
    (``{"bce": "ce", ...}``), sorted."""
    return dict(sorted(_ALIASES.items()))


def class_parameters(cls: type[nn.Module]) -> dict[str, inspect.Parameter]:
    """Keyword parameters of ``cls`` with their defaults and annotations, walking the
    ``**kwargs`` chain of its bases (a subclass's default wins); parameters the class fixes
    itself (``fixed_params``) are left out."""
    out: dict[str, inspect.Parameter] = {}
    fixed = set(getattr(cls, "fixed_params", ()))
    for klass in cls.__mro__:
        if klass in (nn.Module, object) or "__init__" not in vars(klass):
            continue
        sig = inspect.signature(vars(klass)["__init__"])
        for p in sig.parameters.values():
            if p.name == "self" or p.name in fixed or p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL):
                continue
            out.setdefault(p.name, p)
    return out


def accepted_params(cls: type[nn.Module]) -> list[str]:
    """Names of the keyword parameters accepted by ``cls`` (see :func:`class_parameters`)."""
    return list(class_parameters(cls))


#: the parameters every loss takes from :class:`SegLoss` (how to read the target, what to
#: return); forms and ``segloss losses`` set them apart from a loss's own
SHARED_PARAMS: tuple[str, ...] = tuple(class_parameters(SegLoss))


def _check_name(name: object) -> None:
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"loss name must be a non-empty string, got {name!r}")


def loss_parameters(name: str) -> dict[str, inspect.Parameter]:
    """The keyword parameters of the loss ``name`` with defaults and annotations: what
    ``get_loss(name, **params)`` accepts (forms and docs read them from here).

    A compound ``"a+b"`` takes ``weights`` and one dict of parameters per component
    (``get_loss("ce+pm_dice", weights=(1, 1), pm_dice={"gamma": 2.0})``).

    Raises:
        ValueError: unknown name (with close matches).
    """
    _check_name(name)
    if "+" in name:
        kw = inspect.Parameter.KEYWORD_ONLY
        out = {"weights": inspect.Parameter("weights", kw, default=None)}
        for part in name.split("+"):
            canon = _canonical(part)
            out[canon] = inspect.Parameter(canon, kw, default={})
        return out
    return class_parameters(_resolve(name))


def loss_parameter_help(name: str) -> dict[str, str]:
    """A plain-text description of each of :func:`loss_parameters`, read from the loss' own
    docstring (``Args:``) and the ones it refers to; ``""`` where none describes it.

    Raises:
        ValueError: unknown name (with close matches).
    """
    params = loss_parameters(name)
    if "+" in name:
        out = {"weights": "one weight per term, in the order of the name (default all 1)"}
        return out | {
            part: f"the {part} term's parameters (a dict)" for part in params if part != "weights"
        }
    return parameter_help(_resolve(name), params)


def loss_description(name: str) -> tuple[str, str]:
    """``(title, text)``: what the loss ``name`` is, in plain words from its docstring (see
    :func:`~napari_segloss.losses.param_docs.class_summary`), e.g. ``("Focal Tversky loss
    (Abraham & Khan 2019; Yeung et al. 2021 eq. 14)", "... : mean_c (1 - TI_c)^gamma.")``.
    A compound ``"a+b"`` is the weighted sum of its terms, each term's title in ``text``.

    Raises:
        ValueError: unknown name (with close matches).
    """
    _check_name(name)
    if "+" not in name:
        return class_summary(_resolve(name))
    parts = [_canonical(part) for part in name.split("+")]
    title = "weighted sum of " + " and ".join(parts)
    terms = [f"{part}: {class_summary(_resolve(part))[0]}" for part in parts]
    return title, f"{title} (weights: one per term, default 1 each). " + "; ".join(terms) + "."


def _canonical(name: str) -> str:
    """The registered name of ``name`` (an alias or a registered name; ValueError if unknown)."""
    _resolve(name)
    key = name.strip().lower()
    return _ALIASES.get(key, key)


def _resolve(name: str) -> type[SegLoss]:
    key = name.strip().lower()
    key = _ALIASES.get(key, key)
    if key in _REGISTRY:
        return _REGISTRY[key]
    known = sorted(set(_REGISTRY) | set(_ALIASES))
    close = difflib.get_close_matches(key, known, n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    raise UnknownLossError(f"unknown loss name {name!r}{hint} (known: {', '.join(known)})")


def _build(name: str, params: Mapping[str, Any]) -> SegLoss:
    cls = _resolve(name)
    ok = accepted_params(cls)
    bad = [k for k in params if k not in ok]
    if bad:
        close = [m for k in bad for m in difflib.get_close_matches(k, ok, n=1, cutoff=0.6)]
        hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise UnknownParameterError(
            f"loss {name!r} got unknown parameter(s) {bad}{hint}; accepted parameters: "
            f"{', '.join(ok)}"
        )
    return cls(**params)


def get_loss(name: str, **params: Any) -> nn.Module:
    """Build a loss by name.

    ``name`` is a registered name (see :func:`list_losses`) or a compound ``"a+b(+c)"``.
    For a compound, ``weights=(w_a, w_b, ...)`` (default all 1.0, the PM-Dice paper's plain
    sums), per-component parameters as dicts keyed by component name
    (``pm_dice={"gamma": 2.0}``), and shared parameters (``ignore_index``, ``mode``,
    ``reduction``, ``validate``, ``include_background``, ``batch_dice``, ``eps``, ...)
    forwarded to every component whose ``__init__`` accepts them. A shared parameter that
    two components define differently (``gamma`` of ``focal+pm_dice``) must be given per term.

    Raises:
        ValueError: unknown name (with close matches), a parameter the loss does not accept or
            an ambiguous compound parameter.
    """
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"loss name must be a non-empty string, got {name!r}")
    if "+" in name:
        return _build_compound(name, params)
    if "weights" in params and "weights" not in accepted_params(_resolve(name)):
        raise UnknownParameterError(
            f"'weights' is only accepted by compound names like 'ce+dice', got {name!r}"
        )
    return _build(name, params)


def _defining_class(cls: type[nn.Module], param: str) -> type | None:
    """The class in ``cls``'s MRO whose own ``__init__`` declares ``param``."""
    for klass in cls.__mro__:
        init = vars(klass).get("__init__")
        if init is not None and param in inspect.signature(init).parameters:
            return klass
    return None


def _check_unambiguous(
    name: str, parts: Sequence[str], classes: Sequence[type[SegLoss]], shared: Mapping[str, Any]
) -> None:
    """A compound-level parameter goes to every component that accepts it, which is right for
    the ones a common base defines (``eps``, ``include_background``, ``ignore_index``, ...)
    but silently wrong for ones that mean different things per loss (focal's ``gamma`` is its
    focusing exponent, PM Dice's the modulating exponent): those must be given per term."""
    for key, value in shared.items():
        owners = {
            part: _defining_class(cls, key)
            for part, cls in zip(parts, classes, strict=True)
            if key in accepted_params(cls)
        }
        if len(set(owners.values())) > 1:
            example = next(reversed(owners))
            raise LossParameterError(
                f"compound {name!r}: parameter {key!r} means different things in "
                f"{' and '.join(owners)}; give it to one term, e.g. "
                f"{example}={{{key!r}: {value!r}}} (in a config: "
                f"params: {{{example}: {{{key}: {value!r}}}}})"
            )


def _build_compound(name: str, params: Mapping[str, Any]) -> CompoundLoss:
    parts = [p.strip().lower() for p in name.split("+")]
    if any(not p for p in parts):
        raise ValueError(f"compound loss name {name!r} has an empty component")
    classes = [_resolve(p) for p in parts]
    canon = [_ALIASES.get(p, p) for p in parts]
    params = dict(params)
    weights: Sequence[float] | None = params.pop("weights", None)
    reduction = params.pop("reduction", "mean")
    per: dict[str, dict[str, Any]] = {}
    for key in list(params):
        k = key.lower()
        if k in parts or k in canon:
            val = params.pop(key)
            if not isinstance(val, Mapping):
                raise ValueError(
                    f"parameters for component {key!r} must be a dict, got {type(val).__name__}"
                )
            per[_ALIASES.get(k, k)] = dict(val)
    shared = params
    _check_unambiguous(name, canon, classes, shared)
    used: set[str] = set()
    comps: list[SegLoss] = []
    for cname, cls in zip(canon, classes, strict=True):
        ok = accepted_params(cls)
        kw = {k: v for k, v in shared.items() if k in ok}
        used |= set(kw)
        own = per.get(cname, {})
        if "reduction" in own:
            raise ValueError(f"set reduction on the compound, not on component {cname!r}")
        # every term reads the same labels, one way (SegLoss's defaults: None, "auto")
        for key, default in (("ignore_index", None), ("mode", "auto")):
            if key in own and own[key] != shared.get(key, default):
                raise ValueError(
                    f"compound {name!r}: give {key} to the compound, not to component "
                    f"{cname!r} alone (get_loss({name!r}, {key}={own[key]!r}); in a config: "
                    f"params: {{{key}: {own[key]!r}}}): every term reads the same labels"
                )
        kw.update(own)
        kw["reduction"] = "none"
        comps.append(_build(cname, kw))
    unused = sorted(set(shared) - used)
    if unused:
        raise UnknownParameterError(
            f"compound {name!r}: parameter(s) {unused} are accepted by none of its components "
            f"({', '.join(canon)})"
        )
    return CompoundLoss(comps, weights=weights, reduction=reduction, names=canon)

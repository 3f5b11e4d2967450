"""Forms shared by the panels: loss parameters (magicgui, from the loss registry) and gammas.

:class:`LossParamForm` builds one magicgui widget per loss parameter from the signature the
registry reports (:func:`napari_segloss.losses.loss_parameters`: defaults and annotations):
a check box for ``bool``, a spin box for ``float``/``int``, a text field evaluated as a Python
literal for anything else (``None``, tuples, unions). A compound ``"a+b"`` gets one weight per
component and the parameters of each component. :class:`GammaList` (the PM-Dice focusing
parameters) stays hand-written Qt: magicgui has no editable list of sliders.
:func:`config_widget` builds a magicgui widget for one field of the pydantic config models
(``napari_segloss.engine.config``): its type, default, bounds and description.
"""

from __future__ import annotations

import inspect
import itertools
import textwrap
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from magicgui.widgets import (
    CheckBox,
    Container,
    FloatSpinBox,
    Label,
    LineEdit,
    LiteralEvalLineEdit,
    SpinBox,
    Widget,
    create_widget,
)
from magicgui.widgets.bases import ValueWidget
from psygnal import Signal
from pydantic import BaseModel
from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QComboBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QVBoxLayout,
    QWidget,
)
from superqt import QLabeledDoubleSlider

from ._common import PanelError

ParameterSource = Callable[[str], Mapping[str, inspect.Parameter]]
HelpSource = Callable[[str], Mapping[str, str]]

#: 2D architectures the model forms offer (before the model factory's own list is loaded)
ARCHS = ("Unet", "UnetPlusPlus", "FPN", "DeepLabV3Plus", "Linknet", "PSPNet", "MAnet", "PAN")
#: encoders the model forms propose (any smp encoder name may be typed)
ENCODERS = (
    "resnet18",
    "resnet34",
    "resnet50",
    "mobilenet_v2",
    "efficientnet-b0",
    "timm-efficientnet-b0",
)

#: spin-box range for float parameters (losses take fractions, exponents and percentages)
FLOAT_RANGE = (0.0, 1000.0)
GAMMA_RANGE = (0.0, 10.0)
#: what "add γ" proposes, first value not yet in the list
GAMMA_PROPOSALS = (0.5, 1.0, 2.0, 3.0, 5.0, 0.0, 1.5, 4.0, 7.0, 10.0)


#: characters per line of a tooltip (Qt shows plain-text tooltips unwrapped)
TOOLTIP_WIDTH = 72


def registry_parameters(name: str) -> Mapping[str, inspect.Parameter]:
    """The editable parameters of loss ``name`` from the registry.

    The registry imports torch (about 2 s the first time): the Loss Explorer fetches all of
    them in a thread worker (``explorer.loss_catalog``) and passes them in instead.
    """
    from napari_segloss.explorer import editable_parameters  # heavy: see above

    return editable_parameters(name)


def registry_help(name: str) -> Mapping[str, str]:
    """What each parameter of loss ``name`` does, from the losses' docstrings
    (:func:`napari_segloss.losses.loss_parameter_help`). The forms are built once the
    catalog is loaded, so the registry is already imported (no wait for torch here)."""
    from napari_segloss.losses import loss_parameter_help  # see above

    return loss_parameter_help(name)


def loss_tooltip(name: str) -> str:
    """What loss ``name`` computes (title, paper, formula) wrapped for a tooltip, "" for a
    name the registry does not know (a compound being typed). Read once the catalog is
    loaded, as :func:`registry_help`."""
    from napari_segloss.losses import loss_description  # see registry_help

    try:
        return textwrap.fill(loss_description(name)[1], TOOLTIP_WIDTH)
    except ValueError:
        return ""


def describe_loss_items(combo: QComboBox) -> None:
    """Each loss name of ``combo`` shows what the loss computes when hovered in its list."""
    for i in range(combo.count()):
        combo.setItemData(i, loss_tooltip(combo.itemText(i)), Qt.ItemDataRole.ToolTipRole)


def load_loss_catalog() -> dict[str, dict[str, inspect.Parameter]]:
    """Every registered loss with its editable parameters, in registry order.

    Imports torch and the losses (about 2 s the first time): the panels call it in a thread
    worker, after ``_compat.preload_torch_libraries``.
    """
    from napari_segloss.explorer import loss_catalog  # heavy: see registry_parameters

    return loss_catalog()


def _is_plain_float(p: inspect.Parameter) -> bool:
    d = p.default
    fits = isinstance(d, float) and (d == 0 or 0.01 <= abs(d) <= FLOAT_RANGE[1])
    return p.annotation in ("float", float) and fits and d >= 0


def parameter_widget(p: inspect.Parameter, *, name: str | None = None, label: str = "") -> Widget:
    """A magicgui widget for one keyword parameter, holding its default."""
    kw: dict[str, Any] = {"name": name or p.name, "label": label or p.name}
    default = None if p.default is inspect.Parameter.empty else p.default
    if isinstance(default, bool):
        return CheckBox(value=default, **kw)
    if _is_plain_float(p):
        w = FloatSpinBox(value=default, min=FLOAT_RANGE[0], max=FLOAT_RANGE[1], step=0.05, **kw)
        w.native.setDecimals(3)
        return w
    if p.annotation in ("int", int) and isinstance(default, int):
        return SpinBox(value=default, min=0, max=100_000, **kw)
    if p.annotation in ("str", str) and isinstance(default, str):
        return LineEdit(value=default, **kw)
    w = LiteralEvalLineEdit(value=repr(default), **kw)
    w.tooltip = f"a Python literal: 0.5, (1.0, 2.0), None; empty: the default, {default!r}"
    w.default_value = default  # what an emptied field means (_read)
    return w


def _read(widget: Widget, what: str) -> Any:
    if isinstance(widget, LiteralEvalLineEdit) and not widget.native.text().strip():
        return getattr(widget, "default_value", None)
    try:
        return widget.value
    except (ValueError, SyntaxError, TypeError):
        raise PanelError(
            f"{what}: expected a number or Python literal, got {widget.native.text()!r}"
        ) from None


def _write(widget: Widget, value: Any) -> None:
    """Show ``value`` in a field made by :func:`parameter_widget`."""
    if isinstance(widget, LiteralEvalLineEdit):
        widget.native.setText(repr(tuple(value) if isinstance(value, list) else value))
    else:
        widget.value = value


def field_bounds(model: type[BaseModel], field: str) -> dict[str, float]:
    """``min``/``max`` options from a pydantic field's constraints (``ge``, ``gt``, ``le``,
    ``lt``); a strict bound of a float field becomes the nearest value a spin box can hold."""
    info = model.model_fields[field]
    step = 1 if info.annotation is int else 1e-6
    out: dict[str, float] = {}
    for c in info.metadata:  # annotated_types.Ge, Gt, Le, Lt
        for attr, key, shift in (("ge", "min", 0), ("gt", "min", step), ("le", "max", 0)):
            if getattr(c, attr, None) is not None:
                out[key] = getattr(c, attr) + shift
        if getattr(c, "lt", None) is not None:
            out["max"] = c.lt - step
    return out


def config_widget(
    model: type[BaseModel], field: str, *, label: str = "", **options: Any
) -> ValueWidget:
    """A magicgui widget for ``model.field`` (e.g. ``TrainSection.epochs``): the widget type
    from the field's annotation (``Literal`` -> combo box, ``Path`` -> file picker, ...), its
    default, the bounds of its constraints and its description as tooltip. ``options``
    override any of them (``value``, ``min``, ``widget_type``, ``choices``, ...)."""
    info = model.model_fields[field]
    widget_type = options.pop("widget_type", None)
    annotation = options.pop("annotation", info.annotation)
    value = options.pop("value", info.get_default(call_default_factory=True))
    if widget_type is None and info.annotation is int:
        options.setdefault("max", 1_000_000)
    opts: dict[str, Any] = {**field_bounds(model, field), **options}
    if info.description and "tooltip" not in opts:
        opts["tooltip"] = info.description
    decimals = opts.pop("decimals", None)
    widget = create_widget(
        value=value,
        annotation=annotation,
        name=field,
        label=label or field.replace("_", " "),
        widget_type=widget_type,
        options=opts,
    )
    if decimals is not None:
        # Qt rounds the range and value to the decimals shown: set them again afterwards
        widget.native.setDecimals(decimals)
        widget.min, widget.max = opts.get("min", widget.min), opts.get("max", widget.max)
        widget.value = value
    return widget


class WholeSpinBox(FloatSpinBox):
    """magicgui's ``FloatSpinBox`` (a ``QDoubleSpinBox``) without decimals; ``value`` is an
    ``int``. Unlike magicgui's ``SpinBox`` (superqt's ``QLargeIntSpinBox``) it has Qt's special
    value text and suffix, which the two boxes below use."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.native.setDecimals(0)

    @property
    def value(self) -> int:
        return round(FloatSpinBox.value.fget(self))

    @value.setter
    def value(self, value: float) -> None:
        FloatSpinBox.value.fset(self, value)


class SizeSpinBox(WholeSpinBox):
    """A whole number of pixels whose minimum reads as a word (``special``: "native", "auto
    (as validation)"), as ``QSpinBox.setSpecialValueText`` shows it."""

    def __init__(self, *, special: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.native.setSpecialValueText(special)


class ClassSpinBox(WholeSpinBox):
    """A class index that names its class next to the number (``1  RV``) once
    :meth:`set_names` gave the names (a Labels layer's ``class_names``); typing reads the
    number alone."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._names: tuple[str, ...] = ()
        self.native.valueChanged.connect(self._name_value)

    def set_names(self, names: Sequence[str] | None) -> None:
        """Name the classes (by index, background first); None or () shows numbers alone."""
        self._names = tuple(names or ())
        self._name_value()

    def _name_value(self, *_: object) -> None:
        c = self.value
        self.native.setSuffix(f"  {self._names[c]}" if 0 <= c < len(self._names) else "")


class LossParamForm(QWidget):
    """The parameters of one loss as a magicgui form; :meth:`values` gives what differs from
    the defaults (so ``get_loss(name, **form.values())`` and labels stay short).

    ``parameters`` looks up a loss' parameters by name (default: :func:`registry_parameters`),
    ``describe`` their descriptions, shown as tooltips (default: :func:`registry_help`).
    ``changed`` is emitted on every edit. ``heading``: a line above the fields naming the
    loss (where nothing else next to the form says whose parameters they are).
    """

    changed = Signal()

    def __init__(
        self,
        name: str,
        parameters: ParameterSource | None = None,
        parent: QWidget | None = None,
        describe: HelpSource | None = None,
        *,
        heading: bool = False,
    ) -> None:
        super().__init__(parent)
        self.name = name
        lookup = parameters or registry_parameters
        self._describe = describe or registry_help
        self.defaults: dict[str, Any] = {}
        # key -> (widget, parameter, component of a compound or None)
        self._fields: dict[str, tuple[Widget, str, str | None]] = {}
        self._weights: dict[str, Widget] = {}  # compound component -> its term weight
        self.form = Container(labels=True)
        self.form.margins = (0, 0, 0, 0)
        try:
            params = dict(lookup(name))
            if "+" in name:
                self._add_compound(params, lookup)
            else:
                for p in params.values():
                    self._add(p)
        except Exception as exc:  # a broken registry entry must not break the panel
            self.form.append(Label(value=f"(parameters unavailable: {exc})"))
        if not self._fields and not len(self.form):
            self.form.append(Label(value="(no parameters)"))
        self.form.changed.connect(lambda *_: self.changed.emit())
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        self.heading = QLabel(f"parameters of {name}:", self) if heading else None
        if self.heading is not None:
            lay.addWidget(self.heading)
        lay.addWidget(self.form.native)

    def _add(self, p: inspect.Parameter, part: str | None = None) -> None:
        key = f"{part}__{p.name}" if part else p.name
        w = parameter_widget(p, name=key, label=f"{part}: {p.name}" if part else p.name)
        if part and isinstance(w, CheckBox):
            # magicgui writes a check box's text with spaces for underscores: keep the loss's
            # name as the fields above it spell it ("pm_dice: batch dice", not "pm dice: ...")
            w.native.setText(f"{part}: {p.name.replace('_', ' ')}")
        # Qt shows a plain-text tooltip on one line: wrap it
        about = textwrap.fill(self._help(part or self.name).get(p.name, ""), TOOLTIP_WIDTH)
        if about:
            w.tooltip = f"{about}\n({w.tooltip})" if w.tooltip else about
        self.form.append(w)
        self._fields[key] = (w, p.name, part)
        self.defaults[key] = None if p.default is inspect.Parameter.empty else p.default

    def _add_compound(self, params: dict[str, inspect.Parameter], lookup: ParameterSource) -> None:
        parts = [k for k in params if k != "weights"]
        weight = inspect.Parameter("weights", inspect.Parameter.KEYWORD_ONLY, default=1.0)
        for part in parts:
            w = parameter_widget(
                weight.replace(annotation="float"),
                name=f"weight__{part}",
                label=f"{part} term weight",
            )
            w.tooltip = f"the {part} term is multiplied by this weight"
            self.form.append(w)
            self._weights[part] = w
        for part in parts:
            for p in lookup(part).values():
                self._add(p, part)

    def _help(self, name: str) -> Mapping[str, str]:
        try:
            return self._describe(name)
        except Exception:  # a tooltip must never break the form
            return {}

    @property
    def widgets(self) -> dict[str, Widget]:
        """The magicgui widget of each field (compound: ``"weight__part"``, ``"part__param"``)."""
        weights = {f"weight__{part}": w for part, w in self._weights.items()}
        return weights | {key: w for key, (w, _, _) in self._fields.items()}

    @property
    def editors(self) -> dict[str, QWidget]:
        """The Qt editor inside each of :attr:`widgets` (what a person types into)."""
        return {key: w.native for key, w in self.widgets.items()}

    def set_values(self, params: Mapping[str, Any]) -> None:
        """Show ``params`` as :meth:`values` gives them (a row of a loss list); the fields
        they do not name go back to their defaults."""
        for key, (w, pname, part) in self._fields.items():
            given = params if part is None else params.get(part) or {}
            _write(w, given.get(pname, self.defaults[key]))
        weights = params.get("weights") or [1.0] * len(self._weights)
        if isinstance(weights, Mapping):  # {"ce": 0.5, "pm_dice": 1.0}
            weights = [weights.get(part, 1.0) for part in self._weights]
        for w, weight in zip(self._weights.values(), weights, strict=False):
            w.value = float(weight)

    def values(self) -> dict[str, Any]:
        """Parameters that differ from the defaults; a compound gives ``weights`` (all of
        them, when one differs) and one dict per changed component."""
        out: dict[str, Any] = {}
        weights = {part: float(w.value) for part, w in self._weights.items()}
        for key, (w, pname, part) in self._fields.items():
            v = _read(w, f"{self.name} parameter {key.replace('__', ' ')}")
            if v == self.defaults[key]:
                continue
            if part is None:
                out[pname] = v
            else:
                out.setdefault(part, {})[pname] = v
        if any(v != 1.0 for v in weights.values()):
            out = {"weights": tuple(weights.values()), **out}
        return out


class _GammaRow(QWidget):
    def __init__(self, value: float, uid: int, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.uid = uid
        lay = QHBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(QLabel("γ", self))
        self.slider = QLabeledDoubleSlider(Qt.Orientation.Horizontal, self)
        self.slider.setRange(*GAMMA_RANGE)
        self.slider.setSingleStep(0.1)
        self.slider.setDecimals(2)
        self.slider.setValue(value)
        lay.addWidget(self.slider, 1)
        self.remove = QPushButton("−", self)
        self.remove.setFixedWidth(28)
        self.remove.setToolTip("remove this γ and its map")
        lay.addWidget(self.remove)

    def value(self) -> float:
        return round(float(self.slider.value()), 2)


class GammaList(QWidget):
    """Editable list of PM-Dice focusing parameters γ: one slider row each, "add γ" below.

    Each row has a stable ``uid`` (its map layer follows the row while its slider moves).
    ``changed`` is emitted when a row is added, removed or moved.
    """

    changed = Signal()

    def __init__(self, values: tuple[float, ...] = (), parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._uids = itertools.count()
        self.rows: list[_GammaRow] = []
        self._layout = QVBoxLayout(self)
        self._layout.setContentsMargins(0, 0, 0, 0)
        self.add_button = QPushButton("add γ", self)
        self.add_button.setToolTip("add a focusing parameter (a value not in the list yet)")
        self.add_button.clicked.connect(lambda: self.add())
        self._layout.addWidget(self.add_button)
        for v in values:
            self.add(v, notify=False)

    def proposal(self) -> float:
        """The value "add γ" proposes: the first of GAMMA_PROPOSALS not in the list."""
        taken = set(self.values())
        fresh = [g for g in GAMMA_PROPOSALS if g not in taken]
        return fresh[0] if fresh else min(GAMMA_RANGE[1], max(taken) + 0.5)

    def add(self, value: float | None = None, *, notify: bool = True) -> _GammaRow:
        """A new row, placed among the others in ascending order (before the first larger
        value), as the maps are: "add γ" proposes 3, then 0, then 1.5, and appended rows read
        0.5 1 2 5 3 0 1.5. Rows keep their places while their sliders move."""
        row = _GammaRow(self.proposal() if value is None else value, next(self._uids), self)
        row.slider.valueChanged.connect(lambda *_: self.changed.emit())
        row.remove.clicked.connect(lambda: self.remove(row))
        at = next((i for i, r in enumerate(self.rows) if r.value() > row.value()), len(self.rows))
        self.rows.insert(at, row)
        self._layout.insertWidget(at, row)  # the rows come first, "add γ" last
        if notify:
            self.changed.emit()
        return row

    def remove(self, row: _GammaRow) -> None:
        if row in self.rows:
            self.rows.remove(row)
            self._layout.removeWidget(row)
            row.hide()  # at once: deleteLater waits for the event loop, the row would linger
            row.deleteLater()
            self.changed.emit()

    def values(self) -> list[float]:
        return [r.value() for r in self.rows]

    def distinct(self) -> dict[float, int]:
        """Each distinct γ with the ``uid`` of the first row holding it."""
        out: dict[float, int] = {}
        for r in self.rows:
            out.setdefault(r.value(), r.uid)
        return out

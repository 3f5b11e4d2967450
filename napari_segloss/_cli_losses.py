"""``segloss losses``: the losses a config can name, and one loss's parameters.

``segloss losses`` lists every name with its title (paper and equation); ``segloss losses
NAME`` prints what the loss computes, each parameter with its default and meaning, and the
``loss:`` section of a training config with those defaults, ready to copy and edit. Like the
other sub-commands it imports torch only when it runs (see :mod:`napari_segloss.cli`).
"""

from __future__ import annotations

import argparse
import inspect
import textwrap
from typing import Any

import yaml

from ._cli_io import CLIError

__all__ = ["add_losses_parser", "cmd_losses"]

WIDTH = 92  # wrapped text, in characters


def add_losses_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    """The ``losses`` sub-command of ``segloss``'s parser ``sub``."""
    p = sub.add_parser(
        "losses",
        parents=[common],
        help="list the losses, or show one loss's parameters and config section",
        description="Without NAME: every loss a config's loss.name (or compare --losses) can "
        "take, with its paper. With NAME: what it computes, its parameters (loss.params) with "
        "their defaults, and a loss: section to paste into a config.",
    )
    p.add_argument("name", nargs="?", metavar="NAME", help="a loss name, e.g. pm_dice or ce+dice")
    p.add_argument(
        "--all", action="store_true", help="also the parameters every loss shares (mode, ...)"
    )
    p.set_defaults(func=cmd_losses)


def cmd_losses(args: argparse.Namespace) -> int:
    """List the losses, or describe ``args.name``."""
    from . import losses  # torch: imported by the command that needs it

    if args.name is None:
        names = losses.list_losses()
        width = max(len(n) for n in names)
        print("losses (a config's loss.name; `segloss losses NAME` shows one)")
        for name in names:
            print(f"  {name:<{width}}  {losses.loss_description(name)[0]}")
        print("Any a+b of these names is their weighted sum (loss.params: weights, a, b).")
        aliases = ", ".join(f"{a}={n}" for a, n in losses.loss_aliases().items())
        print(textwrap.fill(f"Other names accepted: {aliases}.", WIDTH))
        return 0
    try:
        text = losses.loss_description(args.name)[1]
        params = losses.loss_parameters(args.name)
        helps = losses.loss_parameter_help(args.name)
    except ValueError as exc:
        raise CLIError(str(exc)) from None
    name = args.name.strip().lower()
    print(textwrap.fill(f"{name}: {text}", WIDTH, subsequent_indent="  ", break_on_hyphens=False))
    shown = {k: p for k, p in params.items() if args.all or k not in losses.SHARED_PARAMS}
    print("\nparameters (loss.params): name, default, meaning")
    rows = [(k, _yaml_value(p.default), helps.get(k, "")) for k, p in shown.items()]
    key_w = max(len(k) for k, _, _ in rows)
    value_w = max(len(v) for _, v, _ in rows)
    for key, value, help_text in rows:
        line = f"  {key:<{key_w}}  {value:<{value_w}}  {help_text}"
        print(textwrap.fill(line, WIDTH, subsequent_indent=" " * (key_w + value_w + 6)))
    if "+" in name:
        terms = ", ".join(f"`segloss losses {k}`" for k in params if k != "weights")
        print(f"  (each term's own parameters: {terms})")
    elif not args.all:
        print(f"  (and {', '.join(losses.SHARED_PARAMS)}, as every loss: --all describes them)")
    print("\nin a config (the defaults):")
    print(_config_section(losses, name, params))
    return 0


def _own_defaults(losses: Any, params: dict[str, inspect.Parameter]) -> dict[str, Any]:
    """The defaults of a loss's own parameters (not :data:`~napari_segloss.losses.SHARED_PARAMS`)."""
    return {k: p.default for k, p in params.items() if k not in losses.SHARED_PARAMS}


def _config_section(losses: Any, name: str, params: dict[str, inspect.Parameter]) -> str:
    """The YAML ``loss:`` section of ``name`` with its default parameters."""
    if "+" in name:
        parts = [p for p in params if p != "weights"]
        values: dict[str, Any] = {"weights": [1.0] * len(parts)}
        values |= {part: _own_defaults(losses, losses.loss_parameters(part)) for part in parts}
    else:
        values = _own_defaults(losses, params)
    section = {"loss": {"name": name, "params": _plain(values)}}
    return yaml.safe_dump(section, sort_keys=False, default_flow_style=False).rstrip()


def _plain(value: Any) -> Any:
    """Tuples as lists, recursively (what YAML's safe writer knows)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _yaml_value(value: Any) -> str:
    """A default as YAML writes it inline (None -> null, 1e-06 -> 1.0e-06, tuples -> lists)."""
    text = yaml.safe_dump(_plain(value), default_flow_style=True, width=1000)
    return text.removesuffix("\n").removesuffix("\n...").strip()

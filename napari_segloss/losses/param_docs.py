"""One-line descriptions of the losses' parameters, read from their docstrings' ``Args:``
sections (the panels show them as tooltips), so the words a user reads next to a spin box are
the ones the API documents.

An entry ``name: text`` (continued on deeper-indented lines) describes ``name``; ``a, b: text``
describes both; ``see :class:`X``` and a section's ``Args as :class:`X``` defer to class X,
and a class without an entry defers to its bases.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Iterable

_HEADER = re.compile(r"^Args\b.*:$")
_ARGS_AS = re.compile(r"^Args as :class:`~?(?:[\w.]+\.)?(\w+)`")
_ENTRY = re.compile(r"^(?P<names>[a-z_]\w*(?:\s*,\s*[a-z_]\w*)*):\s+(?P<text>.*)$")
_REFERENCE = re.compile(r"^see :class:`~?(?:[\w.]+\.)?(\w+)`")
_ROLE = re.compile(r":\w+:`~?(?:[\w.]+\.)?([^`]+)`")
_BULLET = re.compile(r"^\s*[*-]\s+", re.MULTILINE)


def _plain(text: str) -> str:
    """Docstring markup to plain words: ``x`` -> x, **x** -> x, :class:`~a.B` -> B."""
    return " ".join(_ROLE.sub(r"\1", text).replace("``", "").replace("**", "").split())


def _split_inline(names: list[str], text: str, known: set[str]) -> list[tuple[list[str], str]]:
    """``"a: x. b: y."`` on one line -> two entries, where ``b`` is a parameter name."""
    pieces = re.split(r"(?<=\.)\s+(?=[a-z_]\w*(?:\s*,\s*[a-z_]\w*)*:\s)", text)
    out = [(names, pieces[0])]
    for piece in pieces[1:]:
        m = _ENTRY.match(piece)
        more = [n.strip() for n in m["names"].split(",")] if m else []
        if m and set(more) <= known:
            out.append((more, m["text"]))
        else:
            out[-1] = (out[-1][0], f"{out[-1][1]} {piece}")
    return out


def args_section(doc: str | None, known: Iterable[str]) -> tuple[dict[str, str], str | None]:
    """``({name: raw text}, class named by "Args as :class:`X`" or None)`` of one docstring;
    ``known``: the parameter names (splits ``"a: x. b: y."`` only at real names)."""
    entries: dict[str, str] = {}
    if not doc:
        return entries, None
    known = set(known)
    lines = inspect.cleandoc(doc).splitlines()
    start = next((i for i, line in enumerate(lines) if _HEADER.match(line)), None)
    if start is None:
        as_other = next((m for line in lines if (m := _ARGS_AS.match(line.strip()))), None)
        return entries, as_other[1] if as_other else None
    current: list[tuple[list[str], str]] = []
    for line in lines[start + 1 :]:
        if not line.strip() or not line.startswith(" "):
            break
        depth = len(line) - len(line.lstrip())
        m = _ENTRY.match(line.strip())
        if depth <= 4 and m:
            names = [n.strip() for n in m["names"].split(",")]
            current = _split_inline(names, m["text"], known)
            for group, text in current:
                for name in group:
                    entries[name] = text
        elif current:  # continuation of the last entry on the line above
            group, text = current[-1]
            current[-1] = (group, f"{text} {line.strip()}")
            for name in group:
                entries[name] = current[-1][1]
    return entries, None


def parameter_help(cls: type, names: Iterable[str]) -> dict[str, str]:
    """Plain-text description of each parameter in ``names`` of loss class ``cls`` ("" when
    no docstring on its path describes it)."""
    names = list(names)
    classes = {k.__name__: k for k in cls.__mro__}
    for k in cls.__mro__:  # classes named by references (siblings share a base module)
        module = inspect.getmodule(k)
        if module is not None:
            classes.update(
                {n: v for n, v in vars(module).items() if inspect.isclass(v) and n not in classes}
            )

    def lookup(klass: type, name: str, seen: set[type]) -> str:
        if klass in seen or klass is object:
            return ""
        seen.add(klass)
        entries, args_as = args_section(vars(klass).get("__doc__"), names)
        text = entries.get(name, "")
        ref = _REFERENCE.match(text)
        if text and not ref:
            return _plain(text)
        targets = [classes.get(ref[1]) if ref else None, classes.get(args_as or "")]
        targets += list(klass.__bases__)
        for target in targets:
            if target is not None and (found := lookup(target, name, seen)):
                return found
        return ""

    return {name: lookup(cls, name, set()) for name in names}


#: longest title :func:`class_summary` keeps whole (a longer one loses its trailing aside)
TITLE_CHARS = 100


def class_summary(cls: type) -> tuple[str, str]:
    """``(title, paragraph)`` of a loss class in plain words, from its docstring's first
    paragraph: the title is that paragraph up to its formula (the first ``": "`` outside
    brackets and quotes) or its end, e.g. "Focal Tversky loss (Abraham & Khan 2019; Yeung et
    al. 2021 eq. 14)"; the paragraph is the whole of it, formula included."""
    blocks = inspect.cleandoc(vars(cls).get("__doc__") or "").split("\n\n")
    paragraph = _plain(blocks[0])
    for block in blocks[1:]:  # "... with" / "...:" goes on in a list: take it in
        if not paragraph.endswith((" with", ":")):
            break
        paragraph += " " + _plain(_BULLET.sub("", block))
    depth, quoted, end = 0, False, len(paragraph)
    for i, ch in enumerate(paragraph):
        if ch == '"':
            quoted = not quoted
        elif ch in "([":
            depth += 1
        elif ch in ")]":
            depth -= 1
        elif ch == ":" and not depth and not quoted and paragraph[i + 1 : i + 2] == " ":
            end = i
            break
    title = paragraph[:end].rstrip(". ")
    if len(title) > TITLE_CHARS and " (" in title:  # keep the name and the first reference
        title = title[: title.rindex(" (", 0, TITLE_CHARS)]
    return title, paragraph

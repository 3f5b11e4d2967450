"""Parameter descriptions read from the losses' docstrings (the panels' tooltips)."""

from __future__ import annotations

import pytest

from napari_segloss.losses import (
    list_losses,
    loss_description,
    loss_parameter_help,
    loss_parameters,
)
from napari_segloss.losses.param_docs import TITLE_CHARS, args_section, parameter_help

DOC = """Summary line.

    Args:
        alpha, beta: FP / FN weights
            (default 0.3 / 0.7).
        k: kept share (default 10). gamma: exponent > 0.
        eps: see :class:`Base`.
        mode: ``"auto"`` or :class:`~pkg.mod.Thing`.

    Returns nothing.
    """


def test_args_section_entries_continuations_and_inline_entries() -> None:
    entries, args_as = args_section(DOC, ["alpha", "beta", "k", "gamma", "eps", "mode"])
    assert args_as is None
    assert entries["alpha"] == entries["beta"] == "FP / FN weights (default 0.3 / 0.7)."
    assert entries["k"] == "kept share (default 10)."
    assert entries["gamma"] == "exponent > 0."
    assert entries["eps"] == "see :class:`Base`."
    assert "Returns" not in " ".join(entries.values())
    # "gamma:" is split off only when gamma is a parameter
    entries, _ = args_section(DOC, ["k"])
    assert entries["k"] == "kept share (default 10). gamma: exponent > 0."
    assert args_section("Args as :class:`Other`.", [])[1] == "Other"


class Base:
    """Base.

    Args:
        eps: smoothing (default 1e-6).
        mode: ``"auto"`` or :class:`~pkg.mod.Thing`.
    """


class Child(Base):
    __doc__ = DOC


class Sibling(Base):
    """Args as :class:`Child`."""


def test_references_resolve_through_classes_and_bases() -> None:
    help_ = parameter_help(Child, ["alpha", "eps", "mode", "missing"])
    assert help_ == {
        "alpha": "FP / FN weights (default 0.3 / 0.7).",
        "eps": "smoothing (default 1e-6).",
        "mode": '"auto" or Thing.',
        "missing": "",
    }
    assert parameter_help(Sibling, ["beta"])["beta"] == "FP / FN weights (default 0.3 / 0.7)."


@pytest.mark.parametrize("name", list_losses())
def test_every_parameter_of_every_loss_is_described(name: str) -> None:
    help_ = loss_parameter_help(name)
    assert set(help_) == set(loss_parameters(name))
    assert all(text and "``" not in text and ":class:" not in text for text in help_.values())


def test_examples_say_what_the_parameter_does() -> None:
    assert "focal (CE) term" in loss_parameter_help("unified_focal")["weight"]
    assert "false negatives" in loss_parameter_help("tversky")["beta"]
    assert loss_parameter_help("dice")["eps"].startswith("smoothing")
    assert "one value per class" in loss_parameter_help("pm_dice")["gamma"]
    with pytest.raises(ValueError, match="unknown loss name"):
        loss_parameter_help("pm_dise")


# ----------------------------------------------------------------------------- loss titles
@pytest.mark.parametrize(
    ("name", "title"),
    [
        ("focal_tversky", "Focal Tversky loss (Abraham & Khan 2019; Yeung et al. 2021 eq. 14)"),
        ("ce", "Cross-entropy (PM-Dice paper eq. 1)"),
        ("gdl", "Generalized Dice loss (Sudre et al. 2017)"),  # an alias
        # a colon inside brackets and quotes is not the formula's
        ("topk_dice", 'TopK Dice (Hosseini, BMVC 2024; "TopK Dice [42]" in the PM-Dice tables)'),
        # over 100 characters: the trailing aside goes, the name and first reference stay
        (
            "focal_dice_zhao",
            "Focal Dice of Zhao et al. 2020 (ICDM) as the PM-Dice paper describes it",
        ),
        ("ce+pm_dice", "weighted sum of ce and pm_dice"),
    ],
)
def test_loss_description_titles(name: str, title: str) -> None:
    assert loss_description(name)[0] == title


@pytest.mark.parametrize("name", list_losses(include_aliases=True))
def test_every_loss_has_a_plain_title_and_text(name: str) -> None:
    title, text = loss_description(name)
    assert 10 <= len(title) <= TITLE_CHARS, title
    for markup in ("``", "**", ":class:", ":func:", "\n"):
        assert markup not in title + text, (markup, text)
    # a sentence that goes on in a list ("L = ... with" + bullets) is read to its end
    assert not text.endswith((" with", ":")), text
    if "+" in name:
        assert all(part in text for part in name.split("+"))
    else:
        assert text.startswith(title), (title, text)
        assert len(text) > len(title)  # the formula or what the loss does follows


def test_loss_description_takes_in_the_list_its_formula_continues_in() -> None:
    text = loss_description("unified_focal")[1]
    assert "L_mF + (1 - weight) * L_mFT with L_mFT = mean_c (1 - mTI_c)^(1 - gamma)" in text
    assert text.endswith("and delta for every foreground class.")
    assert "*" not in text.replace(" * ", "")  # no bullet or emphasis marks left


def test_loss_description_of_an_unknown_name_suggests_one() -> None:
    with pytest.raises(ValueError, match="did you mean 'pm_dice'"):
        loss_description("pmdice")
    with pytest.raises(ValueError, match="unknown loss name 'foo'"):
        loss_description("ce+foo")

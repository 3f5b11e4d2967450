"""The npe2 manifest contributes the three panels with their exact display names."""

from __future__ import annotations

import importlib

import pytest

npe2 = pytest.importorskip("npe2")

EXPECTED = {
    "Loss Explorer": "LossExplorerWidget",
    "Train / Fine-tune": "TrainWidget",
    "Predict & Compare": "PredictWidget",
    "Compare Losses": "CompareLossesWidget",
}


def test_manifest_widgets_point_at_the_panels():
    manifest = npe2.PluginManifest.from_distribution("napari-segloss")
    commands = {c.id: c for c in manifest.contributions.commands or []}
    widgets = {w.display_name: w for w in manifest.contributions.widgets or []}
    assert set(EXPECTED) <= set(widgets)
    for display_name, cls_name in EXPECTED.items():
        python_name = commands[widgets[display_name].command].python_name
        module, _, attr = python_name.partition(":")
        assert attr == cls_name
        assert getattr(importlib.import_module(module), attr).__name__ == cls_name
    assert {s.key for s in manifest.contributions.sample_data or []} >= {"kvasir", "acdc"}

"""Tests for napari_segloss.engine.request and .prepare: a run from a person's choices."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from napari_segloss.engine.config import ConfigError, ModelConfig
from napari_segloss.engine.request import (
    LayerData,
    TrainRequest,
    build_config,
    checkpoint_model_section,
    new_model_section,
    run_folder,
)
from napari_segloss.samples import load_sample, sample_pairs_dir


def _layers(rgb: bool = True) -> LayerData:
    image, mask = load_sample("kvasir", 0)
    return LayerData(image=image if rgb else image[..., 0], mask=mask, rgb=rgb)


def test_request_needs_exactly_one_data_source(tmp_path):
    with pytest.raises(ValueError, match="either layers or folder"):
        TrainRequest(output=tmp_path)
    with pytest.raises(ValueError, match="either layers or folder"):
        TrainRequest(output=tmp_path, layers=_layers(), folder=tmp_path)


def test_run_folder_is_stamped_and_safe():
    assert run_folder("/runs", "ce+pm_dice", "20260101-000000") == Path(
        "/runs/20260101-000000-ce_pm_dice"
    )
    assert run_folder("~/r", "dice").parent == Path("~/r").expanduser()


def test_build_config_from_layers_and_from_a_folder(tmp_path):
    req = TrainRequest(
        output=tmp_path / "run", layers=_layers(), loss="ce+pm_dice",
        loss_params={"pm_dice": {"gamma": 2.0}}, size=64, epochs=3, lr=1e-3, device="cpu",
        encoder_weights="none",
    )  # fmt: skip
    cfg = build_config(req, new_model_section(req, 3, 1))
    assert cfg.model.encoder_weights is None and cfg.model.in_channels == 3
    assert cfg.data.size == (64, 64) and cfg.loss.params == {"pm_dice": {"gamma": 2.0}}
    assert cfg.train.num_workers == 0 and cfg.train.amp is False and cfg.train.epochs == 3
    assert cfg.optim.lr == 1e-3 and cfg.output == tmp_path / "run"
    assert cfg.data.class_names is None  # layers without names
    named = TrainRequest(
        output=tmp_path / "run",
        layers=LayerData(np.zeros((8, 8)), np.zeros((8, 8), np.uint8), class_names=("bg", "RV")),
    )
    assert build_config(named, new_model_section(named, 1, 2)).data.class_names == ["bg", "RV"]
    # a layer naming labels its mask lacks (ACDC's names, labels 0-2 drawn): the first three;
    # one naming too few: none (data.class_names must name every label)
    acdc = ("background", "RV", "MYO", "LV")
    for names, classes, expected in ((acdc, 3, ["background", "RV", "MYO"]), (("bg",), 2, None)):
        layers = LayerData(np.zeros((8, 8)), np.zeros((8, 8), np.uint8), class_names=names)
        req = TrainRequest(output=tmp_path / "run", layers=layers)
        assert build_config(req, new_model_section(req, 1, classes)).data.class_names == expected
    folder = TrainRequest(output=tmp_path / "r2", folder=tmp_path, folder_kind="nifti", size=None)
    cfg = build_config(folder, new_model_section(folder, 1, 4))
    assert cfg.data.kind == "nifti" and cfg.data.masks == "labels" and cfg.data.size is None
    with pytest.raises(ConfigError, match=r"train\.epochs"):
        build_config(TrainRequest(output=tmp_path, folder=tmp_path, epochs=0), {})


def test_checkpoint_model_section_checks_the_data():
    model = ModelConfig(arch="Unet", encoder="resnet18", in_channels=3, classes=1)
    assert checkpoint_model_section(model, 3, 1)["encoder"] == "resnet18"
    with pytest.raises(ConfigError, match="checkpoint: expects 3 input channel"):
        checkpoint_model_section(model, 1, 1)
    with pytest.raises(ConfigError, match="labels up to 3"):
        checkpoint_model_section(model, 3, 4)


def test_prepare_layers_and_folder(tmp_path):
    from napari_segloss.engine.prepare import prepare_request

    rng = np.random.default_rng(0)
    frames = rng.integers(0, 255, (3, 40, 48, 3), dtype=np.uint8)  # three RGB frames
    masks = (rng.random((3, 40, 48)) > 0.7).astype(np.uint8)
    stack = TrainRequest(
        output=tmp_path / "run",
        layers=LayerData(frames, masks, rgb=True),
        size=32,
        encoder="resnet18",
    )
    run = prepare_request(stack)
    train_ds, val_ds = run.datasets
    assert (len(train_ds), len(val_ds)) == (2, 1)  # the last frame validates
    assert run.config.model.in_channels == 3 and run.config.model.classes == 1
    assert tuple(val_ds[0][0].shape) == (3, 32, 32)  # resized to size x size, channels first
    # validation 0: every frame trains and none validates, as config.yaml records
    no_val = prepare_request(
        TrainRequest(
            output=tmp_path / "nv",
            layers=LayerData(frames, masks, rgb=True),
            size=32,
            encoder="resnet18",
            val_fraction=0.0,
        )
    )
    assert no_val.config.data.val_fraction == 0.0
    assert len(no_val.datasets[0]) == 3 and no_val.datasets[1] is None
    folder = TrainRequest(output=tmp_path / "f", folder=sample_pairs_dir("kvasir_train"))
    run = prepare_request(folder)
    assert run.datasets is None and run.init_checkpoint is None
    assert run.config.data.root == sample_pairs_dir("kvasir_train")


def test_prepare_refuses_a_checkpoint_that_does_not_fit(tmp_path):
    from napari_segloss.engine.checkpoint import CheckpointError
    from napari_segloss.engine.prepare import prepare_request

    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    req = TrainRequest(output=tmp_path / "run", layers=_layers(), checkpoint=bad)
    with pytest.raises(CheckpointError, match=r"bad\.pt"):
        prepare_request(req)
    grey = TrainRequest(
        output=tmp_path / "run", layers=LayerData(np.zeros((8, 8)), np.zeros((8, 8), np.uint8))
    )
    assert prepare_request(grey).config.model.in_channels == 1


def _label_folder(root: Path, masks: list[list[int]]) -> Path:
    from PIL import Image

    for folder in ("images", "masks"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    for i, labels in enumerate(masks):
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(root / "images" / f"{i:02d}.png")
        mask = np.zeros((8, 8), np.uint8)
        mask.flat[: len(labels)] = labels
        Image.fromarray(mask).save(root / "masks" / f"{i:02d}.png")
    return root


def test_prepare_folder_reads_every_mask_for_the_classes(tmp_path):
    """The classes of a new model came from the first 8 masks: a class first seen in the 10th
    mask failed at the data check with 'set model.classes', which the panel has no control for."""
    from napari_segloss.engine.prepare import prepare_request

    root = _label_folder(tmp_path / "data", [[0, 1]] * 9 + [[0, 1, 2]])
    run = prepare_request(TrainRequest(output=tmp_path / "run", folder=root))
    assert run.config.model.classes == 3


def test_prepare_folder_refuses_label_gaps_as_for_a_layer(tmp_path):
    """Masks {0, 2, 5} built a 6-class model from a folder but were refused from a layer."""
    from napari_segloss.engine.prepare import prepare_request

    root = _label_folder(tmp_path / "data", [[0, 2], [0, 5]])
    with pytest.raises(ValueError, match=r"masks of folder .*labels \{0, 2, 5\}.*relabel"):
        prepare_request(TrainRequest(output=tmp_path / "run", folder=root))

"""Config loading, overrides and one-line errors (napari_segloss.engine.config)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from napari_segloss.engine.config import (
    ConfigError,
    TrainConfig,
    load_config,
    resolve_output,
    save_config,
)

DESIGN_YAML = """
data:  {kind: folder, root: /data/kvasir, images: images, masks: masks, val_fraction: 0.1, size: [320, 320], crop: [256, 256]}
model: {arch: Unet, encoder: resnet34, encoder_weights: null, in_channels: 3, classes: 1}
loss:  {name: pm_dice, params: {gamma: 1.0}}
optim: {name: adam, lr: 5.0e-4, weight_decay: 1.0e-4, schedule: poly, power: 0.9}
train: {epochs: 50, batch_size: 8, amp: true, seed: 0, device: auto, num_workers: 2}
output: runs/NAME
"""


def test_design_md_example_loads(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(DESIGN_YAML)
    cfg = load_config(path)
    assert cfg.data.size == (320, 320) and cfg.data.crop == (256, 256)
    assert cfg.data.root == Path("/data/kvasir")
    assert cfg.model.encoder_weights is None
    assert cfg.loss.params == {"gamma": 1.0}
    assert cfg.optim.lr == pytest.approx(5e-4) and cfg.optim.power == pytest.approx(0.9)
    assert cfg.train.epochs == 50 and cfg.train.amp is True
    assert cfg.output == Path("runs/NAME")
    # Same result from a str path and from the parsed dict.
    assert load_config(str(path)) == cfg == load_config(yaml.safe_load(DESIGN_YAML))


def test_defaults_follow_pm_dice_protocol() -> None:
    cfg = load_config({"data": {"root": "x"}})
    assert (cfg.model.arch, cfg.model.encoder, cfg.model.encoder_weights) == (
        "Unet",
        "resnet34",
        None,
    )
    assert (cfg.optim.name, cfg.optim.lr, cfg.optim.weight_decay) == ("adam", 5e-4, 1e-4)
    assert (cfg.optim.schedule, cfg.optim.power) == ("poly", 0.9)
    assert cfg.loss.name == "pm_dice"
    assert cfg.data.val_fraction == 0.1 and cfg.data.slices == "2d" and cfg.data.cache is True
    t = cfg.train
    assert (t.batch_size, t.seed, t.device, t.num_workers, t.val_every, t.log_every) == (
        8,
        0,
        "auto",
        2,
        1,
        10,
    )
    assert t.channels_last and t.deterministic


@pytest.mark.parametrize(
    ("override", "path", "expected"),
    [
        ("train.epochs=3", ("train", "epochs"), 3),
        ("optim.lr=1e-3", ("optim", "lr"), 1e-3),
        ("data.size=[64, 48]", ("data", "size"), (64, 48)),
        ("data.size=64", ("data", "size"), (64, 64)),
        ("loss.params.gamma=2", ("loss", "params"), {"gamma": 2}),
        ("model.kwargs={encoder_depth: 3}", ("model", "kwargs"), {"encoder_depth": 3}),
        ("model.encoder_weights=null", ("model", "encoder_weights"), None),
        ("train.amp=false", ("train", "amp"), False),
        ("output=runs/x", ("output",), Path("runs/x")),
        # YAML 1.1 reads 1e-6 (no dot) as a string; untyped loss params must still get a float.
        ("loss.params.eps=1e-6", ("loss", "params"), {"eps": 1e-6}),
        (
            "loss.params={eps: 1E-6, gamma: [1, 2e0]}",
            ("loss", "params"),
            {"eps": 1e-6, "gamma": [1, 2.0]},
        ),
        ("data.class_names=[a, 1e3x]", ("data", "class_names"), ["a", "1e3x"]),
    ],
)
def test_overrides(override: str, path: tuple[str, ...], expected: object) -> None:
    cfg = load_config({"data": {"root": "x"}}, [override])
    value: object = cfg
    for part in path:
        value = getattr(value, part)
    assert value == expected


def test_overrides_do_not_mutate_the_source_dict() -> None:
    src = {"data": {"root": "x"}, "loss": {"params": {"gamma": 1.0}}}
    load_config(src, ["loss.params.gamma=3", "data.size=8"])
    assert src == {"data": {"root": "x"}, "loss": {"params": {"gamma": 1.0}}}


@pytest.mark.parametrize(
    ("tree", "overrides", "must_contain"),
    [
        (
            {"data": {"root": "x", "foo": 1}},
            [],
            ["'data.foo'", "unknown key", "allowed:", "val_fraction"],
        ),
        ({"data": {"root": "x"}, "bogus": 1}, [], ["'bogus'", "unknown key", "optim"]),
        (  # a typo gets the closest key(s), as unknown loss names do, and the allowed list
            {"data": {"root": "x"}},
            ["train.epoch=3"],
            ["'train.epoch'", "unknown key; did you mean 'train.epochs'?", "allowed: epochs,"],
        ),
        (
            {"data": {"root": "x", "augmentation": {"hflp": 0.1}}},
            [],
            ["did you mean 'data.augmentation.hflip'", "allowed: hflip"],
        ),
        ({"data": {"root": "x"}, "trian": {}}, [], ["'trian'", "did you mean 'train'?"]),
        (  # a key at the wrong level is not a typo: say which section it belongs in
            {"data": {"root": "x"}, "train": {"lr": 0.1}},
            [],
            ["'train.lr': unknown key; 'lr' belongs in another section: 'optim.lr'", "allowed:"],
        ),
        (
            {"data": {"root": "x"}},
            ["epochs=3"],
            ["'epochs' belongs in another section: 'train.epochs'"],
        ),
        (
            {"data": {"root": "x"}},
            ["train.zoom=[1, 2]"],
            ["belongs in another section: 'data.augmentation.zoom'"],
        ),
        (
            {"data": {"root": "x"}, "train": {"epochs": "ten"}},
            [],
            ["'train.epochs'", "integer", "'ten'"],
        ),
        (
            {"data": {"root": "x"}, "train": {"epochs": 0}},
            [],
            ["'train.epochs'", "greater than or equal to 1"],
        ),
        ({"train": {}}, [], ["'data'", "missing"]),
        ({"data": {"root": "x", "size": [1, 2, 3]}}, [], ["'data.size'", "[1, 2, 3]"]),
        ({"data": {"root": "x", "size": [0, 4]}}, [], ["'data.size'", "positive"]),
        (
            {"data": {"root": "x", "kind": "zarr"}},
            [],
            ["'data.kind'", "'folder' or 'nifti'", "'zarr'"],
        ),
        (
            {"data": {"root": "x"}, "train": {"device": "gpu"}},
            [],
            ["'train.device'", "cuda:N", "'gpu'"],
        ),
        ({"data": {"root": "x"}, "optim": {"lr": -1}}, [], ["'optim.lr'", "greater than 0"]),
        (
            {"data": {"root": "x"}, "optim": {"name": "sgd"}},
            [],
            ["'optim.name'", "'adam' or 'adamw'"],
        ),
        ({"data": {"root": "x"}}, ["train.epochs"], ["'train.epochs'", "key=value"]),
        (
            {"data": {"root": "x"}, "train": {"epochs": 5}},
            ["train.epochs.x=1"],
            ["'train.epochs'", "not a section"],
        ),
        ({"data": {"root": "x"}}, ["train.epochs.x=1"], ["'train.epochs'", "integer"]),
        ({"data": {"root": "x"}}, ["train.epochs=[1"], ["train.epochs=[1", "YAML"]),
        (
            {"data": {"root": "x"}},
            ["data.augmentation.zoom=[1.2, 0.8]"],
            ["'data.augmentation.zoom'"],
        ),
        (  # a crop larger than the resize would train on mostly zero padding
            {"data": {"root": "x"}},
            ["data.size=64", "data.crop=[128,128]"],
            ["'data.crop'", "data.crop [128, 128] with data.size [64, 64]", "data.crop=null"],
        ),
        (  # one number given as a list: not "data.size.1: required key is missing"
            {"data": {"root": "x"}},
            ["data.size=[64]"],
            ["'data.size'", "[height, width]", "[64]"],
        ),
        (  # one axis is enough
            {"data": {"root": "x", "size": [64, 128], "crop": [96, 96]}},
            [],
            ["'data.crop'", "data.crop [96, 96] with data.size [64, 128]"],
        ),
        (  # the background left out (as evaluate --class-names takes them): RV read as MYO
            {"data": {"root": "x", "class_names": ["RV", "MYO", "LV"]}, "model": {"classes": 4}},
            [],
            [
                "data.class_names: expected 4 names, one per label 0-3 with the background first",
                "got 3: ['RV', 'MYO', 'LV']",
            ],
        ),
        (  # binary: background and foreground
            {"data": {"root": "x", "class_names": ["polyp"]}},
            [],
            ["data.class_names: expected 2 names", "(model.classes 1, binary)"],
        ),
        ({"data": {"root": "x"}}, ["data.class_names=[bg, polyp, x]"], ["got 3"]),
    ],
)
def test_bad_configs_give_one_line_naming_the_key(
    tree: dict, overrides: list[str], must_contain: list[str]
) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tree, overrides)
    msg = str(info.value)
    assert "\n" not in msg
    for part in must_contain:
        assert part in msg, (part, msg)


def test_unknown_key_without_a_close_match_suggests_nothing() -> None:
    with pytest.raises(ConfigError) as info:
        load_config({"data": {"root": "x"}}, ["train.zzz=1"])
    assert "did you mean" not in str(info.value) and "(allowed: epochs," in str(info.value)


def test_crop_up_to_the_resize_is_accepted() -> None:
    assert load_config({"data": {"root": "x", "size": 64, "crop": 64}}).data.crop == (64, 64)
    assert load_config({"data": {"root": "x", "size": [64, 96], "crop": [32, 96]}}).data.crop
    # without a resize the images keep their own sizes: nothing to compare with here
    assert load_config({"data": {"root": "x", "crop": [512, 512]}}).data.crop == (512, 512)


def test_missing_and_invalid_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: {root: [unclosed\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml.*invalid YAML"):
        load_config(bad)
    listy = tmp_path / "list.yaml"
    listy.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_config(listy)


def test_config_error_is_a_value_error() -> None:
    assert issubclass(ConfigError, ValueError)


def test_save_config_round_trip(tmp_path: Path) -> None:
    cfg = load_config(
        {
            "data": {"root": "d", "size": 32},
            "loss": {"name": "ce+pm_dice", "params": {"weights": [1, 2]}},
        }
    )
    save_config(cfg, tmp_path / "config.yaml")
    again = load_config(tmp_path / "config.yaml")
    assert again == cfg
    assert isinstance(again, TrainConfig)


@pytest.mark.parametrize(
    ("output", "expected"),
    [
        ("runs/{loss}-seed{seed}", "runs/ce_pm_dice-seed3"),
        ("out/{arch}_{encoder}", "out/Unet_resnet34"),
        ("plain/dir", "plain/dir"),
    ],
)
def test_resolve_output(output: str, expected: str) -> None:
    cfg = load_config(
        {"data": {"root": "x"}, "loss": {"name": "ce+pm_dice"}, "output": output}, ["train.seed=3"]
    )
    assert resolve_output(cfg) == Path(expected)


def test_resolve_output_unknown_placeholder() -> None:
    cfg = load_config({"data": {"root": "x"}, "output": "runs/{name}"})
    with pytest.raises(ConfigError, match=r"'output'.*\{name\}|'output'.*'name'"):
        resolve_output(cfg)

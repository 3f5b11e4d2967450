"""What ``segloss`` refuses: one table of careless-user cases (issue "nothing silently wrong").

Each case builds its inputs in a fresh folder, runs the command in this process and asserts:
the exit code (2), one ``segloss <command>: error: ...`` line on stderr with fragments that name
the file or config key at fault (no traceback), and that nothing was written or changed: the
case's folder and the shared fixtures (checkpoints, a finished run, a finished comparison) are
byte-for-byte and mtime-for-mtime as before.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
import tifffile
import torch
import yaml
from PIL import Image

from napari_segloss.cli import main
from napari_segloss.engine.compare import run_compare
from napari_segloss.engine.config import save_config
from napari_segloss.engine.rundir import RunLock

TINY_KW = {"encoder_depth": 3, "decoder_channels": [16, 8, 4]}

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # see tests/conftest.py


# ------------------------------------------------------------------------------ fixtures


def write_pairs(
    root: Path, n: int = 4, size: int = 32, *, mask_ext: str = ".png", image_ext: str = ".png"
) -> Path:
    """``n`` RGB images with a red square and {0, 255} masks marking it."""
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in range(n):
        img = rng.integers(0, 120, (size, size, 3), dtype=np.uint8)
        mask = np.zeros((size, size), np.uint8)
        mask[8 : 16 + i, 8:20] = 255
        img[mask > 0, 0] = 255
        Image.fromarray(img).save(root / "images" / f"im{i}{image_ext}")
        Image.fromarray(mask).save(root / "masks" / f"im{i}{mask_ext}")
    return root


def tiny_config(data_root: Path | str, output: Path, **extra: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "data": {"root": str(data_root), "val_fraction": 0.25, "augment": False},
        "model": {"encoder": "mobilenet_v2", "encoder_weights": None, "kwargs": TINY_KW},
        "loss": {"name": "pm_dice", "params": {"gamma": 1.0}},
        "train": {"epochs": 1, "batch_size": 2, "num_workers": 0, "device": "cpu"},
        "output": str(output),
    }
    for section, values in extra.items():
        cfg[section] = {**cfg.get(section, {}), **values}
    return cfg


def write_yaml(path: Path, tree: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(tree))
    return path


class _Evil:
    """Pickles to a call of os.system: what a malicious checkpoint carries."""

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, ("echo this must never run",))


@dataclass
class Shared:
    """Module-wide inputs the cases read (and must leave untouched)."""

    root: Path
    data: Path
    grey_uint8: Path
    grey_minmax: Path
    rgb_uint8: Path
    finished_run: Path
    finished_config: Path
    compare_out: Path
    compare_config: Path


@pytest.fixture(scope="module")
def shared(
    tmp_path_factory: pytest.TempPathFactory, write_checkpoint: Callable[..., Path]
) -> Shared:
    root = tmp_path_factory.mktemp("shared")
    data = write_pairs(root / "data")
    ckpts = root / "ckpts"
    ckpts.mkdir()
    run = root / "finished"
    config = write_yaml(root / "finished.yaml", tiny_config(data, run))
    assert main(["train", "--config", str(config), "--no-progress"]) == 0
    # a finished comparison (one cell), made with train.epochs=1
    compare_out = root / "compare"
    compare_config = write_yaml(root / "compare.yaml", tiny_config(data, root / "unused"))

    def fake_train(cfg: Any, resume: bool = False) -> None:
        out = Path(cfg.output)
        out.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out / "config.yaml")
        per_class = {"1": {"dice": 0.5, "iou": 0.4, "precision": 0.5, "recall": 0.5, "nsd": 0.5}}
        (out / "eval.json").write_text(json.dumps({"per_class": per_class}))

    tree = yaml.safe_load(compare_config.read_text())
    run_compare(tree, ["dice"], [0], compare_out, train_fn=fake_train, log=lambda s: None)
    return Shared(
        root=root,
        data=data,
        grey_uint8=write_checkpoint(ckpts / "grey_uint8.pt", 1),
        grey_minmax=write_checkpoint(ckpts / "grey_minmax.pt", 1, scale="minmax"),
        rgb_uint8=write_checkpoint(ckpts / "rgb_uint8.pt", 3),
        finished_run=run,
        finished_config=config,
        compare_out=compare_out,
        compare_config=compare_config,
    )


def snapshot(*roots: Path) -> dict[str, tuple[int, bytes]]:
    """Every file under ``roots``: (mtime in ns, content)."""
    out = {}
    for root in roots:
        for p in sorted(root.rglob("*")):
            if p.is_file():
                out[str(p)] = (p.stat().st_mtime_ns, p.read_bytes())
            elif p.is_dir():
                out[str(p)] = (0, b"<dir>")
    return out


# ------------------------------------------------------------------------------ the cases


@dataclass
class W:
    """A case's workspace: its own folder, the shared fixtures, locks held during the case."""

    dir: Path
    s: Shared
    locks: list[RunLock] = field(default_factory=list)

    def predict(self, ckpt: Path, *inputs: Path, extra: tuple[str, ...] = ()) -> list[str]:
        out = self.dir / "out"
        argv = ["predict", "--checkpoint", str(ckpt), "--input", *map(str, inputs)]
        return [*argv, "--output", str(out), "--device", "cpu", *extra]

    def train(self, root: Path | str | None = None, *overrides: str, **extra: Any) -> list[str]:
        tree = tiny_config(root or self.s.data, self.dir / "run", **extra)
        config = write_yaml(self.dir / "config.yaml", tree)
        argv = ["train", "--config", str(config), "--no-progress"]
        return [*argv, "--set", *overrides] if overrides else argv


Build = Callable[[W], tuple[list[str], list[str]]]
CASES: dict[str, Build] = {}


def case(build: Build) -> Build:
    CASES[build.__name__] = build
    return build


def _png(path: Path, array: np.ndarray) -> Path:
    Image.fromarray(array).save(path)
    return path


# -- predict


@case
def predict_colour_image_to_grey_model(w: W) -> tuple[list[str], list[str]]:
    img = _png(w.dir / "photo.png", np.zeros((16, 20, 3), np.uint8))
    frags = ["photo.png", "(16, 20, 3)", "colour", "takes 1 channel", "--to-grey"]
    return w.predict(w.s.grey_uint8, img), frags


@case
def predict_rgba_image_to_grey_model(w: W) -> tuple[list[str], list[str]]:
    img = _png(w.dir / "rgba.png", np.full((16, 20, 4), 200, np.uint8))
    return w.predict(w.s.grey_uint8, img), ["rgba.png", "colour", "1 channel"]


@case
def predict_one_bad_file_among_good_ones(w: W) -> tuple[list[str], list[str]]:
    # the good file comes first: nothing may be written for it either
    (w.dir / "in").mkdir()
    _png(w.dir / "in" / "a_grey.png", np.zeros((16, 20), np.uint8))
    _png(w.dir / "in" / "b_colour.png", np.zeros((16, 20, 3), np.uint8))
    return w.predict(w.s.grey_uint8, w.dir / "in"), ["b_colour.png", "colour"]


@case
def predict_nan_in_nifti(w: W) -> tuple[list[str], list[str]]:
    vol = np.random.default_rng(0).random((12, 10, 3)).astype(np.float32)
    vol[2:9, 4, 1] = np.nan
    nib.save(nib.Nifti1Image(vol, np.eye(4)), str(w.dir / "scan.nii.gz"))
    return w.predict(w.s.grey_minmax, w.dir / "scan.nii.gz"), ["scan.nii.gz", "7 non-finite"]


@case
def predict_inf_in_float_tiff(w: W) -> tuple[list[str], list[str]]:
    img = np.ones((16, 20), np.float32)
    img[0, :3] = np.inf
    tifffile.imwrite(w.dir / "float.tif", img)
    return w.predict(w.s.grey_minmax, w.dir / "float.tif"), ["float.tif", "3 non-finite"]


@case
def predict_16bit_tiff_to_8bit_model(w: W) -> tuple[list[str], list[str]]:
    tifffile.imwrite(w.dir / "deep.tif", np.full((16, 20), 1000, np.uint16))
    return w.predict(w.s.grey_uint8, w.dir / "deep.tif"), ["deep.tif", "uint16", "8-bit"]


@case
def predict_truncated_jpeg(w: W) -> tuple[list[str], list[str]]:
    _png(w.dir / "full.jpg", np.full((64, 64, 3), 90, np.uint8))
    data = (w.dir / "full.jpg").read_bytes()
    (w.dir / "cut.jpg").write_bytes(data[: len(data) // 3])
    (w.dir / "full.jpg").unlink()
    return w.predict(w.s.rgb_uint8, w.dir / "cut.jpg"), ["cut.jpg", "cannot read"]


@case
def predict_empty_input_folder(w: W) -> tuple[list[str], list[str]]:
    (w.dir / "in").mkdir()
    return w.predict(w.s.rgb_uint8, w.dir / "in"), ["in", "holds no image"]


@case
def predict_missing_input(w: W) -> tuple[list[str], list[str]]:
    return w.predict(w.s.rgb_uint8, w.dir / "nope.png"), ["input not found", "nope.png"]


@case
def predict_missing_checkpoint(w: W) -> tuple[list[str], list[str]]:
    img = _png(w.dir / "a.png", np.zeros((16, 20, 3), np.uint8))
    return w.predict(w.dir / "missing.pt", img), ["checkpoint not found", "missing.pt"]


@case
def predict_empty_checkpoint(w: W) -> tuple[list[str], list[str]]:
    (w.dir / "zero.pt").write_bytes(b"")
    img = _png(w.dir / "a.png", np.zeros((16, 20, 3), np.uint8))
    return w.predict(w.dir / "zero.pt", img), ["zero.pt", "empty (0 bytes)"]


@case
def predict_truncated_checkpoint(w: W) -> tuple[list[str], list[str]]:
    data = w.s.rgb_uint8.read_bytes()
    (w.dir / "half.pt").write_bytes(data[: len(data) // 2])
    img = _png(w.dir / "a.png", np.zeros((16, 20, 3), np.uint8))
    return w.predict(w.dir / "half.pt", img), ["half.pt", "cannot read"]


@case
def predict_malicious_pickle(w: W) -> tuple[list[str], list[str]]:
    torch.save({"model": _Evil(), "meta": {}}, w.dir / "evil.pt")
    img = _png(w.dir / "a.png", np.zeros((16, 20, 3), np.uint8))
    return w.predict(w.dir / "evil.pt", img), ["evil.pt", "executable", "refused for safety"]


@case
def predict_bare_state_dict(w: W) -> tuple[list[str], list[str]]:
    torch.save({"conv.weight": torch.ones(2)}, w.dir / "weights.pt")
    img = _png(w.dir / "a.png", np.zeros((16, 20, 3), np.uint8))
    return w.predict(w.dir / "weights.pt", img), ["weights.pt", "not a napari-segloss checkpoint"]


# -- train: the config


@case
def train_config_missing(w: W) -> tuple[list[str], list[str]]:
    return ["train", "--config", str(w.dir / "nope.yaml")], ["config file not found", "nope.yaml"]


@case
def train_yaml_python_tag(w: W) -> tuple[list[str], list[str]]:
    text = yaml.safe_dump(tiny_config(w.s.data, w.dir / "run"))
    text += 'evil: !!python/object/apply:os.system ["echo this must never run"]\n'
    (w.dir / "tagged.yaml").write_text(text)
    return ["train", "--config", str(w.dir / "tagged.yaml")], ["tagged.yaml", "invalid YAML"]


@case
def train_unknown_key(w: W) -> tuple[list[str], list[str]]:
    frags = ["'train.epoch'", "unknown key", "did you mean 'train.epochs'?", "allowed:"]
    return w.train(None, "train.epoch=3"), frags


@case
def train_wrong_type(w: W) -> tuple[list[str], list[str]]:
    return w.train(None, "train.epochs=ten"), ["'train.epochs'", "integer"]


@case
def train_unknown_loss(w: W) -> tuple[list[str], list[str]]:
    return w.train(None, "loss.name=pm_dicee"), ["'loss.name'", "pm_dicee"]


@case
def train_loss_switched_keeps_the_old_loss_params(w: W) -> tuple[list[str], list[str]]:
    # the config's pm_dice gamma means nothing to ce: the message says where it comes from
    frags = ["'loss.params'", "'ce' got unknown parameter(s) ['gamma']", "come from loss.params"]
    return w.train(None, "loss.name=ce"), [*frags, "--set 'loss.params={}' loss.params.KEY="]


@case
def train_compound_switched_keeps_the_old_loss_params(w: W) -> tuple[list[str], list[str]]:
    # focal and pm_dice both have a gamma: the config's flat one belongs to neither term alone;
    # loss.params.pm_dice.gamma=1 alone added to it and failed the same way
    frags = ["'loss.params'", "'gamma' means different things", "come from loss.params"]
    argv = w.train(None, "loss.name=focal+pm_dice", "loss.params.pm_dice.gamma=1")
    return argv, [*frags, "--set 'loss.params={}' loss.params.KEY="]


@case
def train_unknown_encoder(w: W) -> tuple[list[str], list[str]]:
    return w.train(None, "model.encoder=resnet999"), ["'model.encoder'", "resnet999"]


@case
def train_data_root_placeholder(w: W) -> tuple[list[str], list[str]]:
    return w.train("???"), ["'data.root' is not set", "--set data.root="]


@case
def train_data_root_missing(w: W) -> tuple[list[str], list[str]]:
    return w.train(w.dir / "no_such_folder"), ["'data.root'", "no_such_folder"]


@case
def train_crop_not_divisible(w: W) -> tuple[list[str], list[str]]:
    argv = w.train(None, "model.arch=FPN", "model.kwargs={}", "data.crop=[24,24]")
    return argv, ["'data.crop'", "[24, 24] must be divisible by 32", "[32, 32]"]


@case
def train_acdc_config_on_the_bundled_volume_without_splits(w: W) -> tuple[list[str], list[str]]:
    config = Path(__file__).resolve().parents[2] / "training" / "configs" / "acdc_pm_dice.yaml"
    argv = ["train", "--config", str(config), "--no-progress", "--set", "data.root=bundled:acdc"]
    frags = ["'data.split_file'", "not found: 'splits'", "pass data.split_file=null"]
    return [*argv, f"output={w.dir / 'run'}"], frags


# -- train: the data


@case
def train_validation_split_comes_out_empty(w: W) -> tuple[list[str], list[str]]:
    # one volume cannot give both a training and a validation volume: training on it would
    # report the last weights as "best" and write no eval.json
    data = {"kind": "nifti", "root": "bundled:acdc", "masks": "labels", "val_fraction": 0.5}
    argv = w.train(None, "model.in_channels=1", data=data)
    frags = ["'data.val_fraction'", "validation set is empty", "1 volume", "val_fraction 0.5"]
    return argv, [*frags, "data.val_fraction=0 to train without validation"]


@case
def train_image_without_mask(w: W) -> tuple[list[str], list[str]]:
    root = write_pairs(w.dir / "data")
    _png(root / "images" / "lonely.png", np.zeros((32, 32, 3), np.uint8))
    return w.train(root), ["lonely.png", "without a mask"]


@case
def train_image_mask_size_mismatch(w: W) -> tuple[list[str], list[str]]:
    root = write_pairs(w.dir / "data")
    _png(root / "masks" / "im2.png", np.zeros((30, 32), np.uint8))
    return w.train(root), ["im2.png", "mask size"]


@case
def train_label_out_of_range(w: W) -> tuple[list[str], list[str]]:
    root = write_pairs(w.dir / "data")
    mask = np.zeros((32, 32), np.uint8)
    mask[2:6, 2:6] = 2
    _png(root / "masks" / "im1.png", mask)
    # the mask file is named, not its image (both are called im1.png here)
    return w.train(root), [os.path.join("masks", "im1.png"), "label 2", "model.classes"]


@case
def train_rgba_images_for_grey_model(w: W) -> tuple[list[str], list[str]]:
    root = write_pairs(w.dir / "data")
    for p in (root / "images").iterdir():
        rgb = np.asarray(Image.open(p))
        _png(p, np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)]))
    return w.train(root, "model.in_channels=1"), ["im", "3 channel(s)", "in_channels=1"]


@case
def train_16bit_images_with_uint8_normalize(w: W) -> tuple[list[str], list[str]]:
    root = write_pairs(w.dir / "data")
    for i in range(4):
        tifffile.imwrite(root / "images" / f"im{i}.tif", np.full((32, 32), 900, np.uint16))
        (root / "images" / f"im{i}.png").unlink()
    argv = w.train(root, "data.normalize=uint8", "model.in_channels=1")
    return argv, ["im0.tif", "uint16", "normalize='uint8'"]


@case
def train_truncated_jpeg_image(w: W) -> tuple[list[str], list[str]]:
    root = write_pairs(w.dir / "data")
    _png(root / "images" / "im3.jpg", np.full((32, 32, 3), 90, np.uint8))
    data = (root / "images" / "im3.jpg").read_bytes()
    (root / "images" / "im3.jpg").write_bytes(data[: len(data) // 3])
    (root / "images" / "im3.png").unlink()
    return w.train(root), ["im3.jpg", "cannot read"]


@case
def train_empty_images_folder(w: W) -> tuple[list[str], list[str]]:
    root = write_pairs(w.dir / "data")
    for p in (root / "images").iterdir():
        p.unlink()
    return w.train(root), ["images folder", "contains no files"]


@case
def train_binary_masks_saved_as_jpeg(w: W) -> tuple[list[str], list[str]]:
    root = write_pairs(w.dir / "data")
    for p in sorted((root / "masks").iterdir()):
        mask = (np.asarray(Image.open(p)) > 0).astype(np.uint8)  # {0, 1}
        Image.fromarray(mask).save(p.with_suffix(".jpg"), quality=95)
        p.unlink()
    return w.train(root), ["im0.jpg", "would read as empty", "PNG or TIFF"]


@case
def train_nan_in_nifti_volume(w: W) -> tuple[list[str], list[str]]:
    root = w.dir / "vols"
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    for name in ("a", "b"):
        vol = np.random.default_rng(1).random((32, 32, 2)).astype(np.float32)
        if name == "b":
            vol[:3, 0, 0] = np.nan
        lab = np.zeros((32, 32, 2), np.uint8)
        lab[8:20, 8:20] = 1
        nib.save(nib.Nifti1Image(vol, np.eye(4)), str(root / "images" / f"{name}.nii.gz"))
        nib.save(nib.Nifti1Image(lab, np.eye(4)), str(root / "labels" / f"{name}.nii.gz"))
    argv = w.train(root, "model.in_channels=1", data={"kind": "nifti", "masks": "labels"})
    return argv, ["b.nii.gz", "3 non-finite"]


# -- train: the run directory


@case
def train_into_a_busy_directory(w: W) -> tuple[list[str], list[str]]:
    w.locks.append(RunLock(w.dir / "run").acquire())  # as if another run were training there
    return w.train(), ["busy", f"pid {os.getpid()}", "choose another output"]


@case
def train_over_a_finished_run(w: W) -> tuple[list[str], list[str]]:
    config = str(w.s.finished_config)
    return ["train", "--config", config, "--no-progress"], ["already holds a run", "--resume"]


@case
def train_resume_with_a_changed_key(w: W) -> tuple[list[str], list[str]]:
    argv = ["train", "--config", str(w.s.finished_config), "--resume", "--no-progress"]
    frags = ["loss.params.gamma: saved 1.0, requested 3.0", "other settings", "train.epochs"]
    return [*argv, "--set", "loss.params.gamma=3.0"], frags


@case
def train_resume_without_a_checkpoint(w: W) -> tuple[list[str], list[str]]:
    return [*w.train(), "--resume"], ["resume: no checkpoint", "checkpoint.pt"]


@case
def train_resume_and_init_checkpoint_together(w: W) -> tuple[list[str], list[str]]:
    argv = [*w.train(), "--resume", "--init-checkpoint", str(w.s.rgb_uint8)]
    frags = ["--resume and --init-checkpoint cannot be combined"]
    return argv, frags


@case
def train_init_from_an_empty_checkpoint(w: W) -> tuple[list[str], list[str]]:
    (w.dir / "zero.pt").write_bytes(b"")
    return [*w.train(), "--init-checkpoint", str(w.dir / "zero.pt")], ["zero.pt", "empty"]


@case
def train_init_from_another_architecture(w: W) -> tuple[list[str], list[str]]:
    argv = [*w.train(), "--init-checkpoint", str(w.s.grey_uint8)]
    return argv, ["grey_uint8.pt", "model.in_channels: checkpoint 1 vs config 3"]


# -- compare and evaluate


@case
def compare_rerun_with_other_settings(w: W) -> tuple[list[str], list[str]]:
    argv = ["compare", "--config", str(w.s.compare_config), "--losses", "dice", "--seeds", "0"]
    argv += ["--output", str(w.s.compare_out), "--set", "train.epochs=2"]
    return argv, ["other settings", "train.epochs: saved 1, requested 2", "seed0"]


@case
def compare_into_a_busy_directory(w: W) -> tuple[list[str], list[str]]:
    w.locks.append(RunLock(w.dir / "grid").acquire())
    argv = ["compare", "--config", str(w.s.compare_config), "--losses", "dice", "--seeds", "0"]
    return [*argv, "--output", str(w.dir / "grid")], ["busy", "grid"]


@case
def compare_varies_the_loss_itself(w: W) -> tuple[list[str], list[str]]:
    argv = ["compare", "--config", str(w.s.compare_config), "--losses", "dice", "--seeds", "0"]
    return [*argv, "--output", str(w.dir / "grid"), "--set", "loss.name=ce"], ["loss.name"]


@case
def evaluate_prediction_without_ground_truth(w: W) -> tuple[list[str], list[str]]:
    (w.dir / "pred").mkdir()
    (w.dir / "gt").mkdir()
    _png(w.dir / "pred" / "orphan.png", np.zeros((8, 8), np.uint8))
    _png(w.dir / "gt" / "other.png", np.zeros((8, 8), np.uint8))
    argv = ["evaluate", "--pred", str(w.dir / "pred"), "--gt", str(w.dir / "gt")]
    return argv, ["without a ground truth", "orphan"]


@case
def evaluate_shape_mismatch(w: W) -> tuple[list[str], list[str]]:
    (w.dir / "pred").mkdir()
    (w.dir / "gt").mkdir()
    _png(w.dir / "pred" / "x.png", np.zeros((8, 8), np.uint8))
    _png(w.dir / "gt" / "x.png", np.zeros((8, 9), np.uint8))
    argv = ["evaluate", "--pred", str(w.dir / "pred"), "--gt", str(w.dir / "gt")]
    return argv, ["x:", "shape (8, 8)", "(8, 9)"]


@case
def evaluate_missing_folder(w: W) -> tuple[list[str], list[str]]:
    argv = ["evaluate", "--pred", str(w.dir / "nope"), "--gt", str(w.dir)]
    return argv, ["pred folder not found", "nope"]


def test_the_table_is_long_enough() -> None:
    assert len(CASES) >= 30


@pytest.mark.parametrize("name", sorted(CASES))
def test_refused_with_a_message_and_nothing_written(
    name: str, shared: Shared, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    w = W(tmp_path, shared)
    try:
        argv, fragments = CASES[name](w)
        capsys.readouterr()
        before = snapshot(tmp_path, shared.root)
        rc = main(argv)
        out, err = capsys.readouterr()
        after = snapshot(tmp_path, shared.root)
    finally:
        for lock in w.locks:
            lock.release()
    assert rc == 2, (out, err)
    assert "Traceback" not in err
    lines = [line for line in err.strip().splitlines() if line.startswith("segloss ")]
    assert len(lines) == 1 and lines[0].startswith(f"segloss {argv[0]}: error: "), err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    assert "weights_only" not in err  # never advise switching the pickle check off
    assert after == before, sorted(set(after) ^ set(before)) or "a file changed"

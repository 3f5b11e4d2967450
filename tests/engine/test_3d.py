"""3D patch training end to end: UNet3D, the NIfTI patch dataset, the loop, resume and predict.

Everything is tiny (a 2-level UNet3D with 4/8 channels, 4x32x32 patches of 48x40-pixel crops of
the bundled ACDC volume) so the whole module runs in seconds on one CPU thread.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
import torch

from napari_segloss.cli import main
from napari_segloss.data.datasets import DataError
from napari_segloss.data.factory import build_datasets
from napari_segloss.data.patches import NiftiPatchDataset
from napari_segloss.engine.checkpoint import load_checkpoint, load_model
from napari_segloss.engine.config import ConfigError, ModelConfig, load_config
from napari_segloss.engine.distributed import DistInfo
from napari_segloss.engine.inference import sliding_window_predict
from napari_segloss.engine.model import available_architectures, build_model, output_stride
from napari_segloss.engine.run_state import check_model_fits_data, prepare_run
from napari_segloss.engine.training import iter_train, train
from napari_segloss.engine.unet3d import UNet3D
from napari_segloss.samples import sample_files

TINY_3D = {
    "arch": "UNet3D",
    "encoder": "none",
    "in_channels": 1,
    "classes": 4,
    "kwargs": {"channels": [4, 8], "anisotropic_levels": 1},
}
PATCH = [4, 32, 32]


@pytest.fixture(autouse=True)
def _one_thread() -> Any:
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny convolutions: threads only add overhead on shared CPUs
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def acdc_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two volumes cut from the bundled ACDC sample around the heart (48 x 40 x 6 voxels in file
    order): the crop and its mirror image, so there is one volume to train and one to validate."""
    root = tmp_path_factory.mktemp("acdc3d")
    (root / "images").mkdir()
    (root / "labels").mkdir()
    img_path, lbl_path = sample_files("acdc")[0]
    img, lbl = nib.load(str(img_path)), nib.load(str(lbl_path))
    image, label = np.asanyarray(img.dataobj), np.asanyarray(lbl.dataobj)
    xs, ys = np.nonzero(label.max(axis=2))
    cx, cy = int(xs.mean()), int(ys.mean())
    box = (slice(cx - 24, cx + 24), slice(cy - 20, cy + 20))
    for k, flip in enumerate((False, True)):
        a, m = image[box], label[box]
        if flip:
            a, m = a[::-1], m[::-1]
        for folder, arr in (("images", a), ("labels", m)):
            out = nib.Nifti1Image(np.ascontiguousarray(arr), img.affine)
            out.header.set_zooms((1.5, 1.5, 10.0))
            nib.save(out, str(root / folder / f"patient{k}_frame01.nii.gz"))
    return root


def make_cfg(root: Path, out: Path, *overrides: str, **train_kw: Any) -> Any:
    t = {"epochs": 1, "batch_size": 2, "num_workers": 0, "log_every": 1}
    t.update(train_kw)
    return load_config(
        {
            "data": {
                "kind": "nifti",
                "root": str(root),
                "masks": "labels",
                "slices": "3d",
                "patch": PATCH,
                "patches_per_volume": 2,
                "patch_foreground": 0.5,
                "val_fraction": 0.5,
                "class_names": ["background", "RV", "MYO", "LV"],
            },
            "model": TINY_3D,
            "loss": {"name": "ce+pm_dice"},
            "train": t,
            "output": str(out),
        },
        list(overrides),
    )


@pytest.fixture(scope="module")
def trained(acdc_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "run3d"
    done = train(make_cfg(acdc_root, out), progress=False)
    assert not done.stopped, done.reason
    return out


def _synthetic_pair(root: Path, shape: tuple[int, int, int], seed: int = 0) -> tuple[Path, Path]:
    """A NIfTI pair (file order X, Y, Z) whose image is a function of its label."""
    rng = np.random.default_rng(seed)
    label = rng.integers(0, 3, shape).astype(np.uint8)
    image = (label * 60 + 10).astype(np.uint8)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "labels").mkdir(exist_ok=True)
    paths = (root / "images" / "vol.nii.gz", root / "labels" / "vol.nii.gz")
    for path, arr in zip(paths, (image, label), strict=True):
        nib.save(nib.Nifti1Image(arr, np.eye(4)), str(path))
    return paths


# -- UNet3D ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("shape", "kwargs"),
    [
        ((2, 1, 8, 32, 32), {"channels": [4, 8, 16]}),
        ((1, 1, 5, 17, 23), {"channels": [4, 8, 16]}),  # odd sizes: padded inside, cropped back
        ((1, 2, 3, 13, 9), {"channels": 4, "depth": 3, "anisotropic_levels": 2, "norm": "batch"}),
        ((1, 1, 1, 12, 10), {"channels": [4, 8], "anisotropic_levels": 1, "norm": "group"}),
    ],
)
def test_unet3d_keeps_the_input_size(shape: tuple[int, ...], kwargs: dict[str, Any]) -> None:
    model = UNet3D(in_channels=shape[1], classes=3, **kwargs)
    x = torch.randn(*shape, requires_grad=True)
    y = model(x)
    assert y.shape == (shape[0], 3, *shape[2:])
    y.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


def test_unet3d_anisotropic_levels_keep_z() -> None:
    model = UNet3D(channels=[2, 4, 8], anisotropic_levels=1)
    assert model.strides == [(1, 2, 2), (2, 2, 2)] and model.factor == (2, 4, 4)
    assert UNet3D(channels=4, depth=2).factor == (2, 2, 2)
    with pytest.raises(ValueError, match=r"anisotropic_levels must be in 0\.\.2"):
        UNet3D(channels=[2, 4, 8], anisotropic_levels=3)
    with pytest.raises(ValueError, match="depth=2 does not match"):
        UNet3D(channels=[2, 4, 8], depth=2)
    with pytest.raises(ValueError, match="expects \\(B, C, Z, Y, X\\)"):
        UNet3D(channels=[2, 4])(torch.zeros(1, 1, 8, 8))


def test_one_voxel_deepest_level_is_a_config_error(acdc_root: Path, tmp_path: Path) -> None:
    # instance norm over one voxel: torch raised at the first step, naming no config key
    net = UNet3D(1, 2, channels=[4, 8, 16])  # factor (4, 4, 4)
    with pytest.raises(ValueError, match=r"\[4, 4, 4\] input shrinks to one voxel"):
        net.check_input_size((4, 4, 4))
    net.check_input_size((5, 4, 4))  # (2, 1, 1) voxels: fine
    UNet3D(1, 2, channels=[4, 8, 16], norm="group").check_input_size((4, 4, 4))
    kwargs = "model.kwargs={channels: [4, 8, 16], anisotropic_levels: 0}"
    cfg = make_cfg(acdc_root, tmp_path / "x", "data.patch=[4, 4, 4]", kwargs)
    with pytest.raises(ConfigError, match=r"'data\.patch': a \[4, 4, 4\] input.*fewer levels"):
        prepare_run(cfg, DistInfo(), torch.device("cpu"))


def test_build_model_unet3d(tmp_path: Path) -> None:
    assert "UNet3D" in available_architectures()
    model = build_model(ModelConfig(**{**TINY_3D, "arch": "unet3d", "encoder": "resnet34"}))
    assert isinstance(model, UNet3D) and model.spatial_dims == 3  # encoder is ignored
    with pytest.raises(ConfigError, match=r"'model\.kwargs'.*UNet3D rejected \['bogus'\]"):
        build_model(ModelConfig(**{**TINY_3D, "kwargs": {"bogus": 1}}))
    with pytest.raises(ConfigError, match=r"'model\.kwargs'.*norm must be one of"):
        build_model(ModelConfig(**{**TINY_3D, "kwargs": {"norm": "layer"}}))
    with pytest.raises(ConfigError, match=r"'model\.encoder_weights'.*no downloadable"):
        build_model(ModelConfig(**{**TINY_3D, "encoder_weights": "imagenet"}))
    with pytest.raises(ConfigError, match=r"'model\.encoder_weights'.*file not found"):
        build_model(ModelConfig(**{**TINY_3D, "encoder_weights": str(tmp_path / "no.pt")}))
    # a local whole-model weights file is loaded
    torch.save(model.state_dict(), tmp_path / "w.pt")
    again = build_model(ModelConfig(**{**TINY_3D, "encoder_weights": str(tmp_path / "w.pt")}))
    for k, v in model.state_dict().items():
        assert torch.equal(v, again.state_dict()[k]), k


# -- the patch dataset -------------------------------------------------------------------------


def test_patch_dataset_shapes_and_determinism() -> None:
    pairs = sample_files("acdc")  # one (6, 216, 256) volume in napari order
    ds = NiftiPatchDataset(
        pairs, patch=(4, 32, 40), train=True, patches_per_volume=3, patch_foreground=1.0
    )
    stats = ds.validate(num_classes=4, in_channels=1)
    assert len(ds) == 3 and stats["sizes"] == [(4, 32, 40)] and stats["max_label"] == 3
    image, label = ds[(1, 7)]
    assert image.shape == (1, 4, 32, 40) and image.dtype == torch.float32
    assert label.shape == (4, 32, 40) and label.dtype == torch.int64
    assert (label > 0).any()  # patch_foreground=1: centred on the heart
    again = ds[(1, 7)]
    assert torch.equal(image, again[0]) and torch.equal(label, again[1])
    raw, raw_label = ds.with_raw_output()[(1, 7)]
    assert raw.dtype == torch.uint8 and torch.equal(raw_label, label)
    assert torch.allclose(raw.float() / 255, image)  # uint8 /255, mean 0 / std 1 for 1 channel
    others = [ds[(1, s)][0] for s in range(8)]
    assert any(not torch.equal(image, o) for o in others)  # seeds matter
    val = NiftiPatchDataset(pairs, patch=(4, 32, 40), normalization=ds.normalization)
    vol, vol_label = val[0]
    assert len(val) == 1 and vol.shape == (1, 6, 216, 256) and vol_label.shape == (6, 216, 256)
    assert val.validate(num_classes=4)["sizes"] == [(6, 216, 256)]


def test_patch_dataset_pads_small_volumes(tmp_path: Path) -> None:
    pair = _synthetic_pair(tmp_path, (10, 7, 3))  # napari order (3, 7, 10)
    ds = NiftiPatchDataset([pair], patch=(4, 8, 12), train=True, augment=False)
    counts = np.bincount(ds.load_pair(0)[1].numpy().ravel(), minlength=3)
    image, label = ds[(0, 3)]
    assert image.shape == (1, 4, 8, 12) and label.shape == (4, 8, 12)
    # the whole volume fits into the patch: every voxel is there once, the rest is padding
    assert np.array_equal(np.bincount(label.numpy().ravel(), minlength=3)[1:], counts[1:])
    pad = image[0].numpy() == 0  # zero padding (the scaled image is >= 10/255 inside)
    assert pad.sum() == 4 * 8 * 12 - 3 * 7 * 10


class _TileRecorder(torch.nn.Module):
    """Keeps the tiles tiled inference feeds it; predicts class 0 everywhere."""

    def __init__(self, factor: tuple[int, int, int]) -> None:
        super().__init__()
        self.factor, self.w, self.tiles = factor, torch.nn.Parameter(torch.zeros(())), []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.tiles.append(x.clone())
        return torch.zeros((x.shape[0], 2, *x.shape[2:])) + self.w


def test_small_volumes_sit_where_tiled_inference_puts_them(tmp_path: Path) -> None:
    # (3, 7, 10) in a (6, 8, 12) patch: half the padding is (1, 0, 1), on a stride-(2, 4, 4)
    # grid (0, 0, 0). Trained at offset 1 and predicted at 0, a strided network's first
    # slices came out different (dice 0.62 -> 0.56 on a Z=5 toy set with a Z=8 patch).
    pair = _synthetic_pair(tmp_path, (10, 7, 3))
    ds = NiftiPatchDataset([pair], patch=(6, 8, 12), train=True, augment=False)
    ds.pad_multiple = (2, 4, 4)
    image, _ = ds[(0, 0)]
    volume = NiftiPatchDataset([pair], patch=(6, 8, 12))[0][0]
    model = _TileRecorder((2, 4, 4))
    sliding_window_predict(model, volume, tile=(6, 8, 12), multiple=output_stride(model))
    assert len(model.tiles) == 1
    torch.testing.assert_close(model.tiles[0][0], image, atol=0, rtol=0)


def test_training_sets_the_patch_placement_to_the_networks_stride(
    acdc_root: Path, tmp_path: Path
) -> None:
    # ACDC-like: 6 slices, an 8-slice patch, a network that halves Z (the shipped config's case)
    kwargs = "model.kwargs={channels: [4, 8], anisotropic_levels: 0}"
    cfg = make_cfg(acdc_root, tmp_path / "x", "data.patch=[8, 32, 32]", kwargs)
    state = prepare_run(cfg, DistInfo(), torch.device("cpu"))
    assert state.train_ds.pad_multiple == output_stride(state.model) == (2, 2, 2)  # type: ignore[attr-defined]
    raw = state.train_ds.with_raw_output()[(0, 5)][0].float()
    assert raw[0, 0].abs().sum() > 0 and not raw[0, -2:].any()  # (8 - 6) // 2 // 2 * 2 = 0


def test_patch_augmentation_is_identical_for_image_and_label(tmp_path: Path) -> None:
    pair = _synthetic_pair(tmp_path, (12, 12, 5))  # (5, 12, 12): quarter turns allowed
    ds = NiftiPatchDataset(
        [pair],
        patch=(5, 12, 12),
        train=True,
        augmentation={"hflip": 0.5, "vflip": 0.5, "zflip": 0.5, "rot90": 1.0},
    )
    plain = NiftiPatchDataset([pair], patch=(5, 12, 12), train=True, augment=False)[(0, 0)]
    seen = set()
    for seed in range(12):
        image, label = ds[(0, seed)]
        # the image is a function of the label: any mismatch between the two transforms shows
        assert torch.equal(torch.round((image[0] * 255 - 10) / 60).long(), label)
        assert sorted(label.flatten().tolist()) == sorted(plain[1].flatten().tolist())
        seen.add(label.numpy().tobytes())
    assert len(seen) > 3  # flips and rotations really happen
    # non-square in-plane patches only turn by 180 degrees: the shape is kept
    ds2 = NiftiPatchDataset([pair], patch=(5, 12, 8), train=True, augmentation={"rot90": 1.0})
    assert all(ds2[(0, s)][1].shape == (5, 12, 8) for s in range(6))


def test_patch_dataset_errors(tmp_path: Path, acdc_root: Path) -> None:
    pair = _synthetic_pair(tmp_path, (8, 8, 4))
    with pytest.raises(DataError, match=r"'data\.patch': expected \[Z, Y, X\]"):
        NiftiPatchDataset([pair], patch=(8, 8))
    with pytest.raises(DataError, match=r"'model\.in_channels'.*in_channels: 1, got 3"):
        NiftiPatchDataset([pair], patch=(2, 4, 4), in_channels=3)
    with pytest.raises(
        DataError, match=r"labels[/\\]vol\.nii\.gz: label volume has label 2 .* 2 classes"
    ):
        NiftiPatchDataset([pair], patch=(2, 4, 4)).validate(num_classes=2)

    def cfg(**data: Any) -> Any:
        base = {"kind": "nifti", "root": str(acdc_root), "masks": "labels", "slices": "3d"}
        model = data.pop("model", TINY_3D)
        return load_config({"data": {**base, **data}, "model": model})

    with pytest.raises(DataError, match=r"'data\.patch': data\.slices: 3d needs a patch size"):
        build_datasets(cfg())
    with pytest.raises(DataError, match=r"'data\.size': not used with data\.slices: 3d"):
        build_datasets(cfg(patch=PATCH, size=[64, 64]))
    # whether the model fits the data is the engine's check (data does not import the engine)
    with pytest.raises(ConfigError, match=r"'model\.arch'.*needs a 3D network.*'Unet'"):
        check_model_fits_data(cfg(patch=PATCH, model={"arch": "Unet"}))
    with pytest.raises(ConfigError, match=r"'data\.slices'.*3D network.*slices '2d'"):
        check_model_fits_data(cfg(patch=PATCH, slices="2d"))
    with pytest.raises(DataError, match=r"'data\.slices': 3d patches are cut from NIfTI"):
        build_datasets(cfg(patch=PATCH, kind="folder"))
    with pytest.raises(ConfigError, match=r"'data\.patch\.2'"):  # [Z, Y, X]
        cfg(patch=[8, 96])
    with pytest.raises(ConfigError, match=r"'data\.patch_foreground'"):
        cfg(patch=PATCH, patch_foreground=1.5)


def test_bundled_acdc_root_builds_3d_datasets() -> None:
    cfg = load_config(
        {
            "data": {
                "kind": "nifti",
                "root": "bundled:acdc",
                "masks": "labels",
                "slices": "3d",
                "patch": PATCH,
                "patches_per_volume": 5,
                "val_fraction": 0.0,
            },
            "model": TINY_3D,
        }
    )
    train_ds, val_ds = build_datasets(cfg)
    assert isinstance(train_ds, NiftiPatchDataset) and len(train_ds) == 5 and len(val_ds) == 0
    assert train_ds[(4, 1)][0].shape == (1, *PATCH)


# -- training, resume, predict -----------------------------------------------------------------


def test_one_epoch_3d_run(trained: Path) -> None:
    assert {p.name for p in trained.iterdir()} >= {
        "config.yaml",
        "metrics.csv",
        "checkpoint.pt",
        "best.pt",
        "eval.json",
    }
    with open(trained / "metrics.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 1 and rows[0]["iteration"] == "1"  # 1 volume x 2 patches, batch 2
    for col in ("train_loss", "val_loss", "val_dice", "val_hd95", "dice_3"):
        assert rows[0][col] != "", col
    ev = json.loads((trained / "eval.json").read_text())
    assert ev["split"] == "val" and ev["num_images"] == 1 and ev["checkpoint"] == "best.pt"
    assert set(ev["per_class"]) == {"1", "2", "3"} and ev["class_names"][3] == "LV"
    assert ev["per_image"][0]["name"].endswith("_frame01.nii.gz")
    assert ev["distance_units"] == "voxel spacing"  # HD95 in mm here, not pixels
    assert float(rows[0]["val_dice"]) == pytest.approx(ev["mean"]["dice"])
    model, meta = load_model(trained / "best.pt")
    assert isinstance(model, UNet3D) and meta["arch"] == "UNet3D"
    assert meta["spatial_dims"] == 3 and meta["patch"] == PATCH
    assert meta["input_size"] is None and meta["crop"] is None
    assert meta["normalization"] == {"scale": "uint8", "mean": [0.0], "std": [1.0]}
    assert load_config(trained / "config.yaml").data.patch == tuple(PATCH)


def test_3d_resume_matches_an_uninterrupted_run(acdc_root: Path, tmp_path: Path) -> None:
    kw = {"batch_size": 1, "val_metrics": "overlap"}  # 2 steps per epoch
    train(make_cfg(acdc_root, tmp_path / "a", **kw), progress=False)
    cfg = make_cfg(acdc_root, tmp_path / "b", **kw)
    first = train(cfg, should_stop=iter([False, True]).__next__, progress=False)
    assert first.stopped and first.iteration == 1
    second = train(cfg, resume=True, progress=False)
    assert not second.stopped and second.iteration == 2
    a = load_checkpoint(tmp_path / "a" / "checkpoint.pt")["model"]
    b = load_checkpoint(tmp_path / "b" / "checkpoint.pt")["model"]
    for k in a:
        assert torch.allclose(a[k].float(), b[k].float(), atol=1e-6), k


def test_2d_network_on_3d_datasets_is_refused(acdc_root: Path, tmp_path: Path) -> None:
    cfg = make_cfg(acdc_root, tmp_path / "x")
    train_ds, val_ds = build_datasets(cfg)
    cfg2 = load_config(
        cfg,
        [
            "model.arch=Unet",
            "model.encoder=tu-resnet10t",
            "model.kwargs={encoder_depth: 3, decoder_channels: [16, 8, 4]}",
        ],
    )
    with pytest.raises(ConfigError, match=r"'model\.arch': 'Unet' is a 2D network.*3D"):
        next(iter_train(cfg2, datasets=(train_ds, val_ds), progress=False))


def test_segloss_predict_3d_checkpoint(
    trained: Path, acdc_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = acdc_root / "images" / "patient1_frame01.nii.gz"
    out = tmp_path / "pred"
    args = ["predict", "--checkpoint", str(trained / "best.pt"), "--input", str(src)]
    assert main([*args, "--output", str(out), "--device", "cpu", "--probs"]) == 0
    assert "patient1_frame01.nii.gz" in capsys.readouterr().err  # the per-file line
    ref = nib.load(str(src))
    pred = nib.load(str(out / "patient1_frame01.nii.gz"))
    assert pred.shape == ref.shape == (48, 40, 6)
    np.testing.assert_allclose(pred.affine, ref.affine)
    labels = np.asanyarray(pred.dataobj)
    assert labels.dtype == np.uint8 and labels.max() <= 3
    probs = np.asanyarray(nib.load(str(out / "patient1_frame01_probs.nii.gz")).dataobj)
    assert probs.shape == (48, 40, 6, 4)
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-4)
    np.testing.assert_array_equal(probs.argmax(-1), labels)  # same (X, Y, Z) layout


def test_validation_predicts_what_segloss_predict_writes(
    trained: Path, acdc_root: Path, tmp_path: Path
) -> None:
    # the scores in metrics.csv / eval.json are those of the files `segloss predict` writes
    from napari_segloss.engine.evaluation import EvalSettings, evaluate_dataset

    _, val_ds = build_datasets(make_cfg(acdc_root, tmp_path / "unused"))
    model, _ = load_model(trained / "best.pt", device="cpu")
    kept: list[np.ndarray] = []
    settings = EvalSettings(device=torch.device("cpu"), num_classes=4)
    evaluate_dataset(model, val_ds, [0], settings, surface=False, predictions=kept)
    src = Path(val_ds.item_name(0))
    args = ["predict", "--checkpoint", str(trained / "best.pt"), "--input", str(src)]
    assert main([*args, "--output", str(tmp_path / "p"), "--device", "cpu"]) == 0
    written = np.asanyarray(nib.load(str(tmp_path / "p" / src.name)).dataobj)
    np.testing.assert_array_equal(written.transpose(2, 1, 0), kept[0])  # (X, Y, Z) on disk
    assert len(np.unique(kept[0])) > 1  # not a blank prediction that any path would match


def test_predict_3d_with_an_in_plane_tile(trained: Path, acdc_root: Path) -> None:
    # the napari panel passes (tile, tile): a 3D model keeps the training patch depth
    from napari_segloss.data.io import nifti_to_napari, read_nifti
    from napari_segloss.engine.inference import predict

    vol, _ = read_nifti(acdc_root / "images" / "patient1_frame01.nii.gz")
    zyx, _ = nifti_to_napari(vol)
    auto = predict(trained / "best.pt", zyx, device="cpu")
    inplane = predict(trained / "best.pt", zyx, tile=(32, 32), device="cpu")
    assert inplane[0].shape == auto[0].shape == zyx.shape
    np.testing.assert_allclose(inplane[1], auto[1], atol=1e-5)  # same tiles as the patch


def test_acdc_3d_config_is_valid() -> None:
    """The shipped config validates, builds its UNet3D and cuts patches (on the bundled volume,
    which has fewer slices than the patch: zero-padded along Z)."""
    from napari_segloss.cli import prepare_config

    config = Path(__file__).resolve().parents[2] / "training" / "configs" / "acdc_3d_patches.yaml"
    with pytest.raises(ValueError, match=r"'data\.root' is not set"):
        prepare_config(config)
    tree, overrides = prepare_config(
        config, ["data.root=bundled:acdc", "data.split_file=null", "data.val_fraction=0"]
    )
    cfg = load_config(tree, overrides)
    assert cfg.model.arch == "UNet3D" and cfg.data.patch == (8, 96, 96)
    model = build_model(cfg.model)
    assert isinstance(model, UNet3D) and model.factor == (2, 8, 8)
    train_ds, _ = build_datasets(cfg)
    image, label = train_ds[(0, 0)]
    assert image.shape == (1, 8, 96, 96) and label.shape == (8, 96, 96)

"""The ``segloss`` command: argument structure, one-line errors, predict and evaluate outputs."""

from __future__ import annotations

import argparse
import csv
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageOps

from napari_segloss.cli import build_parser, main
from napari_segloss.engine.events import OUT_OF_MEMORY_HINTS

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "training" / "configs"
TINY_KW = {"encoder_depth": 3, "decoder_channels": [16, 8, 4]}


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # see tests/conftest.py


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    rc = main(argv)
    out, err = capsys.readouterr()
    return rc, out, err


def _predict(
    ckpt: Path, inp: Path, out: Path, capsys: pytest.CaptureFixture[str], *extra: str
) -> tuple[int, str, str]:
    """``segloss predict`` of ``inp`` into ``out`` on the CPU."""
    argv = ["predict", "--checkpoint", str(ckpt), "--input", str(inp), "--output", str(out)]
    return _run([*argv, "--device", "cpu", *extra], capsys)


def _assert_one_line_error(rc: int, err: str, *needles: str) -> None:
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], lines[0]


# ------------------------------------------------------------------------------ parser


def test_parser_subcommands_and_set_overrides() -> None:
    parser = build_parser()
    args = parser.parse_args(
        [
            "train",
            "--config",
            "c.yaml",
            "--set",
            "train.epochs=2",
            "data.size=[64,64]",
            "--set",
            "x=1",
        ]
    )
    assert args.command == "train"
    assert args.overrides == ["train.epochs=2", "data.size=[64,64]", "x=1"]
    args = parser.parse_args(
        [
            "predict",
            "--checkpoint",
            "m.pt",
            "--input",
            "a.png",
            "dir",
            "--output",
            "o",
            "--tile",
            "64",
            "64",
        ]
    )
    assert args.input == ["a.png", "dir"] and args.tile == [64, 64] and args.overlap == 0.25
    args = parser.parse_args(["evaluate", "--pred", "p", "--gt", "g", "--spacing", "1.5", "1.5"])
    assert args.spacing == [1.5, 1.5] and args.tolerance == 1.0
    args = parser.parse_args(
        ["compare", "--config", "c.yaml", "--losses", "ce", "pm_dice", "--output", "o"]
    )
    assert args.losses == ["ce", "pm_dice"] and args.seeds == [0, 1, 2]


def test_missing_subcommand_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main([])
    assert exc.value.code == 2


# ------------------------------------------------------------------------------ errors


@pytest.mark.parametrize(
    ("argv", "needles"),
    [
        (["train", "--config", "nope.yaml"], ["config file not found", "nope.yaml"]),
        (
            ["train", "--config", str(CONFIGS / "quickstart.yaml"), "--set", "train.epoch=3"],
            ["train.epoch", "unknown key"],
        ),
        (
            ["train", "--config", str(CONFIGS / "quickstart.yaml"), "--set", "train.epochs=ten"],
            ["train.epochs"],
        ),
        (["train", "--config", str(CONFIGS / "kvasir_pm_dice.yaml")], ["data.root", "not set"]),
        (
            [
                "compare",
                "--config",
                str(CONFIGS / "acdc_pm_dice.yaml"),
                "--losses",
                "ce",
                "--output",
                "o",
            ],
            ["data.root", "--set data.root="],
        ),
        (
            ["predict", "--checkpoint", "missing.pt", "--input", ".", "--output", "o"],
            ["checkpoint not found", "missing.pt"],
        ),
        (["evaluate", "--pred", "nope", "--gt", "nope2"], ["pred folder not found"]),
    ],
)
def test_bad_input_gives_one_line_and_exit_2(
    argv: list[str], needles: list[str], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    rc, _, err = _run(argv, capsys)
    _assert_one_line_error(rc, err, f"segloss {argv[0]}: error:", *needles)


def test_a_per_class_parameter_of_another_length_is_refused_before_any_step(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Found at the first training step before: in compare after every earlier loss's runs
    had trained, in train after the data were checked and the progress bar drawn."""
    quick = str(CONFIGS / "quickstart.yaml")
    rc, _, err = _run(
        ["train", "--config", quick, "--set", "loss.params.gamma=[1,2,3]",
         f"output={tmp_path / 'run'}"],
        capsys,
    )  # fmt: skip
    _assert_one_line_error(
        rc, err, "config key 'loss': gamma has 3 values but the loss sees 2 class channels"
    )
    rc, _, err = _run(
        ["compare", "--config", quick, "--losses", "dice", "pm_dice:gamma=[1,2,3]",
         "--seeds", "0", "--output", str(tmp_path / "cmp")],
        capsys,
    )  # fmt: skip
    _assert_one_line_error(rc, err, "losses: 'pm_dice:gamma=[1,2,3]': gamma has 3 values")
    rc, _, err = _run(
        ["train", "--config", quick, "--set", "loss.name=ce", "loss.params={weight: [1, 2, 3]}",
         f"output={tmp_path / 'run'}"],
        capsys,
    )  # fmt: skip
    _assert_one_line_error(rc, err, "config key 'loss': weight")
    assert not (tmp_path / "run").exists() and not (tmp_path / "cmp").exists()


def test_corrupt_checkpoint_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"this is not a checkpoint")
    img = tmp_path / "a.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(img)
    rc, _, err = _run(
        ["predict", "--checkpoint", str(bad), "--input", str(img), "--output", str(tmp_path / "o")],
        capsys,
    )
    _assert_one_line_error(rc, err, "bad.pt")


# ------------------------------------------------------------------------------ predict


#: ImageNet statistics: what a colour checkpoint trained from pretrained weights records
IMAGENET = {"scale": "uint8", "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}


def test_predict_writes_png_tif_probs_matching_inference(
    write_checkpoint: Callable[..., Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from napari_segloss.engine.checkpoint import load_model
    from napari_segloss.engine.inference import predict

    ckpt = write_checkpoint(tmp_path / "model_3_2.pt", 3, 2, normalization=IMAGENET)
    inputs = tmp_path / "in"
    inputs.mkdir()
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (40, 52, 3), dtype=np.uint8)  # larger than the 32 tile, odd size
    b = rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)  # smaller than the tile
    Image.fromarray(a).save(inputs / "a.png")
    import tifffile

    tifffile.imwrite(inputs / "b.tif", b)
    (inputs / "notes.txt").write_text("ignored")
    out = tmp_path / "out"
    rc, stdout, err = _predict(ckpt, inputs, out, capsys, "--probs")
    assert rc == 0, err
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "a_probs.tif", "b.tif", "b_probs.tif"]
    labels_a = np.asarray(Image.open(out / "a.png"))
    probs_a = tifffile.imread(out / "a_probs.tif")
    assert labels_a.shape == (40, 52) and labels_a.dtype == np.uint8
    assert probs_a.shape == (2, 40, 52) and probs_a.dtype == np.float32
    np.testing.assert_allclose(probs_a.sum(0), 1.0, atol=1e-5)
    model, meta = load_model(ckpt)
    ref_labels, ref_probs = predict(model, a, meta=meta, device="cpu")
    np.testing.assert_array_equal(labels_a, ref_labels)
    np.testing.assert_allclose(probs_a, ref_probs, atol=1e-6)
    assert tifffile.imread(out / "b.tif").shape == (20, 24)
    # a line per file while it works on stderr; stdout: what it wrote, once
    assert stdout == f"segloss predict: wrote 2 label file(s) to {out}\n"
    assert re.search(r"^\[1/2\] a\.png -> a\.png \(foreground [\d.]+ %\)$", err, re.MULTILINE)


def test_predict_refuses_outputs_that_overwrite_inputs_or_each_other(
    write_checkpoint: Callable[..., Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--output`` the input folder replaced the images by their label maps; ``a.jpg`` and
    ``a.png`` both wrote ``a.png`` while the count said 2 files. Now refused, nothing written."""
    ckpt = write_checkpoint(tmp_path / "model_3_2.pt", 3, 2, normalization=IMAGENET)
    inputs = tmp_path / "in"
    inputs.mkdir()
    rgb = np.random.default_rng(0).integers(0, 256, (20, 24, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(inputs / "a.png")
    Image.fromarray(rgb).save(inputs / "a.jpg")
    before = {p.name: p.read_bytes() for p in inputs.iterdir()}
    rc, _, err = _predict(ckpt, inputs / "a.png", inputs, capsys)
    assert rc == 2
    assert f"the prediction of '{inputs / 'a.png'}' would overwrite the input" in err
    # a folder of JPEG frames predicted into itself: no file overwritten, but a.png beside
    # a.jpg left a folder that no longer reads as images
    (tmp_path / "jpegs").mkdir()
    Image.fromarray(rgb).save(tmp_path / "jpegs" / "b.jpg")
    same = tmp_path / "in" / ".." / "jpegs"  # the folder, spelled another way
    rc, _, err = _predict(ckpt, tmp_path / "jpegs", same, capsys)
    _assert_one_line_error(rc, err, f"--output: '{same}' is an input folder")
    assert [p.name for p in (tmp_path / "jpegs").iterdir()] == ["b.jpg"]
    rc, _, err = _predict(ckpt, inputs, tmp_path / "out", capsys)
    assert rc == 2 and "would both be written to" in err and "a.jpg" in err
    assert not (tmp_path / "out").exists()
    assert {p.name: p.read_bytes() for p in inputs.iterdir()} == before
    rc, _, err = _predict(ckpt, inputs / "a.jpg", ckpt, capsys)  # --output an existing file
    assert rc == 2 and f"--output: expected a folder, '{ckpt}' is a file" in err
    rc, _, err = _predict(tmp_path, inputs / "a.jpg", tmp_path / "o", capsys)  # a run folder
    assert rc == 2 and "is a folder; give the .pt file in it (model_3_2.pt)" in err
    rc, _, err = _predict(ckpt, inputs / "a.jpg", tmp_path / "o", capsys, "--overlap", "1")
    _assert_one_line_error(rc, err, "--overlap: expected a fraction in [0, 1), got 1.0")
    assert not (tmp_path / "o").exists()  # refused whether or not --tile is given
    volume_model = write_checkpoint(tmp_path / "v.pt", 1, 2, spatial_dims=3)
    grey = inputs / "grey.png"
    Image.fromarray(rgb[..., 0]).save(grey)
    rc, _, err = _predict(volume_model, grey, tmp_path / "o", capsys)
    _assert_one_line_error(rc, err, f"input '{grey}': image of shape (20, 24) is 2D, but")
    assert not (tmp_path / "o").exists()  # found by the checks before anything is written


def test_predict_says_when_a_grey_image_feeds_a_colour_model(
    write_checkpoint: Callable[..., Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Repeated to 3 channels as the training datasets read grey images (not refused), but
    said: it may be a wrong file (a mask folder given as the images)."""
    ckpt = write_checkpoint(tmp_path / "model_3_2.pt", 3, 2, normalization=IMAGENET)
    grey = np.random.default_rng(0).integers(0, 256, (20, 24), dtype=np.uint8)
    Image.fromarray(grey).save(tmp_path / "grey.png")
    Image.fromarray(np.stack([grey] * 3, -1)).save(tmp_path / "colour.png")
    rc, _, err = _predict(ckpt, tmp_path / "grey.png", tmp_path / "o", capsys)
    assert rc == 0 and "a grey image, repeated to the model's 3 colour channels" in err
    rc, _, err = _predict(ckpt, tmp_path / "colour.png", tmp_path / "o", capsys)
    assert rc == 0 and "grey" not in err


def test_predict_on_a_missing_gpu_is_one_line(
    write_checkpoint: Callable[..., Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is here")
    ckpt = write_checkpoint(tmp_path / "model_3_2.pt", 3, 2, normalization=IMAGENET)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "x.png")
    rc, _, err = _predict(ckpt, tmp_path / "x.png", tmp_path / "o", capsys, "--device", "cuda")
    assert rc == 2  # before: a traceback ending in "Found no NVIDIA driver on your system"
    assert err.strip() == (
        "segloss predict: error: device 'cuda': CUDA is not available here (use auto or cpu)"
    )


def test_predict_nifti_volume_keeps_file_axes_and_affine(
    write_checkpoint: Callable[..., Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import nibabel as nib

    ckpt = write_checkpoint(tmp_path / "model_1_4.pt", 1, 4)
    vol = np.random.default_rng(1).integers(0, 256, (36, 28, 3), dtype=np.uint8)  # (X, Y, Z)
    affine = np.diag([1.5, 1.5, 8.0, 1.0])
    nib.save(nib.Nifti1Image(vol, affine), str(tmp_path / "case.nii.gz"))
    out = tmp_path / "out"
    rc, _, err = _predict(ckpt, tmp_path / "case.nii.gz", out, capsys, "--probs")
    assert rc == 0, err
    lab = nib.load(str(out / "case.nii.gz"))
    assert lab.shape == (36, 28, 3)
    np.testing.assert_allclose(lab.affine, affine)
    assert set(np.unique(np.asarray(lab.dataobj))) <= {0, 1, 2, 3}
    probs = nib.load(str(out / "case_probs.nii.gz"))
    assert probs.shape == (36, 28, 3, 4)
    np.testing.assert_allclose(np.asarray(probs.dataobj).sum(-1), 1.0, atol=1e-5)


def test_predict_nifti_with_trailing_singleton_axis_is_a_volume(
    write_checkpoint: Callable[..., Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """(X, Y, Z, 1) trains as a 3D volume (read_nifti); predict takes it too."""
    import nibabel as nib

    ckpt = write_checkpoint(tmp_path / "model_1_4.pt", 1, 4)
    vol = np.random.default_rng(3).integers(0, 256, (36, 28, 3, 1), dtype=np.uint8)
    nib.save(nib.Nifti1Image(vol, np.diag([1.5, 1.5, 8.0, 1.0])), str(tmp_path / "case.nii.gz"))
    rc, _, err = _predict(ckpt, tmp_path / "case.nii.gz", tmp_path / "out", capsys, "--probs")
    assert rc == 0, err
    assert nib.load(str(tmp_path / "out" / "case.nii.gz")).shape == (36, 28, 3)
    assert nib.load(str(tmp_path / "out" / "case_probs.nii.gz")).shape == (36, 28, 3, 4)


def test_predict_nifti_keeps_input_header_codes_and_units(
    write_checkpoint: Callable[..., Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The output overlays its input in any viewer: same qform/sform codes and units, not a
    fresh header (sform code 2, qform code 0, units unknown) that only shares the affine."""
    import nibabel as nib

    ckpt = write_checkpoint(tmp_path / "model_1_4.pt", 1, 4)
    vol = np.random.default_rng(2).integers(0, 256, (36, 28, 3), dtype=np.uint8)  # (X, Y, Z)
    affine = np.diag([1.5, 1.5, 8.0, 1.0])
    affine[:3, 3] = [-20.0, 10.0, 5.0]
    img = nib.Nifti1Image(vol, None)
    img.set_qform(affine, code=1)  # scanner coordinates in the qform only, as ACDC ships
    img.set_sform(None, code=0)
    img.header.set_xyzt_units("mm", "sec")
    img.header["cal_min"], img.header["cal_max"] = 0, 255
    nib.save(img, str(tmp_path / "case.nii.gz"))
    rc, _, err = _predict(ckpt, tmp_path / "case.nii.gz", tmp_path / "out", capsys, "--probs")
    assert rc == 0, err
    for name, dtype in (("case.nii.gz", np.uint8), ("case_probs.nii.gz", np.float32)):
        hdr = nib.load(str(tmp_path / "out" / name)).header
        assert (int(hdr["qform_code"]), int(hdr["sform_code"])) == (1, 0), name
        assert hdr.get_xyzt_units()[0] == "mm", name
        np.testing.assert_allclose(hdr.get_qform(), affine, atol=1e-5)
        assert hdr.get_data_dtype() == dtype, name
        assert float(hdr["cal_max"]) == 0.0, name  # no intensity window of the image
    probs = np.asarray(nib.load(str(tmp_path / "out" / "case_probs.nii.gz")).dataobj)
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-5)


# ------------------------------------------------------------------------------ evaluate


def _mask(path: Path, arr: np.ndarray) -> None:
    Image.fromarray(arr.astype(np.uint8)).save(path)


def test_evaluate_hand_computed_binary(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pred_dir, gt_dir = tmp_path / "pred", tmp_path / "gt"
    pred_dir.mkdir()
    gt_dir.mkdir()
    gt = np.zeros((16, 16), np.uint8)
    gt[4:8, 4:8] = 1  # 16 pixels
    pred = np.zeros_like(gt)
    pred[4:8, 4:6] = 1  # 8 pixels, all inside the truth
    _mask(gt_dir / "x.png", gt * 255)  # {0, 255} masks are read as {0, 1}
    _mask(pred_dir / "x.png", pred)
    _mask(gt_dir / "y.png", gt)  # perfect prediction for y
    _mask(pred_dir / "y.png", gt)
    _mask(gt_dir / "extra.png", gt)  # no prediction: ignored, reported
    rc, out, err = _run(
        [
            "evaluate",
            "--pred",
            str(pred_dir),
            "--gt",
            str(gt_dir),
            "--output",
            str(tmp_path / "ev"),
        ],
        capsys,
    )
    assert rc == 0, err
    with (tmp_path / "ev" / "per_image.csv").open() as fh:
        rows = {r["image"]: r for r in csv.DictReader(fh)}
    assert set(rows) == {"x", "y"}
    x = rows["x"]
    # Dice 2*8/(16+8), IoU 8/16, precision 8/8, recall 8/16.
    assert float(x["dice"]) == pytest.approx(2 / 3)
    assert float(x["iou"]) == pytest.approx(0.5)
    assert float(x["precision"]) == pytest.approx(1.0)
    assert float(x["recall"]) == pytest.approx(0.5)
    assert float(rows["y"]["dice"]) == pytest.approx(1.0)
    with (tmp_path / "ev" / "summary.csv").open() as fh:
        summary = {(r["class"], r["metric"]): r for r in csv.DictReader(fh)}
    assert float(summary[("1", "dice")]["mean"]) == pytest.approx((2 / 3 + 1) / 2)
    assert summary[("1", "dice")]["count"] == "2"
    md = (tmp_path / "ev" / "summary.md").read_text()
    assert "'mean' rows" not in md  # one class: none
    assert "NSD tolerance 1.0 (pixel units)" in md  # PNG masks carry no spacing
    assert "1 ground-truth file(s) without a prediction ignored" in out


def test_evaluate_multiclass_nifti_uses_header_spacing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import nibabel as nib

    gt = np.zeros((10, 10, 2), np.uint8)
    gt[2:5, 2:5, :] = 1
    gt[6:9, 6:9, :] = 2
    pred = gt.copy()
    pred[6:9, 6:9, :] = 0  # class 2 missed entirely
    for folder, arr in (("gt", gt), ("pred", pred)):
        (tmp_path / folder).mkdir()
        nib.save(
            nib.Nifti1Image(arr, np.diag([2.0, 2.0, 5.0, 1.0])), str(tmp_path / folder / "v.nii.gz")
        )
    rc, _, err = _run(
        [
            "evaluate",
            "--pred",
            str(tmp_path / "pred"),
            "--gt",
            str(tmp_path / "gt"),
            "--class-names",
            "A",
            "B",
        ],
        capsys,
    )
    assert rc == 0, err
    with (tmp_path / "pred" / "per_image.csv").open() as fh:
        rows = {r["class"]: r for r in csv.DictReader(fh)}
    assert float(rows["1"]["dice"]) == pytest.approx(1.0)
    assert float(rows["2"]["dice"]) == pytest.approx(0.0)
    summary = (tmp_path / "pred" / "summary.md").read_text()
    assert "B" in summary
    assert "note" not in err  # the headers agree
    # a prediction written with another header: the ground truth's spacing is used, and said
    nib.save(nib.Nifti1Image(pred, np.eye(4)), str(tmp_path / "pred" / "v.nii.gz"))
    rc, _, err = _run(["evaluate", "--pred", str(tmp_path / "pred"), "--gt", str(tmp_path / "gt")],
                      capsys)  # fmt: skip
    assert rc == 0 and "1 prediction header(s) give another voxel spacing than the ground " in err
    assert "v (1.0, 1.0, 1.0) vs (2.0, 2.0, 5.0)" in err
    # says which spacing the distances are in, with its numbers (not "pixel units")
    assert "NIfTI header spacing (X, Y, Z) = (2.0, 2.0, 5.0)" in summary
    assert "pixel units" not in summary
    # the 'mean' row's ± is the spread of the class means (1 and 0: population std 0.5), not a
    # spread over images, and the footer says so (it read "mean ± std over images")
    assert "| mean | 0.5000 ± 0.5000 |" in summary
    assert "'mean' rows: mean ± std of the foreground classes' means" in summary
    assert "population std (ddof=0) over images" in summary


def test_evaluate_float_nifti_labels_are_rounded_not_truncated(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A float ground truth from resampling (0.99999 for 1) was cast to int: all background,
    and a perfect prediction scored Dice 0."""
    import nibabel as nib

    gt = np.zeros((10, 10, 2), np.float32)
    gt[2:6, 2:6, :] = 0.99999
    for folder, arr in (("gt", gt), ("pred", gt.round().astype(np.uint8))):
        (tmp_path / folder).mkdir()
        nib.save(nib.Nifti1Image(arr, np.eye(4)), str(tmp_path / folder / "v.nii.gz"))
    rc, _, err = _run(
        ["evaluate", "--pred", str(tmp_path / "pred"), "--gt", str(tmp_path / "gt")], capsys
    )
    assert rc == 0, err
    with (tmp_path / "pred" / "per_image.csv").open() as fh:
        rows = {r["class"]: r for r in csv.DictReader(fh)}
    assert float(rows["1"]["dice"]) == pytest.approx(1.0)


def test_evaluate_class_names_count(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for folder in ("p", "g"):
        (tmp_path / folder).mkdir()
        _mask(tmp_path / folder / "a.png", np.pad(np.ones((2, 2)), 3))
    argv = ["evaluate", "--pred", str(tmp_path / "p"), "--gt", str(tmp_path / "g")]
    # a name more than --num-classes holds is refused, not silently dropped
    rc, _, err = _run([*argv, "--num-classes", "2", "--class-names", "polyp", "extra"], capsys)
    _assert_one_line_error(rc, err, "--class-names", "2 names for 1 class")
    for n in ("0", "1"):  # taken as 2 before, silently
        rc, _, err = _run([*argv, "--num-classes", n], capsys)
        _assert_one_line_error(rc, err, "--num-classes: expected 2 or more", f"got {n}")
    # without --num-classes, a named class absent from every mask is still reported
    rc, _, err = _run([*argv, "--class-names", "polyp", "adenoma"], capsys)
    assert rc == 0, err
    summary = (tmp_path / "p" / "summary.md").read_text()
    assert "polyp" in summary and "adenoma" in summary
    # data.class_names pasted with its background first: class 1 is still the polyp (it was
    # named "background", every name one class up)
    rc, _, err = _run([*argv, "--class-names", "background", "polyp"], capsys)
    assert rc == 0, err
    with (tmp_path / "p" / "summary.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert {(r["class"], r["name"]) for r in rows} == {("1", "polyp")}, rows
    rc, _, err = _run([*argv, "--num-classes", "2", "--class-names", "BG", "polyp"], capsys)
    assert rc == 0, err


@pytest.mark.parametrize("problem", ["no_gt", "shape", "spacing"])
def test_evaluate_bad_input(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], problem: str
) -> None:
    (tmp_path / "p").mkdir()
    (tmp_path / "g").mkdir()
    _mask(tmp_path / "p" / "a.png", np.zeros((8, 8)))
    argv = ["evaluate", "--pred", str(tmp_path / "p"), "--gt", str(tmp_path / "g")]
    if problem == "no_gt":
        _mask(tmp_path / "g" / "b.png", np.zeros((8, 8)))
        needles = ["without a ground truth", "a"]
    elif problem == "shape":
        _mask(tmp_path / "g" / "a.png", np.zeros((8, 9)))
        needles = ["shape"]
    else:
        _mask(tmp_path / "g" / "a.png", np.zeros((8, 8)))
        argv += ["--spacing", "1", "1", "1"]
        needles = ["--spacing", "expected 2"]
    rc, _, err = _run(argv, capsys)
    _assert_one_line_error(rc, err, *needles)


def test_help_states_every_default() -> None:
    """`segloss <command> --help` is where a new user looks up what an option does by default."""
    subparsers = next(
        a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)
    )
    missing = []
    for command, parser in subparsers.choices.items():
        for action in parser._actions:
            default = action.default
            if action.required or default in (None, False, [], argparse.SUPPRESS):
                continue
            if isinstance(default, list):
                shown = " ".join(map(str, default))
            else:
                shown = f"{default:g}" if isinstance(default, float) else str(default)
            if f"default: {shown}" not in (action.help or ""):
                missing.append(f"{command} {action.option_strings[0]} (default {shown})")
    assert not missing, f"--help does not state these defaults: {missing}"


# ------------------------------------------------------------------------------ train.py


def test_training_script_is_the_cli_train() -> None:
    proc = subprocess.run(
        [sys.executable, str(REPO / "training" / "train.py"), "--help"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "--config" in proc.stdout and "--resume" in proc.stdout and "--set" in proc.stdout


# ------------------------------------------------------------------------------ end to end


def _tiny_folder(root: Path, n: int = 4, size: int = 32) -> None:
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in range(n):
        img = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        mask = np.zeros((size, size), np.uint8)
        mask[8 : 16 + i, 8:20] = 255
        img[mask > 0, 0] = 255  # a red blob: learnable
        Image.fromarray(img).save(root / "images" / f"im{i}.png")
        Image.fromarray(mask).save(root / "masks" / f"im{i}.png")


def _tiny_config(tmp_path: Path) -> Path:
    import yaml

    cfg = {
        "data": {
            "kind": "folder",
            "root": str(tmp_path / "data"),
            "val_fraction": 0.25,
            "augment": False,
        },
        "model": {"encoder": "mobilenet_v2", "encoder_weights": None, "kwargs": TINY_KW},
        "loss": {"name": "pm_dice", "params": {"gamma": 1.0}},
        "train": {
            "epochs": 1,
            "batch_size": 2,
            "num_workers": 0,
            "device": "cpu",
            "val_metrics": "full",
        },
        "output": str(tmp_path / "runs" / "{loss}-seed{seed}"),
    }
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.mark.slow
def test_train_predict_evaluate_compare_end_to_end(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _tiny_folder(tmp_path / "data")
    config = _tiny_config(tmp_path)
    rc, out, err = _run(
        ["train", "--config", str(config), "--no-progress", "--set", "train.seed=3",
         "data.size=[32,32]"],
        capsys,
    )  # fmt: skip
    assert rc == 0, err
    run = tmp_path / "runs" / "pm_dice-seed3"
    for name in ("config.yaml", "metrics.csv", "checkpoint.pt", "best.pt", "eval.json"):
        assert (run / name).is_file(), name
    assert (
        "segloss train: finished" in out
        # HD95 in the pixels it was scored at, which `segloss evaluate` (files as read) lacks
        and "val split, 1 image(s) (% except mHD95, in pixels of the 32x32 images resized to "
        "data.size): mDice"
        in out
    )

    rc, _, err = _predict(run / "best.pt", tmp_path / "data" / "images", tmp_path / "pred", capsys)
    assert rc == 0, err
    assert len(list((tmp_path / "pred").glob("*.png"))) == 4
    rc, out, err = _run(
        ["evaluate", "--pred", str(tmp_path / "pred"), "--gt", str(tmp_path / "data" / "masks")],
        capsys,
    )
    assert rc == 0, err
    assert "4 image(s)" in out

    # compare: an unknown loss is refused before anything runs (exit 2, nothing written) ...
    rc, out, err = _run(
        ["compare", "--config", str(config), "--losses", "ce", "dice", "no_such_loss", "--seeds", "0",
         "--output", str(tmp_path / "cmp")],
        capsys,
    )  # fmt: skip
    assert rc == 2 and "error: losses: 'no_such_loss': unknown loss name" in err
    assert not (tmp_path / "cmp").exists()
    # ... and 2 losses x 1 seed give the paper-shaped table
    rc, out, err = _run(
        ["compare", "--config", str(config), "--losses", "ce", "dice", "--seeds", "0",
         "--output", str(tmp_path / "cmp")],
        capsys,
    )  # fmt: skip
    assert rc == 0, err
    md = (tmp_path / "cmp" / "results.md").read_text()
    assert "| CE |" in md and "| Dice |" in md and md in out
    for name in ("compare.json", "runs.csv", "results.csv"):
        assert (tmp_path / "cmp" / name).is_file(), name
    assert (tmp_path / "cmp" / "runs" / "ce" / "seed0" / "eval.json").is_file()
    assert "[1/2] ce seed 0: training ->" in err and "2/2 run(s) ok" in out


SHARED = REPO / ".." / "shared" / "data"


@pytest.mark.shared_data
@pytest.mark.parametrize(
    ("config", "sub", "n_train", "n_val"),
    [("kvasir_pm_dice", "kvasir-seg", 900, 100), ("acdc_pm_dice", "acdc", None, None)],
)
def test_paper_configs_build_on_the_real_data(
    config: str, sub: str, n_train: int | None, n_val: int | None
) -> None:
    if not (SHARED / sub).is_dir():
        pytest.skip(f"../shared/data/{sub} is absent (real-data check of {config}.yaml)")
    from napari_segloss.cli import prepare_config
    from napari_segloss.data.factory import build_datasets, build_test_dataset
    from napari_segloss.engine.config import load_config

    tree, overrides = prepare_config(CONFIGS / f"{config}.yaml", [f"data.root={SHARED / sub}"])
    cfg = load_config(tree, overrides)
    train_ds, val_ds = build_datasets(cfg)
    if n_train is not None:  # Kvasir: the paper's 90/10 split of 1000 pairs
        assert (len(train_ds), len(val_ds)) == (n_train, n_val)
        assert build_test_dataset(cfg) is None  # no split file: evaluation on the 10 %
    else:  # ACDC: splits/ with 140 / 20 / 40 frames (70 / 10 / 20 patients), 2D slices
        names = {train_ds.item_name(i).split(" slice")[0] for i in range(len(train_ds))}
        assert len(names) == 140
        test_ds = build_test_dataset(cfg, train_ds.normalization)
        assert test_ds is not None
        assert len({test_ds.item_name(i).split(" slice")[0] for i in range(len(test_ds))}) == 40


# ------------------------------------------------------------------------------ explicit conversions


def test_predict_to_grey_and_fill_nonfinite_are_explicit_and_reported(
    write_checkpoint: Callable[..., Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """What the refusals (tests/engine/test_refusals.py) point to: opt-in conversions."""
    import nibabel as nib

    from napari_segloss.engine.checkpoint import load_model
    from napari_segloss.engine.inference import predict, rgb_to_grey

    ckpt = write_checkpoint(tmp_path / "model_1_2.pt", 1, 2)
    rgb = np.random.default_rng(0).integers(0, 256, (20, 24, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "photo.png")
    rc, _, err = _predict(ckpt, tmp_path / "photo.png", tmp_path / "o1", capsys, "--to-grey")
    assert rc == 0, err
    model, meta = load_model(ckpt)
    ref, _ = predict(model, rgb_to_grey(rgb), meta=meta, device="cpu")
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "o1" / "photo.png")), ref)

    vol = np.random.default_rng(1).random((12, 10, 3)).astype(np.float32)
    vol[0, :4, 0] = np.nan
    nib.save(nib.Nifti1Image(vol, np.eye(4)), str(tmp_path / "scan.nii.gz"))
    ckpt_mm = write_checkpoint(tmp_path / "model_1_2_minmax.pt", 1, 2, scale="minmax")
    rc, out, err = _predict(
        ckpt_mm, tmp_path / "scan.nii.gz", tmp_path / "o2", capsys, "--fill-nonfinite", "0"
    )
    assert rc == 0, err
    # a diagnostic, on stderr with the per-file lines
    assert "scan.nii.gz: replaced 4 NaN/Inf value(s) with 0.0" in err
    assert err.count("replaced") == 1 and "replaced" not in out
    assert nib.load(str(tmp_path / "o2" / "scan.nii.gz")).shape == (12, 10, 3)


# ------------------------------------------------------------------------------ train summary


def _done(run_dir: Path, **fields: Any) -> Any:
    from napari_segloss.engine.events import TrainDone

    base = {
        "run_dir": run_dir, "checkpoint": run_dir / "checkpoint.pt",
        "best_checkpoint": run_dir / "best.pt", "best_dice": 0.5, "stopped": False,
        "reason": "completed", "interrupted": False, "epochs": 1, "iteration": 3,
    }  # fmt: skip
    return TrainDone(**{**base, **fields})


def test_train_summary_prints_an_infinite_hd95_and_skips_nan(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An empty prediction has an infinite HD95: a result to show, unlike an undefined NaN."""
    import json

    from napari_segloss.cli import print_done

    per_class = {"1": {"dice": 0.0, "iou": 0.0, "precision": None, "recall": 0.0, "nsd": 0.0}}
    per_class["1"]["hd95"] = float("inf")
    (tmp_path / "eval.json").write_text(json.dumps({"split": "val", "per_class": per_class}))
    print_done(_done(tmp_path), 0.1)
    line = next(s for s in capsys.readouterr().out.splitlines() if "val split" in s)
    assert "mHD95 inf" in line and "mDice 0.00" in line
    assert "mPrec." not in line and "nan" not in line  # precision 0/0: undefined, skipped


def test_interrupted_train_exits_130_and_says_where_the_checkpoint_is(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    ctrl_c_at_call: Callable[[int], Callable[[], bool]],
) -> None:
    """Ctrl-C ends `train` as it ends `compare`: the conventional 130, not the 1 of a
    non-finite loss, after the summary naming the saved checkpoint."""
    from napari_segloss.engine import training

    real_train = training.train  # `segloss train` imports it when it runs
    press_ctrl_c = ctrl_c_at_call(2)
    monkeypatch.setattr(
        training, "train", lambda cfg, **kw: real_train(cfg, should_stop=press_ctrl_c, **kw)
    )
    _tiny_folder(tmp_path / "data")
    argv = ["train", "--config", str(_tiny_config(tmp_path)), "--no-progress"]
    # one step per epoch, validation at the last only: the hook's first calls are the steps
    argv += ["--set", "train.epochs=3", "--set", "train.val_every=3"]
    rc, out, err = _run(argv, capsys)
    assert rc == 130, err
    assert (
        "segloss train: stopped (interrupted (Ctrl-C) after 2 of 3 steps (2 of 3 epochs done)"
        in out
    )
    assert out.count("checkpoint.pt") == 1  # named once, on its own line
    assert (tmp_path / "runs" / "pm_dice-seed0" / "checkpoint.pt").is_file()
    assert err.strip().endswith("segloss train: interrupted")
    # it says how to go on, and that works as said
    assert "to continue: the same command with --resume" in out
    assert "no eval.json" not in out  # not a missing file: the run is not finished
    monkeypatch.setattr(training, "train", real_train)
    rc, out, err = _run([*argv, "--resume"], capsys)  # "the same command", as said
    assert rc == 0, err
    assert "3 steps, resuming at step 2" in err and "segloss train: finished" in out


def test_train_stopped_by_a_non_finite_loss_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from napari_segloss.engine import training

    done = _done(tmp_path, stopped=True, reason="non-finite loss (nan) at iteration 5")
    monkeypatch.setattr(training, "train", lambda cfg, **kw: done)
    rc, out, err = _run(["train", "--config", str(_tiny_config(tmp_path))], capsys)
    assert rc == 1 and "stopped (non-finite loss" in out and "interrupted" not in err


def test_a_ctrl_c_during_the_final_evaluation_reports_the_finished_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Ctrl-C too late to stop the final evaluation (during its last batch, or while
    eval.json is written) left a finished run: not "finished" followed by "interrupted" and
    exit 130."""
    from napari_segloss.engine import training

    done = _done(tmp_path, interrupted=True)  # completed, with the interrupt flag set
    monkeypatch.setattr(training, "train", lambda cfg, **kw: done)
    rc, out, err = _run(["train", "--config", str(_tiny_config(tmp_path))], capsys)
    assert rc == 0, err
    assert "the run finished anyway" in err and "interrupted" not in err
    assert "segloss train: finished" in out and "anyway" not in out  # results vs diagnostics


def test_train_without_validation_does_not_call_the_weights_best(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """data.val_fraction: 0 trains without validation: best.pt holds the last weights, and
    the summary says so instead of reporting a "best checkpoint"."""
    _tiny_folder(tmp_path / "data")
    argv = ["train", "--config", str(_tiny_config(tmp_path)), "--no-progress"]
    rc, out, err = _run([*argv, "--set", "data.val_fraction=0"], capsys)
    assert rc == 0, err
    assert "last weights:" in out and "no validation ran" in out and "no eval.json:" in out
    assert "best checkpoint" not in out and "best validation" not in out
    assert (tmp_path / "runs" / "pm_dice-seed0" / "best.pt").is_file()


def test_evaluate_refuses_two_label_files_of_one_name(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """a.png and a.jpg in one folder: one silently stood for the other."""
    from PIL import Image

    for folder in ("pred", "gt"):
        (tmp_path / folder).mkdir()
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / folder / "a.png")
    Image.fromarray(np.full((8, 8), 255, np.uint8)).save(tmp_path / "gt" / "a.jpg")
    argv = ["evaluate", "--pred", str(tmp_path / "pred"), "--gt", str(tmp_path / "gt")]
    rc, _, err = _run(argv, capsys)
    gt = str(tmp_path / "gt")
    expected = f"gt folder {gt!r} has two files with the stem 'a': 'a.jpg' and 'a.png'"
    assert rc == 2 and expected in err, err


_OOM = (
    "CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of 79.19 GiB of "
    "which 1.06 GiB is free. Including non-PyTorch memory, this process has 78.12 GiB memory in "
    "use. If reserved but unallocated memory is large try setting "
    "PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True to avoid fragmentation."
)


def test_gpu_out_of_memory_is_one_line_saying_what_to_lower(
    write_checkpoint: Callable[..., Any],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import torch

    from napari_segloss.engine import inference

    ckpt = write_checkpoint(tmp_path / "m.pt", 3)
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(tmp_path / "a.png")

    def full(*args: Any, **kwargs: Any) -> Any:
        raise torch.OutOfMemoryError(_OOM)

    monkeypatch.setattr(inference, "predict", full)
    rc, _, err = _predict(ckpt, tmp_path / "a.png", tmp_path / "out", capsys)
    _assert_one_line_error(rc, err, "segloss predict: error: CUDA out of memory. Tried to alloca")
    assert err.strip().endswith("GiB: " + OUT_OF_MEMORY_HINTS["predict"])  # before: a traceback

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("a bug")

    monkeypatch.setattr(inference, "predict", broken)
    with pytest.raises(RuntimeError, match="a bug"):  # other RuntimeErrors keep their traceback
        _predict(ckpt, tmp_path / "a.png", tmp_path / "out2", capsys)


def test_evaluate_include_background_mean_row_is_foreground_only(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--include-background`` lists class 0 but leaves it out of the 'mean' row, which the
    footer says is the PM-Dice tables' mean (foreground classes): 0.5, not (1 + 1 + 0) / 3."""
    gt = np.zeros((8, 8), np.uint8)
    gt[:, :4] = 1
    gt[:4, 4:] = 2  # background: rows 4-7 of columns 4-7
    pred = gt.copy()
    pred[:4, 4:] = 0  # class 2 missed: Dice 0; background Dice 2*16 / (16 + 32) = 2/3
    for folder, arr in (("g", gt), ("p", pred)):
        (tmp_path / folder).mkdir()
        _mask(tmp_path / folder / "a.png", arr)
    argv = ["evaluate", "--pred", str(tmp_path / "p"), "--gt", str(tmp_path / "g")]
    rc, _, err = _run([*argv, "--include-background"], capsys)
    assert rc == 0, err
    with (tmp_path / "p" / "summary.csv").open() as fh:
        summary = {(r["class"], r["metric"]): float(r["mean"]) for r in csv.DictReader(fh)}
    assert summary[("0", "dice")] == pytest.approx(2 / 3)
    assert summary[("mean", "dice")] == pytest.approx((1.0 + 0.0) / 2)


def test_predict_tile_crop_keeps_the_training_crop_tiling(
    write_checkpoint: Callable[..., Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # the default runs the image whole, as validation does; --tile crop is the former default
    from napari_segloss.engine.checkpoint import load_model
    from napari_segloss.engine.inference import predict

    ckpt = write_checkpoint(tmp_path / "m.pt", 1)  # crop 32
    image = np.random.default_rng(3).integers(0, 256, (52, 70), dtype=np.uint8)
    Image.fromarray(image).save(tmp_path / "a.png")
    model, meta = load_model(ckpt)
    for extra, tile in (
        ((), None),
        (("--tile", "crop"), "crop"),
        (("--tile", "32", "32"), (32, 32)),
    ):
        out = tmp_path / f"out{len(extra)}{tile}"
        rc, _, err = _predict(ckpt, tmp_path / "a.png", out, capsys, *extra)
        assert rc == 0, err
        expected, _ = predict(model, image, meta=meta, device="cpu", tile=tile)
        np.testing.assert_array_equal(np.asarray(Image.open(out / "a.png")), expected)
    whole, _ = predict(model, image, meta=meta, device="cpu")
    assert not np.array_equal(whole, predict(model, image, meta=meta, tile="crop")[0])
    rc, _, err = _predict(ckpt, tmp_path / "a.png", tmp_path / "x", capsys, "--tile", "crop", "32")
    _assert_one_line_error(rc, err, "--tile", "'crop' alone")
    # refused before anything is written: no empty output folder (README, Errors)
    rc, _, err = _predict(ckpt, tmp_path / "a.png", tmp_path / "y", capsys, "--tile", "32")
    assert rc == 2 and "tile" in err, err
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()
    with pytest.raises(SystemExit) as usage:
        _predict(ckpt, tmp_path / "a.png", tmp_path / "x", capsys, "--tile", "big")
    assert usage.value.code == 2
    assert "expected a positive size or 'crop', got 'big'" in capsys.readouterr().err
    with pytest.raises(ValueError, match="tile: expected None, 'crop'"):
        predict(model, image, meta=meta, tile="whole")


def test_ctrl_c_while_threads_are_set_up_is_an_interrupt(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--threads`` imports torch (a second or two) before the command runs: a Ctrl-C then
    printed a traceback instead of "interrupted" and exit code 130."""
    import torch

    real, calls = torch.set_num_threads, []

    def ctrl_c(n: int) -> None:
        calls.append(n)
        if len(calls) == 1:  # the CLI's call; fixtures' teardown sets threads back
            raise KeyboardInterrupt
        real(n)

    monkeypatch.setattr(torch, "set_num_threads", ctrl_c)
    assert main(["losses", "--threads", "1"]) == 130
    assert capsys.readouterr().err.strip() == "segloss losses: interrupted"


def test_a_folder_with_run_files_but_no_checkpoint_says_how_to_start_again(
    squares_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from napari_segloss.engine.config import config_yaml, load_config

    out = tmp_path / "run"
    out.mkdir()
    config = tmp_path / "c.yaml"
    cfg = load_config({"data": {"root": str(squares_root), "size": [32, 32]}, "output": str(out)})
    config.write_text(config_yaml(cfg))
    (out / "config.yaml").write_text(config_yaml(cfg))  # a run that never wrote checkpoint.pt
    assert main(["train", "--config", str(config), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "it has no checkpoint to resume; choose another output or set train.overwrite" in err
    assert main(["train", "--config", str(config), "--no-progress", "--resume"]) == 2
    err = capsys.readouterr().err
    assert "no checkpoint to resume from" in err and "start it again with train.overwrite" in err


def test_predictions_of_more_than_256_classes_keep_their_labels(tmp_path: Path) -> None:
    """Labels of a 300-class model were cast to uint8 in NIfTI (wrapped modulo 256) and could
    not be written as PNG at all ("cannot write mode I as PNG")."""
    import nibabel as nib

    from napari_segloss._cli_io import write_prediction

    labels = np.arange(4 * 5 * 3, dtype=np.int32).reshape(3, 5, 4) * 5  # (Z, Y, X), up to 295
    volume = nib.Nifti1Image(np.zeros((4, 5, 3), np.float32), np.eye(4))
    for sub in ("n", "p", "s"):
        (tmp_path / sub).mkdir()
    path = write_prediction(
        tmp_path / "n", tmp_path / "v.nii.gz", labels, None, img=volume, meta={}
    )
    saved = np.asarray(nib.load(path).dataobj)
    assert saved.dtype == np.uint16 and np.array_equal(saved, labels.transpose(2, 1, 0))
    flat = labels[0]
    path = write_prediction(tmp_path / "p", tmp_path / "a.png", flat, None, img=None, meta={})
    assert np.array_equal(np.asarray(Image.open(path)), flat)
    small = (flat % 3).astype(np.uint8)  # up to 256 classes: uint8 as before
    path = write_prediction(tmp_path / "s", tmp_path / "a.png", small, None, img=None, meta={})
    assert np.asarray(Image.open(path)).dtype == np.uint8


@pytest.mark.parametrize("fmt", ["png", "tif"])
def test_predictions_of_a_tagged_photo_carry_its_orientation(tmp_path: Path, fmt: str) -> None:
    """The labels of an EXIF-tagged photo were written without the tag: photo viewers turned
    the photo and not its labels, so the two no longer overlaid."""
    import tifffile

    from napari_segloss._cli_io import write_prediction
    from napari_segloss.data.io import exif_orientation, read_mask

    photo = tmp_path / "photo.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # viewers turn it 90 degrees clockwise
    Image.fromarray(np.zeros((4, 6, 3), np.uint8)).save(photo, exif=exif)
    labels = np.zeros((4, 6), np.uint8)
    labels[0, :2] = 1  # the stored top-left corner
    probs = np.stack([1.0 - labels, labels]).astype(np.float32)
    out = tmp_path / "out"
    out.mkdir()
    path = write_prediction(out, photo, labels, probs, img=None, meta={}, fmt=fmt)
    assert np.array_equal(read_mask(path), labels)  # stored pixels, as napari shows them
    if fmt == "tif":  # our readers (tifffile) ignore a TIFF's tag: check that it is there
        with tifffile.TiffFile(path) as tif:
            assert tif.pages[0].tags["Orientation"].value == 6
    else:
        assert exif_orientation(path) == 6
        with Image.open(path) as label_img, Image.open(photo) as photo_img:
            turned = np.asarray(ImageOps.exif_transpose(label_img))
            assert turned.shape == np.asarray(ImageOps.exif_transpose(photo_img)).shape[:2]
            assert turned[0, -1] == 1  # turned with the photo: the corner is now top-right
    with tifffile.TiffFile(out / "photo_probs.tif") as tif:
        assert tif.pages[0].tags["Orientation"].value == 6

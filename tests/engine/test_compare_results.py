"""The comparison results format and its reader, on hand-made folders (no training)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from napari_segloss.engine.compare_results import (
    CompareResults,
    CompareRun,
    heldout_path,
    read_compare,
    write_heldout,
)
from napari_segloss.engine.events import CompareRunInfo, CompareRunProgress, TrainStep
from napari_segloss.engine.loss_spec import LossSpec

# (loss label, seed) -> (dice, hd95)
SCORES = {
    ("ce", 0): (0.80, 12.0),
    ("ce", 1): (0.84, 10.0),
    ("dice", 0): (0.86, 20.0),
    ("dice", 1): (0.86, 22.0),
    ("pm_dice:gamma=2", 0): (0.82, 6.0),
}


def make_folder(root: Path, failed: tuple[str, int] | None = ("pm_dice:gamma=2", 1)) -> Path:
    """A comparison folder as iter_compare leaves it: compare.json, runs with eval.json."""
    specs = [LossSpec.from_any(label) for label in ("ce", "dice", "pm_dice:gamma=2")]
    manifest = {
        "format": "napari-segloss compare",
        "version": 1,
        "title": "hand-made",
        "losses": [s.to_dict() for s in specs],
        "seeds": [0, 1],
    }
    root.mkdir(parents=True)
    (root / "compare.json").write_text(json.dumps(manifest))
    for (label, seed), (dice, hd95) in SCORES.items():
        run = root / "runs" / LossSpec.from_any(label).folder / f"seed{seed}"
        run.mkdir(parents=True)
        per_class = {"1": {"dice": dice, "iou": dice - 0.1, "precision": dice, "recall": dice,
                           "nsd": dice / 2, "hd95": hd95}}  # fmt: skip
        (run / "eval.json").write_text(json.dumps({"split": "test", "per_class": per_class}))
        (run / "best.pt").write_bytes(b"weights")
    if failed is not None:
        run = root / "runs" / LossSpec.from_any(failed[0]).folder / f"seed{failed[1]}"
        run.mkdir(parents=True)
        (run / "FAILED.txt").write_text("Traceback ...\nRuntimeError: CUDA out of memory\n")
    return root


def test_table_means_stds_ranks_and_sorting(tmp_path: Path) -> None:
    results = read_compare(make_folder(tmp_path / "c"))
    assert results.title == "hand-made" and results.seeds == [0, 1]
    rows = {r.loss: r for r in results.table()}
    assert rows["ce"].mean["mDice"] == pytest.approx(82.0)
    assert rows["ce"].std["mDice"] == pytest.approx(math.sqrt(8.0))  # sample std of 80, 84
    assert rows["ce"].mean["mHD95"] == pytest.approx(11.0)  # pixels, not %
    assert math.isnan(rows["pm_dice:gamma=2"].std["mDice"])  # one ok run
    assert (rows["pm_dice:gamma=2"].n_ok, rows["pm_dice:gamma=2"].n_failed) == (1, 1)
    assert {k: r.rank for k, r in rows.items()} == {"dice": 1, "pm_dice:gamma=2": 2, "ce": 2}
    # HD95: lower is better
    by_hd95 = results.table("hd95", sort_by="hd95")
    assert [r.loss for r in by_hd95] == ["pm_dice:gamma=2", "ce", "dice"]
    assert [r.rank for r in by_hd95] == [1, 2, 3]
    ascending = results.table(sort_by="mDice", descending=False)
    assert [r.loss for r in ascending] == ["ce", "pm_dice:gamma=2", "dice"]  # ties: grid order
    assert [r.loss for r in results.table(sort_by="name")] == ["ce", "dice", "pm_dice:gamma=2"]
    # the best loss and the checkpoint of its best seed (dice: seeds tie at 0.86 -> first)
    best = results.best("Dice")
    assert (best.loss, best.seed, best.metric) == ("dice", 0, "mDice")
    assert best.checkpoint == tmp_path / "c" / "runs" / "dice" / "seed0" / "best.pt"
    best = results.best("hd95")
    assert (best.loss, best.seed) == ("pm_dice:gamma=2", 0) and best.mean == pytest.approx(6.0)
    assert results.best("mHD95").loss == "pm_dice:gamma=2"
    with pytest.raises(ValueError, match="metric: expected one of mDice"):
        results.table("accuracy")


def test_an_empty_prediction_has_infinite_hd95_ranked_last(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "c", failed=None)
    path = root / "runs" / "dice" / "seed1" / "eval.json"
    data = json.loads(path.read_text())
    data["per_class"]["1"]["hd95"] = math.inf  # an empty prediction (json writes Infinity)
    path.write_text(json.dumps(data))
    results = read_compare(root)
    dice = results.table("hd95")[1]
    assert dice.mean["mHD95"] == math.inf and dice.cell("mHD95") == "inf" and dice.rank == 3
    assert results.table("hd95", sort_by="hd95")[-1].loss == "dice"
    assert "| inf | 3 |" in results.to_markdown(rank_by="hd95")


def test_exports(tmp_path: Path) -> None:
    results = read_compare(make_folder(tmp_path / "c"))
    md = results.to_markdown()
    lines = md.splitlines()
    assert lines[0] == "### hand-made"
    assert lines[2].startswith("| Loss functions | mDice | mIoU | mNSD | mPrec. | mRec. | mHD95 |")
    assert "| Dice | **86.00 ± 0.00** |" in md  # best mean in bold
    assert "| **6.00** | 2 | 1 (1 failed) |" in md  # lowest HD95 in bold; rank 2; runs
    assert "pm_dice:gamma=2 seed 1: RuntimeError: CUDA out of memory" in md
    assert md.index("| Dice |") < md.index("| PM Dice (gamma=2) |")  # grid order
    assert results.to_markdown(sort=True).index("| Dice |") < results.to_markdown(sort=True).index(
        "| CE |"
    )
    csv_lines = results.to_csv(tmp_path / "r.csv").splitlines()
    assert (tmp_path / "r.csv").read_text().splitlines() == csv_lines
    assert csv_lines[1].startswith("ce,CE,2,0,82.0000,2.8284,")
    assert csv_lines[1].endswith(",2,0")  # rank, n_pending
    assert "Rank (mHD95)" in results.to_markdown(rank_by="hd95")
    # the footer says how a run's value is aggregated (images per class, then classes) and
    # why a row with one finished seed shows no ±
    assert "its mean over the images per class (NaN, a class absent from both masks" in md
    assert "then over the classes" in md and "(no ± with one finished run)" in md
    runs_csv = results.runs_csv().splitlines()
    assert runs_csv[0].startswith("loss,seed,status,mDice")
    assert len(runs_csv) == 7 and ",failed," in runs_csv[-1]


def test_pending_and_stopped_runs_are_reported_not_counted(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "c", failed=None)
    (root / "runs" / "pm_dice__gamma=2" / "seed1").mkdir()
    (root / "runs" / "pm_dice__gamma=2" / "seed1" / "checkpoint.pt").write_bytes(b"x")
    results = read_compare(root)
    assert [r.status for r in results.runs] == ["ok"] * 5 + ["stopped"]
    row = results.table()[2]
    assert (row.n_ok, row.n_failed, row.n_pending) == (1, 0, 1)
    assert "1 (1 not finished)" in results.to_markdown()
    assert "pm_dice:gamma=2 seed 1: stopped" in results.to_markdown()


def test_folders_from_before_compare_json_are_read_from_runs_csv(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "c")
    results = read_compare(root)
    results.write()
    (root / "compare.json").unlink()
    legacy = read_compare(root)
    assert [(r.loss, r.seed, r.status) for r in legacy.runs] == [
        (r.loss, r.seed, r.status) for r in results.runs
    ]
    assert legacy.to_csv() == results.to_csv()
    with pytest.raises(FileNotFoundError, match="not a loss comparison folder"):
        read_compare(tmp_path)


def test_view_reads_stored_images_and_predictions(tmp_path: Path) -> None:
    root = tmp_path / "c"
    names = ["a.png", "b.png"]
    gts = [np.array([[0, 1], [1, 1]], np.uint8), np.array([[0, 0], [0, 1]], np.uint8)]
    images = [np.full((2, 2, 3), 7, np.uint8), np.full((2, 2, 3), 9, np.uint8)]
    preds = {"ce": [np.array([[1, 1], [0, 1]]), gts[1]], "dice": None}  # dice: no predictions
    runs = []
    for label, pred in preds.items():
        run_dir = root / "runs" / label / "seed0"
        run_dir.mkdir(parents=True)
        per_image = [
            {"name": n, "metrics": {"1": {"dice": d}}}
            for n, d in zip(names, (0.5, 1.0), strict=True)
        ]
        per_class = {"1": {"dice": 0.75, "iou": 0.6, "precision": 1, "recall": 1, "nsd": 1}}
        data = {"split": "val", "per_class": per_class, "per_image": per_image}
        (run_dir / "eval.json").write_text(json.dumps(data))
        if pred is not None:
            arrays = {"names": np.array(names)} | {f"pred_{i}": p for i, p in enumerate(pred)}
            np.savez_compressed(run_dir / "predictions.npz", **arrays)
        runs.append(CompareRun(label, 0, run_dir, status="ok"))
    results = CompareResults(root, runs)
    with pytest.raises(FileNotFoundError, match="held-out images not found"):
        results.view(0)
    path = heldout_path(root, "val", names)
    assert path.parent == root / "heldout" and path.name.startswith("val-")
    write_heldout(path, names, images, gts)
    view = results.view(0)
    assert (view.name, view.split, view.n_images) == ("a.png", "val", 2)
    np.testing.assert_array_equal(view.image, images[0])
    ce, dice = view.cells
    np.testing.assert_array_equal(ce.errors, [[2, 1], [3, 1]])  # FP, TP / FN, TP
    assert ce.dice == 0.5 and ce.title == "CE loss · Dice 50.0 %"
    assert dice.prediction is None and dice.errors is None and "no predictions.npz" in dice.note
    assert dice.dice == 0.5  # the Dice is in eval.json even without stored predictions
    assert results.image_names() == names


def test_loss_specs_from_strings_mappings_and_specs() -> None:
    a = LossSpec.from_any("pm_dice:gamma=2")
    b = LossSpec.from_any({"name": "pm_dice", "params": {"gamma": 2}})
    assert (a.name, a.params, a.label, a.folder) == (
        "pm_dice",
        {"gamma": 2},
        "pm_dice:gamma=2",
        "pm_dice__gamma=2",
    )
    assert (b.label, b.folder, b.display) == (a.label, a.folder, "PM Dice (gamma=2)")
    assert LossSpec.from_any(a) is a
    assert (
        LossSpec("pm_dice", {"gamma": [1, 2], "eps": 1e-6}).label
        == "pm_dice:gamma=[1, 2],eps=1e-06"
    )
    assert LossSpec.from_any("pm_dice:gamma=[1, 2],eps=1e-06").params == {
        "gamma": [1, 2],
        "eps": 1e-6,
    }
    assert LossSpec("ce+pm_dice").display == "CE + PM Dice"
    assert LossSpec("pm_dice", {"gamma": 1.0}, "pm_dice").title == "PM Dice (gamma=1.0)"
    assert LossSpec.from_any({"name": "dice", "label": "my dice"}).folder == "my_dice"
    for bad in ({"loss": "ce"}, {"name": "ce", "weights": 1}, 3, "pm dice"):
        with pytest.raises(ValueError, match="losses"):
            LossSpec.from_any(bad)  # type: ignore[arg-type]


def test_progress_event_to_dict_nests_the_training_event(tmp_path: Path) -> None:
    info = CompareRunInfo(0, 2, "dice", "dice", {}, 0, tmp_path, "Dice")
    step = TrainStep(epoch=1, iteration=3, max_iterations=6, loss=0.5, lr=1e-3)
    d = CompareRunProgress(info, step, 0.5, 0.25).to_dict()
    assert d["type"] == "run_progress" and d["event"]["type"] == "step"
    assert d["run"]["loss"] == "dice" and d["overall"] == 0.25


def test_the_reader_imports_without_torch_or_qt() -> None:
    code = (
        "import sys, napari_segloss.engine.compare_results, napari_segloss.engine.events\n"
        "bad = [m for m in ('torch', 'napari', 'qtpy', 'PyQt5', 'PyQt6', 'PySide2', 'PySide6')"
        " if m in sys.modules]\n"
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_evidence_says_what_the_table_rests_on(tmp_path: Path) -> None:
    """One validation image, one seed, at the training size: the panel crowned a loss for
    60.8 against 59.7 % with nothing saying what the numbers came from."""
    root = make_folder(tmp_path / "c", failed=None)
    assert read_compare(root).evidence().startswith("each run scored on 0 test images")
    for run_dir in (root / "runs").glob("*/seed*"):
        data = json.loads((run_dir / "eval.json").read_text())
        data.update(num_images=1, split="val", distance_units="pixels")
        (run_dir / "eval.json").write_text(json.dumps(data))
        (run_dir / "config.yaml").write_text("data:\n  size: [64, 64]\n")
    said = read_compare(root).evidence()
    assert said == (
        "each run scored on 1 validation image resized to data.size [64, 64] (HD95 in pixels "
        "of that size), 2 seeds: too little to rank losses (add images or seeds)"
    )
    for run_dir in (root / "runs").glob("*/seed*"):
        data = json.loads((run_dir / "eval.json").read_text())
        data["num_images"] = 40
        (run_dir / "eval.json").write_text(json.dumps(data))
    assert read_compare(root).evidence().endswith("[64, 64] (HD95 in pixels of that size), 2 seeds")
    assert CompareResults(tmp_path / "none", []).evidence() == ""

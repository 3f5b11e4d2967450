"""iter_compare with real (tiny) trainings on the bundled Kvasir pairs: the events a napari
worker consumes, the results folder, Stop and resume, refusals and bad inputs.

The scenario of issue 19: 2 losses x 1 seed x 1 epoch on the 32 bundled ``kvasir_train`` pairs,
scored on the 3 unseen ``kvasir`` frames (a tiny U-Net at 64 px: seconds on one CPU thread).
"""

from __future__ import annotations

import json
import math
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from _sample_config import sample_config
from PIL import Image

from napari_segloss.cli import main
from napari_segloss.data.io import read_image, read_mask
from napari_segloss.engine.compare import iter_compare
from napari_segloss.engine.compare_results import read_compare
from napari_segloss.engine.events import (
    CompareDone,
    CompareEvent,
    CompareRunDone,
    CompareRunProgress,
    CompareRunStart,
    CompareStart,
    TrainDone,
    TrainEpoch,
    TrainStart,
    TrainStep,
)
from napari_segloss.engine.loss_spec import LossSpec
from napari_segloss.metrics import evaluate
from napari_segloss.overlay import error_labels
from napari_segloss.samples import sample_files, sample_pairs_dir

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # see tests/conftest.py

LOSSES: list[Any] = ["dice", {"name": "pm_dice", "params": {"gamma": 2.0}}]


def base_config(**data: Any) -> dict[str, Any]:
    """A tiny U-Net on 64 px images for 1 epoch: what every test here trains."""
    cfg = sample_config(**data)
    cfg["optim"] = {"lr": 1.0e-3}
    cfg["train"]["log_every"] = 1
    return cfg


def arrays(name: str) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The bundled pairs ``name`` as in-memory arrays (what napari layers hand over)."""
    files = sample_files(name)
    return [read_image(i) for i, _ in files], [read_mask(m) for _, m in files]


def collect(events: Any, on_event: Callable[[CompareEvent], None] | None = None) -> list[Any]:
    out = []
    for event in events:
        out.append(event)
        if on_event is not None:
            on_event(event)
    return out


def tree(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Any], float]:
    """The issue's scenario run once: ``(output, events, seconds)``."""
    output = tmp_path_factory.mktemp("compare") / "out"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as one_torch_thread, which a module fixture runs before
    try:
        start = time.perf_counter()
        events = collect(
            iter_compare(base_config(test_root="bundled:kvasir"), LOSSES, [0], output, title="toy")
        )
        seconds = time.perf_counter() - start
    finally:
        torch.set_num_threads(threads)
    print(f"\n2 losses x 1 seed x 1 epoch on kvasir_train: {seconds:.1f} s")
    return output, events, seconds


def test_events_name_each_run_and_report_progress(finished: tuple[Path, list[Any], float]) -> None:
    output, events, _ = finished
    start, done = events[0], events[-1]
    assert isinstance(start, CompareStart) and isinstance(done, CompareDone)
    assert [r.loss for r in start.runs] == ["dice", "pm_dice:gamma=2.0"]
    assert [(r.index, r.total, r.seed) for r in start.runs] == [(0, 2, 0), (1, 2, 0)]
    assert start.runs[1].params == {"gamma": 2.0} and start.runs[1].display == "PM Dice (gamma=2.0)"
    assert start.actions == ("train", "train")
    assert done.statuses == ("ok", "ok") and not done.stopped and done.reason == "completed"
    assert done.markdown == (output / "results.md").read_text()
    for index in (0, 1):
        mine = [e for e in events[1:-1] if e.run.index == index]
        assert isinstance(mine[0], CompareRunStart) and isinstance(mine[-1], CompareRunDone)
        inner = [e.event for e in mine[1:-1]]
        assert all(isinstance(e, CompareRunProgress) for e in mine[1:-1])
        assert isinstance(inner[0], TrainStart) and isinstance(inner[-1], TrainDone)
        steps = [e for e in inner if isinstance(e, TrainStep)]
        assert len(steps) == inner[0].max_iterations == 6  # 26 images, batch 4, log_every 1
        (epoch,) = [e for e in inner if isinstance(e, TrainEpoch)]
        assert epoch.val_dice is not None and 0 <= epoch.val_dice <= 1  # live validation Dice
        assert mine[-1].status == "ok" and mine[-1].checkpoint == mine[0].run.run_dir / "best.pt"
        assert mine[-1].metrics["mDice"] >= 0
    run_fractions = [e.run_progress for e in events if isinstance(e, CompareRunProgress)]
    assert run_fractions[-1] == 1.0
    overall = [e.overall for e in events]
    assert overall == sorted(overall) and overall[0] == 0.0 and overall[-1] == 1.0
    assert any(0.4 < v < 0.6 for v in overall)  # half-way after the first of two runs


def test_results_folder_table_exports_and_best(finished: tuple[Path, list[Any], float]) -> None:
    output, events, _ = finished
    for name in ("compare.json", "runs.csv", "results.csv", "results.md"):
        assert (output / name).is_file(), name
    for folder in ("dice", "pm_dice__gamma=2.0"):
        assert (output / "runs" / folder / "seed0" / "predictions.npz").is_file()
    results = read_compare(output)
    assert results.heldout == {"split": "test", "source": "data.test_root 'bundled:kvasir'"}
    rows = results.table()
    assert [r.loss for r in rows] == ["dice", "pm_dice:gamma=2.0"]
    assert sorted(r.rank for r in rows) in ([1, 2], [1, 1])
    assert all(r.n_ok == 1 and math.isfinite(r.mean["mHD95"]) for r in rows)
    by_rank = results.table(sort_by="rank")
    assert by_rank[0].rank == 1
    # the table's numbers are the runs' eval.json numbers
    done = {e.run.loss: e for e in events if isinstance(e, CompareRunDone)}
    assert rows[0].mean["mDice"] == pytest.approx(done["dice"].metrics["mDice"])
    csv_text = results.to_csv()
    assert csv_text == (output / "results.csv").read_text()
    assert csv_text.splitlines()[0].startswith("loss,name,n_ok,n_failed,mDice_mean,mDice_std")
    assert len(csv_text.splitlines()) == 3
    md = results.to_markdown(sort=True)
    assert md.count("\n| ") == 3 and "| Dice |" in md and "| PM Dice (gamma=2.0) |" in md
    assert "### toy" in results.to_markdown()
    best = results.best("dice")
    assert best is not None and best.loss == by_rank[0].loss
    assert best.checkpoint is not None and best.checkpoint.name == "best.pt"
    assert best.checkpoint.is_file()


def test_per_image_predictions_and_overlays(finished: tuple[Path, list[Any], float]) -> None:
    output, _, _ = finished
    results = read_compare(output)
    names = results.image_names()
    assert [Path(n).name for n in names] == [img.name for img, _ in sample_files("kvasir")]
    view = results.view(2)
    assert view.split == "test" and view.n_images == 3 and view.name == names[2]
    assert view.image.shape == (64, 64, 3) and view.image.dtype == np.uint8
    assert view.ground_truth.shape == (64, 64) and view.ground_truth.max() == 1
    assert [c.loss for c in view.cells] == ["dice", "pm_dice:gamma=2.0"]
    eval_json = json.loads((output / "runs" / "dice" / "seed0" / "eval.json").read_text())
    for cell in view.cells:
        assert cell.prediction is not None and cell.prediction.shape == (64, 64)
        np.testing.assert_array_equal(cell.errors, error_labels(cell.prediction, view.ground_truth))
        # the stored prediction is the one eval.json scored: its Dice is the per-image Dice
        assert cell.dice == pytest.approx(evaluate(cell.prediction, view.ground_truth)[1]["dice"])
        assert (
            cell.title.endswith(f"loss · Dice {100 * cell.dice:.1f} %")
            and cell.display in cell.title
        )
    assert view.cells[0].dice == pytest.approx(eval_json["per_image"][2]["metrics"]["1"]["dice"])
    assert results.view(-1).index == 2
    with pytest.raises(IndexError, match="3 held-out images"):
        results.view(3)


def test_changed_setting_is_refused_with_the_differing_keys(
    finished: tuple[Path, list[Any], float], tmp_path: Path
) -> None:
    output = tmp_path / "out"
    shutil.copytree(finished[0], output)
    before = tree(output)
    cfg = base_config(test_root="bundled:kvasir")
    cfg["train"]["epochs"] = 2
    cfg["optim"]["lr"] = 2.0e-3
    with pytest.raises(ValueError, match="other settings") as info:
        collect(iter_compare(cfg, LOSSES, [0], output))
    message = str(info.value)
    assert "2 run(s)" in message and "train.epochs: saved 1, requested 2" in message
    assert "optim.lr: saved 0.001, requested 0.002" in message
    assert tree(output) == before  # nothing written, nothing retrained
    # a key that does not change results may differ: everything is reused
    cfg = base_config(test_root="bundled:kvasir")
    cfg["train"]["log_every"] = 3
    events = collect(iter_compare(cfg, LOSSES, [0], output))
    assert events[0].actions == ("reuse", "reuse")
    assert not any(isinstance(e, CompareRunProgress) for e in events)


def test_stop_during_the_second_run_keeps_the_first_and_a_rerun_resumes(tmp_path: Path) -> None:
    """In-memory arrays (napari layers), held-out arrays, Stop, then re-open the folder."""
    data, heldout = arrays("kvasir_train"), arrays("kvasir")
    output = tmp_path / "out"
    stop = {"now": False}

    def press_stop(event: CompareEvent) -> None:  # what the Stop button does, from the worker
        if isinstance(event, CompareRunProgress) and event.run.index == 1:
            stop["now"] = stop["now"] or isinstance(event.event, TrainStep)

    events = collect(
        iter_compare(
            base_config(), LOSSES, [0], output, data=data, heldout=heldout,
            should_stop=lambda: stop["now"],
        ),
        press_stop,
    )  # fmt: skip
    done = events[-1]
    assert done.stopped and not done.interrupted and done.statuses == ("ok", "stopped")
    assert "stopped by request after 1 of " in done.reason
    first, second = (
        output / "runs" / "dice" / "seed0",
        output / "runs" / "pm_dice__gamma=2.0" / "seed0",
    )
    assert (first / "eval.json").is_file() and (first / "predictions.npz").is_file()
    assert (second / "checkpoint.pt").is_file() and not (second / "eval.json").exists()
    assert "Not finished" in done.markdown and "pm_dice:gamma=2.0 seed 0: stopped" in done.markdown
    reopened = read_compare(output)
    assert reopened.heldout["source"] == "held-out arrays"
    assert [r.status for r in reopened.runs] == ["ok", "stopped"]
    assert [r.n_ok for r in reopened.table()] == [1, 0]
    kept = (first / "eval.json").read_bytes()

    events = collect(iter_compare(base_config(), LOSSES, [0], output, data=data, heldout=heldout))
    assert events[0].actions == ("reuse", "resume")
    resumed = [e.event for e in events if isinstance(e, CompareRunProgress)]
    assert isinstance(resumed[0], TrainStart) and resumed[0].iteration == 1  # not from scratch
    assert events[-1].statuses == ("ok", "ok") and not events[-1].stopped
    assert (first / "eval.json").read_bytes() == kept
    view = read_compare(output).view(0)
    assert view.name == "heldout[0]" and view.image.shape == (64, 64, 3)
    assert all(c.prediction is not None for c in view.cells)
    # other held-out arrays are other settings: refused, in words (the fingerprints alone,
    # "saved 'layers:3f2a…', requested 'layers:…'", told a person nothing)
    heldout[1][0][0, 0] = 1 - heldout[1][0][0, 0]
    said = r"data\.test_root: made on other held-out layers \(images or masks\) than those"
    with pytest.raises(ValueError, match=said):
        collect(iter_compare(base_config(), LOSSES, [0], output, data=data, heldout=heldout))


def test_a_subset_of_the_grid_is_refused_a_superset_extends_it(
    finished: tuple[Path, list[Any], float], tmp_path: Path
) -> None:
    """Re-run with one loss of two in the same folder: its tables held that loss alone and
    read_compare saw no more (the other run's folder stayed, unlisted). Refused, nothing
    written; a grid that keeps every loss and seed and adds one goes on."""
    output = tmp_path / "out"
    shutil.copytree(finished[0], output)
    before = tree(output)
    cfg = base_config(test_root="bundled:kvasir")
    with pytest.raises(ValueError, match="leaves out") as info:
        collect(iter_compare(cfg, LOSSES[:1], [0], output))
    assert f"this one leaves out {LossSpec.from_any(LOSSES[1]).label}" in str(info.value)
    with pytest.raises(ValueError, match="leaves out seed 0"):
        collect(iter_compare(cfg, LOSSES, [1], output))
    assert tree(output) == before

    def quick(cfg: Any, **_: Any) -> Any:  # the added seed's runs: no need to train them
        yield TrainDone(
            run_dir=Path(cfg.output), checkpoint=None, best_checkpoint=None, best_dice=None,
            stopped=True, reason="stopped by request", interrupted=False, epochs=0, iteration=0,
        )  # fmt: skip

    events = collect(iter_compare(cfg, LOSSES, [0, 1], output, train_fn=quick))
    assert events[0].actions == ("reuse", "train", "reuse", "train")


def test_a_folder_with_files_a_comparison_writes_is_refused(tmp_path: Path) -> None:
    (tmp_path / "results.md").write_text("my own notes")
    with pytest.raises(ValueError, match=r"is not a comparison folder, but holds results\.md"):
        collect(iter_compare(base_config(), ["dice"], [0], tmp_path))
    assert (tmp_path / "results.md").read_text() == "my own notes"


def test_a_non_finite_loss_fails_that_run_and_the_grid_goes_on(tmp_path: Path) -> None:
    def diverging(cfg: Any, **_: Any) -> Any:
        yield TrainDone(
            run_dir=Path(cfg.output), checkpoint=None, best_checkpoint=None, best_dice=None,
            stopped=True, reason="non-finite loss (nan) at iteration 3 (epoch 1)",
            interrupted=False, epochs=0, iteration=3,
        )  # fmt: skip

    events = collect(iter_compare(base_config(), ["dice", "ce"], [0], tmp_path, train_fn=diverging))
    assert events[-1].statuses == ("failed", "failed") and not events[-1].stopped
    failed = [e for e in events if isinstance(e, CompareRunDone)]
    assert all("non-finite loss" in e.error for e in failed)
    assert (tmp_path / "runs" / "ce" / "seed0" / "FAILED.txt").is_file()
    # the next comparison retrains failed runs from scratch
    starts = collect(iter_compare(base_config(), ["dice", "ce"], [0], tmp_path, train_fn=diverging))
    assert starts[0].actions == ("retry", "retry")


# -- bad inputs: the same one-line messages as the CLI, nothing written -------------------------


def empty_folder(root: Path) -> dict[str, str]:
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    return {"root": str(root)}


def images_only(root: Path) -> dict[str, str]:
    (root / "images").mkdir(parents=True)
    shutil.copy(sample_files("kvasir")[0][0], root / "images")
    return {"root": str(root)}


def bad_heldout_mask(root: Path) -> dict[str, str]:
    """A held-out folder whose second mask has label 2 (the model is binary)."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for k, (image, mask) in enumerate(sample_files("kvasir")):
        shutil.copy(image, root / "images")
        labels = read_mask(mask) * (2 if k == 1 else 1)
        Image.fromarray(labels.astype(np.uint8)).save(root / "masks" / f"{mask.stem}.png")
    return {"test_root": str(root)}


FOLDER_CASES = [
    # (what, losses, data folder maker or None, extra data keys, message)
    (
        "unknown loss",
        ["dice", "no_such_loss"],
        None,
        {},
        "losses: 'no_such_loss': unknown loss name",
    ),
    ("unknown loss parameter", ["pm_dice:gama=2"], None, {}, "got unknown parameter(s) ['gama']"),
    ("compound with an unknown part", ["ce+nope"], None, {}, "unknown loss name 'nope'"),
    ("duplicate loss", ["pm_dice:gamma=2", "pm_dice:gamma=2.0"], None, {}, "same loss"),
    ("empty folder", ["dice"], empty_folder, {}, "contains no files with extension"),
    (
        "images without a masks folder",
        ["dice"],
        images_only,
        {},
        "has no 'masks' folder (data.masks); its sub-folders: images",
    ),
    (  # one level too deep: the root key is named (it said 'data.images')
        "held-out root one level too deep",
        ["dice"],
        None,
        {"test_root": str(sample_pairs_dir("kvasir") / "images")},
        "config key 'data.test_root':",
    ),
    ("nothing to score on", ["dice"], None, {"val_fraction": 0.0}, "no run could be scored"),
    ("held-out folder missing", ["dice"], None, {"test_root": "/no/such"}, "'data.test_root'"),
    ("bad held-out mask", ["dice"], bad_heldout_mask, {}, "mask has label 2"),
]


@pytest.mark.parametrize(
    ("losses", "make", "extra", "message"),
    [c[1:] for c in FOLDER_CASES],
    ids=[c[0] for c in FOLDER_CASES],
)
def test_bad_inputs_raise_the_cli_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], losses: list[str],
    make: Callable[[Path], dict[str, str]] | None, extra: dict[str, Any], message: str,
) -> None:  # fmt: skip
    cfg = base_config(**extra)
    if make is not None:
        cfg["data"].update(make(tmp_path / "data"))
    output = tmp_path / "out"
    with pytest.raises(ValueError) as info:
        collect(iter_compare(cfg, losses, [0], output))
    assert message in str(info.value) and "\n" not in str(info.value)
    assert not output.exists()
    config = tmp_path / "c.json"  # JSON is YAML
    config.write_text(json.dumps(cfg))
    argv = ["compare", "--config", str(config), "--losses", *losses, "--seeds", "0"]
    assert main([*argv, "--output", str(output)]) == 2
    assert capsys.readouterr().err == f"segloss compare: error: {info.value}\n"
    assert not output.exists()


def test_bad_array_inputs(tmp_path: Path) -> None:
    images, masks = arrays("kvasir")
    cases = [
        ({"data": (images, None)}, "data: no masks given"),
        ({"data": (images, masks[:2])}, "data: 3 image(s) but 2 mask(s)"),
        ({"data": (images, masks), "heldout": (images[:1], None)}, "heldout: no masks given"),
        ({"heldout": (images, masks)}, "held-out arrays need the training data as arrays"),
        ({"data": ([], [])}, "data: no images given"),
    ]
    masks_bad = [m.astype(np.uint8) * 2 for m in masks]  # label 2 for a binary model
    cases.append(({"data": (images, masks_bad)}, "mask has label 2"))
    for kwargs, message in cases:
        with pytest.raises(ValueError) as info:
            collect(iter_compare(base_config(), ["dice"], [0], tmp_path / "out", **kwargs))
        assert message in str(info.value), (kwargs.keys(), str(info.value))
    assert not (tmp_path / "out").exists()


def test_closing_the_generator_releases_the_folder(tmp_path: Path) -> None:
    """A consumer that drops the generator mid-run (a napari worker quit) leaves no lock behind:
    the next comparison reuses the finished run and trains the other again."""
    events = iter_compare(base_config(), LOSSES, [0], tmp_path)
    for event in events:
        if isinstance(event, CompareRunProgress) and event.run.index == 1:
            if isinstance(event.event, TrainStep):
                break
    events.close()  # type: ignore[attr-defined]
    again = collect(iter_compare(base_config(), LOSSES, [0], tmp_path))
    assert again[0].actions == ("reuse", "train") and again[-1].statuses == ("ok", "ok")

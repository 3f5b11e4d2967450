"""compare: losses x seeds grid, failure tolerance, resumability and paper-shaped tables."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest

from napari_segloss.engine.compare import (
    display_name,
    metrics_from_eval,
    parse_loss_spec,
    run_compare,
    write_tables,
)
from napari_segloss.engine.config import save_config
from napari_segloss.engine.events import TrainDone
from napari_segloss.samples import sample_pairs_dir


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("ce", ("ce", {})),
        ("ce+pm_dice", ("ce+pm_dice", {})),
        ("pm_dice:gamma=2", ("pm_dice", {"gamma": 2})),
        ("pm_dice:gamma=[1, 2],eps=1e-6", ("pm_dice", {"gamma": [1, 2], "eps": 1e-6})),
        ("tversky:alpha=0.3,beta=0.7", ("tversky", {"alpha": 0.3, "beta": 0.7})),
    ],
)
def test_parse_loss_spec(spec: str, expected: tuple[str, dict]) -> None:
    name, params = parse_loss_spec(spec)
    assert name == expected[0]
    assert params == expected[1]


@pytest.mark.parametrize("spec", ["", "pm dice", "ce:gamma", "ce:=1", "../x", "ce:a=[1"])
def test_parse_loss_spec_rejects(spec: str) -> None:
    with pytest.raises(ValueError, match="losses"):
        parse_loss_spec(spec)


@pytest.mark.parametrize(
    ("label", "name"),
    [
        ("ce", "CE"),
        ("focal+pm_dice", "Focal CE + PM Dice"),
        ("topk_ce+topk_dice", "TopK CE + TopK Dice"),
        ("pm_dice:gamma=2", "PM Dice (gamma=2)"),
        ("focal_log_wsdice", "Focal − log(WSDice)"),
        ("my_loss", "my_loss"),
    ],
)
def test_display_name_like_the_paper(label: str, name: str) -> None:
    assert display_name(label) == name


def test_metrics_from_eval_binary_in_percent() -> None:
    data = {
        "per_class": {
            "1": {
                "dice": 0.9,
                "iou": 0.8,
                "precision": 0.95,
                "recall": 0.85,
                "nsd": 0.5,
                "hd95": 3.5,
            }
        }
    }
    metrics, names = metrics_from_eval(data)
    # HD95 is a distance (pixels), not a fraction: not scaled to %
    assert metrics == pytest.approx(
        {"mDice": 90.0, "mIoU": 80.0, "mNSD": 50.0, "mPrec.": 95.0, "mRec.": 85.0, "mHD95": 3.5}
    )
    assert names == ["class 1"]


def test_metrics_from_eval_multiclass_drops_background_skips_nan_names_classes() -> None:
    data = {
        "class_names": ["background", "RV", "MYO", "LV"],
        "metrics": {
            "0": {"dice": 0.99, "iou": 0.98, "precision": 0.99, "recall": 0.99, "nsd": 0.99},
            "1": {"dice": 0.6, "iou": 0.5, "precision": 0.7, "recall": 0.5, "nsd": float("nan")},
            "2": {"dice": 0.8, "iou": 0.7, "precision": 0.8, "recall": 0.8, "nsd": 0.6},
            "3": {"dice": 0.7, "iou": 0.6, "precision": 0.9, "recall": 0.5, "nsd": 0.8},
        },
    }
    metrics, names = metrics_from_eval(data)
    assert names == ["RV", "MYO", "LV"]
    assert metrics["mDice"] == pytest.approx(70.0)  # (60 + 80 + 70) / 3, background excluded
    assert metrics["mNSD"] == pytest.approx(70.0)  # NaN skipped: (60 + 80) / 2
    assert metrics["Dice RV"] == pytest.approx(60.0)
    assert metrics["Dice LV"] == pytest.approx(70.0)


def test_metrics_from_eval_rejects_unknown_layout() -> None:
    with pytest.raises(ValueError, match=r"eval\.json"):
        metrics_from_eval({"accuracy": 0.9})


# The data must exist (compare checks it before anything runs); the stub trainings never read it.
BASE: dict[str, Any] = {
    "data": {"kind": "folder", "root": str(sample_pairs_dir("kvasir_train"))},
    "model": {"encoder": "resnet18"},
    "loss": {"name": "pm_dice", "params": {"gamma": 2.0}},
    "train": {"epochs": 1},
}

# Dice per (loss, seed): hand-chosen so means and stds are easy to check.
DICE = {
    ("ce", 0): 0.80,
    ("ce", 1): 0.82,
    ("ce", 2): 0.84,
    ("pm_dice", 0): 0.90,
    ("pm_dice", 1): 0.86,
}


def _fake_train(
    calls: list[Any],
    fail: set[tuple[str, int]] = frozenset(),  # type: ignore[assignment]
    resumes: list[bool] | None = None,
):
    def train(cfg: Any, resume: bool = False) -> None:
        calls.append(cfg)
        if resumes is not None:
            resumes.append(resume)
        key = (cfg.loss.name, cfg.train.seed)
        if key in fail:
            raise RuntimeError("CUDA out of memory (simulated)")
        d = DICE[key]
        out = Path(cfg.output)
        out.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out / "config.yaml")  # what a real run writes: compare checks it
        per_class = {"1": {"dice": d, "iou": d - 0.1, "precision": d, "recall": d, "nsd": d / 2}}
        (out / "eval.json").write_text(json.dumps({"per_class": per_class}))

    return train


def test_grid_survives_failure_writes_tables_and_resumes(tmp_path: Path) -> None:
    calls: list[Any] = []
    logs: list[str] = []
    runs = run_compare(
        BASE, ["ce", "pm_dice"], [0, 1, 2], tmp_path, ["train.epochs=2"],
        train_fn=_fake_train(calls, fail={("pm_dice", 2)}), log=logs.append,
    )  # fmt: skip
    assert len(calls) == 6
    # Config fixed except loss and seed; base loss params only for the base loss.
    assert all(c.train.epochs == 2 for c in calls)
    assert [c.loss.params for c in calls] == [{}] * 3 + [{"gamma": 2.0}] * 3
    assert calls[0].output == tmp_path / "runs" / "ce" / "seed0"
    assert [r.status for r in runs] == ["ok"] * 5 + ["failed"]
    assert "out of memory" in runs[-1].error
    assert (tmp_path / "runs" / "pm_dice" / "seed2" / "FAILED.txt").is_file()

    text = write_tables(tmp_path, runs, title="toy")
    # ce: dice 80, 82, 84 -> 82.00 ± 2.00; pm_dice: 90, 86 -> 88.00 ± 2.83 (sample std).
    assert "| CE | 82.00 ± 2.00 |" in text
    assert "| PM Dice | **88.00 ± 2.83** |" in text
    assert "2 (1 failed)" in text
    assert "pm_dice seed 2: RuntimeError: CUDA out of memory" in text
    with (tmp_path / "results.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert [r["loss"] for r in rows] == ["ce", "pm_dice"]
    assert float(rows[0]["mDice_mean"]) == pytest.approx(82.0)
    assert float(rows[0]["mDice_std"]) == pytest.approx(2.0)
    assert float(rows[1]["mIoU_mean"]) == pytest.approx(78.0)
    assert rows[1]["n_failed"] == "1"
    with (tmp_path / "runs.csv").open() as fh:
        assert sum(1 for r in csv.DictReader(fh) if r["status"] == "failed") == 1

    # Resume: finished runs are skipped, only the failed one is trained again.
    calls2: list[Any] = []
    resumes: list[bool] = []
    DICE[("pm_dice", 2)] = 0.88
    # ce seed 1 looks interrupted: checkpoint.pt but no eval.json -> resumed, not restarted.
    (tmp_path / "runs" / "ce" / "seed1" / "eval.json").unlink()
    (tmp_path / "runs" / "ce" / "seed1" / "checkpoint.pt").write_bytes(b"x")
    try:
        runs2 = run_compare(
            BASE, ["ce", "pm_dice"], [0, 1, 2], tmp_path, ["train.epochs=2"],
            train_fn=_fake_train(calls2, resumes=resumes), log=logs.append,
        )  # fmt: skip
    finally:
        del DICE[("pm_dice", 2)]
    assert [(c.loss.name, c.train.seed) for c in calls2] == [("ce", 1), ("pm_dice", 2)]
    assert resumes == [True, False]
    assert calls2[1].train.overwrite  # the failed run restarts from scratch
    assert not (tmp_path / "runs" / "pm_dice" / "seed2" / "FAILED.txt").exists()
    assert all(r.status == "ok" for r in runs2)
    text2 = write_tables(tmp_path, runs2)
    assert "| PM Dice | **88.00 ± 2.00** |" in text2  # 90, 86, 88
    assert any("reused" in line for line in logs)


def _tree(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def test_rerun_with_other_settings_is_refused_before_anything_runs(tmp_path: Path) -> None:
    """Reusing runs made with other settings would tabulate old results as new ones."""
    run_compare(
        BASE, ["ce", "pm_dice"], [0, 1], tmp_path, ["train.epochs=2"], train_fn=_fake_train([]),
        log=lambda s: None,
    )  # fmt: skip
    before = _tree(tmp_path)
    calls: list[Any] = []
    with pytest.raises(ValueError, match=r"4 run\(s\).*other settings") as info:
        run_compare(
            BASE, ["ce", "pm_dice"], [0, 1], tmp_path, ["train.epochs=5"],
            train_fn=_fake_train(calls), log=lambda s: None,
        )  # fmt: skip
    assert "train.epochs: saved 2, requested 5" in str(info.value)
    assert "seed0" in str(info.value) and "\n" not in str(info.value)
    assert calls == [] and _tree(tmp_path) == before
    # keys that do not change results may differ: the runs are reused, nothing retrained
    run_compare(
        BASE, ["ce", "pm_dice"], [0, 1], tmp_path, ["train.epochs=2", "train.num_workers=0"],
        train_fn=_fake_train(calls), log=lambda s: None,
    )  # fmt: skip
    assert calls == []
    # a finished run without config.yaml cannot be vouched for either
    (tmp_path / "runs" / "ce" / "seed0" / "config.yaml").unlink()
    with pytest.raises(ValueError, match=r"no config\.yaml"):
        run_compare(
            BASE, ["ce", "pm_dice"], [0, 1], tmp_path, ["train.epochs=2"],
            train_fn=_fake_train(calls), log=lambda s: None,
        )  # fmt: skip


def test_single_seed_shows_mean_only_and_missing_eval_is_failure(tmp_path: Path) -> None:
    def no_eval(cfg: Any, resume: bool = False) -> None:
        Path(cfg.output).mkdir(parents=True, exist_ok=True)

    runs = run_compare(
        BASE,
        ["ce"],
        [0],
        tmp_path,
        train_fn=_fake_train([]),
        log=lambda s: None,
    )
    assert "| CE | 80.00 |" in write_tables(tmp_path, runs)
    runs = run_compare(
        BASE,
        ["dice"],
        [0],
        tmp_path / "b",
        train_fn=no_eval,
        log=lambda s: None,
    )
    assert runs[0].status == "failed" and "eval.json" in runs[0].error


def test_bad_config_is_refused_before_any_run(tmp_path: Path) -> None:
    calls: list[Any] = []
    with pytest.raises(ValueError, match=r"train\.epochs"):
        run_compare(
            BASE, ["ce"], [0], tmp_path, ["train.epochs=zero"], train_fn=_fake_train(calls),
            log=lambda s: None,
        )  # fmt: skip
    assert calls == [] and not any(tmp_path.iterdir())


@pytest.mark.parametrize(
    ("losses", "seeds", "overrides", "match"),
    [
        ([], [0], [], "losses"),
        (["ce"], [], [], "seeds"),
        (["ce", "ce"], [0], [], "duplicates"),
        (["ce"], [0], ["loss.name=dice"], "loss.name"),
    ],
)
def test_run_compare_argument_errors(
    tmp_path: Path, losses: list, seeds: list, overrides: list, match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        run_compare(BASE, losses, seeds, tmp_path, overrides, train_fn=_fake_train([]))


def test_loss_params_overrides_apply_to_the_base_loss_only(tmp_path: Path) -> None:
    calls: list[Any] = []
    DICE[("dice", 0)] = 0.5
    try:
        run_compare(
            BASE, ["pm_dice", "dice", "pm_dice:gamma=0.5"], [0], tmp_path,
            ["loss.params.gamma=3", "loss.params.eps=1.0e-5"], train_fn=_fake_train(calls),
            log=lambda s: None,
        )  # fmt: skip
    finally:
        del DICE[("dice", 0)]
    assert [c.loss.params for c in calls] == [{"gamma": 3, "eps": 1e-5}, {}, {"gamma": 0.5}]


def test_ctrl_c_in_a_run_stops_the_whole_grid(tmp_path: Path) -> None:
    # training catches Ctrl-C itself (saves a checkpoint, returns "interrupted"): compare must
    # stop there instead of starting the next run
    calls: list[Any] = []
    logs: list[str] = []

    def interrupted(cfg: Any, resume: bool = False) -> TrainDone:
        calls.append(cfg)
        return TrainDone(
            run_dir=Path(cfg.output),
            checkpoint=None,
            best_checkpoint=None,
            best_dice=None,
            stopped=True,
            reason="interrupted (Ctrl-C)",
            interrupted=True,
            epochs=0,
            iteration=1,
        )

    with pytest.raises(KeyboardInterrupt):
        run_compare(
            BASE, ["ce", "pm_dice"], [0, 1], tmp_path, train_fn=interrupted,
            log=logs.append,
        )  # fmt: skip
    assert len(calls) == 1
    assert "run the same command again to resume" in logs[-1]


def test_reuse_after_the_data_folder_changed_is_refused(tmp_path: Path) -> None:
    """The config names a folder, not its files: with one image removed, a re-run reused the
    finished runs, scored on the old split, beside runs trained on the new one."""
    import shutil

    from napari_segloss.data.factory import build_datasets
    from napari_segloss.engine.run_state import data_items

    data = tmp_path / "data"
    shutil.copytree(sample_pairs_dir("kvasir_train"), data)
    base = {**BASE, "data": {"kind": "folder", "root": str(data)}}

    def train(cfg: Any, resume: bool = False) -> None:
        _fake_train([])(cfg, resume)
        eval_path = Path(cfg.output) / "eval.json"
        record = json.loads(eval_path.read_text())
        train_ds, val_ds = build_datasets(cfg)  # what a real run records
        record["data_items"] = data_items(train_ds, val_ds, val_ds)
        eval_path.write_text(json.dumps(record))

    run_compare(base, ["ce"], [0], tmp_path / "out", train_fn=train, log=lambda s: None)
    calls: list[Any] = []
    run_compare(base, ["ce"], [0], tmp_path / "out", train_fn=_fake_train(calls), log=print)
    assert calls == []  # the same data: reused
    first = sorted((data / "images").iterdir())[0]
    first.unlink()
    next((data / "masks").glob(f"{first.stem}.*")).unlink()
    with pytest.raises(ValueError, match=r"the data changed since it ran \(items: train 29 -> 28"):
        run_compare(base, ["ce"], [0], tmp_path / "out", train_fn=_fake_train(calls), log=print)
    assert calls == []

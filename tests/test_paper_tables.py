"""benchmarks/paper_tables.py: our compare table next to the PM-Dice paper's."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "paper_tables.py"


def _load_script(path: Path):
    """Import a benchmarks/ script (not a package) as a module."""
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def paper_tables():
    return _load_script(SCRIPT)


def _write(folder: Path, rows: list[dict[str, str]]) -> None:
    cols = sorted({k for r in rows for k in r})
    lines = [",".join(cols)] + [",".join(r.get(c, "") for c in cols) for r in rows]
    (folder / "results.csv").write_text("\n".join(lines) + "\n")


def test_side_by_side_ranks_and_correlation(paper_tables, tmp_path: Path, capsys) -> None:
    # paper mDice: pm_dice 90.61 > ce 89.56 > dice 88.76; ours in the reverse order
    rows = [
        {"loss": "ce", "name": "CE", "mDice_mean": "60.0", "mIoU_mean": "50.0"},
        {"loss": "dice", "name": "Dice", "mDice_mean": "70.0", "mIoU_mean": "55.0"},
        {"loss": "pm_dice", "name": "PM Dice", "mDice_mean": "50.0", "mIoU_mean": "nan"},
        {"loss": "wsdice", "name": "WSDice", "mDice_mean": "65.0"},
    ]
    _write(tmp_path, rows)
    assert paper_tables.main(["kvasir", str(tmp_path)]) == 0
    text = capsys.readouterr().out
    assert "| CE | 60.00 / 89.56 | 50.00 / 83.76 |" in text
    assert "| PM Dice | 50.00 / 90.61 | – / 85.37 |" in text
    assert text.splitlines()[2].endswith("| 2 (2) |")  # CE: second in both
    assert "| 3 (1) |" in text  # PM Dice: last of three here, first in the paper
    assert "2 (not in paper)" in text  # WSDice ranks 2nd of all four of ours
    assert "correlation of the two orderings: -1.00" in text


def test_acdc_has_per_class_columns(paper_tables, tmp_path: Path, capsys) -> None:
    _write(tmp_path, [{"loss": "dice", "name": "Dice", "mDice_mean": "80", "Dice LV_mean": "90"}])
    paper_tables.main(["acdc", str(tmp_path)])
    text = capsys.readouterr().out
    assert "Dice LV ours / paper" in text and "90.00 / 94.80" in text


def test_missing_results_is_a_clear_error(paper_tables, tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match=r"results\.csv: not found"):
        paper_tables.main(["kvasir", str(tmp_path)])


# --------------------------------------------------------------------- benchmarks/paper_figures.py
FIGURES = SCRIPT.with_name("paper_figures.py")


@pytest.fixture(scope="module")
def paper_figures():
    return _load_script(FIGURES)


def _fake_compare(root: Path, dice_by_loss: dict[str, list[float]]) -> Path:
    """A comparison folder laid out as `segloss compare --output root` writes it, started one
    folder above ``root``: runs.csv's run_dir is relative to that start folder, not to root."""
    import json

    from napari_segloss.engine.compare_results import compare_run_folder
    from napari_segloss.engine.loss_spec import LossSpec

    lines = ["loss,seed,status,mDice,run_dir,error"]
    for loss, dices in dice_by_loss.items():
        run = compare_run_folder(root, LossSpec.from_any(loss), 0)
        run.mkdir(parents=True)
        per_image = [
            {"name": f"im{i}", "metrics": {"1": {"dice": d, "nsd": d, "precision": d, "recall": d}}}
            for i, d in enumerate(dices)
        ]
        mean = sum(dices) / len(dices)  # the per-class summary every eval.json has
        summary = {"1": {"dice": mean, "nsd": mean, "precision": mean, "recall": mean}}
        (run / "eval.json").write_text(json.dumps({"per_class": summary, "per_image": per_image}))
        relative = run.relative_to(root.parent)
        lines.append(f"{loss},0,ok,{100 * sum(dices) / len(dices)},{relative},")
    failed = compare_run_folder(root, LossSpec.from_any("ce"), 1)
    failed.mkdir(parents=True)
    (failed / "FAILED.txt").write_text("boom\n")
    lines.append(f"ce,1,failed,,{failed.relative_to(root.parent)},boom")
    (root / "runs.csv").write_text("\n".join(lines) + "\n")
    return root


def test_per_image_means_and_ci(paper_figures, tmp_path: Path, monkeypatch) -> None:
    root = _fake_compare(tmp_path / "cmp", {"ce": [0.5, 0.7, 0.9]})
    monkeypatch.chdir(root)  # not the folder the comparison was started from
    runs = paper_figures.loss_runs(Path("."))
    assert list(runs) == ["ce"] and len(runs["ce"]) == 1  # the failed seed is left out
    values = paper_figures.per_image(runs["ce"][0], "dice")
    assert values == {"im0": {"1": 50.0}, "im1": {"1": 70.0}, "im2": {"1": pytest.approx(90.0)}}
    mean, half = paper_figures.table_ci(runs["ce"], "dice")
    assert mean == pytest.approx(70.0)
    assert half == pytest.approx(1.96 * 20.0 / 3**0.5)  # sample std 20 over 3 images


def test_bars_and_gamma_sweep_write_pngs(paper_figures, tmp_path: Path) -> None:
    root = _fake_compare(
        tmp_path / "cmp",
        {
            "dice": [0.6, 0.7],
            "pm_dice": [0.7, 0.8],
            "pm_dice:gamma=2": [0.75, 0.8],
            "ce": [0.5, 0.6],
        },
    )
    assert paper_figures.main(["bars", str(root), str(tmp_path / "bars.png")]) == 0
    assert paper_figures.main(["gamma", str(root), str(tmp_path / "gamma.png")]) == 0
    assert (tmp_path / "bars.png").stat().st_size > 10_000
    assert (tmp_path / "gamma.png").stat().st_size > 10_000
    with pytest.raises(SystemExit, match="gamma sweep"):
        paper_figures.gamma_sweep(
            _fake_compare(tmp_path / "one", {"ce": [0.5]}), tmp_path / "x.png", ""
        )


def _eval_json(path: Path, per_image: dict[str, dict[str, float]], metric: str = "dice") -> Path:
    """An eval.json with per-image values: image name -> {class: value}."""
    import json

    items = [
        {"name": name, "metrics": {c: {metric: v} for c, v in classes.items()}}
        for name, classes in per_image.items()
    ]
    path.write_text(json.dumps({"per_image": items}))
    return path


def test_ci_counts_each_test_image_once_across_seeds(paper_figures, tmp_path: Path) -> None:
    """Three seeds scoring the same three images are three observations, not nine: pooling
    them gave 1.96 * 17.3 / 3 = 11.3 instead of 1.96 * 20 / sqrt(3) = 22.6."""
    values = {"a": {"1": 0.5}, "b": {"1": 0.7}, "c": {"1": 0.9}}
    paths = [_eval_json(tmp_path / f"seed{s}.json", values) for s in range(3)]
    mean, half = paper_figures.table_ci(paths, "dice")
    assert mean == pytest.approx(70.0)
    assert half == pytest.approx(1.96 * 20.0 / 3**0.5)  # sample std 20 over 3 images


def test_bar_is_the_tables_value_with_classes_absent_from_some_images(
    paper_figures, tmp_path: Path
) -> None:
    """results.md's mDice averages each class over the images that have it, then the classes:
    ((100 + 50) / 2 + 80) / 2 = 77.5. The bars averaged per-image class means instead:
    (100 + (50 + 80) / 2) / 2 = 82.5, a different number under the same name."""
    from napari_segloss.engine.compare_results import metrics_from_eval

    a, b = {"1": 1.0}, {"1": 0.5, "2": 0.8}  # class 2 absent from image a (NaN, not listed)
    path = _eval_json(tmp_path / "e.json", {"a": a, "b": b})
    mean, half = paper_figures.table_ci([path], "dice")
    assert mean == pytest.approx(77.5)
    per_class = {"1": {"dice": 0.75}, "2": {"dice": 0.8}}  # what eval.json's per_class holds
    assert metrics_from_eval({"per_class": per_class})[0]["mDice"] == pytest.approx(mean)
    # image shares of the deviation (%): a: (100 - 75) / (2 * 2) = 6.25, b: -6.25 + 0
    assert half == pytest.approx(1.96 * (2 / 1 * (6.25**2 + 6.25**2)) ** 0.5)


def test_spearman_uses_average_ranks_for_ties(paper_tables) -> None:
    """Ties (the paper's ACDC mDice has two) share the mean of their ranks, as Spearman's rho
    and scipy.stats.spearmanr do; competition ranks gave 0.944 here instead of 0.949."""
    from scipy.stats import spearmanr

    ours = {"x": 1.0, "y": 1.0, "z": 2.0, "w": 3.0}
    paper = {"x": 1.0, "y": 2.0, "z": 3.0, "w": 4.0}
    # ranks (best = 1): ours x, y 3.5, z 2, w 1; paper x 4, y 3, z 2, w 1 -> 4.5 / sqrt(4.5 * 5)
    assert paper_tables.spearman(ours, paper) == pytest.approx(4.5 / (4.5 * 5) ** 0.5)
    keys = sorted(ours)
    expected = spearmanr([ours[k] for k in keys], [paper[k] for k in keys]).statistic
    assert paper_tables.spearman(ours, paper) == pytest.approx(expected)

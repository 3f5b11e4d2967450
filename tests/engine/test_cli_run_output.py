"""What ``segloss compare`` and ``segloss train`` say while they run: a line when each run starts
and ends (stderr, so stdout keeps the table), and ``train.num_workers`` capped at the CPU cores
this process may use, said once instead of torch's warning per loader."""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import yaml
from _sample_config import sample_config

from napari_segloss import progress
from napari_segloss.cli import main
from napari_segloss.engine import runtime
from napari_segloss.engine.compare_results import read_compare
from napari_segloss.engine.runtime import available_cpus, loader_workers

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # see tests/conftest.py

TORCH_WORKER_WARNING = "worker processes in total"
REPO = Path(__file__).resolve().parents[2]


def _tiny_config(tmp_path: Path, num_workers: int) -> Path:
    """A tiny U-Net at 64 px for 1 epoch on the bundled pairs, augmented (so batches come from
    a DataLoader with workers, not the in-memory path)."""
    cfg = sample_config(batch_size=8, num_workers=num_workers, augment=True)
    cfg["output"] = str(tmp_path / "train-run")
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _run_recording_warnings(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> tuple[int, str, str, list[str]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rc = main(argv)
    out, err = capsys.readouterr()
    return rc, out, err, [str(w.message) for w in caught]


def test_compare_says_each_run_on_stderr_and_caps_the_workers_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    requested = available_cpus() + 2  # more workers than this process has cores
    config = _tiny_config(tmp_path, requested)
    output = tmp_path / "cmp"
    argv = ["compare", "--config", str(config), "--losses", "dice", "pm_dice", "--seeds", "0"]
    rc, out, err, caught = _run_recording_warnings([*argv, "--output", str(output)], capsys)
    assert rc == 0, err

    # torch's "This DataLoader will create N worker processes in total" warning is gone ...
    assert not [m for m in caught if TORCH_WORKER_WARNING in m], caught
    # ... and the start lines say once (not once per run) what was lowered and why
    note = f"train.num_workers {requested} lowered to {available_cpus()}: this process may use"
    assert err.count(note) == 1, err

    # stdout: the table and the summary only, ready to pipe; the run lines are on stderr
    results = (output / "results.md").read_text()
    assert out.startswith(results), out
    assert "[1/2]" not in out and "[1/2] dice seed 0: training ->" in err
    lines = err.splitlines()
    assert lines[0] == f"[1/2] dice seed 0: training -> {output / 'runs' / 'dice' / 'seed0'}"
    # the data, steps and device once, under the first run: the same for every run of the grid
    assert lines[1].startswith("  26 training / 6 validation item(s), 3 steps on cpu, float32")
    assert err.count("validation item(s)") == 1, err
    # each run ends with its time and the held-out mDice the table shows
    runs = {(r.loss, r.seed): r for r in read_compare(output).runs}
    for n, loss in enumerate(("dice", "pm_dice"), 1):
        done = [line for line in lines if line.startswith(f"[{n}/2] {loss} seed 0: ok in ")]
        assert len(done) == 1, err
        dice = runs[(loss, 0)].metrics["mDice"]
        assert re.fullmatch(rf".*: ok in \d+ s, held-out mDice {dice:.2f} %", done[0]), done
    # no per-step bars without --progress
    assert "it/s" not in err and "s/it" not in err


def test_train_start_line_notes_the_lowered_workers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The start line and its notes go to stderr, as compare's run lines do: stdout holds the
    end summary only (`segloss train ... > summary.txt`)."""
    requested = available_cpus() + 1
    config = _tiny_config(tmp_path, requested)
    argv = ["train", "--config", str(config), "--no-progress", "--set", "data.limit=8"]
    rc, out, err, caught = _run_recording_warnings(argv, capsys)
    assert rc == 0, err
    assert not [m for m in caught if TORCH_WORKER_WARNING in m], caught
    first, second = err.splitlines()[:2]
    assert first.startswith("segloss train: ")
    assert first.endswith(f"run dir {tmp_path / 'train-run'}")
    assert second == (
        f"  train.num_workers {requested} lowered to {available_cpus()}: this process may use "
        f"{available_cpus()} CPU core(s)"
    )
    assert err.count("num_workers") == 1 and "num_workers" not in out
    # a run of seconds says its seconds, not "finished in 0.0 min"
    assert re.match(r"segloss train: finished in \d+ s\n", out), out


def test_loader_workers_share_the_cores_among_the_machines_processes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(runtime, "available_cpus", lambda: 16)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert loader_workers(4) == (4, "")  # fits: unchanged, nothing to say
    assert loader_workers(0) == (0, "")
    workers, note = loader_workers(20)
    assert workers == 16 and note == (
        "train.num_workers 20 lowered to 16: this process may use 16 CPU core(s)"
    )
    # torchrun: each of the machine's LOCAL_WORLD_SIZE processes starts its own workers
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "8")
    workers, note = loader_workers(4)
    assert workers == 2
    assert note == (
        "train.num_workers 4 lowered to 2 per process: 16 CPU core(s) shared by 8 training "
        "processes"
    )
    assert loader_workers(2) == (2, "")
    # more processes than cores: load in each training process, and say so
    workers, note = loader_workers(4, processes=32)
    assert workers == 0 and note.endswith("(data loaded in the training process)")


def test_run_end_lines_say_the_time_and_the_score_or_what_went_wrong() -> None:
    from napari_segloss.engine.compare import compare_log_line
    from napari_segloss.engine.events import CompareRunDone, CompareRunInfo

    info = CompareRunInfo(3, 6, "pm_dice", "pm_dice", {}, 1, Path("r"), "PM Dice")
    kw = {"run": info, "metrics": {}, "error": "", "checkpoint": None, "overall": 0.5}

    def line(status: str, seconds: float, action: str = "train", **more: object) -> str | None:
        return compare_log_line(
            CompareRunDone(**{**kw, **more}, status=status, action=action, seconds=seconds)
        )

    ok = line("ok", 4.4, metrics={"mDice": 53.456, "mIoU": 40.0})
    assert ok == "[4/6] pm_dice seed 1: ok in 4 s, held-out mDice 53.46 %"
    assert line("ok", 330.0, metrics={"mDice": 53.456}).endswith(
        "ok in 5.5 min, held-out mDice 53.46 %"
    )
    assert line("failed", 12.0, error="ValueError: bad") == (
        "[4/6] pm_dice seed 1: FAILED after 12 s (ValueError: bad)"
    )
    assert line("stopped", 61.0) == "[4/6] pm_dice seed 1: stopped after 61 s"
    assert line("ok", 0.0, action="reuse", metrics={"mDice": 50.0}) is None  # said at its start


def test_help_tells_a_new_user_where_to_start_and_its_example_runs_as_written() -> None:
    import shlex

    from napari_segloss.cli import build_parser, prepare_config

    parser = build_parser()
    top = " ".join(parser.format_help().split())
    assert "`segloss train --config quickstart`" in top and "`segloss COMMAND --help`" in top
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    compare_help = " ".join(sub.choices["compare"].format_help().split())
    assert "--losses LOSS [LOSS ...]" in compare_help and "--seeds SEED [SEED ...]" in compare_help
    example = compare_help.split("on the 3 unseen sample frames: ")[1]
    args = parser.parse_args(shlex.split(example)[1:])
    assert (args.command, args.losses, args.seeds) == ("compare", ["dice", "pm_dice"], [0, 1])
    tree, overrides = prepare_config(args.config, args.overrides)  # a shipped name, data set
    assert tree["data"]["root"].startswith("bundled:") and overrides == [
        "data.test_root=bundled:kvasir"
    ]


def test_train_logs_to_a_file_without_escape_codes(tmp_path: Path) -> None:
    """``segloss train ... 2> log``: tqdm's nested validation bar wrote cursor-up codes
    (ESC[A) and every redraw a carriage return into the file; now plain lines."""
    config = _tiny_config(tmp_path, 0)  # epochs: 1, validated inside the training bar
    log = tmp_path / "train.log"
    env = {**os.environ, "PYTHONPATH": str(REPO)}  # this checkout, not another install
    with log.open("w") as err:
        proc = subprocess.run(
            [sys.executable, "-m", "napari_segloss.cli", "train", "--threads", "1",
             "--config", str(config), "--set", "data.limit=8"],
            stdout=subprocess.PIPE, stderr=err, text=True, cwd=REPO, env=env, timeout=300,
        )  # fmt: skip
    text = log.read_bytes().decode()  # carriage returns kept
    assert proc.returncode == 0, text
    assert "\x1b" not in text and "\r" not in text, repr(text)
    # the training bar's last state, once, on its own line
    assert re.search(r"^train pm_dice: 100% (\d+)/\1 \[.*loss=[\d.]+\]$", text, re.MULTILINE), text


def test_compare_progress_in_a_log_has_plain_lines(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``segloss compare --progress`` with stderr not a terminal (here: captured): the per-step
    and nested validation reports are lines, with no escape codes between them."""
    monkeypatch.setattr(progress, "LOG_INTERVAL_S", 0.0)  # a line per update: nested bars too
    config = _tiny_config(tmp_path, 0)
    argv = ["compare", "--config", str(config), "--losses", "dice", "--seeds", "0", "--progress"]
    rc, _, err, _ = _run_recording_warnings(
        [*argv, "--set", "data.limit=8", "--output", str(tmp_path / "cmp")], capsys
    )
    assert rc == 0, err
    assert "\x1b" not in err and "\r" not in err, repr(err)
    lines = err.splitlines()
    assert any(s.startswith("train dice: 100% ") for s in lines), err
    assert any(s.startswith("validation, epoch 1: 100% ") for s in lines), err
    assert lines[-1].startswith("[1/1] dice seed 0: ok in ")

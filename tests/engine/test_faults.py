"""Faults that need real processes: a second run into a busy directory, ``kill -9`` then resume.

A run is held at a known point, or killed there, by ``_train_hook_script.py`` in a subprocess;
the competing or resuming run goes through ``segloss`` in this process.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from napari_segloss.cli import main
from napari_segloss.engine.checkpoint import load_checkpoint
from napari_segloss.engine.config import load_config
from napari_segloss.engine.rundir import LOCK_NAME
from napari_segloss.engine.training import iter_train, train

SCRIPT = Path(__file__).with_name("_train_hook_script.py")
TINY_MODEL = {
    "arch": "Unet",
    "encoder": "tu-resnet10t",
    "kwargs": {"encoder_depth": 3, "decoder_channels": [16, 8, 4]},
}

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # see tests/conftest.py


def config_file(tmp_path: Path, data: Path, name: str, epochs: int = 2) -> Path:
    """6 training images, batch 2: 3 steps per epoch."""
    tree = {
        "data": {"root": str(data), "size": [32, 32], "crop": [24, 24], "val_fraction": 0.25},
        "model": TINY_MODEL,
        "loss": {"name": "pm_dice", "params": {"gamma": 1.0}},
        "train": {"epochs": epochs, "batch_size": 2, "num_workers": 0, "log_every": 1},
        "output": str(tmp_path / name),
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(tree))
    return path


def start(*args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "SEGLOSS_MALLOC_TUNING": "0"}
    return subprocess.Popen(
        [sys.executable, str(SCRIPT), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def wait_for(path: Path, proc: subprocess.Popen[str], timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(f"the training process ended early:\n{proc.communicate()[1]}")
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.05)


def test_second_run_into_a_busy_directory_is_refused_and_the_first_finishes_intact(
    read_csv: Callable[..., Any],
    squares_root: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    config = config_file(tmp_path, squares_root, "run")
    ready, go = tmp_path / "ready", tmp_path / "go"
    first = start(str(config), "--pause", str(ready), str(go))
    try:
        wait_for(ready, first)  # set up, lock held, about to take its first step
        run = tmp_path / "run"
        assert (run / LOCK_NAME).is_file()
        # the same command again, and variations that would share the folder: all refused
        for argv in (
            ["train", "--config", str(config), "--no-progress"],
            ["train", "--config", str(config), "--no-progress", "--set", "train.overwrite=true"],
            ["train", "--config", str(config), "--no-progress", "--resume"],
            ["compare", "--config", str(config), "--losses", "dice", "--seeds", "0",
             "--output", str(run)],
        ):  # fmt: skip
            assert main(argv) == 2
            err = capsys.readouterr().err
            assert f"is busy: pid {first.pid}" in err, err
        assert sorted(p.name for p in run.iterdir()) == [LOCK_NAME]  # nothing written yet
    finally:
        go.touch()
        out, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    assert out.strip().endswith("completed")
    assert sorted(p.name for p in run.iterdir()) == sorted(
        ["config.yaml", "metrics.csv", "checkpoint.pt", "best.pt", "eval.json"]
    )  # the lock is gone with its run
    assert load_config(run / "config.yaml") == load_config(config)
    assert [r["epoch"] for r in read_csv(run / "metrics.csv")] == ["1", "2"]
    assert load_checkpoint(run / "checkpoint.pt")["iteration"] == 6
    # and now that it is finished, a new run may only resume it or overwrite it on request
    assert main(["train", "--config", str(config), "--no-progress"]) == 2
    assert "already holds a run" in capsys.readouterr().err


def test_kill_9_mid_epoch_then_resume_equals_an_uninterrupted_run(
    read_csv: Callable[..., Any],
    squares_root: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    straight = train(load_config(config_file(tmp_path, squares_root, "straight")), progress=False)
    assert not straight.stopped
    config = config_file(tmp_path, squares_root, "killed")
    # 3 steps per epoch and 1 validation batch: the 6th call is before step 5, mid-epoch 2
    killed = start(str(config), "--kill-at", "6")
    killed.communicate(timeout=300)
    assert killed.returncode == -9
    run = tmp_path / "killed"
    ck = load_checkpoint(run / "checkpoint.pt")
    assert (ck["epoch"], ck["iteration"]) == (1, 3)  # the end of epoch 1 is on disk
    assert (run / LOCK_NAME).is_file()  # left behind: nobody released it
    (run / ".checkpoint.pt.k1ll3d.tmp").write_bytes(b"half a checkpoint")  # killed mid-write

    with caplog.at_level(logging.WARNING):
        rc = main(["train", "--config", str(config), "--no-progress", "--resume"])
    assert rc == 0
    assert any("took over a stale lock" in r.getMessage() for r in caplog.records)
    assert any("k1ll3d" in r.getMessage() for r in caplog.records)
    assert sorted(p.name for p in run.iterdir()) == sorted(
        ["config.yaml", "metrics.csv", "checkpoint.pt", "best.pt", "eval.json"]
    )
    a = load_checkpoint(tmp_path / "straight" / "checkpoint.pt")["model"]
    b = load_checkpoint(run / "checkpoint.pt")["model"]
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k].float(), b[k].float(), atol=1e-6), k
    ra, rb = read_csv(tmp_path / "straight" / "metrics.csv"), read_csv(run / "metrics.csv")
    assert [r["val_dice"] for r in ra] == [r["val_dice"] for r in rb]
    assert [r["train_loss"] for r in ra] == [r["train_loss"] for r in rb]


def test_resume_with_a_changed_key_is_refused_and_extending_epochs_is_not(
    squares_root: Path, tmp_path: Path
) -> None:
    config = config_file(tmp_path, squares_root, "run", epochs=1)
    train(load_config(config), progress=False)
    before = {p.name: p.read_bytes() for p in (tmp_path / "run").iterdir()}
    for key in ("loss.params.gamma=3.0", "optim.lr=0.01", "data.size=[40,40]", "train.seed=1"):
        cfg = load_config(config, [key])
        with pytest.raises(ValueError, match=rf"other settings: {key.split('=')[0]}: saved"):
            next(iter_train(cfg, resume=True, progress=False))
    assert {p.name: p.read_bytes() for p in (tmp_path / "run").iterdir()} == before
    longer = train(load_config(config, ["train.epochs=2", "train.num_workers=1"]), resume=True)
    assert not longer.stopped and longer.epochs == 2
    assert load_config(tmp_path / "run" / "config.yaml").train.epochs == 2  # says what ran
    # fewer epochs than trained: "iteration 8 of 8 is iteration 8 of 4 here", then "finished"
    before = {p.name: p.read_bytes() for p in (tmp_path / "run").iterdir()}
    with pytest.raises(
        ValueError, match=r"has already trained 2 epochs, more than train\.epochs=1"
    ):
        next(iter_train(load_config(config), resume=True, progress=False))
    assert {p.name: p.read_bytes() for p in (tmp_path / "run").iterdir()} == before


def test_non_finite_logits_name_the_files_of_the_batch(
    squares_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The images are finite (the datasets check that), so the model diverged: the run stops
    as for a non-finite loss, naming the step and the batch's files."""
    from napari_segloss.engine import run_state

    real_build = run_state.build_model

    class GoesNaN(torch.nn.Module):
        requires_divisible_input_shape = False  # what the wrapped smp Unet says

        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner, self.calls = inner, 0

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            self.calls += self.training
            out = self.inner(x)
            return out * float("nan") if self.training and self.calls == 2 else out

    monkeypatch.setattr(run_state, "build_model", lambda cfg: GoesNaN(real_build(cfg)))
    cfg = load_config(config_file(tmp_path, squares_root, "nan"))
    done = train(cfg, progress=False)
    assert done.stopped and not done.interrupted
    assert re.match(
        r"non-finite loss .*iteration 2 \(epoch 1; batch of .*: the training diverged", done.reason
    )
    named = [p for p in (squares_root / "images").iterdir() if str(p) in done.reason]
    assert len(named) == 2  # the two files of that batch of 2
    assert not (tmp_path / "nan").exists()  # failed before its first checkpoint: no trace

"""What a stop or a diverging run leaves on disk: never untrained or non-finite weights over a
run's files (CPU, tiny model, seconds)."""

from __future__ import annotations

import csv
import logging
import os
import re
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from napari_segloss.engine import training
from napari_segloss.engine.checkpoint import load_checkpoint, save_checkpoint
from napari_segloss.engine.config import config_yaml, load_config
from napari_segloss.engine.training import train

TINY_MODEL = {
    "arch": "Unet",
    "encoder": "tu-resnet10t",
    "kwargs": {"encoder_depth": 3, "decoder_channels": [16, 8, 4]},
}

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # see tests/conftest.py


def make_cfg(root: Path, out: Path, *overrides: str) -> Any:
    """6 training images, batch 2: 3 steps per epoch; 2 validation images."""
    return load_config(
        {
            "data": {"root": str(root), "size": [32, 32], "crop": [24, 24], "val_fraction": 0.25},
            "model": TINY_MODEL,
            "loss": {"name": "pm_dice", "params": {"gamma": 1.0}},
            "train": {"epochs": 1, "batch_size": 2, "num_workers": 0, "log_every": 1},
            "output": str(out),
        },
        list(overrides),
    )


def _files(run: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(run.iterdir())}


def test_ctrl_c_while_the_data_loads_writes_nothing(
    squares_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = tmp_path / "old"
    assert not train(make_cfg(squares_root, old), progress=False).stopped
    before = _files(old)
    real_prepare = training.prepare_run

    def ctrl_c_during_set_up(*args: Any, **kwargs: Any) -> Any:
        signal.raise_signal(signal.SIGINT)  # a real Ctrl-C, caught by the run's handler
        return real_prepare(*args, **kwargs)

    monkeypatch.setattr(training, "prepare_run", ctrl_c_during_set_up)
    # train.overwrite: the old run is replaced only by a run that trained; none did
    done = train(make_cfg(squares_root, old, "train.overwrite=true"), progress=False)
    assert done.stopped and done.interrupted and done.iteration == 0
    assert _files(old) == before  # best.pt, eval.json, metrics.csv of the old run intact
    assert "nothing was written" in done.reason
    # the old run's checkpoints are not this run's: no "--resume" pointing at them
    assert done.checkpoint is None and done.best_checkpoint is None
    # a new output folder: no untrained "run" left that a rerun would have to overwrite
    new = tmp_path / "new"
    done = train(make_cfg(squares_root, new), progress=False)
    assert done.stopped and done.checkpoint is None and not new.exists()
    # a resumed run stopped at once keeps its checkpoint as it was
    done = train(make_cfg(squares_root, old, "train.epochs=2"), resume=True, progress=False)
    assert done.stopped and _files(old)["checkpoint.pt"] == before["checkpoint.pt"]


def _nan_gradients_at(n: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """From the ``n``-th training step on, the loss stays finite but its gradients are NaN
    (``0 * sqrt(0)`` backwards is ``0 / 0``): the weights turn NaN with no NaN loss to see."""
    from napari_segloss.engine import run_state

    real_get_loss = run_state.get_loss

    class NaNGradients(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner, self.calls = inner, 0

        def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
            loss = self.inner(logits, target)
            if logits.requires_grad:
                self.calls += 1
                if self.calls == n:
                    loss = loss + 0.0 * torch.sqrt(logits.sum() * 0.0)
            return loss

    monkeypatch.setattr(
        run_state, "get_loss", lambda name, **p: NaNGradients(real_get_loss(name, **p))
    )


def _assert_finite(path: Path, epoch: int) -> None:
    ck = load_checkpoint(path)
    assert ck["epoch"] == epoch
    assert all(torch.isfinite(v).all() for v in ck["model"].values() if v.is_floating_point())


def test_weights_that_turn_nan_at_an_epoch_end_are_not_saved(
    squares_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # no validation (8 images, batch 2: 4 steps per epoch): best.pt is written every epoch
    _nan_gradients_at(8, monkeypatch)  # the last step of epoch 2
    out = tmp_path / "run"
    cfg = make_cfg(squares_root, out, "train.epochs=3", "data.val_fraction=0")
    done = train(cfg, progress=False)
    assert done.stopped and not done.interrupted
    assert done.reason.startswith("non-finite weights after iteration 8 (epoch 2)")
    assert f"the last good checkpoint is kept: {out / 'checkpoint.pt'}" in done.reason
    _assert_finite(out / "checkpoint.pt", epoch=1)
    _assert_finite(out / "best.pt", epoch=1)


def test_a_stop_after_the_weights_turned_nan_saves_nothing(
    squares_root: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    ctrl_c_at_call: Any,
) -> None:
    _nan_gradients_at(2, monkeypatch)
    out = tmp_path / "run"
    # Ctrl-C pressed during step 2, seen before step 3: the weights are NaN by then
    done = train(make_cfg(squares_root, out), should_stop=ctrl_c_at_call(2), progress=False)
    assert done.stopped and "non-finite weights at iteration 2 (epoch 1)" in done.reason
    assert not out.exists()  # nothing to resume from: no NaN checkpoint to resume either


def test_a_diverging_learning_rate_stops_the_run_instead_of_blaming_the_images(
    squares_root: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    cfg = make_cfg(squares_root, out, "optim.lr=1e20", "loss.name=ce", "loss.params={}")
    done = train(cfg, progress=False)  # before: ValueError "logits must be finite" (exit 2)
    assert done.stopped and not done.interrupted
    assert re.match(r"non-finite loss \(nan\) at iteration \d+ \(epoch 1; batch of ", done.reason)
    assert "the training diverged (e.g. optim.lr too high)" in done.reason


@pytest.mark.skipif(os.name != "posix", reason="POSIX file modes")
def test_checkpoints_are_as_readable_as_the_other_run_files(tmp_path: Path) -> None:
    old_umask = os.umask(0o022)
    try:
        path = save_checkpoint(tmp_path / "checkpoint.pt", {"model": {}, "meta": {}})
        (tmp_path / "config.yaml").write_text("x")
    finally:
        os.umask(old_umask)
    mode = stat.S_IMODE(path.stat().st_mode)
    assert mode == stat.S_IMODE((tmp_path / "config.yaml").stat().st_mode) == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt", "config.yaml"]


def test_overwriting_a_run_says_what_it_removed(
    squares_root: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    out = tmp_path / "run"
    train(make_cfg(squares_root, out), progress=False)
    with caplog.at_level(logging.WARNING):
        train(make_cfg(squares_root, out, "train.overwrite=true"), progress=False)
    said = [r.getMessage() for r in caplog.records if "train.overwrite" in r.getMessage()]
    assert said == [
        f"train.overwrite: replacing the run in {out} (removed config.yaml, metrics.csv, "
        "checkpoint.pt, best.pt, eval.json)"
    ]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("loss.name=pmdice", "did you mean 'pm_dice'"),
        ("model.encoder=resnet181", "did you mean 'resnet18'"),
        ("model.arch=Unett", "did you mean 'Unet'"),
    ],
)
def test_a_misspelt_name_is_reported_before_the_data_is_read(
    squares_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, override: str, message: str
) -> None:
    """A typo in a loss, encoder or architecture name must not wait for the check of every
    image (minutes on a large dataset) and says what was probably meant."""
    from napari_segloss.engine import run_state
    from napari_segloss.engine.config import ConfigError

    def no_data(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the data was read before the names were checked")

    monkeypatch.setattr(run_state, "_datasets", no_data)
    with pytest.raises(ConfigError, match=re.escape(message)):
        train(make_cfg(squares_root, tmp_path / "run", override), progress=False)
    assert not (tmp_path / "run").exists()


def test_the_float16_loss_scale_survives_a_resume(squares_root: Path, tmp_path: Path) -> None:
    """float16 AMP's GradScaler was not in checkpoint.pt: a resumed run started its loss
    scale again from 65536 (and skipped steps finding it again), so a resume was not the
    run it continued. A CPU GradScaler stands in for the CUDA one."""
    from napari_segloss.engine.distributed import get_dist_info
    from napari_segloss.engine.run_state import _restore, prepare_run

    cfg = make_cfg(squares_root, tmp_path / "run")
    state = prepare_run(cfg, get_dist_info(), torch.device("cpu"))
    state.scaler = torch.amp.GradScaler("cpu", init_scale=512.0)  # where training brought it
    state.scaler.scale(torch.ones(()))  # a scaler is lazy: its scale exists once used
    state.paths.root.mkdir(parents=True)  # train() makes it, with its lock
    state.save_checkpoint(epoch=1, epoch_step=0)
    resumed = prepare_run(cfg, get_dist_info(), torch.device("cpu"), resume=True)
    resumed.scaler = torch.amp.GradScaler("cpu", init_scale=65536.0)
    _restore(resumed, load_checkpoint(state.paths.checkpoint))
    assert resumed.scaler.get_scale() == 512.0


SLOW_SCRIPT = Path(__file__).with_name("_slow_train_script.py")


def _scored(ready: Path) -> int:
    """How many images the slow script's process scored (validation and eval.json)."""
    scored = ready.with_name(f"{ready.name}.log")
    return len(scored.read_text().split()) if scored.is_file() else 0


def test_sigterm_during_validation_saves_the_last_step_at_once_and_resume_finishes(
    write_squares: Any, tmp_path: Path
) -> None:
    """A scheduler's SIGTERM (SLURM: SIGKILL after a grace period) during a long validation:
    the run stops at the next validation batch with the checkpoint of its last step instead of
    scoring the whole split first (before: every image, then the next epoch's first step)."""
    data = write_squares(tmp_path / "data", n=16, hw=(32, 32))
    out, ready = tmp_path / "run", tmp_path / "ready"
    # 8 training images, batch 2: 4 steps per epoch; 8 validation images, one per batch
    cfg = make_cfg(data, out, "data.val_fraction=0.5", "train.val_batch_size=1", "train.epochs=2")
    config = tmp_path / "config.yaml"
    config.write_text(config_yaml(cfg))
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    args = [str(ready), "0", "2", "--config", str(config), "--no-progress"]  # 2 s an image
    proc = subprocess.Popen(
        [sys.executable, str(SLOW_SCRIPT), "scoring", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + 120
    while not ready.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert ready.exists(), proc.communicate()[0]
    sent = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    output = proc.communicate(timeout=120)[0]
    took = time.monotonic() - sent
    assert proc.returncode == 130, output  # as a SIGTERM between steps
    said = "after 4 of 8 steps (0 of 2 epochs done), during the validation of epoch 1;"
    assert said in output, output
    assert _scored(ready) <= 2, output  # of 8 (2 s each): stopped at the next batch
    assert took < 10, f"{took:.1f} s from SIGTERM to exit"
    ck = load_checkpoint(out / "checkpoint.pt")
    assert (ck["epoch"], ck["epoch_step"], ck["iteration"], ck["history"]) == (0, 4, 4, [])
    assert not (out / "best.pt").exists()  # no partial validation selected weights
    done = train(cfg, resume=True, progress=False)
    assert not done.stopped and done.iteration == 8 and done.epochs == 2
    assert (out / "eval.json").is_file()
    # epoch 1's steps ran in the stopped process: its timing columns stay empty, not 0.0
    with (out / "metrics.csv").open(newline="") as f:
        first = next(csv.DictReader(f))
    assert "epoch_time_s" in first and first["epoch"] == "1"
    assert first["epoch_time_s"] == first["train_images_per_s"] == ""


def test_a_stop_during_the_final_evaluation_ends_it_and_resume_writes_eval_json(
    squares_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from napari_segloss.engine import evaluation

    real_evaluate, calls = evaluation.evaluate, {"n": 0}

    def ctrl_c_at_the_first_held_out_image(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 3:  # 2 validation images, then eval.json's first (batch 1)
            signal.raise_signal(signal.SIGINT)
        return real_evaluate(*args, **kwargs)

    monkeypatch.setattr(evaluation, "evaluate", ctrl_c_at_the_first_held_out_image)
    out = tmp_path / "run"
    one_per_pass = "train.val_batch_size=1"  # eval.json's batches are validation's
    done = train(make_cfg(squares_root, out, one_per_pass), progress=False)
    assert calls["n"] == 3  # before: both held-out images scored and eval.json written
    assert done.stopped and done.interrupted and done.iteration == 3
    assert "after 3 of 3 steps (1 of 1 epochs done), during the final evaluation:" in done.reason
    assert not (out / "eval.json").exists()
    assert load_checkpoint(out / "checkpoint.pt")["epoch"] == 1  # every step is on disk
    monkeypatch.setattr(evaluation, "evaluate", real_evaluate)
    done = train(make_cfg(squares_root, out, one_per_pass), resume=True, progress=False)
    assert not done.stopped and done.iteration == 3 and (out / "eval.json").is_file()


class _Killed(BaseException):
    """What a kill -9 at this point would leave: the process ends inside the write."""


def test_a_run_killed_at_its_first_checkpoint_leaves_the_folder_as_it_was(
    squares_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """best.pt is saved before checkpoint.pt at an epoch's end. A run killed between the two
    had already replaced an overwritten run's files (README: "only once the new one has a
    checkpoint"), and a new folder then held config.yaml and best.pt: neither resumable nor
    restartable without train.overwrite."""
    from napari_segloss.engine import run_state

    old = tmp_path / "old"
    train(make_cfg(squares_root, old), progress=False)
    before = _files(old)
    real_save = run_state.save_checkpoint

    def killed_at_the_checkpoint(path: Path, payload: dict[str, Any]) -> Path:
        if Path(path).name.startswith("checkpoint.pt"):
            raise _Killed
        return real_save(path, payload)

    monkeypatch.setattr(run_state, "save_checkpoint", killed_at_the_checkpoint)
    new = tmp_path / "new"
    for out, overrides in ((old, ["train.overwrite=true"]), (new, [])):
        with pytest.raises(_Killed):
            train(make_cfg(squares_root, out, *overrides), progress=False)
    left = {n: b for n, b in _files(old).items() if not n.endswith(".pending")}
    assert left == before  # the overwritten run whole
    assert sorted(_files(new)) == ["best.pt.pending"]  # nothing that counts as a run
    monkeypatch.setattr(run_state, "save_checkpoint", real_save)
    done = train(make_cfg(squares_root, new), progress=False)  # no train.overwrite needed
    assert not done.stopped
    assert sorted(_files(new)) == [
        "best.pt",
        "checkpoint.pt",
        "config.yaml",
        "eval.json",
        "metrics.csv",
    ]


def test_resume_on_changed_data_is_refused(
    write_squares: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """One image added to the folder between a stop and its resume moved images between the
    splits without a word: validation then scored images the run had trained on."""
    from napari_segloss.engine.config import ConfigError

    data, out = tmp_path / "data", tmp_path / "run"
    write_squares(data, n=8, hw=(40, 40))
    train(make_cfg(data, out), progress=False)
    # the same data: the resume goes on
    assert not train(make_cfg(data, out, "train.epochs=2"), resume=True, progress=False).stopped
    write_squares(tmp_path / "extra", n=1, hw=(40, 40))
    for sub in ("images", "masks"):
        for f in (tmp_path / "extra" / sub).iterdir():
            f.rename(data / sub / f"z{f.name}")
    with pytest.raises(ConfigError, match=r"the data changed .*train 6 -> 7.*--init-checkpoint"):
        train(make_cfg(data, out, "train.epochs=3"), resume=True, progress=False)

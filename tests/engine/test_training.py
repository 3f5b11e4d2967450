"""The training loop end to end on tiny synthetic data (CPU, seconds)."""

from __future__ import annotations

import json
import math
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch.optim.optimizer import register_optimizer_step_pre_hook

from napari_segloss import progress
from napari_segloss.data.datasets import ArrayDataset, DataError
from napari_segloss.engine import sampling
from napari_segloss.engine.checkpoint import CheckpointError, load_checkpoint, load_model
from napari_segloss.engine.config import ConfigError, load_config
from napari_segloss.engine.events import TrainDone, TrainEpoch, TrainStart, TrainStep
from napari_segloss.engine.training import EpochSampler, iter_train, poly_lr_factor, train

TINY_MODEL = {
    "arch": "Unet",
    "encoder": "tu-resnet10t",
    "kwargs": {"encoder_depth": 3, "decoder_channels": [16, 8, 4]},
}


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # see tests/conftest.py


def make_cfg(root: Path, out: Path, *overrides: str, **train: Any) -> Any:
    t = {"epochs": 2, "batch_size": 2, "num_workers": 0, "log_every": 1, "val_metrics": "full"}
    t.update(train)
    return load_config(
        {
            "data": {"root": str(root), "size": [32, 32], "crop": [24, 24], "val_fraction": 0.25},
            "model": TINY_MODEL,
            "loss": {"name": "pm_dice", "params": {"gamma": 1.0}},
            "train": t,
            "output": str(out),
        },
        list(overrides),
    )


def test_end_to_end_run_directory(
    read_csv: Callable[..., Any], squares_root: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    events = list(iter_train(make_cfg(squares_root, out, "optim.lr=1e-3"), progress=False))
    kinds = [type(e) for e in events]
    assert kinds[0] is TrainStart and kinds[-1] is TrainDone and kinds.count(TrainEpoch) == 2
    start, done = events[0], events[-1]
    assert isinstance(start, TrainStart) and isinstance(done, TrainDone)
    # 6 training images, batch 2 -> 3 steps per epoch, 2 epochs
    assert start.max_iterations == 6 and start.device == "cpu"
    assert (start.train_size, start.val_size) == (6, 2)
    steps = [e for e in events if isinstance(e, TrainStep)]
    assert [s.iteration for s in steps] == [1, 2, 3, 4, 5, 6]
    for s in steps:  # poly schedule: lr * (1 - it / max_it) ** 0.9 after `it` steps
        assert s.lr == pytest.approx(1e-3 * (1 - s.iteration / 6) ** 0.9)
        assert math.isfinite(s.loss)
    assert done.stopped is False and done.reason == "completed"
    assert {p.name for p in out.iterdir()} == {
        "config.yaml",
        "metrics.csv",
        "checkpoint.pt",
        "best.pt",
        "eval.json",
    }
    rows = read_csv(out / "metrics.csv")
    assert [r["epoch"] for r in rows] == ["1", "2"]
    for col in ("train_loss", "val_loss", "val_dice", "val_iou", "val_nsd", "val_hd95", "lr"):
        assert col in rows[0]
    epoch_events = [e for e in events if isinstance(e, TrainEpoch)]
    assert [e.epoch for e in epoch_events] == [1, 2] and epoch_events[1].iteration == 6
    assert float(rows[1]["val_dice"]) == pytest.approx(epoch_events[1].val_dice)
    best = max(e.val_dice for e in epoch_events)
    assert done.best_dice == pytest.approx(best)
    _, meta = load_model(out / "best.pt")
    assert meta["arch"] == "Unet" and meta["loss"] == "pm_dice" and meta["input_size"] == [32, 32]
    assert meta["normalization"]["scale"] == "uint8" and len(meta["normalization"]["mean"]) == 3
    ev = json.loads((out / "eval.json").read_text())
    assert ev["split"] == "val" and ev["num_images"] == 2 and ev["checkpoint"] == "best.pt"
    assert set(ev["mean"]) == {"dice", "iou", "precision", "recall", "nsd", "hd95"}
    assert ev["mean"]["dice"] == pytest.approx(best)  # eval.json re-scores best.pt on val
    assert ev["distance_units"] == "pixels"  # 2D images: HD95 in pixels
    assert ev["scored_size"] == [32, 32]  # ... of data.size, the size the images were scored at
    assert load_config(out / "config.yaml").model.encoder == "tu-resnet10t"


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path)["model"]


def _assert_same_weights(run_a: Path, run_b: Path) -> None:
    """The two runs' final ``checkpoint.pt`` weights are bit-identical."""
    a, b = _weights(run_a / "checkpoint.pt"), _weights(run_b / "checkpoint.pt")
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.mark.parametrize(
    ("stop_at", "saved"),
    [
        ((TrainEpoch, 3), (1, 0)),  # at the epoch boundary, after epoch 1's validation
        ((TrainStep, 3), (0, 3)),  # during epoch 1's validation: it runs again on resume
        ((TrainStep, 4), (1, 1)),  # mid-epoch
    ],
)
def test_resume_matches_an_uninterrupted_run(
    read_csv: Callable[..., Any],
    squares_root: Path,
    tmp_path: Path,
    stop_at: tuple[type, int],
    saved: tuple[int, int],
) -> None:
    straight = train(make_cfg(squares_root, tmp_path / "a"), progress=False)
    assert not straight.stopped
    stop = {"now": False}

    def press_stop(event: Any) -> None:  # the Stop button, pressed once ``stop_at`` was seen
        stop["now"] |= isinstance(event, stop_at[0]) and event.iteration == stop_at[1]

    cfg = make_cfg(squares_root, tmp_path / "b")
    first = train(cfg, should_stop=lambda: stop["now"], on_event=press_stop, progress=False)
    assert first.stopped and "stopped by request" in first.reason
    assert ("during the validation of epoch 1" in first.reason) == (saved == (0, 3))
    assert not first.interrupted  # the Stop button is not Ctrl-C
    assert first.iteration == stop_at[1]
    ck = load_checkpoint(tmp_path / "b" / "checkpoint.pt")
    assert (ck["iteration"], ck["epoch"], ck["epoch_step"]) == (stop_at[1], *saved)
    # metrics.csv and best.pt are truthful: only completed (validated) epochs
    assert len(read_csv(tmp_path / "b" / "metrics.csv")) == saved[0]
    assert (tmp_path / "b" / "best.pt").is_file() == (saved[0] > 0)
    second = train(cfg, resume=True, progress=False)
    assert not second.stopped and second.iteration == 6
    a, b = _weights(tmp_path / "a" / "checkpoint.pt"), _weights(tmp_path / "b" / "checkpoint.pt")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k].float(), b[k].float(), atol=1e-6), k
    ra, rb = read_csv(tmp_path / "a" / "metrics.csv"), read_csv(tmp_path / "b" / "metrics.csv")
    assert [r["val_dice"] for r in ra] == [r["val_dice"] for r in rb]
    assert [r["train_loss"] for r in ra] == [r["train_loss"] for r in rb]  # the partial epoch's too
    best_a, best_b = (load_checkpoint(tmp_path / r / "best.pt") for r in ("a", "b"))
    assert (best_a["epoch"], best_a["val_dice"]) == (best_b["epoch"], best_b["val_dice"])


def test_a_resume_with_more_epochs_steps_with_the_new_schedule_at_once(
    squares_root: Path, tmp_path: Path
) -> None:
    """The LR saved at the end of a 1-epoch run is the old schedule's last (0): the first step
    after extending it to 2 epochs must use the new schedule's LR at iteration 3 of 6."""
    cfg = make_cfg(squares_root, tmp_path / "run", epochs=1)  # 6 training images: 3 steps
    assert not train(cfg, progress=False).stopped
    lrs: list[float] = []
    hook = register_optimizer_step_pre_hook(lambda opt, *_: lrs.append(opt.param_groups[0]["lr"]))
    try:
        done = train(
            make_cfg(squares_root, tmp_path / "run", epochs=2), resume=True, progress=False
        )
    finally:
        hook.remove()
    assert done.iteration == 6
    assert lrs[0] == pytest.approx(cfg.optim.lr * poly_lr_factor(3, 6))


def test_the_loss_of_a_training_step_reads_no_value_back_to_the_host(
    squares_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a GPU each read of a tensor's value (``bool``, ``int``, ``.item()``, ...) stalls the
    step until the device catches up: the training loss runs without its value checks."""
    from torch.overrides import TorchFunctionMode

    from napari_segloss.engine import run_state

    syncs = {"item", "__bool__", "__int__", "__float__", "__index__", "tolist", "nonzero"}
    reads: list[str] = []
    steps: list[int] = []

    class Reads(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
            if getattr(func, "__name__", "") in syncs:
                reads.append(func.__name__)
            return func(*args, **(kwargs or {}))

    class Watched(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
            if not logits.requires_grad:  # validation, not a training step
                return self.inner(logits, target)
            steps.append(1)
            with Reads():
                return self.inner(logits, target)

    real_get_loss = run_state.get_loss
    monkeypatch.setattr(run_state, "get_loss", lambda name, **p: Watched(real_get_loss(name, **p)))
    done = train(make_cfg(squares_root, tmp_path / "run", epochs=1), progress=False)
    assert not done.stopped and len(steps) == 3
    assert reads == []  # before: __int__ x2 (label range) and __bool__ (finite logits) a step


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(
    read_csv: Callable[..., Any],
    squares_root: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from napari_segloss.engine import run_state

    real_get_loss = run_state.get_loss

    class GoesNaN(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner, self.calls = inner, 0

        def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
            if logits.requires_grad:
                self.calls += 1
            loss = self.inner(logits, target)
            return loss * float("nan") if self.calls > 4 else loss

    monkeypatch.setattr(run_state, "get_loss", lambda name, **p: GoesNaN(real_get_loss(name, **p)))
    out = tmp_path / "nan"
    done = train(make_cfg(squares_root, out, epochs=3), progress=False)
    assert done.stopped and "non-finite loss (nan) at iteration 5" in done.reason
    assert "last good checkpoint" in done.reason
    ck = load_checkpoint(out / "checkpoint.pt")
    assert ck["epoch"] == 1 and ck["iteration"] == 3
    assert all(torch.isfinite(v.float()).all() for v in ck["model"].values())
    assert len(read_csv(out / "metrics.csv")) == 1
    assert not (out / "eval.json").exists()


def test_ctrl_c_saves_a_loadable_checkpoint(
    read_csv: Callable[..., Any],
    squares_root: Path,
    tmp_path: Path,
    ctrl_c_at_call: Callable[[int], Callable[[], bool]],
) -> None:
    press_ctrl_c = ctrl_c_at_call(2)
    out = tmp_path / "int"
    handler_before = signal.getsignal(signal.SIGINT)  # SIG_IGN when pytest runs in background
    done = train(make_cfg(squares_root, out), should_stop=press_ctrl_c, progress=False)
    assert done.stopped and done.reason.startswith("interrupted (Ctrl-C)")
    assert done.interrupted  # compare stops its whole grid on this
    # raised before step 2 ran? no: the flag is checked at the next step boundary
    ck = load_checkpoint(out / "checkpoint.pt")
    assert ck["iteration"] == 2 and ck["epoch_step"] == 2
    load_model(out / "checkpoint.pt")
    assert read_csv(out / "metrics.csv") == []
    assert signal.getsignal(signal.SIGINT) is handler_before  # restored after training


def test_fine_tune_and_array_datasets(squares_root: Path, tmp_path: Path) -> None:
    first = train(make_cfg(squares_root, tmp_path / "a", epochs=1), progress=False)
    rng = np.random.default_rng(1)
    images = [(rng.random((32, 32, 3)) * 255).astype(np.uint8) for _ in range(3)]
    masks = [(im[..., 0] > 128).astype(np.uint8) for im in images]
    ds = ArrayDataset(images, masks, train=True, crop=(24, 24))
    cfg = make_cfg(squares_root, tmp_path / "ft", epochs=1)
    done = train(cfg, datasets=(ds, None), init_checkpoint=first.best_checkpoint, progress=False)
    assert not done.stopped and done.best_dice is None
    assert (tmp_path / "ft" / "best.pt").is_file() and not (tmp_path / "ft" / "eval.json").exists()
    # fine-tuning from a different architecture fails before any step, naming the difference
    other = make_cfg(squares_root, tmp_path / "ft2", "model.classes=3", epochs=1)
    gen = iter_train(
        other, datasets=(ds, None), init_checkpoint=first.best_checkpoint, progress=False
    )
    with pytest.raises(CheckpointError, match=r"model\.classes: checkpoint 1 vs config 3"):
        next(gen)


@pytest.mark.parametrize(
    ("overrides", "error", "match"),
    [
        (["model.classes=1"], DataError, r"label 2.*model predicts 2 classes"),
        (
            ["model.classes=3", "loss.name=pm_dicee"],
            ConfigError,
            r"'loss.name'.*unknown loss name 'pm_dicee'",
        ),
        (
            ["model.classes=3", "loss.params.gama=2"],
            ConfigError,
            r"'loss.params'.*\['gama'\]; did you mean 'gamma'\?",
        ),
        (
            ["model.classes=3", "model.in_channels=1"],
            DataError,
            r"3 channel\(s\) but model.in_channels=1",
        ),
        (["data.root=/no/such/dir"], DataError, r"'data\.root'.*folder not found"),
        (
            ["model.classes=3", "model.arch=FPN", "model.kwargs={}", "data.crop=[24, 24]"],
            ConfigError,
            r"'data\.crop'.*\[24, 24\] must be divisible by 32.*\[32, 32\]",
        ),
    ],
)
def test_bad_input_fails_before_training(
    write_squares: Callable[..., Any],
    tmp_path: Path,
    overrides: list[str],
    error: type[Exception],
    match: str,
) -> None:
    root = write_squares(tmp_path / "d3", n=4, labels=3)
    cfg = make_cfg(root, tmp_path / "run", *overrides, epochs=1)
    gen = iter_train(cfg, progress=False)
    with pytest.raises(error, match=match) as info:
        next(gen)
    assert "\n" not in str(info.value)
    assert not (tmp_path / "run").exists()


def test_run_directory_protection(squares_root: Path, tmp_path: Path) -> None:
    cfg = make_cfg(squares_root, tmp_path / "r", epochs=1)
    # Python callers get the argument names (the CLI says --resume / --init-checkpoint)
    with pytest.raises(ConfigError, match=r"either resume=True or init_checkpoint, not both"):
        next(iter_train(cfg, resume=True, init_checkpoint="w.pt", progress=False))
    with pytest.raises(ConfigError, match="resume: no checkpoint"):
        next(iter_train(cfg, resume=True, progress=False))
    train(cfg, progress=False)
    with pytest.raises(ConfigError, match=r"already holds a run.*train\.overwrite"):
        next(iter_train(cfg, progress=False))
    again = train(
        make_cfg(squares_root, tmp_path / "r", "train.overwrite=true", epochs=1), progress=False
    )
    assert not again.stopped


def test_multiclass_with_workers(
    read_csv: Callable[..., Any], write_squares: Callable[..., Any], tmp_path: Path
) -> None:
    root = write_squares(tmp_path / "mc", n=6, labels=3)
    cfg = make_cfg(
        root,
        tmp_path / "run",
        "model.classes=3",
        "loss.name=ce+pm_dice",
        epochs=1,
        num_workers=1,
        val_metrics="overlap",
    )
    events = list(iter_train(cfg, progress=False))
    epoch = next(e for e in events if isinstance(e, TrainEpoch))
    assert set(epoch.metrics["per_class"]) == {"1", "2"}
    assert "nsd" not in epoch.metrics["mean"]  # overlap-only validation
    rows = read_csv(tmp_path / "run" / "metrics.csv")
    assert "dice_1" in rows[0] and "dice_2" in rows[0]
    ev = json.loads((tmp_path / "run" / "eval.json").read_text())
    assert "nsd" in ev["mean"]  # eval.json always has every metric


@given(
    st.integers(min_value=1, max_value=10_000),
    st.floats(min_value=0.0, max_value=3.0),
    st.data(),
)
def test_poly_lr_factor_properties(max_it: int, power: float, data: st.DataObject) -> None:
    a = data.draw(st.integers(min_value=0, max_value=max_it))
    b = data.draw(st.integers(min_value=a, max_value=max_it + 5))
    fa, fb = poly_lr_factor(a, max_it, power), poly_lr_factor(b, max_it, power)
    assert 0.0 <= fb <= fa <= 1.0
    assert poly_lr_factor(0, max_it, power) == 1.0
    if power > 0:
        assert poly_lr_factor(max_it, max_it, power) == 0.0


def test_poly_lr_factor_values() -> None:
    assert poly_lr_factor(50, 100, 0.9) == pytest.approx(0.5**0.9)
    assert poly_lr_factor(25, 100, 1.0) == pytest.approx(0.75)
    with pytest.raises(ValueError, match="max_iterations"):
        poly_lr_factor(1, 0)


def test_epoch_sampler_is_a_function_of_epoch() -> None:
    ds = ArrayDataset([np.zeros((4, 4), np.uint8)] * 10, [np.zeros((4, 4), np.uint8)] * 10)
    s = EpochSampler(ds, seed=3)
    s.set_epoch(2)
    full = list(s)
    assert sorted(i for i, _ in full) == list(range(10))
    s.set_epoch(2)
    s.set_start(4)
    assert list(s) == full[4:] and len(s) == 6
    s.set_epoch(3)
    assert [i for i, _ in s] != [i for i, _ in full]
    # two ranks split the epoch without overlap
    r0, r1 = (
        EpochSampler(ds, seed=3, rank=0, world_size=2),
        EpochSampler(ds, seed=3, rank=1, world_size=2),
    )
    r0.set_epoch(1)
    r1.set_epoch(1)
    assert sorted([i for i, _ in r0] + [i for i, _ in r1]) == list(range(10))


@pytest.mark.shared_data
def test_real_acdc_tiny_run(acdc_dir: Path, tmp_path: Path) -> None:
    """NIfTI slices, 4 classes, ACDC's split files; eval.json on the test split."""
    cfg = load_config(
        {
            "data": {
                "kind": "nifti",
                "root": str(acdc_dir),
                "masks": "labels",
                "split_file": "splits",
                "size": [64, 64],
                "limit": 1,
                "class_names": ["background", "RV", "MYO", "LV"],
            },
            "model": {**TINY_MODEL, "in_channels": 1, "classes": 4},
            "loss": {"name": "pm_dice"},
            "train": {"epochs": 1, "batch_size": 4, "num_workers": 0, "val_metrics": "overlap"},
            "output": str(tmp_path / "acdc"),
        }
    )
    done = train(cfg, progress=False)
    assert not done.stopped
    ev = json.loads((tmp_path / "acdc" / "eval.json").read_text())
    assert ev["split"] == "test" and ev["num_classes"] == 4
    assert set(ev["per_class"]) == {"1", "2", "3"}
    assert ev["class_names"] == ["background", "RV", "MYO", "LV"]
    _, meta = load_model(tmp_path / "acdc" / "best.pt")
    assert meta["normalization"] == {"scale": "uint8", "mean": [0.0], "std": [1.0]}
    assert meta["slice_order"] == "napari" and meta["class_names"][3] == "LV"


def test_in_memory_batches_match_the_dataloader_path(
    squares_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    used = {"n": 0}
    real_iter = sampling.InMemoryBatches.__iter__

    def counting_iter(self: Any) -> Any:
        used["n"] += 1
        return real_iter(self)

    monkeypatch.setattr(sampling.InMemoryBatches, "__iter__", counting_iter)
    args = ("data.augment=false", "data.crop=null")
    fast = train(make_cfg(squares_root, tmp_path / "fast", *args), progress=False)
    assert used["n"] == 2  # one pass per epoch, no DataLoader
    monkeypatch.setattr(sampling, "IN_MEMORY_MAX_BYTES", 0)  # too big -> DataLoader
    slow = train(make_cfg(squares_root, tmp_path / "slow", *args), progress=False)
    assert used["n"] == 2
    assert fast.iteration == slow.iteration == 6
    _assert_same_weights(tmp_path / "fast", tmp_path / "slow")


def test_results_do_not_depend_on_num_workers(squares_root: Path, tmp_path: Path) -> None:
    """Augmentation seeds come from (seed, epoch, index), not from the worker that runs them."""
    a = train(make_cfg(squares_root, tmp_path / "w0", epochs=1, num_workers=0), progress=False)
    b = train(make_cfg(squares_root, tmp_path / "w2", epochs=1, num_workers=2), progress=False)
    assert a.iteration == b.iteration == 3
    _assert_same_weights(tmp_path / "w0", tmp_path / "w2")


def test_validation_and_eval_show_progress(
    squares_root: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The training bar stands still while an epoch is validated and eval.json is scored
    (minutes on a CPU for a real validation set): each pass has its own bar."""
    # captured stderr is no terminal: plain lines, here one per update (a log gets one every
    # progress.LOG_INTERVAL_S seconds, so short passes say nothing)
    monkeypatch.setattr(progress, "LOG_INTERVAL_S", 0.0)
    cfg = make_cfg(squares_root, tmp_path / "run", epochs=1)
    list(iter_train(cfg, progress=True))
    err = capsys.readouterr().err
    assert "validation, epoch 1" in err and "eval.json: best.pt on val" in err
    list(iter_train(make_cfg(squares_root, tmp_path / "quiet", epochs=1), progress=False))
    assert "validation" not in capsys.readouterr().err


def test_eval_json_batches_its_forward_passes_as_validation(
    squares_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # eval.json ran one image per forward pass; it now takes validation's batches, so it
    # repeats the best epoch's validation pass, with the same per-image metrics
    from napari_segloss.data.factory import build_datasets
    from napari_segloss.engine import evaluation

    batches: list[int] = []
    whole = evaluation.whole_image_logits

    def spy(model: torch.nn.Module, images: torch.Tensor, *args: Any, **kw: Any) -> Any:
        batches.append(images.shape[0])
        return whole(model, images, *args, **kw)

    monkeypatch.setattr(evaluation, "whole_image_logits", spy)
    cfg = make_cfg(squares_root, tmp_path / "run", "train.val_batch_size=2", epochs=1)
    done = list(iter_train(cfg, progress=False))[-1]
    assert batches == [2, 2]  # epoch 1's validation, then eval.json: both images in one pass
    ev = json.loads((tmp_path / "run" / "eval.json").read_text())
    assert isinstance(done, TrainDone) and ev["mean"]["dice"] == done.best_dice  # exactly
    model, _ = load_model(tmp_path / "run" / "best.pt")
    _, val_ds = build_datasets(cfg)
    settings = evaluation.EvalSettings(torch.device("cpu"), 2, multiple=8)
    per_image = {
        bs: evaluation.evaluate_dataset(model, val_ds, [0, 1], settings, batch_size=bs)[2]
        for bs in (1, 2)
    }
    assert per_image[1] == per_image[2]  # every metric of every image
    assert [{int(c): m for c, m in r["metrics"].items()} for r in ev["per_image"]] == per_image[2]


def test_a_step_the_grad_scaler_skips_moves_the_schedule_without_a_warning() -> None:
    """fp16 training (GPUs before compute capability 8): GradScaler skips the optimiser step
    when the scaled gradients overflow (always in its first steps). The poly schedule still
    moves on (it is a function of the iteration, as resume restores it), and torch's warning
    that the schedule's first value was skipped is not shown to the user."""
    import warnings
    from types import SimpleNamespace

    from napari_segloss.engine.training import _step

    model = torch.nn.Conv2d(1, 1, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda i: poly_lr_factor(i, 10))
    before = [p.detach().clone() for p in model.parameters()]
    state = SimpleNamespace(
        cfg=SimpleNamespace(train=SimpleNamespace(channels_last=False, batch_size=1)),
        device=torch.device("cpu"),
        norm_a=torch.ones(1, 1, 1, 1),
        norm_b=torch.zeros(1, 1, 1, 1),
        eval_settings=SimpleNamespace(amp_dtype=None),
        train_model=model,
        loss_fn=lambda logits, masks: logits.sum() * torch.tensor(float("inf")),
        optimizer=optimizer,
        scaler=torch.amp.GradScaler("cpu"),
        scheduler=scheduler,
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _step(state, torch.ones(1, 1, 2, 2), torch.zeros(1, 2, 2, dtype=torch.long), 0, 0)
    assert [str(w.message) for w in caught] == []
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    assert state.scaler.get_scale() < 65536.0  # the step was skipped
    assert optimizer.param_groups[0]["lr"] == pytest.approx(poly_lr_factor(1, 10))

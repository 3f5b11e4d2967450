"""torch.distributed helpers and a real 2-process torchrun (gloo, CPU) training run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from _dist_common import tiny_config

from napari_segloss.engine import train
from napari_segloss.engine.checkpoint import load_checkpoint
from napari_segloss.engine.config import config_to_dict, config_yaml, load_config
from napari_segloss.engine.distributed import (
    DistInfo,
    StepStopVote,
    all_gather_objects,
    any_true,
    get_dist_info,
    init_distributed,
    is_main_process,
)
from napari_segloss.engine.run_state import poly_lr_factor, restored_partial, resume_position

SCRIPT = Path(__file__).with_name("_dist_train_script.py")


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, DistInfo(0, 1, 0)),
        ({"RANK": "1", "WORLD_SIZE": "4", "LOCAL_RANK": "1"}, DistInfo(1, 4, 1)),
        ({"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0"}, DistInfo(0, 1, 0)),
    ],
)
def test_dist_info_from_environment(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], expected: DistInfo
) -> None:
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    info = get_dist_info()
    assert (info.rank, info.world_size, info.local_rank) == (
        expected.rank,
        expected.world_size,
        expected.local_rank,
    )
    assert info.enabled == (expected.world_size > 1)
    assert is_main_process() == (expected.rank == 0)


def test_single_process_is_a_no_op(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    info = init_distributed()
    assert not info.enabled and not info.initialized_here
    assert not torch.distributed.is_initialized()
    assert any_true(True) and not any_true(False)
    assert all_gather_objects({"a": 1}) == [{"a": 1}]
    asked = {"stop": False}
    vote = StepStopVote(lambda: asked["stop"])
    assert not vote.before_step()
    asked["stop"] = True  # honoured before the next step, with nothing to wait for
    assert vote.before_step() and not vote.at_log_step() and not vote.finish()


def test_bad_backend_and_env(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="backend must be"):
        init_distributed("tcp")
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(ValueError, match="WORLD_SIZE must be an integer, got 'two'"):
        get_dist_info()


def _torchrun_command(script: Path, *args: Path | str) -> tuple[list[str], dict[str, str]]:
    """``torchrun --standalone --nproc_per_node=2 script args`` on CPU (gloo), one thread per
    process, with no distributed variables inherited: (command, environment)."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    return [*cmd, str(script), *map(str, args)], env


def _torchrun_two_processes(script: Path, *args: Path) -> str:
    """:func:`_torchrun_command` run to its end; fails the test on a non-zero exit. Returns
    what the processes printed (stdout and stderr)."""
    cmd, env = _torchrun_command(script, *args)
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout + proc.stderr


def _torchrun_then_sigterm(
    script: Path, mode: str, ready: Path, *args: str, rank_1_only: bool = False
) -> tuple[str, float]:
    """:func:`_torchrun_command` of ``script MODE READY args``, sent SIGTERM (as a scheduler
    would) once both ranks have created ``READY.<rank>`` (each is inside its first slow call;
    signalled when only rank 0 was, a lagging rank 1 could carry the request into the vote
    of the step before): (output, seconds from the signal to the exit)."""
    cmd, env = _torchrun_command(script, mode, ready, *args)
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    ranks = [ready.with_name(f"{ready.name}.{rank}") for rank in (0, 1)]
    deadline = time.monotonic() + 150
    while (
        not all(r.exists() for r in ranks) and proc.poll() is None and time.monotonic() < deadline
    ):
        time.sleep(0.05)
    assert all(r.exists() for r in ranks), proc.communicate()[0][-3000:]
    sent = time.monotonic()
    if rank_1_only:  # e.g. a user's kill of one worker process
        os.kill(int(ranks[1].read_text()), signal.SIGTERM)
    else:
        proc.send_signal(signal.SIGTERM)
    output = proc.communicate(timeout=120)[0]
    return output, time.monotonic() - sent


@pytest.mark.slow
def test_torchrun_two_cpu_processes(
    read_csv: Callable[..., Any], write_squares: Callable[..., Any], tmp_path: Path
) -> None:
    data, out = tmp_path / "data", tmp_path / "run"
    write_squares(data, hw=(36, 36))
    _torchrun_two_processes(SCRIPT, data, out)
    # Only rank 0 wrote the run directory: one metrics.csv, no temp files, no per-rank copies.
    assert sorted(p.name for p in out.iterdir()) == [
        "best.pt",
        "checkpoint.pt",
        "config.yaml",
        "eval.json",
        "metrics.csv",
    ]
    rows = read_csv(out / "metrics.csv")
    assert [r["epoch"] for r in rows] == ["1", "2"]
    # 6 training images over 2 ranks = 3 per rank; batch 2 with drop_last -> 1 step per epoch
    assert [r["iteration"] for r in rows] == ["1", "2"]
    w0 = torch.load(tmp_path / "weights_rank0.pt", weights_only=True)
    w1 = torch.load(tmp_path / "weights_rank1.pt", weights_only=True)
    assert w0.keys() == w1.keys()
    for key in w0:
        assert torch.equal(w0[key], w1[key]), key


RESUME_SCRIPT = Path(__file__).with_name("_dist_resume_script.py")


@pytest.mark.slow
def test_torchrun_resume_mid_epoch_matches_an_uninterrupted_run(
    read_csv: Callable[..., Any], write_squares: Callable[..., Any], tmp_path: Path
) -> None:
    """A run stopped mid-epoch under DDP and resumed writes the metrics.csv and weights of an
    uninterrupted run, train_loss of the interrupted epoch included: every rank's partial loss
    sum is saved and restored once (rank 0's was counted on every rank)."""
    data, out = tmp_path / "data", tmp_path / "runs"
    write_squares(data, n=12, hw=(32, 32))
    _torchrun_two_processes(RESUME_SCRIPT, data, out)
    straight, resumed = (
        read_csv(out / "straight" / "metrics.csv"),
        read_csv(out / "resumed" / "metrics.csv"),
    )
    timing = ("epoch_time_s", "train_images_per_s")
    assert len(straight) == len(resumed) == 3
    for a, b in zip(straight, resumed, strict=True):
        assert {k: v for k, v in a.items() if k not in timing} == {
            k: v for k, v in b.items() if k not in timing
        }
    wa = torch.load(out / "straight" / "checkpoint.pt", weights_only=True)["model"]
    wb = torch.load(out / "resumed" / "checkpoint.pt", weights_only=True)["model"]
    for key in wa:
        assert torch.equal(wa[key], wb[key]), key


def test_restored_partial_counts_each_step_once() -> None:
    """Each rank takes back its own partial sums; with another world size (or a checkpoint
    without ``partial_ranks``) rank 0 takes the total and the other ranks start from zero."""
    ckpt = {"partial": (3.0, 4), "partial_ranks": [(1.0, 2), (2.0, 2)]}
    assert [restored_partial(ckpt, DistInfo(r, 2)) for r in (0, 1)] == [(1.0, 2), (2.0, 2)]
    assert [restored_partial(ckpt, DistInfo(r, 3)) for r in (0, 1, 2)] == [
        (3.0, 4),
        (0.0, 0),
        (0.0, 0),
    ]
    old = {"partial": (1.5, 3)}
    assert [restored_partial(old, DistInfo(r, 2)) for r in (0, 1)] == [(1.5, 3), (0.0, 0)]
    assert restored_partial(old, DistInfo()) == (1.5, 3)
    assert restored_partial({}, DistInfo()) == (0.0, 0)


def test_resume_position_counts_the_steps_of_this_world_size() -> None:
    """A step consumes ``batch_size * world_size`` samples of one global order: another world
    size continues after the samples seen (whole steps, rounded down) and counts iterations
    in its own steps (4 per epoch on 1 process, 2 on 2 processes)."""
    one = {"epoch": 1, "epoch_step": 3, "iteration": 7, "world_size": 1}
    assert resume_position(one, DistInfo(0, 1), 4) == (3, 7)
    assert resume_position(one, DistInfo(1, 2), 2) == (1, 3)  # 6 samples seen: 1 step of 4
    two = {"epoch": 2, "epoch_step": 1, "iteration": 5, "world_size": 2}
    assert resume_position(two, DistInfo(0, 2), 2) == (1, 5)
    assert resume_position(two, DistInfo(0, 1), 4) == (2, 10)
    boundary = {"epoch": 1, "epoch_step": 0, "iteration": 4}  # older checkpoint: no world_size
    assert resume_position(boundary, DistInfo(0, 2), 2) == (0, 2)


WORLD_CHANGE_SCRIPT = Path(__file__).with_name("_dist_world_change_script.py")


@pytest.mark.slow
def test_resume_on_another_number_of_processes_follows_the_lr_schedule(
    read_csv: Callable[..., Any], write_squares: Callable[..., Any], tmp_path: Path
) -> None:
    """A 1-process checkpoint resumed on 2 processes (and the reverse) continues the poly
    schedule of its new step count. The saved iteration counted the other world size's steps:
    the 1-process run's epoch 1 (4 steps) is all of a 2-process 2-epoch schedule, and the
    resumed epochs trained with a zero LR."""
    data, out = tmp_path / "data", tmp_path / "runs"
    write_squares(data, n=12, hw=(32, 32))  # 9 training images: 4 steps on 1 process, 2 on 2
    assert not train(tiny_config(data, out / "one", epochs=1), progress=False).stopped
    printed = _torchrun_two_processes(WORLD_CHANGE_SCRIPT, data, out)
    assert printed.count("the LR schedule is recomputed") == 1  # rank 0 says it, once
    done = train(tiny_config(data, out / "two", epochs=3), resume=True, progress=False)
    assert not done.stopped, done.reason
    lr = tiny_config(data, out, epochs=1).optim.lr
    one, two = read_csv(out / "one" / "metrics.csv"), read_csv(out / "two" / "metrics.csv")
    assert [int(r["iteration"]) for r in one] == [4, 4, 6]
    assert [int(r["iteration"]) for r in two] == [2, 8, 12]
    assert float(one[1]["lr"]) == pytest.approx(lr * poly_lr_factor(4, 6))
    assert float(two[1]["lr"]) == pytest.approx(lr * poly_lr_factor(8, 12))


SLOW_EVAL_SCRIPT = Path(__file__).with_name("_dist_slow_eval_script.py")


@pytest.mark.slow
def test_ranks_do_not_wait_for_the_final_evaluation_in_a_collective(
    write_squares: Callable[..., Any], tmp_path: Path
) -> None:
    """Rank 0 alone scores the held-out set for eval.json; the other ranks finish without a
    collective that would time out (and take rank 0 down with them) on a long evaluation."""
    data, out = tmp_path / "data", tmp_path / "run"
    write_squares(data, n=12, hw=(32, 32))
    _torchrun_two_processes(SLOW_EVAL_SCRIPT, data, out)
    assert (out / "eval.json").is_file()


SLOW_SCRIPT = Path(__file__).with_name("_slow_train_script.py")


@pytest.mark.slow
def test_sigterm_to_torchrun_during_validation_stops_every_rank_at_the_same_batch(
    write_squares: Callable[..., Any], tmp_path: Path
) -> None:
    """torchrun forwards SIGTERM and kills its workers 30 s later: a validation longer than
    that ended with no checkpoint (before: killed, nothing saved). Every rank now stops at the
    same validation batch (one that skipped a collective would hang the others) and rank 0
    saves the last step. Epoch 1's validation runs to its end on shards of 3 and 2 images."""
    data, out, ready = tmp_path / "data", tmp_path / "run", tmp_path / "ready"
    write_squares(data, n=20, hw=(32, 32))  # 15 training images: 8 per rank, 4 steps
    config = tmp_path / "config.yaml"
    cfg = load_config(config_to_dict(tiny_config(data, out, epochs=2)), ["train.val_batch_size=1"])
    config.write_text(config_yaml(cfg))
    # from each rank's 4th image on (epoch 2's validation), 3 s an image
    args = ("3", "3", "--config", str(config), "--no-progress")
    output, took = _torchrun_then_sigterm(SLOW_SCRIPT, "scoring", ready, *args)
    said = "after 8 of 8 steps (1 of 2 epochs done), during the validation of epoch 2;"
    assert said in output, output[-3000:]
    assert took < 15, f"{took:.1f} s from SIGTERM to exit"
    scored = (tmp_path / "ready.0.log").read_text().split()
    assert len(scored) <= 5, scored  # 3 in epoch 1, then at most 2 of epoch 2's 3 (3 s each)
    ck = load_checkpoint(out / "checkpoint.pt")
    assert (ck["epoch"], ck["epoch_step"], ck["iteration"]) == (1, 4, 8)
    assert len(ck["history"]) == 1 and len(ck["partial_ranks"]) == 2
    assert not (out / "eval.json").exists()


@pytest.mark.slow
def test_sigterm_to_torchrun_between_log_steps_stops_every_rank_at_the_next_step(
    write_squares: Callable[..., Any], tmp_path: Path
) -> None:
    """On CPU processes (gloo) a stop request is agreed on at every step, one step late, not
    only at log steps: with slow steps, the next log step could come after torchrun's SIGKILL
    (30 s after its SIGTERM) and the checkpoint was lost. Every rank stops at the same step and
    rank 0 saves it (before: at the epoch's last step, the next log step here)."""
    data, out, ready = tmp_path / "data", tmp_path / "run", tmp_path / "ready"
    write_squares(data, n=36, hw=(32, 32))  # 27 training images: 14 per rank, 7 steps an epoch
    config = tmp_path / "config.yaml"
    cfg = load_config(config_to_dict(tiny_config(data, out, epochs=1)), ["train.log_every=100"])
    config.write_text(config_yaml(cfg))
    # from each rank's 4th step on, 2 s a step; SIGTERM during the 4th
    args = ("3", "2", "--config", str(config), "--no-progress")
    output, _ = _torchrun_then_sigterm(SLOW_SCRIPT, "steps", ready, *args)
    assert "after 5 of 7 steps" in output, output[-3000:]
    # the 4th step under way, then the 5th (its round had started before the request)
    started = [len(ready.with_name(f"ready.{r}.log").read_text().split()) for r in (0, 1)]
    assert started == [5, 5]
    ck = load_checkpoint(out / "checkpoint.pt")
    assert (ck["epoch"], ck["epoch_step"], ck["iteration"]) == (0, 5, 5)
    assert len(ck["partial_ranks"]) == 2


@pytest.mark.slow
def test_a_signal_to_one_process_is_reported_as_an_interrupt_by_rank_0(
    write_squares: Callable[..., Any], tmp_path: Path
) -> None:
    """SIGTERM to rank 1 alone stops every rank at the same step; rank 0 said "stopped by
    request" with no resume hint and exited 1, the code of a non-finite loss."""
    data, out, ready = tmp_path / "data", tmp_path / "run", tmp_path / "ready"
    write_squares(data, n=36, hw=(32, 32))
    config = tmp_path / "config.yaml"
    cfg = load_config(config_to_dict(tiny_config(data, out, epochs=1)), ["train.log_every=100"])
    config.write_text(config_yaml(cfg))
    args = ("3", "2", "--config", str(config), "--no-progress")
    output, _ = _torchrun_then_sigterm(SLOW_SCRIPT, "steps", ready, *args, rank_1_only=True)
    assert "segloss train: stopped (interrupted on another process after " in output, output[-3000:]
    assert "to continue: the same command with --resume" in output, output[-3000:]
    assert "segloss train: interrupted\n" in output  # main()'s line for exit code 130
    ck = load_checkpoint(out / "checkpoint.pt")
    assert len(ck["partial_ranks"]) == 2 and ck["epoch_step"] > 0

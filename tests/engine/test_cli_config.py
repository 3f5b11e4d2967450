"""``segloss`` as a user meets it: config files (read, validated, shipped) and the messages."""

from __future__ import annotations

from pathlib import Path

import pytest

from napari_segloss.cli import main, prepare_config
from napari_segloss.engine.config import config_to_dict, load_config

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "training" / "configs"


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    rc = main(argv)
    out, err = capsys.readouterr()
    return rc, out, err


def test_cli_reads_a_config_file_as_load_config_does(tmp_path: Path) -> None:
    # YAML 1.1 reads 1e-6 as a string: load_config(path) turned it into a float, the CLI's own
    # reader did not, so `segloss train` refused a file the Python API accepted
    path = tmp_path / "c.yaml"
    path.write_text(
        "data: {root: bundled:kvasir_train}\n"
        "loss: {name: pm_dice, params: {gamma: 1.0, eps: 1e-6}}\n"
        "optim: {lr: 1e-3}\n"
    )
    tree, overrides = prepare_config(path)
    assert tree["loss"]["params"]["eps"] == 1e-6
    cli_cfg = load_config(tree, overrides)
    assert config_to_dict(cli_cfg) == config_to_dict(load_config(path))
    assert cli_cfg.loss.params["eps"] == 1e-6 and cli_cfg.optim.lr == 1e-3


@pytest.mark.parametrize(
    ("text", "needles"),
    [
        (  # a second section further down replaced the first without a word
            "data: {root: bundled:kvasir_train}\ntrain: {epochs: 1}\noptim: {}\ntrain: {epochs: 3}\n",
            ["'train'", "lines 2 and 4"],
        ),
        (
            "data: {root: bundled:kvasir_train}\noptim: {lr: 0.1, lr: 0.2}\n",
            ["'lr'", "lines 2 and 2"],
        ),
    ],
)
def test_a_key_written_twice_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, needles: list[str]
) -> None:
    path = tmp_path / "dup.yaml"
    path.write_text(text)
    rc, _, err = _run(
        ["train", "--config", str(path), "--set", f"output={tmp_path / 'run'}"], capsys
    )
    assert rc == 2 and err.count("\n") == 1, err
    for needle in ["dup.yaml", "twice", *needles]:
        assert needle in err, (needle, err)
    assert not (tmp_path / "run").exists()


def test_yaml_merge_keys_may_still_be_overridden(tmp_path: Path) -> None:
    path = tmp_path / "merge.yaml"
    path.write_text(
        "base: &b {epochs: 2, batch_size: 2}\n"
        "data: {root: bundled:kvasir_train}\n"
        "train: {<<: *b, epochs: 5}\n"
    )
    tree, _ = prepare_config(path)
    assert tree["train"] == {"epochs": 5, "batch_size": 2}


def test_iter_compare_reads_a_config_path_with_the_same_reader(tmp_path: Path) -> None:
    from napari_segloss.engine import iter_compare
    from napari_segloss.engine.config import ConfigError

    path = tmp_path / "dup.yaml"
    path.write_text("data: {root: bundled:kvasir_train}\ntrain: {epochs: 1}\ntrain: {epochs: 3}\n")
    with pytest.raises(ConfigError, match="'train' is written twice"):
        next(iter(iter_compare(path, ["dice"], [0], tmp_path / "cmp")))
    assert not (tmp_path / "cmp").exists()


# ------------------------------------------------------------------------------ shipped configs


def test_every_training_config_ships_in_the_package() -> None:
    """napari_segloss/configs/ holds a relative link to each training/configs/*.yaml (the one
    copy), which the wheel stores as a real file: `pip install` users get them too."""
    from napari_segloss.engine.config import SHIPPED_CONFIGS_DIR, shipped_configs

    repo_configs = sorted(p.name for p in CONFIGS.glob("*.yaml"))
    assert sorted(p.name for p in SHIPPED_CONFIGS_DIR.iterdir()) == repo_configs
    for name, path in shipped_configs().items():
        assert path.resolve() == (CONFIGS / f"{name}.yaml").resolve()
        if path.is_symlink():  # a checkout without symlinks has copies (tested equal above)
            assert not Path(path.readlink()).is_absolute()


def test_config_accepts_a_shipped_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # no training/ folder here: a `pip install` user's situation
    tree, _ = prepare_config("quickstart", ["train.epochs=1"])
    assert tree == prepare_config(CONFIGS / "quickstart.yaml")[0]
    assert load_config("quickstart").data.root == Path("bundled:kvasir_train")
    # a file of that name in the working folder wins over the shipped config
    Path("quickstart").write_text("data: {root: mine}\n")
    assert prepare_config("quickstart")[0] == {"data": {"root": "mine"}}


@pytest.mark.parametrize(
    ("config", "needles"),
    [
        ("quickstrt", ["config file not found: 'quickstrt'", "did you mean 'quickstart'?"]),
        ("training/configs/quickstart.yaml", ["not found", "did you mean 'quickstart'?"]),
        (".", ["a folder, not a config file"]),
    ],
)
def test_config_not_found_lists_the_shipped_names(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    config: str,
    needles: list[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    rc, _, err = _run(["train", "--config", config], capsys)
    assert rc == 2 and err.count("\n") == 1, err
    for needle in [*needles, "kvasir_pm_dice", "segloss configs"]:
        assert needle in err, (needle, err)


def test_configs_command_lists_and_prints(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = _run(["configs"], capsys)
    assert rc == 0
    rows = {line.split()[0]: line for line in out.splitlines() if line.startswith("  ")}
    assert sorted(rows) == sorted(p.stem for p in CONFIGS.glob("*.yaml"))
    assert "[data.root bundled:kvasir_train]" in rows["quickstart"]
    assert "[--set data.root=PATH]" in rows["kvasir_pm_dice"]  # root: ??? must be given
    rc, out, _ = _run(["configs", "kvasir_pm_dice"], capsys)
    assert rc == 0 and out == (CONFIGS / "kvasir_pm_dice.yaml").read_text(encoding="utf-8")
    rc, out, err = _run(["configs", "kvasir"], capsys)
    assert rc == 2 and "did you mean 'kvasir_pm_dice'?" in err and not out


def test_losses_command_lists_every_loss_with_its_paper(capsys: pytest.CaptureFixture[str]) -> None:
    from napari_segloss.losses import get_loss, list_losses

    rc, out, _ = _run(["losses"], capsys)
    assert rc == 0
    rows = {line.split()[0]: line for line in out.splitlines() if line.startswith("  ")}
    assert list(rows) == list_losses()
    assert (
        "Focal Tversky loss (Abraham & Khan 2019; Yeung et al. 2021 eq. 14)"
        in rows["focal_tversky"]
    )
    assert "arXiv:2506.15744" in rows["pm_dice"]
    assert rows["ce+pm_dice"].endswith("weighted sum of ce and pm_dice")
    # every name an unknown-name error lists as known is explained here too
    with pytest.raises(ValueError, match=r"\(known: ") as unknown:
        get_loss("nope")
    known = str(unknown.value).split("(known: ")[1].rstrip(")").split(", ")
    said = " ".join(out.split())
    for name in known:
        assert name in rows or f" {name}=" in said, name
    assert "Other names accepted: bce=ce, cross_entropy=ce," in said


@pytest.mark.parametrize("name", ["pm_dice", "focal_tversky", "ce+pm_dice", "gdl"])
def test_losses_command_prints_a_config_section_that_trains(
    name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """`segloss losses NAME`: what it computes, each parameter with its default and meaning,
    and a loss: section that, pasted into the quickstart, is a valid config whose loss builds
    with exactly the defaults."""
    import yaml

    from napari_segloss.engine.config import SHIPPED_CONFIGS_DIR
    from napari_segloss.losses import get_loss, loss_parameters

    rc, out, _ = _run(["losses", name], capsys)
    assert rc == 0
    head, section = out.split("in a config (the defaults):\n")
    assert "parameters (loss.params)" in head
    loss = yaml.safe_load(section)["loss"]
    assert loss["name"] == name
    tree = yaml.safe_load((SHIPPED_CONFIGS_DIR / "quickstart.yaml").read_text()) | {"loss": loss}
    cfg = load_config(tree)
    assert cfg.loss.name == name
    get_loss(cfg.loss.name, **cfg.loss.params)
    if "+" not in name:
        defaults = {k: p.default for k, p in loss_parameters(name).items()}
        for key, value in loss["params"].items():
            assert value == (list(defaults[key]) if isinstance(defaults[key], tuple)
                             else defaults[key]), key  # fmt: skip
        assert "mode" not in loss["params"] and "(and mode, reduction" in head


def test_losses_command_describes_a_parameter(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = _run(["losses", "pm_dice"], capsys)
    assert rc == 0
    gamma = next(line for line in out.splitlines() if line.strip().startswith("gamma "))
    assert gamma.split()[1] == "1.0" and "one value per class channel" in out
    assert "eps: 1.0e-06" in out  # YAML 1.1 reads 1e-06 as a string: written as a float
    rc, out, _ = _run(["losses", "pm_dice", "--all"], capsys)
    assert rc == 0 and "ignore_index" in out.split("in a config")[0]
    rc, out, err = _run(["losses", "pmdice"], capsys)
    assert rc == 2 and not out and "did you mean 'pm_dice'" in err and err.count("\n") == 1


# ------------------------------------------------------------------------------ train start line


def test_train_says_once_that_amp_runs_float32_without_cuda(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """train.amp: true (every shipped config) on a CPU trained in float32 without a word."""
    out_dir = tmp_path / "run"
    overrides = ["train.epochs=2", "data.size=32", "data.limit=8", "train.log_every=1"]
    overrides += ["train.device=cpu", "train.amp=true", "train.val_every=2", f"output={out_dir}"]
    rc, out, err = _run(
        ["train", "--config", "quickstart", "--no-progress", "--set", *overrides], capsys
    )
    assert rc == 0, err
    first = err.splitlines()[0]  # the start line: stderr, with the other progress lines
    assert first.startswith("segloss train: ") and f"run dir {out_dir}" in first
    assert "on cpu, float32 (train.amp is on, but mixed precision runs on CUDA only)" in first
    assert err.count("mixed precision") == 1  # once, not per step or epoch
    assert "mixed precision" not in out
    assert f"best checkpoint: {out_dir / 'best.pt'}" in out  # where the results are


def test_start_line_names_autocast_and_resume() -> None:
    from napari_segloss.cli import start_line
    from napari_segloss.engine.events import TrainStart

    base = {"run_dir": Path("r"), "max_iterations": 10, "epoch": 0, "iteration": 0}
    gpu = TrainStart(**base, device="cuda:0", train_size=4, val_size=1, precision="bfloat16", amp_requested=True)  # fmt: skip
    assert "on cuda:0, bfloat16 autocast (train.amp)" in start_line(gpu)
    resumed = TrainStart(**{**base, "iteration": 4}, device="cpu", train_size=4, val_size=0)
    assert "10 steps, resuming at step 4 on cpu, float32;" in start_line(resumed)
    one = TrainStart(**{**base, "max_iterations": 1}, device="cpu", train_size=1, val_size=0)
    assert "1 step on cpu" in start_line(one)  # not "1 steps"


def test_output_into_a_closed_pipe_ends_quietly() -> None:
    """`segloss configs NAME | head -0`: the reader is gone; no error message, exit 141 (as a
    shell reports SIGPIPE), instead of 'error: [Errno 32] Broken pipe' and exit 2."""
    import os
    import subprocess
    import sys

    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader left before the first byte
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "napari_segloss.cli", "configs", "quickstart"],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
        )
    finally:
        os.close(write_end)
    assert proc.returncode == 141, proc.stderr
    assert proc.stderr == ""


def test_every_command_and_option_explains_itself() -> None:
    """Each subcommand's --help opens with a description, and every option has help text."""
    import argparse

    from napari_segloss.cli import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    for name, parser in sub.choices.items():
        assert parser.description, f"segloss {name} --help has no description"
        bare = [a.dest for a in parser._actions if not a.help]
        assert not bare, f"segloss {name}: options without help: {bare}"


def test_the_overrides_a_switched_loss_error_names_replace_the_configs_params() -> None:
    """``--set loss.name=focal+pm_dice`` on the quickstart config keeps its flat PM Dice
    ``gamma``; the error says to replace the params, and doing as it says builds the loss."""
    from napari_segloss.engine.config import ConfigError
    from napari_segloss.engine.run_state import check_loss_fits

    quick = CONFIGS / "quickstart.yaml"
    with pytest.raises(ConfigError) as refused:
        check_loss_fits(load_config(quick, ["loss.name=focal+pm_dice"]))
    message = str(refused.value)
    assert message.startswith("config key 'loss.params': compound 'focal+pm_dice': parameter")
    assert "these come from loss.params ({'gamma': 1.0, 'eps': 1e-06})" in message
    assert "--set 'loss.params={}' loss.params.KEY=VALUE" in message
    fixed = ["loss.name=focal+pm_dice", "loss.params={}", "loss.params.pm_dice.gamma=1.0"]
    cfg = load_config(quick, fixed)
    check_loss_fits(cfg)
    assert cfg.loss.params == {"pm_dice": {"gamma": 1.0}}

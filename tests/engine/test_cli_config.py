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

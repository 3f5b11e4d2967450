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

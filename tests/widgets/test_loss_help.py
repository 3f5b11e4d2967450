"""A loss name in any panel says, on hover, what the loss computes (title, paper, formula):
"focal_dice_zhao" or "cosine_tversky" alone tell a new user little."""

from __future__ import annotations

from qtpy.QtCore import Qt

PLUGIN = "napari-segloss"


def test_every_loss_list_of_the_panels_describes_its_losses(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    names = ["Loss Explorer", "Train / Fine-tune", "Compare Losses"]
    explorer, train, compare = (viewer.window.add_plugin_dock_widget(PLUGIN, n)[1] for n in names)
    qtbot.waitUntil(lambda: explorer.ready and train.ready and not compare.busy, timeout=60_000)

    [item] = explorer.loss_list.findItems("focal_tversky", Qt.MatchFlag.MatchExactly)
    assert item.toolTip().startswith("Focal Tversky loss (Abraham & Khan 2019;")
    assert "(1 - TI_c)^gamma" in item.toolTip()
    assert all(explorer.loss_list.item(i).toolTip() for i in range(explorer.loss_list.count()))

    tips = {}
    for combo in (train.loss.native, compare.setup.loss_combo):
        tips[combo] = {
            combo.itemText(i): combo.itemData(i, Qt.ItemDataRole.ToolTipRole)
            for i in range(combo.count())
        }
        assert all(tips[combo].values()), tips[combo]
        assert "arXiv:2506.15744" in tips[combo]["pm_dice"]
        assert "weighted sum of ce and pm_dice" in tips[combo]["ce+pm_dice"]
    # the Train panel's combo says what the chosen loss is, and follows the choice
    train.loss.value = "cosine_tversky"
    assert train.loss.tooltip.startswith("Cosine Tversky loss (Yeung et al. 2021 eq. 15)")
    # wrapped: Qt shows a plain-text tooltip on one line
    assert max(len(line) for line in tips[train.loss.native]["generalized_dice"].split("\n")) <= 72

    # Compare Losses: its rows (the defaults, listed before the catalog came, and one added)
    rows = compare.setup.loss_list
    compare.setup.loss_combo.setCurrentText("focal_tversky")
    assert compare.setup.add_loss() is not None
    tips = [rows.item(i).toolTip() for i in range(rows.count())]
    assert [t.split("\n")[0] for t in tips] == [
        "dice (run folder runs/dice)",
        "pm_dice (run folder runs/pm_dice)",
        "focal_tversky (run folder runs/focal_tversky)",
    ]
    assert tips[1].split("\n", 1)[1].startswith("Pixel-wise Modulated Dice loss, PM-Dice paper")
    assert "(1 - TI_c)^gamma" in tips[2]

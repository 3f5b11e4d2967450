"""Screenshots of the napari panels for the README, taken from the real plugin.

Run headless with::

    xvfb-run -a -s "-screen 0 1920x1200x24" python scripts/screenshots.py

It opens the ``kvasir`` sample through the plugin's sample-data contribution, docks each panel
from the manifest, uses it as a person would and writes ``docs/images/<panel>.png``:

* ``loss_explorer``: the panel opens and draws its maps by itself (one titled grid cell with
  its colour bar per map); then CE + PM Dice is ticked as well.
* ``predict``: Predict & Compare runs a checkpoint on the sample and shows the error overlay.
  The checkpoint is ``--checkpoint``, or one trained first with the README's quickstart
  (``segloss train --config training/configs/quickstart.yaml``: about a minute on CPU).
* ``train``: a short run in the Train / Fine-tune panel on the bundled 32 Kvasir pairs.
* ``compare``: Compare Losses trains three losses x two seeds on the bundled pairs and shows
  the table and each loss's errors side by side (``--panels compare``; a few CPU minutes).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import napari
from qtpy.QtCore import Qt
from qtpy.QtWidgets import QApplication, QScrollArea

from napari_segloss.samples import sample_pairs_dir

PLUGIN = "napari-segloss"
ROOT = Path(__file__).resolve().parents[1]
PANELS = ("loss_explorer", "predict", "train", "compare")


def _process(seconds: float) -> None:
    app = QApplication.instance()
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        app.processEvents()
        time.sleep(0.02)


def _wait(widget, timeout: float) -> None:
    """Process Qt events until the panel's work is done (or fail after ``timeout`` s)."""
    t0 = time.monotonic()
    while widget.busy:
        _process(0.05)
        if time.monotonic() - t0 > timeout:
            raise TimeoutError(f"{type(widget).__name__} still busy after {timeout:.0f} s")
    _process(0.5)  # let napari draw the new layers
    if widget.status.is_error:
        raise RuntimeError(f"{type(widget).__name__}: {widget.status.text()}")


def _viewer(size: tuple[int, int]):
    viewer = napari.Viewer(title="napari-segloss")
    viewer.window._qt_window.resize(*size)
    layers = viewer.open_sample(PLUGIN, "kvasir")
    image = next(ly for ly in layers if ly.rgb)
    mask = next(ly for ly in layers if not getattr(ly, "rgb", False))
    return viewer, image, mask


def _shoot(viewer, path: Path) -> None:
    _process(0.5)
    viewer.screenshot(str(path), canvas_only=False)
    print(f"wrote {path}")


def loss_explorer(args: argparse.Namespace) -> None:
    """Frame 0 (an 11 % polyp) with a blurred "what-if" prediction: like the PM-Dice paper's
    fig. 2, the modulating maps light up on the uncertain boundary."""
    viewer, _, _ = _viewer((1800, 1150))
    viewer.dims.set_current_step(0, 0)
    _, explorer = viewer.window.add_plugin_dock_widget(PLUGIN, "Loss Explorer")
    _wait(explorer, args.timeout)  # the first maps come without any button press
    explorer.set_losses(["ce", "dice", "ce+pm_dice"])
    explorer.whatif_strength.value = 4.0
    explorer.whatif_softness.value = 1.0
    # show the magicgui form of the compound (its term weights and PM-Dice parameters)
    [item] = explorer.loss_list.findItems("ce+pm_dice", Qt.MatchFlag.MatchExactly)
    explorer.loss_list.setCurrentItem(item)
    explorer.loss_list.scrollToItem(item)
    _wait(explorer, args.timeout)
    _shoot(viewer, args.out / "loss_explorer.png")
    viewer.close()


def _quickstart_checkpoint(timeout: float) -> Path:
    """Train the README's quickstart model (CLI, CPU is fine) and return its checkpoint."""
    run = Path(tempfile.mkdtemp(prefix="segloss-shots-")) / "quickstart"
    config = ROOT / "training" / "configs" / "quickstart.yaml"
    cmd = [sys.executable, "-m", "napari_segloss.cli", "train", "--config", str(config)]
    cmd += ["--set", f"output={run}", "--no-progress"]
    print("training the quickstart model for the predict shot:", " ".join(cmd))
    subprocess.run(cmd, check=True, timeout=timeout)
    best = run / "best.pt"
    return best if best.is_file() else run / "checkpoint.pt"


def predict(args: argparse.Namespace) -> None:
    """Predict & Compare on the sample with a trained checkpoint: the error overlay alone over
    the image (FP red, FN blue, TP green), and the metrics per class."""
    checkpoint = args.checkpoint or _quickstart_checkpoint(args.timeout)
    viewer, image, mask = _viewer((1600, 1000))
    viewer.dims.set_current_step(0, 0)
    _, predictor = viewer.window.add_plugin_dock_widget(PLUGIN, "Predict & Compare")
    predictor.image_picker.set_layer(image)
    predictor.gt_picker.set_layer(mask)
    predictor.ckpt_picker.set_path(checkpoint)
    predictor.run_model()
    _wait(predictor, args.timeout)  # prediction, then the comparison it starts by itself
    _shoot(viewer, args.out / "predict.png")
    viewer.close()


def train(args: argparse.Namespace) -> None:
    """Train / Fine-tune: a short CE + PM-Dice run on the 32 bundled Kvasir pairs (the
    quickstart's folder and model); the shot shows the finished run (the panel's progress bar
    full, the live plot)."""
    viewer, _, _ = _viewer((1500, 1150))
    _, trainer = viewer.window.add_plugin_dock_widget(PLUGIN, "Train / Fine-tune")
    t0 = time.monotonic()
    while not trainer.ready:  # the loss list loads in a worker
        _process(0.1)
        if time.monotonic() - t0 > args.timeout:
            raise TimeoutError("the Train panel did not load its losses")
    trainer.source.value = "folder"
    trainer.folder.value = sample_pairs_dir("kvasir_train")
    trainer.encoder.value = "mobilenet_v2"
    trainer.image_size.value = args.size
    trainer.epochs.value = args.epochs
    trainer.batch_size.value = 4
    trainer.lr.value = 1e-3
    trainer.loss.value = "ce+pm_dice"
    trainer.runs_folder.value = tempfile.mkdtemp(prefix="segloss-shots-")
    trainer.start()
    _wait(trainer, args.timeout)
    area = trainer.findChild(QScrollArea)
    area.ensureWidgetVisible(trainer.plot)  # the progress bar and the plot in view
    _shoot(viewer, args.out / "train.png")
    viewer.close()


def compare(args: argparse.Namespace) -> None:
    """Compare Losses: Dice and PM Dice at two γ (2 seeds each) trained on the 32 bundled
    ``kvasir_train`` pairs and scored on the 3 unseen sample frames: the table and each loss's
    errors on frame 0, side by side (a few CPU minutes)."""
    viewer, _, _ = _viewer((2000, 1150))
    dock, panel = viewer.window.add_plugin_dock_widget(PLUGIN, "Compare Losses")
    # wide enough for the whole table (mean ± std of six metrics, rank)
    viewer.window._qt_window.resizeDocks([dock], [800], Qt.Orientation.Horizontal)
    _wait(panel, args.timeout)  # the loss list and the engine load first
    setup = panel.setup
    setup.source_combo.setCurrentText("folder")
    setup.folder_edit.setText("bundled:kvasir_train")
    setup.score_combo.setCurrentText("held-out folder")
    setup.heldout_edit.setText("bundled:kvasir")
    setup.encoder_combo.setCurrentText("mobilenet_v2")
    setup.size_spin.setValue(args.compare_size)
    setup.epochs_spin.setValue(args.compare_epochs)
    setup.seeds_edit.setText("0, 1")
    setup.more_edit.setPlainText("optim.lr=0.001")
    setup.output_edit.setText(tempfile.mkdtemp(prefix="segloss-shots-"))
    panel.set_losses(["dice", "pm_dice:gamma=1", "pm_dice:gamma=2"])
    panel.start()
    _wait(panel, args.timeout)
    panel.set_image(0)
    _wait(panel, args.timeout)
    _shoot(viewer, args.out / "compare.png")
    viewer.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "images")
    parser.add_argument(
        "--panels", nargs="+", choices=PANELS, default=("loss_explorer", "predict"),
        help="which shots to take",
    )  # fmt: skip
    parser.add_argument("--checkpoint", type=Path, help="checkpoint for the predict shot")
    parser.add_argument("--epochs", type=int, default=30, help="train shot: epochs")
    parser.add_argument("--size", type=int, default=128, help="train shot: resize (pixels)")
    parser.add_argument("--compare-epochs", type=int, default=20, help="compare shot: epochs")
    parser.add_argument("--compare-size", type=int, default=128, help="compare shot: pixels")
    parser.add_argument("--timeout", type=float, default=900.0)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    shots = {"loss_explorer": loss_explorer, "predict": predict, "train": train, "compare": compare}
    for name in args.panels:
        shots[name](args)


if __name__ == "__main__":
    main()

"""Screenshots of the three napari panels for the README, taken from the real plugin.

Run headless with::

    xvfb-run -a -s "-screen 0 1920x1200x24" python scripts/screenshots.py

It opens the ``kvasir`` sample through the plugin's sample-data contribution, docks each panel
from the manifest, runs it and writes ``docs/images/{loss_explorer,train,predict}.png``.
The Train screenshot comes from a short real training run (CPU is fine); its checkpoint is
then used by Predict & Compare, as a user would.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

PLUGIN = "napari-segloss"
ROOT = Path(__file__).resolve().parents[1]


def _wait(widget, timeout: float) -> None:
    """Process Qt events until the panel's worker is done (or fail after ``timeout`` s)."""
    from qtpy.QtWidgets import QApplication

    app = QApplication.instance()
    t0 = time.monotonic()
    while widget.busy or getattr(widget, "_compare_after", False):
        app.processEvents()
        time.sleep(0.02)
        if time.monotonic() - t0 > timeout:
            raise TimeoutError(f"{type(widget).__name__} still busy after {timeout:.0f} s")
    for _ in range(20):  # let napari draw the new layers
        app.processEvents()
        time.sleep(0.02)
    if widget.status.is_error:
        raise RuntimeError(f"{type(widget).__name__}: {widget.status.text()}")


def _viewer(size: tuple[int, int]):
    import napari

    viewer = napari.Viewer(title="napari-segloss")
    viewer.window._qt_window.resize(*size)
    layers = viewer.open_sample(PLUGIN, "kvasir")
    image = next(ly for ly in layers if ly.rgb)
    mask = next(ly for ly in layers if not getattr(ly, "rgb", False))
    return viewer, image, mask


def _shoot(viewer, path: Path) -> None:
    from qtpy.QtWidgets import QApplication

    for _ in range(10):
        QApplication.instance().processEvents()
    viewer.screenshot(str(path), canvas_only=False)
    print(f"wrote {path}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "images")
    parser.add_argument("--epochs", type=int, default=40, help="training epochs for the demo run")
    parser.add_argument(
        "--panels",
        nargs="+",
        choices=("loss_explorer", "train"),
        default=("loss_explorer", "train"),
        help="which shots to take (train also takes predict, with the model it trains)",
    )
    parser.add_argument("--size", type=int, default=128, help="training resize (pixels)")
    parser.add_argument("--timeout", type=float, default=900.0)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)

    if "loss_explorer" in args.panels:
        # Frame 0 (an 11 % polyp) with a blurred "what-if" prediction: like the PM-Dice
        # paper's fig. 2, the modulating maps light up on the uncertain boundary.
        viewer, image, mask = _viewer((1700, 1050))
        _, explorer = viewer.window.add_plugin_dock_widget(PLUGIN, "Loss Explorer")
        explorer.image_picker.set_layer(image)
        explorer.gt_picker.set_layer(mask)
        viewer.dims.set_current_step(0, 0)
        explorer.set_losses(["dice", "ce", "ce+pm_dice"])
        explorer.whatif_kind.setCurrentText("blur")
        explorer.whatif_strength.setValue(4)
        explorer.whatif_softness.setValue(1.0)
        explorer.update_maps()
        _wait(explorer, args.timeout)
        _shoot(viewer, args.out / "loss_explorer.png")
        viewer.close()
    if "train" in args.panels:
        _train_and_predict(args)


def _train_and_predict(args: argparse.Namespace) -> None:
    """Train / Fine-tune: a short CE + PM-Dice run on the three sample frames; then Predict &
    Compare with the checkpoint it saved (shared with the panel at once, as for a user)."""
    viewer, image, mask = _viewer((1500, 1000))
    _, trainer = viewer.window.add_plugin_dock_widget(PLUGIN, "Train / Fine-tune")
    trainer.image_picker.set_layer(image)
    trainer.mask_picker.set_layer(mask)
    trainer.encoder_combo.setCurrentText("resnet18")
    trainer.size_spin.setValue(args.size)
    trainer.epochs_spin.setValue(args.epochs)
    trainer.batch_spin.setValue(2)
    trainer.lr_spin.setValue(1e-3)
    trainer.loss_combo.setCurrentText("ce+pm_dice")
    runs = Path(tempfile.mkdtemp(prefix="segloss-shots-"))
    trainer.output_edit.setText(str(runs))
    trainer.start()
    _wait(trainer, args.timeout)
    _shoot(viewer, args.out / "train.png")
    checkpoint = Path(trainer.last_result["checkpoint"])

    _, predictor = viewer.window.add_plugin_dock_widget(PLUGIN, "Predict & Compare")
    viewer.window.remove_dock_widget(trainer)  # room for the Predict panel
    predictor.image_picker.set_layer(image)
    predictor.gt_picker.set_layer(mask)
    assert predictor.ckpt_picker.path() == checkpoint.resolve()
    predictor.run_model()
    _wait(predictor, args.timeout)
    for layer in viewer.layers:
        if layer.name.startswith("probability"):
            layer.visible = False
    _shoot(viewer, args.out / "predict.png")
    viewer.close()


if __name__ == "__main__":
    main()

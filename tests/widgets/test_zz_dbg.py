import numpy as np
from napari_segloss.samples import load_sample
def test_dbg(dock, wait_idle, tiny_checkpoint, qtbot):
    image, mask = load_sample("kvasir", 1)
    viewer, widget = dock("Predict & Compare")
    img_layer = viewer.add_image(image, name="frame")
    gt_layer = viewer.add_labels(mask, name="polyp")
    widget.gt_picker.set_layer(gt_layer)
    widget.ckpt_picker.set_path(tiny_checkpoint)
    widget.device_combo.setCurrentText("cpu")
    orig = widget._on_predicted
    def spy(out):
        orig(out)
        L = viewer.layers["prediction [tiny]"]; print("after:", widget.pred_picker._index_of(L), widget.pred_picker.itemData(1) is L, type(widget.pred_picker.itemData(1)), widget.pred_picker.itemData(1) == L)
    widget._worker = None
    widget._on_predicted = spy
    widget.run_model()
    wait_idle(widget)
    print(widget.status.text())

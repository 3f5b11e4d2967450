"""Benchmark: how long a person waits when a napari panel opens, and whether the window freezes.

Each run is a fresh Python process (nothing imported or compiled before, as for a user): it opens
a napari viewer with the plugin's ``kvasir`` sample, lets it settle, starts a ``QTimer``
heartbeat on the main thread, then docks the panel from the manifest. It reports

* **first map**: seconds from the dock call to the first canvas draw that shows one of the
  panel's map layers (Loss Explorer; target <= 3 s);
* **all maps**: seconds to the first canvas draw after the panel finished drawing every map;
* **longest stall**: the longest gap between heartbeat ticks minus the tick interval, i.e. the
  longest time the window could not answer (target <= 0.2 s), and how many gaps exceed 0.2 s;
* Python's full garbage collections after the dock call (count and seconds): each holds the
  GIL, so each is a stall whichever thread triggers it; unlike the stalls, their count does not
  depend on the machine's load;
* the load average of the machine when the run started (the machine may be shared).

For the Train, Predict and Compare panels (``--panel train``/``predict``/``compare``) "first
map" and "all maps" are the time until the panel is ready (its loss list or device list loaded)
and the stall figures are the same.

Usage (under a display; headless: ``xvfb-run -a -s "-screen 0 1920x1200x24"``)::

    python benchmarks/bench_panels.py --runs 5
    python benchmarks/bench_panels.py --runs 4 --trees /tmp/before /work/wt/widgets  # A/B, interleaved
    python benchmarks/bench_panels.py --runs 1 --profile /tmp/open.prof  # cProfile of the main thread
    python benchmarks/bench_panels.py --runs 1 --stacks  # main-thread stacks sampled during stalls
    python benchmarks/bench_panels.py --runs 3 --interact  # then what a user does next (Explorer)
    python benchmarks/bench_panels.py --panel predict --runs 3 --interact  # run a checkpoint
    python benchmarks/bench_panels.py --panel train --runs 3 --interact --timeout 300  # train
    python benchmarks/bench_panels.py --panel compare --runs 3 --interact --timeout 300  # 2 losses

``--trees`` puts each source tree first on ``PYTHONPATH`` of its child processes and alternates
them run by run, so that before/after figures share the machine's state.
"""

from __future__ import annotations

import argparse
import collections
import gc
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path

PLUGIN = "napari-segloss"
PANELS = {
    "explorer": "Loss Explorer",
    "train": "Train / Fine-tune",
    "predict": "Predict & Compare",
    "compare": "Compare Losses",
}
HEARTBEAT_MS = 10
STALL_LIMIT_S = 0.2
ROOT = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------- child process
class Stalls:
    """Main-thread responsiveness from a QTimer heartbeat (and, optionally, what the main thread
    was doing during each stall, sampled from a watchdog thread)."""

    def __init__(self, sample_stacks: bool) -> None:
        from qtpy.QtCore import QTimer

        self.ticks: list[float] = []
        self.timer = QTimer()
        self.timer.setInterval(HEARTBEAT_MS)
        self.timer.timeout.connect(lambda: self.ticks.append(time.perf_counter()))
        self.samples: list[tuple[float, str]] = []  # (time, stack summary)
        self._main = threading.get_ident()
        self._stop = threading.Event()
        self._watchdog = threading.Thread(target=self._watch, daemon=True)
        self._sample = sample_stacks

    def start(self) -> None:
        self.ticks.append(time.perf_counter())
        self.timer.start()
        if self._sample:
            self._watchdog.start()

    def stop(self) -> None:
        self.timer.stop()
        self._stop.set()

    def _watch(self) -> None:
        # Samples only while the heartbeat is late by more than 50 ms: the stack says what
        # the main thread runs during a freeze (Python frames; C code shows as its caller).
        # A stack inside the event loop's idle wait means the main thread waits for the GIL
        # (another thread holds it in C code).
        while not self._stop.wait(0.005):
            if time.perf_counter() - self.ticks[-1] < 0.05:
                continue
            frame = sys._current_frames().get(self._main)
            if frame is None:
                continue
            stack = traceback.extract_stack(frame)
            ours = [f for f in stack if "site-packages" not in f.filename or "napari" in f.filename]
            key = " < ".join(
                f"{Path(f.filename).stem}:{f.name}" for f in reversed((ours or stack)[-5:])
            )
            self.samples.append((time.perf_counter(), key))

    def gaps(self, since: float) -> list[tuple[float, float]]:
        """``(start, length)`` of each gap between ticks after ``since``, interval subtracted."""
        ticks = [t for t in self.ticks if t >= since]
        return [(a, b - a - HEARTBEAT_MS / 1000) for a, b in itertools.pairwise(ticks)]

    def explain(self, start: float, length: float) -> list[tuple[str, int]]:
        """The most frequent sampled stacks within one stall."""
        inside = [k for t, k in self.samples if start <= t <= start + length + 0.01]
        return collections.Counter(inside).most_common(3)


class FullCollections:
    """Python's full (generation 2) garbage collections: each holds the GIL for a walk over
    every tracked object, so it freezes the window whichever thread triggers it."""

    def __init__(self) -> None:
        self.spans: list[tuple[float, float]] = []  # (start, seconds)
        self._start = 0.0
        gc.callbacks.append(self._on_gc)

    def _on_gc(self, phase: str, info: dict) -> None:
        if info["generation"] != 2:
            return
        if phase == "start":
            self._start = time.perf_counter()
        else:
            self.spans.append((self._start, time.perf_counter() - self._start))

    def stop(self) -> None:
        gc.callbacks.remove(self._on_gc)

    def count(self, since: float) -> int:
        return sum(t >= since for t, _ in self.spans)

    def seconds(self, since: float) -> float:
        return round(sum(d for t, d in self.spans if t >= since), 3)


def _process(app, seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        app.processEvents()
        time.sleep(0.005)


def child(args: argparse.Namespace) -> dict:
    """One measured opening (runs in its own process)."""
    load = os.getloadavg()[0]
    t_import = time.perf_counter()
    import napari
    from qtpy.QtWidgets import QApplication

    viewer = napari.Viewer(title="bench_panels")
    viewer.window._qt_window.resize(1600, 1000)
    app = QApplication.instance()
    viewer.open_sample(PLUGIN, "kvasir")
    _process(app, args.settle)  # the sample is drawn, napari is idle
    import_s = time.perf_counter() - t_import

    full_gcs = FullCollections()
    stalls = Stalls(args.stacks)
    stalls.start()
    _process(app, 0.3)
    canvas = viewer.window._qt_viewer.canvas._scene_canvas
    marks: dict[str, float] = {}
    state: dict = {"widget": None}

    def owned() -> list:
        return [
            ly
            for ly in viewer.layers
            if isinstance(ly.metadata, dict) and PLUGIN_TAG in ly.metadata
        ]

    def ready(widget) -> bool:
        if args.panel == "explorer":
            return bool(owned()) and not widget.busy
        if args.panel == "train":
            return bool(getattr(widget, "ready", True)) and not widget.busy
        if args.panel == "compare":  # its loss list and the engine are loaded
            return widget.setup.add_button.isEnabled() and not widget.busy
        return widget._devices_worker is None or not widget._devices_worker.is_running

    def on_draw(event=None) -> None:
        # Our callback runs after the scene canvas has drawn (connected after its own).
        now = time.perf_counter()
        widget = state["widget"]
        if widget is None:
            return
        if "first" not in marks and (owned() if args.panel == "explorer" else ready(widget)):
            marks["first"] = now
        if "all" not in marks and ready(widget):
            marks["all"] = now

    canvas.events.draw.connect(on_draw)
    profiler = None
    if args.profile:
        import cProfile

        profiler = cProfile.Profile()

    def open_panel() -> None:
        if profiler is not None:
            profiler.enable()
        marks["open"] = time.perf_counter()
        _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, PANELS[args.panel])
        state["widget"] = widget
        marks["docked"] = time.perf_counter()
        canvas.update()  # a draw comes even when the panel adds nothing

    from qtpy.QtCore import QTimer

    QTimer.singleShot(0, open_panel)
    t_end = time.monotonic() + args.timeout
    while time.monotonic() < t_end:
        _process(app, 0.05)
        widget = state["widget"]
        if widget is not None and "all" not in marks and ready(widget):
            canvas.update()  # make sure a draw follows the last change
        if "all" in marks:
            break
    _process(app, 1.0)  # stalls right after the last map count too
    after = {}
    if args.interact:
        after = INTERACTIONS[args.panel](app, viewer, state["widget"], stalls, args)
    if profiler is not None:
        profiler.disable()
        profiler.dump_stats(args.profile)
    stalls.stop()
    full_gcs.stop()
    timed = stalls.gaps(marks["open"] - HEARTBEAT_MS / 1000)
    gaps = [g for _, g in timed]
    result = {
        "panel": args.panel,
        "load": round(load, 2),
        "napari_start_s": round(import_s, 2),
        "dock_s": round(marks["docked"] - marks["open"], 3),
        "first_s": round(marks["first"] - marks["open"], 3) if "first" in marks else None,
        "all_s": round(marks["all"] - marks["open"], 3) if "all" in marks else None,
        "longest_stall_s": round(max(gaps, default=0.0), 3),
        "stalls_over_limit": sum(g > STALL_LIMIT_S for g in gaps),
        "stall_total_s": round(sum(g for g in gaps if g > 0.05), 3),
        "maps": len(owned()),
        "full_gcs": full_gcs.count(marks["open"]),
        "full_gc_s": full_gcs.seconds(marks["open"]),
    }
    result.update(after)
    if args.stacks:
        result["stall_stacks"] = [
            (round(t - marks["open"], 2), round(g, 3), stalls.explain(t, g))
            for t, g in timed
            if g > 0.1
        ]
    viewer.close()
    return result


PLUGIN_TAG = "napari_segloss"  # the metadata key the panels put on the layers they own


def _settle(app, widget, timeout: float = 60.0) -> float:
    """Seconds until the panel is idle again (then half a second more of events)."""
    t0 = time.monotonic()
    end = t0 + timeout
    while time.monotonic() < end and widget.busy:
        _process(app, 0.05)
    took = time.monotonic() - t0
    _process(app, 0.5)
    return took


def _after(stalls: Stalls, start: float) -> dict:
    """The stall figures from ``start`` on, the gap under way at ``start`` included (the
    first action's own call may freeze the window)."""
    before = [t for t in stalls.ticks if t < start]
    gaps = [g for _, g in stalls.gaps(before[-1] if before else start)]
    return {
        "then_longest_stall_s": round(max(gaps, default=0.0), 3),
        "then_stalls_over_limit": sum(g > STALL_LIMIT_S for g in gaps),
    }


def interact_explorer(app, viewer, widget, stalls: Stalls, args) -> dict:
    """What a user does next in the Loss Explorer, each step once the panel is idle again:
    tick one more loss (a new map, a grid of one more cell), add a γ, untick and tick the
    grid. Returns the longest stall and the count over the limit from the first step on, and
    how long each step took until the panel was idle again."""
    start = time.perf_counter()
    steps = [
        lambda: widget.set_losses([*widget.selected_losses(), "focal"]),
        lambda: widget.gamma_list.add(),
        lambda: setattr(widget.grid_check, "value", False),
        lambda: setattr(widget.grid_check, "value", True),
    ]
    took = []
    for step in steps:
        step()
        took.append(round(_settle(app, widget), 3))
    return {
        **_after(stalls, start),
        "then_tick_s": took[0],
        "then_gamma_s": took[1],
        "then_grid_on_s": took[3],
    }


def _sample_layers(viewer) -> tuple:
    image = next(ly for ly in viewer.layers if getattr(ly, "rgb", False))
    mask = next(ly for ly in viewer.layers if ly is not image)
    return image, mask


def _run_to_idle(app, widget, stalls: Stalls, start: float, args) -> dict:
    """After a panel's main action (started at ``start``): wait until it is idle, fail on an
    error it shows, and return the stall figures and how long it took."""
    took = _settle(app, widget, args.timeout)
    if widget.status.is_error:
        raise RuntimeError(widget.status.text())
    return {**_after(stalls, start), "then_run_s": round(took, 3)}


def interact_predict(app, viewer, widget, stalls: Stalls, args) -> dict:
    """Run a checkpoint (``--checkpoint``) on the sample's 3 frames on the CPU: the panel
    predicts, adds its layers and compares with the masks."""
    start = time.perf_counter()
    image, mask = _sample_layers(viewer)
    widget.image_picker.set_layer(image)
    widget.gt_picker.set_layer(mask)
    widget.ckpt_picker.set_path(Path(args.checkpoint))
    widget.device.value = "cpu"
    widget.run_model()
    return _run_to_idle(app, widget, stalls, start, args)


def interact_train(app, viewer, widget, stalls: Stalls, args) -> dict:
    """Train 2 epochs of a U-Net (resnet18, random weights) on the sample's 3 frames at 128
    pixels on the CPU, with the live plot and progress bar (the form's choices count as part
    of it: each is a user's click)."""
    start = time.perf_counter()
    image, mask = _sample_layers(viewer)
    widget.image_picker.set_layer(image)
    widget.mask_picker.set_layer(mask)
    widget.arch.value = "Unet"
    widget.encoder.value = "resnet18"
    widget.image_size.value = 128
    widget.epochs.value = 2
    widget.batch_size.value = 2
    widget.device.value = "cpu"
    widget.runs_folder.value = Path(args.runs_folder)
    widget.start()
    return _run_to_idle(app, widget, stalls, start, args)


def interact_compare(app, viewer, widget, stalls: Stalls, args) -> dict:
    """Compare Dice and PM Dice (γ = 2), 1 seed, 2 epochs each, on the bundled training pairs
    at 64 pixels on the CPU (a small U-Net), scored on the sample: the panel trains one run after
    the other, fills its tables and draws the comparison grid."""
    from napari_segloss.samples import sample_pairs_dir

    start = time.perf_counter()
    s = widget.setup
    s.source_combo.setCurrentText("folder")
    s.folder_edit.setText(str(sample_pairs_dir("kvasir_train")))
    s.encoder_combo.setCurrentText("resnet18")
    s.size_spin.setValue(64)
    s.epochs_spin.setValue(2)
    s.device_combo.setCurrentText("cpu")
    # a folder of its own: a comparison finds the runs of an earlier one and reuses them
    s.output_edit.setText(tempfile.mkdtemp(prefix="compare-", dir=args.runs_folder))
    s.score_combo.setCurrentText("held-out folder")
    s.heldout_edit.setText("bundled:kvasir")
    widget.set_losses(["dice", {"name": "pm_dice", "params": {"gamma": 2.0}}])
    widget.start()
    return _run_to_idle(app, widget, stalls, start, args)


INTERACTIONS = {
    "explorer": interact_explorer,
    "predict": interact_predict,
    "train": interact_train,
    "compare": interact_compare,
}


# --------------------------------------------------------------------------- parent process
def run_child(tree: Path, args: argparse.Namespace, profile: str | None) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", "--panel", args.panel]
    cmd += ["--settle", str(args.settle), "--timeout", str(args.timeout)]
    if profile:
        cmd += ["--profile", profile]
    if args.stacks:
        cmd.append("--stacks")
    if args.interact:
        cmd.append("--interact")
    for name in ("checkpoint", "runs_folder"):
        if getattr(args, name):
            cmd += [f"--{name.replace('_', '-')}", getattr(args, name)]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(tree), os.environ.get("PYTHONPATH", "")]),
    }
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=args.timeout + 120)
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
    if out.returncode or not lines:
        raise RuntimeError(f"child failed ({out.returncode}):\n{out.stderr[-3000:]}")
    return json.loads(lines[-1])


def _random_checkpoint(folder: Path) -> Path:
    """A U-Net (resnet18, smp's default decoder, random weights) for the RGB sample, saved in
    the engine's checkpoint format: what the quickstart trains, without the training."""
    import torch

    from napari_segloss.engine.checkpoint import CHECKPOINT_FORMAT, save_checkpoint
    from napari_segloss.engine.config import ModelConfig
    from napari_segloss.engine.model import build_model

    torch.manual_seed(0)
    cfg = ModelConfig(arch="Unet", encoder="resnet18", in_channels=3, classes=1)
    meta = {"format": CHECKPOINT_FORMAT, "arch": "Unet", "encoder": "resnet18",
            "in_channels": 3, "classes": 1, "model_kwargs": {}, "num_classes": 2}  # fmt: skip
    path = folder / "random_unet.pt"
    save_checkpoint(path, {"model": build_model(cfg).state_dict(), "meta": meta})
    return path


def _summary(values: list[float | None]) -> str:
    got = [v for v in values if v is not None]
    if not got:
        return "n/a"
    return f"{statistics.median(got):.2f} ({min(got):.2f}-{max(got):.2f})"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--panel", choices=sorted(PANELS), default="explorer")
    parser.add_argument("--runs", type=int, default=5, help="runs per source tree")
    parser.add_argument(
        "--trees", type=Path, nargs="+", default=[ROOT], help="source trees, alternated"
    )
    parser.add_argument("--settle", type=float, default=2.0, help="idle seconds before opening")
    parser.add_argument("--timeout", type=float, default=60.0)
    parser.add_argument("--profile", help="cProfile output of the main thread (one run: --runs 1)")
    parser.add_argument("--stacks", action="store_true", help="sample main-thread stacks in stalls")
    parser.add_argument(
        "--interact",
        action="store_true",
        help="then what a user does next: Explorer: tick a loss, add a γ, toggle the grid; "
        "Predict: run a checkpoint on the sample; Train: train 2 epochs; Compare: compare 2 "
        "losses (see interact_*)",
    )
    parser.add_argument("--checkpoint", help=argparse.SUPPRESS)  # made for --panel predict
    parser.add_argument("--runs-folder", help=argparse.SUPPRESS)  # for --panel train/compare
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args)), flush=True)
        return
    if args.interact and args.panel == "predict" and not args.checkpoint:
        args.checkpoint = str(_random_checkpoint(Path(tempfile.mkdtemp())))
    if args.interact and args.panel in ("train", "compare") and not args.runs_folder:
        args.runs_folder = tempfile.mkdtemp()

    results: dict[Path, list[dict]] = {tree: [] for tree in args.trees}
    print(f"panel: {PANELS[args.panel]}; {os.cpu_count()} CPU cores; heartbeat {HEARTBEAT_MS} ms")
    for i in range(args.runs):
        for tree in args.trees:
            profile = args.profile if (args.profile and len(args.trees) == 1) else None
            res = run_child(tree, args, profile)
            results[tree].append(res)
            stacks = res.pop("stall_stacks", None)
            print(f"run {i + 1} {tree}: " + json.dumps(res), flush=True)
            for at, length, top in stacks or []:
                print(f"    stall at {at:6.2f} s: {length:.3f} s")
                for key, count in top:
                    print(f"        {count:3d} x {key}")
    print()
    print(
        "| tree | runs | load avg | first map s | all maps s | longest stall s | stalls > 0.2 s "
        "| full GCs | full GC s |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for tree, runs in results.items():
        print(
            f"| {tree} | {len(runs)} | {_summary([r['load'] for r in runs])} "
            f"| {_summary([r['first_s'] for r in runs])} | {_summary([r['all_s'] for r in runs])} "
            f"| {_summary([r['longest_stall_s'] for r in runs])} "
            f"| {_summary([r['stalls_over_limit'] for r in runs])} "
            f"| {_summary([r['full_gcs'] for r in runs])} "
            f"| {_summary([r['full_gc_s'] for r in runs])} |"
        )
    print("(median (min-max) over runs)")
    if args.interact and args.panel != "explorer":
        what = {"predict": "run the checkpoint", "train": "train 2 epochs"}.get(
            args.panel, "compare 2 losses"
        )
        print(f"\nthen ({what}):")
        print("| tree | longest stall s | stalls > 0.2 s | done in s |\n|---|---:|---:|---:|")
        for tree, runs in results.items():
            print(
                f"| {tree} | {_summary([r['then_longest_stall_s'] for r in runs])} "
                f"| {_summary([r['then_stalls_over_limit'] for r in runs])} "
                f"| {_summary([r['then_run_s'] for r in runs])} |"
            )
    elif args.interact:
        print("\nthen (tick a loss, add a γ, grid off and on):")
        print(
            "| tree | longest stall s | stalls > 0.2 s | tick: drawn in s | γ: drawn in s "
            "| grid on: done in s |\n|---|---:|---:|---:|---:|---:|"
        )
        for tree, runs in results.items():
            print(
                f"| {tree} | {_summary([r['then_longest_stall_s'] for r in runs])} "
                f"| {_summary([r['then_stalls_over_limit'] for r in runs])} "
                + " ".join(
                    f"| {_summary([r.get(k) for r in runs])}"
                    for k in ("then_tick_s", "then_gamma_s", "then_grid_on_s")
                )
                + " |"
            )


if __name__ == "__main__":
    main()

"""Loss Explorer "Update maps": how long a click takes and how long the window freezes.

Opens a bundled sample in a shown napari window (1500x950), docks the Loss Explorer, waits for
its first maps, then clicks Update maps ``--clicks`` times with nothing changed. Each click is
timed from the call to the panel being idle; a 10 ms ``QTimer`` heartbeat on the main thread
gives the stalls (gaps over 50 ms, summed, and the longest). Run it under ``xvfb-run -a``; to
compare two source trees, run it with ``PYTHONPATH=<tree>`` for each, alternating.

    xvfb-run -a -s "-screen 0 1920x1080x24" python benchmarks/bench_explorer_update.py acdc
"""

from __future__ import annotations

import argparse
import statistics
import time

import napari
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QApplication

STALL_S = 0.05


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sample", choices=["kvasir", "acdc"])
    parser.add_argument("--clicks", type=int, default=5)
    parser.add_argument("--timeout", type=float, default=120.0)
    args = parser.parse_args()

    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(1500, 950)
    viewer.open_sample("napari-segloss", args.sample)
    _, panel = viewer.window.add_plugin_dock_widget("napari-segloss", "Loss Explorer")
    app = QApplication.instance()

    def wait_idle() -> None:
        end = time.monotonic() + args.timeout
        app.processEvents()
        while panel.busy and time.monotonic() < end:
            app.processEvents()
            time.sleep(0.002)
        if panel.busy:
            raise SystemExit(f"the panel was still busy after {args.timeout:g} s")

    gaps: list[float] = []
    last = [time.perf_counter()]

    def beat() -> None:
        now = time.perf_counter()
        gaps.append(now - last[0])
        last[0] = now

    heartbeat = QTimer()
    heartbeat.setInterval(10)
    heartbeat.timeout.connect(beat)
    heartbeat.start()
    start = time.perf_counter()
    wait_idle()
    print(f"{args.sample}: first maps after {time.perf_counter() - start:.2f} s (torch loads)")
    relayouts = [0]  # napari re-lays out every cell of the grid when its shape is set
    viewer.grid.events.shape.connect(lambda event: relayouts.__setitem__(0, relayouts[0] + 1))
    clicks, stalls, longest = [], [], []
    for _ in range(args.clicks):
        gaps.clear()
        last[0] = start = time.perf_counter()
        panel.update_maps(explicit=True)
        wait_idle()
        clicks.append(time.perf_counter() - start)
        stalls.append(sum(g for g in gaps if g > STALL_S))
        longest.append(max(gaps, default=0.0))
    for name, values in (("click -> idle", clicks), ("stalls", stalls), ("longest", longest)):
        row = " ".join(f"{v:.2f}" for v in values)
        print(f"  {name:14s} median {statistics.median(values):.2f} s   ({row})")
    print(f"  grid shape set {relayouts[0]} times in {args.clicks} clicks")
    viewer.close()


if __name__ == "__main__":
    main()

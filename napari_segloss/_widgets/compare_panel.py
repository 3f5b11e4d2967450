"""Compare Losses panel: which loss suits my data? Train one model per loss (and seed) with
everything else fixed, then see the table and where each loss fails.

The panel is a front door to :func:`napari_segloss.engine.compare.iter_compare`, the engine
behind ``segloss compare`` (same checks, messages, results folder and resume rules):

* **Setup**: image and mask layers (2D images, stacks of frames or volumes as 2D slices) or an
  image/mask folder; the validation split or held-out layers / a held-out folder to score on;
  the losses (any registered name or ``a+b`` compound, parameters from the same magicgui forms
  as the other panels, e.g. PM Dice at several γ as separate rows); seeds, epochs, size,
  model, device and an output folder.
* **Runs**: the runs train one after another in a thread worker, a progress bar per run and
  one overall, live validation Dice; Stop ends the current run at its next step or
  validation batch (resumable) and keeps every finished run. Re-opening the folder fills the panel from it, shows what is
  done and Start resumes the rest.
* **Results**: the paper-shaped table (mean ± std over seeds, rank by a chosen metric;
  sortable; CSV and Markdown export), the best loss highlighted and its checkpoint offered to
  Predict & Compare; for a picked held-out image, each loss's error overlay over the image side
  by side in napari's grid (:mod:`._compare_view`).

torch is imported in thread workers only (the loss list and devices load in the first one).
"""

from __future__ import annotations

import threading
from collections.abc import Generator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qtpy.QtCore import Qt, Signal
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from napari_segloss.engine.compare_results import METRICS, read_compare
from napari_segloss.engine.events import (
    CompareDone,
    CompareEvent,
    CompareRunDone,
    CompareRunProgress,
    CompareRunStart,
    CompareStart,
    TrainEpoch,
    out_of_memory_text,
    stopped_text,
)

from ._common import PanelError, StatusLabel, device_choices, left_the_window, release_gpu_memory
from ._compare_form import CompareSetupForm
from ._compare_setup import (
    CompareRequest,
    iter_request,
    quiet_imports,
    saved_settings,
    warm_up,
)
from ._compare_view import OverlayGrid, ResultsTable, RunsTable, column_header, short_name
from ._compat import guard_triton, preload_torch_libraries
from ._gc import release_frozen
from ._layout import scrollable, tab_in_layout_order
from ._state import CHECKPOINTS
from ._workers import TaskQueue, new_worker

if TYPE_CHECKING:
    import inspect

    import napari

    from napari_segloss.engine.compare_results import CompareResults, ImageView

TOOLTIP_ROLE = Qt.ItemDataRole.ToolTipRole
LEGEND = (
    "<span style='color:#33cc33'>■</span> TP &nbsp; <span style='color:#ff3030'>■</span> FP "
    "&nbsp; <span style='color:#3080ff'>■</span> FN &nbsp; ★ best"
)


def finished_seeds(results: CompareResults) -> list[int]:
    """The seeds with at least one finished run (those the grid can show)."""
    return [s for s in results.seeds if any(r.seed == s and r.status == "ok" for r in results.runs)]


def _load_catalog() -> tuple[dict[str, dict[str, inspect.Parameter]], list[str]]:
    """The registered losses with their parameters, and the devices (imports torch)."""
    preload_torch_libraries()  # keeps the window responsive while torch loads (see _compat)
    with quiet_imports():
        from napari_segloss.explorer import loss_catalog  # heavy (torch): worker only

        return loss_catalog(), device_choices()


def _about(exc: BaseException, folder: Path) -> bool:
    """Whether ``exc`` is an OS error on ``folder``, a file in it or a folder above it
    (read-only, under a file, no permission)."""
    if not isinstance(exc, OSError) or not exc.filename:
        return False
    path = Path(exc.filename).expanduser().absolute()
    folder = folder.expanduser().absolute()
    return path == folder or folder in path.parents or path in folder.parents


class CompareLossesWidget(QWidget):
    """The "Compare Losses" dock widget (see module docstring)."""

    #: every comparison event, after the panel has shown it (for scripts and tests)
    compare_event = Signal(object)

    def __init__(self, napari_viewer: napari.viewer.Viewer, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.destroyed.connect(lambda *_: release_frozen())  # what quiet_imports keeps frozen
        self.viewer = napari_viewer
        self._worker: Any = None  # the comparison
        self._loader: Any = None  # reading results / an image view
        self._warm_worker: Any = None  # importing the engine ahead of Start
        self._load_next: dict[str, Any] | None = None
        self._stop = threading.Event()
        self.results: CompareResults | None = None
        self.view: ImageView | None = None
        self.last_start: CompareStart | None = None
        self.last_done: CompareDone | None = None
        self._request: CompareRequest | None = None  # the last one started
        self.overlays = OverlayGrid(self.viewer, self._on_user_grid)
        self._drawing = TaskQueue(self, done=self._after_drawing, errored=self._on_error)

        # scrolls in its dock like the other panels: the tabs' minimum height (the Results
        # page's) would otherwise be the dock's and push the window taller than the screen
        root = QVBoxLayout(scrollable(self))
        self.status = StatusLabel(self)
        self.tabs = QTabWidget(self)
        self.setup = CompareSetupForm(self.viewer, self.status)
        self.setup.output_edit.editingFinished.connect(self._on_output_edited)
        scroll = QScrollArea(self)
        scroll.setWidgetResizable(True)
        scroll.setWidget(self.setup)
        self.tabs.addTab(scroll, "Setup")
        self.runs_table = RunsTable(self)
        self.tabs.addTab(self.runs_table, "Runs")
        self.tabs.addTab(self._results_page(), "Results")
        root.addWidget(self.tabs, 1)
        row = QHBoxLayout()
        self.start_button = QPushButton("Start", self)
        self.start_button.setToolTip("train every loss x seed not finished yet in the folder")
        self.stop_button = QPushButton("Stop", self)
        self.stop_button.setToolTip("end the current run at its next step; finished runs are kept")
        self.stop_button.setEnabled(False)
        self.start_button.clicked.connect(self.start)
        self.stop_button.clicked.connect(self.stop)
        row.addWidget(self.start_button)
        row.addWidget(self.stop_button)
        root.addLayout(row)
        self.overall = QProgressBar(self)
        self.overall.setRange(0, 1000)
        self.overall.setFormat("overall %p%")
        root.addWidget(self.overall)
        root.addWidget(self.status)
        tab_in_layout_order(self)
        self.status.info("loading PyTorch and the losses…")
        self._catalog_worker = new_worker(
            _load_catalog, returned=self._on_catalog, errored=self._on_error,
            finished=self._on_catalog_finished,
        )  # fmt: skip
        self._catalog_worker.start()

    def _on_catalog(self, out: tuple[dict[str, dict[str, inspect.Parameter]], list[str]]) -> None:
        self.setup.set_catalog(*out)
        self.status.info("pick the data, the losses and the settings, then Start")
        # then the engine, while the user fills in the form (see warm_up)
        guard_triton()  # before the worker imports torchvision (see _compat)
        self._warm_worker = new_worker(
            warm_up, returned=self.setup.set_architectures, errored=lambda exc: None,
            finished=self._on_warm_finished,
        )  # fmt: skip
        self._warm_worker.start()

    def _on_catalog_finished(self) -> None:
        self._catalog_worker = None

    def _on_warm_finished(self) -> None:
        self._warm_worker = None

    # the Setup tab's API, for scripts and tests
    def set_losses(self, entries: Any) -> None:
        """Replace the loss rows (see :meth:`CompareSetupForm.set_losses`)."""
        self.setup.set_losses(entries)

    def losses(self) -> list[dict[str, Any]]:
        return self.setup.losses()

    # ---------------------------------------------------------------- building the panel
    def _results_page(self) -> QWidget:
        page = QWidget(self)
        lay = QVBoxLayout(page)
        row = QHBoxLayout()
        row.addWidget(QLabel("rank by", page))
        self.rank_combo = QComboBox(page)
        for m in METRICS:  # named as the table's headers; the metric's column as data
            self.rank_combo.addItem(column_header(m.column), m.column)
        self.rank_combo.currentTextChanged.connect(lambda *_: self._refill_table())
        row.addWidget(self.rank_combo)
        row.addStretch(1)
        self.csv_button = QPushButton("Export CSV…", page)
        self.md_button = QPushButton("Export Markdown…", page)
        self.csv_button.clicked.connect(lambda: self._export_dialog("csv"))
        self.md_button.clicked.connect(lambda: self._export_dialog("md"))
        row.addWidget(self.csv_button)
        row.addWidget(self.md_button)
        lay.addLayout(row)
        self.results_table = ResultsTable(page)
        self.results_table.setMinimumHeight(110)
        lay.addWidget(self.results_table)
        self.evidence_note = QLabel(page)  # what the numbers rest on (images, size, seeds)
        self.evidence_note.setWordWrap(True)
        lay.addWidget(self.evidence_note)
        self.offer_button = QPushButton("Use in Predict && Compare", page)
        self.offer_button.setToolTip(
            "offer the selected loss' best checkpoint to Predict & Compare"
        )
        self.offer_button.clicked.connect(self.offer_selected)
        lay.addWidget(self.offer_button)
        form = QFormLayout()
        self.image_combo = QComboBox(page)
        self.image_combo.setToolTip("the held-out image every grid cell shows")
        self.image_combo.currentIndexChanged.connect(lambda *_: self._on_pick())
        self.seed_combo = QComboBox(page)
        self.seed_combo.setToolTip("whose predictions the grid shows")
        self.seed_combo.currentIndexChanged.connect(lambda *_: self._on_pick())
        form.addRow("image", self.image_combo)
        form.addRow("seed", self.seed_combo)
        lay.addLayout(form)
        row = QHBoxLayout()
        self.grid_check = QCheckBox("side by side (grid)", page)
        self.grid_check.setChecked(True)
        self.grid_check.setToolTip("one titled cell per loss; untick for your previous layout")
        self.grid_check.toggled.connect(self._on_grid_check)
        row.addWidget(self.grid_check)
        row.addStretch(1)
        row.addWidget(QLabel(LEGEND, page))
        lay.addLayout(row)
        self.grid_note = QLabel(page)
        self.grid_note.setWordWrap(True)
        lay.addWidget(self.grid_note)
        lay.addStretch(1)
        self._set_results_enabled(False)
        return page

    def _set_results_enabled(self, on: bool) -> None:
        for w in (self.csv_button, self.md_button, self.offer_button, self.image_combo,
                  self.seed_combo):  # fmt: skip
            w.setEnabled(on)

    # ---------------------------------------------------------------- running
    @property
    def busy(self) -> bool:
        return (
            self._worker is not None
            or self._loader is not None
            or self._catalog_worker is not None
            or self._warm_worker is not None
            or self._drawing.active
        )

    @property
    def running(self) -> bool:
        return self._worker is not None

    def start(self) -> None:
        """Run (or resume) the comparison the widgets describe."""
        if self._worker is not None:
            return
        guard_triton()  # before the worker imports the engine (see _compat)
        try:
            request = self.setup.build_request()
        except (PanelError, OSError) as exc:
            self.status.exception(exc, (PanelError,))
            return
        self._stop.clear()
        stop = self._stop

        def job() -> Generator[CompareEvent, None, None]:
            try:
                yield from iter_request(request, stop.is_set)
            finally:
                release_gpu_memory()

        self.last_start = self.last_done = None
        self._request = request
        self._worker = new_worker(
            job, yielded=self._on_event, errored=self._on_error, finished=self._on_finished
        )
        self.start_button.setEnabled(False)
        self.stop_button.setEnabled(True)
        self.overall.setValue(0)
        self.status.info(f"checking the data and the losses… ({request.output})")
        self._worker.start()

    def stop(self) -> None:
        """End the current run at its next step (it saves a resumable checkpoint)."""
        if self._worker is not None:
            self._stop.set()
            self.stop_button.setEnabled(False)
            self.status.info(
                "stopping after the current step or validation batch; finished runs are kept…"
            )

    def _on_event(self, event: CompareEvent) -> None:
        self.overall.setValue(round(1000 * event.overall))
        self.runs_table.on_event(event)
        if isinstance(event, CompareStart):
            self.last_start = event
            self.runs_table.start(event.runs, event.actions)
            self.setup.saved = saved_settings(event.output)
            self.tabs.setCurrentWidget(self.runs_table)
            todo = sum(a != "reuse" for a in event.actions)
            self.status.info(
                f"{len(event.runs)} run(s) in {event.output}: {todo} to train, "
                f"{len(event.runs) - todo} finished before (reused)"
            )
        elif isinstance(event, CompareRunStart | CompareRunProgress):
            run = event.run
            where = f"run {run.index + 1}/{run.total}: {run.display}, seed {run.seed}"
            inner = getattr(event, "event", None)
            if isinstance(event, CompareRunStart):
                self.status.info(f"{where}: {event.action}…")
            elif isinstance(inner, TrainEpoch) and inner.val_dice is not None:
                self.status.info(f"{where}: epoch {inner.epoch}, val Dice {inner.val_dice:.3f}")
        elif isinstance(event, CompareRunDone):
            if event.status == "ok" and event.action != "reuse":
                self.load_results(view=False)  # the table grows as runs finish
        elif isinstance(event, CompareDone):
            self.last_done = event
            self._finish_status(event)
            self.load_results(view=True, show=True)
        self.compare_event.emit(event)

    def _finish_status(self, event: CompareDone) -> None:
        done = sum(s == "ok" for s in event.statuses)
        failed = sum(s == "failed" for s in event.statuses)
        if event.stopped:
            self.status.info(
                f"{stopped_text(event.reason)}: {done} of {len(event.statuses)} run(s) finished "
                f"and kept in {event.output}; Start again resumes the rest"
            )
        elif failed:
            self.status.error(f"{failed} run(s) failed (see the Runs tab); {done} finished")
        else:
            self.status.info(f"finished: {done} run(s) in {event.output}")

    def _on_error(self, exc: BaseException) -> None:
        oom = out_of_memory_text(exc, "lower the batch size or the crop, or free the GPU")
        if oom is not None:  # one line saying what to lower, not torch's paragraph
            self.status.error(oom)
            return
        output = self._request.output if self._request is not None else None
        if output is not None and _about(exc, output):  # not an OS error's raw repr
            self.status.error(
                f"output folder {str(output)!r}: cannot write {exc.filename!r} "
                f"({exc.strerror}); pick a folder you can write to"
            )
            return
        # the engine's and the panel's messages are ValueErrors: shown without their type
        self.status.exception(exc, (ValueError, FileNotFoundError))

    def _on_finished(self) -> None:
        self._worker = None
        self.start_button.setEnabled(True)
        self.stop_button.setEnabled(False)
        release_gpu_memory()

    # ---------------------------------------------------------------- results
    def open_folder(self, path: str | Path) -> bool:
        """Fill the panel from the comparison in ``path`` and show its results; False (and a
        message) when it is not one."""
        saved = saved_settings(path)
        if saved is None:
            self.status.error(f"{str(path)!r} is not a loss comparison folder (no compare.json)")
            return False
        self.setup.output_edit.setText(str(saved.output))
        self.setup.restore(saved)
        self.load_results(view=True, show=True)
        return True

    def _on_output_edited(self) -> None:
        text = self.setup.output_edit.text().strip()
        if text and self._worker is None and (Path(text).expanduser() / "compare.json").is_file():
            self.open_folder(Path(text).expanduser())

    def load_results(self, *, view: bool, show: bool = False, index: int | None = None,
                     seed: int | None = None) -> None:  # fmt: skip
        """Read the results folder (and one image's view) in a worker, then show them."""
        request = {"view": view, "show": show, "index": index, "seed": seed}
        if self._loader is not None:
            self._load_next = request
            return
        output = self.last_start.output if self.last_start else self._output_path()
        reuse = self.results if index is not None and self.results is not None else None
        where = index if index is not None else max(self.image_combo.currentIndex(), 0)

        def job() -> tuple[CompareResults, list[str], int | None, ImageView | None, str]:
            results = reuse or read_compare(output)
            names, shown, note = [], None, ""
            picked = seed if seed is not None else next(iter(finished_seeds(results)), None)
            try:
                names = results.image_names(picked)
                if view:
                    shown = results.view(min(where, len(names) - 1), picked)
            except (ValueError, FileNotFoundError, IndexError) as exc:
                note = str(exc)
            return results, names, picked, shown, note

        self._loader = new_worker(
            job, returned=lambda out: self._on_loaded(out, show), errored=self._on_error,
            finished=self._on_loader_finished,
        )  # fmt: skip
        self._loader.start()

    def _output_path(self) -> Path:
        return Path(self.setup.output_edit.text().strip()).expanduser()

    def _on_loader_finished(self) -> None:
        self._loader = None
        if self._load_next is not None:
            request, self._load_next = self._load_next, None
            self.load_results(**request)

    def _on_loaded(self, out: tuple, show: bool) -> None:
        results, names, seed, view, note = out
        self.results = results
        self._refill_table()
        self._fill_pickers(results, names, seed)
        self._set_results_enabled(bool(self.results_table.rows))
        if view is not None:
            self.view = view
            self._draw()
        if show:
            self.tabs.setCurrentIndex(2)
            done = sum(r.status == "ok" for r in results.runs)
            rest = len(results.runs) - done
            # also over an error: a refused Start concerned the folder shown before
            if self._worker is None and self.last_done is None:
                more = f"; Start resumes the other {rest}" if rest else ""
                self.status.info(f"{done} of {len(results.runs)} run(s) finished in "
                                 f"{results.output}{more}")  # fmt: skip
            if note and view is None and done:
                self.status.error(f"overlays: {note}", notify=False)

    def _fill_pickers(self, results: CompareResults, names: list[str], seed: int | None) -> None:
        self.image_combo.blockSignals(True)
        current = self.image_combo.currentIndex()
        if [self.image_combo.itemData(i) for i in range(self.image_combo.count())] != names:
            self.image_combo.clear()
            for name in names:
                self.image_combo.addItem(short_name(name, 60), name)
                self.image_combo.setItemData(self.image_combo.count() - 1, name, TOOLTIP_ROLE)
            self.image_combo.setCurrentIndex(min(max(current, 0), len(names) - 1))
        self.image_combo.blockSignals(False)
        seeds = [str(s) for s in finished_seeds(results)]
        self.seed_combo.blockSignals(True)
        if [self.seed_combo.itemText(i) for i in range(self.seed_combo.count())] != seeds:
            self.seed_combo.clear()
            self.seed_combo.addItems(seeds)
        if seed is not None:
            self.seed_combo.setCurrentText(str(seed))
        self.seed_combo.blockSignals(False)

    def _refill_table(self) -> None:
        if self.results is None:
            return
        rank_by = self.rank_combo.currentData()
        self.results_table.fill(self.results, rank_by)
        self.evidence_note.setText(self.results.evidence())
        best = self.results.best(rank_by)
        if best is not None and best.checkpoint is not None:
            CHECKPOINTS.add(best.checkpoint)  # Predict & Compare selects it at once
        if self.view is not None:
            self._draw()

    @property
    def best_loss(self) -> str | None:
        return self.results_table.best

    def _draw(self) -> None:
        if self.view is not None:
            grid = self.grid_check.isChecked()
            self._drawing.run(self.overlays.draw_steps(self.view, self.best_loss, grid))

    def _after_drawing(self) -> None:
        hidden = self.overlays.hidden_names
        self.grid_note.setText(
            f"hidden while the grid shows the comparison: {', '.join(map(repr, hidden))} "
            "(untick 'side by side' to see them again)"
            if hidden
            else ""
        )

    def set_image(self, index: int) -> None:
        """Show held-out image ``index`` in every cell (as picking it in the combo does)."""
        self.image_combo.setCurrentIndex(index)

    def _on_pick(self) -> None:
        if self.results is None or self.image_combo.currentIndex() < 0:
            return
        chosen = self.seed_combo.currentText()
        self.load_results(view=True, index=max(self.image_combo.currentIndex(), 0),
                          seed=int(chosen) if chosen else None)  # fmt: skip

    def offer_selected(self) -> Path | None:
        """Offer the selected loss' (else the best loss') checkpoint to Predict & Compare."""
        loss = self.results_table.selected_loss() or self.best_loss
        row = self.results_table.rows.get(loss or "")
        if row is None or row.checkpoint is None:
            self.status.error("no finished run to offer (select a row with a finished run)")
            return None
        CHECKPOINTS.add(row.checkpoint)
        self.status.info(f"{row.name} (seed {row.best_seed}): {row.checkpoint} is now selected "
                         "in Predict & Compare")  # fmt: skip
        return row.checkpoint

    def export_csv(self, path: str | Path) -> Path:
        """The table as CSV (``results.csv`` columns, ranked by the chosen metric)."""
        if self.results is None:
            raise PanelError("results: nothing to export yet")
        self.results.to_csv(path, self.rank_combo.currentData())
        return Path(path)

    def export_markdown(self, path: str | Path) -> Path:
        """The paper-shaped table as Markdown (best mean per column in bold)."""
        if self.results is None:
            raise PanelError("results: nothing to export yet")
        self.results.to_markdown(path, self.rank_combo.currentData())
        return Path(path)

    def _export_dialog(self, kind: str) -> None:
        name, pattern = ("results.csv", "CSV (*.csv)") if kind == "csv" else (
            "results.md", "Markdown (*.md)")  # fmt: skip
        path, _ = QFileDialog.getSaveFileName(self, "Export the table", name, pattern)
        if path:
            try:
                out = self.export_csv(path) if kind == "csv" else self.export_markdown(path)
                self.status.info(f"table written to {out}")
            except (OSError, PanelError) as exc:
                self.status.error(f"export: {exc}")

    # ---------------------------------------------------------------- the grid
    def _on_grid_check(self, on: bool) -> None:
        if not on:
            self.overlays.hide_grid()
            self.grid_note.setText("")
        elif self.overlays.layers():
            self.overlays.show_grid()
            self.overlays.fit()

    def _on_user_grid(self, enabled: bool) -> None:
        """napari's own grid button was used: the check box follows."""
        self.grid_check.blockSignals(True)
        self.grid_check.setChecked(enabled)
        self.grid_check.blockSignals(False)
        if enabled and self.overlays.layers():
            self.overlays.show_grid()
        self._after_drawing()  # says which layers are hidden (none once the grid is off)

    def changeEvent(self, event: Any) -> None:
        if left_the_window(self, event):  # napari's close button: no closeEvent follows
            self._stop.set()
            release_frozen()
        super().changeEvent(event)

    def closeEvent(self, event: Any) -> None:
        self._stop.set()
        self.overlays.disconnect()
        release_gpu_memory()
        release_frozen()
        super().closeEvent(event)

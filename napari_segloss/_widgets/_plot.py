"""The live training plot embedded in the Train panel (matplotlib ``FigureCanvasQTAgg``)."""

from __future__ import annotations

import math

from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from ._workers import one_shot_timer

#: napari's dark theme, so the plot does not glare inside the dock
_BG = "#262930"
_FG = "#d4d4d4"


class LivePlot(FigureCanvasQTAgg):
    """Loss (per step and per epoch, train and validation) and validation mean Dice per epoch.

    Data are kept as plain lists (``steps``, ``epochs``) so tests can read what is drawn.
    The lines follow them at most every ``REDRAW_MS`` (and at :meth:`flush`): each draw of the
    figure (its constrained layout and text) holds the main thread, and a fast run makes
    several steps per event-loop turn.
    """

    REDRAW_MS = 500

    def __init__(self, parent: object = None) -> None:
        fig = Figure(figsize=(4.0, 2.6), dpi=90, facecolor=_BG, layout="constrained")
        super().__init__(fig)
        if parent is not None:
            self.setParent(parent)
        self.ax_loss = fig.add_subplot(1, 2, 1)
        self.ax_dice = fig.add_subplot(1, 2, 2)
        self._redraw = one_shot_timer(self, self.REDRAW_MS, self.flush)
        self.clear()

    def _style(self) -> None:
        for ax, title in ((self.ax_loss, "loss"), (self.ax_dice, "val mean Dice")):
            ax.set_facecolor(_BG)
            ax.set_title(title, color=_FG, fontsize=9)
            ax.tick_params(colors=_FG, labelsize=7)
            for spine in ax.spines.values():
                spine.set_color(_FG)
            ax.set_xlabel("epoch", color=_FG, fontsize=8)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # no "0.95 1.00 1.05"

    def clear(self) -> None:
        self.steps: list[tuple[float, float]] = []  # (fractional epoch, loss)
        self.epochs: list[dict[str, float]] = []
        self.ax_loss.cla()
        self.ax_dice.cla()
        self._style()
        (self._l_step,) = self.ax_loss.plot([], [], color="#7f7f7f", lw=0.8, label="train (step)")
        (self._l_train,) = self.ax_loss.plot([], [], "o-", color="#4fa3ff", ms=3, label="train")
        (self._l_val,) = self.ax_loss.plot([], [], "s-", color="#ff9f40", ms=3, label="val")
        # validation's colour and marker, as the legend names them
        (self._l_dice,) = self.ax_dice.plot([], [], "s-", color="#ff9f40", ms=3)
        self.ax_dice.set_ylim(0, 1)
        self._no_val = self.ax_dice.text(
            0.5, 0.5, "", transform=self.ax_dice.transAxes, ha="center", va="center",
            color=_FG, fontsize=7,
        )  # fmt: skip
        # under the plots, not in them: a legend inside hid the first epoch's points
        fig = self.figure
        fig.legends.clear()
        leg = fig.legend(
            handles=[self._l_step, self._l_train, self._l_val],
            loc="outside lower center",
            ncols=3,
            fontsize=6,
            facecolor=_BG,
            edgecolor=_BG,
        )
        for text in leg.get_texts():
            text.set_color(_FG)
        self._redraw.stop()
        if self.isVisible():  # a hidden plot is drawn when shown (no second draw then)
            self.draw_idle()

    def add_step(self, epoch_float: float, loss: float) -> None:
        if math.isfinite(loss):
            self.steps.append((epoch_float, loss))
            self._redraw_soon()

    def add_epoch(self, epoch: int, train_loss: float, val_loss: float, val_dice: float) -> None:
        self.epochs.append(
            {"epoch": epoch, "train_loss": train_loss, "val_loss": val_loss, "val_dice": val_dice}
        )
        self._redraw_soon()

    def _redraw_soon(self) -> None:
        if not self._redraw.isActive():
            self._redraw.start()

    def flush(self) -> None:
        """Draw the data received so far now (the end of a run)."""
        self._redraw.stop()
        if self.steps:
            self._l_step.set_data(*zip(*self.steps, strict=True))
        x = [e["epoch"] for e in self.epochs]
        self._l_train.set_data(x, [e["train_loss"] for e in self.epochs])
        self._l_val.set_data(x, [e["val_loss"] for e in self.epochs])
        self._l_dice.set_data(x, [e["val_dice"] for e in self.epochs])
        no_val = bool(self.epochs) and not any(math.isfinite(e["val_dice"]) for e in self.epochs)
        self._no_val.set_text("no validation\n(validation 0)" if no_val else "")
        # both plots span the run from its start (epoch 0), whole epochs as ticks
        last = max([1.0, *x, *(step[0] for step in self.steps)])
        for ax in (self.ax_loss, self.ax_dice):
            ax.relim(visible_only=True)
            ax.autoscale_view(scaley=ax is self.ax_loss)
            ax.set_xlim(-0.06 * last, 1.06 * last)  # the last epoch's markers whole
        if self.isVisible():  # else drawn when shown
            self.draw_idle()

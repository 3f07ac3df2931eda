"""A status line redrawn in place on a terminal, for `hotline sim load`'s progress.

On a terminal, `sim load` shows one line at the bottom, rewritten a few times a second (a
progress bar over the planned duration, then the drain, with what was sent, delivered,
acknowledged and refused so far) instead of a progress line every few seconds; it is erased
before anything else is printed, so the log and the final summary read as they do when piped.
When stderr is not a terminal nothing here is used: the periodic progress lines stay as they
were. The line is measured in terminal columns and cut to the terminal's width
(`client.cli_common.Line`), so it never wraps and leaves a trail behind it.
"""

from __future__ import annotations

import shutil
from typing import TextIO

from client.cli_common import BOLD, DIM, GREEN, RED, Line

REDRAW_S = 0.25
BAR_CELLS = 24
CLEAR_TO_END = "\x1b[K"


def bar(fraction: float, cells: int = BAR_CELLS) -> str:
    """`████████░░░░` for `fraction` (clamped to 0..1), `cells` columns wide."""
    full = round(max(0.0, min(1.0, fraction)) * cells)
    return "█" * full + "░" * (cells - full)


def load_status(
    *,
    rate: float,
    elapsed_s: float,
    duration_s: float,
    planned: int,
    sent: int,
    delivered: int,
    acknowledged: int,
    errors: int,
) -> Line:
    """The status of a load step: sending (bar over the duration), then draining (bar over the
    messages delivered)."""
    line = Line([]).add(f"load {rate:g}/s ", BOLD)
    if elapsed_s < duration_s:
        line.add(bar(elapsed_s / duration_s)).add(
            f" {elapsed_s:5.1f}/{duration_s:g} s  sending  ", DIM
        )
    else:
        done = delivered / planned if planned else 1.0
        line.add(bar(done), GREEN).add(f" {elapsed_s:5.1f} s  draining  ", DIM)
    line.add(f"sent {sent}/{planned}  delivered {delivered}  acked {acknowledged}  ")
    line.add(f"errors {errors}", f"{BOLD};{RED}" if errors else "")
    return line


class StatusLine:
    """One line of `stream` (a terminal) redrawn in place; `echo` prints above it."""

    def __init__(self, stream: TextIO, *, colour: bool = True) -> None:
        self.stream = stream
        self.colour = colour
        self.shown = False

    def show(self, line: Line) -> None:
        width = shutil.get_terminal_size().columns - 1  # the last column would wrap on some
        self.stream.write("\r" + line.render(self.colour, width) + CLEAR_TO_END)
        self.stream.flush()
        self.shown = True

    def clear(self) -> None:
        if self.shown:
            self.stream.write("\r" + CLEAR_TO_END)
            self.stream.flush()
            self.shown = False

    def echo(self, text: str) -> None:
        """Print a line of the run's log above the status line (redrawn at the next tick)."""
        self.clear()
        print(text, file=self.stream, flush=True)

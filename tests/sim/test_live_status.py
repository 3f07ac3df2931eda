"""`hotline sim load`'s live status line: one line redrawn in place on a terminal, cut to its
width, erased before anything else is printed; and, under tmux, seen during a real run and
gone from the screen at the end."""

from __future__ import annotations

import io
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from client.cli_common import cell_width
from sim.live import BAR_CELLS, CLEAR_TO_END, StatusLine, bar, load_status
from tests.cli.test_cli import clean_env


def test_the_bar_is_as_wide_as_asked_whatever_the_fraction() -> None:
    assert bar(0.0) == "░" * BAR_CELLS
    assert bar(1.0) == "█" * BAR_CELLS
    assert bar(0.5, 10) == "█" * 5 + "░" * 5
    assert bar(-1.0, 8) == "░" * 8
    assert bar(7.0, 8) == "█" * 8


def test_sending_then_draining() -> None:
    def status(elapsed_s: float) -> str:
        return load_status(
            rate=50.0,
            elapsed_s=elapsed_s,
            duration_s=4.0,
            planned=100,
            sent=40,
            delivered=30,
            acknowledged=0,
            errors=0,
        ).plain()

    assert "sending" in status(2.0)
    assert bar(0.5) in status(2.0)
    assert "draining" in status(5.0)
    assert bar(0.3) in status(5.0)


def test_the_line_is_redrawn_in_place_within_the_width_and_erased_for_a_log_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("COLUMNS", "50")
    out = io.StringIO()
    live = StatusLine(out, colour=False)
    line = load_status(
        rate=1000.0,
        elapsed_s=1.0,
        duration_s=10.0,
        planned=10000,
        sent=999,
        delivered=990,
        acknowledged=500,
        errors=0,
    )
    live.show(line)
    live.show(line)
    live.echo("a warning")
    live.clear()  # nothing shown since the echo: nothing written
    drawn = out.getvalue()
    assert "\n" not in drawn.split("a warning")[0]  # the redraws stay on one line
    for part in drawn.split("\r"):
        shown = part.split(CLEAR_TO_END)[0]
        assert cell_width(shown) <= 49
    assert drawn.endswith("\r" + CLEAR_TO_END + "a warning\n")


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")
def test_sim_load_shows_a_live_line_on_a_terminal_and_erases_it(tmp_path: Path) -> None:
    socket = str(tmp_path / "tmux.sock")  # a private server, its socket removed with tmp_path
    env = clean_env(tmp_path, {"TERM": "xterm-256color"})
    exports = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items() if k.isidentifier())
    command = " ".join(
        shlex.quote(part)
        for part in [
            sys.executable,
            "-m",
            "hotline.cli",
            "sim",
            "load",
            "--rate",
            "20",
            "--duration",
            "4",
            "--workdir",
            str(tmp_path / "run"),
        ]
    )
    subprocess.run(
        [
            *("tmux", "-S", socket, "-f", "/dev/null", "new-session", "-d"),
            *("-x", "120", "-y", "60"),
            f"env -i {exports} {command}; echo LOAD-EXIT=$?; sleep 60",
        ],
        check=True,
        timeout=20,
    )
    seen_live = False
    screen = ""
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and "LOAD-EXIT=" not in screen:
            time.sleep(0.3)
            screen = subprocess.run(
                ["tmux", "-S", socket, "capture-pane", "-p"],
                check=True,
                capture_output=True,
                text=True,
                timeout=20,
            ).stdout
            seen_live = seen_live or any(
                line.startswith("load 20/s ") and "sending" in line for line in screen.split("\n")
            )
    finally:
        subprocess.run(["tmux", "-S", socket, "kill-server"], check=False, timeout=20)
    assert "LOAD-EXIT=0" in screen, screen
    assert seen_live, screen
    assert "░" not in screen  # erased before the summary
    assert "█" not in screen
    assert "== load-20" in screen

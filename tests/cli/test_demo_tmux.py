"""`hotline demo` on a real terminal (tmux), as an audience sees it: the two watch floors in
columns whose divider stays in one column, lined up by time (both floors' events of the same
moment on one row), no line wider than the terminal."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from client.cli_common import cell_width
from tests.cli.test_cli import clean_env

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed"),
]

WIDTH, HEIGHT = 160, 200  # tall enough that nothing scrolls out of the pane


def tmux(socket: str, *args: str) -> str:
    return subprocess.run(
        ["tmux", "-S", socket, *args], check=True, capture_output=True, text=True, timeout=20
    ).stdout


def test_the_demo_floors_line_up_on_a_terminal(tmp_path: Path) -> None:
    socket = str(tmp_path / "tmux.sock")  # a private server, its socket removed with tmp_path
    env = clean_env(tmp_path, {"TERM": "xterm-256color"})
    command = " ".join(
        shlex.quote(part)
        for part in [
            sys.executable,
            "-m",
            "hotline.cli",
            "demo",
            "--dir",
            str(tmp_path / "demo"),
            "--pace",
            "0.2",
        ]
    )
    exports = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items() if k.isidentifier())
    subprocess.run(
        [
            "tmux",
            "-S",
            socket,
            "-f",
            "/dev/null",
            "new-session",
            "-d",
            "-x",
            str(WIDTH),
            "-y",
            str(HEIGHT),
            f"env -i {exports} {command}; echo DEMO-EXIT=$?; sleep 60",
        ],
        check=True,
        timeout=20,
    )
    try:
        screen = ""
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and "DEMO-EXIT=" not in screen:
            time.sleep(1.0)
            screen = tmux(socket, "capture-pane", "-p", "-J")
    finally:
        subprocess.run(["tmux", "-S", socket, "kill-server"], check=False, timeout=20)
    assert "DEMO-EXIT=0" in screen, screen
    lines = screen.split("\n")
    assert all(cell_width(line) <= WIDTH for line in lines)
    start = next(i for i, line in enumerate(lines) if line.startswith("UTC "))
    end = next(i for i, line in enumerate(lines) if line.startswith("Summary"))
    table = [line for line in lines[start:end] if "│" in line or "┼" in line]
    assert len(table) > 10
    dividers = {cell_width(re.split("[│┼]", line)[0]) for line in table}
    assert len(dividers) == 1, "\n".join(table)
    rows = [line for line in table if re.match(r"\d\d:\d\d:\d\d\.\d ", line)]
    halves = [row.split("│", 1) for row in rows]
    both = [left for left, right in halves if left[11:].strip() and right.strip()]
    assert len(both) >= 3, "\n".join(table)  # e.g. JP SENT beside TW RECEIVED
    assert re.search(r"SENT .*maritime-encounter .*│ RECEIVED .*maritime-encounter", screen)

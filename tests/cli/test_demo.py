"""`hotline demo` run headless, as a user or CI would: it must finish within a minute, deliver
and acknowledge every message, show the escalation, verify both journals, and always stop the
gateway processes it started (at the end, on Ctrl-C, and after `--keep`)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sys
import time
from pathlib import Path

import pytest

from tests.cli.test_cli import clean_env, hotline

pytestmark = pytest.mark.slow


def pids_in(output: str) -> list[int]:
    return [int(p) for p in re.findall(r"gateway: 127\.0\.0\.1:\d+ \(pid (\d+)\)", output)]


async def gone(pids: list[int], within: float = 10.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        alive = []
        for pid in pids:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                continue
            alive.append(pid)
        if not alive:
            return True
        await asyncio.sleep(0.1)
    return False


async def start_demo(*args: str, env: dict[str, str]) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "hotline.cli",
        "demo",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=env,
    )


async def read_until(proc: asyncio.subprocess.Process, marker: str, within: float) -> str:
    """Read the demo's output until a line contains `marker` (bounded in time)."""
    assert proc.stdout is not None
    seen: list[str] = []
    async with asyncio.timeout(within):
        while True:
            line = (await proc.stdout.readline()).decode()
            if not line:
                raise AssertionError("the demo ended early:\n" + "".join(seen))
            seen.append(line)
            if marker in line:
                return "".join(seen)


async def test_the_demo_plays_the_encounter_end_to_end_in_under_a_minute(tmp_path: Path) -> None:
    summary_path = tmp_path / "summary.json"
    started = time.monotonic()
    result = await hotline(
        "demo",
        "--dir",
        str(tmp_path / "demo"),
        "--summary-json",
        str(summary_path),
        env=clean_env(tmp_path),
        timeout=60,
    )
    elapsed = time.monotonic() - started
    assert result.rc == 0, result.out + result.err
    assert elapsed < 60
    out = result.out
    # Headless: prefixed lines for both floors, no colour, the shortened deadlines announced.
    assert "\x1b[" not in out
    assert "SHORTENED FOR THE DEMO" in out
    assert re.search(r"^\[JP\] .*RECEIVED .*FLASH .*\[EXERCISE\] air-incident", out, re.M)
    assert re.search(r"^\[TW\] .*ESCALATION .*FLASH", out, re.M)
    assert re.search(r"^\[JP\] .*REALERT .*FLASH", out, re.M)
    assert re.search(r"^\[JP\] .*ACKNOWLEDGED .*maritime-encounter .*ROGER", out, re.M)
    assert "Verdict: PASS" in out

    summary = json.loads(summary_path.read_text())
    assert summary["ok"] is True
    messages = summary["messages"]
    assert [(m["type"], m["precedence"], m["sender"]) for m in messages] == [
        ("maritime-encounter", "IMMEDIATE", "JP"),
        ("manoeuvre-notice", "IMMEDIATE", "TW"),
        ("air-incident", "FLASH", "TW"),
    ]
    for m in messages:
        assert m["error"] is None
        assert 0 <= m["delivered_ms"] <= m["acknowledged_ms"]
    assert [m["answer"] for m in messages] == ["ROGER", "WILCO", "ROGER"]
    assert [m["escalated"] for m in messages] == [False, False, True]
    assert messages[2]["realerted"] is True
    assert messages[2]["acknowledged_ms"] >= summary["deadlines_s"]["FLASH"] * 1000
    for party in ("JP", "TW"):
        journal = summary["journals"][party]
        assert journal["verified"] is True, journal
        assert journal["signatures"] > 0
        assert Path(journal["path"]).exists()
        assert journal["path"] in out
    assert await gone(pids_in(out)), "a gateway process outlived the demo"


async def test_ctrl_c_stops_the_demo_and_its_gateways_and_removes_its_temporary_folder(
    tmp_path: Path,
) -> None:
    temp = tmp_path / "tmp"
    temp.mkdir()
    proc = await start_demo(env=clean_env(tmp_path, {"TMPDIR": str(temp)}))
    try:
        seen = await read_until(proc, "Phase 1", within=30)
        pids = pids_in(seen)
        assert len(pids) == 2
        proc.send_signal(signal.SIGINT)
        async with asyncio.timeout(20):
            rest, _ = await proc.communicate()
        assert proc.returncode == 130, rest.decode()
        assert await gone(pids), "Ctrl-C left a gateway running"
        assert "removed at the end" in seen
        assert list(temp.iterdir()) == [], "the demo left its folder (with CA keys) behind"
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_keep_leaves_the_gateways_usable_by_hand_until_ctrl_c(tmp_path: Path) -> None:
    env = clean_env(tmp_path)
    workdir = tmp_path / "demo"
    proc = await start_demo("--dir", str(workdir), "--keep", env=env)
    try:
        seen = await read_until(proc, "Press Ctrl-C", within=60)
        pids = pids_in(seen)
        assert "Verdict: PASS" in seen
        config = workdir / "tw-operator.toml"
        assert f"--config {config}" in seen
        assert f"HOTLINE_CONFIG={workdir / 'jp-operator.toml'}" in seen
        status = await hotline("status", "--json", "--config", str(config), env=env)
        assert status.rc == 0, status.err
        assert json.loads(status.out)["party"] == "TW"
        history = await hotline("history", "--json", "--config", str(config), env=env)
        assert len(json.loads(history.out)["messages"]) == 6  # 3 messages and 3 acknowledgements
        # the commands work as printed, from a shell where the venv is not activated
        printed = next(line.strip() for line in seen.splitlines() if "history --config" in line)
        shell = await asyncio.create_subprocess_shell(
            printed,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env={**env, "PATH": "/usr/bin:/bin"},
        )
        out, err = await asyncio.wait_for(shell.communicate(), 30)
        assert shell.returncode == 0, (printed, err.decode())
        assert "(3 messages)" in out.decode()
        proc.send_signal(signal.SIGINT)
        async with asyncio.timeout(20):
            await proc.communicate()
        assert proc.returncode == 0
        assert await gone(pids), "a kept gateway outlived Ctrl-C"
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_a_pace_out_of_range_is_a_one_line_usage_error(tmp_path: Path) -> None:
    result = await hotline("demo", "--pace", "99", env=clean_env(tmp_path))
    assert result.rc == 2
    assert result.err.strip().splitlines() == [
        "hotline demo: error: argument --pace: --pace must be between 0 and 30 s "
        "(see `hotline demo --help`)"
    ]

"""`hotline console` as a user runs it: over two real gateways with one operator file per floor,
serving on loopback until Ctrl-C; refusing to listen off loopback without TLS and a token."""

from __future__ import annotations

import asyncio
import re
import signal
import sys
from pathlib import Path

import aiohttp

from tests.cli.test_cli import clean_env, floors, hotline
from tests.harness import make_pki, running_pair


async def test_console_serves_both_floors_from_operator_files_until_interrupted(
    tmp_path: Path,
) -> None:
    async with running_pair(tmp_path) as pair:
        jp, tw = floors(pair, tmp_path)
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "hotline.cli",
            "console",
            "--floor",
            str(jp.config),
            "--floor",
            str(tw.config),
            "--listen",
            "127.0.0.1:0",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env=clean_env(tmp_path / "home"),
        )
        assert proc.stdout is not None
        try:
            output = ""
            async with asyncio.timeout(30):
                while "hotline console: " not in output:
                    line = await proc.stdout.readline()
                    assert line, f"the console ended early:\n{output}"
                    output += line.decode()
            match = re.search(r"hotline console: (http://127\.0\.0\.1:\d+/)", output)
            assert match, output
            async with aiohttp.ClientSession() as http:
                async with http.get(match[1] + "api/config") as response:
                    assert response.status == 200
                    config = await response.json()
                async with http.get(match[1]) as response:
                    assert response.status == 200
                    page = await response.text()
                async with http.get(match[1] + "static/vendor/leaflet/leaflet.js") as response:
                    assert response.status == 200
            assert config["parties"] == ["JP", "TW"]
            assert config["levels"] == ["ROGER", "WILCO", "UNABLE", "SAY_AGAIN"]
            assert '<script src="/static/console.js">' in page
            assert "http" not in page.replace("http-equiv", "")  # nothing from the network
        finally:
            if proc.returncode is None:
                proc.send_signal(signal.SIGINT)
                async with asyncio.timeout(15):
                    await proc.wait()
        assert proc.returncode == 0


async def test_console_off_loopback_without_tls_is_a_usage_error(tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki")
    env = clean_env(tmp_path / "home")
    args = ("--address", "127.0.0.1:1", "--party", "JP", "--pki", str(pki))
    result = await hotline("console", "--listen", "0.0.0.0:0", *args, env=env)
    assert result.rc == 2
    assert "not loopback" in result.err
    assert "TLS" in result.err
    result = await hotline("console", "--listen", "nowhere", *args, env=env)
    assert result.rc == 2
    assert "HOST:PORT" in result.err


async def test_console_help_explains_what_the_page_shows_and_who_may_open_it(
    tmp_path: Path,
) -> None:
    result = await hotline("console", "--help", env=clean_env(tmp_path))
    assert result.rc == 0
    text = " ".join(result.out.split())
    for words in ("both gateways side by side", "ESCALATION", "map", "loopback", "--floor", "TLS"):
        assert words in text, words

"""`hotline conformance` against our own gateway: every check of both roles must PASS.

This is what CI runs (through `make test`): a real TW gateway process, alone (its peer JP is
configured but not started), and the suite as a separate `hotline conformance` process playing
JP, once as JP's gateway on TW's PeerLink (dialling, and listening where TW's gateway dials JP)
and once as a TW operator. A check that fails here is either our gateway disagreeing with the
spec or the suite being wrong; either way it must be looked at, not skipped.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from sim.pair import GatewayPair

pytestmark = pytest.mark.slow


@pytest.fixture
async def tw_alone(tmp_path: Path) -> AsyncIterator[GatewayPair]:
    pair = await GatewayPair.start(tmp_path, proxies=False, start=("TW",))
    try:
        yield pair
    finally:
        await pair.stop()


async def conformance(pair: GatewayPair, *args: str) -> tuple[int, str, str, dict[str, Any]]:
    report = pair.workdir / f"conformance-{len(list(pair.workdir.glob('conformance-*')))}.json"
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "hotline.cli",
        "conformance",
        "--target",
        pair.tw.address,
        "--pki",
        str(pair.pki),
        "--json",
        str(report),
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    doc = json.loads(report.read_text()) if report.exists() else {}
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode(), doc


def failures(doc: dict[str, Any]) -> list[str]:
    return [
        f"{c['id']}: {c['status']} {c['detail']}" for c in doc["checks"] if c["status"] != "PASS"
    ]


@pytest.mark.timeout(240)
async def test_our_gateway_passes_every_peer_check(tw_alone: GatewayPair) -> None:
    code, out, err, doc = await conformance(
        tw_alone, "--role", "peer", "--listen", str(tw_alone.jp.port)
    )
    assert failures(doc) == [], out + err
    assert code == 0
    assert doc["parties"] == {"target": "TW", "suite": "JP"}
    ids = [c["id"] for c in doc["checks"]]
    assert "peer.deliver.valid-examples" in ids
    assert "peer.resume.lost-receipt" in ids
    assert any(i.startswith("peer.listen.") for i in ids)
    assert "PASSED" in out
    assert "peer.hello.welcome" in out


@pytest.mark.timeout(240)
async def test_our_gateway_passes_every_operator_check(tw_alone: GatewayPair) -> None:
    code, out, err, doc = await conformance(tw_alone, "--role", "operator")
    assert failures(doc) == [], out + err
    assert code == 0
    assert len(doc["checks"]) >= 10

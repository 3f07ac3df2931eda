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

from hotline import must_index
from sim.conformance import checks as _checks  # noqa: F401  (registers the checks)
from sim.conformance.registry import Role, checks_of, must_ids
from sim.pair import GatewayPair

pytestmark = pytest.mark.slow
SPEC_IDS = {m.id for m in must_index.load()}


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


def assert_marks_name_the_checks_musts(request: pytest.FixtureRequest, role: Role) -> None:
    """This test's `must` marks are the spec ids its role's checks cover (kept in step)."""
    marked = {i for mark in request.node.iter_markers("must") for i in mark.args}
    covered = {i for c in checks_of(role) for i in must_ids(c) if i in SPEC_IDS}
    assert marked == covered


@pytest.mark.timeout(240)
@pytest.mark.must("ID-2", "ID-4", "ID-5", "JRN-1", "LINK-2", "LINK-3", "LINK-4", "LINK-5")
@pytest.mark.must("LINK-6", "LINK-7", "LINK-10", "LINK-11", "LINK-14", "LINK-15", "LINK-16")
@pytest.mark.must(
    "LINK-17", "LINK-18", "LINK-19", "LINK-20", "LINK-22", "LINK-24", "LINK-26", "LINK-28"
)
@pytest.mark.must("SIG-1", "SIG-2", "VAL-5", "VER-1")
async def test_our_gateway_passes_every_peer_check(
    tw_alone: GatewayPair, request: pytest.FixtureRequest
) -> None:
    assert_marks_name_the_checks_musts(request, Role.PEER)
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
@pytest.mark.must("ID-3", "ID-5", "SIG-1")
async def test_our_gateway_passes_every_operator_check(
    tw_alone: GatewayPair, request: pytest.FixtureRequest
) -> None:
    assert_marks_name_the_checks_musts(request, Role.OPERATOR)
    code, out, err, doc = await conformance(tw_alone, "--role", "operator")
    assert failures(doc) == [], out + err
    assert code == 0
    assert len(doc["checks"]) >= 10

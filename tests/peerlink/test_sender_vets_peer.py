"""`PeerSender` runs its `vet_peer` check before every connection attempt.

No sockets: the check is a stand-in that fails as the test says, and the channel is a stand-in
that records whether anything used it. What is proven: a failed check never reaches the
channel, backs off like a failed connection, shows its reason in the link status, and is logged
and reported (refusals only) once per distinct reason, not on every retry.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar, cast

import grpc
import pytest

from hotline import link
from hotline.signing import KeyRing
from server.peerlink.peer_certificate import (
    PeerCertificateError,
    PeerCertificateRefused,
    PeerCertificateRevoked,
    PeerCertificateWrongIdentity,
    PeerUnreachableError,
)
from server.peerlink.sender import PeerSender

WAIT = 5.0


class EmptyOutbox:
    def unsettled_outbound(self) -> list[link.Outgoing]:
        return []

    def last_settled_outbound(self, lane: int) -> int:
        return 0

    async def record_settlement(self, plan: link.SettleOutbound) -> None:
        raise AssertionError("nothing was sent, so nothing can be settled")

    def journal_hash_at(self, entry_count: int) -> bytes | None:
        return b"\0" * 32 if entry_count == 0 else None


class UnusedChannel:
    """Stands in for the gRPC channel; any use other than closing it is recorded."""

    used: ClassVar[list[str]] = []

    def __getattr__(self, name: str) -> Any:
        UnusedChannel.used.append(name)
        raise AssertionError(f"the channel was used ({name}) although the check failed")

    async def close(self, grace: float | None = None) -> None:
        pass


async def until(predicate: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {WAIT} s waiting for {what}")
        await asyncio.sleep(0.01)


def sender_with(
    vet: Callable[[], Awaitable[None]],
    on_refused: Callable[[PeerCertificateRefused], Awaitable[None]],
    *,
    reconnect_min: float = 0.005,
    reconnect_max: float = 0.01,
) -> PeerSender:
    async def on_link(up: bool, detail: str) -> None:
        raise AssertionError(f"the link never comes up or goes down here ({up}, {detail})")

    return PeerSender(
        party="JP",
        peer_party="TW",
        outbox=EmptyOutbox(),
        keyring=cast(KeyRing, None),  # only a connection that reached the peer would use it
        signing_certificates=[],
        channel_factory=lambda: cast(grpc.aio.Channel, UnusedChannel()),
        on_link=on_link,
        reconnect_min=reconnect_min,
        reconnect_max=reconnect_max,
        vet_peer=vet,
        on_peer_refused=on_refused,
    )


async def stopped(sender: PeerSender, task: asyncio.Task[None]) -> None:
    sender.stop()
    task.cancel()
    await asyncio.wait_for(asyncio.gather(task, return_exceptions=True), WAIT)


@pytest.mark.must("LINK-3")
async def test_a_failed_check_never_dials_and_is_reported_once_per_reason(
    caplog: pytest.LogCaptureFixture,
) -> None:
    revoked = PeerCertificateRevoked(
        "peer gateway certificate serial 0x1 is revoked (keyCompromise)"
    )
    impostor = PeerCertificateWrongIdentity("peer gateway certificate serial 0x2 is spiffe://...")
    unreachable = PeerUnreachableError("cannot connect to the peer gateway at x:1: refused")
    failing: list[PeerCertificateError] = [revoked]
    checks = 0

    async def vet() -> None:
        nonlocal checks
        checks += 1
        raise failing[0]

    reported: list[str] = []

    async def on_refused(refused: PeerCertificateRefused) -> None:
        reported.append(str(refused))

    async def more_checks(count: int) -> None:
        target = checks + count
        await until(lambda: checks >= target, f"{count} more attempts failing with {failing[0]}")

    UnusedChannel.used.clear()
    sender = sender_with(vet, on_refused)
    caplog.set_level(logging.INFO, logger="hotline.link.out")
    task = asyncio.create_task(sender.run())
    try:
        for failure in (revoked, impostor, unreachable, revoked):
            failing[0] = failure
            await more_checks(5)
            await until(lambda: sender.status.detail == str(failing[0]), "the reason in the status")
    finally:
        await stopped(sender, task)

    assert UnusedChannel.used == []
    # each refusal reported as it begins; the unreachable peer is not a security event
    assert reported == [str(revoked), str(impostor), str(revoked)]
    logged = [(r.levelname, r.getMessage()) for r in caplog.records]
    assert logged == [
        ("ERROR", f"not dialling TW: {revoked}"),
        ("ERROR", f"not dialling TW: {impostor}"),
        ("INFO", f"not dialling TW: {unreachable}"),
        ("ERROR", f"not dialling TW: {revoked}"),
    ]
    assert not sender.status.up


async def test_a_failed_check_backs_off_like_a_failed_connection() -> None:
    checks = 0

    async def vet() -> None:
        nonlocal checks
        checks += 1
        raise PeerCertificateRevoked("revoked")

    async def on_refused(refused: PeerCertificateRefused) -> None:
        pass

    # Full-jitter exponential backoff from 0.05 s up to 0.4 s: over one second that is about
    # eight attempts; without backoff it would be thousands.
    sender = sender_with(vet, on_refused, reconnect_min=0.05, reconnect_max=0.4)
    task = asyncio.create_task(sender.run())
    await asyncio.sleep(1.0)
    await stopped(sender, task)
    assert 2 <= checks <= 20

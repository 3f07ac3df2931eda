"""Benchmark (not a test): what one overdue check costs as the journal grows.

Builds a JP journal of about N messages through the store's own write paths, shaped like a
gateway that has run for a long time: nearly every message answered (our messages delivered
and acknowledged by TW, TW's messages acknowledged by our operator, a few refused by TW) and a
handful still unanswered past their deadline. Then times `Store.mark_overdue`, the check the
gateway runs every 0.25-1 s inside the journal's write transaction: the first check escalates
the few that are due, the next ones find nothing (the steady state).

    .venv/bin/python -m tests.bench.overdue --messages 10000,100000

Prints, per size, the milliseconds per check (median and p90 of `--checks`, wall time of the
whole journal operation: hand-off to the writer thread, the query, an empty commit), and the
query plans of the overdue check, `overdue_count` and `queue_depth`.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Awaitable, Iterable
from pathlib import Path
from typing import TypeVar

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from certs.verify import public_key_id
from hotline import link
from hotline.ids import new_message_id
from hotline.signing import PAYLOAD_TYPE_ENVELOPE, Signer, sha256
from hotline.v1 import bodies_pb2, common_pb2, envelope_pb2
from hotline.wire import sign_batch_receipt
from server.journal import Journal
from server.store import Store

T = TypeVar("T")
CHUNK = 1000  # operations in flight at once (they share group commits)
BATCH = 500  # deliveries per link batch / receipts per batch receipt
DUE = 20  # messages left unanswered past their deadline
REFUSED_SHARE = 50  # one outbound message in this many is refused by the peer


def _signer(party: str) -> Signer:
    """A throwaway key: the store signs batch receipts with it; nobody verifies them here."""
    key = Ed25519PrivateKey.generate()
    return Signer(party, key, public_key_id(key.public_key()), b"")


def envelope(sender: str, *, acknowledges: str = "") -> envelope_pb2.Envelope:
    env = envelope_pb2.Envelope(
        message_id=new_message_id(),
        sender_party=sender,
        recipient_party="TW" if sender == "JP" else "JP",
        precedence=common_pb2.PRECEDENCE_ROUTINE,
        language="en",
    )
    if acknowledges:
        env.acknowledgement.acknowledged_message_id = acknowledges
        env.acknowledgement.level = bodies_pb2.ACKNOWLEDGEMENT_LEVEL_ROGER
    else:
        env.free_text.subject.variants.add(language="en", text="Radio check")
        env.free_text.text.variants.add(language="en", text="JP watch, radio check " * 4)
    return env


def _signed(signer: Signer, env: envelope_pb2.Envelope) -> common_pb2.SignedPayload:
    return signer.sign(PAYLOAD_TYPE_ENVELOPE, env.SerializeToString())


async def _in_chunks(work: Iterable[Awaitable[T]]) -> list[T]:
    results: list[T] = []
    pending: list[Awaitable[T]] = []
    for item in work:
        pending.append(item)
        if len(pending) == CHUNK:
            results += await asyncio.gather(*pending)
            pending = []
    return results + list(await asyncio.gather(*pending))


class Peer:
    """TW's side of the link, as far as JP's journal sees it: batches and batch receipts."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.jp = _signer("JP")
        self.tw = _signer("TW")
        self.inbound_sequence = 0  # TW -> JP
        self.outbound_sequence = 0  # JP -> TW

    async def deliver(self, envelopes: list[envelope_pb2.Envelope]) -> None:
        """TW's messages arrive at JP, BATCH to a link batch."""
        for start in range(0, len(envelopes), BATCH):
            accepted = []
            for env in envelopes[start : start + BATCH]:
                self.inbound_sequence += 1
                signed = _signed(self.tw, env)
                delivery = link.Delivery(
                    self.inbound_sequence, env.message_id, sha256(signed.payload), signed
                )
                accepted.append(link.Accepted(delivery, env.message_id, env))
            batch = link.JournalBatch(
                "TW",
                accepted[0].delivery.sequence,
                accepted[-1].delivery.sequence,
                tuple(accepted),
                (),
            )
            await self.store.journal_batch(batch, self.jp)

    async def settle(
        self, sent: list[tuple[envelope_pb2.Envelope, bytes]], *, refuse: bool = True
    ) -> None:
        """TW's batch receipts for JP's messages: all receipted, or (`refuse`) all but one in
        REFUSED_SHARE."""
        for start in range(0, len(sent), BATCH):
            receipted: list[link.ReceiptItem] = []
            refused: list[link.RejectionItem] = []
            for i, (env, digest) in enumerate(sent[start : start + BATCH], start):
                self.outbound_sequence += 1
                if refuse and i % REFUSED_SHARE == REFUSED_SHARE - 1:
                    refused.append(
                        link.RejectionItem(
                            self.outbound_sequence,
                            env.message_id,
                            link.RejectReason.NOT_RELEASABLE,
                            "not releasable to TW",
                            digest=digest,
                        )
                    )
                else:
                    receipted.append(
                        link.ReceiptItem(self.outbound_sequence, env.message_id, digest)
                    )
            first = self.outbound_sequence - min(BATCH, len(sent) - start) + 1
            receipt = sign_batch_receipt(
                self.tw,
                sender_party="JP",
                first_sequence=first,
                last_sequence=self.outbound_sequence,
                receipts=tuple(receipted),
                rejections=tuple(refused),
                journal_time_ns=time.time_ns(),
                lane=link.ROUTINE_LANE,
            )
            await self.store.record_settlement(
                link.SettleOutbound(receipt, tuple(receipted), tuple(refused))
            )


async def build(path: Path, messages: int) -> tuple[Store, int]:
    """A JP journal of about `messages` messages, all but DUE answered or refused; returns its
    store (open: close its journal) and how many messages it holds."""
    journal = Journal(path, party="JP")
    # Every deadline passes a millisecond after journaling: only the state decides what is due.
    store = Store(journal, party="JP", peer_party="TW", deadline_s=lambda _p: 0.001)
    peer = Peer(store)
    exchanges = (messages - DUE) // 4  # each direction: a message and its acknowledgement

    async def send(env: envelope_pb2.Envelope, acknowledges: str = "") -> bytes:
        signed = _signed(peer.jp, env)
        await store.journal_outbound(signed, env, acknowledges=acknowledges)
        return sha256(signed.payload)

    ours = [envelope("JP") for _ in range(exchanges)]
    digests = await _in_chunks(send(env) for env in ours)
    await peer.settle(list(zip(ours, digests, strict=True)))
    theirs = [envelope("TW") for _ in range(exchanges)]
    answered = [
        envelope("TW", acknowledges=env.message_id)
        for i, env in enumerate(ours)
        if i % REFUSED_SHARE != REFUSED_SHARE - 1
    ]
    await peer.deliver(theirs + answered)
    acks = [envelope("JP", acknowledges=env.message_id) for env in theirs]
    digests = await _in_chunks(
        send(ack, env.message_id) for ack, env in zip(acks, theirs, strict=True)
    )
    await peer.settle(list(zip(acks, digests, strict=True)), refuse=False)
    await _in_chunks(send(envelope("JP")) for _ in range(DUE))
    await asyncio.sleep(0.01)  # past every deadline
    return store, len(ours) + 2 * len(theirs) + len(answered) + DUE  # theirs: and our acks


async def measure(messages: int, checks: int, folder: Path) -> dict[str, object]:
    path = folder / f"jp-{messages}.db"
    for old in folder.glob(f"{path.name}*"):  # a journal of an earlier run, and its WAL
        old.unlink()
    started = time.perf_counter()
    store, count = await build(path, messages)
    built_s = time.perf_counter() - started
    try:
        first = await store.mark_overdue(time.time_ns())
        times = []
        for _ in range(checks):
            t0 = time.perf_counter()
            found = await store.mark_overdue(time.time_ns())
            times.append((time.perf_counter() - t0) * 1e3)
            assert not found, "a message came due twice"
        return {
            "messages": count,
            "built_s": round(built_s, 1),
            "escalated_first_check": len(first),
            "median_ms": round(statistics.median(times), 3),
            "p90_ms": round(statistics.quantiles(times, n=10)[-1], 3),
            "overdue_count": store.overdue_count(),
            "queue_depth": store.queue_depth(),
            "plans": store.query_plans(),
        }
    finally:
        store.journal.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", default="10000,100000", help="journal sizes, comma-separated")
    parser.add_argument("--checks", type=int, default=50, help="timed checks per size")
    parser.add_argument("--keep", type=Path, help="build the journals here and keep them")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.keep or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        for size in (int(s) for s in args.messages.split(",")):
            result = asyncio.run(measure(size, args.checks, folder))
            plans = result.pop("plans")
            print(" ".join(f"{k}={v}" for k, v in result.items()), flush=True)
            assert isinstance(plans, dict)
            for name, plan in plans.items():
                print(f"  {name}: {' / '.join(plan)}")


if __name__ == "__main__":
    main()

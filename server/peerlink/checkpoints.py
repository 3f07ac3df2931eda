"""The receiving end's handling of the peer's checkpoints: verify, witness, journal, or refuse.

A thin adapter around `hotline.checkpoints.CheckpointWitness`, called by the receiver for every
`Checkpoint` frame. The witness starts from the peer checkpoints already in the journal, so a
restart does not forget what the peer signed. A checkpoint that is badly signed, does not
parse, breaks the spec's constraints, is of another party's journal, or contradicts what was
witnessed (a fork or a stale one) is refused: a `Kind.SECURITY` entry records what was wrong,
with the checkpoint's bytes as evidence, and operators see EVENT_KIND_SECURITY_REFUSAL. The
stream stays up: a refused checkpoint says something about the peer's journal, not about the
messages on the link, which keep flowing.
"""

from __future__ import annotations

import base64
import logging

from hotline.checkpoints import CheckpointAccepted, CheckpointWitness, short_hash
from hotline.errors import SignatureError
from hotline.signing import PAYLOAD_TYPE_CHECKPOINT, KeyRing
from hotline.v1 import common_pb2, peer_link_pb2
from hotline.validation import validate
from server.journal import Kind
from server.peerlink.status import printable
from server.store import Store

log = logging.getLogger("hotline.link.in")


class PeerCheckpoints:
    """Witnesses the checkpoints the peer sends on its push stream (one per receiving gateway)."""

    def __init__(self, store: Store, keyring: KeyRing) -> None:
        self._store = store
        self._keyring = keyring
        self.witness = CheckpointWitness(store.peer_party)
        # The latest checkpoint witnessed, as signed: every Welcome carries it back (LINK-28)
        self.latest: common_pb2.SignedPayload | None = store.latest_witnessed_checkpoint()
        # Replayed through the same rule: a journal written before the rule existed may hold
        # checkpoints it would refuse; they are reported and not witnessed again.
        for body in store.witnessed_checkpoints(limit=self.witness.history):
            decision = self.witness.observe(body.party, body.entry_count, body.head_hash)
            if not isinstance(decision, CheckpointAccepted):
                log.warning(
                    "journal holds a witnessed checkpoint now refused: %s",
                    printable(decision.detail),
                )

    async def receive(self, checkpoint: peer_link_pb2.Checkpoint) -> None:
        """Verify and witness one checkpoint frame; journal it, or journal its refusal."""
        signed = checkpoint.checkpoint
        peer = self._store.peer_party
        try:
            payload = self._keyring.verify(signed, payload_type=PAYLOAD_TYPE_CHECKPOINT, party=peer)
        except SignatureError as exc:
            await self._refuse("bad signature", f"checkpoint with a bad signature: {exc}", signed)
            return
        body = peer_link_pb2.CheckpointBody()
        try:
            body.ParseFromString(payload)
        except Exception as exc:
            await self._refuse("malformed", f"malformed checkpoint: does not parse: {exc}", signed)
            return
        violations = validate(body)
        # party and head_hash have their own rules below, with clearer words
        violations = [v for v in violations if v.field not in ("party", "head_hash")]
        if violations:
            detail = "; ".join(str(v) for v in violations[:8])
            await self._refuse("malformed", f"malformed checkpoint: {detail}", signed)
            return
        # Decided (and, when accepted, witnessed) before the journal write: the next
        # checkpoint is judged against this one whenever that write completes.
        decision = self.witness.observe(body.party, body.entry_count, body.head_hash)
        if isinstance(decision, CheckpointAccepted):
            await self._store.record_checkpoint(Kind.CHECKPOINT_PEER, signed, peer)
            self.latest = signed
            log.debug(
                "witnessed %s's checkpoint: %d entries, head %s",
                peer,
                decision.entry_count,
                short_hash(decision.head_hash),
            )
            return
        await self._refuse(decision.problem.value, decision.detail, signed)

    async def _refuse(self, problem: str, detail: str, signed: common_pb2.SignedPayload) -> None:
        evidence = base64.b64encode(signed.SerializeToString()).decode("ascii")
        log.warning(
            "refused a checkpoint from %s (%s): %s",
            self._store.peer_party,
            problem,
            printable(detail),
        )
        await self._store.record_event(
            Kind.SECURITY,
            {
                "code": "CHECKPOINT_REFUSED",
                "problem": problem,
                "detail": detail[:1024],
                "direction": "inbound",
                "party": self._store.peer_party,
                "checkpoint": evidence,
            },
        )

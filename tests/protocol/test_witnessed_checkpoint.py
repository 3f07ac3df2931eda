"""A Welcome's witnessed checkpoint (LINK-28) on the wire: verified with the sender's own keys."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from certs.pki import PartyPaths, init_pki, load_certificate, load_signing_key
from hotline import link, wire
from hotline.errors import RemoteProtocolError
from hotline.signing import PAYLOAD_TYPE_CHECKPOINT, KeyRing, Signer
from hotline.v1 import common_pb2, peer_link_pb2

NONCE = b"n" * 16


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("pki")
    init_pki(directory, ("JP", "TW"), ("watch-1",))
    return directory


def signer_of(pki: Path, party: str) -> Signer:
    paths = PartyPaths.of(pki, party)
    return Signer.from_certificate(
        load_signing_key(paths.signing_key), load_certificate(paths.signing_cert)
    )


def keyring_of(pki: Path) -> KeyRing:
    ring = KeyRing([load_certificate(PartyPaths.of(pki, p).ca_cert) for p in ("JP", "TW")])
    for party in ("JP", "TW"):
        ring.add_certificate(load_certificate(PartyPaths.of(pki, party).signing_cert))
    return ring


def checkpoint(signer: Signer, party: str, count: int) -> common_pb2.SignedPayload:
    body = peer_link_pb2.CheckpointBody(party=party, entry_count=count, head_hash=b"h" * 32)
    return signer.sign(PAYLOAD_TYPE_CHECKPOINT, body.SerializeToString())


def welcome_frame(pki: Path, witnessed: common_pb2.SignedPayload | None) -> peer_link_pb2.Welcome:
    tw = signer_of(pki, "TW")
    der = load_certificate(PartyPaths.of(pki, "TW").signing_cert)
    welcome = link.Welcome("TW", "JP", 0, NONCE, witnessed=witnessed)
    return wire.welcome_to_wire(welcome, tw, [der.public_bytes(Encoding.DER)], 1)


@pytest.mark.must("LINK-28")
def test_the_senders_own_checkpoint_comes_back_verified(pki: Path) -> None:
    signed = checkpoint(signer_of(pki, "JP"), "JP", 7)
    frame = welcome_frame(pki, signed)
    assert frame.witnessed_checkpoint == signed  # carried byte for byte
    welcome = wire.welcome_from_wire(frame, keyring_of(pki), receiver_party="TW", sender_party="JP")
    assert welcome.witnessed == link.WitnessedCheckpoint(7, b"h" * 32)
    none = wire.welcome_from_wire(
        welcome_frame(pki, None), keyring_of(pki), receiver_party="TW", sender_party="JP"
    )
    assert none.witnessed is None


def test_a_checkpoint_of_another_journal_or_badly_signed_ends_the_stream(pki: Path) -> None:
    keyring = keyring_of(pki)
    theirs = checkpoint(signer_of(pki, "TW"), "TW", 7)  # the receiver's own journal
    with pytest.raises(RemoteProtocolError, match="witnessed checkpoint"):
        wire.welcome_from_wire(
            welcome_frame(pki, theirs), keyring, receiver_party="TW", sender_party="JP"
        )
    forged = checkpoint(signer_of(pki, "JP"), "JP", 7)
    forged.payload = peer_link_pb2.CheckpointBody(
        party="JP", entry_count=1, head_hash=b"h" * 32
    ).SerializeToString()
    with pytest.raises(RemoteProtocolError, match="witnessed checkpoint"):
        wire.welcome_from_wire(
            welcome_frame(pki, forged), keyring, receiver_party="TW", sender_party="JP"
        )


def test_a_checkpoint_signed_by_a_key_we_no_longer_hold_is_not_checked(pki: Path) -> None:
    signed = checkpoint(signer_of(pki, "JP"), "JP", 7)
    signed.key_id = "f" * 64  # e.g. a signing key rotated away since
    welcome = wire.welcome_from_wire(
        welcome_frame(pki, signed), keyring_of(pki), receiver_party="TW", sender_party="JP"
    )
    assert welcome.witnessed is None

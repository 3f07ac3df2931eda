"""The test vectors of `proto/examples/vectors/`: recomputed byte for byte, and checked as a
stranger would check them (the PAE and the journal hash written out here from the spec's words,
not taken from our code).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from google.protobuf import text_format

from hotline.journal_file import entry_hash
from hotline.signing import pae
from hotline.v1 import common_pb2, peer_link_pb2
from hotline.validation import decode_envelope

PROTO = Path(__file__).resolve().parents[2] / "proto"
VECTORS = PROTO / "examples" / "vectors"
KEYS = json.loads((VECTORS / "keys.json").read_text())["keys"]
SIGNED = ["envelope", "batch_receipt", "welcome", "checkpoint"]


def load(name: str) -> Any:
    return json.loads((VECTORS / name).read_text(encoding="utf-8"))


def public(party: str) -> Ed25519PublicKey:
    return Ed25519PublicKey.from_public_bytes(bytes.fromhex(KEYS[party]["public_key_hex"]))


def spec_pae(payload_type: str, payload: bytes) -> bytes:
    """PAE as common.proto words it: "DSSEv1" SP LEN(type) SP type SP LEN(body) SP body."""
    kind = payload_type.encode("utf-8")
    return b" ".join(
        [b"DSSEv1", str(len(kind)).encode(), kind, str(len(payload)).encode(), payload]
    )


def spec_entry_bytes(entry: dict[str, Any]) -> bytes:
    """The hashed bytes of a journal entry as SPEC.md ("The journal's hash chain") words them."""
    out = b"hotline-journal-v1\x00" + bytes.fromhex(entry["prev_hash_hex"])
    out += entry["position"].to_bytes(8, "big")
    out += entry["time_ns"].to_bytes(8, "big", signed=True)
    out += entry["sequence"].to_bytes(8, "big")
    for text in (entry["kind"], entry["message_id"], entry["party"]):
        out += len(text.encode()).to_bytes(4, "big") + text.encode()
    body = bytes.fromhex(entry["body_hex"])
    return bytes(out + len(body).to_bytes(8, "big") + body)


def test_every_vector_file_is_exactly_what_the_generator_makes(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("_make_vectors", PROTO / "make_vectors.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    module.write(tmp_path)
    fresh = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    assert len(fresh) >= 10
    for relative in fresh:
        committed = VECTORS / relative
        assert committed.is_file(), f"{relative} is missing: run python proto/make_vectors.py"
        assert committed.read_bytes() == (tmp_path / relative).read_bytes(), f"{relative} is stale"


@pytest.mark.parametrize("party", sorted(KEYS))
def test_the_keys_are_what_their_seeds_make(party: str) -> None:
    key = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(KEYS[party]["seed_hex"]))
    assert key.public_key().public_bytes_raw().hex() == KEYS[party]["public_key_hex"]
    spki = key.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    assert hashlib.sha256(spki).hexdigest() == KEYS[party]["key_id"]


@pytest.mark.must("SIG-1")
@pytest.mark.parametrize("name", SIGNED)
def test_each_signature_is_over_the_pae_and_reproduced_from_the_seed(name: str) -> None:
    vector = load(f"{name}/vector.json")
    payload = bytes.fromhex(vector["payload_hex"])
    data = spec_pae(vector["payload_type"], payload)
    assert data.hex() == vector["pae_hex"]
    assert pae(vector["payload_type"], payload) == data  # our code agrees with the words
    assert hashlib.sha256(data).hexdigest() == vector["pae_sha256_hex"]
    assert hashlib.sha256(payload).hexdigest() == vector["payload_sha256_hex"]
    key = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(KEYS[vector["signer"]]["seed_hex"]))
    assert key.sign(data).hex() == vector["signature_hex"]  # Ed25519 is deterministic
    public(vector["signer"]).verify(bytes.fromhex(vector["signature_hex"]), data)
    signed = common_pb2.SignedPayload.FromString(bytes.fromhex(vector["signed_payload_hex"]))
    assert signed.payload == payload
    assert signed.key_id == KEYS[vector["signer"]]["key_id"]
    assert signed.algorithm == common_pb2.SIGNATURE_ALGORITHM_ED25519


@pytest.mark.must("JRN-1")
def test_the_checkpoint_head_hash_is_the_chain_written_out() -> None:
    chain = load("checkpoint/entries.json")
    prev = bytes(32)
    for entry in chain["entries"]:
        assert bytes.fromhex(entry["prev_hash_hex"]) == prev
        hashed = spec_entry_bytes(entry)
        assert hashed.hex() == entry["hashed_bytes_hex"]
        digest = hashlib.sha256(hashed).digest()
        assert digest.hex() == entry["hash_hex"]
        ours = entry_hash(
            prev,
            entry["position"],
            entry["kind"],
            entry["time_ns"],
            entry["message_id"],
            entry["party"],
            entry["sequence"],
            bytes.fromhex(entry["body_hex"]),
        )
        assert ours == digest
        prev = digest
    assert prev.hex() == chain["head_hash_hex"]
    vector = load("checkpoint/vector.json")
    body = peer_link_pb2.CheckpointBody.FromString(bytes.fromhex(vector["payload_hex"]))
    assert (body.entry_count, body.head_hash) == (len(chain["entries"]), prev)


def _frames() -> list[peer_link_pb2.PushRequest | peer_link_pb2.PushResponse]:
    frames: list[peer_link_pb2.PushRequest | peer_link_pb2.PushResponse] = []
    text = (VECTORS / "transcript.txtpb").read_text(encoding="utf-8")
    for chunk in text.split("\n# frame ")[1:]:
        kind = chunk.split("# type: ", 1)[1].split("\n", 1)[0]
        frame = (
            peer_link_pb2.PushRequest()
            if kind.endswith("Request")
            else peer_link_pb2.PushResponse()
        )
        frames.append(text_format.Parse(chunk.split("\n", 2)[2], frame))
    return frames


def test_the_transcript_is_one_consistent_stream() -> None:
    frames = _frames()
    assert [f.WhichOneof("frame") for f in frames] == [
        "hello",
        "welcome",
        "checkpoint",
        "deliveries",
        "batch_receipt",
        "ping",
        "pong",
    ]
    hello, welcome, checkpoint, batch, receipt, ping, pong = frames
    assert isinstance(hello, peer_link_pb2.PushRequest)
    assert isinstance(welcome, peer_link_pb2.PushResponse)
    signed_welcome = welcome.welcome.welcome
    public("TW").verify(
        signed_welcome.signature, spec_pae(signed_welcome.payload_type, signed_welcome.payload)
    )
    body = peer_link_pb2.WelcomeBody.FromString(signed_welcome.payload)
    assert body.hello_nonce == hello.hello.nonce
    assert (body.sender_party, body.receiver_party) == (hello.hello.party, "TW")
    assert bytes.fromhex(KEYS["JP"]["certificate_der_hex"]) in hello.hello.signing_certificates
    for signed, party in (
        (checkpoint.checkpoint.checkpoint, "JP"),  # type: ignore[union-attr]
        (batch.deliveries.deliveries[0].envelope, "JP"),  # type: ignore[union-attr]
        (receipt.batch_receipt.receipt, "TW"),  # type: ignore[union-attr]
    ):
        public(party).verify(signed.signature, spec_pae(signed.payload_type, signed.payload))
    delivered = batch.deliveries.deliveries[0]  # type: ignore[union-attr]
    settled = peer_link_pb2.BatchReceiptBody.FromString(receipt.batch_receipt.receipt.payload)  # type: ignore[union-attr]
    assert (settled.first_sequence, settled.last_sequence) == (delivered.sequence,) * 2
    assert (
        settled.receipts[0].envelope_sha256 == hashlib.sha256(delivered.envelope.payload).digest()
    )
    assert pong.pong.origin_time == ping.ping.transmit_time


@pytest.mark.must("VAL-1", "VAL-2")
@pytest.mark.parametrize(
    "case", load("envelope_edge_cases.json")["cases"], ids=lambda case: case["name"]
)
def test_edge_case_payloads_are_refused(case: dict[str, str]) -> None:
    envelope, violations = decode_envelope(bytes.fromhex(case["payload_hex"]))
    if case["expect_field"]:
        assert envelope is not None
        assert [v.field for v in violations] == [case["expect_field"]]
    else:
        assert envelope is None
        assert "do not parse" in violations[0].description

"""The batch receipt golden vector (`proto/examples/vectors/batch_receipt/`): exact bytes, key, signature.

A second implementation checks itself against the same file: its signer must reproduce the
signature (Ed25519 is deterministic), its verifier must accept it and refuse every variant here.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from google.protobuf import text_format

from hotline.signing import PAYLOAD_TYPE_RECEIPT, pae, sha256
from hotline.v1 import peer_link_pb2

FOLDER = Path(__file__).resolve().parents[2] / "proto" / "examples" / "vectors" / "batch_receipt"
VECTOR = json.loads((FOLDER / "vector.json").read_text())
PAYLOAD = bytes.fromhex(VECTOR["payload_hex"])
SIGNATURE = bytes.fromhex(VECTOR["signature_hex"])
PUBLIC = Ed25519PublicKey.from_public_bytes(bytes.fromhex(VECTOR["public_key_hex"]))


def verifies(payload: bytes, key: Ed25519PublicKey = PUBLIC) -> bool:
    try:
        key.verify(SIGNATURE, pae(PAYLOAD_TYPE_RECEIPT, payload))
    except InvalidSignature:
        return False
    return True


def test_the_payload_is_the_body_in_the_text_file() -> None:
    text = text_format.Parse((FOLDER / "body.txtpb").read_text(), peer_link_pb2.BatchReceiptBody())
    parsed = peer_link_pb2.BatchReceiptBody.FromString(PAYLOAD)
    assert parsed == text
    assert (parsed.first_sequence, parsed.last_sequence) == (44, 46)
    settled = sorted(
        [r.sequence for r in parsed.receipts] + [r.sequence for r in parsed.rejections]
    )
    assert settled == [44, 45, 46]


@pytest.mark.must("SIG-1")
def test_the_signature_is_reproduced_exactly_from_the_seed() -> None:
    key = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(VECTOR["signing_key_seed_hex"]))
    assert key.public_key().public_bytes_raw().hex() == VECTOR["public_key_hex"]
    assert VECTOR["payload_type"] == PAYLOAD_TYPE_RECEIPT
    assert sha256(pae(PAYLOAD_TYPE_RECEIPT, PAYLOAD)).hex() == VECTOR["pae_sha256_hex"]
    assert key.sign(pae(PAYLOAD_TYPE_RECEIPT, PAYLOAD)) == SIGNATURE
    assert verifies(PAYLOAD)


def _edited(edit: str) -> bytes:
    body = peer_link_pb2.BatchReceiptBody.FromString(PAYLOAD)
    if edit == "tampered digest":
        digest = bytearray(body.receipts[0].envelope_sha256)
        digest[0] ^= 1
        body.receipts[0].envelope_sha256 = bytes(digest)
    elif edit == "reordered batch":
        first, second = (peer_link_pb2.ReceiptItem(), peer_link_pb2.ReceiptItem())
        first.CopyFrom(body.receipts[1])
        second.CopyFrom(body.receipts[0])
        del body.receipts[:]
        body.receipts.extend([first, second])
    elif edit == "another sequence range":
        body.last_sequence = 47
    return body.SerializeToString()


@pytest.mark.parametrize("edit", ["tampered digest", "reordered batch", "another sequence range"])
def test_any_change_to_the_body_breaks_the_signature(edit: str) -> None:
    changed = _edited(edit)
    assert changed != PAYLOAD
    assert not verifies(changed)


def test_a_batch_receipt_signed_by_another_key_is_refused() -> None:
    other = Ed25519PrivateKey.from_private_bytes(b"\x01" * 32).public_key()
    assert not verifies(PAYLOAD, other)

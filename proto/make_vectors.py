"""Write the test vectors of `proto/examples/vectors/`, byte for byte, from fixed test-only keys.

Usage: python proto/make_vectors.py [--out DIR]

Everything here is deterministic: the Ed25519 keys come from fixed seeds (Ed25519 signatures
are deterministic), the certificates are signed with Ed25519 by test-only CAs with fixed serial
numbers and dates, and every time is fixed. `tests/protocol/test_vectors.py` runs this into a
temporary directory and fails on any difference from the committed files, and checks each
vector independently (signatures verified, hashes recomputed). The keys are published: never
use them for anything but checking an implementation.

What is written (see `proto/spec/vectors.md`, rendered in SPEC.md, "Test vectors"):

* `keys.json`: the JP and TW signing keys (seed, public key, key id) and certificates;
* `envelope/`: a signed envelope: payload bytes, PAE bytes, signature, the `SignedPayload`;
* `batch_receipt/`: a signed batch receipt (44 and 46 receipted, 45 rejected);
* `welcome/`: a signed Welcome answering a Hello's nonce;
* `checkpoint/`: three journal entries with each one's hashed bytes and hash, and a signed
  checkpoint of them;
* `transcript.txtpb`: a short peer-link conversation, frame by frame, in text format;
* `envelope_edge_cases.json`: payloads a receiver must refuse although some protobuf runtimes
  parse them (invalid UTF-8, out-of-range timestamps).
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from cryptography.x509.oid import NameOID
from google.protobuf import text_format
from google.protobuf.message import Message

from hotline import PROTOCOL_VERSION
from hotline.journal_file import GENESIS, entry_hash
from hotline.signing import (
    PAYLOAD_TYPE_CHECKPOINT,
    PAYLOAD_TYPE_ENVELOPE,
    PAYLOAD_TYPE_RECEIPT,
    PAYLOAD_TYPE_WELCOME,
    pae,
)
from hotline.v1 import common_pb2, envelope_pb2, peer_link_pb2

PROTO_ROOT = Path(__file__).resolve().parent
EXAMPLES = PROTO_ROOT / "examples"
# The seeds: TW's is the one the batch receipt vector has always used; JP's is SHA-256 of a
# fixed text, so anyone can see it was not chosen to hide anything.
SEEDS = {
    "JP": hashlib.sha256(b"hotline test vector: JP signing key").digest(),
    "TW": bytes.fromhex("443144a7e10b0880a4233b541910dc3563f5a8b719083adf51802711db3f4bc5"),
}
CA_SEEDS = {p: hashlib.sha256(f"hotline test vector: {p} CA key".encode()).digest() for p in SEEDS}
NOT_BEFORE = datetime.datetime(2025, 1, 1, tzinfo=datetime.UTC)
NOT_AFTER = datetime.datetime(2035, 1, 1, tzinfo=datetime.UTC)
HELLO_NONCE = bytes(range(16))
JOURNAL_TIME_NS = 1_749_694_446_250_000_000  # 2025-06-12T02:14:06.25Z


def _key(seed: bytes) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(seed)


def key_id(key: Ed25519PrivateKey) -> str:
    spki = key.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(spki).hexdigest()


def signing_certificate(party: str) -> bytes:
    """A test-only signing certificate of `party` (DER), issued by its test-only CA."""
    domain = f"{party.lower()}.hotline"
    ca_key = _key(CA_SEEDS[party])
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"Hotline {party} test CA")])
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{party} signing (test)")])
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_name)
        .public_key(_key(SEEDS[party]).public_key())
        .serial_number(0x10 + sorted(SEEDS).index(party))
        .not_valid_before(NOT_BEFORE)
        .not_valid_after(NOT_AFTER)
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.UniformResourceIdentifier(f"spiffe://{domain}/signing")]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(ca_key, None)
    )
    return certificate.public_bytes(Encoding.DER)


def signed(party: str, payload_type: str, payload: bytes) -> common_pb2.SignedPayload:
    key = _key(SEEDS[party])
    return common_pb2.SignedPayload(
        payload=payload,
        payload_type=payload_type,
        signature=key.sign(pae(payload_type, payload)),
        key_id=key_id(key),
        algorithm=common_pb2.SIGNATURE_ALGORITHM_ED25519,
    )


def signature_vector(
    description: str, party: str, envelope: common_pb2.SignedPayload
) -> dict[str, Any]:
    data = pae(envelope.payload_type, envelope.payload)
    return {
        "description": description,
        "signer": party,
        "key_id": envelope.key_id,
        "payload_type": envelope.payload_type,
        "payload_hex": envelope.payload.hex(),
        "payload_sha256_hex": hashlib.sha256(envelope.payload).hexdigest(),
        "pae_hex": data.hex(),
        "pae_sha256_hex": hashlib.sha256(data).hexdigest(),
        "signature_hex": envelope.signature.hex(),
        "signed_payload_hex": envelope.SerializeToString().hex(),
    }


def text(message: Message, header: str) -> str:
    name = message.DESCRIPTOR.full_name
    proto_file = message.DESCRIPTOR.file.name
    lines = [f"# proto-file: {proto_file}", f"# proto-message: {name}", "#"]
    lines += [f"# {line}".rstrip() for line in header.split("\n")]
    return "\n".join(lines) + "\n\n" + text_format.MessageToString(message, as_utf8=True)


def dump(data: object) -> str:
    return json.dumps(data, ensure_ascii=False, indent=1) + "\n"


def build() -> dict[str, str]:
    """Every vector file: relative path -> content."""
    files: dict[str, str] = {}
    keys = {}
    for party, seed in SEEDS.items():
        key = _key(seed)
        keys[party] = {
            "spiffe_id": f"spiffe://{party.lower()}.hotline/signing",
            "seed_hex": seed.hex(),
            "public_key_hex": key.public_key().public_bytes_raw().hex(),
            "key_id": key_id(key),
            "certificate_der_hex": signing_certificate(party).hex(),
            "ca_seed_hex": CA_SEEDS[party].hex(),
        }
    files["keys.json"] = dump(
        {
            "description": "Test-only Ed25519 keys: NEVER use them for anything else. key_id "
            "is the lowercase hex SHA-256 of the public key's DER SubjectPublicKeyInfo. Each "
            "certificate is issued by a test-only Ed25519 CA (seed ca_seed_hex) with fixed "
            "dates, so its bytes are stable; real Hotline CAs use ECDSA P-256.",
            "keys": keys,
        }
    )

    # A signed envelope: the golden maritime encounter report, exactly as written.
    envelope = text_format.Parse(
        (EXAMPLES / "valid" / "maritime_encounter.txtpb").read_text(encoding="utf-8"),
        envelope_pb2.Envelope(),
    )
    signed_envelope = signed("JP", PAYLOAD_TYPE_ENVELOPE, envelope.SerializeToString())
    files["envelope/vector.json"] = dump(
        signature_vector(
            "JP signs valid/maritime_encounter.txtpb, serialized by the reference implementation. "
            "Check: PAE(payload_type, payload) is pae_hex; Ed25519 with JP's key over it is "
            "signature_hex; signed_payload_hex is the SignedPayload that travels in a Delivery.",
            "JP",
            signed_envelope,
        )
    )

    # The batch receipt: TW settles JP's batch 44..46 (its body is the committed text file).
    body_path = EXAMPLES / "vectors" / "batch_receipt" / "body.txtpb"
    receipt_body = text_format.Parse(
        body_path.read_text(encoding="utf-8"), peer_link_pb2.BatchReceiptBody()
    )
    signed_receipt = signed("TW", PAYLOAD_TYPE_RECEIPT, receipt_body.SerializeToString())
    receipt_vector = signature_vector(
        "TW's batch receipt of JP's batch 44..46, signed with TW's test key. Check: "
        "PAE(payload_type, payload) verifies with public_key under Ed25519; payload parses to "
        "body.txtpb.",
        "TW",
        signed_receipt,
    )
    receipt_vector["signing_key_seed_hex"] = SEEDS["TW"].hex()
    receipt_vector["public_key_hex"] = keys["TW"]["public_key_hex"]
    files["batch_receipt/vector.json"] = dump(receipt_vector)

    # A signed Welcome answering a Hello with HELLO_NONCE.
    welcome_body = peer_link_pb2.WelcomeBody(
        protocol_version=PROTOCOL_VERSION,
        receiver_party="TW",
        sender_party="JP",
        last_sequence=0,
        hello_nonce=HELLO_NONCE,
        lane=common_pb2.PRECEDENCE_FLASH,
    )
    welcome_body.create_time.FromNanoseconds(JOURNAL_TIME_NS - 250_000_000)
    signed_welcome = signed("TW", PAYLOAD_TYPE_WELCOME, welcome_body.SerializeToString())
    files["welcome/body.txtpb"] = text(
        welcome_body,
        "TW welcomes JP's first stream of the FLASH lane: nothing settled yet, hello_nonce "
        "echoes the Hello's.",
    )
    files["welcome/vector.json"] = dump(
        signature_vector(
            "TW signs the WelcomeBody of welcome/body.txtpb. The sender checks the signature, "
            "that hello_nonce is its Hello's nonce (000102...0f), the parties and the version.",
            "TW",
            signed_welcome,
        )
    )

    # Three journal entries of JP, their chain hashes, and a checkpoint of them.
    entries = [
        ("key", JOURNAL_TIME_NS - 2_000_000_000, "", "JP", 0, signing_certificate("JP")),
        (
            "message-out",
            JOURNAL_TIME_NS - 1_000_000_000,
            envelope.message_id,
            "JP",
            0,
            signed_envelope.SerializeToString(),
        ),
        (
            "link-up",
            JOURNAL_TIME_NS,
            "",
            "TW",
            0,
            b'{"detail":"TW resumed after sequence 0","direction":"outbound"}',
        ),
    ]
    prev = GENESIS
    chain = []
    for position, (kind, time_ns, message_id, party, sequence, body) in enumerate(entries, 1):
        preimage = _preimage(prev, position, kind, time_ns, message_id, party, sequence, body)
        digest = entry_hash(prev, position, kind, time_ns, message_id, party, sequence, body)
        assert hashlib.sha256(preimage).digest() == digest
        chain.append(
            {
                "position": position,
                "kind": kind,
                "time_ns": time_ns,
                "message_id": message_id,
                "party": party,
                "sequence": sequence,
                "body_hex": body.hex(),
                "prev_hash_hex": prev.hex(),
                "hashed_bytes_hex": preimage.hex(),
                "hash_hex": digest.hex(),
            }
        )
        prev = digest
    checkpoint_body = peer_link_pb2.CheckpointBody(
        party="JP", entry_count=len(entries), head_hash=prev
    )
    checkpoint_body.create_time.FromNanoseconds(JOURNAL_TIME_NS + 1_000_000)
    signed_checkpoint = signed("JP", PAYLOAD_TYPE_CHECKPOINT, checkpoint_body.SerializeToString())
    files["checkpoint/entries.json"] = dump(
        {
            "description": "JP's first three journal entries. hashed_bytes_hex is "
            '"hotline-journal-v1" 0x00 || prev_hash || uint64 position || int64 time_ns || '
            "uint64 sequence || uint32 len || kind || uint32 len || message_id || uint32 len || "
            "party || uint64 len || body (big-endian); hash_hex is its SHA-256. The head hash "
            "after N entries is entry N's hash (32 zero bytes for none).",
            "entries": chain,
            "head_hash_hex": prev.hex(),
        }
    )
    files["checkpoint/body.txtpb"] = text(
        checkpoint_body, "JP's checkpoint after the three entries of entries.json."
    )
    files["checkpoint/vector.json"] = dump(
        signature_vector("JP signs checkpoint/body.txtpb.", "JP", signed_checkpoint)
    )

    # A short transcript: one stream, frames in the order they travel.
    receipt_of_one = peer_link_pb2.BatchReceiptBody(
        receiver_party="TW",
        sender_party="JP",
        first_sequence=1,
        last_sequence=1,
        lane=common_pb2.PRECEDENCE_FLASH,  # the envelope's precedence
        receipts=[
            peer_link_pb2.ReceiptItem(
                sequence=1,
                message_id=envelope.message_id,
                envelope_sha256=hashlib.sha256(signed_envelope.payload).digest(),
                journal_position=7,
            )
        ],
    )
    receipt_of_one.journal_time.FromNanoseconds(JOURNAL_TIME_NS + 5_000_000)
    ping = peer_link_pb2.Ping(nonce=1)
    ping.transmit_time.FromNanoseconds(JOURNAL_TIME_NS + 6_000_000)
    pong = peer_link_pb2.Pong(nonce=1, origin_time=ping.transmit_time)
    pong.receive_time.FromNanoseconds(JOURNAL_TIME_NS + 6_400_000)
    pong.transmit_time.FromNanoseconds(JOURNAL_TIME_NS + 6_450_000)
    frames: list[tuple[str, Message]] = [
        (
            "JP -> TW: Hello (first stream of the FLASH lane: nothing settled; a fresh nonce; "
            "JP's signing certificate)",
            peer_link_pb2.PushRequest(
                hello=peer_link_pb2.Hello(
                    protocol_version=PROTOCOL_VERSION,
                    lane=common_pb2.PRECEDENCE_FLASH,
                    party="JP",
                    last_receipted_sequence=0,
                    signing_certificates=[signing_certificate("JP")],
                    nonce=HELLO_NONCE,
                )
            ),
        ),
        (
            "TW -> JP: Welcome, signed by TW over the Hello's nonce (welcome/vector.json)",
            peer_link_pb2.PushResponse(
                welcome=peer_link_pb2.Welcome(
                    signing_certificates=[signing_certificate("TW")], welcome=signed_welcome
                )
            ),
        ),
        (
            "JP -> TW: Checkpoint of JP's journal (checkpoint/vector.json)",
            peer_link_pb2.PushRequest(
                checkpoint=peer_link_pb2.Checkpoint(checkpoint=signed_checkpoint)
            ),
        ),
        (
            "JP -> TW: DeliveryBatch of one: sequence 1, the signed envelope (envelope/vector.json)",
            peer_link_pb2.PushRequest(
                deliveries=peer_link_pb2.DeliveryBatch(
                    deliveries=[peer_link_pb2.Delivery(sequence=1, envelope=signed_envelope)]
                )
            ),
        ),
        (
            "TW -> JP: BatchReceipt settling sequence 1, signed by TW, once TW's commit is durable",
            peer_link_pb2.PushResponse(
                batch_receipt=peer_link_pb2.BatchReceipt(
                    receipt=signed("TW", PAYLOAD_TYPE_RECEIPT, receipt_of_one.SerializeToString())
                )
            ),
        ),
        ("JP -> TW: Ping (t1)", peer_link_pb2.PushRequest(ping=ping)),
        ("TW -> JP: Pong (t1 echoed, t2, t3), at once", peer_link_pb2.PushResponse(pong=pong)),
    ]
    out = [
        "# A peer-link transcript: one Push stream from JP to TW (the FLASH lane's), frame by",
        "# frame, in the order they travel. Each frame is a `# frame N: <direction>: <what>` line, then a",
        "# hotline.v1.PushRequest (JP -> TW) or hotline.v1.PushResponse (TW -> JP) in text format.",
        "# Every signature is by the test keys of keys.json.",
        "",
    ]
    for number, (what, frame) in enumerate(frames, 1):
        out.append(f"# frame {number}: {what}")
        out.append(f"# type: {frame.DESCRIPTOR.full_name}")
        out.append(text_format.MessageToString(frame, as_utf8=True))
    files["transcript.txtpb"] = "\n".join(out).rstrip("\n") + "\n"

    files["envelope_edge_cases.json"] = dump(edge_cases(envelope))
    return files


def _preimage(
    prev: bytes,
    position: int,
    kind: str,
    time_ns: int,
    message_id: str,
    party: str,
    sequence: int,
    body: bytes,
) -> bytes:
    """The bytes `entry_hash` hashes, written out as the spec defines them."""
    out = bytearray(b"hotline-journal-v1\x00")
    out += prev
    out += position.to_bytes(8, "big") + time_ns.to_bytes(8, "big", signed=True)
    out += sequence.to_bytes(8, "big")
    for field in (kind, message_id, party):
        raw = field.encode("utf-8")
        out += len(raw).to_bytes(4, "big") + raw
    out += len(body).to_bytes(8, "big") + body
    return bytes(out)


def edge_cases(envelope: envelope_pb2.Envelope) -> dict[str, Any]:
    """Envelope payloads a receiver must refuse, although a lenient runtime may parse them."""
    cases = []
    base = envelope.SerializeToString()
    message_id = envelope.message_id.encode()

    def with_id(raw: bytes) -> bytes:
        assert len(raw) == len(message_id)
        return base.replace(message_id, raw, 1)

    for name, raw in (
        ("message_id with the byte 0xff (never valid UTF-8)", b"\xff" + message_id[1:]),
        ("message_id with an overlong encoding of '/' (C0 AF)", b"\xc0\xaf" + message_id[2:]),
        (
            "message_id with an encoded surrogate U+D800 (ED A0 80)",
            b"\xed\xa0\x80" + message_id[3:],
        ),
    ):
        cases.append(
            {
                "name": name,
                "payload_hex": with_id(raw).hex(),
                "expect": "does not parse (REJECTION_REASON_INVALID_MESSAGE, check 2)",
                "expect_field": "",
            }
        )
    for name, seconds, nanos in (
        ("create_time nanos 1000000000", envelope.create_time.seconds, 1_000_000_000),
        ("create_time nanos -1", envelope.create_time.seconds, -1),
        ("create_time after 9999-12-31T23:59:59Z", 253_402_300_800, 0),
        ("create_time before 0001-01-01T00:00:00Z", -62_135_596_801, 0),
    ):
        bad = envelope_pb2.Envelope()
        bad.CopyFrom(envelope)
        bad.create_time.seconds, bad.create_time.nanos = seconds, nanos
        bad.ClearField("expire_time")
        cases.append(
            {
                "name": name,
                "payload_hex": bad.SerializeToString().hex(),
                "expect": "parses; violates (REJECTION_REASON_INVALID_MESSAGE, check 4)",
                "expect_field": "create_time",
            }
        )
    return {
        "description": "Payloads derived from valid/maritime_encounter.txtpb that a receiver "
        "must refuse. 'does not parse': the bytes are not a valid Envelope (a string field "
        "holds invalid UTF-8), whatever a runtime accepts. 'violates': the envelope parses, "
        "and a constraint of expect_field is broken.",
        "cases": cases,
    }


def write(out: Path) -> None:
    for relative, content in build().items():
        path = out / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content, encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=EXAMPLES / "vectors")
    args = parser.parse_args(argv)
    write(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

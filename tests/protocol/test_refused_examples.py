"""The `refused/` golden examples, and the order of the receiver's checks.

Each example breaks no static constraint (the validator finds nothing) but is refused by a rule
that needs the link's parties: checks 5 (who may originate) and 6 (releasability) of
"Processing a delivery". Signed with the sending party's real signing key and run through
`hotline.acceptance.check_delivery`, the receiver's pure acceptance function, each gets exactly
the reason its `# expect-rejection:` line names; and the valid examples are all accepted.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from google.protobuf import text_format

from certs.pki import PartyPaths, init_pki, load_certificate, load_signing_key
from hotline import lifecycle, link
from hotline.acceptance import Acceptance, check_delivery
from hotline.signing import PAYLOAD_TYPE_ENVELOPE, KeyRing, Signer, sha256
from hotline.v1 import common_pb2, envelope_pb2
from hotline.validation import validate_envelope

EXAMPLES = Path(__file__).resolve().parents[2] / "proto" / "examples"
REFUSED = sorted((EXAMPLES / "refused").glob("*.txtpb"))
VALID = sorted((EXAMPLES / "valid").glob("*.txtpb"))


def load(path: Path) -> envelope_pb2.Envelope:
    return text_format.Parse(path.read_text(encoding="utf-8"), envelope_pb2.Envelope())


def header(path: Path, key: str) -> str:
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith(f"# {key}: "):
            return line.removeprefix(f"# {key}: ").strip()
    raise AssertionError(f"{path.name} has no '# {key}:' line")


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("pki")
    init_pki(directory, ("JP", "TW"), ("watch-1",))
    return directory


@pytest.fixture(scope="module")
def keyring(pki: Path) -> KeyRing:
    cas = [load_certificate(PartyPaths.of(pki, p).ca_cert) for p in ("JP", "TW")]
    ring = KeyRing(cas)
    for party in ("JP", "TW"):
        ring.add_certificate(load_certificate(PartyPaths.of(pki, party).signing_cert))
    return ring


def verdict(pki: Path, keyring: KeyRing, envelope: envelope_pb2.Envelope, link_text: str) -> object:
    sender, receiver = (p.strip() for p in link_text.split("->"))
    paths = PartyPaths.of(pki, sender)
    signer = Signer.from_certificate(
        load_signing_key(paths.signing_key), load_certificate(paths.signing_cert)
    )
    signed = signer.sign(PAYLOAD_TYPE_ENVELOPE, envelope.SerializeToString())
    delivery = link.Delivery(2, "", sha256(signed.payload), signed, len(signed.payload))
    # An UPDATE or CANCEL refers to an earlier message of the sender's, of its body type,
    # which the receiver holds (check 7): as if delivered just before.
    earlier = lifecycle.Standing(
        sender, envelope.WhichOneof("body") or "", common_pb2.ACTION_NEW, ""
    )
    reference = lifecycle.reference_of(envelope)

    def seen(message_id: str) -> link.Seen | None:
        return link.Seen(1, b"\0" * 32, earlier) if message_id == reference else None

    return check_delivery(
        delivery, seen, keyring=keyring, sender_party=sender, receiver_party=receiver
    )


def test_there_are_refused_examples_for_both_checks() -> None:
    reasons = {header(p, "expect-rejection") for p in REFUSED}
    assert reasons == {"REJECTION_REASON_WRONG_PARTY", "REJECTION_REASON_NOT_RELEASABLE"}


@pytest.mark.must("ID-4", "LINK-14")
@pytest.mark.parametrize("path", REFUSED, ids=lambda p: p.stem)
def test_a_refused_example_is_statically_valid_and_refused_for_its_reason(
    path: Path, pki: Path, keyring: KeyRing
) -> None:
    envelope = load(path)
    assert validate_envelope(envelope) == []
    result = verdict(pki, keyring, envelope, header(path, "link"))
    assert isinstance(result, link.RejectionItem), result
    assert f"REJECTION_REASON_{result.reason.name}" == header(path, "expect-rejection")
    assert result.message_id == envelope.message_id


@pytest.mark.must("ID-4")
@pytest.mark.parametrize("path", VALID, ids=lambda p: p.stem)
def test_every_valid_example_passes_every_check(path: Path, pki: Path, keyring: KeyRing) -> None:
    envelope = load(path)
    result = verdict(
        pki, keyring, envelope, f"{envelope.sender_party} -> {envelope.recipient_party}"
    )
    assert isinstance(result, link.Accepted), result


@pytest.mark.must("LINK-14")
def test_the_first_failing_check_decides(pki: Path, keyring: KeyRing) -> None:
    """An envelope that breaks a constraint (check 4) *and* is not releasable to the receiver
    (check 6) *and* names an originator of the other party (check 5) is refused for check 4."""
    envelope = load(EXAMPLES / "valid" / "free_text.txtpb")
    envelope.language = "EN"  # check 4: the pattern wants lower case
    envelope.originator = "spiffe://tw.hotline/operator/watch-1"  # check 5
    del envelope.handling.releasable_to[:]
    envelope.handling.releasable_to.extend(["JP", "US"])  # check 6
    result = verdict(pki, keyring, envelope, "JP -> TW")
    assert isinstance(result, link.RejectionItem)
    assert result.reason is link.RejectReason.INVALID_MESSAGE
    assert [field for field, _ in result.violations] == ["language"]
    envelope.language = "en"
    result = verdict(pki, keyring, envelope, "JP -> TW")
    assert isinstance(result, link.RejectionItem)
    assert result.reason is link.RejectReason.WRONG_PARTY


@pytest.mark.must("LINK-14")
def test_a_message_on_another_precedences_lane_is_refused_last(pki: Path, keyring: KeyRing) -> None:
    """Check 8: a ROUTINE message on the FLASH lane is INVALID_MESSAGE naming `precedence`;
    on its own lane it passes; a duplicate on the wrong lane is still a duplicate (check 3
    decides first)."""
    envelope = load(EXAMPLES / "valid" / "free_text.txtpb")
    envelope.precedence = common_pb2.PRECEDENCE_ROUTINE
    signer = Signer.from_certificate(
        load_signing_key(PartyPaths.of(pki, "JP").signing_key),
        load_certificate(PartyPaths.of(pki, "JP").signing_cert),
    )
    signed = signer.sign(PAYLOAD_TYPE_ENVELOPE, envelope.SerializeToString())
    delivery = link.Delivery(1, "", sha256(signed.payload), signed, len(signed.payload))

    def check(lane: int, seen: link.Seen | None = None) -> object:
        return check_delivery(
            delivery,
            lambda message_id: seen,
            keyring=keyring,
            sender_party="JP",
            receiver_party="TW",
            lane=lane,
        )

    wrong = check(common_pb2.PRECEDENCE_FLASH)
    assert isinstance(wrong, link.RejectionItem)
    assert wrong.reason is link.RejectReason.INVALID_MESSAGE
    assert [field for field, _ in wrong.violations] == ["precedence"]
    assert "PRECEDENCE_ROUTINE message arrived on the lane of PRECEDENCE_FLASH" in wrong.detail
    right = check(common_pb2.PRECEDENCE_ROUTINE)
    assert isinstance(right, link.Accepted)
    assert right.index[0][1].lane == common_pb2.PRECEDENCE_ROUTINE
    twice = check(common_pb2.PRECEDENCE_FLASH, link.Seen(3, b"", lane=4))
    assert isinstance(twice, link.RejectionItem)
    assert twice.reason is link.RejectReason.DUPLICATE_MESSAGE_ID
    assert "of lane 4" in twice.detail


@pytest.mark.parametrize("path", [*VALID, *REFUSED], ids=lambda p: p.stem)
def test_checks_run_ahead_decide_as_the_checks_in_one_go(
    path: Path, pki: Path, keyring: KeyRing
) -> None:
    """What a receiver inspects ahead (between other lanes' work) and decides later is the
    verdict `check_delivery` gives at once."""
    envelope = load(path)
    text = header(path, "link") if path in REFUSED else None
    sender, receiver = (
        (p.strip() for p in text.split("->"))
        if text
        else (envelope.sender_party, envelope.recipient_party)
    )
    paths = PartyPaths.of(pki, sender)
    signer = Signer.from_certificate(
        load_signing_key(paths.signing_key), load_certificate(paths.signing_cert)
    )
    signed = signer.sign(PAYLOAD_TYPE_ENVELOPE, envelope.SerializeToString())
    delivery = link.Delivery(5, "", sha256(signed.payload), signed, len(signed.payload))
    acceptance = Acceptance(keyring, sender_party=sender, receiver_party=receiver)
    acceptance.inspect_ahead(delivery)
    ahead = acceptance(delivery, lambda message_id: None)
    at_once = check_delivery(
        delivery,
        lambda message_id: None,
        keyring=keyring,
        sender_party=sender,
        receiver_party=receiver,
    )
    assert ahead == at_once
    assert acceptance._ahead == {}  # used once, then forgotten

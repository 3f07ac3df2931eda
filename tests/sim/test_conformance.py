"""The conformance suite itself: its checks fail when a target breaks the spec, it says clearly
when it cannot run, and its registry keeps each check tied to a SPEC.md section.

The broken targets are real gRPC PeerLink servers on 127.0.0.1, with the TW gateway's real mTLS
certificate and TW's real signing key, that get one thing wrong on purpose.
"""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from certs.pki import PartyPaths, load_certificate, load_signing_key
from hotline import cli, link, must_index, wire
from hotline.signing import Signer, sha256
from hotline.transport import read
from hotline.v1 import peer_link_pb2, peer_link_pb2_grpc
from hotline.validation import validate_envelope
from sim.conformance import checks as _checks  # noqa: F401  (registers the checks)
from sim.conformance import registry
from sim.conformance.examples import Adapter, load_examples, load_refused
from sim.conformance.registry import REGISTRY, Role, Status
from sim.conformance.suite import run_suite
from tests.harness import free_port, make_pki

SPEC = Path(__file__).resolve().parents[2] / "proto" / "SPEC.md"


class BrokenPeerLink(peer_link_pb2_grpc.PeerLinkServiceServicer):
    """A TW PeerLink that answers JP with one defect, named by `mode`:

    unsigned-welcome   the Welcome carries no signature
    replayed-welcome   the Welcome is signed over another nonce than the Hello's
    never-receipts     a good Welcome, then silence: no batch receipt, ever; nothing refused
    bad-digest         batch receipts that receipt everything, each with a wrong digest
    """

    def __init__(self, pki: Path, mode: str) -> None:
        paths = PartyPaths.of(pki, "TW")
        self.signer = Signer.from_certificate(
            load_signing_key(paths.signing_key), load_certificate(paths.signing_cert)
        )
        self.mode = mode

    async def Push(
        self, request_iterator: AsyncIterator[peer_link_pb2.PushRequest], context: Any
    ) -> AsyncIterator[peer_link_pb2.PushResponse]:
        lane = link.ROUTINE_LANE
        async for request in request_iterator:
            which = request.WhichOneof("frame")
            if which == "hello":
                nonce = bytes(request.hello.nonce)
                lane = request.hello.lane
                if self.mode == "replayed-welcome":
                    nonce = bytes(len(nonce))
                welcome = wire.welcome_to_wire(
                    link.Welcome("TW", "JP", 0, nonce, lane=lane),
                    self.signer,
                    [self.signer.certificate_der],
                    time.time_ns(),
                )
                if self.mode == "unsigned-welcome":
                    welcome.ClearField("welcome")
                yield peer_link_pb2.PushResponse(welcome=welcome)
            elif which == "deliveries" and self.mode == "bad-digest":
                batch = request.deliveries
                items = tuple(
                    link.ReceiptItem(d.sequence, "", sha256(b"not the payload"), 1)
                    for d in batch.deliveries
                )
                receipt = wire.sign_batch_receipt(
                    self.signer,
                    sender_party="JP",
                    first_sequence=batch.deliveries[0].sequence,
                    last_sequence=batch.deliveries[-1].sequence,
                    receipts=items,
                    rejections=(),
                    journal_time_ns=time.time_ns(),
                    lane=lane,
                )
                yield peer_link_pb2.PushResponse(batch_receipt=wire.batch_receipt_to_wire(receipt))


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_pki(tmp_path_factory.mktemp("conformance") / "pki")


async def broken_target(pki: Path, mode: str) -> tuple[grpc.aio.Server, str]:
    paths = PartyPaths.of(pki, "TW")
    server = grpc.aio.server()
    peer_link_pb2_grpc.add_PeerLinkServiceServicer_to_server(BrokenPeerLink(pki, mode), server)
    creds = grpc.ssl_server_credentials(
        [(read(paths.gateway_key, "key"), read(paths.gateway_cert, "cert"))],
        root_certificates=read(paths.bundle, "bundle"),
        require_client_auth=True,
    )
    port = server.add_secure_port("127.0.0.1:0", creds)
    await server.start()
    return server, f"127.0.0.1:{port}"


async def verdicts(pki: Path, mode: str, only: list[str]) -> dict[str, tuple[Status, str]]:
    server, address = await broken_target(pki, mode)
    try:
        results, parties = await run_suite(
            Role.PEER, target=address, pki=pki, only=only, timeout=1.5
        )
    finally:
        await server.stop(0)
    assert parties == {"target": "TW", "suite": "JP"}
    return {r.check.id: (r.status, r.detail) for r in results}


async def test_an_unsigned_welcome_fails_the_welcome_check(pki: Path) -> None:
    found = await verdicts(pki, "unsigned-welcome", ["peer.tls", "peer.hello.welcome"])
    assert found["peer.tls.identity"][0] is Status.PASS  # the right certificate, though
    status, detail = found["peer.hello.welcome"]
    assert status is Status.FAIL
    assert "not signed" in detail


async def test_a_welcome_over_another_nonce_fails_as_a_replay(pki: Path) -> None:
    found = await verdicts(pki, "replayed-welcome", ["peer.hello.welcome"])
    status, detail = found["peer.hello.welcome"]
    assert status is Status.FAIL
    assert "another nonce" in detail


async def test_a_target_that_never_receipts_fails_the_delivery_and_stream_checks(
    pki: Path,
) -> None:
    found = await verdicts(
        pki,
        "never-receipts",
        [
            "peer.hello.welcome",
            "peer.deliver.valid",
            "peer.stream.hello-version",
            "peer.batch-receipt",
        ],
    )
    assert found["peer.hello.welcome"][0] is Status.PASS
    status, detail = found["peer.deliver.valid-examples"]
    assert status is Status.FAIL
    assert "a batch receipt for sequences" in detail
    assert "did not come within" in detail
    status, detail = found["peer.stream.hello-version"]
    assert status is Status.FAIL  # it welcomes version 999 instead of ending the stream
    assert "FAILED_PRECONDITION" in detail
    assert found["peer.batch-receipt.verified"][0] is Status.SKIP  # nothing to verify


async def test_batch_receipts_with_wrong_digests_fail_verification(pki: Path) -> None:
    found = await verdicts(pki, "bad-digest", ["peer.reject.bad-signature", "peer.batch-receipt"])
    status, detail = found["peer.reject.bad-signature"]
    assert status is Status.FAIL
    assert "envelope_sha256 is not the payload's" in detail
    status, detail = found["peer.batch-receipt.verified"]
    assert status is Status.FAIL
    assert "envelope_sha256" in detail


def test_an_unreachable_target_is_a_clear_error(
    pki: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    address = f"127.0.0.1:{free_port()}"
    code = cli.main(["conformance", "--target", address, "--pki", str(pki), "--role", "peer"])
    assert code == 2
    assert f"cannot reach the target at {address}" in capsys.readouterr().err


def test_a_directory_that_is_no_pki_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = cli.main(
        ["conformance", "--target", "127.0.0.1:1", "--pki", str(tmp_path), "--role", "operator"]
    )
    assert code == 2
    assert "is not a Hotline PKI directory" in capsys.readouterr().err


def test_every_check_names_a_section_of_the_spec() -> None:
    headings = {
        re.sub(r"^[0-9.]+\s+", "", line.lstrip("#").strip()).replace("`", "")
        for line in SPEC.read_text(encoding="utf-8").splitlines()
        if line.startswith("#")
    }
    for c in REGISTRY.values():
        section = c.spec.split(": ")[-1].replace("`", "")
        assert section in headings, f"{c.id}: {c.spec!r} is no heading of SPEC.md"
        assert c.title
        assert c.musts, f"{c.id} names no MUST"


def test_every_mapped_must_id_is_in_the_spec_index() -> None:
    known = {m.id for m in must_index.load()}
    mapped = {i for ids in registry.MUST_IDS.values() for i in ids}
    assert mapped <= known, f"not MUST ids of the spec: {sorted(mapped - known)}"
    assert len(mapped) >= 25
    assert set(registry.MUST_IDS) <= {k for c in REGISTRY.values() for k in c.musts}


def test_mapping_a_must_key_to_a_spec_id_is_one_table_entry(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    c = REGISTRY["peer.hello.welcome"]
    key = c.musts[1]
    monkeypatch.delitem(registry.MUST_IDS, key, raising=False)
    assert key in registry.must_ids(c)
    monkeypatch.setitem(registry.MUST_IDS, key, ("LINK-7",))
    assert "LINK-7" in registry.must_ids(c)
    assert key not in registry.must_ids(c)
    assert "LINK-7" in registry.covered_must_ids()


@pytest.mark.parametrize(("sender", "recipient"), [("JP", "TW"), ("TW", "JP"), ("AB", "CD")])
def test_adapted_examples_keep_their_verdicts_between_any_two_parties(
    sender: str, recipient: str
) -> None:
    valid, invalid = load_examples()
    adapter = Adapter(sender, recipient)
    adapter.reserve(valid)
    ids = set()
    for example in valid:
        envelope = adapter.adapt(example)
        assert validate_envelope(envelope) == [], example.name
        assert (envelope.sender_party, envelope.recipient_party) == (sender, recipient)
        assert abs(envelope.create_time.seconds - time.time()) < 60
        ids.add(envelope.message_id)
    for example in invalid:
        envelope = adapter.adapt(example)
        paths = sorted(v.field for v in validate_envelope(envelope))
        assert paths == example.paths, example.name
        ids.add(envelope.message_id)
    assert len(ids) >= len(valid) + len(invalid) - 3  # fresh ids, but for the malformed ones
    for example in load_refused():  # they break an acceptance check, never a constraint
        assert validate_envelope(adapter.adapt(example)) == [], example.name
        assert example.rejection

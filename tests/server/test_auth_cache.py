"""The hot-path caches: per certificate in the authorizer, per signing key in the key ring.

Each is checked for what it saves (the PEM is parsed and verified once, a revocation list is
asked once per certificate or key) and for what it must never do: answer from before the
revocation lists (or the trust bundle) changed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography import x509

from certs.pki import (
    PartyPaths,
    init_pki,
    load_certificate,
    load_party_revocations,
    load_signing_key,
    revoke,
)
from certs.revocation import RevocationSet
from certs.verify import verify_identity
from hotline.errors import SignatureError
from hotline.signing import PAYLOAD_TYPE_ENVELOPE, KeyRing, Signer
from server.auth import REVERIFY_S, AuthError, Authorizer

GET_STATUS = "/hotline.v1.OperatorService/GetLinkStatus"
PUSH = "/hotline.v1.PeerLinkService/Push"


class CountingSet(RevocationSet):
    """A RevocationSet that counts how often it is asked."""

    def __init__(self, other: RevocationSet) -> None:
        super().__init__(other.lists)
        self.asked = 0

    def is_revoked(self, cert: x509.Certificate) -> bool:
        self.asked += 1
        return super().is_revoked(cert)


class Revocations:
    """Both states of the JP lists: before and after revoking watch-2 and the JP signing key."""

    def __init__(self, pki: Path) -> None:
        self.pki = pki
        self.paths = PartyPaths.of(pki, "JP")
        self.clean = load_party_revocations(self.paths)
        revoke(pki, "JP", self.paths.operator_cert("watch-2"), reason="key_compromise")
        revoke(pki, "JP", self.paths.signing_cert)
        self.revoked = load_party_revocations(self.paths)

    def fresh(self, which: str) -> CountingSet:
        return CountingSet(self.clean if which == "clean" else self.revoked)


@pytest.fixture(scope="module")
def lists(tmp_path_factory: pytest.TempPathFactory) -> Revocations:
    pki = tmp_path_factory.mktemp("cache") / "pki"
    init_pki(pki, ("JP", "TW"), ("watch-1", "watch-2"))
    return Revocations(pki)


def cas(lists: Revocations) -> list[x509.Certificate]:
    return [load_certificate(lists.paths.ca_cert), load_certificate(lists.paths.peer_ca_cert)]


def pem(lists: Revocations, name: str) -> bytes:
    return lists.paths.operator_cert(name).read_bytes()


def refusal(call: Any) -> AuthError:
    with pytest.raises(AuthError) as caught:
        call()
    return caught.value


# ------------------------------------------------------------------------------ the authorizer


def test_a_certificate_is_parsed_and_verified_once_and_asked_about_once(
    lists: Revocations, monkeypatch: pytest.MonkeyPatch
) -> None:
    verified: list[x509.Certificate] = []

    def counting(leaf: x509.Certificate, trusted: Any) -> Any:
        verified.append(leaf)
        return verify_identity(leaf, trusted)

    monkeypatch.setattr("server.auth.verify_identity", counting)
    revocations = lists.fresh("clean")
    authorizer = Authorizer("JP", "TW", cas(lists), revocations)
    watch1 = pem(lists, "watch-1")
    first = authorizer.check(watch1, GET_STATUS)
    for _ in range(100):
        assert authorizer.check(bytes(watch1), GET_STATUS) is first  # equal bytes, new object
    assert str(first.identity) == "spiffe://jp.hotline/operator/watch-1"
    assert len(verified) == 1
    assert revocations.asked == 1


def test_new_revocation_lists_take_effect_at_the_next_call(lists: Revocations) -> None:
    authorizer = Authorizer("JP", "TW", cas(lists), lists.fresh("clean"))
    watch2 = pem(lists, "watch-2")
    for _ in range(3):
        authorizer.check(watch2, GET_STATUS)  # admitted, and cached as not revoked
    revoked = lists.fresh("revoked")
    authorizer.update(revocations=revoked)
    error = refusal(lambda: authorizer.check(watch2, GET_STATUS))
    assert error.code is grpc.StatusCode.UNAUTHENTICATED
    assert "certificate spiffe://jp.hotline/operator/watch-2 (serial" in error.reason
    assert "has been revoked" in error.reason
    assert error.who == "spiffe://jp.hotline/operator/watch-2"
    refusal(lambda: authorizer.check(watch2, GET_STATUS))
    assert revoked.asked == 1  # the refusal is cached too, until the lists change again
    authorizer.check(pem(lists, "watch-1"), GET_STATUS)  # others are not revoked
    # A list without the entry (a revocation withdrawn, say) is believed at once as well.
    authorizer.update(revocations=lists.fresh("clean"))
    authorizer.check(watch2, GET_STATUS)


def test_a_new_trust_bundle_empties_the_cache(lists: Revocations) -> None:
    authorizer = Authorizer("JP", "TW", cas(lists), lists.clean)
    watch1 = pem(lists, "watch-1")
    authorizer.check(watch1, GET_STATUS)
    authorizer.update(cas=[load_certificate(lists.paths.peer_ca_cert)])  # the JP CA is gone
    error = refusal(lambda: authorizer.check(watch1, GET_STATUS))
    assert error.code is grpc.StatusCode.UNAUTHENTICATED


def test_a_chain_is_verified_again_after_reverify_s(lists: Revocations) -> None:
    now = [1000.0]
    authorizer = Authorizer("JP", "TW", cas(lists), lists.clean, clock=lambda: now[0])
    watch1 = pem(lists, "watch-1")
    first = authorizer.check(watch1, GET_STATUS)
    now[0] += REVERIFY_S - 1
    assert authorizer.check(watch1, GET_STATUS) is first
    now[0] += 2
    assert authorizer.check(watch1, GET_STATUS) is not first


def test_authorization_is_remembered_per_method_and_still_refuses(lists: Revocations) -> None:
    authorizer = Authorizer("JP", "TW", cas(lists), lists.clean)
    watch1 = pem(lists, "watch-1")
    for _ in range(2):
        error = refusal(lambda: authorizer.check(watch1, PUSH))
        assert error.code is grpc.StatusCode.PERMISSION_DENIED
        assert "spiffe://jp.hotline/operator/watch-1 may not call PeerLinkService" in error.reason
        assert error.who == "spiffe://jp.hotline/operator/watch-1"
    authorizer.check(watch1, GET_STATUS)
    entry = authorizer.presented(watch1)
    assert set(entry.allowed) == {PUSH, GET_STATUS}


def test_a_generation_is_counted_for_open_streams(lists: Revocations) -> None:
    authorizer = Authorizer("JP", "TW", cas(lists), lists.clean)
    authorizer.update(revocations=lists.revoked)
    authorizer.update(cas=cas(lists))
    assert authorizer.generation == 2


# ------------------------------------------------------------------------------ the key ring


def signed_by_jp(lists: Revocations) -> Any:
    signer = Signer.from_certificate(
        load_signing_key(lists.paths.signing_key), load_certificate(lists.paths.signing_cert)
    )
    return signer.sign(PAYLOAD_TYPE_ENVELOPE, b"an envelope")


def test_the_key_ring_asks_the_lists_once_per_key_until_they_change(lists: Revocations) -> None:
    clean = lists.fresh("clean")
    ring = KeyRing(cas(lists), revocations=clean)
    ring.add_certificate(load_certificate(lists.paths.signing_cert))
    asked_on_add = clean.asked
    signed = signed_by_jp(lists)
    for _ in range(50):
        assert ring.verify(signed, payload_type=PAYLOAD_TYPE_ENVELOPE, party="JP") == b"an envelope"
    assert clean.asked == asked_on_add + 1
    # The signing certificate is revoked: the very next verify refuses.
    revoked = lists.fresh("revoked")
    ring.set_revocations(revoked)
    for _ in range(3):
        with pytest.raises(SignatureError, match="whose certificate has been revoked"):
            ring.verify(signed, payload_type=PAYLOAD_TYPE_ENVELOPE, party="JP")
    assert revoked.asked == 1
    ring.set_revocations(lists.fresh("clean"))
    assert ring.verify(signed, payload_type=PAYLOAD_TYPE_ENVELOPE, party="JP") == b"an envelope"


def test_a_key_added_again_is_checked_again(lists: Revocations) -> None:
    revocations = lists.fresh("clean")
    ring = KeyRing(cas(lists), revocations=revocations)
    certificate = load_certificate(lists.paths.signing_cert)
    ring.add_certificate(certificate)
    signed = signed_by_jp(lists)
    ring.verify(signed, payload_type=PAYLOAD_TYPE_ENVELOPE, party="JP")
    asked = revocations.asked
    ring.add_certificate(load_certificate(lists.paths.signing_cert))  # a new TrustedKey object
    ring.verify(signed, payload_type=PAYLOAD_TYPE_ENVELOPE, party="JP")
    assert revocations.asked == asked + 2  # once on adding, once on the first verify after

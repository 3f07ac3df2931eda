"""The national PKI: layout, certificate profiles, identity binding, revocation and rotation."""

from __future__ import annotations

import hashlib
import ipaddress
import json
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from certs import (
    CertsError,
    Identity,
    IdentityError,
    PartyPaths,
    PkiLayout,
    RevocationList,
    RevocationSet,
    RevokedError,
    Role,
    ca_party,
    describe,
    fingerprint,
    identity_of,
    init_pki,
    issue_gateway,
    issue_operator,
    key_matches,
    load_certificate,
    load_key_pair,
    load_party_revocations,
    load_private_key,
    load_revocations,
    load_signing_key,
    parse_spiffe_id,
    public_key_id,
    refresh_crl,
    revoke,
    rotate_gateway,
    verify_chain,
    verify_identity,
)
from certs.pki import DOCUMENT_SIGNING

# ---------------------------------------------------------------------------------------------
# Fixtures and helpers


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PkiLayout:
    """One PKI shared by the read-only tests of this module."""
    return init_pki(tmp_path_factory.mktemp("pki"), operators=("watch-1", "watch-2"))


@pytest.fixture
def fresh(tmp_path: Path) -> PkiLayout:
    """A PKI of its own, for tests that revoke, rotate or reissue."""
    return init_pki(tmp_path / "pki")


def ca_of(layout: PkiLayout, party: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    paths = layout.party(party)
    key = load_private_key(paths.ca_key)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return load_certificate(paths.ca_cert), key


def make_leaf(
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    uris: list[str],
    *,
    not_before: datetime | None = None,
    not_after: datetime | None = None,
    serial: int | None = None,
    is_ca: bool = False,
    dns: tuple[str, ...] = ("localhost",),
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A hand-made leaf, for certificates `certs` itself would never issue."""
    key = ec.generate_private_key(ec.SECP256R1())
    start = not_before or datetime.now(UTC) - timedelta(hours=1)
    names: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
    names += [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    names += [x509.UniformResourceIdentifier(u) for u in uris]
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "rogue")]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(serial or x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(not_after or start + timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=is_ca, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
    )
    return builder.sign(ca_key, hashes.SHA256()), key


def san(cert: x509.Certificate) -> x509.SubjectAlternativeName:
    return cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value


def eku(cert: x509.Certificate) -> list[x509.ObjectIdentifier]:
    return list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)


def key_usage(cert: x509.Certificate) -> x509.KeyUsage:
    return cert.extensions.get_extension_for_class(x509.KeyUsage).value


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# ---------------------------------------------------------------------------------------------
# Layout and files


def test_init_writes_exactly_the_documented_layout(pki: PkiLayout) -> None:
    found = {str(p.relative_to(pki.directory)) for p in pki.directory.rglob("*") if p.is_file()}
    expected = {"pki.json"}
    for party in ("jp", "tw"):
        expected |= {
            f"{party}/{name}"
            for name in (
                "ca.crt",
                "ca.key",
                "gateway.crt",
                "gateway.key",
                "signing.crt",
                "signing.key",
                "crl.pem",
                "peer-ca.crt",
                "peer-crl.pem",
                "bundle.pem",
                "operators/watch-1.crt",
                "operators/watch-1.key",
                "operators/watch-2.crt",
                "operators/watch-2.key",
            )
        }
    assert found == expected


def test_party_paths_name_the_layout(pki: PkiLayout) -> None:
    jp = PartyPaths.of(pki.directory, "JP")
    assert jp == pki.party("JP")
    assert jp.gateway_cert == pki.directory / "jp" / "gateway.crt"
    assert jp.operator_key("watch-1") == pki.directory / "jp" / "operators" / "watch-1.key"
    assert jp.bundle.name == "bundle.pem"
    assert jp.peer_ca_cert.name == "peer-ca.crt"
    assert jp.crl.name == "crl.pem"
    assert pki.peer_of("JP") == "TW"
    assert pki.peer("TW") == PartyPaths.of(pki.directory, "JP")


def test_private_keys_are_0600_and_everything_else_0644(pki: PkiLayout) -> None:
    for path in pki.directory.rglob("*"):
        if path.is_file():
            assert mode(path) == (0o600 if path.suffix == ".key" else 0o644), path


def test_manifest_records_parties_and_operators(pki: PkiLayout) -> None:
    data = json.loads(pki.manifest.read_text())
    assert data["parties"] == ["JP", "TW"]
    assert data["operators"] == {"JP": ["watch-1", "watch-2"], "TW": ["watch-1", "watch-2"]}
    datetime.fromisoformat(data["created"])
    assert PkiLayout.load(pki.directory).parties == ("JP", "TW")


def test_init_refuses_to_overwrite_without_force(fresh: PkiLayout) -> None:
    before = fresh.party("JP").ca_cert.read_bytes()
    with pytest.raises(CertsError, match="--force") as caught:
        init_pki(fresh.directory)
    assert str(fresh.party("JP").ca_cert) in str(caught.value)
    assert fresh.party("JP").ca_cert.read_bytes() == before
    init_pki(fresh.directory, force=True)
    assert fresh.party("JP").ca_cert.read_bytes() != before


@pytest.mark.parametrize(
    "parties",
    [("JP",), ("JP", "JP"), ("jp", "TW"), ("JP", "TW", "KR"), ("J", "TW"), ("JAPANESE1", "TW")],
)
def test_init_requires_two_distinct_valid_parties(tmp_path: Path, parties: tuple[str, ...]) -> None:
    with pytest.raises(CertsError):
        init_pki(tmp_path, parties)
    assert not (tmp_path / "pki.json").exists()


def test_init_supports_any_bilateral_pair(tmp_path: Path) -> None:
    layout = init_pki(tmp_path, ("KR", "US"), ())
    gateway = load_certificate(layout.party("US").gateway_cert)
    assert identity_of(gateway) == Identity.gateway("US")
    verify_chain(gateway, load_certificate(layout.party("US").ca_cert))


def test_bundle_holds_own_then_peer_ca(pki: PkiLayout) -> None:
    jp, tw = pki.party("JP"), pki.party("TW")
    assert jp.bundle.read_bytes() == jp.ca_cert.read_bytes() + tw.ca_cert.read_bytes()
    assert jp.peer_ca_cert.read_bytes() == tw.ca_cert.read_bytes()
    assert tw.peer_ca_cert.read_bytes() == jp.ca_cert.read_bytes()
    assert jp.peer_crl.read_bytes() == tw.crl.read_bytes()


def test_load_errors_name_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "nothing.crt"
    with pytest.raises(CertsError, match=r"nothing\.crt does not exist"):
        load_certificate(missing)
    garbled = tmp_path / "garbled.crt"
    garbled.write_text("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    with pytest.raises(CertsError, match=r"garbled\.crt"):
        load_certificate(garbled)
    with pytest.raises(CertsError, match=r"garbled\.crt"):
        load_private_key(garbled)


# ---------------------------------------------------------------------------------------------
# Certificate profiles


@pytest.mark.must("ID-1")
def test_ca_is_a_constrained_root_naming_its_trust_domain(pki: PkiLayout) -> None:
    ca = load_certificate(pki.party("JP").ca_cert)
    constraints = ca.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical
    assert constraints.value.ca
    assert constraints.value.path_length == 0
    usage = key_usage(ca)
    assert usage.key_cert_sign
    assert usage.crl_sign
    assert not usage.digital_signature
    assert ca.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "Hotline JP Root CA"
    assert isinstance(ca.public_key(), ec.EllipticCurvePublicKey)
    assert san(ca).get_values_for_type(x509.UniformResourceIdentifier) == ["spiffe://jp.hotline"]
    assert ca_party(ca) == "JP"
    names = ca.extensions.get_extension_for_class(x509.NameConstraints)
    assert names.critical
    assert names.value.permitted_subtrees == [x509.UniformResourceIdentifier("jp.hotline")]


@pytest.mark.parametrize("party", ["JP", "TW"])
@pytest.mark.must("ID-2")
def test_every_leaf_carries_exactly_one_spiffe_uri(pki: PkiLayout, party: str) -> None:
    paths = pki.party(party)
    expected = {
        paths.gateway_cert: Identity(party, Role.GATEWAY),
        paths.signing_cert: Identity(party, Role.SIGNING),
        paths.operator_cert("watch-1"): Identity(party, Role.OPERATOR, "watch-1"),
        paths.operator_cert("watch-2"): Identity(party, Role.OPERATOR, "watch-2"),
    }
    for path, identity in expected.items():
        cert = load_certificate(path)
        assert san(cert).get_values_for_type(x509.UniformResourceIdentifier) == [identity.spiffe_id]
        assert identity_of(cert) == identity
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints)
        assert constraints.critical
        assert not constraints.value.ca
        assert not key_usage(cert).key_cert_sign
        assert not key_usage(cert).crl_sign
        verify_chain(cert, load_certificate(paths.ca_cert))


def test_gateway_certificate_is_a_tls_server_and_client(pki: PkiLayout) -> None:
    cert = load_certificate(pki.party("JP").gateway_cert)
    assert set(eku(cert)) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    assert san(cert).get_values_for_type(x509.DNSName) == ["gateway.jp.hotline", "localhost"]
    assert san(cert).get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    public = cert.public_key()
    assert isinstance(public, ec.EllipticCurvePublicKey)
    assert public.curve.name == "secp256r1"
    assert key_usage(cert).digital_signature


def test_operator_certificate_is_a_tls_client_only(pki: PkiLayout) -> None:
    cert = load_certificate(pki.party("TW").operator_cert("watch-1"))
    assert eku(cert) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert san(cert).get_values_for_type(x509.DNSName) == []
    assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey)


@pytest.mark.must("ID-5")
def test_signing_certificate_is_ed25519_without_tls_usage(pki: PkiLayout) -> None:
    paths = pki.party("JP")
    cert = load_certificate(paths.signing_cert)
    assert isinstance(cert.public_key(), ed25519.Ed25519PublicKey)
    usage = key_usage(cert)
    assert usage.digital_signature
    assert usage.content_commitment
    assert not usage.key_encipherment
    assert not usage.key_agreement
    assert not usage.key_cert_sign
    assert eku(cert) == [DOCUMENT_SIGNING]
    key = load_signing_key(paths.signing_key)
    assert key_matches(cert, key)
    with pytest.raises(CertsError, match="Ed25519"):
        load_signing_key(paths.gateway_key)


def test_public_key_id_is_sha256_of_the_spki(pki: PkiLayout) -> None:
    cert = load_certificate(pki.party("JP").signing_cert)
    der = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    key_id = public_key_id(cert.public_key())
    assert key_id == hashlib.sha256(der).hexdigest()
    assert len(key_id) == 64
    assert key_id == key_id.lower()


def test_every_key_matches_its_certificate(pki: PkiLayout) -> None:
    for party in pki.parties:
        paths = pki.party(party)
        for cert, key in [
            (paths.ca_cert, paths.ca_key),
            (paths.gateway_cert, paths.gateway_key),
            (paths.signing_cert, paths.signing_key),
            (paths.operator_cert("watch-1"), paths.operator_key("watch-1")),
        ]:
            load_key_pair(cert, key)
    with pytest.raises(CertsError, match="does not match"):
        load_key_pair(pki.party("JP").gateway_cert, pki.party("TW").gateway_key)


# ---------------------------------------------------------------------------------------------
# Identities


@pytest.mark.parametrize(
    ("uri", "identity"),
    [
        ("spiffe://jp.hotline/gateway", Identity("JP", Role.GATEWAY)),
        ("spiffe://tw.hotline/operator/watch-1", Identity("TW", Role.OPERATOR, "watch-1")),
        ("spiffe://jp.hotline/signing", Identity("JP", Role.SIGNING)),
    ],
)
@pytest.mark.must("ID-1")
def test_spiffe_ids_round_trip(uri: str, identity: Identity) -> None:
    assert parse_spiffe_id(uri) == identity
    assert identity.spiffe_id == uri


@pytest.mark.parametrize(
    "uri",
    [
        "https://jp.hotline/gateway",
        "SPIFFE://jp.hotline/gateway",
        "spiffe://JP.hotline/gateway",
        "spiffe://jp.hotline",
        "spiffe://jp.hotline/",
        "spiffe://jp.hotline/gateway/",
        "spiffe://jp.hotline//gateway",
        "spiffe://jp.hotline/gateway/extra",
        "spiffe://jp.hotline/operator",
        "spiffe://jp.hotline/operator/Watch-1",
        "spiffe://jp.hotline/operator/-watch",
        "spiffe://jp.hotline/operator/a/b",
        "spiffe://jp.hotline/admin",
        "spiffe://jp.hotline:443/gateway",
        "spiffe://user@jp.hotline/gateway",
        "spiffe://jp.example/gateway",
        "spiffe://*.hotline/gateway",
        "spiffe://x.jp.hotline/gateway",
        "spiffe://jp.hotline/gateway?x=1",
        "spiffe://jp.hotline/gateway#f",
        "spiffe://jp.hotline/operator/%77atch",
        "spiffe://jp.hotline/./gateway",
        "",
    ],
)
def test_parse_spiffe_id_refuses_anything_else(uri: str) -> None:
    with pytest.raises(IdentityError):
        parse_spiffe_id(uri)


def test_identity_refuses_inconsistent_fields() -> None:
    with pytest.raises(IdentityError):
        Identity("JP", Role.OPERATOR)
    with pytest.raises(IdentityError):
        Identity("JP", Role.GATEWAY, "watch-1")
    with pytest.raises(IdentityError):
        Identity("jp", Role.GATEWAY)


@pytest.mark.must("ID-2")
def test_identity_of_requires_exactly_one_uri(pki: PkiLayout) -> None:
    ca_cert, ca_key = ca_of(pki, "JP")
    none, _ = make_leaf(ca_cert, ca_key, [])
    with pytest.raises(IdentityError, match="no URI"):
        identity_of(none)
    two, _ = make_leaf(
        ca_cert, ca_key, ["spiffe://jp.hotline/gateway", "spiffe://jp.hotline/signing"]
    )
    with pytest.raises(IdentityError, match="exactly one"):
        identity_of(two)


# ---------------------------------------------------------------------------------------------
# Chain verification


def test_verify_chain_accepts_a_good_leaf(pki: PkiLayout) -> None:
    jp = pki.party("JP")
    verify_chain(load_certificate(jp.gateway_cert), load_certificate(jp.ca_cert))


def test_verify_chain_refuses_the_other_partys_ca(pki: PkiLayout) -> None:
    leaf = load_certificate(pki.party("JP").gateway_cert)
    with pytest.raises(CertsError, match="not by CA"):
        verify_chain(leaf, load_certificate(pki.party("TW").ca_cert))


def test_verify_chain_refuses_an_expired_leaf(tmp_path: Path) -> None:
    long_ago = datetime.now(UTC) - timedelta(days=400)
    layout = init_pki(tmp_path, operators=(), now=long_ago, validity_days=30)
    jp = layout.party("JP")
    leaf, ca = load_certificate(jp.gateway_cert), load_certificate(jp.ca_cert)
    with pytest.raises(CertsError, match="expired on"):
        verify_chain(leaf, ca)
    verify_chain(leaf, ca, now=long_ago + timedelta(days=1))


def test_verify_chain_refuses_a_leaf_not_yet_valid(pki: PkiLayout) -> None:
    ca_cert, ca_key = ca_of(pki, "JP")
    soon = datetime.now(UTC) + timedelta(days=2)
    leaf, _ = make_leaf(ca_cert, ca_key, ["spiffe://jp.hotline/gateway"], not_before=soon)
    with pytest.raises(CertsError, match="not yet valid"):
        verify_chain(leaf, ca_cert)


def test_verify_chain_refuses_when_the_ca_has_expired(pki: PkiLayout) -> None:
    jp = pki.party("JP")
    ca = load_certificate(jp.ca_cert)
    later = ca.not_valid_after_utc + timedelta(days=1)
    with pytest.raises(CertsError, match=r"CA .* expired on"):
        verify_chain(load_certificate(jp.gateway_cert), ca, now=later)


@pytest.mark.must("ID-2")
def test_a_ca_cannot_mint_the_other_partys_identities(pki: PkiLayout) -> None:
    tw_ca, tw_key = ca_of(pki, "TW")
    rogue, _ = make_leaf(tw_ca, tw_key, ["spiffe://jp.hotline/gateway"])
    with pytest.raises(CertsError, match="cannot vouch"):
        verify_chain(rogue, tw_ca)
    jp_ca = load_certificate(pki.party("JP").ca_cert)
    with pytest.raises(CertsError):  # and the JP CA did not issue it either
        verify_chain(rogue, jp_ca)
    with pytest.raises(CertsError):
        verify_identity(rogue, [jp_ca, tw_ca])


def test_verify_chain_refuses_a_forged_issuer_name(pki: PkiLayout) -> None:
    jp_ca = load_certificate(pki.party("JP").ca_cert)
    impostor_key = ec.generate_private_key(ec.SECP256R1())
    forged, _ = make_leaf(jp_ca, impostor_key, ["spiffe://jp.hotline/gateway"])
    with pytest.raises(CertsError, match="signature does not verify"):
        verify_chain(forged, jp_ca)


def test_verify_chain_refuses_a_ca_as_leaf(pki: PkiLayout) -> None:
    jp_ca, jp_key = ca_of(pki, "JP")
    sub_ca, _ = make_leaf(jp_ca, jp_key, ["spiffe://jp.hotline/gateway"], is_ca=True)
    with pytest.raises(CertsError, match="is a CA"):
        verify_chain(sub_ca, jp_ca)


@pytest.mark.must("ID-2")
def test_verify_identity_picks_the_ca_of_the_claimed_party(pki: PkiLayout) -> None:
    cas = [load_certificate(pki.party(p).ca_cert) for p in pki.parties]
    tw_gateway = load_certificate(pki.party("TW").gateway_cert)
    jp_operator = load_certificate(pki.party("JP").operator_cert("watch-1"))
    assert verify_identity(tw_gateway, cas) == Identity.gateway("TW")
    assert verify_identity(jp_operator, cas) == Identity.operator("JP", "watch-1")
    with pytest.raises(CertsError, match="no trusted CA"):
        verify_identity(tw_gateway, cas[:1])


# ---------------------------------------------------------------------------------------------
# Revocation


def test_initial_revocation_lists_are_empty_and_verified(pki: PkiLayout) -> None:
    revocations = load_revocations(pki.directory, "JP")
    assert len(revocations) == 2
    assert all(len(rl) == 0 and rl.number == 1 for rl in revocations)
    assert revocations.is_current()
    assert not revocations.is_revoked(load_certificate(pki.party("TW").gateway_cert))


def test_revoke_lists_the_serial_and_resigns(fresh: PkiLayout) -> None:
    jp = fresh.party("JP")
    ca = load_certificate(jp.ca_cert)
    operator = load_certificate(jp.operator_cert("watch-1"))
    gateway = load_certificate(jp.gateway_cert)
    at = datetime.now(UTC).replace(microsecond=0)

    serial = revoke(
        fresh.directory, "JP", jp.operator_cert("watch-1"), reason="key-compromise", now=at
    )

    assert serial == operator.serial_number
    crl = RevocationList.load(jp.crl, ca)
    assert crl.is_revoked(operator)
    assert not crl.is_revoked(gateway)
    assert crl.serials == frozenset({serial})
    assert crl.number == 2
    assert crl.next_update == at + timedelta(days=7)
    assert crl.reason(operator) is x509.ReasonFlags.key_compromise
    # The peer's copy follows, so the TW gateway refuses the revoked JP operator too.
    assert fresh.party("TW").peer_crl.read_bytes() == jp.crl.read_bytes()
    cas = [ca, load_certificate(jp.peer_ca_cert)]
    with pytest.raises(RevokedError, match="revoked"):
        verify_identity(operator, cas, revocations=load_revocations(fresh.directory, "TW"))
    with pytest.raises(RevokedError):
        verify_identity(operator, cas, revocations=load_party_revocations(fresh.party("TW")))
    verify_identity(gateway, cas, revocations=crl)

    revoke(fresh.directory, "JP", jp.gateway_cert)  # a second revocation keeps the first
    crl = RevocationList.load(jp.crl, ca)
    assert crl.serials == {operator.serial_number, gateway.serial_number}
    assert crl.number == 3
    assert refresh_crl(fresh.directory, "JP") == jp.crl
    assert RevocationList.load(jp.crl, ca).number == 4
    assert RevocationList.load(fresh.party("TW").peer_crl, ca).number == 4


def test_revoke_refuses_a_certificate_of_another_ca(fresh: PkiLayout) -> None:
    before = fresh.party("JP").crl.read_bytes()
    with pytest.raises(CertsError, match="not issued by the JP CA"):
        revoke(fresh.directory, "JP", fresh.party("TW").gateway_cert)
    with pytest.raises(CertsError, match="CA certificate"):
        revoke(fresh.directory, "JP", fresh.party("JP").ca_cert)
    with pytest.raises(CertsError, match="unknown revocation reason"):
        revoke(fresh.directory, "JP", fresh.party("JP").gateway_cert, reason="bored")
    assert fresh.party("JP").crl.read_bytes() == before


def test_revoked_serial_counts_only_for_its_own_issuer(fresh: PkiLayout) -> None:
    tw = fresh.party("TW")
    revoke(fresh.directory, "TW", tw.gateway_cert)
    revoked = load_certificate(tw.gateway_cert)
    jp_ca, jp_key = ca_of(fresh, "JP")
    twin, _ = make_leaf(
        jp_ca, jp_key, ["spiffe://jp.hotline/gateway"], serial=revoked.serial_number
    )
    revocations = load_revocations(fresh.directory, "JP")
    assert revocations.is_revoked(revoked)
    assert not revocations.is_revoked(twin)


def test_revocation_list_with_a_bad_signature_is_refused(fresh: PkiLayout, tmp_path: Path) -> None:
    jp = fresh.party("JP")
    ca = load_certificate(jp.ca_cert)
    # Same issuer name, wrong key: a forged list.
    impostor = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    forged = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca.subject)
        .last_update(now)
        .next_update(now + timedelta(days=7))
        .sign(impostor, hashes.SHA256())
    )
    path = tmp_path / "forged.pem"
    path.write_bytes(forged.public_bytes(serialization.Encoding.PEM))
    with pytest.raises(CertsError, match="signature does not verify"):
        RevocationList.load(path, ca)
    # A genuine list checked against the wrong CA.
    with pytest.raises(CertsError, match="not by the CA"):
        RevocationList.load(jp.crl, load_certificate(fresh.party("TW").ca_cert))
    # A damaged file.
    damaged = tmp_path / "damaged.pem"
    damaged.write_bytes(jp.crl.read_bytes().replace(b"A", b"B", 5))
    with pytest.raises(CertsError):
        RevocationList.load(damaged, ca)


def test_revocation_list_turns_stale_after_next_update(pki: PkiLayout) -> None:
    crl = RevocationList.load(pki.party("JP").crl, pki.party("JP").ca_cert)
    assert crl.next_update is not None
    assert crl.is_current()
    assert not crl.is_current(crl.next_update + timedelta(seconds=1))
    assert not RevocationSet([crl]).is_current(crl.next_update + timedelta(seconds=1))


# ---------------------------------------------------------------------------------------------
# Issue, reissue, rotate


def test_issue_operator_adds_a_working_operator(fresh: PkiLayout) -> None:
    cert_path = issue_operator(fresh.directory, "TW", "watch-9")
    tw = fresh.party("TW")
    assert cert_path == tw.operator_cert("watch-9")
    assert mode(tw.operator_key("watch-9")) == 0o600
    cert, _ = load_key_pair(cert_path, tw.operator_key("watch-9"))
    verify_chain(cert, load_certificate(tw.ca_cert))
    assert PkiLayout.load(fresh.directory).operators["TW"] == ("watch-1", "watch-9")
    with pytest.raises(CertsError, match="--force"):
        issue_operator(fresh.directory, "TW", "watch-9")
    issue_operator(fresh.directory, "TW", "watch-9", force=True)
    assert load_certificate(cert_path).serial_number != cert.serial_number


def test_issue_gateway_keeps_the_key_and_adds_names(fresh: PkiLayout) -> None:
    jp = fresh.party("JP")
    key_before = jp.gateway_key.read_bytes()
    issue_gateway(fresh.directory, "JP", dns_names=["GW.Example.jp"], ip_addresses=["192.0.2.7"])
    cert, _ = load_key_pair(jp.gateway_cert, jp.gateway_key)
    assert jp.gateway_key.read_bytes() == key_before
    assert san(cert).get_values_for_type(x509.DNSName) == [
        "gateway.jp.hotline",
        "localhost",
        "gw.example.jp",
    ]
    assert ipaddress.ip_address("192.0.2.7") in san(cert).get_values_for_type(x509.IPAddress)
    with pytest.raises(CertsError, match="wildcard"):
        issue_gateway(fresh.directory, "JP", dns_names=["*.example.jp"])


def test_rotate_keeps_the_serving_pair_consistent(fresh: PkiLayout) -> None:
    jp = fresh.party("JP")
    issue_gateway(fresh.directory, "JP", dns_names=["gw.example.jp"])
    old_cert = jp.gateway_cert.read_bytes()
    old_key = jp.gateway_key.read_bytes()

    cert_path, key_path = rotate_gateway(fresh.directory, "JP")

    assert (cert_path, key_path) == (jp.gateway_cert, jp.gateway_key)
    new_cert, _ = load_key_pair(cert_path, key_path)
    assert key_path.read_bytes() != old_key
    assert jp.gateway_cert_prev.read_bytes() == old_cert
    assert jp.gateway_key_prev.read_bytes() == old_key
    load_key_pair(jp.gateway_cert_prev, jp.gateway_key_prev)
    assert mode(key_path) == mode(jp.gateway_key_prev) == 0o600
    assert "gw.example.jp" in san(new_cert).get_values_for_type(x509.DNSName)
    verify_chain(new_cert, load_certificate(jp.ca_cert))
    assert not list(jp.root.glob(".*.tmp"))  # no temporary files left behind


def test_operations_refuse_an_expired_ca(tmp_path: Path) -> None:
    long_ago = datetime.now(UTC) - timedelta(days=40)
    layout = init_pki(tmp_path, operators=(), now=long_ago, validity_days=30, ca_validity_days=30)
    with pytest.raises(CertsError, match=r"CA certificate .* expired on"):
        issue_operator(layout.directory, "JP", "late")
    with pytest.raises(CertsError, match="expired on"):
        rotate_gateway(layout.directory, "JP")


def test_leaves_never_outlive_their_ca(tmp_path: Path) -> None:
    layout = init_pki(tmp_path, operators=(), validity_days=30, ca_validity_days=30)
    issue_operator(layout.directory, "JP", "watch-1", validity_days=365)
    ca = load_certificate(layout.party("JP").ca_cert)
    leaf = load_certificate(layout.party("JP").operator_cert("watch-1"))
    assert leaf.not_valid_after_utc <= ca.not_valid_after_utc


def test_operations_refuse_a_directory_that_is_not_a_pki(tmp_path: Path) -> None:
    with pytest.raises(CertsError, match="does not exist"):
        issue_operator(tmp_path / "missing", "JP", "watch-1")
    with pytest.raises(CertsError, match="not a Hotline PKI"):
        rotate_gateway(tmp_path, "JP")


# ---------------------------------------------------------------------------------------------
# Describe


def test_describe_shows_fingerprint_identity_and_validity(pki: PkiLayout) -> None:
    path = pki.party("JP").gateway_cert
    cert = load_certificate(path)
    text = describe(path)
    assert fingerprint(cert) in text
    assert "spiffe://jp.hotline/gateway" in text
    assert "ECDSA P-256" in text
    assert f"{cert.serial_number:#x}" in text
    assert "valid for" in text
    assert "gateway.key matches" in text
    assert "EXPIRED" in describe(path, now=cert.not_valid_after_utc + timedelta(days=3))


def test_describe_a_directory_covers_every_certificate(pki: PkiLayout) -> None:
    text = describe(pki.directory)
    for party in pki.parties:
        paths = pki.party(party)
        for cert_path in (paths.ca_cert, paths.gateway_cert, paths.signing_cert):
            assert fingerprint(load_certificate(cert_path)) in text
    assert "spiffe://tw.hotline/operator/watch-2" in text
    assert "Ed25519" in text
    assert "revocation list" in text


# ---------------------------------------------------------------------------------------------
# The TLS handshake itself (BoringSSL inside grpcio) with these certificates


async def _health_check(
    server_dir: PartyPaths, client_cert: bytes, client_key: bytes, client_roots: bytes
) -> str:
    """Serve health on the server party's gateway credentials; return the client's outcome."""
    creds = grpc.ssl_server_credentials(
        [(server_dir.gateway_key.read_bytes(), server_dir.gateway_cert.read_bytes())],
        root_certificates=server_dir.bundle.read_bytes(),
        require_client_auth=True,
    )
    server = grpc.aio.server()
    health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)
    port = server.add_secure_port("127.0.0.1:0", creds)
    await server.start()
    try:
        channel_creds = grpc.ssl_channel_credentials(client_roots, client_key, client_cert)
        async with grpc.aio.secure_channel(f"localhost:{port}", channel_creds) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            try:
                await stub.Check(health_pb2.HealthCheckRequest(), timeout=5)
            except grpc.aio.AioRpcError as exc:
                return exc.code().name
            return "OK"
    finally:
        await server.stop(None)


async def test_handshake_accepts_peer_gateway_and_refuses_a_cross_domain_certificate(
    pki: PkiLayout,
) -> None:
    jp, tw = pki.party("JP"), pki.party("TW")
    peer_roots = tw.peer_ca_cert.read_bytes()  # TW dials JP trusting only JP's CA
    outcome = await _health_check(
        jp, tw.gateway_cert.read_bytes(), tw.gateway_key.read_bytes(), peer_roots
    )
    assert outcome == "OK"
    # The same hand-made certificate from TW's CA connects while it names a TW identity, and
    # fails the handshake once it names a JP one: the URI name constraint on TW's CA.
    tw_ca, tw_key = ca_of(pki, "TW")
    outcomes = []
    for uri in ("spiffe://tw.hotline/operator/x", "spiffe://jp.hotline/operator/watch-1"):
        leaf, key = make_leaf(tw_ca, tw_key, [uri])
        key_pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        cert_pem = leaf.public_bytes(serialization.Encoding.PEM)
        outcomes.append(await _health_check(jp, cert_pem, key_pem, peer_roots))
    assert outcomes == ["OK", "UNAVAILABLE"]

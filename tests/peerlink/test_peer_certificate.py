"""The dialler's check of the peer gateway's TLS certificate, against real TLS on 127.0.0.1.

Each test runs a real TLS 1.3 server (asyncio + Python's `ssl`) that requires a client
certificate from the JP CA, as the TW gateway does, and serves whichever certificate the test
chooses, all from a real two-party PKI made by `certs.pki.init_pki`. JP's gateway is the one
checking: it presents its gateway certificate, trusts only the TW CA, and pins
`gateway.tw.hotline`.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from certs.pki import (
    PartyPaths,
    load_certificate,
    load_party_revocations,
    load_private_key,
    revoke,
)
from certs.revocation import RevocationSet
from hotline.errors import ConfigError, HotlineError
from server.peerlink.peer_certificate import (
    PeerCertificateError,
    PeerCertificateRefused,
    PeerCertificateRevoked,
    PeerCertificateUntrusted,
    PeerCertificateWrongIdentity,
    PeerUnreachableError,
    read_peer_certificate,
    split_address,
)
from tests.harness import free_port
from tests.security.conftest import make_backdated_pki

TIMEOUT = 2.0  # the check's own bound in these tests; every test finishes well within it


@pytest.fixture
def pki(tmp_path: Path) -> Path:
    return make_backdated_pki(tmp_path / "pki")


@contextlib.asynccontextmanager
async def tls_server(cert: Path, key: Path, client_ca: Path) -> AsyncIterator[str]:
    """A TLS 1.3 server on 127.0.0.1 serving `cert`, requiring a client certificate from
    `client_ca`; yields its address. It reads until the client hangs up."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.load_cert_chain(cert, key)
    context.load_verify_locations(cafile=str(client_ca))
    context.verify_mode = ssl.CERT_REQUIRED
    context.set_alpn_protocols(["h2"])

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            await reader.read()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=context)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.close()
        await asyncio.wait_for(server.wait_closed(), TIMEOUT)


async def check_as_jp(
    pki: Path, address: str, revocations: Callable[[], RevocationSet] | None = None
) -> x509.Certificate:
    """JP's gateway checking the TW gateway at `address`, with JP's current revocation lists."""
    jp = PartyPaths.of(pki, "JP")
    return await read_peer_certificate(
        address,
        peer_party="TW",
        cert=jp.gateway_cert,
        key=jp.gateway_key,
        peer_ca=jp.peer_ca_cert,
        revocations=revocations or (lambda: load_party_revocations(jp)),
        timeout=TIMEOUT,
    )


def tw_gateway_server(pki: Path) -> contextlib.AbstractAsyncContextManager[str]:
    tw = PartyPaths.of(pki, "TW")
    return tls_server(tw.gateway_cert, tw.gateway_key, tw.peer_ca_cert)


def issue_impostor(pki: Path, directory: Path) -> tuple[Path, Path]:
    """A TW-CA certificate fit for a TLS server named gateway.tw.hotline, but carrying an
    operator's SPIFFE ID: what a mis-issuing CA could produce. Only the identity check stops it."""
    tw = PartyPaths.of(pki, "TW")
    ca_cert = load_certificate(tw.ca_cert)
    ca_key = load_private_key(tw.ca_key)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "impostor")]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName("gateway.tw.hotline"),
                    x509.UniformResourceIdentifier("spiffe://tw.hotline/operator/watch-1"),
                ]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    cert_path, key_path = directory / "impostor.crt", directory / "impostor.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


# ------------------------------------------------------------------------------ passes


async def test_the_peer_gateways_valid_certificate_passes_and_is_returned(pki: Path) -> None:
    async with tw_gateway_server(pki) as address:
        certificate = await check_as_jp(pki, address)
    assert certificate == load_certificate(PartyPaths.of(pki, "TW").gateway_cert)


# ------------------------------------------------------------------------------ refused


@pytest.mark.must("LINK-3", "ID-6")
async def test_a_revoked_peer_gateway_certificate_is_refused_with_its_serial_and_reason(
    pki: Path,
) -> None:
    tw = PartyPaths.of(pki, "TW")
    serial = revoke(pki, "TW", tw.gateway_cert, reason="key-compromise")
    async with tw_gateway_server(pki) as address:
        with pytest.raises(PeerCertificateRevoked) as refused:
            await check_as_jp(pki, address)
    assert str(refused.value) == (
        f"peer gateway certificate serial {serial:#x} is revoked (keyCompromise)"
    )
    assert refused.value.code == "PEER_CERTIFICATE_REVOKED"
    assert isinstance(refused.value, PeerCertificateRefused)
    assert isinstance(refused.value, HotlineError)


async def test_each_check_uses_the_revocation_lists_current_at_that_moment(pki: Path) -> None:
    jp = PartyPaths.of(pki, "JP")
    current = [load_party_revocations(jp)]
    async with tw_gateway_server(pki) as address:
        await check_as_jp(pki, address, lambda: current[0])
        revoke(pki, "TW", PartyPaths.of(pki, "TW").gateway_cert, reason="superseded")
        current[0] = load_party_revocations(jp)  # what the gateway's CRL reload does
        with pytest.raises(PeerCertificateRevoked, match=r"is revoked \(superseded\)"):
            await check_as_jp(pki, address, lambda: current[0])


@pytest.mark.must("LINK-2", "LINK-3")
async def test_an_operator_certificate_served_as_the_gateway_is_refused(pki: Path) -> None:
    tw = PartyPaths.of(pki, "TW")
    server = tls_server(tw.operator_cert("watch-1"), tw.operator_key("watch-1"), tw.peer_ca_cert)
    async with server as address:
        with pytest.raises(PeerCertificateUntrusted) as refused:
            await check_as_jp(pki, address)
    # An operator certificate is neither for a TLS server nor for the pinned name: the
    # handshake itself rejects it.
    assert f"the peer gateway at {address} presented a certificate" in str(refused.value)
    assert "gateway.tw.hotline" in str(refused.value)


@pytest.mark.must("LINK-3")
async def test_a_peer_ca_certificate_for_the_pinned_name_with_another_identity_is_refused(
    pki: Path, tmp_path: Path
) -> None:
    cert, key = issue_impostor(pki, tmp_path)
    async with tls_server(cert, key, PartyPaths.of(pki, "TW").peer_ca_cert) as address:
        with pytest.raises(PeerCertificateWrongIdentity) as refused:
            await check_as_jp(pki, address)
    assert "is spiffe://tw.hotline/operator/watch-1, not spiffe://tw.hotline/gateway" in str(
        refused.value
    )
    assert refused.value.code == "PEER_CERTIFICATE_WRONG_IDENTITY"


@pytest.mark.must("LINK-2")
async def test_our_own_gateway_certificate_served_back_to_us_is_refused(pki: Path) -> None:
    jp = PartyPaths.of(pki, "JP")
    async with tls_server(jp.gateway_cert, jp.gateway_key, jp.ca_cert) as address:
        with pytest.raises(PeerCertificateUntrusted, match="fails TLS verification as the TW CA's"):
            await check_as_jp(pki, address)


# ------------------------------------------------------------------------------ unreachable


async def test_a_closed_port_is_unreachable_not_refused(pki: Path) -> None:
    address = f"127.0.0.1:{free_port()}"  # nobody listens there
    started = time.monotonic()
    with pytest.raises(PeerUnreachableError) as failed:
        await check_as_jp(pki, address)
    assert time.monotonic() - started < TIMEOUT
    assert str(failed.value) == (
        f"cannot connect to the peer gateway at {address}: Connection refused"
    )
    assert not isinstance(failed.value, PeerCertificateRefused)


async def test_a_peer_that_never_answers_the_handshake_fails_within_the_timeout(
    pki: Path,
) -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            await reader.read()  # accepts the connection, never speaks TLS
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    address = f"127.0.0.1:{server.sockets[0].getsockname()[1]}"
    jp = PartyPaths.of(pki, "JP")
    try:
        started = time.monotonic()
        with pytest.raises(PeerUnreachableError, match=r"no TLS handshake .* within 0\.3 s"):
            await read_peer_certificate(
                address,
                peer_party="TW",
                cert=jp.gateway_cert,
                key=jp.gateway_key,
                peer_ca=jp.peer_ca_cert,
                revocations=lambda: load_party_revocations(jp),
                timeout=0.3,
            )
        assert 0.3 <= time.monotonic() - started < 0.3 + 1.0
    finally:
        server.close()
        await asyncio.wait_for(server.wait_closed(), TIMEOUT)


async def test_unreadable_own_credentials_are_an_error_of_ours_not_a_refusal(
    pki: Path, tmp_path: Path
) -> None:
    jp = PartyPaths.of(pki, "JP")
    async with tw_gateway_server(pki) as address:
        with pytest.raises(PeerCertificateError, match="cannot load our gateway certificate") as e:
            await read_peer_certificate(
                address,
                peer_party="TW",
                cert=tmp_path / "missing.crt",
                key=jp.gateway_key,
                peer_ca=jp.peer_ca_cert,
                revocations=lambda: load_party_revocations(jp),
                timeout=TIMEOUT,
            )
    assert not isinstance(e.value, PeerCertificateRefused | PeerUnreachableError)


# ------------------------------------------------------------------------------ addresses


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("127.0.0.1:50052", ("127.0.0.1", 50052)),
        ("gateway.tw.example:443", ("gateway.tw.example", 443)),
        ("[::1]:50052", ("::1", 50052)),
    ],
)
def test_addresses_are_host_and_port(address: str, expected: tuple[str, int]) -> None:
    assert split_address(address) == expected


@pytest.mark.parametrize(
    "address", ["127.0.0.1", "127.0.0.1:", ":50052", "::1:50052", "[nope]:1", "host:0", "h:x"]
)
def test_other_addresses_are_a_configuration_error(address: str) -> None:
    with pytest.raises(ConfigError, match="is not host:port"):
        split_address(address)

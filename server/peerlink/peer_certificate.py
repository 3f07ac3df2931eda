"""Before the sender dials the peer gateway: read its TLS certificate and check it.

grpcio's Python API neither checks revocation in the TLS handshake nor shows a client the
server's certificate, so the gRPC channel alone would push our outbox to any server holding a
certificate from the peer party's CA for the pinned name `gateway.<party>.hotline`, even one
the peer party has revoked (a stolen gateway key, say). `read_peer_certificate` closes that:
before each connection attempt it makes one short TLS 1.3 handshake of its own with Python's
`ssl`, configured as the gRPC channel is (our gateway certificate presented, only the peer
party's CA trusted, the same pinned name), reads the certificate the server presents, and
checks it:

1. it chains to the peer party's CA and names `gateway.<party>.hotline` (the handshake), and is
   a Hotline leaf of that CA within its validity (`certs.verify.verify_chain`);
2. it carries the peer gateway's SPIFFE ID, `spiffe://<party>.hotline/gateway`;
3. it is not on the revocation lists the gateway holds *now* (the caller passes a function that
   returns the current `RevocationSet`, so a reloaded list counts from the next attempt on).

It returns the certificate, or raises a `PeerCertificateError` saying which step failed. The
errors (this module's part of the tree under `hotline.errors.HotlineError`):

    PeerCertificateError             the peer's certificate could not be read or checked; as
    │                                itself: our own certificate, key or peer CA file is unusable
    ├── PeerUnreachableError         no TLS handshake within the timeout: the peer is down,
    │                                unreachable or not speaking TLS 1.3 (not a security event)
    └── PeerCertificateRefused       read, and refused: the gateway journals a security event
        ├── PeerCertificateUntrusted      not issued by the peer CA for the pinned name, or
        │                                 outside its validity
        ├── PeerCertificateWrongIdentity  not the peer gateway's SPIFFE ID
        ├── PeerCertificateRevoked        on the peer CA's revocation list
        └── PeerRevocationStale           the peer CA's revocation list is stale (past its
                                          nextUpdate and grace): nothing can be cleared by it,
                                          so the gateway does not dial (checked before reading)

Each error carries a `code` (`PEER_CERTIFICATE_REVOKED`, ...), which the gateway journals.

Nothing is cached between calls: the handshake costs far more than the checks, and a verdict
kept across calls would outlive a revocation list that changed in between. A connection already
open keeps the certificate its handshake began with, so the gateway keeps the certificate this
returned and, whenever it reloads its revocation lists, asks `check_not_revoked` again; if the
certificate is now revoked it ends that connection (`PeerSender.redial`) and the next attempt
is refused here.

Why two handshakes are still sound
----------------------------------
The check and the gRPC connection are two TLS handshakes, so in principle the server could
present one certificate to the first and another to the second (time of check to time of use).
This leaves no hole that matters:

* The second handshake is pinned exactly as the first: only the peer party's CA is trusted and
  the name must be `gateway.<party>.hotline`, which that CA issues only beside the peer
  gateway's SPIFFE ID. So whoever answers it holds the key of *some* peer gateway certificate.
  A server that shows a valid certificate to the check and a revoked one to gRPC gains nothing
  over showing the valid one to both: it already holds a valid key. The case left is an active
  network attacker holding a revoked key who lets the check through to the real gateway and
  answers the gRPC connection itself, within the milliseconds between the two.
* That attacker still learns nothing: the sender sends no `Delivery` before the receiver's
  `Welcome`, and the `Welcome` is signed with the peer party's message-signing key (Ed25519,
  not the TLS key) over a fresh nonce from our `Hello`, verified against the same revocation
  lists. A stolen TLS key alone cannot produce it. (The signed `Welcome` is the companion
  change in `hotline.link`/`server.peerlink.sender`; until it lands, this check is what stands
  between a revoked certificate and our outbox, with the gap above.)

The check fails closed: if the certificate cannot be read, the sender does not dial.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import ssl
from collections.abc import Callable
from pathlib import Path

from cryptography import x509

from certs.errors import CertsError
from certs.identity import Identity, identity_of
from certs.pki import load_certificate
from certs.revocation import RevocationSet
from certs.verify import verify_chain
from hotline.errors import ConfigError, HotlineError
from hotline.transport import gateway_host

DEFAULT_TIMEOUT = 5.0
"""Seconds allowed for connecting and the whole handshake, by default."""

_CLOSE_TIMEOUT = 1.0  # for the polite TLS close after the certificate is read


class PeerCertificateError(HotlineError):
    """The peer gateway's TLS certificate could not be read, or was refused."""

    code = "PEER_CERTIFICATE_ERROR"


class PeerUnreachableError(PeerCertificateError):
    """No TLS handshake with the peer within the timeout, so there is no certificate to check."""

    code = "PEER_UNREACHABLE"


class PeerCertificateRefused(PeerCertificateError):
    """The peer presented a certificate, and it fails a check: never dial it."""

    code = "PEER_CERTIFICATE_REFUSED"


class PeerCertificateUntrusted(PeerCertificateRefused):
    """Not issued by the peer party's CA for the pinned name, or outside its validity."""

    code = "PEER_CERTIFICATE_UNTRUSTED"


class PeerCertificateWrongIdentity(PeerCertificateRefused):
    """Issued by the peer CA, but not to the peer gateway's SPIFFE ID."""

    code = "PEER_CERTIFICATE_WRONG_IDENTITY"


class PeerCertificateRevoked(PeerCertificateRefused):
    """On the revocation list of the peer CA."""

    code = "PEER_CERTIFICATE_REVOKED"


class PeerRevocationStale(PeerCertificateRefused):
    """The peer CA's revocation list is stale, so no certificate of that CA can be cleared."""

    code = "PEER_REVOCATION_STALE"


def split_address(address: str) -> tuple[str, int]:
    """`host:port` or `[v6 address]:port` as (host, port); raises `ConfigError` otherwise."""
    host, colon, port_text = address.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            host = ""
    elif ":" in host:
        host = ""  # an IPv6 address must be bracketed, or its port cannot be told apart
    if not colon or not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ConfigError(f"peer address {address!r} is not host:port (or [IPv6 address]:port)")
    return host, int(port_text)


def _context(cert: Path, key: Path, peer_ca: Path) -> ssl.SSLContext:
    """A TLS 1.3 client context configured as the gRPC peer channel is (blocking: reads files)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies the chain and the host name
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.load_verify_locations(cafile=str(peer_ca))
    context.load_cert_chain(str(cert), str(key))
    context.set_alpn_protocols(["h2"])  # what the gRPC server expects to be offered
    return context


async def _handshake(
    host: str, port: int, context: ssl.SSLContext, server_name: str, timeout: float
) -> bytes:
    """Connect, complete the TLS handshake, and return the server's leaf certificate (DER)."""
    async with asyncio.timeout(timeout):
        _, writer = await asyncio.open_connection(
            host, port, ssl=context, server_hostname=server_name
        )
    try:
        tls = writer.get_extra_info("ssl_object")
        der = tls.getpeercert(binary_form=True) if isinstance(tls, ssl.SSLObject) else None
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            async with asyncio.timeout(_CLOSE_TIMEOUT):
                await writer.wait_closed()
    if not der:  # pragma: no cover - a verified TLS 1.3 handshake always has a peer certificate
        raise PeerUnreachableError(f"{host}:{port} completed the handshake with no certificate")
    return bytes(der)


async def fetch_peer_certificate(
    address: str,
    *,
    peer_party: str,
    cert: Path,
    key: Path,
    peer_ca: Path,
    timeout: float = DEFAULT_TIMEOUT,
) -> x509.Certificate:
    """The certificate the peer gateway at `address` presents, read with a TLS 1.3 handshake.

    We present `cert`/`key` (the peer requires client authentication) and trust only
    `peer_ca`; the server name must be the peer gateway's pinned name. Raises
    `PeerCertificateUntrusted` if the handshake rejects the server's certificate and
    `PeerUnreachableError` if there is no handshake within `timeout` seconds.
    """
    host, port = split_address(address)
    server_name = gateway_host(peer_party)
    where = f"the peer gateway at {address}"
    try:
        context = await asyncio.to_thread(_context, cert, key, peer_ca)
    except (OSError, ssl.SSLError) as exc:  # also a key and certificate caught mid-rotation
        raise PeerCertificateError(
            f"cannot load our gateway certificate {cert} with its key {key}, or the peer CA "
            f"{peer_ca}: {exc}"
        ) from None
    try:
        der = await _handshake(host, port, context, server_name, timeout)
    except ssl.SSLCertVerificationError as exc:
        raise PeerCertificateUntrusted(
            f"{where} presented a certificate that fails TLS verification as the {peer_party} "
            f"CA's for {server_name}: {exc.verify_message}"
        ) from None
    except TimeoutError:
        raise PeerUnreachableError(f"no TLS handshake with {where} within {timeout:g} s") from None
    except ssl.SSLError as exc:
        raise PeerUnreachableError(f"TLS handshake with {where} failed: {exc.reason}") from None
    except OSError as exc:  # asyncio words a refused connection "Connect call failed (...)"
        why = os.strerror(exc.errno) if exc.errno else str(exc) or type(exc).__name__
        raise PeerUnreachableError(f"cannot connect to {where}: {why}") from None
    return x509.load_der_x509_certificate(der)


def check_peer_certificate(
    certificate: x509.Certificate,
    *,
    peer_party: str,
    peer_ca: x509.Certificate,
    revocations: RevocationSet,
) -> None:
    """Raise a `PeerCertificateRefused` unless `certificate` may serve as the peer gateway."""
    serial = f"serial {certificate.serial_number:#x}"
    try:
        verify_chain(certificate, peer_ca)
    except CertsError as exc:
        raise PeerCertificateUntrusted(f"peer gateway certificate {serial}: {exc}") from None
    expected = Identity.gateway(peer_party)
    try:
        identity: Identity | str = identity_of(certificate)
    except CertsError as exc:  # pragma: no cover - verify_chain has read the identity already
        identity = str(exc)
    if identity != expected:
        raise PeerCertificateWrongIdentity(
            f"peer gateway certificate {serial} is {identity}, not {expected}"
        )
    check_not_revoked(certificate, revocations)


def check_not_revoked(certificate: x509.Certificate, revocations: RevocationSet) -> None:
    """Raise `PeerCertificateRevoked`, with the list's reason, if `revocations` lists it."""
    for revocation_list in revocations:
        reason = revocation_list.reason(certificate)
        if reason is not None:
            raise PeerCertificateRevoked(
                f"peer gateway certificate serial {certificate.serial_number:#x} is revoked "
                f"({reason.value})"
            )


async def read_peer_certificate(
    address: str,
    *,
    peer_party: str,
    cert: Path,
    key: Path,
    peer_ca: Path,
    revocations: Callable[[], RevocationSet],
    timeout: float = DEFAULT_TIMEOUT,
) -> x509.Certificate:
    """Read the peer gateway's certificate at `address` and check it (see the module docstring).

    `cert`, `key` and `peer_ca` are files, read on every call so a rotated certificate is
    used at once; `revocations()` is asked after the handshake, for the lists current then.
    Returns the certificate; raises `PeerUnreachableError` or a `PeerCertificateRefused`.
    """
    certificate = await fetch_peer_certificate(
        address, peer_party=peer_party, cert=cert, key=key, peer_ca=peer_ca, timeout=timeout
    )
    try:
        ca = await asyncio.to_thread(load_certificate, peer_ca)
    except CertsError as exc:
        raise PeerCertificateError(f"cannot load the peer CA certificate: {exc}") from None
    check_peer_certificate(
        certificate, peer_party=peer_party, peer_ca=ca, revocations=revocations()
    )
    return certificate

"""Why the gateway cannot be reached, when the reason is a certificate: named, with the file.

grpc reports every TLS failure as UNAVAILABLE, often with nothing but "Socket closed" (the
gateway refused our certificate) or "CERTIFICATE_VERIFY_FAILED" (we refused the gateway's), so
a certificate problem looks like a network problem. `certificate_problem` tells them apart:

1. our own files, read locally (no network): the operator certificate has expired or is not yet
   valid, or was not issued by the CA file we trust for the gateway (then the two files belong
   to different parties or PKIs);
2. one short TLS 1.3 handshake of Python's `ssl`, configured as the gRPC channel is (our
   certificate, the one trusted CA, the pinned name `gateway.<party>.hotline`): the gateway's
   certificate has expired, is not yet valid, is issued by a CA we do not trust, or names
   another host; then one read, because under TLS 1.3 the server refuses a client certificate
   only after the client's side of the handshake is done (an alert: expired, unknown CA,
   revoked, bad certificate).

It returns one sentence saying what is wrong and which file to fix, or None when the handshake
succeeds or the gateway cannot be reached at all (then the network is the problem). A revoked
operator certificate passes the handshake; the gateway's interceptor refuses it with
UNAUTHENTICATED "... has been revoked", which the CLI shows as it is.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509

from certs.errors import CertsError
from certs.pki import load_certificate
from hotline.transport import gateway_host

__all__ = ["certificate_problem", "local_certificate_problem"]

# OpenSSL X509_V_ERR_* codes an `ssl.SSLCertVerificationError` carries (`verify_code`).
_NOT_YET_VALID, _EXPIRED = 9, 10
_UNKNOWN_ISSUER = (2, 18, 19, 20, 21)
_HOSTNAME_MISMATCH = 62


def _when(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M UTC")


def local_certificate_problem(cert: Path, ca: Path, *, now: datetime | None = None) -> str | None:
    """What is wrong with our own certificate, judged from the files alone (None: nothing)."""
    at = now or datetime.now(UTC)
    try:
        leaf = load_certificate(cert)
        authority = load_certificate(ca)
    except CertsError:
        return None  # unreadable files are reported where they are opened
    if at > leaf.not_valid_after_utc:
        return (
            f"your operator certificate {cert} expired on {_when(leaf.not_valid_after_utc)}: "
            "ask your party's CA for a new one (`hotline certs issue operator`)"
        )
    if at < leaf.not_valid_before_utc:
        return (
            f"your operator certificate {cert} is not valid until "
            f"{_when(leaf.not_valid_before_utc)} (is this machine's clock right?)"
        )
    if not _issued_by(leaf, authority):
        return (
            f"your operator certificate {cert} is not issued by {ca}: give as `ca` the CA "
            "certificate of your own party (the one that issued your certificate and the "
            "gateway's)"
        )
    return None


def _issued_by(leaf: x509.Certificate, authority: x509.Certificate) -> bool:
    try:
        leaf.verify_directly_issued_by(authority)
    except Exception:  # InvalidSignature, ValueError, TypeError: not this CA's
        return False
    return True


async def certificate_problem(
    address: str, *, cert: Path, key: Path, ca: Path, party: str, timeout: float = 3.0
) -> str | None:
    """What certificate problem stops a connection to the gateway at `address`, if any."""
    local = local_certificate_problem(cert, ca)
    if local is not None:
        return local
    host, _, port = address.rpartition(":")
    host = host.strip("[]")
    name = gateway_host(party)
    try:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.minimum_version = ssl.TLSVersion.TLSv1_3
        context.load_verify_locations(cafile=str(ca))
        context.load_cert_chain(str(cert), str(key))
    except (OSError, ssl.SSLError):
        return None  # unreadable files are reported where they are opened
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(
                host, int(port), ssl=context, server_hostname=name
            )
            await reader.read(1)  # the server's verdict on our certificate, if it refuses it
    except ssl.SSLCertVerificationError as exc:
        return _server_certificate_problem(exc, address, ca, name)
    except ssl.SSLError as exc:
        return _client_certificate_refused(exc, cert)
    except (OSError, TimeoutError, ValueError):
        return None
    finally:
        if writer is not None:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
    return None


def _server_certificate_problem(
    exc: ssl.SSLCertVerificationError, address: str, ca: Path, name: str
) -> str:
    code = exc.verify_code
    if code == _EXPIRED:
        return (
            f"the gateway at {address} presents an expired certificate: its operator must renew it"
        )
    if code == _NOT_YET_VALID:
        return (
            f"the gateway at {address} presents a certificate that is not yet valid "
            "(is one of the two clocks wrong?)"
        )
    if code == _HOSTNAME_MISMATCH:
        return (
            f"name mismatch: the gateway at {address} presents a certificate that is not for "
            f"{name}: is that address the gateway of your party?"
        )
    if code in _UNKNOWN_ISSUER:
        return (
            f"the gateway at {address} presents a certificate not issued by {ca} (unknown CA): "
            "is that address your party's gateway, and that file your party's CA certificate?"
        )
    return f"the gateway's certificate at {address} was refused: {exc.verify_message}"


def _client_certificate_refused(exc: ssl.SSLError, cert: Path) -> str | None:
    reason = (exc.reason or str(exc)).upper()
    if "CERTIFICATE_EXPIRED" in reason:
        return f"the gateway refused your operator certificate {cert}: it has expired"
    if "UNKNOWN_CA" in reason:
        return (
            f"the gateway refused your operator certificate {cert}: it is issued by a CA the "
            "gateway does not know (another party's or another PKI's)"
        )
    if "CERTIFICATE_REVOKED" in reason:
        return f"the gateway refused your operator certificate {cert}: it has been revoked"
    if "CERTIFICATE_REQUIRED" in reason or "BAD_CERTIFICATE" in reason:
        return f"the gateway refused your operator certificate {cert} ({exc.reason})"
    if "ALERT" in reason:
        return f"the gateway ended the TLS handshake: {exc.reason}"
    return None

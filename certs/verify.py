"""Checks on certificates that the TLS handshake does not make.

The handshake (BoringSSL inside grpcio) verifies the chain against the trust bundle, the
validity dates and, for our CAs, a URI name constraint. It does not know Hotline's rules, and
Python gives no hook into it, so the gateway re-checks the presented leaf with `verify_identity`
before any handler runs:

1. the leaf names exactly one Hotline SPIFFE ID (`certs.identity.identity_of`);
2. the CA chosen is the one of the identity's own party: **one party's CA cannot vouch for the
   other party's identities** (`verify_chain` refuses a TW-issued `spiffe://jp.hotline/...`);
3. the leaf is directly issued (and signed) by that CA, both are within their validity, the CA is
   a CA and the leaf is not;
4. the leaf is not on its CA's revocation list.

A CA's party is read from **the URI subjectAltName on the CA certificate**, the path-less
trust-domain ID `spiffe://jp.hotline` (the X509-SVID spec's advice for signing certificates). The
subject's common name ("Hotline JP Root CA") is for people and is never trusted for this.

Do not verify these certificates with `cryptography.x509.verification.PolicyBuilder`: our CAs carry
a URI name constraint, which that verifier rejects as "unsupported name constraint".
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from datetime import UTC, datetime

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificatePublicKeyTypes,
    PrivateKeyTypes,
    PublicKeyTypes,
)

from certs.errors import CertsError, IdentityError, RevokedError
from certs.identity import Identity, identity_of, parse_trust_domain_id, uris_of
from certs.revocation import RevocationList, RevocationSet


def _now(now: datetime | None) -> datetime:
    if now is None:
        return datetime.now(UTC)
    if now.tzinfo is None:
        raise CertsError("times must be timezone-aware (use datetime.now(UTC))")
    return now


def format_time(moment: datetime) -> str:
    """A UTC timestamp as people read it in messages: `2026-03-01 09:30 UTC`."""
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def label(cert: x509.Certificate) -> str:
    """How messages name a certificate: its single URI if it has one, else its subject."""
    uris = uris_of(cert)
    if len(uris) == 1:
        return uris[0]
    return cert.subject.rfc4514_string() or f"serial {cert.serial_number:#x}"


def public_key_id(public_key: PublicKeyTypes | CertificatePublicKeyTypes) -> str:
    """Lowercase hex SHA-256 of the DER SubjectPublicKeyInfo (64 characters): a key's id."""
    der = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(der).hexdigest()


def key_matches(cert: x509.Certificate, key: PrivateKeyTypes) -> bool:
    """True if `key` is the private half of the public key certified by `cert`."""
    return public_key_id(cert.public_key()) == public_key_id(key.public_key())


def is_ca(cert: x509.Certificate) -> bool:
    try:
        return cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        return False


def ca_party(ca: x509.Certificate) -> str:
    """The party whose CA this is, from its trust-domain URI SAN (`spiffe://jp.hotline` -> `JP`)."""
    if not is_ca(ca):
        raise CertsError(f"certificate {label(ca)!r} is not a CA (basicConstraints CA is not set)")
    uris = uris_of(ca)
    if len(uris) != 1:
        raise CertsError(
            f"CA {ca.subject.rfc4514_string()!r} must carry exactly one URI subjectAltName naming "
            f"its trust domain (such as spiffe://jp.hotline); it carries {len(uris)}"
        )
    try:
        return parse_trust_domain_id(uris[0])
    except IdentityError as exc:
        raise CertsError(f"CA {ca.subject.rfc4514_string()!r}: {exc}") from None


def check_validity(cert: x509.Certificate, *, now: datetime | None = None, what: str = "") -> None:
    """Raise `CertsError` saying "expired on ..." or "not yet valid" unless `now` is in range."""
    at = _now(now)
    name = what or f"certificate {label(cert)!r}"
    if at > cert.not_valid_after_utc:
        raise CertsError(f"{name} expired on {format_time(cert.not_valid_after_utc)}")
    if at < cert.not_valid_before_utc:
        raise CertsError(
            f"{name} is not yet valid (valid from {format_time(cert.not_valid_before_utc)})"
        )


def _key_usage(cert: x509.Certificate) -> x509.KeyUsage | None:
    try:
        return cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return None


def verify_chain(
    leaf: x509.Certificate, ca: x509.Certificate, *, now: datetime | None = None
) -> None:
    """Raise `CertsError` with the reason unless `leaf` is a valid Hotline leaf issued by `ca`.

    Checks, in order: `ca` is a CA naming its party; `leaf` is directly issued and signed by it;
    `leaf` is an end-entity certificate (CA=false, may not sign certificates or CRLs); both are
    within their validity at `now`; and the leaf's single SPIFFE ID lies in the CA's own trust
    domain. Revocation is separate (`verify_identity`, `certs.revocation`).
    """
    at = _now(now)
    party = ca_party(ca)
    ca_name = f"CA {ca.subject.rfc4514_string()!r}"
    if leaf.issuer != ca.subject:
        raise CertsError(
            f"certificate {label(leaf)!r} was issued by {leaf.issuer.rfc4514_string()!r}, "
            f"not by {ca_name}"
        )
    try:
        leaf.verify_directly_issued_by(ca)
    except (InvalidSignature, ValueError, TypeError):
        raise CertsError(
            f"certificate {label(leaf)!r} names {ca_name} as issuer but its signature does not "
            "verify with that CA's key"
        ) from None
    if is_ca(leaf):
        raise CertsError(f"certificate {label(leaf)!r} is a CA; an identity must be a leaf")
    try:
        leaf.extensions.get_extension_for_class(x509.BasicConstraints)
    except x509.ExtensionNotFound:
        raise CertsError(
            f"certificate {label(leaf)!r} lacks basicConstraints; "
            "X509-SVID leaves must set CA=false"
        ) from None
    usage = _key_usage(leaf)
    if usage is not None and (usage.key_cert_sign or usage.crl_sign):
        raise CertsError(
            f"certificate {label(leaf)!r} may sign certificates or CRLs; a leaf may not"
        )
    check_validity(ca, now=at, what=ca_name)
    check_validity(leaf, now=at)
    identity = identity_of(leaf)
    if identity.party != party:
        raise CertsError(
            f"certificate claims identity {identity.spiffe_id} but was issued by the {party} CA "
            f"(trust domain {party.lower()}.hotline): one party's CA cannot vouch for another "
            "party's identities"
        )


def verify_identity(
    leaf: x509.Certificate,
    cas: Iterable[x509.Certificate],
    *,
    revocations: RevocationSet | RevocationList | None = None,
    now: datetime | None = None,
) -> Identity:
    """Authenticate a presented leaf: pick the CA of its claimed party, verify, check revocation.

    `cas` is every CA this gateway trusts (its own and the peer's). Returns the identity, or
    raises `IdentityError` / `CertsError` / `RevokedError` saying why it is refused.
    """
    identity = identity_of(leaf)
    candidates = []
    for ca in cas:
        try:
            if ca_party(ca) == identity.party:
                candidates.append(ca)
        except CertsError:
            continue
    if not candidates:
        raise CertsError(
            f"no trusted CA for trust domain {identity.trust_domain} (certificate {identity})"
        )
    failure: CertsError | None = None
    for ca in candidates:  # normally one; several only while a CA is being replaced
        try:
            verify_chain(leaf, ca, now=now)
        except CertsError as exc:
            failure = exc
            continue
        if revocations is not None and revocations.is_revoked(leaf):
            raise RevokedError(
                f"certificate {identity} (serial {leaf.serial_number:#x}) has been revoked"
            )
        return identity
    assert failure is not None
    raise failure

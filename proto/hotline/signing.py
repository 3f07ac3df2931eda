"""Message signatures: DSSE-style signing of exact serialized bytes with Ed25519.

Protobuf serialization is not canonical, so a signature covers the exact bytes that travel,
carried beside it in a `SignedPayload`, and a verifier checks the signature *before* parsing the
payload, and never re-serializes. The signed bytes are DSSE's pre-authentication encoding:

    PAE(type, body) = "DSSEv1" SP LEN(type) SP type SP LEN(body) SP body

so a receipt can never be replayed as an envelope, nor one payload type confused with another.

A `KeyRing` holds the signing keys a verifier trusts, each bound to its party: a key is added
only from a signing certificate issued by that party's CA (checked with `certs.verify`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from certs.identity import Role, identity_of
from certs.verify import public_key_id, verify_chain
from hotline.errors import SignatureError
from hotline.v1 import common_pb2

PAYLOAD_TYPE_ENVELOPE = "application/vnd.hotline.v1.Envelope+protobuf"
PAYLOAD_TYPE_RECEIPT = "application/vnd.hotline.v1.Receipt+protobuf"
PAYLOAD_TYPE_CHECKPOINT = "application/vnd.hotline.v1.Checkpoint+protobuf"
PAYLOAD_TYPE_WELCOME = "application/vnd.hotline.v1.Welcome+protobuf"
PAYLOAD_TYPES = frozenset(
    {PAYLOAD_TYPE_ENVELOPE, PAYLOAD_TYPE_RECEIPT, PAYLOAD_TYPE_CHECKPOINT, PAYLOAD_TYPE_WELCOME}
)

ED25519 = common_pb2.SIGNATURE_ALGORITHM_ED25519


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE pre-authentication encoding of (payload_type, payload)."""
    t = payload_type.encode("utf-8")
    return b"DSSEv1 %d %s %d %s" % (len(t), t, len(payload), payload)


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


@dataclass(frozen=True)
class Signer:
    """Signs payloads for one party with its Ed25519 message-signing key."""

    party: str
    private_key: Ed25519PrivateKey
    key_id: str
    certificate_der: bytes

    @classmethod
    def from_certificate(
        cls, private_key: Ed25519PrivateKey, certificate: x509.Certificate
    ) -> Signer:
        identity = identity_of(certificate)
        if identity.role is not Role.SIGNING:
            raise SignatureError(f"{identity.spiffe_id} is not a message-signing certificate")
        public = certificate.public_key()
        if not isinstance(public, Ed25519PublicKey):
            raise SignatureError("the signing certificate does not hold an Ed25519 key")
        if public.public_bytes_raw() != private_key.public_key().public_bytes_raw():
            raise SignatureError("the signing key does not match the signing certificate")
        from cryptography.hazmat.primitives.serialization import Encoding

        return cls(
            party=identity.party,
            private_key=private_key,
            key_id=public_key_id(public),
            certificate_der=certificate.public_bytes(Encoding.DER),
        )

    def sign(self, payload_type: str, payload: bytes) -> common_pb2.SignedPayload:
        if payload_type not in PAYLOAD_TYPES:
            raise SignatureError(f"unknown payload type {payload_type!r}")
        return common_pb2.SignedPayload(
            payload=payload,
            payload_type=payload_type,
            signature=self.private_key.sign(pae(payload_type, payload)),
            key_id=self.key_id,
            algorithm=ED25519,
        )


@dataclass(frozen=True)
class TrustedKey:
    party: str
    key_id: str
    public_key: Ed25519PublicKey
    certificate: x509.Certificate


class Revocations(Protocol):
    """Anything that says whether a certificate is revoked (`certs.revocation.RevocationSet`)."""

    def is_revoked(self, cert: x509.Certificate) -> bool: ...


class KeyRing:
    """The signing keys a verifier trusts, each bound to the party whose CA issued it."""

    def __init__(
        self,
        ca_certificates: Iterable[x509.Certificate],
        *,
        revocations: Revocations | None = None,
    ) -> None:
        self._cas = list(ca_certificates)
        self._keys: dict[str, TrustedKey] = {}
        self._revocations = revocations
        # key id -> (the key, the lists asked, revoked?): a revocation check costs ~15 µs,
        # against a signature verify's ~110, and its answer changes only with the lists.
        self._status: dict[str, tuple[TrustedKey, Revocations | None, bool]] = {}

    def set_revocations(self, revocations: Revocations) -> None:
        """Use new revocation lists: keys whose certificate is now revoked stop verifying
        (from the next `verify`: every key's status is decided again against the new lists)."""
        self._revocations = revocations
        self._status.clear()

    def _revoked(self, certificate: x509.Certificate) -> bool:
        return self._revocations is not None and self._revocations.is_revoked(certificate)

    def _key_revoked(self, key: TrustedKey) -> bool:
        """Whether `key`'s certificate is revoked by the current lists, cached per key until
        the lists (or the key's certificate) change."""
        known = self._status.get(key.key_id)
        if known is not None and known[0] is key and known[1] is self._revocations:
            return known[2]
        revoked = self._revoked(key.certificate)
        self._status[key.key_id] = (key, self._revocations, revoked)
        return revoked

    def add_certificate(self, certificate: x509.Certificate) -> TrustedKey:
        """Trust a signing certificate if one of our CAs issued it for its own party."""
        identity = identity_of(certificate)
        if identity.role is not Role.SIGNING:
            raise SignatureError(f"{identity.spiffe_id} is not a message-signing certificate")
        errors = []
        for ca in self._cas:
            try:
                verify_chain(certificate, ca)
            except Exception as exc:  # certs raises CertsError; collect and report all reasons
                errors.append(str(exc))
                continue
            public = certificate.public_key()
            if not isinstance(public, Ed25519PublicKey):
                raise SignatureError("signing certificate does not hold an Ed25519 key")
            if self._revoked(certificate):
                raise SignatureError(
                    f"signing certificate {identity.spiffe_id} "
                    f"(serial {certificate.serial_number:#x}) has been revoked"
                )
            key = TrustedKey(identity.party, public_key_id(public), public, certificate)
            self._keys[key.key_id] = key
            return key
        raise SignatureError(
            f"signing certificate {identity.spiffe_id} is not trusted: " + "; ".join(errors)
        )

    def add_der(self, der: bytes) -> TrustedKey:
        try:
            certificate = x509.load_der_x509_certificate(der)
        except ValueError as exc:
            raise SignatureError(f"malformed signing certificate: {exc}") from exc
        return self.add_certificate(certificate)

    def key(self, key_id: str) -> TrustedKey | None:
        return self._keys.get(key_id)

    def verify(self, signed: common_pb2.SignedPayload, *, payload_type: str, party: str) -> bytes:
        """Check `signed` is a valid signature by `party` over a payload of `payload_type`.

        Returns the exact payload bytes, to be parsed only after this succeeds.
        """
        if not signed.signature:
            raise SignatureError("the signature is missing")
        if signed.algorithm != ED25519:
            raise SignatureError(f"unsupported signature algorithm {signed.algorithm}")
        if signed.payload_type != payload_type:
            raise SignatureError(
                f"payload type is {signed.payload_type!r}, expected {payload_type!r}"
            )
        key = self._keys.get(signed.key_id)
        if key is None:
            raise SignatureError(f"unknown signing key id {signed.key_id!r}")
        if key.party != party:
            raise SignatureError(f"signed by party {key.party}'s key, expected party {party}'s")
        if self._key_revoked(key):
            raise SignatureError(
                f"signed with key {signed.key_id[:16]}…, whose certificate has been revoked"
            )
        try:
            key.public_key.verify(signed.signature, pae(signed.payload_type, signed.payload))
        except InvalidSignature:
            raise SignatureError("the signature does not match the payload") from None
        return bytes(signed.payload)

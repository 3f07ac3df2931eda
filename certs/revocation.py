"""Revocation: X.509 CRLs signed by each party's CA, and the checks a gateway makes with them.

gRPC's Python TLS has no revocation check, so a revoked certificate completes the handshake. The
gateway therefore loads `RevocationList`s (its own CA's and the peer CA's) and asks
`is_revoked(leaf)` before any handler runs. A list is only as fresh as its file: there is no OCSP.

Two rules keep a list trustworthy over time (the gateway applies them, `server.gateway`):

* **No rollback.** A list replaces the one held only if its CRL number is greater
  (`replacement_problem`): putting back an older, validly signed list would otherwise make a
  revoked certificate good again.
* **No stale list.** A list past its `nextUpdate` (plus a configured grace) no longer says
  whether a certificate is revoked: the certificates of its CA are refused until a current list
  is loaded (`RevocationList.refuse_after`, `RevocationSet.stale`).

A CRL is trusted only after its signature verifies with the issuing CA's key and its issuer name
equals the CA's subject; a revoked serial counts only for certificates with that same issuer, so
two CAs' serial numbers can never be confused.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa

from certs._io import load_certificate, read_bytes
from certs.errors import CertsError

CRL_VALIDITY = timedelta(days=7)
"""How long a freshly signed CRL is current (its nextUpdate); re-sign before it runs out."""

_REASONS: dict[str, x509.ReasonFlags] = {}
for _flag in x509.ReasonFlags:
    if _flag is not x509.ReasonFlags.remove_from_crl:  # only meaningful in delta CRLs
        _REASONS[_flag.name.replace("_", "")] = _flag
        _REASONS[_flag.value.lower()] = _flag

REASON_NAMES: tuple[str, ...] = tuple(
    f.name.replace("_", "-") for f in x509.ReasonFlags if f is not x509.ReasonFlags.remove_from_crl
)
"""Accepted revocation reasons, CLI spelling (`key-compromise`); `keyCompromise` etc. also work."""


def parse_reason(reason: str) -> x509.ReasonFlags:
    """Map `key-compromise`, `key_compromise` or `keyCompromise` to the RFC 5280 reason code."""
    key = reason.strip().lower().replace("-", "").replace("_", "")
    try:
        return _REASONS[key]
    except KeyError:
        raise CertsError(
            f"unknown revocation reason {reason!r}; choose one of: {', '.join(REASON_NAMES)}"
        ) from None


def _now(now: datetime | None) -> datetime:
    if now is None:
        return datetime.now(UTC)
    if now.tzinfo is None:
        raise CertsError("times must be timezone-aware (use datetime.now(UTC))")
    return now


def _verifying_key(
    ca: x509.Certificate,
) -> (
    ec.EllipticCurvePublicKey
    | ed25519.Ed25519PublicKey
    | rsa.RSAPublicKey
    | dsa.DSAPublicKey
    | ed448.Ed448PublicKey
):
    key = ca.public_key()
    if isinstance(
        key,
        ec.EllipticCurvePublicKey
        | ed25519.Ed25519PublicKey
        | rsa.RSAPublicKey
        | dsa.DSAPublicKey
        | ed448.Ed448PublicKey,
    ):
        return key
    raise CertsError(f"CA {ca.subject.rfc4514_string()!r} has a key that cannot sign")


def build_crl(
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    revoked: Iterable[x509.RevokedCertificate],
    *,
    number: int,
    now: datetime | None = None,
    validity: timedelta = CRL_VALIDITY,
) -> x509.CertificateRevocationList:
    """Sign a CRL for `ca_cert` listing `revoked`, with CRL number `number`."""
    at = _now(now)
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca_cert.subject)
        .last_update(at)
        .next_update(at + validity)
        .add_extension(x509.CRLNumber(number), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
    )
    for entry in revoked:
        builder = builder.add_revoked_certificate(entry)
    return builder.sign(ca_key, hashes.SHA256())


def replacement_problem(held: RevocationList, new: RevocationList) -> str | None:
    """Why `new` may not replace `held` (the list of the same CA in force), or None if it may.

    CRL numbers only increase (RFC 5280, 5.2.3): a list whose number is not greater than the
    one held is an old list put back (a rollback) or a forgery of the order, and is refused;
    so is a list without a number once a numbered one is held. The same list again (the file
    touched, or copied anew) is no replacement: the caller keeps what it holds, silently.
    """
    if held.same_list(new):
        return None
    if held.issuer != new.issuer:
        return (
            f"the new list was issued by {new.issuer_text!r}, the list held by {held.issuer_text!r}"
        )
    if held.number is None:
        return None
    if new.number is None:
        return f"the new list has no CRL number; the one held has number {held.number}"
    if new.number <= held.number:
        return (
            f"its CRL number {new.number} is not greater than {held.number}, the number of the "
            "list held: an older list put back (a rollback) is never taken"
        )
    return None


def revoked_entry(
    serial: int, *, reason: x509.ReasonFlags, when: datetime
) -> x509.RevokedCertificate:
    """One CRL entry. RFC 5280 asks that `unspecified` be expressed by leaving the reason out."""
    builder = x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(when)
    if reason is not x509.ReasonFlags.unspecified:
        builder = builder.add_extension(x509.CRLReason(reason), critical=False)
    return builder.build()


class RevocationList:
    """One CA's CRL, verified against that CA. Immutable once built."""

    def __init__(
        self,
        crl: x509.CertificateRevocationList,
        ca_cert: x509.Certificate,
        *,
        source: str = "CRL",
    ) -> None:
        if crl.issuer != ca_cert.subject:
            raise CertsError(
                f"{source} was issued by {crl.issuer.rfc4514_string()!r}, "
                f"not by the CA {ca_cert.subject.rfc4514_string()!r}"
            )
        if not crl.is_signature_valid(_verifying_key(ca_cert)):
            raise CertsError(
                f"{source}: signature does not verify with the key of CA "
                f"{ca_cert.subject.rfc4514_string()!r}; the list is forged or damaged"
            )
        self._crl = crl
        self._ca = ca_cert
        self._serials = frozenset(entry.serial_number for entry in crl)

    @classmethod
    def load(cls, crl_path: Path, ca_cert: x509.Certificate | Path) -> RevocationList:
        """Load a PEM CRL and verify it with `ca_cert` (a certificate or a path to one)."""
        ca = ca_cert if isinstance(ca_cert, x509.Certificate) else load_certificate(ca_cert)
        data = read_bytes(crl_path, "revocation list")
        try:
            crl = x509.load_pem_x509_crl(data)
        except ValueError:
            raise CertsError(
                f"{crl_path} does not hold a PEM revocation list (expected -----BEGIN X509 CRL)"
            ) from None
        return cls(crl, ca, source=f"revocation list {crl_path}")

    @property
    def crl(self) -> x509.CertificateRevocationList:
        return self._crl

    @property
    def ca(self) -> x509.Certificate:
        return self._ca

    @property
    def issuer(self) -> x509.Name:
        return self._crl.issuer

    @property
    def serials(self) -> frozenset[int]:
        """Serial numbers of the revoked certificates."""
        return self._serials

    @property
    def last_update(self) -> datetime:
        return self._crl.last_update_utc

    @property
    def next_update(self) -> datetime | None:
        """When the issuer promised a newer list; after this the list is stale."""
        return self._crl.next_update_utc

    @property
    def number(self) -> int | None:
        """The CRL number (increases with every re-signing), if present."""
        try:
            return self._crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
        except x509.ExtensionNotFound:
            return None

    def is_current(self, now: datetime | None = None) -> bool:
        """False once `next_update` has passed (the caller decides whether stale means refuse)."""
        next_update = self.next_update
        return next_update is None or _now(now) <= next_update

    def refuse_after(self, grace: timedelta = timedelta(0)) -> datetime | None:
        """When this list stops vouching for its CA's certificates: `next_update` + `grace`
        (None: the list names no next update, so it never turns stale)."""
        next_update = self.next_update
        return None if next_update is None else next_update + grace

    def is_issuer_of(self, cert: x509.Certificate) -> bool:
        """True if this is the list of the CA that issued `cert`."""
        return cert.issuer == self._crl.issuer

    def same_list(self, other: RevocationList) -> bool:
        """True if `other` is this very list (the same signed bytes), e.g. a file touched."""
        return self._crl.tbs_certlist_bytes == other._crl.tbs_certlist_bytes

    @property
    def issuer_text(self) -> str:
        return self._crl.issuer.rfc4514_string()

    def is_revoked(self, cert: x509.Certificate) -> bool:
        """True if `cert` was issued by this list's CA and its serial number is listed."""
        return cert.issuer == self._crl.issuer and cert.serial_number in self._serials

    def reason(self, cert: x509.Certificate) -> x509.ReasonFlags | None:
        """Why `cert` was revoked (`unspecified` if no reason was recorded); None if it was not."""
        if not self.is_revoked(cert):
            return None
        entry = self._crl.get_revoked_certificate_by_serial_number(cert.serial_number)
        if entry is None:  # pragma: no cover - serials come from the same CRL
            return None
        try:
            return entry.extensions.get_extension_for_class(x509.CRLReason).value.reason
        except x509.ExtensionNotFound:
            return x509.ReasonFlags.unspecified

    def __len__(self) -> int:
        return len(self._serials)

    def __repr__(self) -> str:
        return (
            f"RevocationList(issuer={self.issuer.rfc4514_string()!r}, number={self.number}, "
            f"revoked={len(self)}, next_update={self.next_update})"
        )


class RevocationSet:
    """Several CAs' revocation lists (typically the own CA's and the peer CA's), asked as one."""

    def __init__(self, lists: Iterable[RevocationList] = ()) -> None:
        self._lists = tuple(lists)

    @property
    def lists(self) -> tuple[RevocationList, ...]:
        return self._lists

    def is_revoked(self, cert: x509.Certificate) -> bool:
        """True if any list whose issuer issued `cert` lists its serial number."""
        return any(rl.is_revoked(cert) for rl in self._lists)

    @property
    def next_update(self) -> datetime | None:
        """The earliest `next_update` of the lists: when the set as a whole turns stale."""
        times = [t for t in (rl.next_update for rl in self._lists) if t is not None]
        return min(times) if times else None

    def is_current(self, now: datetime | None = None) -> bool:
        return all(rl.is_current(now) for rl in self._lists)

    def stale(
        self, now: datetime | None = None, grace: timedelta = timedelta(0)
    ) -> tuple[RevocationList, ...]:
        """The lists past their `next_update` + `grace` at `now`: their CAs' certificates can
        no longer be told revoked or not."""
        at = _now(now)
        return tuple(
            rl for rl in self._lists if (end := rl.refuse_after(grace)) is not None and at > end
        )

    def list_for(self, cert: x509.Certificate) -> RevocationList | None:
        """The list of the CA that issued `cert`, if this set holds one."""
        return next((rl for rl in self._lists if rl.is_issuer_of(cert)), None)

    def __iter__(self) -> Iterator[RevocationList]:
        return iter(self._lists)

    def __len__(self) -> int:
        return len(self._lists)

    def __repr__(self) -> str:
        return f"RevocationSet({list(self._lists)!r})"

"""The Hotline PKI on disk: create it, issue and reissue certificates, rotate, revoke, describe.

One directory holds both parties' material for a prototype or demo. Each party's folder is
self-contained and is what that party's gateway host needs; in a real deployment the folders
are split, and only certificates and revocation lists ever cross to the other party, never keys.

    DIR/pki.json                   manifest: {"parties": [...], "created": ..., "operators": {...}}
    DIR/jp/ca.crt     ca.key       JP root CA (ECDSA P-256, pathlen 0, URI name constraint)
    DIR/jp/gateway.crt gateway.key JP gateway, TLS server and client (ECDSA P-256)
    DIR/jp/gateway.crt.prev  .key.prev   the pair before the last `rotate_gateway`
    DIR/jp/signing.crt signing.key JP message-signing key (Ed25519)
    DIR/jp/operators/<name>.crt .key  one per JP watch officer, TLS client (ECDSA P-256)
    DIR/jp/crl.pem                 JP CA's revocation list (X.509 CRL, signed by ca.key)
    DIR/jp/peer-ca.crt             copy of the other party's CA certificate
    DIR/jp/peer-crl.pem            copy of the other party's revocation list (kept in step)
    DIR/jp/bundle.pem              ca.crt + peer-ca.crt: the gateway's client-certificate roots

Private keys are unencrypted PKCS#8 PEM with mode 0600; everything else is 0644. Every file is
written atomically (temporary file, fsync, rename), so readers never see half a file.

Key-and-certificate pairs are replaced **key first, then certificate**. The certificate is the
commit point: a gateway that watches `gateway.crt` finds the matching key already in place when
it changes. A reader that happens to read in the instant between the two renames sees a new key
with the old certificate; `load_key_pair` detects that (the key does not match) and the reader
should keep its current credentials and try again.
"""

from __future__ import annotations

import ipaddress
import json
import re
import stat
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID, ObjectIdentifier

from certs._io import (
    KEY_MODE,
    PrivateKey,
    atomic_write,
    certificate_pem,
    load_certificate,
    load_certificates,
    load_private_key,
    read_bytes,
    write_private_key,
    write_public,
)
from certs.errors import CertsError, IdentityError
from certs.identity import (
    Identity,
    Role,
    identity_of,
    trust_domain,
    trust_domain_id,
    uris_of,
    validate_operator_name,
    validate_party,
)
from certs.revocation import RevocationList, RevocationSet, build_crl, parse_reason, revoked_entry
from certs.verify import (
    ca_party,
    check_validity,
    format_time,
    is_ca,
    key_matches,
    public_key_id,
)

__all__ = [
    "DEFAULT_OPERATORS",
    "DEFAULT_PARTIES",
    "MANIFEST_NAME",
    "PartyPaths",
    "PkiLayout",
    "describe",
    "fingerprint",
    "init_pki",
    "issue_gateway",
    "issue_operator",
    "load_certificate",
    "load_certificates",
    "load_key_pair",
    "load_party_revocations",
    "load_private_key",
    "load_revocations",
    "load_signing_key",
    "refresh_crl",
    "revoke",
    "rotate_gateway",
]

DEFAULT_PARTIES: tuple[str, str] = ("JP", "TW")
DEFAULT_OPERATORS: tuple[str, ...] = ("watch-1",)
DEFAULT_VALIDITY_DAYS = 365
DEFAULT_CA_VALIDITY_DAYS = 3650
MANIFEST_NAME = "pki.json"

BACKDATE = timedelta(minutes=5)
"""Leaves and CAs start this long before their issue time, to tolerate small clock skew."""

DOCUMENT_SIGNING = ObjectIdentifier("1.3.6.1.5.5.7.3.36")
"""id-kp-documentSigning (RFC 9336): the signing certificate's only extended key usage, so no
TLS stack that checks EKUs accepts it for a connection."""

LOOPBACK_DNS = "localhost"
LOOPBACK_IP = "127.0.0.1"

_DNS_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")


# --------------------------------------------------------------------------------------------
# Paths


@dataclass(frozen=True)
class PartyPaths:
    """Where one party's files live, e.g. `PartyPaths.of(Path("pki"), "JP").gateway_cert`."""

    party: str
    root: Path

    @classmethod
    def of(cls, directory: Path, party: str) -> PartyPaths:
        return cls(validate_party(party), Path(directory) / party.lower())

    @property
    def ca_cert(self) -> Path:
        return self.root / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.root / "ca.key"

    @property
    def gateway_cert(self) -> Path:
        return self.root / "gateway.crt"

    @property
    def gateway_key(self) -> Path:
        return self.root / "gateway.key"

    @property
    def gateway_cert_prev(self) -> Path:
        return self.root / "gateway.crt.prev"

    @property
    def gateway_key_prev(self) -> Path:
        return self.root / "gateway.key.prev"

    @property
    def signing_cert(self) -> Path:
        return self.root / "signing.crt"

    @property
    def signing_key(self) -> Path:
        return self.root / "signing.key"

    @property
    def crl(self) -> Path:
        return self.root / "crl.pem"

    @property
    def peer_ca_cert(self) -> Path:
        return self.root / "peer-ca.crt"

    @property
    def peer_crl(self) -> Path:
        return self.root / "peer-crl.pem"

    @property
    def bundle(self) -> Path:
        return self.root / "bundle.pem"

    @property
    def operators_dir(self) -> Path:
        return self.root / "operators"

    def operator_cert(self, name: str) -> Path:
        return self.operators_dir / f"{validate_operator_name(name)}.crt"

    def operator_key(self, name: str) -> Path:
        return self.operators_dir / f"{validate_operator_name(name)}.key"

    def operator_names(self) -> list[str]:
        """Operators with a certificate on disk, sorted."""
        if not self.operators_dir.is_dir():
            return []
        return sorted(
            p.stem for p in self.operators_dir.glob("*.crt") if not p.name.startswith(".")
        )

    def files(self, operators: Iterable[str] = ()) -> list[Path]:
        """Every file `init_pki` writes for this party (with these operators)."""
        paths = [
            self.ca_cert,
            self.ca_key,
            self.gateway_cert,
            self.gateway_key,
            self.signing_cert,
            self.signing_key,
            self.crl,
            self.peer_ca_cert,
            self.peer_crl,
            self.bundle,
        ]
        for name in operators:
            paths += [self.operator_cert(name), self.operator_key(name)]
        return paths


@dataclass(frozen=True)
class PkiLayout:
    """A PKI directory as described by its manifest `pki.json`."""

    directory: Path
    parties: tuple[str, ...]
    operators: Mapping[str, tuple[str, ...]] = field(default_factory=dict, hash=False)
    created: datetime | None = None

    @property
    def manifest(self) -> Path:
        return self.directory / MANIFEST_NAME

    def party(self, code: str) -> PartyPaths:
        """The paths of party `code`; raises `CertsError` if it is not one of this PKI's parties."""
        if code not in self.parties:
            raise CertsError(
                f"party {code!r} is not in the PKI at {self.directory} "
                f"(its parties are {', '.join(self.parties)})"
            )
        return PartyPaths.of(self.directory, code)

    def peer_of(self, code: str) -> str:
        """The other party of a bilateral PKI."""
        self.party(code)
        return next(p for p in self.parties if p != code)

    def peer(self, code: str) -> PartyPaths:
        return self.party(self.peer_of(code))

    @classmethod
    def load(cls, directory: Path) -> PkiLayout:
        """Read `DIR/pki.json`; raises `CertsError` if the directory is not a Hotline PKI."""
        directory = Path(directory)
        if not directory.is_dir():
            raise CertsError(
                f"PKI directory {directory} does not exist; create it with "
                f"`hotline certs init --dir {directory}`"
            )
        manifest = directory / MANIFEST_NAME
        if not manifest.is_file():
            raise CertsError(
                f"{directory} is not a Hotline PKI directory (it has no {MANIFEST_NAME}); "
                f"create one with `hotline certs init --dir {directory}`"
            )
        try:
            data = json.loads(read_bytes(manifest, "manifest"))
            parties = tuple(validate_party(p) for p in data["parties"])
            operators = {
                validate_party(p): tuple(validate_operator_name(n) for n in names)
                for p, names in dict(data.get("operators", {})).items()
            }
            created = datetime.fromisoformat(data["created"]) if "created" in data else None
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise CertsError(f"manifest {manifest} is damaged: {exc}") from None
        if len(parties) != 2 or len(set(parties)) != 2:
            raise CertsError(f"manifest {manifest} must name exactly two distinct parties")
        return cls(directory, parties, operators, created)

    def to_json(self) -> str:
        created = (self.created or datetime.now(UTC)).isoformat()
        operators = {p: list(self.operators.get(p, ())) for p in self.parties}
        data = {"parties": list(self.parties), "created": created, "operators": operators}
        return json.dumps(data, indent=2) + "\n"


def _write_manifest(layout: PkiLayout) -> None:
    write_public(layout.manifest, layout.to_json().encode())


# --------------------------------------------------------------------------------------------
# Validation helpers


def _now(now: datetime | None) -> datetime:
    if now is None:
        return datetime.now(UTC)
    if now.tzinfo is None:
        raise CertsError("times must be timezone-aware (use datetime.now(UTC))")
    return now.astimezone(UTC)


def _check_days(days: int, what: str = "validity") -> int:
    if isinstance(days, bool) or not isinstance(days, int) or days < 1:
        raise CertsError(f"{what} must be a whole number of days, at least 1 (got {days!r})")
    return days


def _check_parties(parties: Sequence[str]) -> tuple[str, str]:
    if isinstance(parties, str):
        raise CertsError("parties must be a sequence of party codes, such as ('JP', 'TW')")
    codes = [validate_party(p) for p in parties]
    if len(codes) != 2 or codes[0] == codes[1]:
        raise CertsError(
            f"a Hotline PKI has exactly two distinct parties (got {', '.join(codes) or 'none'})"
        )
    return codes[0], codes[1]


def _check_operators(operators: Sequence[str]) -> tuple[str, ...]:
    if isinstance(operators, str):
        raise CertsError("operators must be a sequence of names, such as ('watch-1',)")
    return tuple(dict.fromkeys(validate_operator_name(n) for n in operators))


def _check_dns(names: Iterable[str]) -> list[str]:
    checked: list[str] = []
    for raw in names:
        name = raw.strip().lower().rstrip(".")
        if "*" in name:
            raise CertsError(f"DNS name {raw!r}: wildcards are not allowed in Hotline certificates")
        labels = name.split(".")
        if len(name) > 253 or not all(_DNS_LABEL.fullmatch(label) for label in labels):
            raise CertsError(f"{raw!r} is not a valid DNS name")
        if name not in checked:
            checked.append(name)
    return checked


def _check_ips(addresses: Iterable[str]) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    checked: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = []
    for raw in addresses:
        try:
            address = ipaddress.ip_address(raw.strip())
        except ValueError:
            raise CertsError(f"{raw!r} is not an IP address") from None
        if address not in checked:
            checked.append(address)
    return checked


def _refuse_existing(paths: Iterable[Path]) -> None:
    existing = [p for p in paths if p.exists() or p.is_symlink()]
    if existing:
        shown = ", ".join(str(p) for p in existing[:6])
        more = f" and {len(existing) - 6} more" if len(existing) > 6 else ""
        raise CertsError(
            f"refusing to overwrite existing files: {shown}{more}; "
            "pass --force (force=True) to replace them"
        )


# --------------------------------------------------------------------------------------------
# Building certificates


def _key_usage(
    *,
    digital_signature: bool = False,
    content_commitment: bool = False,
    key_cert_sign: bool = False,
    crl_sign: bool = False,
) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=digital_signature,
        content_commitment=content_commitment,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=key_cert_sign,
        crl_sign=crl_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _subject(party: str, common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, f"Hotline {party}"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _new_ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _make_ca(
    party: str, at: datetime, days: int, *, name_constraints: bool
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = _new_ec_key()
    name = _subject(party, f"Hotline {party} Root CA")
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(at - BACKDATE)
        .not_valid_after(at + timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(key_cert_sign=True, crl_sign=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(trust_domain_id(party))]),
            critical=False,
        )
    )
    if name_constraints:
        # A URI constraint is a host: "jp.hotline" permits exactly spiffe://jp.hotline/... (a
        # leading dot would mean subdomains only). BoringSSL (grpcio) and OpenSSL enforce it in
        # the handshake, so a JP-issued certificate naming spiffe://tw.hotline/... never
        # connects. DNS and IP names are left unconstrained.
        builder = builder.add_extension(
            x509.NameConstraints(
                permitted_subtrees=[x509.UniformResourceIdentifier(trust_domain(party))],
                excluded_subtrees=None,
            ),
            critical=True,
        )
    return builder.sign(key, hashes.SHA256()), key


def _issue_leaf(
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    public_key: CertificatePublicKeyTypes,
    identity: Identity,
    *,
    at: datetime,
    days: int,
    dns_names: Sequence[str] = (),
    ip_addresses: Sequence[ipaddress.IPv4Address | ipaddress.IPv6Address] = (),
) -> x509.Certificate:
    if identity.role is Role.GATEWAY:
        common_name = f"Hotline {identity.party} gateway"
        usage = _key_usage(digital_signature=True)
        ekus = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
    elif identity.role is Role.OPERATOR:
        common_name = f"Hotline {identity.party} operator {identity.name}"
        usage = _key_usage(digital_signature=True)
        ekus = [ExtendedKeyUsageOID.CLIENT_AUTH]
    else:
        common_name = f"Hotline {identity.party} message signing"
        usage = _key_usage(digital_signature=True, content_commitment=True)
        ekus = [DOCUMENT_SIGNING]
    # A leaf never outlives its CA: validity is clamped to the CA's.
    not_before = max(at - BACKDATE, ca_cert.not_valid_before_utc)
    not_after = min(at + timedelta(days=days), ca_cert.not_valid_after_utc)
    names: list[x509.GeneralName] = [x509.DNSName(n) for n in dns_names]
    names += [x509.IPAddress(a) for a in ip_addresses]
    names.append(x509.UniformResourceIdentifier(identity.spiffe_id))
    try:
        ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        aki = x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)
    except x509.ExtensionNotFound:
        aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key())
    builder = (
        x509.CertificateBuilder()
        .subject_name(_subject(identity.party, common_name))
        .issuer_name(ca_cert.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(usage, critical=True)
        .add_extension(x509.ExtendedKeyUsage(ekus), critical=False)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(aki, critical=False)
    )
    return builder.sign(ca_key, hashes.SHA256())


def _gateway_names(
    party: str, extra_dns: Iterable[str] = ()
) -> tuple[list[str], list[ipaddress.IPv4Address | ipaddress.IPv6Address]]:
    dns = _check_dns([f"gateway.{trust_domain(party)}", LOOPBACK_DNS, *extra_dns])
    return dns, _check_ips([LOOPBACK_IP])


def _write_pair(cert_path: Path, key_path: Path, cert: x509.Certificate, key: PrivateKey) -> None:
    write_private_key(key_path, key)  # key first: the certificate is the commit point
    write_public(cert_path, certificate_pem(cert))


# --------------------------------------------------------------------------------------------
# Loading


def load_key_pair(cert_path: Path, key_path: Path) -> tuple[x509.Certificate, PrivateKey]:
    """Load a certificate and its private key, refusing a key that does not match."""
    cert = load_certificate(cert_path)
    key = load_private_key(key_path)
    if not key_matches(cert, key):
        raise CertsError(f"private key {key_path} does not match certificate {cert_path}")
    return cert, key


def load_signing_key(path: Path) -> ed25519.Ed25519PrivateKey:
    """The party's Ed25519 message-signing key (`signing.key`)."""
    key = load_private_key(path)
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise CertsError(f"{path} holds an ECDSA key; a message-signing key must be Ed25519")
    return key


def load_revocations(directory: Path, party: str) -> RevocationSet:
    """What party `party`'s gateway checks: its own CA's CRL and the peer CA's CRL.

    Both are read from the party's own folder, so it is self-contained: `crl.pem` verified with
    `ca.crt`, and `peer-crl.pem` verified with `peer-ca.crt`. `revoke` and `refresh_crl` keep
    `peer-crl.pem` in step when both parties' folders are in one directory; in a split
    deployment the peer's latest `crl.pem` must be delivered there as `peer-crl.pem`.
    """
    return load_party_revocations(PkiLayout.load(directory).party(party))


def load_party_revocations(paths: PartyPaths) -> RevocationSet:
    """`load_revocations` for one party's folder alone (no `pki.json` needed)."""
    return RevocationSet(
        [
            RevocationList.load(paths.crl, load_certificate(paths.ca_cert)),
            RevocationList.load(paths.peer_crl, load_certificate(paths.peer_ca_cert)),
        ]
    )


def _open(directory: Path, party: str) -> tuple[PkiLayout, PartyPaths]:
    layout = PkiLayout.load(directory)
    return layout, layout.party(validate_party(party))


def _load_issuer(
    paths: PartyPaths, at: datetime
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """The party's CA certificate and key, checked: matching, of this party, and in validity."""
    cert, key = load_key_pair(paths.ca_cert, paths.ca_key)
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not is_ca(cert):
        raise CertsError(f"{paths.ca_cert} is not a Hotline CA certificate with an ECDSA key")
    owner = ca_party(cert)
    if owner != paths.party:
        raise CertsError(
            f"CA certificate {paths.ca_cert} belongs to party {owner}, not {paths.party}"
        )
    check_validity(cert, now=at, what=f"CA certificate {paths.ca_cert}")
    return cert, key


# --------------------------------------------------------------------------------------------
# Operations


def init_pki(
    directory: Path,
    parties: Sequence[str] = DEFAULT_PARTIES,
    operators: Sequence[str] = DEFAULT_OPERATORS,
    *,
    force: bool = False,
    validity_days: int = DEFAULT_VALIDITY_DAYS,
    now: datetime | None = None,
    ca_validity_days: int | None = None,
    name_constraints: bool = True,
) -> PkiLayout:
    """Create a complete two-party PKI in `directory` (see the module docstring for the layout).

    `validity_days` applies to the leaves; the CAs last `ca_validity_days` (default ten years,
    never less than `validity_days`). Refuses to overwrite any existing file unless `force`.
    `now` fixes the issue time (tests use it to make certificates that are already expired).
    """
    directory = Path(directory)
    codes = _check_parties(parties)
    names = _check_operators(operators)
    _check_days(validity_days)
    ca_days = _check_days(
        ca_validity_days or max(DEFAULT_CA_VALIDITY_DAYS, validity_days), "CA validity"
    )
    at = _now(now)
    if directory.exists() and not directory.is_dir():
        raise CertsError(f"{directory} exists and is not a directory")
    all_paths = {code: PartyPaths.of(directory, code) for code in codes}
    targets = [directory / MANIFEST_NAME]
    for paths in all_paths.values():
        targets += paths.files(names)
    if not force:
        _refuse_existing(targets)

    cas = {code: _make_ca(code, at, ca_days, name_constraints=name_constraints) for code in codes}
    for code in codes:
        paths = all_paths[code]
        ca_cert, ca_key = cas[code]
        _write_pair(paths.ca_cert, paths.ca_key, ca_cert, ca_key)

        gateway_key = _new_ec_key()
        dns, ips = _gateway_names(code)
        gateway_cert = _issue_leaf(
            ca_cert,
            ca_key,
            gateway_key.public_key(),
            Identity.gateway(code),
            at=at,
            days=validity_days,
            dns_names=dns,
            ip_addresses=ips,
        )
        _write_pair(paths.gateway_cert, paths.gateway_key, gateway_cert, gateway_key)

        signing_key = ed25519.Ed25519PrivateKey.generate()
        signing_cert = _issue_leaf(
            ca_cert,
            ca_key,
            signing_key.public_key(),
            Identity.signing(code),
            at=at,
            days=validity_days,
        )
        _write_pair(paths.signing_cert, paths.signing_key, signing_cert, signing_key)

        for name in names:
            operator_key = _new_ec_key()
            operator_cert = _issue_leaf(
                ca_cert,
                ca_key,
                operator_key.public_key(),
                Identity.operator(code, name),
                at=at,
                days=validity_days,
            )
            _write_pair(
                paths.operator_cert(name), paths.operator_key(name), operator_cert, operator_key
            )

        crl = build_crl(ca_cert, ca_key, [], number=1, now=at)
        write_public(paths.crl, crl.public_bytes(Encoding.PEM))

    for code in codes:
        paths = all_paths[code]
        peer_paths = all_paths[next(c for c in codes if c != code)]
        own = certificate_pem(cas[code][0])
        peer = certificate_pem(cas[peer_paths.party][0])
        write_public(paths.peer_ca_cert, peer)
        write_public(paths.peer_crl, peer_paths.crl.read_bytes())
        write_public(paths.bundle, own + peer)

    layout = PkiLayout(directory, codes, dict.fromkeys(codes, names), at)
    _write_manifest(layout)  # last: its presence marks a complete PKI
    return layout


def issue_operator(
    directory: Path,
    party: str,
    name: str,
    *,
    validity_days: int = DEFAULT_VALIDITY_DAYS,
    force: bool = False,
    now: datetime | None = None,
) -> Path:
    """Issue (or with `force`, replace) operator `name`'s key and certificate; returns the cert."""
    layout, paths = _open(directory, party)
    validate_operator_name(name)
    _check_days(validity_days)
    at = _now(now)
    if not force:
        _refuse_existing([paths.operator_cert(name), paths.operator_key(name)])
    ca_cert, ca_key = _load_issuer(paths, at)
    key = _new_ec_key()
    cert = _issue_leaf(
        ca_cert,
        ca_key,
        key.public_key(),
        Identity.operator(paths.party, name),
        at=at,
        days=validity_days,
    )
    _write_pair(paths.operator_cert(name), paths.operator_key(name), cert, key)
    known = dict(layout.operators)
    known[paths.party] = tuple(sorted({*known.get(paths.party, ()), name}))
    _write_manifest(PkiLayout(layout.directory, layout.parties, known, layout.created))
    return paths.operator_cert(name)


def issue_gateway(
    directory: Path,
    party: str,
    *,
    dns_names: Sequence[str] = (),
    ip_addresses: Sequence[str] = (),
    validity_days: int = DEFAULT_VALIDITY_DAYS,
    now: datetime | None = None,
) -> Path:
    """Reissue the gateway certificate for its existing key; returns the certificate path.

    The names are always `gateway.<party>.hotline`, `localhost` and 127.0.0.1, plus `dns_names`
    and `ip_addresses` (names from the previous certificate are not carried over, so reissuing
    is also how a name is removed). The key is unchanged, so the pair stays consistent
    throughout. For a new key, use `rotate_gateway`.
    """
    _, paths = _open(directory, party)
    _check_days(validity_days)
    at = _now(now)
    key = load_private_key(paths.gateway_key)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise CertsError(
            f"{paths.gateway_key} must hold an ECDSA key (TLS does not accept Ed25519)"
        )
    ca_cert, ca_key = _load_issuer(paths, at)
    dns, ips = _gateway_names(paths.party, dns_names)
    ips += [a for a in _check_ips(ip_addresses) if a not in ips]
    cert = _issue_leaf(
        ca_cert,
        ca_key,
        key.public_key(),
        Identity.gateway(paths.party),
        at=at,
        days=validity_days,
        dns_names=dns,
        ip_addresses=ips,
    )
    write_public(paths.gateway_cert, certificate_pem(cert))
    return paths.gateway_cert


def rotate_gateway(
    directory: Path,
    party: str,
    *,
    validity_days: int = DEFAULT_VALIDITY_DAYS,
    now: datetime | None = None,
) -> tuple[Path, Path]:
    """Give the gateway a new key and certificate; returns `(gateway.crt, gateway.key)`.

    The current pair is kept as `gateway.crt.prev` / `gateway.key.prev`. The new certificate
    keeps the current one's DNS names and IP addresses. Files are replaced atomically, key first
    and certificate last (see the module docstring), so a gateway re-reading them between
    handshakes (grpc's dynamic server credentials) switches without dropping its links.
    """
    _, paths = _open(directory, party)
    _check_days(validity_days)
    at = _now(now)
    ca_cert, ca_key = _load_issuer(paths, at)
    current = load_certificate(paths.gateway_cert)
    current_key = read_bytes(paths.gateway_key, "private key")
    try:
        san = current.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        dns = _check_dns(san.get_values_for_type(x509.DNSName))
        ips = san.get_values_for_type(x509.IPAddress)
        ip_list = [a for a in ips if isinstance(a, ipaddress.IPv4Address | ipaddress.IPv6Address)]
    except x509.ExtensionNotFound:
        dns, ip_list = _gateway_names(paths.party)
    if not dns:
        dns, ip_list = _gateway_names(paths.party)

    atomic_write(paths.gateway_key_prev, current_key, KEY_MODE)
    write_public(paths.gateway_cert_prev, certificate_pem(current))
    key = _new_ec_key()
    cert = _issue_leaf(
        ca_cert,
        ca_key,
        key.public_key(),
        Identity.gateway(paths.party),
        at=at,
        days=validity_days,
        dns_names=dns,
        ip_addresses=ip_list,
    )
    _write_pair(paths.gateway_cert, paths.gateway_key, cert, key)
    return paths.gateway_cert, paths.gateway_key


def _resign_crl(
    layout: PkiLayout,
    paths: PartyPaths,
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    at: datetime,
    extra: Sequence[x509.RevokedCertificate] = (),
) -> RevocationList:
    if paths.crl.exists():
        current = RevocationList.load(paths.crl, ca_cert)
        entries = list(current.crl)
        number = (current.number or 0) + 1
    else:
        entries, number = [], 1
    listed = {e.serial_number for e in entries}
    entries += [e for e in extra if e.serial_number not in listed]
    crl = build_crl(ca_cert, ca_key, entries, number=number, now=at)
    pem = crl.public_bytes(Encoding.PEM)
    write_public(paths.crl, pem)
    # The peer's copy, when its folder is here too (a split deployment delivers it instead).
    peer = layout.peer(paths.party)
    if peer.root.is_dir():
        write_public(peer.peer_crl, pem)
    return RevocationList(crl, ca_cert, source=f"revocation list {paths.crl}")


def revoke(
    directory: Path,
    party: str,
    cert_path: Path,
    *,
    reason: str = "unspecified",
    now: datetime | None = None,
) -> int:
    """Add the certificate at `cert_path` to party `party`'s CRL; returns its serial number.

    The CRL is re-signed by the CA with the next CRL number and a nextUpdate seven days on,
    and copied to the peer's `peer-crl.pem` when the peer's folder is in the same directory.
    Refuses a certificate that party's CA did not issue, and the CA certificate itself.
    Revoking an already revoked certificate changes nothing but re-signs the list.
    """
    layout, paths = _open(directory, party)
    flag = parse_reason(reason)
    at = _now(now)
    ca_cert, ca_key = _load_issuer(paths, at)
    cert = load_certificate(cert_path)
    if is_ca(cert):
        raise CertsError(f"{cert_path} is a CA certificate; only leaf certificates can be revoked")
    issued = cert.issuer == ca_cert.subject
    if issued:
        try:
            cert.verify_directly_issued_by(ca_cert)
        except (InvalidSignature, ValueError, TypeError):
            issued = False
    if not issued:
        raise CertsError(
            f"{cert_path} was not issued by the {paths.party} CA "
            f"(its issuer is {cert.issuer.rfc4514_string()!r}); "
            "revoke it with the party whose CA issued it"
        )
    entry = revoked_entry(cert.serial_number, reason=flag, when=at)
    _resign_crl(layout, paths, ca_cert, ca_key, at, [entry])
    return cert.serial_number


def refresh_crl(directory: Path, party: str, *, now: datetime | None = None) -> Path:
    """Re-sign party `party`'s CRL unchanged, with the next number and a new nextUpdate.

    Also refreshes the peer's copy (`DIR/<peer>/peer-crl.pem`) when that folder is present."""
    layout, paths = _open(directory, party)
    at = _now(now)
    ca_cert, ca_key = _load_issuer(paths, at)
    _resign_crl(layout, paths, ca_cert, ca_key, at)
    return paths.crl


# --------------------------------------------------------------------------------------------
# Describing


def fingerprint(cert: x509.Certificate) -> str:
    """SHA-256 fingerprint as `AB:CD:...` (the form `openssl x509 -fingerprint -sha256` prints)."""
    return cert.fingerprint(hashes.SHA256()).hex(":").upper()


def _key_type(key: object) -> str:
    if isinstance(key, ec.EllipticCurvePublicKey | ec.EllipticCurvePrivateKey):
        curve = {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}
        return f"ECDSA {curve.get(key.curve.name, key.curve.name)}"
    if isinstance(key, ed25519.Ed25519PublicKey | ed25519.Ed25519PrivateKey):
        return "Ed25519"
    if isinstance(key, rsa.RSAPublicKey | rsa.RSAPrivateKey):
        return f"RSA {key.key_size} bits"
    return type(key).__name__


def _validity_note(cert: x509.Certificate, at: datetime) -> str:
    if at > cert.not_valid_after_utc:
        return f"EXPIRED {(at - cert.not_valid_after_utc).days} days ago"
    if at < cert.not_valid_before_utc:
        return "NOT YET VALID"
    return f"valid for {(cert.not_valid_after_utc - at).days} days"


def _usage_text(cert: x509.Certificate) -> str:
    parts: list[str] = []
    try:
        ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
        for attr, text in (
            ("digital_signature", "digitalSignature"),
            ("content_commitment", "contentCommitment"),
            ("key_encipherment", "keyEncipherment"),
            ("key_agreement", "keyAgreement"),
            ("key_cert_sign", "keyCertSign"),
            ("crl_sign", "cRLSign"),
        ):
            if getattr(ku, attr):
                parts.append(text)
    except x509.ExtensionNotFound:
        pass
    try:
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        known = {
            ExtendedKeyUsageOID.SERVER_AUTH: "serverAuth",
            ExtendedKeyUsageOID.CLIENT_AUTH: "clientAuth",
            DOCUMENT_SIGNING: "documentSigning",
        }
        parts += [known.get(oid, oid.dotted_string) for oid in eku]
    except x509.ExtensionNotFound:
        pass
    return ", ".join(parts) or "(none)"


def _describe_cert(cert: x509.Certificate, title: str, at: datetime, path: Path | None) -> str:
    lines = [title]

    def row(name: str, value: str) -> None:
        lines.append(f"  {name + ':':<21}{value}")

    row("subject", cert.subject.rfc4514_string())
    row("issuer", cert.issuer.rfc4514_string())
    uris = uris_of(cert)
    if is_ca(cert):
        row("identity", ", ".join(uris) or "(no trust-domain URI)")
        try:
            row("role", f"root CA of {ca_party(cert)}")
        except CertsError as exc:
            row("role", f"CA ({exc})")
    else:
        try:
            identity = identity_of(cert)
            row("identity", identity.spiffe_id)
            row("role", f"{identity.role.value} of {identity.party}")
        except IdentityError as exc:
            row("identity", ", ".join(uris) or "(none)")
            row("role", f"unknown ({exc})")
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        dns = san.get_values_for_type(x509.DNSName)
        ips = san.get_values_for_type(x509.IPAddress)
        if dns:
            row("DNS names", ", ".join(dns))
        if ips:
            row("IP addresses", ", ".join(str(a) for a in ips))
    except x509.ExtensionNotFound:
        pass
    row("usage", _usage_text(cert))
    row("not before", format_time(cert.not_valid_before_utc))
    row("not after", f"{format_time(cert.not_valid_after_utc)}  ({_validity_note(cert, at)})")
    row("serial", f"{cert.serial_number:#x}")
    row("SHA-256 fingerprint", fingerprint(cert))
    public_key = cert.public_key()
    row("key type", _key_type(public_key))
    row("public key id", public_key_id(public_key))
    if path is not None and ".crt" in path.name:
        key_path = path.with_name(path.name.replace(".crt", ".key", 1))
        if key_path.is_file():
            try:
                key = load_private_key(key_path)
                match = "matches" if key_matches(cert, key) else "DOES NOT MATCH this certificate"
            except CertsError as exc:
                match = f"unreadable ({exc})"
            mode = stat.S_IMODE(key_path.stat().st_mode)
            warn = "" if mode & 0o077 == 0 else "  WARNING: readable by others"
            row("private key", f"{key_path.name} {match}, mode {mode:04o}{warn}")
    return "\n".join(lines)


def _describe_crl(crl: x509.CertificateRevocationList, title: str, at: datetime, path: Path) -> str:
    lines = [title]

    def row(name: str, value: str) -> None:
        lines.append(f"  {name + ':':<21}{value}")

    row("issuer", crl.issuer.rfc4514_string())
    ca_path = path.with_name("peer-ca.crt" if path.name == "peer-crl.pem" else "ca.crt")
    if ca_path.is_file():
        try:
            RevocationList.load(path, load_certificate(ca_path))
            row("signature", f"verified with {ca_path.name}")
        except CertsError as exc:
            row("signature", f"NOT VERIFIED: {exc}")
    try:
        number = crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
        row("CRL number", str(number))
    except x509.ExtensionNotFound:
        pass
    row("last update", format_time(crl.last_update_utc))
    next_update = crl.next_update_utc
    if next_update is not None:
        state = (
            f"STALE since {(at - next_update).days} days"
            if at > next_update
            else f"current for {(next_update - at).days} more days"
        )
        row("next update", f"{format_time(next_update)}  ({state})")
    entries = list(crl)
    row("revoked", str(len(entries)))
    for entry in entries:
        try:
            why = entry.extensions.get_extension_for_class(x509.CRLReason).value.reason.value
        except x509.ExtensionNotFound:
            why = "unspecified"
        lines.append(
            f"    {entry.serial_number:#x}  {why}, {format_time(entry.revocation_date_utc)}"
        )
    return "\n".join(lines)


def _describe_file(path: Path, at: datetime, title: str) -> str:
    data = read_bytes(path, "PKI")
    if b"-----BEGIN CERTIFICATE-----" in data:
        certs = load_certificates(path)
        if len(certs) == 1:
            return _describe_cert(certs[0], title, at, path)
        return "\n\n".join(
            _describe_cert(c, f"{title} [{i}/{len(certs)}]", at, None)
            for i, c in enumerate(certs, 1)
        )
    if b"-----BEGIN X509 CRL-----" in data:
        try:
            crl = x509.load_pem_x509_crl(data)
        except ValueError:
            raise CertsError(f"{path} holds a damaged revocation list") from None
        return _describe_crl(crl, f"{title}  (revocation list)", at, path)
    if b"PRIVATE KEY-----" in data:
        key = load_private_key(path)
        mode = stat.S_IMODE(path.stat().st_mode)
        warn = "" if mode & 0o077 == 0 else "  WARNING: readable by others"
        return (
            f"{title}  (private key)\n  {'key type:':<21}{_key_type(key)}\n"
            f"  {'public key id:':<21}{public_key_id(key.public_key())}\n"
            f"  {'mode:':<21}{mode:04o}{warn}"
        )
    raise CertsError(f"{path} is not a PEM certificate, revocation list or private key")


def describe(path: Path, *, now: datetime | None = None) -> str:
    """A human-readable summary of a certificate, bundle, CRL or key file, or of every
    certificate and CRL under a directory (as `hotline certs show` prints it)."""
    path = Path(path)
    at = _now(now)
    if path.is_dir():
        files = sorted(
            p
            for p in path.rglob("*")
            if p.is_file()
            and not p.name.startswith(".")
            and (p.name.endswith((".crt", ".pem", ".crt.prev")))
        )
        if not files:
            raise CertsError(f"{path} holds no certificates (*.crt) or revocation lists (*.pem)")
        return "\n\n".join(_describe_file(p, at, str(p.relative_to(path))) for p in files)
    if not path.exists():
        raise CertsError(f"{path} does not exist")
    return _describe_file(path, at, str(path))

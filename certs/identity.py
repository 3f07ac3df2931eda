"""Who a certificate speaks for: Hotline identities as SPIFFE IDs.

Every Hotline party (`JP`, `TW`, ...) is a SPIFFE trust domain, `<party lower>.hotline`, and every
leaf certificate carries exactly one SPIFFE ID in a URI subjectAltName, naming one of three roles:

    spiffe://jp.hotline/gateway              the party's gateway (TLS server and client)
    spiffe://jp.hotline/operator/watch-1     one watch officer (TLS client of its own gateway)
    spiffe://jp.hotline/signing              the party's Ed25519 message-signing key

A root CA carries the path-less ID of its trust domain (`spiffe://jp.hotline`), as the X509-SVID
specification recommends for signing certificates; `certs.verify.ca_party` reads it.

The grammar here is deliberately narrower than SPIFFE's: lowercase only, no port, user info,
query, fragment, percent-encoding, empty or dot segments, or trailing slash. Anything else is an
`IdentityError`, never a best-effort guess.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from cryptography import x509

from certs.errors import IdentityError

TRUST_DOMAIN_SUFFIX = "hotline"
SPIFFE_SCHEME = "spiffe://"
# SPIFFE caps an ID at 2048 bytes; ours are far shorter, so anything long is hostile or a mistake.
MAX_SPIFFE_ID_LENGTH = 2048

PARTY_PATTERN = re.compile(r"[A-Z]{2,8}")
OPERATOR_NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
_TRUST_DOMAIN = re.compile(r"(?P<party>[a-z]{2,8})\." + re.escape(TRUST_DOMAIN_SUFFIX))


class Role(StrEnum):
    """What a leaf certificate is for; the first path segment of its SPIFFE ID."""

    GATEWAY = "gateway"
    OPERATOR = "operator"
    SIGNING = "signing"


def validate_party(party: str) -> str:
    """Return `party` if it is a party code (2-8 uppercase ASCII letters), else raise."""
    if not isinstance(party, str) or PARTY_PATTERN.fullmatch(party) is None:
        raise IdentityError(
            f"invalid party code {party!r}: expected 2 to 8 uppercase letters A-Z, such as JP or TW"
        )
    return party


def validate_operator_name(name: str) -> str:
    """Return `name` if it is a valid operator name (DNS-label-like, lowercase), else raise."""
    if not isinstance(name, str) or OPERATOR_NAME_PATTERN.fullmatch(name) is None:
        raise IdentityError(
            f"invalid operator name {name!r}: expected 1 to 63 characters of a-z, 0-9 and '-', "
            "starting with a letter or digit (for example watch-1)"
        )
    return name


def trust_domain(party: str) -> str:
    """The SPIFFE trust domain of a party: `JP` -> `jp.hotline`."""
    return f"{validate_party(party).lower()}.{TRUST_DOMAIN_SUFFIX}"


def trust_domain_id(party: str) -> str:
    """The path-less SPIFFE ID of a party's trust domain, carried by its CA: `spiffe://jp.hotline`."""
    return SPIFFE_SCHEME + trust_domain(party)


def _split(uri: str) -> tuple[str, str]:
    """Split a Hotline SPIFFE ID into (party, path); path is '' or starts with '/'."""
    if not isinstance(uri, str):
        raise IdentityError(f"a SPIFFE ID must be a string, not {type(uri).__name__}")
    if len(uri) > MAX_SPIFFE_ID_LENGTH:
        raise IdentityError(f"SPIFFE ID is {len(uri)} characters long; the limit is 2048")
    if not uri.startswith(SPIFFE_SCHEME):
        raise IdentityError(f"{uri!r} is not a SPIFFE ID: it must start with 'spiffe://'")
    rest = uri[len(SPIFFE_SCHEME) :]
    domain, slash, path = rest.partition("/")
    match = _TRUST_DOMAIN.fullmatch(domain)
    if match is None:
        raise IdentityError(
            f"{uri!r}: trust domain {domain!r} is not a Hotline trust domain "
            f"(expected '<party>.{TRUST_DOMAIN_SUFFIX}' in lowercase, such as "
            f"'jp.{TRUST_DOMAIN_SUFFIX}', with no port or user info)"
        )
    return match.group("party").upper(), slash + path


def parse_trust_domain_id(uri: str) -> str:
    """Parse a path-less trust-domain ID (`spiffe://jp.hotline`) and return the party (`JP`)."""
    party, path = _split(uri)
    if path:
        raise IdentityError(f"{uri!r} names a workload, not a trust domain: it must have no path")
    return party


def parse_spiffe_id(uri: str) -> Identity:
    """Parse a Hotline workload SPIFFE ID into an `Identity`; raise `IdentityError` otherwise."""
    party, path = _split(uri)
    if not path:
        raise IdentityError(
            f"{uri!r} names a trust domain, not a workload: expected a path such as /gateway"
        )
    segments = path[1:].split("/")
    if any(segment == "" for segment in segments):
        raise IdentityError(f"{uri!r}: empty path segment (double or trailing '/')")
    head, *tail = segments
    try:
        role = Role(head)
    except ValueError:
        roles = ", ".join(r.value for r in Role)
        raise IdentityError(f"{uri!r}: unknown role {head!r} (expected one of: {roles})") from None
    if role is Role.OPERATOR:
        if len(tail) != 1:
            raise IdentityError(f"{uri!r}: an operator ID is spiffe://<domain>/operator/<name>")
        name: str | None = tail[0]
    else:
        if tail:
            raise IdentityError(f"{uri!r}: the {role} role takes no further path")
        name = None
    return Identity(party, role, name)


@dataclass(frozen=True)
class Identity:
    """An authenticated Hotline principal: party, role and (for operators) name.

    Build one with `Identity(party, role, name)`, the shortcuts `Identity.gateway("JP")` etc.,
    `parse_spiffe_id(uri)`, or `identity_of(certificate)`. Invalid combinations raise at once.
    """

    party: str
    role: Role
    name: str | None = None

    def __post_init__(self) -> None:
        validate_party(self.party)
        if not isinstance(self.role, Role):
            raise IdentityError(f"role must be a Role, not {self.role!r}")
        if self.role is Role.OPERATOR:
            if self.name is None:
                raise IdentityError("an operator identity needs a name")
            validate_operator_name(self.name)
        elif self.name is not None:
            raise IdentityError(f"the {self.role} role takes no name (got {self.name!r})")

    @classmethod
    def gateway(cls, party: str) -> Identity:
        return cls(party, Role.GATEWAY)

    @classmethod
    def operator(cls, party: str, name: str) -> Identity:
        return cls(party, Role.OPERATOR, name)

    @classmethod
    def signing(cls, party: str) -> Identity:
        return cls(party, Role.SIGNING)

    @property
    def trust_domain(self) -> str:
        """`jp.hotline` for party JP."""
        return trust_domain(self.party)

    @property
    def spiffe_id(self) -> str:
        """The URI carried in the certificate, e.g. `spiffe://jp.hotline/operator/watch-1`."""
        path = f"/{self.role.value}" if self.name is None else f"/{self.role.value}/{self.name}"
        return SPIFFE_SCHEME + self.trust_domain + path

    def __str__(self) -> str:
        return self.spiffe_id


def uris_of(cert: x509.Certificate) -> list[str]:
    """All URI subjectAltNames of a certificate (an empty list if it has no SAN extension)."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return san.get_values_for_type(x509.UniformResourceIdentifier)


def identity_of(cert: x509.Certificate) -> Identity:
    """The Hotline identity of a leaf certificate, read from its single URI subjectAltName.

    Raises `IdentityError` if the certificate has no URI SAN, several (the X509-SVID rule is
    exactly one), or one that is not a Hotline workload ID. This does not check who issued the
    certificate: `certs.verify.verify_chain` does that.
    """
    uris = uris_of(cert)
    if not uris:
        raise IdentityError(
            f"certificate {cert.subject.rfc4514_string()!r} carries no URI subjectAltName, "
            "so it has no Hotline identity"
        )
    if len(uris) > 1:
        raise IdentityError(
            f"certificate {cert.subject.rfc4514_string()!r} carries {len(uris)} URI "
            f"subjectAltNames ({', '.join(uris)}); an identity certificate must carry exactly one"
        )
    return parse_spiffe_id(uris[0])

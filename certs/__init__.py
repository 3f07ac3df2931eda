"""The Hotline PKI: national root CAs, gateway / operator / signing certificates, revocation.

Uses only `cryptography` and the standard library; imports no other Hotline package. The
security model and the file layout are in `certs/README.md`.

    from certs import init_pki, PartyPaths, verify_identity, load_revocations
    layout = init_pki(Path("pki"))                       # JP and TW, operator watch-1
    jp = layout.party("JP")                              # jp.gateway_cert, jp.bundle, ...
"""

from certs._io import PrivateKey
from certs.errors import CertsError, IdentityError, RevokedError
from certs.identity import (
    TRUST_DOMAIN_SUFFIX,
    Identity,
    Role,
    identity_of,
    parse_spiffe_id,
    parse_trust_domain_id,
    trust_domain,
    trust_domain_id,
    validate_operator_name,
    validate_party,
)
from certs.pki import (
    DEFAULT_OPERATORS,
    DEFAULT_PARTIES,
    PartyPaths,
    PkiLayout,
    describe,
    fingerprint,
    init_pki,
    issue_gateway,
    issue_operator,
    load_certificate,
    load_certificates,
    load_key_pair,
    load_party_revocations,
    load_private_key,
    load_revocations,
    load_signing_key,
    refresh_crl,
    revoke,
    rotate_gateway,
)
from certs.revocation import CRL_VALIDITY, RevocationList, RevocationSet
from certs.verify import (
    ca_party,
    check_validity,
    key_matches,
    public_key_id,
    verify_chain,
    verify_identity,
)

__all__ = [
    "CRL_VALIDITY",
    "DEFAULT_OPERATORS",
    "DEFAULT_PARTIES",
    "TRUST_DOMAIN_SUFFIX",
    "CertsError",
    "Identity",
    "IdentityError",
    "PartyPaths",
    "PkiLayout",
    "PrivateKey",
    "RevocationList",
    "RevocationSet",
    "RevokedError",
    "Role",
    "ca_party",
    "check_validity",
    "describe",
    "fingerprint",
    "identity_of",
    "init_pki",
    "issue_gateway",
    "issue_operator",
    "key_matches",
    "load_certificate",
    "load_certificates",
    "load_key_pair",
    "load_party_revocations",
    "load_private_key",
    "load_revocations",
    "load_signing_key",
    "parse_spiffe_id",
    "parse_trust_domain_id",
    "public_key_id",
    "refresh_crl",
    "revoke",
    "rotate_gateway",
    "trust_domain",
    "trust_domain_id",
    "validate_operator_name",
    "validate_party",
    "verify_chain",
    "verify_identity",
]

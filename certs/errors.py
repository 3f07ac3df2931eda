"""The exception tree of the `certs` package.

    CertsError            root: a PKI file, certificate or operation is wrong; the message says what
    ├── IdentityError     a SPIFFE ID or a party code / operator name is malformed, or a
    │                     certificate does not carry exactly one Hotline identity
    └── RevokedError      a certificate is on its issuer's revocation list

`certs` depends on no other Hotline package, so these do not derive from `hotline.HotlineError`;
callers translate them at their own boundary (the CLI prints them, the gateway refuses the call).
"""

from __future__ import annotations


class CertsError(Exception):
    """Root of all errors raised on purpose by `certs`."""


class IdentityError(CertsError):
    """A SPIFFE ID, party code or operator name is malformed, or a certificate has no identity."""


class RevokedError(CertsError):
    """A certificate appears on the revocation list of the CA that issued it."""

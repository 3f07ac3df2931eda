"""What the suite needs from a PKI directory (`hotline certs init` layout) to play the other party.

Against a target gateway of party T, the suite plays party X, the other party of the PKI: as a
peer it presents X's gateway certificate, signs with X's message-signing key and trusts only
T's CA; as an operator it presents one of T's operator certificates and trusts T's CA. The
target's party is read from the certificate it presents unless `--target-party` names it.

Every problem is a `ConfigError` whose message says which file or setting to fix.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from certs.errors import CertsError
from certs.identity import Role as IdentityRole
from certs.identity import identity_of
from certs.pki import PartyPaths, PkiLayout, load_certificate, load_party_revocations
from certs.pki import load_signing_key as _load_signing_key
from certs.revocation import RevocationSet
from hotline.errors import ConfigError
from hotline.signing import KeyRing, Signer
from hotline.transport import gateway_host

HANDSHAKE_TIMEOUT = 5.0


class TargetUnreachable(ConfigError):
    """No TLS handshake with the target: it is down, not listening, or not speaking TLS 1.3."""


def split_address(address: str) -> tuple[str, int]:
    host, colon, port = address.rpartition(":")
    host = host.strip("[]")
    if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"target {address!r} is not HOST:PORT")
    return host, int(port)


def _client_context(cert: Path, key: Path, cafiles: list[Path], name_check: bool) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.check_hostname = name_check
    for cafile in cafiles:
        context.load_verify_locations(cafile=str(cafile))
    context.load_cert_chain(str(cert), str(key))
    context.set_alpn_protocols(["h2"])
    return context


async def read_server_certificate(
    address: str,
    *,
    cert: Path,
    key: Path,
    cafiles: list[Path],
    server_name: str | None,
    timeout: float = HANDSHAKE_TIMEOUT,
) -> x509.Certificate:
    """The certificate the server at `address` presents in a TLS 1.3 handshake (verified
    against `cafiles`, and against `server_name` when given)."""
    host, port = split_address(address)
    try:
        context = _client_context(cert, key, cafiles, server_name is not None)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot load {cert} with its key {key}, or a CA file: {exc}") from None
    try:
        async with asyncio.timeout(timeout):
            _, writer = await asyncio.open_connection(
                host, port, ssl=context, server_hostname=server_name or host
            )
    except ssl.SSLCertVerificationError as exc:
        raise ConfigError(
            f"the target at {address} presents a certificate that fails verification: "
            f"{exc.verify_message}"
        ) from None
    except (OSError, TimeoutError, ssl.SSLError) as exc:
        raise TargetUnreachable(
            f"cannot reach the target at {address} (no TLS 1.3 handshake within {timeout:g} s): "
            f"{exc or type(exc).__name__}"
        ) from None
    try:
        tls = writer.get_extra_info("ssl_object")
        der = tls.getpeercert(binary_form=True) if isinstance(tls, ssl.SSLObject) else None
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            async with asyncio.timeout(1.0):
                await writer.wait_closed()
    if not der:
        raise TargetUnreachable(f"the target at {address} presented no certificate")
    return x509.load_der_x509_certificate(der)


@dataclass(frozen=True)
class Material:
    pki: PkiLayout
    target: str  # the target gateway's party
    us: str  # the party the suite plays (the other one)

    @property
    def target_paths(self) -> PartyPaths:
        return self.pki.party(self.target)

    @property
    def our_paths(self) -> PartyPaths:
        return self.pki.party(self.us)

    # -- peer role

    def gateway_files(self) -> tuple[Path, Path, Path]:
        """Our gateway certificate, its key, and the target's CA (what we trust)."""
        ours = self.our_paths
        return ours.gateway_cert, ours.gateway_key, self.target_paths.ca_cert

    def signer(self) -> Signer:
        ours = self.our_paths
        return _signer(ours.signing_key, ours.signing_cert)

    def target_signer(self) -> Signer | None:
        """The target party's own signing key, when the PKI holds it (to sign as the wrong
        party); None otherwise."""
        paths = self.target_paths
        if not paths.signing_key.exists():
            return None
        return _signer(paths.signing_key, paths.signing_cert)

    def revocations(self) -> RevocationSet:
        try:
            return load_party_revocations(self.our_paths)
        except (CertsError, OSError) as exc:
            raise ConfigError(
                f"cannot load the revocation lists of party {self.us}: {exc}"
            ) from None

    def keyring_for_target(self) -> KeyRing:
        """The keys we accept the target's Welcome and batch receipts from: signing
        certificates issued by the target's CA only, checked against the revocation lists."""
        return KeyRing([_cert(self.target_paths.ca_cert)], revocations=self.revocations())

    def our_signing_der(self) -> bytes:
        return _cert(self.our_paths.signing_cert).public_bytes(Encoding.DER)

    # -- operator role

    def operator_files(self, name: str | None) -> tuple[str, Path, Path, Path]:
        """(name, certificate, key, CA) of an operator of the target's party."""
        paths = self.target_paths
        names = [name] if name else list(self.pki.operators.get(self.target, ()))
        if not names:
            names = paths.operator_names()
        for candidate in names:
            cert, key = paths.operator_cert(candidate), paths.operator_key(candidate)
            if cert.exists() and key.exists():
                return candidate, cert, key, paths.ca_cert
        wanted = f"operator {name!r}" if name else "any operator"
        raise ConfigError(
            f"the PKI at {self.pki.directory} holds no certificate for {wanted} of party "
            f"{self.target} (in {paths.operators_dir}); issue one with `hotline certs issue "
            f"operator --dir {self.pki.directory} --party {self.target} NAME`"
        )

    def has_peer_material(self) -> bool:
        ours = self.our_paths
        return all(
            p.exists()
            for p in (ours.gateway_cert, ours.gateway_key, ours.signing_cert, ours.signing_key)
        )


def _cert(path: Path) -> x509.Certificate:
    try:
        return load_certificate(path)
    except (CertsError, OSError) as exc:
        raise ConfigError(f"cannot load certificate {path}: {exc}") from None


def _signer(key_path: Path, cert_path: Path) -> Signer:
    try:
        return Signer.from_certificate(_load_signing_key(key_path), _cert(cert_path))
    except (CertsError, OSError) as exc:
        raise ConfigError(f"cannot load signing key {key_path}: {exc}") from None
    except Exception as exc:  # SignatureError: a key that does not match its certificate
        raise ConfigError(f"signing key {key_path} with {cert_path}: {exc}") from None


def load_pki(directory: Path) -> PkiLayout:
    try:
        return PkiLayout.load(directory)
    except CertsError as exc:
        raise ConfigError(str(exc)) from None


async def detect_target_party(pki: PkiLayout, address: str) -> str:
    """The party of the gateway at `address`, from the SPIFFE ID of the certificate it presents
    (we present the first party's gateway certificate and trust both CAs)."""
    errors = []
    for party in pki.parties:
        paths = pki.party(party)
        if not (paths.gateway_cert.exists() and paths.gateway_key.exists()):
            continue
        cafiles = [pki.party(p).ca_cert for p in pki.parties]
        try:
            cert = await read_server_certificate(
                address,
                cert=paths.gateway_cert,
                key=paths.gateway_key,
                cafiles=cafiles,
                server_name=None,
            )
        except TargetUnreachable:
            raise
        except ConfigError as exc:
            errors.append(str(exc))
            continue
        try:
            identity = identity_of(cert)
        except CertsError as exc:
            raise ConfigError(
                f"the target's certificate names no Hotline identity: {exc}"
            ) from None
        if identity.role is not IdentityRole.GATEWAY or identity.party not in pki.parties:
            raise ConfigError(
                f"the target presents {identity.spiffe_id}, not a gateway of the PKI's parties "
                f"({', '.join(pki.parties)}); pass --target-party"
            )
        return identity.party
    raise ConfigError(
        "cannot tell the target's party from its certificate"
        + (f": {'; '.join(errors)}" if errors else " (the PKI holds no gateway certificate)")
        + "; pass --target-party"
    )


async def load_material(pki_dir: Path, address: str, target_party: str | None) -> Material:
    pki = load_pki(pki_dir)
    target = target_party or await detect_target_party(pki, address)
    if target not in pki.parties:
        raise ConfigError(
            f"--target-party {target} is not a party of the PKI at {pki_dir} "
            f"({', '.join(pki.parties)})"
        )
    return Material(pki, target, pki.peer_of(target))


__all__ = [
    "Material",
    "TargetUnreachable",
    "gateway_host",
    "load_material",
    "read_server_certificate",
]

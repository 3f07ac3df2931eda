"""Reading and writing PKI files: PEM parsing with useful errors, and atomic, mode-exact writes.

Every write goes to a temporary file in the target's directory, created with its final mode
(0600 for private keys, so a key is never readable by others even for a moment), fsynced, and
renamed over the target with `os.replace`. A reader therefore sees either the old file or the new
one, never a partial one.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from certs.errors import CertsError

KEY_MODE = 0o600
PUBLIC_MODE = 0o644

PrivateKey = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
"""The private key types Hotline uses: ECDSA P-256 for TLS and CAs, Ed25519 for message signing."""


def read_bytes(path: Path, what: str) -> bytes:
    """Read a file, turning OS errors into a `CertsError` that names the file and what it is."""
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise CertsError(f"{what} file {path} does not exist") from None
    except IsADirectoryError:
        raise CertsError(f"{what} path {path} is a directory, not a file") from None
    except OSError as exc:
        raise CertsError(f"cannot read {what} file {path}: {exc.strerror or exc}") from None


def load_certificates(path: Path) -> list[x509.Certificate]:
    """All certificates in a PEM file (a bundle holds several); at least one is required."""
    data = read_bytes(path, "certificate")
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError:
        certs = []
    if not certs:
        raise CertsError(
            f"{path} does not hold a PEM certificate (expected -----BEGIN CERTIFICATE)"
        )
    return certs


def load_certificate(path: Path) -> x509.Certificate:
    """The single certificate in a PEM file; a file holding several is refused."""
    certs = load_certificates(path)
    if len(certs) != 1:
        raise CertsError(f"{path} holds {len(certs)} certificates; expected exactly one")
    return certs[0]


def load_private_key(path: Path) -> PrivateKey:
    """An unencrypted PKCS#8 PEM private key: ECDSA (P-256) or Ed25519."""
    data = read_bytes(path, "private key")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise CertsError(
            f"private key {path} is encrypted; Hotline keys are stored unencrypted"
        ) from None
    except (ValueError, UnsupportedAlgorithm):
        raise CertsError(
            f"{path} does not hold a PEM private key (expected -----BEGIN PRIVATE KEY)"
        ) from None
    if isinstance(key, ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey):
        return key
    raise CertsError(
        f"private key {path} is {type(key).__name__}; Hotline uses only ECDSA and Ed25519 keys"
    )


def private_key_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def certificate_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _fsync_directory(directory: Path) -> None:
    # Makes the rename itself durable; some filesystems do not allow opening directories.
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write(path: Path, data: bytes, mode: int) -> None:
    """Replace `path` with `data` atomically; the file has exactly `mode` from its first byte."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.fchmod(fd, mode)  # os.open's mode is filtered by the umask; the file needs exactly this
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    os.close(fd)
    try:
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_directory(path.parent)


def write_private_key(path: Path, key: PrivateKey) -> None:
    atomic_write(path, private_key_pem(key), KEY_MODE)


def write_public(path: Path, data: bytes) -> None:
    atomic_write(path, data, PUBLIC_MODE)

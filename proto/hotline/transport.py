"""mTLS transport shared by the gateway and the operator client: credentials, pinned names,
and the keepalive settings of both ends, tuned against each other in one place.

This is the one hand-written module of the `hotline` package that touches grpc (beside the
generated stubs); the protocol's rules never do. `server` and `client` both use it and never
import each other.

Secure channels: present our certificate, trust only the right CA, pin the peer's name.

grpcio's Python API does not expose the server's certificate to a client, so a client cannot
read the server's SPIFFE URI itself. It pins the server's identity in the two ways the API
allows, which together are equivalent for certificates our PKI issues:

* the only trusted root is the CA of the party the server must belong to (the peer's CA for the
  peer gateway, our own CA for our gateway), so no other party's certificate is accepted; and
* the server name checked in the handshake is `gateway.<party>.hotline`, a DNS name that each
  national CA issues only beside that party's gateway URI (`spiffe://<party>.hotline/gateway`).

Neither is a revocation check: grpcio's handshake has none, so a server holding a *revoked*
certificate of the peer's gateway would pass both. The gateway's dialler therefore reads the
peer's certificate itself before every connection attempt, with one short TLS 1.3 handshake of
Python's `ssl` configured exactly as this channel (same certificate, same single trusted CA,
same pinned name), and dials only if the certificate carries the peer gateway's SPIFFE URI and
is not on the current revocation lists (`server.peerlink.peer_certificate`, which also says why
checking on a handshake separate from gRPC's is sound).

At the message layer the peer gateway must then sign every receipt with its party's key.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import grpc

from hotline.errors import ConfigError

# Keepalive, both ends together: clients ping every 10 s when idle; servers ping every 20 s and
# allow client pings as often as every 5 s, with no strikes, so grpc never closes a connection
# for "too_many_pings" (by default a server tolerates one ping per 5 minutes).
SERVER_OPTIONS: tuple[tuple[str, int], ...] = (
    ("grpc.keepalive_time_ms", 20_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
    ("grpc.http2.max_ping_strikes", 0),
)
CLIENT_OPTIONS: tuple[tuple[str, int | str], ...] = (
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.max_receive_message_length", 16 * 1024 * 1024),
    # After the gateway restarts, reconnect within a fraction of a second (grpc's default
    # backoff starts at 1 s and grows to 2 min): a console's retries then find it up.
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 5_000),
)


def gateway_host(party: str) -> str:
    """The DNS name in the gateway certificate of `party`."""
    return f"gateway.{party.lower()}.hotline"


def read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{what} file {path} does not exist") from None
    except OSError as exc:
        raise ConfigError(f"cannot read {what} file {path}: {exc}") from None


def credentials(cert: Path, key: Path, trusted_ca: Path) -> grpc.ChannelCredentials:
    """mTLS channel credentials: our certificate and key, and the one CA we trust."""
    return grpc.ssl_channel_credentials(
        root_certificates=read(trusted_ca, "CA certificate"),
        private_key=read(key, "private key"),
        certificate_chain=read(cert, "certificate"),
    )


def secure_channel(
    address: str,
    creds: grpc.ChannelCredentials,
    *,
    server_party: str,
    options: Sequence[tuple[str, int | str]] = (),
) -> grpc.aio.Channel:
    """An aio channel to a gateway of `server_party`, with its name pinned."""
    return grpc.aio.secure_channel(
        address,
        creds,
        options=[
            *CLIENT_OPTIONS,
            ("grpc.ssl_target_name_override", gateway_host(server_party)),
            *options,
        ],
    )

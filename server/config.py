"""Gateway configuration: one TOML file per party's gateway.

Every setting, with its default (paths are relative to the configuration file's folder):

    party = "JP"                      # this gateway's party code (required)
    peer_party = "TW"                 # the other party's code (required)
    listen = "127.0.0.1:50051"        # host:port to serve on (port 0 = any free port)
    peer_address = "127.0.0.1:50052"  # host:port of the peer gateway (required); for a peer
                                      #   running active/standby, "host1:port,host2:port",
                                      #   dialled in order (README "Running on PostgreSQL")
    journal = "journal.db"            # the journal: a SQLite file (created if missing), or a
                                      #   PostgreSQL database, "postgresql://user@host/db"
                                      #   (README "Running on PostgreSQL"; no password here:
                                      #   use ~/.pgpass or PGPASSWORD)
    standby = false                   # PostgreSQL only: if another gateway holds the journal,
                                      #   wait as its standby (health NOT_SERVING, every other
                                      #   call UNAVAILABLE) and take over when its lock frees;
                                      #   false: refuse to start ("in use by another gateway")
    pki_dir = "pki"                   # folder made by `hotline certs init` (see certs/README.md)
    heartbeat_interval_s = 2.0        # ping every this many seconds on each link
    dead_after_s = 6.0                # declare a link down after this long without a frame
    reconnect_min_s = 0.2             # first reconnect delay; doubles up to reconnect_max_s,
    reconnect_max_s = 10.0            #   each delay drawn with full jitter
    window = 256                      # at most this many unreceipted deliveries in flight
    checkpoint_interval_s = 60.0      # sign and send a journal checkpoint this often
    deadline_check_s = 1.0            # how often to look for messages past their deadline
    max_message_bytes = 1048576       # largest request accepted (RESOURCE_EXHAUSTED above; >= 1 MiB)
    operator_rate_per_s = 200.0       # sends per second per operator (token bucket) ...
    operator_burst = 400              #   ... with this burst; RESOURCE_EXHAUSTED above
    outbox_limit = 100000             # messages journaled but not yet settled by the peer;
                                      #   a Send beyond it gets RESOURCE_EXHAUSTED "outbox full"
    submit_slots = 8                  # PRIORITY/ROUTINE submissions checked and signed at once;
                                      #   FLASH/IMMEDIATE never wait for one (server/service.py)

    # Admission control (server/admission.py): calls held at once, per lane. A call over its
    # allowance is refused with RESOURCE_EXHAUSTED naming the limit; nothing is journaled.
    operator_streams = 32             # streams (Watch, reflection) open at once per operator
    operator_calls = 128              # unary calls (Send, GetMessage, ...) at once per operator
    operators_total = 1024            # both of the above, all operators together
    peer_link_calls = 8               # PeerLinkService calls of the peer gateway: an allowance
                                      #   of its own, never drawn on by operators
    health_calls = 8                  # health checks at once per caller (any authenticated
    health_total = 64                 #   caller), and for all callers together: also separate
    max_concurrent_rpcs = 0           # grpc's global cap on calls at once, counted before the
                                      #   caller is known (so it refuses the peer link too):
                                      #   0 = operators_total + peer_link_calls + health_total
                                      #   + 64, so it never binds before the allowances above;
                                      #   a smaller value is refused

    # Connections (grpc core, before any call): a bound on descriptors, not on who holds them.
    max_connections = 4096            # TCP connections at once, handshake or not; beyond this
                                      #   a connection is closed at accept (fewer if the
                                      #   open-file limit, raised to its hard limit at start,
                                      #   leaves no room: 256 descriptors are kept free)
    handshake_timeout_s = 5.0         # close a connection whose TLS handshake and HTTP/2 set-up
                                      #   are not done by then (grpc's own default: 120 s)
    connection_idle_s = 600.0         # close (GOAWAY) an authenticated connection that has had
                                      #   no call for this long; clients reconnect; 0 = never
    crl_grace_s = 0.0                 # how long past its nextUpdate a revocation list is still
                                      #   taken as current; after that the calls of the party
                                      #   whose CA issued it are refused (alarm on Watch) until
                                      #   a current list is loaded: re-sign with `hotline certs
                                      #   crl` (weekly) before then. 0 = no grace
    log_level = "INFO"

    [deadlines]                       # acknowledgement deadlines, seconds, per precedence
    FLASH = 600                       #   (defaults after ACP 121: 10 min, 30 min, 3 h, 6 h)
    IMMEDIATE = 1800
    PRIORITY = 10800
    ROUTINE = 21600

The certificate files are taken from `pki_dir` in the layout `hotline certs init` writes
(`<pki_dir>/<party>/gateway.crt`, ...); in a real deployment each party's folder holds only its
own keys, its own CA and revocation list, and the peer's CA certificate (and, if the peer
publishes it, the peer's revocation list as `peer-crl.pem`).
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from certs.identity import validate_party
from certs.pki import PartyPaths
from hotline.deadlines import Deadlines
from hotline.errors import ConfigError
from hotline.journal_file import is_database_url
from hotline.link import MAX_FRAME_BYTES
from server.admission import REFUSAL_HEADROOM, Limits


@dataclass(frozen=True)
class GatewayConfig:
    party: str
    peer_party: str
    peer_address: str
    listen: str = "127.0.0.1:50051"
    journal: Path | str = Path("journal.db")  # a SQLite file, or a postgresql:// URL
    standby: bool = False
    pki_dir: Path = Path("pki")
    heartbeat_interval_s: float = 2.0
    dead_after_s: float = 6.0
    reconnect_min_s: float = 0.2
    reconnect_max_s: float = 10.0
    window: int = 256
    checkpoint_interval_s: float = 60.0
    deadline_check_s: float = 1.0
    max_message_bytes: int = 1_048_576
    operator_rate_per_s: float = 200.0
    operator_burst: int = 400
    outbox_limit: int = 100_000
    submit_slots: int = 8
    operator_streams: int = 32
    operator_calls: int = 128
    operators_total: int = 1024
    peer_link_calls: int = 8
    health_calls: int = 8
    health_total: int = 64
    max_concurrent_rpcs: int = 0
    max_connections: int = 4096
    handshake_timeout_s: float = 5.0
    connection_idle_s: float = 600.0
    crl_grace_s: float = 0.0
    log_level: str = "INFO"
    deadlines: Deadlines = field(default_factory=Deadlines)

    @property
    def paths(self) -> PartyPaths:
        return PartyPaths.of(self.pki_dir, self.party)

    @property
    def limits(self) -> Limits:
        """The admission allowances (checked by `check`)."""
        return Limits(
            operator_streams=self.operator_streams,
            operator_calls=self.operator_calls,
            operators_total=self.operators_total,
            peer_link_calls=self.peer_link_calls,
            health_calls=self.health_calls,
            health_total=self.health_total,
        )

    @property
    def concurrent_rpcs_cap(self) -> int:
        """grpc's global cap on concurrent calls (`max_concurrent_rpcs`, or its default)."""
        return self.max_concurrent_rpcs or self.limits.backstop

    @classmethod
    def load(cls, path: Path) -> GatewayConfig:
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"configuration file {path} does not exist") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from None
        return cls.from_mapping(raw, base=path.resolve().parent, source=str(path))

    @classmethod
    def from_mapping(
        cls, raw: dict[str, Any], *, base: Path, source: str = "configuration"
    ) -> GatewayConfig:
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(raw) - set(known))
        if unknown:
            raise ConfigError(f"{source}: unknown setting(s) {', '.join(unknown)}")
        for required in ("party", "peer_party", "peer_address"):
            if required not in raw:
                raise ConfigError(f"{source}: missing required setting {required!r}")
        values: dict[str, Any] = {}
        for name, value in raw.items():
            if name == "deadlines":
                if not isinstance(value, dict):
                    raise ConfigError(f"{source}: [deadlines] must be a table")
                try:
                    values[name] = Deadlines.from_names(value)
                except ValueError as exc:
                    raise ConfigError(f"{source}: [deadlines]: {exc}") from None
            elif name == "journal" and is_database_url(value):
                values[name] = value  # a PostgreSQL database, not a path
            elif name in ("journal", "pki_dir"):
                if not isinstance(value, str):
                    raise ConfigError(f"{source}: {name} must be a path string")
                values[name] = (base / value).resolve()
            else:
                values[name] = value
        try:
            config = cls(**values)
            validate_party(config.party)
            validate_party(config.peer_party)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{source}: {exc}") from None
        config.check(source)
        return config

    def check(self, source: str = "configuration") -> None:
        if self.party == self.peer_party:
            raise ConfigError(f"{source}: party and peer_party are both {self.party}")
        if not isinstance(self.standby, bool):
            raise ConfigError(f"{source}: standby must be true or false, got {self.standby!r}")
        if self.standby and not is_database_url(self.journal):
            raise ConfigError(
                f"{source}: standby needs a journal in PostgreSQL (journal = "
                '"postgresql://..."): a SQLite file cannot be shared by two hosts'
            )
        for name in (
            "heartbeat_interval_s",
            "dead_after_s",
            "reconnect_min_s",
            "checkpoint_interval_s",
        ):
            value = getattr(self, name)
            if not isinstance(value, int | float) or value <= 0:
                raise ConfigError(f"{source}: {name} must be a positive number, got {value!r}")
        if self.dead_after_s <= self.heartbeat_interval_s:
            raise ConfigError(f"{source}: dead_after_s must exceed heartbeat_interval_s")
        if not _is_int(self.max_message_bytes) or self.max_message_bytes < MAX_FRAME_BYTES:
            # the spec: a receiver accepts every peer-link frame up to 1 MiB
            raise ConfigError(
                f"{source}: max_message_bytes must be at least {MAX_FRAME_BYTES} (the peer "
                f"link's maximum frame size), got {self.max_message_bytes!r}"
            )
        if self.reconnect_max_s < self.reconnect_min_s:
            raise ConfigError(f"{source}: reconnect_max_s is below reconnect_min_s")
        if not isinstance(self.outbox_limit, int) or self.outbox_limit < 1:
            raise ConfigError(
                f"{source}: outbox_limit must be a positive whole number, got {self.outbox_limit!r}"
            )
        if not isinstance(self.submit_slots, int) or not 1 <= self.submit_slots <= 4096:
            raise ConfigError(f"{source}: submit_slots must be 1..4096, got {self.submit_slots!r}")
        if not 1 <= self.window <= 65536:
            raise ConfigError(f"{source}: window must be 1..65536, got {self.window}")
        try:
            limits = self.limits
        except ValueError as exc:
            raise ConfigError(f"{source}: {exc}") from None
        if not _is_int(self.max_concurrent_rpcs) or not (
            self.max_concurrent_rpcs == 0 or self.max_concurrent_rpcs >= limits.backstop
        ):
            raise ConfigError(
                f"{source}: max_concurrent_rpcs must be 0 (derived) or at least "
                f"{limits.backstop} (operators_total + peer_link_calls + health_total + "
                f"{REFUSAL_HEADROOM}), so that it never refuses the peer link before the "
                f"per-lane allowances bind; got {self.max_concurrent_rpcs!r}"
            )
        if not _is_int(self.max_connections) or self.max_connections < 1:
            raise ConfigError(
                f"{source}: max_connections must be a positive integer, "
                f"got {self.max_connections!r}"
            )
        if not _is_number(self.handshake_timeout_s) or self.handshake_timeout_s <= 0:
            raise ConfigError(
                f"{source}: handshake_timeout_s must be a positive number, "
                f"got {self.handshake_timeout_s!r}"
            )
        if not _is_number(self.connection_idle_s) or self.connection_idle_s < 0:
            raise ConfigError(
                f"{source}: connection_idle_s must be a number of seconds (0 = never), "
                f"got {self.connection_idle_s!r}"
            )
        if not _is_number(self.crl_grace_s) or self.crl_grace_s < 0:
            raise ConfigError(
                f"{source}: crl_grace_s must be a number of seconds (0 = no grace), "
                f"got {self.crl_grace_s!r}"
            )
        for address_name in ("listen", "peer_address"):
            address = getattr(self, address_name)
            if not isinstance(address, str) or ":" not in address:
                raise ConfigError(f"{source}: {address_name} must be host:port, got {address!r}")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)

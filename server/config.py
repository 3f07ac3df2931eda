"""Gateway configuration: one TOML file per party's gateway, checked by a typed model.

`GatewayConfig` is a strict pydantic model: an unknown key is refused (with a "did you mean"),
every value must have the right type (`window = "256"` is a string, not a number) and every
number lies in a stated range. A bad file is refused with one line per bad key naming the key,
the value and what is allowed (`ConfigError`; `hotline serve` exits 2). Paths are relative to
the configuration file's folder. Every setting, its default, range and meaning is in the
README's settings table, which is generated from this model (`python
tools/settings_tables.py`; a test fails when it is stale), and `hotline serve
--print-config-schema` writes the JSON Schema.

    party = "JP"
    peer_party = "TW"
    listen = "127.0.0.1:50051"
    peer_address = "127.0.0.1:50052"
    journal = "jp-journal.db"         # or "postgresql://user@host/db" (README "Running on PostgreSQL")
    standby = false                   # PostgreSQL only: wait as the standby of the holder
    pki_dir = "pki"

    [deadlines]                       # acknowledgement deadlines, seconds, per precedence
    FLASH = 600                       #   (defaults after ACP 121: 10 min, 30 min, 3 h, 6 h)

The certificate files are taken from `pki_dir` in the layout `hotline certs init` writes
(`<pki_dir>/<party>/gateway.crt`, ...); in a real deployment each party's folder holds only its
own keys, its own CA and revocation list, and the peer's CA certificate (and, if the peer
publishes it, the peer's revocation list as `peer-crl.pem`).
"""

from __future__ import annotations

import importlib
import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    WithJsonSchema,
    field_validator,
)

from certs.errors import CertsError
from certs.identity import validate_party
from certs.pki import PartyPaths
from hotline.deadlines import DEFAULT_DEADLINES_S, NAMES, Deadlines
from hotline.errors import ConfigError
from hotline.journal_file import is_database_url
from hotline.link import DEFAULT_LANES, DEFAULT_LOW_LANE, MAX_FRAME_BYTES
from server.admission import REFUSAL_HEADROOM, Limits
from server.metrics import MetricsTls
from settings import allowed, config_error, markdown_table, toml_value

__all__ = ["DeadlineSettings", "GatewayConfig", "readme_table"]

_METRICS_FILES = ("metrics_client_ca", "metrics_cert", "metrics_key")
_HOST_PORT = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[^\s:\[\]]+):(\d{1,5})$")
_STRICT = ConfigDict(strict=True, extra="forbid", frozen=True, allow_inf_nan=False)
DAY_S = 86_400.0
MILLION = 1_000_000


def _host_port(value: str) -> str:
    match = _HOST_PORT.match(value)
    if match is None or int(match.group(2)) > 65535:
        raise ValueError(f"must be {_ADDRESS_RULE}")
    return value


def _party(value: str) -> str:
    try:
        return validate_party(value)
    except CertsError:
        raise ValueError(f"must be {_PARTY_RULE}") from None


_PARTY_RULE = "2 to 8 uppercase letters A-Z, such as JP or TW"
_ADDRESS_RULE = "HOST:PORT with a port 0-65535, such as 127.0.0.1:50051"
_default = {name: DEFAULT_DEADLINES_S[p] for p, name in NAMES.items()}


class DeadlineSettings(BaseModel):
    """`[deadlines]`: seconds from journaling to the acknowledgement deadline, per precedence."""

    model_config = _STRICT

    FLASH: float = Field(_default["FLASH"], gt=0, le=30 * DAY_S, description="FLASH")
    IMMEDIATE: float = Field(_default["IMMEDIATE"], gt=0, le=30 * DAY_S, description="IMMEDIATE")
    PRIORITY: float = Field(_default["PRIORITY"], gt=0, le=30 * DAY_S, description="PRIORITY")
    ROUTINE: float = Field(_default["ROUTINE"], gt=0, le=30 * DAY_S, description="ROUTINE")

    def deadlines(self) -> Deadlines:
        return Deadlines.from_names(self.model_dump())


_DEADLINES_SCHEMA = DeadlineSettings.model_json_schema()


class GatewayConfig(BaseModel):
    """Everything `hotline serve` reads from its TOML file (see the module docstring)."""

    model_config = ConfigDict(
        strict=True,
        extra="forbid",
        frozen=True,
        allow_inf_nan=False,
        arbitrary_types_allowed=True,
    )

    party: str = Field(
        description="this gateway's party code", json_schema_extra={"allowed": _PARTY_RULE}
    )
    peer_party: str = Field(
        description="the other party's code", json_schema_extra={"allowed": _PARTY_RULE}
    )
    peer_address: str = Field(
        description="the peer gateway's address; for a peer running active/standby, "
        '"host1:port,host2:port", dialled in order',
        json_schema_extra={"allowed": _ADDRESS_RULE + ", or several, comma-separated"},
    )
    listen: str = Field(
        "127.0.0.1:50051",
        description="address to serve operators and the peer on (port 0: any free port)",
        json_schema_extra={"allowed": _ADDRESS_RULE},
    )
    journal: Path | str = Field(
        Path("journal.db"),
        description="the journal: a SQLite file (created if missing; relative to the file), or "
        'a PostgreSQL database, "postgresql://user@host/db" (no password here: use ~/.pgpass '
        'or PGPASSWORD; README "Running on PostgreSQL")',
    )
    standby: bool = Field(
        False,
        description="PostgreSQL only: if another gateway holds the journal, wait as its standby "
        "(health NOT_SERVING, every other call UNAVAILABLE) and take over when its lock frees; "
        'false: refuse to start ("in use by another gateway")',
    )
    pki_dir: Path = Field(
        Path("pki"), description="folder made by `hotline certs init`; relative to the file"
    )
    heartbeat_interval_s: float = Field(
        2.0, gt=0, le=3600, description="ping every this many seconds on each link"
    )
    dead_after_s: float = Field(
        6.0,
        gt=0,
        le=DAY_S,
        description="declare a link down after this long without a frame; must exceed "
        "heartbeat_interval_s",
    )
    reconnect_min_s: float = Field(
        0.2,
        gt=0,
        le=3600,
        description="first reconnect delay; doubles up to reconnect_max_s, each delay drawn "
        "with full jitter",
    )
    reconnect_max_s: float = Field(
        10.0, gt=0, le=DAY_S, description="longest reconnect delay; at least reconnect_min_s"
    )
    window: int = Field(
        256, ge=1, le=65536, description="at most this many unreceipted deliveries in flight"
    )
    checkpoint_interval_s: float = Field(
        60.0, gt=0, le=DAY_S, description="sign and send a journal checkpoint this often"
    )
    deadline_check_s: float = Field(
        1.0, gt=0, le=3600, description="how often to look for messages past their deadline"
    )
    max_message_bytes: int = Field(
        1_048_576,
        ge=MAX_FRAME_BYTES,
        le=1 << 30,
        description="largest request accepted (RESOURCE_EXHAUSTED above); at least the peer "
        "link's maximum frame size",
    )
    operator_rate_per_s: float = Field(
        200.0, gt=0, le=1e9, description="sends per second per operator (token bucket) ..."
    )
    operator_burst: int = Field(
        400, ge=1, le=10**9, description="... with this burst; RESOURCE_EXHAUSTED above"
    )
    outbox_limit: int = Field(
        100_000,
        ge=1,
        le=10**9,
        description='messages journaled but not yet settled by the peer; a Send beyond it gets RESOURCE_EXHAUSTED "outbox full"',
    )
    submit_slots: int = Field(
        8,
        ge=1,
        le=4096,
        description="PRIORITY/ROUTINE submissions checked and signed at once; FLASH/IMMEDIATE never wait for one",
    )
    low_precedence_in_flight: int = Field(
        DEFAULT_LOW_LANE,
        ge=1,
        le=256,
        description="PRIORITY, and ROUTINE, deliveries unsettled on the peer link at once (each "
        "lane): the work a new FLASH may wait behind at the peer; fewer makes that FLASH wait "
        "less, and a ROUTINE backlog drain slower, much slower while the gateway is busy "
        "(measured: 8 takes a FLASH from ~3x to ~2x its idle latency behind 2,000 ROUTINE, "
        "and cuts the delivered rate under full SendBatch load from ~1,380/s to ~390/s)",
    )
    operator_streams: int = Field(
        32, ge=1, le=MILLION, description="streams (Watch, reflection) open at once per operator"
    )
    operator_calls: int = Field(
        128,
        ge=1,
        le=MILLION,
        description="unary calls (Send, GetMessage, ...) at once per operator",
    )
    operators_total: int = Field(
        1024, ge=1, le=MILLION, description="both of the above, all operators together"
    )
    peer_link_calls: int = Field(
        16,
        ge=1,
        le=MILLION,
        description="PeerLinkService calls of the peer gateway: an allowance of its own, never "
        "drawn on by operators (a connection opens one Push stream per lane, 4; a reconnect may "
        "briefly overlap the streams it replaces)",
    )
    health_calls: int = Field(8, ge=1, le=MILLION, description="health checks at once per caller")
    health_total: int = Field(
        64, ge=1, le=MILLION, description="health checks at once, all callers together"
    )
    max_concurrent_rpcs: int | None = Field(
        None,
        ge=1,
        le=10 * MILLION,
        description="grpc's global cap on calls at once, counted before the caller is known "
        "(so it refuses the peer link too). Left out: operators_total + peer_link_calls + "
        f"health_total + {REFUSAL_HEADROOM}, so it never binds before the allowances above; a "
        "value below that is refused",
        json_schema_extra={"allowed": "or left out"},
    )
    max_connections: int = Field(
        4096,
        ge=1,
        le=MILLION,
        description="TCP connections at once, handshake or not; beyond this a connection is closed at accept",
    )
    handshake_timeout_s: float = Field(
        5.0,
        gt=0,
        le=600,
        description="close a connection whose TLS handshake and HTTP/2 set-up are not done by then",
    )
    connection_idle_s: float = Field(
        600.0,
        ge=0,
        le=7 * DAY_S,
        description="close (GOAWAY) an authenticated connection with no call for this long; 0 = never",
    )
    crl_grace_s: float = Field(
        0.0,
        ge=0,
        le=365 * DAY_S,
        description="how long past its nextUpdate a revocation list is still taken as current; 0 = no grace",
    )
    metrics_listen: str = Field(
        "",
        description="serve Prometheus metrics at http://HOST:PORT/metrics, on a port of its "
        "own (keep it on loopback: 127.0.0.1:9464); empty: no metrics endpoint",
        json_schema_extra={"allowed": f"empty, or {_ADDRESS_RULE}"},
    )
    metrics_client_ca: Path | None = Field(
        None,
        description="serve /metrics over HTTPS with mutual TLS, answering only clients (your "
        "Prometheus) that present a certificate issued by this CA (a PEM file; relative to the "
        "file): a monitoring CA of its own, or your party's ca.crt (then every operator "
        "certificate can scrape too); not set: plain HTTP",
        json_schema_extra={"allowed": "a path to a PEM CA certificate file, or left out"},
    )
    metrics_cert: Path | None = Field(
        None,
        description="the HTTPS endpoint's certificate chain (PEM; needs metrics_client_ca and "
        "metrics_key); not set: the gateway's own, pki_dir/<party>/gateway.crt and "
        "gateway.key. Read at start: restart after renewing it",
        json_schema_extra={"allowed": "a path to a PEM certificate file, or left out"},
    )
    metrics_key: Path | None = Field(
        None,
        description="the private key of metrics_cert (PEM, unencrypted)",
        json_schema_extra={"allowed": "a path to a PEM private key file, or left out"},
    )
    tracing: Literal["off", "otlp", "console"] = Field(
        "off",
        description="OpenTelemetry spans for operator calls (parent: the caller's W3C "
        "traceparent in gRPC metadata) and for each message's delivery and acknowledgement: "
        '"otlp" exports them over OTLP/gRPC (the OTEL_EXPORTER_OTLP_* variables; default '
        'localhost:4317), "console" prints them on stdout; needs the otel extra: pip install '
        "'hotline[otel]'",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = Field(
        "INFO", description="least severe log level written (any case)"
    )
    deadlines: Annotated[Deadlines, WithJsonSchema(_DEADLINES_SCHEMA)] = Field(
        default_factory=Deadlines,
        description="`[deadlines]` table: acknowledgement deadline in seconds per precedence "
        "(FLASH 600, IMMEDIATE 1800, PRIORITY 10800, ROUTINE 21600), each more than 0 and at "
        "most 30 days",
    )

    @field_validator("party", "peer_party")
    @classmethod
    def _check_party(cls, value: str) -> str:
        return _party(value)

    @field_validator("listen")
    @classmethod
    def _check_address(cls, value: str) -> str:
        return _host_port(value)

    @field_validator("peer_address")
    @classmethod
    def _check_peer_addresses(cls, value: str) -> str:
        for address in value.split(","):
            _host_port(address.strip())
        return value

    @field_validator("metrics_listen")
    @classmethod
    def _check_metrics_address(cls, value: str) -> str:
        return value and _host_port(value)

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_level(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    # -------------------------------------------------------------- derived settings

    @property
    def paths(self) -> PartyPaths:
        return PartyPaths.of(self.pki_dir, self.party)

    @property
    def limits(self) -> Limits:
        """The admission allowances."""
        return Limits(
            operator_streams=self.operator_streams,
            operator_calls=self.operator_calls,
            operators_total=self.operators_total,
            peer_link_calls=self.peer_link_calls,
            health_calls=self.health_calls,
            health_total=self.health_total,
        )

    @property
    def lanes(self) -> dict[int, int]:
        """The peer link's in-flight allowance per precedence rank (`hotline.link`)."""
        low = self.low_precedence_in_flight
        return {**DEFAULT_LANES, 3: low, 4: low}

    @property
    def metrics_tls(self) -> MetricsTls | None:
        """The /metrics endpoint's mutual TLS (`metrics_client_ca` set), or None: plain HTTP."""
        if self.metrics_client_ca is None:
            return None
        paths = self.paths
        return MetricsTls(
            cert=self.metrics_cert or paths.gateway_cert,
            key=self.metrics_key or paths.gateway_key,
            client_ca=self.metrics_client_ca,
        )

    @property
    def concurrent_rpcs_cap(self) -> int:
        """grpc's global cap on concurrent calls (`max_concurrent_rpcs`, or its default)."""
        return self.max_concurrent_rpcs or self.limits.backstop

    # -------------------------------------------------------------- reading

    @classmethod
    def load(cls, path: Path) -> GatewayConfig:
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"configuration file {path} does not exist") from None
        except OSError as exc:
            raise ConfigError(f"cannot read configuration file {path}: {exc}") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from None
        return cls.from_mapping(raw, base=path.resolve().parent, source=str(path))

    @classmethod
    def from_mapping(
        cls, raw: dict[str, Any], *, base: Path, source: str = "configuration"
    ) -> GatewayConfig:
        """Check a parsed file; raises `ConfigError` naming every bad key, value and range."""
        values = dict(raw)
        for name in ("journal", "pki_dir", *_METRICS_FILES):
            value = values.get(name)
            if isinstance(value, str) and not (name == "journal" and is_database_url(value)):
                values[name] = (base / Path(value).expanduser()).resolve()
        if "deadlines" in values:
            table = values["deadlines"]
            if not isinstance(table, dict):
                raise ConfigError(
                    f"{source}: deadlines = {toml_value(table)}: must be a table "
                    "([deadlines] with FLASH = seconds, ...)"
                )
            table = {str(k).upper(): v for k, v in table.items()}
            try:
                values["deadlines"] = DeadlineSettings.model_validate(table).deadlines()
            except ValidationError as exc:
                raise config_error(DeadlineSettings, exc, source, prefix="deadlines.") from None
        try:
            config = cls.model_validate(values)
        except ValidationError as exc:
            raise config_error(cls, exc, source) from None
        config.check(source)
        return config

    def check(self, source: str = "configuration") -> None:
        """The rules between settings (each setting's own range is the model's)."""
        if self.party == self.peer_party:
            raise ConfigError(f"{source}: party and peer_party are both {self.party}")
        if self.standby and not is_database_url(self.journal):
            raise ConfigError(
                f"{source}: standby needs a journal in PostgreSQL (journal = "
                '"postgresql://..."): a SQLite file cannot be shared by two hosts'
            )
        if self.dead_after_s <= self.heartbeat_interval_s:
            raise ConfigError(
                f"{source}: dead_after_s = {self.dead_after_s:g}: must exceed "
                f"heartbeat_interval_s ({self.heartbeat_interval_s:g})"
            )
        if self.reconnect_max_s < self.reconnect_min_s:
            raise ConfigError(
                f"{source}: reconnect_max_s = {self.reconnect_max_s:g}: must be at least "
                f"reconnect_min_s ({self.reconnect_min_s:g})"
            )
        self._check_metrics_tls(source)
        missing = _tracing_missing(self.tracing)
        if missing is not None:
            raise ConfigError(
                f"{source}: tracing = {toml_value(self.tracing)}: needs the OpenTelemetry "
                f"packages, and {missing} is not installed: pip install 'hotline[otel]' (or "
                'tracing = "off")'
            )
        backstop = self.limits.backstop
        if self.max_concurrent_rpcs is not None and self.max_concurrent_rpcs < backstop:
            raise ConfigError(
                f"{source}: max_concurrent_rpcs = {self.max_concurrent_rpcs}: must be at least "
                f"{backstop} (operators_total + peer_link_calls + health_total + "
                f"{REFUSAL_HEADROOM}), so that it never refuses the peer link before the "
                "per-lane allowances bind; leave it out to use that value"
            )

    def _check_metrics_tls(self, source: str) -> None:
        given = [name for name in _METRICS_FILES if getattr(self, name) is not None]
        if given and not self.metrics_listen:
            raise ConfigError(
                f"{source}: {given[0]} = {toml_value(getattr(self, given[0]))}: needs "
                'metrics_listen (the endpoint it secures), such as "127.0.0.1:9464"'
            )
        if (self.metrics_cert is None) != (self.metrics_key is None):
            name = "metrics_cert" if self.metrics_key is None else "metrics_key"
            other = "metrics_key" if name == "metrics_cert" else "metrics_cert"
            raise ConfigError(
                f"{source}: {name} = {toml_value(getattr(self, name))}: needs {other} too "
                "(both, or neither for the gateway's own certificate and key)"
            )
        tls = self.metrics_tls
        if tls is None:
            if given:
                raise ConfigError(
                    f"{source}: {given[0]} = {toml_value(getattr(self, given[0]))}: needs "
                    "metrics_client_ca (the endpoint is HTTPS only with client certificates)"
                )
            return
        for name, path, what in (
            ("metrics_client_ca", tls.client_ca, "a PEM CA certificate file"),
            ("metrics_cert", tls.cert, "a PEM certificate file"),
            ("metrics_key", tls.key, "a PEM private key file"),
        ):
            if not path.is_file():
                shown = (
                    f"{name} = {toml_value(path)}"
                    if getattr(self, name) is not None
                    else f"{name} (not set: the gateway's own, {path})"
                )
                missing = "no such file" if not path.exists() else "not a file"
                raise ConfigError(f"{source}: {shown}: {missing}; must be {what}")


def _tracing_missing(mode: str) -> str | None:
    """The module `tracing = mode` needs that cannot be imported here, or None."""
    needed = {
        "otlp": (
            "opentelemetry.sdk.trace",
            "opentelemetry.exporter.otlp.proto.grpc.trace_exporter",
        ),
        "console": ("opentelemetry.sdk.trace",),
    }
    for name in needed.get(mode, ()):
        try:
            importlib.import_module(name)
        except ImportError:
            return name.removesuffix(".trace_exporter").removesuffix(".trace")
    return None


def json_schema() -> dict[str, Any]:
    """The configuration file's JSON Schema (`hotline serve --print-config-schema`)."""
    schema = GatewayConfig.model_json_schema()
    schema["title"] = "Hotline gateway configuration (hotline serve --config FILE, TOML)"
    return schema


def readme_table() -> str:
    """The README's gateway settings table (`tools/settings_tables.py` writes it)."""
    deadlines = ", ".join(
        f"`{name}` {allowed(info)}" for name, info in DeadlineSettings.model_fields.items()
    )
    return (
        markdown_table(GatewayConfig, skip=("deadlines",))
        + f"\n`[deadlines]` table, acknowledgement deadlines per precedence, keys: {deadlines}; seconds, each defaulting to ACP 121's handling "
        "time.\n"
    )


BEGIN = "<!-- gateway-settings:begin (generated by `python tools/settings_tables.py`) -->"
END = "<!-- gateway-settings:end -->"

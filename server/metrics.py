"""The gateway's Prometheus metrics: one module, fed from what the journal committed.

Every count here is a count of journal entries, so the numbers agree with the journal by
construction: the gateway subscribes `GatewayMetrics.observe` to its journal's commits (the
same after-commit publication that feeds operators' Watch streams), and `observe` does a few
dictionary operations per entry, on the event loop, with no I/O and no locks. Gauges of state
(outbox depth, deliveries in flight per lane, link up/down, overdue messages) are read when
scraped or refreshed once a second; certificate and revocation-list expiry times are read from
the PKI files at start. Nothing on the hot path calls Prometheus beyond `observe`, and a gateway
without `metrics_listen` does not subscribe at all. `hotline sim bench` measures the cost: the
same load on a pair with metrics on (scraped every second) and off, in the same run.

`serve(listen, tls)` starts prometheus-client's HTTP server on its own port and thread (the
configuration's `metrics_listen`, loopback by default when set), separate from the gRPC port:
`/metrics` says how much traffic flows and how the link stands, never what a message says.
With `tls` (`metrics_client_ca` set) it is HTTPS with mutual TLS, by prometheus-client's own
TLS support: only a client holding a certificate issued by that CA gets an answer. The TLS
handshake runs in the connection's own thread, not in the accepting one, so a client that
connects and stalls holds up no other scrape; a refused handshake is one INFO line. The
families (all prefixed `hotline_`):

    journal_entries_total{kind}                 entries committed, by journal kind
    messages_total{direction,precedence,outcome} out: journaled, delivered, refused_by_peer,
                                                escalated; in: received, refused, acknowledged,
                                                realerted
    stage_seconds{stage}                        journaled -> delivered, journaled ->
                                                acknowledged (the simulator's stage names)
    journal_commit_entries                      entries per published commit (batch size)
    journal_commit_seconds{part}                per durable commit: its operations (run) and
                                                the COMMIT, the fsync (commit)
    link_up{direction}, link_changes_total{direction,state}
    outbox_depth, in_flight{precedence}         the sending end's queue and its lanes
    overdue_messages                            awaiting an acknowledgement past the deadline
    security_refusals_total{code}               refused connections and calls, by code
    certificate_expiry_timestamp_seconds{certificate}, crl_next_update_timestamp_seconds{party}
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sys
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from hotline.journal_file import Entry, Kind
from hotline.v1 import common_pb2, operator_pb2

__all__ = ["GatewayMetrics", "MetricsTls"]

log = logging.getLogger("hotline.metrics")

_PRECEDENCE = {
    common_pb2.PRECEDENCE_FLASH: "FLASH",
    common_pb2.PRECEDENCE_IMMEDIATE: "IMMEDIATE",
    common_pb2.PRECEDENCE_PRIORITY: "PRIORITY",
    common_pb2.PRECEDENCE_ROUTINE: "ROUTINE",
}
_OUTCOME: Mapping[Kind, tuple[str, str]] = {
    Kind.MESSAGE_OUT: ("out", "journaled"),
    Kind.DELIVERED: ("out", "delivered"),
    Kind.REFUSED_BY_PEER: ("out", "refused_by_peer"),
    Kind.ESCALATION: ("out", "escalated"),
    Kind.MESSAGE_IN: ("in", "received"),
    Kind.REFUSED_INBOUND: ("in", "refused"),
    Kind.ACKNOWLEDGED: ("in", "acknowledged"),
    Kind.REALERT: ("in", "realerted"),
}
_STAGE_BUCKETS = (
    0.001,
    0.002,
    0.005,
    0.01,
    0.02,
    0.05,
    0.1,
    0.2,
    0.5,
    1,
    2,
    5,
    10,
    30,
    60,
    300,
    1800,
    3600,
    21600,
)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
_COMMIT_BUCKETS = (0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0)
_TRACKED = 100_000  # outbound messages whose journal time is kept for the stage latencies


@dataclass(frozen=True)
class MetricsTls:
    """The /metrics endpoint's mutual TLS: its certificate and key, and the CA whose
    certificates it accepts from clients (the scrapers)."""

    cert: Path
    key: Path
    client_ca: Path


def _precedence_of(entry: Entry) -> str:
    event = entry.event
    if isinstance(event, operator_pb2.Event) and event.HasField("message"):
        return _PRECEDENCE.get(event.message.envelope.precedence, "UNSPECIFIED")
    return ""


def acknowledged_id(entry: Entry) -> str:
    """For an inbound acknowledgement, the id of our message it acknowledges ("" if none):
    the store made its event a MESSAGE_ACKNOWLEDGED event about that message."""
    event = entry.event
    if (
        isinstance(event, operator_pb2.Event)
        and event.kind == operator_pb2.EVENT_KIND_MESSAGE_ACKNOWLEDGED
    ):
        return str(event.message_id)
    return ""


class GatewayMetrics:
    """The metric families of one gateway, in a registry of their own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.entries = Counter(
            "hotline_journal_entries", "Journal entries committed, by kind", ["kind"], registry=r
        )
        self.messages = Counter(
            "hotline_messages",
            "Messages by direction, precedence and outcome (each a journal entry)",
            ["direction", "precedence", "outcome"],
            registry=r,
        )
        self.stage = Histogram(
            "hotline_stage_seconds",
            "From our journal commit of an outbound message to its delivery receipt "
            "(delivered) and to the peer's acknowledgement (acknowledged)",
            ["stage"],
            buckets=_STAGE_BUCKETS,
            registry=r,
        )
        self.commit_entries = Histogram(
            "hotline_journal_commit_entries",
            "Entries per journal commit (group commit batch size)",
            buckets=_BATCH_BUCKETS,
            registry=r,
        )
        self.commit_seconds = Histogram(
            "hotline_journal_commit_seconds",
            "Time of each durable journal commit: running its operations (part=run) and the "
            "COMMIT itself, the fsync (part=commit)",
            ["part"],
            buckets=_COMMIT_BUCKETS,
            registry=r,
        )
        self._commit_run = self.commit_seconds.labels(part="run")
        self._commit_sync = self.commit_seconds.labels(part="commit")
        self.link_up = Gauge(
            "hotline_link_up", "1 while the link direction is up", ["direction"], registry=r
        )
        self.link_changes = Counter(
            "hotline_link_changes",
            "Link state changes journaled (state=up counts (re)connections)",
            ["direction", "state"],
            registry=r,
        )
        self.outbox = Gauge(
            "hotline_outbox_depth",
            "Messages journaled but not yet settled by the peer",
            registry=r,
        )
        self.in_flight = Gauge(
            "hotline_in_flight",
            "Deliveries sent and not yet settled, per precedence lane",
            ["precedence"],
            registry=r,
        )
        self.overdue = Gauge(
            "hotline_overdue_messages",
            "Messages awaiting an acknowledgement past their deadline (both directions)",
            registry=r,
        )
        self.refusals = Counter(
            "hotline_security_refusals",
            "Refused connections, calls and peer frames (SECURITY journal entries), by code",
            ["code"],
            registry=r,
        )
        self.cert_expiry = Gauge(
            "hotline_certificate_expiry_timestamp_seconds",
            "When each certificate the gateway uses expires (Unix time)",
            ["certificate"],
            registry=r,
        )
        self.crl_next_update = Gauge(
            "hotline_crl_next_update_timestamp_seconds",
            "When each revocation list held must be re-signed by (nextUpdate, Unix time)",
            ["party"],
            registry=r,
        )
        for direction in ("out", "in"):
            self.link_up.labels(direction).set(0)
        self._journaled_ns: OrderedDict[str, int] = OrderedDict()
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self._refresher: asyncio.Task[None] | None = None

    # -------------------------------------------------------------- the hot path

    def commit_timed(self, run_s: float, commit_s: float) -> None:
        """One durable journal commit (`Journal.time_commits`; on the writer thread)."""
        self._commit_run.observe(run_s)
        self._commit_sync.observe(commit_s)

    def observe(self, entries: Iterable[Entry]) -> None:
        """Count one commit's entries (subscribed to the journal; runs on the event loop)."""
        count = 0
        for entry in entries:
            count += 1
            kind = entry.kind
            self.entries.labels(kind.value).inc()
            outcome = _OUTCOME.get(kind)
            if outcome is not None:
                self.messages.labels(
                    outcome[0], _precedence_of(entry) or "UNKNOWN", outcome[1]
                ).inc()
            if kind is Kind.MESSAGE_OUT:
                self._journaled_ns[entry.message_id] = entry.time_ns
                if len(self._journaled_ns) > _TRACKED:
                    self._journaled_ns.popitem(last=False)
            elif kind is Kind.DELIVERED:
                start = self._journaled_ns.get(entry.message_id)
                if start is not None:
                    self.stage.labels("delivered").observe((entry.time_ns - start) / 1e9)
            elif kind is Kind.MESSAGE_IN:
                start = self._journaled_ns.pop(acknowledged_id(entry), None)
                if start is not None:
                    self.stage.labels("acknowledged").observe((entry.time_ns - start) / 1e9)
            elif kind in (Kind.LINK_UP, Kind.LINK_DOWN):
                self._link(entry)
            elif kind is Kind.SECURITY:
                self.refusals.labels(_json(entry).get("code", "UNKNOWN")).inc()
        if count:
            self.commit_entries.observe(count)

    def _link(self, entry: Entry) -> None:
        direction = _json(entry).get("direction", "")
        direction = "in" if str(direction).lower().startswith("in") else "out"
        up = entry.kind is Kind.LINK_UP
        self.link_up.labels(direction).set(1 if up else 0)
        self.link_changes.labels(direction, "up" if up else "down").inc()

    # -------------------------------------------------------------- state, read when scraped

    def watch_sender(
        self, queue_depth: Callable[[], int], lanes: Callable[[], Mapping[int, int]]
    ) -> None:
        """Read the sending end's outbox depth and lanes at each scrape (plain reads)."""
        self.outbox.set_function(lambda: float(queue_depth()))
        for rank, name in _PRECEDENCE.items():
            self.in_flight.labels(name).set_function(
                lambda rank=rank: float(lanes().get(rank, 0))  # type: ignore[misc]
            )

    def read_certificates(self, certificates: Mapping[str, Path], crls: Mapping[str, Path]) -> None:
        for name, path in certificates.items():
            with contextlib.suppress(OSError, ValueError):
                cert = x509.load_pem_x509_certificate(path.read_bytes())
                self.cert_expiry.labels(name).set(cert.not_valid_after_utc.timestamp())
        for party, path in crls.items():
            with contextlib.suppress(OSError, ValueError):
                crl = x509.load_pem_x509_crl(path.read_bytes())
                if crl.next_update_utc is not None:
                    self.crl_next_update.labels(party).set(crl.next_update_utc.timestamp())

    def refresh_overdue(self, overdue_count: Callable[[], int], every_s: float = 1.0) -> None:
        """Keep the overdue gauge current from the loop (the count is a journal query)."""

        async def refresh() -> None:
            while True:
                with contextlib.suppress(Exception):
                    self.overdue.set(overdue_count())
                await asyncio.sleep(every_s)

        self._refresher = asyncio.get_running_loop().create_task(refresh(), name="metrics")

    # -------------------------------------------------------------- the endpoint

    def serve(self, listen: str, tls: MetricsTls | None = None) -> int:
        """Start the endpoint (`/metrics`) on HOST:PORT, over mutual TLS when `tls` is given;
        returns the bound port. A file that cannot be loaded raises OSError (`ssl.SSLError`)
        naming it."""
        host, _, port = listen.rpartition(":")
        if tls is None:
            self._server, self._thread = start_http_server(
                int(port), addr=host.strip("[]"), registry=self.registry
            )
        else:
            self._server, self._thread = start_http_server(
                int(port),
                addr=host.strip("[]"),
                registry=self.registry,
                certfile=str(tls.cert),
                keyfile=str(tls.key),
                client_cafile=str(tls.client_ca),
                client_auth_required=True,
            )
            # Handshake lazily, in the connection's thread (the first read does it): done in
            # accept(), one client that connects and says nothing would stall every scrape.
            self._server.socket.do_handshake_on_connect = False
            self._server.handle_error = _refused
        bound = int(self._server.server_address[1])
        scheme = "http" if tls is None else "https"
        log.info("metrics at %s://%s:%d/metrics%s", scheme, host, bound, _clients(tls))
        return bound

    def stop(self) -> None:
        if self._refresher is not None:
            self._refresher.cancel()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


def _clients(tls: MetricsTls | None) -> str:
    if tls is None:
        return ""
    return f" (mutual TLS: client certificates issued by {tls.client_ca} only)"


_REFUSAL_WORDS = {
    "PEER_DID_NOT_RETURN_A_CERTIFICATE": "it presented no client certificate",
    "CERTIFICATE_VERIFY_FAILED": "its client certificate is not valid for metrics_client_ca",
    "HTTP_REQUEST": "it spoke plain HTTP to the HTTPS endpoint",
}


def _refused(_request: object, client_address: object) -> None:
    """A connection the HTTPS endpoint could not serve (a refused client certificate, a
    client that hung up): one line in words, not socketserver's traceback on stderr."""
    error = sys.exc_info()[1]
    host = client_address[0] if isinstance(client_address, tuple) else client_address
    words = _REFUSAL_WORDS.get(getattr(error, "reason", None) or "", "")
    detail = getattr(error, "verify_message", None) or error or "unknown error"
    log.info(
        "metrics: refused a connection from %s: %s",
        host,
        f"{words} ({detail})" if words else detail,
    )


def _json(entry: Entry) -> dict[str, Any]:
    try:
        value = json.loads(entry.body)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}

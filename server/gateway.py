"""One party's gateway: the journal, the two services, the peer sender, and the timers.

`Gateway(config)` wires the parts together; `await gateway.start()` binds and begins dialling
the peer; `await gateway.stop()` drains and closes. Credentials are re-read without a restart:
the server's certificate and trust bundle before each new TLS handshake (grpcio's dynamic
server credentials), the revocation lists by polling their files, and the client certificate
each time the peer link reconnects. Before each reconnection the peer's TLS certificate is read
and checked against the current revocation lists (`server.peerlink.peer_certificate`), since
grpcio's client handshake does not check revocation; and when a reloaded revocation list lists
the certificate checked before the current outbound connection, that connection is ended.

A reloaded revocation list replaces the one in force only if its CRL number is greater: an
older list put back is refused, journaled as a security event (`CRL_ROLLBACK`, an alarm on
Watch), and the list held stays in force. The numbers taken into force are journaled
(`Kind.REVOCATION`), so at start a list older than one taken before is refused too (the
gateway does not start on it). A list past its nextUpdate by more than `crl_grace_s`
is stale: the calls of the party whose CA issued it are refused (`server.auth`), the outbound
link is not dialled if it is the peer's, and a `CRL_STALE` security event raises the alarm,
once per list, until a current list is loaded.

The journal is the gateway's alone: opening it takes an exclusive lock (a second gateway on
the same file fails to start with "journal FILE is in use by pid N"). Every second a timer
checks that the journal's path still names the file opened; if it was deleted or replaced, the
gateway stops taking work at once (the journal refuses every write), raises an alarm to its
operators' Watch streams (an EVENT_KIND_SECURITY_REFUSAL that cannot be journaled, since the
journal is gone), logs it, and `fatal` is set: `hotline serve` then stops and exits 3.

A journal in PostgreSQL (`journal = "postgresql://..."`) is held by an advisory lock on the
writer's connection instead. With `standby = true`, a gateway that finds the lock held stands
by: it listens, answers health NOT_SERVING and every other call UNAVAILABLE, and polls the
lock; once it takes the lock it serves on the same port (README "Running on PostgreSQL").
`peer_address` may name the peer's active/standby pair, "host1:port,host2:port": each dial
that did not bring the link up moves on to the next address.

At start the gateway raises its open-file limit to the hard limit and sets up admission control
(`server.admission`): per-lane allowances enforced by the auth interceptor, and grpc's bounds on
connections (a cap, a handshake timeout, an idle timeout).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import grpc
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection

from certs.errors import CertsError
from certs.pki import load_certificate, load_party_revocations, load_signing_key
from certs.revocation import RevocationList, RevocationSet, replacement_problem
from certs.verify import check_validity
from hotline import link
from hotline.errors import ConfigError
from hotline.journal_file import is_database_url, redact
from hotline.signing import PAYLOAD_TYPE_CHECKPOINT, KeyRing, Signer
from hotline.transport import SERVER_OPTIONS, credentials, secure_channel
from hotline.v1 import (
    envelope_pb2,
    operator_pb2,
    operator_pb2_grpc,
    peer_link_pb2,
    peer_link_pb2_grpc,
)
from hotline.validation import validate_envelope
from hotline.wire import timestamp_ns
from server.admission import (
    Admission,
    connection_cap,
    connection_options,
    raise_open_file_limit,
)
from server.auth import AuthInterceptor, Authorizer, Refusal, stale_text
from server.config import GatewayConfig
from server.journal import Journal, JournalError, JournalInUse, Kind
from server.metrics import GatewayMetrics
from server.operator_service import OperatorServicer
from server.peerlink.peer_certificate import (
    DEFAULT_TIMEOUT,
    PeerCertificateError,
    PeerCertificateRefused,
    PeerCertificateRevoked,
    PeerRevocationStale,
    check_not_revoked,
    read_peer_certificate,
    split_address,
)
from server.peerlink.receiver import PeerLinkServicer
from server.peerlink.sender import PeerSender
from server.peerlink.status import LinkStatus, printable
from server.service import GatewayService, PrecedenceGate, TokenBucket
from server.store import Store

log = logging.getLogger("hotline.gateway")

JOURNAL_CHECK_S = 1.0  # how often the journal file is checked (deleted or replaced?)
STANDBY_POLL_S = 0.5  # how often a standby tries the journal's lock
SERVICE_NAMES = (
    operator_pb2.DESCRIPTOR.services_by_name["OperatorService"].full_name,
    peer_link_pb2.DESCRIPTOR.services_by_name["PeerLinkService"].full_name,
    health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
)
# A standby's server: few connections, closed when idle (operators and the peer move on).
STANDBY_OPTIONS = (("grpc.max_connection_idle_ms", 10_000),)
STANDBY_DETAIL = "this gateway is a standby, not serving: call the active gateway (next address)"


async def _refuse_standby(requests: Any, context: grpc.aio.ServicerContext[Any, Any]) -> None:
    await context.abort(grpc.StatusCode.UNAVAILABLE, STANDBY_DETAIL)


class _StandbyHandler(grpc.GenericRpcHandler):
    """Every call but health, on a standby: UNAVAILABLE (retryable: clients try the next
    address)."""

    def service(
        self, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        if handler_call_details.method.startswith("/grpc.health.v1.Health/"):
            return None
        return grpc.stream_stream_rpc_method_handler(_refuse_standby)


def _close_opened(opening: asyncio.Future[Journal]) -> None:
    if not opening.cancelled() and opening.exception() is None:
        opening.result().close()


@dataclass
class _Watched:
    """A file whose changes we pick up: its path and last seen (mtime, size)."""

    path: Path
    stamp: tuple[int, int] = (0, 0)

    def changed(self) -> bool:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return False
        stamp = (st.st_mtime_ns, st.st_size)
        if stamp != self.stamp:
            self.stamp = stamp
            return True
        return False


class Gateway:
    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
        self.party = config.party
        self.peer_party = config.peer_party
        paths = config.paths
        try:
            self._own_ca = load_certificate(paths.ca_cert)
            self._peer_ca = load_certificate(paths.peer_ca_cert)
            revocations = load_party_revocations(paths)
            signing_key = load_signing_key(paths.signing_key)
            signing_cert = load_certificate(paths.signing_cert)
        except CertsError as exc:
            raise ConfigError(f"cannot load the PKI for party {self.party}: {exc}") from None
        # The peer's gateway: one address, or its active/standby pair "host1:port,host2:port",
        # dialled in order (each failed attempt moves on to the next one; see _vet_peer).
        self.peer_addresses = [a.strip() for a in config.peer_address.split(",") if a.strip()]
        for address in self.peer_addresses:
            split_address(address)  # refuse an address the certificate check cannot dial
        self._peer_index = 0
        self._peer_attempted = False  # an attempt was made ...
        self._peer_came_up = False  # ... and the link came up since
        self.signer = Signer.from_certificate(signing_key, signing_cert)
        if self.signer.party != self.party:
            raise ConfigError(
                f"{paths.signing_cert} is party {self.signer.party}'s signing certificate"
            )
        self._signing_der = [signing_cert.public_bytes(Encoding.DER)]
        self.keyring = KeyRing([self._own_ca, self._peer_ca], revocations=revocations)
        self.keyring.add_certificate(signing_cert)
        self.authorizer = Authorizer(
            self.party,
            self.peer_party,
            [self._own_ca, self._peer_ca],
            revocations,
            crl_grace=timedelta(seconds=config.crl_grace_s),
        )
        self.admission = Admission(config.limits)
        self.health = HealthServicer()
        # A standby (config.standby, PostgreSQL): another gateway holds the journal, so this
        # one serves only health (NOT_SERVING) until it takes the journal's lock over.
        self.standing_by = False
        self._standby_server: grpc.aio.Server | None = None
        self._takeover: asyncio.Task[None] | None = None
        try:
            journal = Journal(config.journal, party=self.party)
        except JournalInUse as exc:
            if not config.standby:
                raise ConfigError(str(exc)) from None
            log.warning("%s: standing by until it frees", exc)
            self.standing_by = True
        except JournalError as exc:
            raise ConfigError(str(exc)) from None
        else:
            self._serve_journal(journal)
        self._server: grpc.aio.Server | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self._tls_files = [
            _Watched(p) for p in (paths.gateway_cert, paths.gateway_key, paths.bundle)
        ]
        self._crl_files = [_Watched(p) for p in (paths.crl, paths.peer_crl)]
        for watched in self._tls_files + self._crl_files:
            watched.changed()
        self.port = 0
        self.metrics = GatewayMetrics()
        self.metrics_port = 0  # the /metrics endpoint's port (0: not served)
        self._metrics_unsubscribe: Callable[[], None] | None = None
        self._metrics_untime: Callable[[], None] | None = None
        self.tracing: Any = None  # server.tracing.GatewayTracing, imported only when enabled
        if self.config.tracing != "off":  # the optional `otel` extra
            from server.tracing import GatewayTracing

            self.tracing = GatewayTracing(self.config.tracing, self.party)
        self._stale_warned = float("-inf")
        self._own_certificate_problem = ""  # why the peer would refuse our certificate
        self._stale_alarmed: set[str] = set()  # issuers of the stale lists already alarmed
        # The peer certificate checked before the current outbound connection, if it passed.
        self._peer_certificate: x509.Certificate | None = None
        # Set when the journal file was deleted or replaced under the running gateway: why.
        self.fatal = ""
        self.fatal_event = asyncio.Event()
        self.journal_check_s = JOURNAL_CHECK_S

    def _serve_journal(self, journal: Journal) -> None:
        """Build the parts that work on the journal (once this gateway holds it)."""
        config = self.config
        self.journal = journal
        self.store = Store(
            self.journal,
            party=self.party,
            peer_party=self.peer_party,
            deadline_s=config.deadlines.for_precedence,
        )
        self.sender = PeerSender(
            party=self.party,
            peer_party=self.peer_party,
            outbox=self.store,
            keyring=self.keyring,
            signing_certificates=self._signing_der,
            channel_factory=self._peer_channel,
            on_link=self._outbound_link_event,
            on_violation=self._peer_violation,
            window=config.window,
            lanes=config.lanes,
            heartbeat_interval=config.heartbeat_interval_s,
            dead_after=config.dead_after_s,
            reconnect_min=config.reconnect_min_s,
            reconnect_max=config.reconnect_max_s,
            checkpoints=self._checkpoint,
            checkpoint_interval=config.checkpoint_interval_s,
            vet_peer=self._vet_peer,
            on_peer_refused=self._peer_refused,
            on_journal_lost=self._journal_lost,
        )
        self.peer_service = PeerLinkServicer(
            store=self.store,
            keyring=self.keyring,
            signer=self.signer,
            signing_certificates=self._signing_der,
            on_link=self._inbound_link_event,
            on_data_loss=self._inbound_data_loss,
            heartbeat_interval=config.heartbeat_interval_s,
            dead_after=config.dead_after_s,
        )
        self.service = GatewayService(
            store=self.store,
            signer=self.signer,
            enqueue=self.sender.enqueue,
            rate=TokenBucket(config.operator_rate_per_s, config.operator_burst),
            outbox_depth=lambda: self.sender.queue_depth,
            outbox_limit=config.outbox_limit,
            gate=PrecedenceGate(config.submit_slots),
            held=self._held,
        )
        self.operator_service = OperatorServicer(
            store=self.store,
            service=self.service,
            outbound_status=self._outbound_status,
            inbound_status=lambda: self.peer_service.status,
            queue_depth=lambda: self.sender.queue_depth,
        )

    # ------------------------------------------------------------------ credentials

    def _server_certificate_configuration(self) -> Any:
        paths = self.config.paths
        return grpc.ssl_server_certificate_configuration(
            [(paths.gateway_key.read_bytes(), paths.gateway_cert.read_bytes())],
            root_certificates=paths.bundle.read_bytes(),
        )

    def _fetch_server_configuration(self) -> Any:
        """Called by grpc before each new handshake: a new configuration only if files changed."""
        try:
            changed = [w.changed() for w in self._tls_files]  # update every stamp
            if any(changed):
                log.info("TLS certificate or trust bundle changed on disk; using the new ones")
                return self._server_certificate_configuration()
        except Exception:
            log.exception("could not reload the TLS certificate; keeping the current one")
        return None

    def _peer_channel(self) -> grpc.aio.Channel:
        paths = self.config.paths
        creds = credentials(paths.gateway_cert, paths.gateway_key, paths.peer_ca_cert)
        return secure_channel(self.peer_address, creds, server_party=self.peer_party)

    @property
    def peer_address(self) -> str:
        """The peer address dialled now (one of `peer_address`'s list)."""
        return self.peer_addresses[self._peer_index]

    def _next_peer_address(self) -> None:
        """Before each attempt: if the last one never brought the link up, move on to the
        next address (the peer's standby, or back to its first), in order, round again."""
        if self._peer_attempted and not self._peer_came_up and len(self.peer_addresses) > 1:
            self._peer_index = (self._peer_index + 1) % len(self.peer_addresses)
            log.info("dialling %s's next address, %s", self.peer_party, self.peer_address)
        self._peer_attempted, self._peer_came_up = True, False

    async def _vet_peer(self) -> None:
        """Before each dial: our certificate must be in its validity (else the peer's refusal
        would read as a closed connection), and the peer must present its gateway
        certificate, not revoked."""
        paths = self.config.paths
        self._peer_certificate = None
        self._next_peer_address()
        ours = await asyncio.to_thread(_own_certificate_problem, self.config, paths.gateway_cert)
        if ours != self._own_certificate_problem:  # an ERROR once per change, not per dial
            self._own_certificate_problem = ours
            if ours:
                log.error("%s", ours)
        if ours:
            raise PeerCertificateError(ours)
        for stale in self.authorizer.stale():
            if stale.issuer == self._peer_ca.subject:
                raise PeerRevocationStale(stale_text(stale, self.authorizer.crl_grace))
        self._peer_certificate = await read_peer_certificate(
            self.peer_address,
            peer_party=self.peer_party,
            cert=paths.gateway_cert,
            key=paths.gateway_key,
            peer_ca=paths.peer_ca_cert,
            revocations=lambda: self.authorizer.revocations,
            # generous: a saturated peer (or we) may take a while to handshake; a peer that
            # never answers backs off like any failed attempt
            timeout=max(DEFAULT_TIMEOUT, self.config.dead_after_s),
        )

    async def _reload_revocations(self) -> None:
        """Every 2 s: take changed revocation list files (never an older list), then see
        whether a list in force has turned stale."""
        now = time.monotonic()
        if not self.authorizer.revocations.is_current() and now - self._stale_warned > 600:
            self._stale_warned = now
            log.warning(
                "a revocation list is past its next-update time: re-sign it with "
                "`hotline certs crl` (revocation is only as fresh as the newest list; after "
                "crl_grace_s = %g s the calls of its party are refused)",
                self.config.crl_grace_s,
            )
        changed = [w.changed() for w in self._crl_files]  # update every stamp
        if any(changed):
            try:
                loaded = load_party_revocations(self.config.paths)
            except CertsError as exc:
                log.error("kept the previous revocation lists: %s", exc)
            else:
                await self._take_revocations(loaded)
        await self._alarm_stale()

    async def _check_revocation_numbers(self) -> None:
        """At start: refuse a revocation list older than one this gateway already took into
        force (its CRL number is journaled, so a list put back while the gateway was stopped
        is caught as surely as one put back while it runs); journal the numbers in force."""
        held = self.store.revocation_numbers()
        for rl in self.authorizer.revocations:
            if rl.number is None:
                continue
            issuer = rl.issuer.rfc4514_string()
            before = held.get(issuer)
            if before is not None and rl.number < before:
                detail = (
                    f"the {self._party_of(rl)} revocation list (CA {issuer!r}) has CRL number "
                    f"{rl.number}, but this gateway already took number {before} into force: an "
                    "older list was put back; install the current list (or a newer one)"
                )
                await self.store.record_event(
                    Kind.SECURITY, {"code": "CRL_ROLLBACK", "detail": detail}
                )
                raise ConfigError(detail)
            if before is None or rl.number > before:
                await self.store.record_revocation(self._party_of(rl), issuer, rl.number)

    def _party_of(self, rl: RevocationList) -> str:
        return self.party if rl.issuer == self._own_ca.subject else self.peer_party

    async def _take_revocations(self, loaded: RevocationSet) -> None:
        """Put `loaded` in force, list by list, except a list that may not replace the one held
        (`certs.revocation.replacement_problem`): that one is refused and journaled."""
        held = {rl.issuer: rl for rl in self.authorizer.revocations}
        in_force: list[RevocationList] = []
        taken: list[RevocationList] = []
        for new in loaded:
            old = held.get(new.issuer)
            if old is not None and old.same_list(new):
                in_force.append(old)
                continue
            problem = None if old is None else replacement_problem(old, new)
            if old is not None and problem is not None:
                in_force.append(old)
                party = self._party_of(old)
                detail = (
                    f"refused the new {party} revocation list (CA {new.issuer_text!r}): "
                    f"{problem}; the list held (number {old.number}) stays in force"
                )
                log.error("%s", detail)
                await self.store.record_event(
                    Kind.SECURITY, {"code": "CRL_ROLLBACK", "detail": detail}
                )
                continue
            in_force.append(new)
            taken.append(new)
        if not taken:
            return
        for rl in taken:
            if rl.number is not None:
                await self.store.record_revocation(
                    self._party_of(rl), rl.issuer.rfc4514_string(), rl.number
                )
        revocations = RevocationSet(in_force)
        self.authorizer.update(revocations=revocations)
        self.keyring.set_revocations(revocations)
        log.info(
            "revocation lists reloaded: %s",
            ", ".join(f"{self._party_of(rl)} number {rl.number}" for rl in taken),
        )
        if self._peer_certificate is not None:
            try:
                check_not_revoked(self._peer_certificate, revocations)
            except PeerCertificateRevoked as revoked:
                self._peer_certificate = None
                log.warning("ending the link to %s: %s", self.peer_party, revoked)
                self.sender.redial(revoked)

    async def _alarm_stale(self) -> None:
        """Raise the alarm once for each list that turned stale; end our link to the peer if
        the peer's list did (the peer's calls to us are refused by the authorizer)."""
        stale = {rl.issuer_text: rl for rl in self.authorizer.stale()}
        for issuer, rl in stale.items():
            if issuer in self._stale_alarmed:
                continue
            party = self._party_of(rl)
            detail = (
                f"{stale_text(rl, self.authorizer.crl_grace)}: every call of a {party} "
                f"certificate is refused until a current list is loaded (`hotline certs crl "
                f"--party {party}`"
                + (", then deliver it as peer-crl.pem)" if party == self.peer_party else ")")
            )
            log.error("%s", detail)
            await self.store.record_event(Kind.SECURITY, {"code": "CRL_STALE", "detail": detail})
            if party == self.peer_party and self._peer_certificate is not None:
                self._peer_certificate = None
                self.sender.redial(PeerRevocationStale(f"ending the link: {detail}"))
        for issuer in self._stale_alarmed - set(stale):
            log.warning("the revocation list of CA %r is current again", issuer)
        self._stale_alarmed = set(stale)

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> int:
        """Bind and serve (or, a standby, bind and wait to take over); the port bound."""
        if self.standing_by:
            return await self._start_standby()
        return await self._start_serving(self.config.listen)

    async def _start_serving(self, listen: str) -> int:
        cfg = self.config
        # Validation compiles each message type's check on first use (~35 ms for an envelope):
        # pay it now, not on the first message of the hot line.
        validate_envelope(envelope_pb2.Envelope())
        self._start_metrics()
        if self.tracing is not None:  # the stages of traced messages, from the journal
            self.tracing.unsubscribe = self.journal.subscribe(self.tracing.observe)
        await self.store.record_key(self._signing_der[0], self.party)
        await self._check_revocation_numbers()
        await self._alarm_stale()  # a list already stale at start: say so at once
        open_files = raise_open_file_limit()
        max_connections = connection_cap(cfg.max_connections, open_files)
        server = grpc.aio.server(
            interceptors=[
                *([self.tracing.interceptor()] if self.tracing else []),
                AuthInterceptor(self.authorizer, self._refused, self.admission),
            ],
            options=[
                *SERVER_OPTIONS,
                ("grpc.max_receive_message_length", cfg.max_message_bytes),
                *connection_options(
                    max_connections=max_connections,
                    handshake_timeout_s=cfg.handshake_timeout_s,
                    idle_s=cfg.connection_idle_s,
                ),
            ],
            # A backstop only, above the sum of the admission allowances (server/admission.py)
            maximum_concurrent_rpcs=cfg.concurrent_rpcs_cap,
        )
        operator_pb2_grpc.add_OperatorServiceServicer_to_server(self.operator_service, server)
        peer_link_pb2_grpc.add_PeerLinkServiceServicer_to_server(self.peer_service, server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        names = (
            operator_pb2.DESCRIPTOR.services_by_name["OperatorService"].full_name,
            peer_link_pb2.DESCRIPTOR.services_by_name["PeerLinkService"].full_name,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            reflection.SERVICE_NAME,
        )
        reflection.enable_server_reflection(names, server)
        try:
            self.port = server.add_secure_port(listen, self._server_credentials())
        except RuntimeError as exc:
            raise ConfigError(f"cannot listen on {listen}: {exc}") from None
        await server.start()
        self._server = server
        self._serve_metrics()
        for name in names[:3]:
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        await self.health.set("", health_pb2.HealthCheckResponse.SERVING)
        self._tasks = [
            asyncio.create_task(self.sender.run(), name="peer-sender"),
            asyncio.create_task(
                self._every(cfg.deadline_check_s, self._check_deadlines), name="deadlines"
            ),
            asyncio.create_task(self._every(2.0, self._reload_revocations), name="crl-reload"),
            asyncio.create_task(
                self._every(self.journal_check_s, self._check_journal_file), name="journal-file"
            ),
        ]
        log.info(
            "gateway %s serving on port %d; journal %s; dialling peer %s at %s",
            self.party,
            self.port,
            self.journal.location,
            self.peer_party,
            cfg.peer_address,
        )
        log.info(
            "admission: per operator %d streams and %d calls (%d for all operators), "
            "peer link %d, health %d per caller (%d in all), grpc backstop %d calls; "
            "at most %d connections, handshake timeout %g s, idle connections closed after %s",
            cfg.operator_streams,
            cfg.operator_calls,
            cfg.operators_total,
            cfg.peer_link_calls,
            cfg.health_calls,
            cfg.health_total,
            cfg.concurrent_rpcs_cap,
            max_connections,
            cfg.handshake_timeout_s,
            f"{cfg.connection_idle_s:g} s" if cfg.connection_idle_s > 0 else "never",
        )
        return self.port

    def _start_metrics(self) -> None:
        """Count what the journal commits from now on (before the gateway writes anything);
        with no `metrics_listen`, nothing is counted: no subscriber, no commit timing."""
        if not self.config.metrics_listen:
            return
        paths = self.config.paths
        self._metrics_unsubscribe = self.journal.subscribe(self.metrics.observe)
        self._metrics_untime = self.journal.time_commits(self.metrics.commit_timed)
        self.metrics.watch_sender(
            lambda: self.sender.queue_depth, lambda: self.sender.lanes_in_flight
        )
        self.metrics.read_certificates(
            {
                "gateway": paths.gateway_cert,
                "signing": paths.signing_cert,
                "ca": paths.ca_cert,
                "peer_ca": paths.peer_ca_cert,
            },
            {self.party: paths.crl, self.peer_party: paths.peer_crl},
        )
        self.metrics.refresh_overdue(self.store.overdue_count)

    def _serve_metrics(self) -> None:
        """Serve /metrics if `metrics_listen` is set."""
        if self.config.metrics_listen:
            try:
                self.metrics_port = self.metrics.serve(
                    self.config.metrics_listen, self.config.metrics_tls
                )
            except OSError as exc:
                raise ConfigError(
                    f"cannot serve metrics on {self.config.metrics_listen}: {exc}"
                ) from None

    # ------------------------------------------------------------------ standby

    def _server_credentials(self) -> grpc.ServerCredentials:
        return grpc.dynamic_ssl_server_credentials(
            self._server_certificate_configuration(),
            self._fetch_server_configuration,
            require_client_authentication=True,
        )

    async def _start_standby(self) -> int:
        """Serve health (NOT_SERVING) and refuse every other call UNAVAILABLE, on the address
        this gateway will serve on, while waiting for the journal's lock."""
        cfg = self.config
        server = grpc.aio.server(options=[*SERVER_OPTIONS, *STANDBY_OPTIONS])
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        server.add_generic_rpc_handlers((_StandbyHandler(),))
        try:
            self.port = server.add_secure_port(cfg.listen, self._server_credentials())
        except RuntimeError as exc:
            raise ConfigError(f"cannot listen on {cfg.listen}: {exc}") from None
        for name in (*SERVICE_NAMES, ""):
            await self.health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
        await server.start()
        self._standby_server = server
        self._takeover = asyncio.create_task(self._take_over(), name="standby")
        log.warning(
            "gateway %s standing by on port %d (health NOT_SERVING): journal %s is held by "
            "another gateway; taking over when its lock frees",
            self.party,
            self.port,
            redact(str(cfg.journal)),
        )
        return self.port

    async def _take_over(self) -> None:
        """Poll for the journal's lock; once taken, serve on the same port."""
        warned = float("-inf")
        while True:
            opening = asyncio.ensure_future(
                asyncio.to_thread(Journal, self.config.journal, party=self.party)
            )
            try:
                journal = await asyncio.shield(opening)
                break
            except asyncio.CancelledError:  # stopped: a journal opened meanwhile is let go
                opening.add_done_callback(_close_opened)
                raise
            except JournalInUse:
                pass
            except JournalError as exc:  # the database is unreachable: keep standing by
                if time.monotonic() - warned > 60:
                    warned = time.monotonic()
                    log.error("standby: %s", exc)
            await asyncio.sleep(STANDBY_POLL_S)
        started = time.monotonic()
        log.warning("gateway %s took over journal %s", self.party, journal.location)
        server, self._standby_server = self._standby_server, None
        if server is not None:
            await server.stop(0)
        try:
            self._serve_journal(journal)
            self.standing_by = False
            host = self.config.listen.rsplit(":", 1)[0]
            await self._start_serving(f"{host}:{self.port}")
        except Exception as exc:
            log.exception("standby: could not take over")
            if self.standing_by:  # the parts were not built: nothing else will close it
                journal.close()
            self.fatal = f"could not take over as the active gateway: {exc}"
            self.fatal_event.set()
            return
        log.warning(
            "gateway %s active after taking over (%.2f s to serve)",
            self.party,
            time.monotonic() - started,
        )

    async def stop(self, grace: float = 2.0) -> None:
        """Drain: stop taking calls, let calls in progress finish, then close the journal."""
        self.metrics.stop()
        if self._metrics_unsubscribe is not None:
            self._metrics_unsubscribe()
        if self._metrics_untime is not None:
            self._metrics_untime()
        if self._takeover is not None and not self._takeover.done():
            self._takeover.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._takeover
        if self._standby_server is not None:
            await self._standby_server.stop(0)
            self._standby_server = None
        if self.standing_by:
            log.info("gateway %s (standby) stopped", self.party)
            return
        await self.health.enter_graceful_shutdown()
        self.peer_service.shutdown()  # inbound streams end with UNAVAILABLE, as the spec says
        if self._server is not None:
            await self._server.stop(grace)
        self.sender.stop()
        for task in self._tasks:
            task.cancel()
        stuck: set[asyncio.Task[Any]] = set()
        if self._tasks:
            _, stuck = await asyncio.wait(self._tasks, timeout=5.0)
        for task in stuck:
            log.error("task %s did not stop within 5 s of being cancelled", task.get_name())
        self._tasks = []
        await self.peer_service.drain()
        await asyncio.to_thread(self.journal.close)
        if self.tracing is not None:  # last: the spans of the calls drained above, flushed
            await asyncio.to_thread(self.tracing.stop)
        log.info("gateway %s stopped", self.party)

    async def wait(self) -> None:
        if self._server is not None:
            await self._server.wait_for_termination()

    async def _every(self, seconds: float, work: Callable[[], Any]) -> None:
        while True:
            await asyncio.sleep(seconds)
            if self.fatal:
                return  # the journal is gone: nothing periodic may write any more
            try:
                await work()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("periodic task failed")

    async def _check_journal_file(self) -> None:
        problem = self.journal.check_file()
        if problem and not self.fatal:
            self._journal_gone(problem)

    def _journal_gone(self, problem: str) -> None:
        """The journal file is gone: take no more work, tell the operators, ask to exit."""
        self.fatal = problem
        self.journal.fail(f"{problem}; this gateway takes no more work")
        self.sender.stop()
        detail = (
            f"JOURNAL LOST: {problem}. The gateway stopped taking work and exits; nothing "
            "after this was journaled. Restore the journal before restarting (see README: "
            '"Recovering a lost journal").'
        )
        if is_database_url(self.config.journal):  # the database lives on; this gateway lost it
            detail = (
                f"JOURNAL DATABASE CONNECTION LOST: {problem}. This gateway stopped taking "
                "work and exits; its standby, if any, takes the journal over (see README: "
                '"Running on PostgreSQL").'
            )
        log.critical("%s (this alarm could not be journaled: the journal is gone)", detail)
        self.journal.announce(
            Kind.SECURITY, {"code": "JOURNAL_LOST", "detail": detail}, self.store.event_for
        )
        self.fatal_event.set()

    def _held(self) -> str:
        """Why operators may not send now ("" when they may)."""
        if self.fatal:
            return self.fatal
        return self.sender.held

    async def _check_deadlines(self) -> None:
        for entry in await self.store.mark_overdue(time.time_ns()):
            what = "escalated" if entry.kind is Kind.ESCALATION else "re-alerted"
            log.warning("%s %s: past its acknowledgement deadline", what, entry.message_id)

    # ------------------------------------------------------------------ events

    async def _refused(self, refusal: Refusal) -> None:
        await self.store.record_event(
            Kind.SECURITY,
            {
                "code": refusal.code.name,
                "detail": f"{refusal.identity} calling {refusal.method}: {refusal.reason}",
                "peer": refusal.peer,
            },
        )

    async def _peer_violation(self, detail: str) -> None:
        """The peer broke the link protocol (a bad Welcome or batch receipt): journal it."""
        await self.store.record_event(
            Kind.SECURITY,
            {
                "code": "PROTOCOL_VIOLATION",
                # the peer chose parts of this text (key ids, payload types): bounded, escaped
                "detail": f"the {self.peer_party} gateway broke the peer link protocol: "
                + printable(detail, 500),
                "peer": self.peer_address,
            },
        )

    async def _journal_lost(self, lost: link.JournalLost) -> None:
        """A Welcome showed the peer holds our messages that our journal lacks."""
        await self.store.record_event(
            Kind.SECURITY,
            {
                "code": "DATA_LOSS",
                "direction": "outbound",
                "detail": f"DATA LOSS: {lost.detail}. Sending to {self.peer_party} is held "
                'until this journal is recovered (see README: "Recovering a lost journal")',
                "peer_last_sequence": lost.peer_last_sequence,
                "last_settled": lost.last_settled,
                "missing": [
                    {"sequence": sequence, "message_id": message_id}
                    for sequence, message_id in lost.missing[:100]
                ],
            },
        )

    async def _inbound_data_loss(self, detail: str) -> None:
        """A Hello showed the peer holds our batch receipts for batches our journal lacks."""
        await self.store.record_event(
            Kind.SECURITY,
            {
                "code": "DATA_LOSS",
                "direction": "inbound",
                "detail": f"DATA LOSS: {detail}. The {self.peer_party} gateway holds our "
                "receipts for messages this journal lost; its link to us stays refused until "
                'this journal is recovered (see README: "Recovering a lost journal")',
            },
        )

    async def _peer_refused(self, refused: PeerCertificateRefused) -> None:
        await self.store.record_event(
            Kind.SECURITY,
            {"code": refused.code, "detail": str(refused), "peer": self.peer_address},
        )

    async def _outbound_link_event(self, up: bool, detail: str) -> None:
        self._peer_came_up = self._peer_came_up or up
        await self._link_event(up, "outbound", detail)

    async def _inbound_link_event(self, up: bool, detail: str) -> None:
        await self._link_event(up, "inbound", detail)

    async def _link_event(self, up: bool, direction: str, detail: str) -> None:
        try:
            await self.store.record_event(
                Kind.LINK_UP if up else Kind.LINK_DOWN, {"direction": direction, "detail": detail}
            )
        except JournalError:
            if not self.fatal:
                raise
            # the journal is gone and the gateway is stopping: the links going down with it
            # is no news worth a traceback

    def _checkpoint(self) -> Any:
        count, head = self.journal.head
        body = peer_link_pb2.CheckpointBody(
            party=self.party,
            entry_count=count,
            head_hash=head,
            create_time=timestamp_ns(time.time_ns()),
        )
        signed = self.signer.sign(PAYLOAD_TYPE_CHECKPOINT, body.SerializeToString())
        task = asyncio.ensure_future(
            self.store.record_checkpoint(Kind.CHECKPOINT_OWN, signed, self.party)
        )
        self._tasks.append(task)
        self._tasks = [t for t in self._tasks if not t.done() or t is task]
        return signed

    def _outbound_status(self) -> LinkStatus:
        self.sender.status.last_sequence = self.sender.last_settled
        return self.sender.status


def _own_certificate_problem(config: GatewayConfig, path: Path) -> str:
    """Why the peer would refuse our gateway certificate ("... expired on ..."), or ""."""
    try:
        check_validity(load_certificate(path), what=f"our gateway certificate {path}")
    except CertsError as exc:
        return (
            f"{exc}: the peer refuses it; renew it (hotline certs rotate --dir "
            f"{config.pki_dir} --party {config.party})"
        )
    return ""

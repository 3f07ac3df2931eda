"""Who is calling, and may they? Enforced before any handler runs.

The TLS handshake (grpcio, `require_client_auth=True`) has already checked that the client
holds the key of a certificate chaining to one of the two CAs in our bundle. It cannot check
more, so here, for every call and before the handler sees it:

1. the leaf certificate (`x509_pem_cert` in the auth context) is read; none: UNAUTHENTICATED;
2. its identity is its single SPIFFE URI SAN, and the certificate must be issued by the CA of
   *that identity's* party (so one party's CA cannot mint the other's identities), be within
   its validity, and not be on a revocation list: otherwise UNAUTHENTICATED; nor may its CA's
   revocation list be stale (past its nextUpdate by more than the configured grace): a list
   that no longer says who is revoked cannot clear anyone, so that party's calls are refused
   (UNAUTHENTICATED, naming the list) until a current one is loaded;
3. the authorization matrix decides by service: the peer gateway may call only
   `PeerLinkService`; our own operators only `OperatorService` (and server reflection); any
   authenticated party may call the health service; everything else: PERMISSION_DENIED;
4. admission control (`server.admission`) gives the call a slot in its lane (an operator's
   streams, an operator's unary calls, the peer link, health) or refuses it with
   RESOURCE_EXHAUSTED, naming the limit;
5. a request whose bytes do not parse as the method's request message ends the call with
   INVALID_ARGUMENT saying so (logged as one line, no traceback): grpc would answer UNKNOWN
   and log a traceback per call. The bytes are parsed before step 1 but judged after step 4,
   so a caller who may not call learns nothing about its bytes; in a stream, a malformed
   message ends the requests the handler sees and the call then ends the same way.

Steps 1-3 are cached per presented certificate (`Presented`; the auth context is per
connection, so in effect per connection): a busy operator or a Watch stream parses and verifies
its PEM once, not per call. The cache never outlives what it depends on: a new trust bundle
empties it, new revocation lists (or a list turning stale) make each entry's revocation status
be decided again at its next use, and a certificate's chain is verified again at least every
REVERIFY_S seconds.

A stream is checked again before its next response whenever the revocation lists or the trust
bundle change or a list turns stale, so revoking a certificate also ends the streams open with it (the peer link, an
operator's Watch) within one heartbeat, rather than at its next reconnection.

Every authentication or authorization refusal is logged and journaled as a security event, with
the reason given to the caller; admission refusals are only counted and logged (see
`server.admission`).
"""

from __future__ import annotations

import contextvars
import inspect
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import grpc
from cryptography import x509

from certs.errors import CertsError
from certs.identity import Identity, Role
from certs.revocation import RevocationList, RevocationSet
from certs.verify import verify_identity
from server.admission import Admission, Lane, Limits

log = logging.getLogger("hotline.auth")

PEER_LINK_SERVICE = "/hotline.v1.PeerLinkService/"
OPERATOR_SERVICE = "/hotline.v1.OperatorService/"
HEALTH_SERVICE = "/grpc.health.v1.Health/"
REVERIFY_S = 60.0  # re-verify a cached certificate chain at least this often
CACHED_CERTIFICATES = 1024  # presented certificates remembered (oldest forgotten first)
CACHED_METHODS = 64  # authorization outcomes remembered per certificate
REFLECTION_SERVICES = (
    "/grpc.reflection.v1alpha.ServerReflection/",
    "/grpc.reflection.v1.ServerReflection/",
)


@dataclass(frozen=True)
class Refusal:
    """A refused call: what the caller presented, what it called, and why it was refused."""

    code: grpc.StatusCode
    reason: str
    method: str
    identity: str
    peer: str


class AuthError(Exception):
    def __init__(self, code: grpc.StatusCode, reason: str, who: str | None = None) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason
        self.who = who  # the identity the certificate names, when it could be read


@dataclass(eq=False)
class Presented:
    """What one presented leaf certificate was found to be, cached per certificate (so per
    connection: the auth context, and its leaf, are the connection's).

    The chain is verified again after `verified_until` (or at once when the trust bundle
    changes); revocation is decided again whenever the revocation lists are replaced or one
    turns stale (`refused` holds for the `_Lists` state it was decided with only); authorization
    by method is remembered (it depends only on the identity and the method)."""

    identity: Identity
    who: str  # identity.spiffe_id, computed once
    leaf: x509.Certificate
    verified_until: float  # time.monotonic()
    lists: _Lists | None = None
    refused: str | None = None  # why the revocation lists refuse it (revoked, or list stale)
    allowed: dict[str, AuthError | None] = field(default_factory=dict)


@dataclass(frozen=True, eq=False)
class _Lists:
    """The revocation lists in force and which of them are stale: replaced as a whole (never
    changed), so a cached decision compares it by identity."""

    revocations: RevocationSet
    stale: tuple[RevocationList, ...]
    next_change: float  # wall-clock seconds when another list turns stale (inf: never)


class Authorizer:
    """Authenticates callers and applies the authorization matrix for one gateway.

    `crl_grace` is how long past its nextUpdate a revocation list is still taken as current
    (default none); `wall_clock` (seconds since the epoch) decides when that is.
    """

    def __init__(
        self,
        party: str,
        peer_party: str,
        cas: Iterable[x509.Certificate],
        revocations: RevocationSet,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        crl_grace: timedelta = timedelta(0),
    ) -> None:
        self.party = party
        self.peer_party = peer_party
        self._clock = clock
        self._wall_clock = wall_clock
        self.crl_grace = crl_grace
        self._cas = list(cas)
        self._lists = self._judge(revocations)
        self._cache: OrderedDict[bytes, Presented] = OrderedDict()
        # Bumped by every update: open streams re-authenticate their caller when it changes.
        self.generation = 0

    @property
    def revocations(self) -> RevocationSet:
        return self._lists.revocations

    def _judge(self, revocations: RevocationSet) -> _Lists:
        """Which of `revocations` are stale now, and when the next one turns stale."""
        now = datetime.fromtimestamp(self._wall_clock(), UTC)
        stale = revocations.stale(now, self.crl_grace)
        ends = [
            end.timestamp()
            for rl in revocations
            if rl not in stale and (end := rl.refuse_after(self.crl_grace)) is not None
        ]
        return _Lists(revocations, stale, min(ends, default=float("inf")))

    def stale(self) -> tuple[RevocationList, ...]:
        """The revocation lists stale now (past nextUpdate + grace); their CAs' certificates
        are refused. Cheap when nothing turned stale: one clock read."""
        if self._wall_clock() > self._lists.next_change:
            self._lists = self._judge(self._lists.revocations)
            self.generation += 1
        return self._lists.stale

    def update(
        self,
        *,
        cas: Iterable[x509.Certificate] | None = None,
        revocations: RevocationSet | None = None,
    ) -> None:
        """Swap in a new trust bundle or revocation lists.

        Takes effect on the next call, and on every open stream before its next response:
        a new bundle empties the certificate cache; new lists make every cached certificate's
        revocation status be decided again, against them, at its next use.
        """
        if cas is not None:
            self._cas = list(cas)
            self._cache.clear()
        if revocations is not None:
            self._lists = self._judge(revocations)
        self.generation += 1

    def presented(self, pem: bytes) -> Presented:
        """The leaf `pem`, parsed, verified and checked against the current revocation lists
        (cached, see `Presented`); AuthError (UNAUTHENTICATED) if it may not authenticate.

        Chain verification (an ECDSA signature check) and parsing are the costly part; their
        result depends only on the certificate, the trust bundle and the time, so it is kept
        until the bundle changes, the certificate expires, or REVERIFY_S pass. A revocation
        check costs ~15 µs (comparing issuer names): it is kept until the lists change or one
        turns stale (one clock read per call tells).
        """
        now = self._clock()
        entry = self._cache.get(pem)
        if entry is None or entry.verified_until <= now:
            try:
                leaf = x509.load_pem_x509_certificate(pem)
                identity = verify_identity(leaf, self._cas)
            except CertsError as exc:
                raise AuthError(grpc.StatusCode.UNAUTHENTICATED, str(exc)) from None
            except ValueError as exc:
                raise AuthError(
                    grpc.StatusCode.UNAUTHENTICATED, f"unreadable client certificate: {exc}"
                ) from None
            remaining = (leaf.not_valid_after_utc - datetime.now(UTC)).total_seconds()
            entry = Presented(
                identity, identity.spiffe_id, leaf, now + max(0.0, min(REVERIFY_S, remaining))
            )
            self._cache[pem] = entry
            if len(self._cache) > CACHED_CERTIFICATES:
                self._cache.popitem(last=False)
        self.stale()
        if entry.lists is not self._lists:
            entry.refused = self._refusal(entry)
            entry.lists = self._lists
        if entry.refused is not None:
            raise AuthError(grpc.StatusCode.UNAUTHENTICATED, entry.refused, entry.who)
        return entry

    def _refusal(self, entry: Presented) -> str | None:
        """Why the revocation lists in force refuse `entry`'s certificate, or None."""
        lists = self._lists
        if lists.revocations.is_revoked(entry.leaf):
            return (
                f"certificate {entry.who} (serial {entry.leaf.serial_number:#x}) has been revoked"
            )
        for rl in lists.stale:
            if rl.is_issuer_of(entry.leaf):
                return (
                    f"certificate {entry.who}: {stale_text(rl, self.crl_grace)}; its calls are "
                    "refused until a current list is loaded"
                )
        return None

    def check(self, pem: bytes, method: str) -> Presented:
        """Authenticate the leaf `pem` and authorize it to call `method`, or raise AuthError."""
        entry = self.presented(pem)
        try:
            refused = entry.allowed[method]
        except KeyError:
            try:
                self.authorize(entry.identity, method)
                refused = None
            except AuthError as exc:
                exc.who = entry.who
                refused = exc
            if len(entry.allowed) < CACHED_METHODS:
                entry.allowed[method] = refused
        if refused is not None:
            raise AuthError(refused.code, refused.reason, entry.who)
        return entry

    def authenticate(self, auth_context: Mapping[str, Sequence[bytes]], peer: str) -> Identity:
        """The identity of the caller whose grpc auth context this is (AuthError if none)."""
        pems = auth_context.get("x509_pem_cert") or []
        if not pems:
            raise AuthError(grpc.StatusCode.UNAUTHENTICATED, "no client certificate was presented")
        return self.presented(pems[0]).identity

    def authorize(self, identity: Identity, method: str) -> None:
        if method.startswith(PEER_LINK_SERVICE):
            if identity.role is Role.GATEWAY and identity.party == self.peer_party:
                return
            raise AuthError(
                grpc.StatusCode.PERMISSION_DENIED,
                f"{identity} may not call PeerLinkService: only the {self.peer_party} gateway "
                f"(spiffe://{self.peer_party.lower()}.hotline/gateway) may",
            )
        if method.startswith(OPERATOR_SERVICE) or method.startswith(REFLECTION_SERVICES):
            if identity.role is Role.OPERATOR and identity.party == self.party:
                return
            raise AuthError(
                grpc.StatusCode.PERMISSION_DENIED,
                f"{identity} may not call {method.split('/')[1]}: only {self.party} operators "
                f"(spiffe://{self.party.lower()}.hotline/operator/NAME) may",
            )
        if method.startswith(HEALTH_SERVICE):
            return
        raise AuthError(grpc.StatusCode.PERMISSION_DENIED, f"unknown method {method}")


def stale_text(rl: RevocationList, grace: timedelta) -> str:
    """`the revocation list of CA '...' (number 3) is stale: its next update was due ...`."""
    due = rl.next_update.isoformat(timespec="seconds") if rl.next_update else "never"
    allowed = f", grace {grace.total_seconds():g} s" if grace else ""
    return (
        f"the revocation list of CA {rl.issuer_text!r} (number {rl.number}) is stale: its next "
        f"update was due {due}{allowed}"
    )


def lane_of(method: str, handler: grpc.RpcMethodHandler[Any, Any]) -> Lane:
    """The admission lane of an (authorized) call of `method`."""
    if method.startswith(PEER_LINK_SERVICE):
        return Lane.PEER_LINK
    if method.startswith(HEALTH_SERVICE):
        return Lane.HEALTH
    return Lane.OPERATOR_STREAM if handler.response_streaming else Lane.OPERATOR_CALL


RefusalSink = Callable[[Refusal], Awaitable[None]]


# The authenticated identity of the call being handled: each gRPC call runs in its own task,
# and the interceptor sets this in that task before the handler starts.
_caller: contextvars.ContextVar[Identity] = contextvars.ContextVar("hotline_caller")


def caller() -> Identity:
    """The authenticated identity of the current call (set by the interceptor)."""
    try:
        return _caller.get()
    except LookupError:
        raise RuntimeError("no authenticated caller: is the AuthInterceptor installed?") from None


class AuthInterceptor(grpc.aio.ServerInterceptor):
    """Wraps every handler so authentication, authorization and admission run before it.

    The wrapped handler of each method is made once and reused for every call (grpc hands
    the interceptor the same handler object for a method each time). Per call, the fast path
    is: read the leaf from the auth context, one dict lookup for its cached `Presented` (and
    its cached authorization of this method), one admission slot.
    """

    def __init__(
        self,
        authorizer: Authorizer,
        on_refusal: RefusalSink,
        admission: Admission | None = None,
    ) -> None:
        self._authorizer = authorizer
        self._on_refusal = on_refusal
        self.admission = admission if admission is not None else Admission(Limits())
        self._wrapped: dict[
            str, tuple[grpc.RpcMethodHandler[Any, Any], grpc.RpcMethodHandler[Any, Any]]
        ] = {}
        self._connections: set[tuple[str, str]] = set()

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        method: str = handler_call_details.method
        known = self._wrapped.get(method)
        if known is not None and known[0] is handler:
            return known[1]
        wrapped = _wrap(handler, _Gate(self, method, lane_of(method, handler)))
        self._wrapped[method] = (handler, wrapped)
        return wrapped

    def _authenticate(
        self, context: grpc.aio.ServicerContext[Any, Any], method: str
    ) -> Presented | AuthError:
        """The caller, authenticated and authorized for `method`, or why not (no I/O)."""
        try:
            # grpc's stubs say Iterable; it is a dict of lists
            auth = cast("Mapping[str, Sequence[bytes]]", context.auth_context())
            pems = auth.get("x509_pem_cert")
            if not pems:
                raise AuthError(
                    grpc.StatusCode.UNAUTHENTICATED, "no client certificate was presented"
                )
            presented = self._authorizer.check(pems[0], method)
        except AuthError as exc:
            return exc
        peer = context.peer()
        if (peer, presented.who) not in self._connections:  # once per connection
            if len(self._connections) >= 4096:
                self._connections.clear()
            self._connections.add((peer, presented.who))
            tls = b"".join(auth.get("ssl_tls_version") or []).decode() or "unknown"
            log.info("connection from %s as %s over %s", peer, presented.who, tls)
        return presented

    async def _refused(
        self, context: grpc.aio.ServicerContext[Any, Any], method: str, exc: AuthError
    ) -> Refusal:
        """Log and journal an authentication or authorization refusal."""
        peer = context.peer()
        presented = exc.who or "anonymous"
        refusal = Refusal(exc.code, exc.reason, method, presented, peer)
        log.warning(
            "refused %s from %s (%s): %s %s", method, peer, presented, exc.code.name, exc.reason
        )
        try:
            await self._on_refusal(refusal)
        except Exception:  # the refusal stands even if recording it failed
            log.exception("could not journal a security refusal")
        return refusal

    async def _check(
        self, context: grpc.aio.ServicerContext[Any, Any], method: str
    ) -> tuple[Identity | None, Refusal | None]:
        """Authenticate and authorize one call (no admission): the caller, or the refusal
        (logged and journaled)."""
        outcome = self._authenticate(context, method)
        if isinstance(outcome, AuthError):
            return None, await self._refused(context, method, outcome)
        return outcome.identity, None


class _Gate:
    """What the wrapped handler of one method asks before (and while) it runs."""

    __slots__ = ("_icp", "lane", "method")

    def __init__(self, interceptor: AuthInterceptor, method: str, lane: Lane) -> None:
        self._icp = interceptor
        self.method = method
        self.lane = lane

    def generation(self) -> int:
        return self._icp._authorizer.generation

    async def admit(self, context: grpc.aio.ServicerContext[Any, Any]) -> str:
        """Authenticate, authorize and admit the call, or end it with the refusal; returns the
        caller's SPIFFE ID, whose admission slot `release` must give back."""
        icp = self._icp
        outcome = icp._authenticate(context, self.method)
        if isinstance(outcome, AuthError):
            refusal = await icp._refused(context, self.method, outcome)
            await context.abort(refusal.code, refusal.reason)
        assert isinstance(outcome, Presented)
        over = icp.admission.acquire(outcome.who, self.lane)
        if over is not None:  # counted and logged by admission; not a security event
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, over)
        _caller.set(outcome.identity)
        return outcome.who

    def release(self, who: str) -> None:
        self._icp.admission.release(who, self.lane)

    async def recheck(self, context: grpc.aio.ServicerContext[Any, Any], seen: int) -> int:
        """Before each response of a stream: if the trust bundle or revocation lists changed
        since `seen`, check the caller again (not its admission: it holds its slot), so that
        revoking a certificate ends the streams open with it (the peer link, Watch), not only
        its later calls."""
        current = self._icp._authorizer.generation
        if current != seen:
            outcome = self._icp._authenticate(context, self.method)
            if isinstance(outcome, AuthError):
                refusal = await self._icp._refused(context, self.method, outcome)
                await context.abort(refusal.code, refusal.reason)
        return current


@dataclass(frozen=True)
class Malformed:
    """What the tolerant deserializer returns for bytes that do not parse: why not."""

    problem: str


def _tolerant(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any]:
    """`deserializer`, returning a `Malformed` instead of raising (grpc would log a traceback
    and answer UNKNOWN)."""
    if deserializer is None:
        return lambda data: data

    def parse(data: bytes) -> Any:
        try:
            return deserializer(data)
        except Exception as exc:  # DecodeError, or anything a parser may raise on bad bytes
            return Malformed(str(exc) or type(exc).__name__)

    return parse


async def _refuse_malformed(
    context: grpc.aio.ServicerContext[Any, Any], method: str, malformed: Malformed
) -> None:
    problem = f"the request does not parse: {malformed.problem}"
    log.warning("refused %s from %s: INVALID_ARGUMENT %s", method, context.peer(), problem)
    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, problem)


class _Requests:
    """A request stream that ends at the first malformed message, and remembers it."""

    def __init__(self, requests: AsyncIterator[Any]) -> None:
        self._requests = requests
        self.malformed: Malformed | None = None

    def __aiter__(self) -> _Requests:
        return self

    async def __anext__(self) -> Any:
        if self.malformed is not None:
            raise StopAsyncIteration
        request = await anext(self._requests)
        if isinstance(request, Malformed):
            self.malformed = request
            raise StopAsyncIteration
        return request


def _wrap(
    original: grpc.RpcMethodHandler[Any, Any], gate: _Gate
) -> grpc.RpcMethodHandler[Any, Any]:
    handler: Any = original  # grpc's stubs type behaviours for the sync API
    deserializer = _tolerant(handler.request_deserializer)

    if handler.unary_unary is not None:
        inner_uu = handler.unary_unary

        async def unary_unary(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            who = await gate.admit(context)
            try:
                if isinstance(request, Malformed):
                    await _refuse_malformed(context, gate.method, request)
                return await inner_uu(request, context)
            finally:
                gate.release(who)

        return grpc.unary_unary_rpc_method_handler(
            unary_unary,
            request_deserializer=deserializer,
            response_serializer=handler.response_serializer,
        )
    if handler.unary_stream is not None:
        inner_us = handler.unary_stream

        async def unary_stream(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            seen = gate.generation()
            who = await gate.admit(context)
            try:
                if isinstance(request, Malformed):
                    await _refuse_malformed(context, gate.method, request)
                result = inner_us(request, context)
                if inspect.isawaitable(result):  # a handler that writes with context.write()
                    await result
                    return
                try:
                    async for item in result:
                        seen = await gate.recheck(context, seen)
                        yield item
                finally:  # end the handler now, not when its generator is collected
                    if hasattr(result, "aclose"):
                        await result.aclose()
            finally:
                gate.release(who)

        return grpc.unary_stream_rpc_method_handler(
            unary_stream,
            request_deserializer=deserializer,
            response_serializer=handler.response_serializer,
        )
    if handler.stream_stream is not None:
        inner_ss = handler.stream_stream

        async def stream_stream(requests: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            seen = gate.generation()
            who = await gate.admit(context)
            checked = _Requests(requests)
            try:
                result = inner_ss(checked, context)
                if inspect.isawaitable(result):
                    await result
                else:
                    try:
                        async for item in result:
                            seen = await gate.recheck(context, seen)
                            yield item
                    finally:  # end the handler now, not when its generator is collected
                        if hasattr(result, "aclose"):
                            await result.aclose()
                if checked.malformed is not None:
                    await _refuse_malformed(context, gate.method, checked.malformed)
            finally:
                gate.release(who)

        return grpc.stream_stream_rpc_method_handler(
            stream_stream,
            request_deserializer=deserializer,
            response_serializer=handler.response_serializer,
        )
    if handler.stream_unary is not None:
        inner_su = handler.stream_unary

        async def stream_unary(requests: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            who = await gate.admit(context)
            checked = _Requests(requests)
            try:
                response = await inner_su(checked, context)
                if checked.malformed is not None:
                    await _refuse_malformed(context, gate.method, checked.malformed)
                return response
            finally:
                gate.release(who)

        return grpc.stream_unary_rpc_method_handler(
            stream_unary,
            request_deserializer=deserializer,
            response_serializer=handler.response_serializer,
        )
    return original

"""Who is calling, and may they? Enforced before any handler runs.

The TLS handshake (grpcio, `require_client_auth=True`) has already checked that the client
holds the key of a certificate chaining to one of the two CAs in our bundle. It cannot check
more, so here, for every call and before the handler sees it:

1. the leaf certificate (`x509_pem_cert` in the auth context) is read; none: UNAUTHENTICATED;
2. its identity is its single SPIFFE URI SAN, and the certificate must be issued by the CA of
   *that identity's* party (so one party's CA cannot mint the other's identities), be within
   its validity, and not be on a revocation list: otherwise UNAUTHENTICATED;
3. the authorization matrix decides by service: the peer gateway may call only
   `PeerLinkService`; our own operators only `OperatorService` (and server reflection); any
   authenticated party may call the health service; everything else: PERMISSION_DENIED.

A stream is checked again before its next response whenever the revocation lists or the trust
bundle change, so revoking a certificate also ends the streams open with it (the peer link, an
operator's Watch) within one heartbeat, rather than at its next reconnection.

Every refusal is logged and journaled as a security event, with the reason given to the caller.
"""

from __future__ import annotations

import contextvars
import inspect
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import grpc
from cryptography import x509

from certs.errors import CertsError
from certs.identity import Identity, Role
from certs.revocation import RevocationSet
from certs.verify import verify_identity

log = logging.getLogger("hotline.auth")

PEER_LINK_SERVICE = "/hotline.v1.PeerLinkService/"
OPERATOR_SERVICE = "/hotline.v1.OperatorService/"
HEALTH_SERVICE = "/grpc.health.v1.Health/"
REVERIFY_S = 60.0  # re-verify a cached certificate chain at least this often
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
    def __init__(self, code: grpc.StatusCode, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class Authorizer:
    """Authenticates callers and applies the authorization matrix for one gateway."""

    def __init__(
        self,
        party: str,
        peer_party: str,
        cas: Iterable[x509.Certificate],
        revocations: RevocationSet,
    ) -> None:
        self.party = party
        self.peer_party = peer_party
        self._cas = list(cas)
        self._revocations = revocations
        self._cache: OrderedDict[bytes, tuple[Identity, x509.Certificate, float]] = OrderedDict()
        self._tls_seen: set[str] = set()
        # Bumped by every update: open streams re-authenticate their caller when it changes.
        self.generation = 0

    @property
    def revocations(self) -> RevocationSet:
        return self._revocations

    def update(
        self,
        *,
        cas: Iterable[x509.Certificate] | None = None,
        revocations: RevocationSet | None = None,
    ) -> None:
        """Swap in a new trust bundle or revocation lists.

        Takes effect on the next call, and on every open stream before its next response.
        """
        if cas is not None:
            self._cas = list(cas)
            self._cache.clear()
        if revocations is not None:
            self._revocations = revocations
        self.generation += 1

    def _verified(self, pem: bytes) -> tuple[Identity, x509.Certificate]:
        """Parse and verify a leaf, remembering the result for up to REVERIFY_S seconds.

        Chain verification (an ECDSA signature check) is the costly part of authenticating a
        call; its result depends only on the certificate, the trust bundle and the time, so it
        is cached until the bundle changes, the certificate expires, or REVERIFY_S pass.
        Revocation is checked on every call: a list can change at any moment.
        """
        now = time.monotonic()
        cached = self._cache.get(pem)
        if cached is not None and cached[2] > now:
            return cached[0], cached[1]
        leaf = x509.load_pem_x509_certificate(pem)
        identity = verify_identity(leaf, self._cas)
        remaining = (leaf.not_valid_after_utc - datetime.now(UTC)).total_seconds()
        self._cache[pem] = (identity, leaf, now + max(0.0, min(REVERIFY_S, remaining)))
        if len(self._cache) > 1024:
            self._cache.popitem(last=False)
        return identity, leaf

    def authenticate(self, auth_context: dict[str, list[bytes]], peer: str) -> Identity:
        pems = auth_context.get("x509_pem_cert") or []
        if not pems:
            raise AuthError(grpc.StatusCode.UNAUTHENTICATED, "no client certificate was presented")
        tls = b"".join(auth_context.get("ssl_tls_version") or []).decode() or "unknown"
        try:
            identity, leaf = self._verified(pems[0])
        except CertsError as exc:
            raise AuthError(grpc.StatusCode.UNAUTHENTICATED, str(exc)) from None
        except ValueError as exc:
            raise AuthError(
                grpc.StatusCode.UNAUTHENTICATED, f"unreadable client certificate: {exc}"
            ) from None
        if self._revocations.is_revoked(leaf):
            raise AuthError(
                grpc.StatusCode.UNAUTHENTICATED,
                f"certificate {identity} (serial {leaf.serial_number:#x}) has been revoked",
            )
        key = f"{peer}|{identity}"
        if key not in self._tls_seen:
            self._tls_seen.add(key)
            if len(self._tls_seen) > 4096:
                self._tls_seen.clear()
            log.info("connection from %s as %s over %s", peer, identity, tls)
        return identity

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
    """Wraps every handler so authentication and authorization run before it."""

    def __init__(self, authorizer: Authorizer, on_refusal: RefusalSink) -> None:
        self._authorizer = authorizer
        self._on_refusal = on_refusal

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
        return _wrap(handler, method, self._check, lambda: self._authorizer.generation)

    async def _check(
        self, context: grpc.aio.ServicerContext[Any, Any], method: str
    ) -> tuple[Identity | None, Refusal | None]:
        peer = context.peer()
        presented = "anonymous"
        try:
            auth = {k: list(v) for k, v in context.auth_context().items()}
            identity = self._authorizer.authenticate(auth, peer)
            presented = str(identity)
            self._authorizer.authorize(identity, method)
        except AuthError as exc:
            refusal = Refusal(exc.code, exc.reason, method, presented, peer)
            log.warning(
                "refused %s from %s (%s): %s %s", method, peer, presented, exc.code.name, exc.reason
            )
            try:
                await self._on_refusal(refusal)
            except Exception:  # the refusal stands even if recording it failed
                log.exception("could not journal a security refusal")
            return None, refusal
        return identity, None


Check = Callable[
    [grpc.aio.ServicerContext[Any, Any], str], Awaitable[tuple[Identity | None, Refusal | None]]
]


def _wrap(
    original: grpc.RpcMethodHandler[Any, Any],
    method: str,
    check: Check,
    generation: Callable[[], int],
) -> grpc.RpcMethodHandler[Any, Any]:
    handler: Any = original  # grpc's stubs type behaviours for the sync API

    async def admit(context: grpc.aio.ServicerContext[Any, Any]) -> None:
        identity, refusal = await check(context, method)
        if refusal is not None:
            await context.abort(refusal.code, refusal.reason)
        assert identity is not None
        _caller.set(identity)

    async def readmit(context: grpc.aio.ServicerContext[Any, Any], seen: int) -> int:
        """Before each response of a stream: if the trust bundle or revocation lists changed
        since `seen`, check the caller again, so that revoking a certificate ends the streams
        open with it (the peer link, Watch), not only its later calls."""
        current = generation()
        if current != seen:
            await admit(context)
        return current

    if handler.unary_unary is not None:
        inner_uu = handler.unary_unary

        async def unary_unary(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            await admit(context)
            return await inner_uu(request, context)

        return grpc.unary_unary_rpc_method_handler(
            unary_unary,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
    if handler.unary_stream is not None:
        inner_us = handler.unary_stream

        async def unary_stream(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            seen = generation()
            await admit(context)
            result = inner_us(request, context)
            if inspect.isawaitable(result):  # a handler that writes with context.write()
                await result
                return
            try:
                async for item in result:
                    seen = await readmit(context, seen)
                    yield item
            finally:  # end the handler now, not when its generator is collected
                if hasattr(result, "aclose"):
                    await result.aclose()

        return grpc.unary_stream_rpc_method_handler(
            unary_stream,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
    if handler.stream_stream is not None:
        inner_ss = handler.stream_stream

        async def stream_stream(requests: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            seen = generation()
            await admit(context)
            result = inner_ss(requests, context)
            if inspect.isawaitable(result):
                await result
                return
            try:
                async for item in result:
                    seen = await readmit(context, seen)
                    yield item
            finally:  # end the handler now, not when its generator is collected
                if hasattr(result, "aclose"):
                    await result.aclose()

        return grpc.stream_stream_rpc_method_handler(
            stream_stream,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
    if handler.stream_unary is not None:
        inner_su = handler.stream_unary

        async def stream_unary(requests: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            await admit(context)
            return await inner_su(requests, context)

        return grpc.stream_unary_rpc_method_handler(
            stream_unary,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
    return original

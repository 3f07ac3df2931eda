"""OpenTelemetry tracing of the gateway (the optional `otel` extra; `tracing` in its file).

Imported only when `tracing` is set, so a gateway without it pays nothing: no interceptor, no
journal subscriber, no OpenTelemetry import. When set:

- every OperatorService call is a SERVER span named `hotline.v1.OperatorService/<Method>`,
  whose parent is the caller's trace context read from the call's gRPC metadata (W3C
  `traceparent` / `tracestate`, as `client.tracing` writes it). Trace context travels in
  metadata only, never inside an envelope: what the gateway signs and journals is unchanged.
  The PeerLink, health and reflection calls are not traced.
- each message a traced Send, SendBatch or SendStream journaled gets stage spans, children of
  that call's span, timed from the journal entries themselves (the same after-commit
  publication that feeds the metrics): `hotline.deliver` from our journal commit to the
  peer's signed receipt (or its rejection, an error), and `hotline.acknowledge` from our
  journal commit to the peer operator's acknowledgement. The trace ends at our border: the
  peer gateway's spans are its own traces.

Spans go to the process's tracer provider if one was set up before the gateway started (an
application embedding the gateway, a test with an in-memory exporter); otherwise the gateway
makes its own: `tracing = "otlp"` exports over OTLP/gRPC, configured by the standard
`OTEL_EXPORTER_OTLP_*` variables (default `localhost:4317`), `tracing = "console"` prints
each span as JSON on stdout. Its service name is `hotline-gateway-<party>` unless
`OTEL_SERVICE_NAME` says otherwise.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import grpc
from opentelemetry import trace
from opentelemetry.propagators.textmap import Getter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from hotline.journal_file import Entry, Kind
from hotline.v1 import operator_pb2
from server.metrics import acknowledged_id

__all__ = ["GatewayTracing"]

log = logging.getLogger("hotline.tracing")

SERVICE = "/hotline.v1.OperatorService/"
_TRACKED = 100_000  # messages whose call's span context is kept for their stage spans
_PROPAGATOR = TraceContextTextMapPropagator()


class _MetadataGetter(Getter[tuple[tuple[str, str | bytes], ...]]):
    """Reads W3C trace context from a call's invocation metadata (a sequence of pairs)."""

    def get(self, carrier: tuple[tuple[str, str | bytes], ...], key: str) -> list[str] | None:
        found = [v for k, v in carrier if k == key and isinstance(v, str)]
        return found or None

    def keys(self, carrier: tuple[tuple[str, str | bytes], ...]) -> list[str]:
        return [k for k, _ in carrier]


_GETTER = _MetadataGetter()


def _exporter(mode: str) -> SpanExporter:
    if mode == "otlp":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter()
    from opentelemetry.sdk.trace.export import ConsoleSpanExporter

    return ConsoleSpanExporter()


class GatewayTracing:
    """One gateway's spans: a server interceptor for the operator calls and a journal
    subscriber for the stages of the messages those calls journaled."""

    def __init__(self, mode: str, party: str, provider: TracerProvider | None = None) -> None:
        self._own: TracerProvider | None = None
        if provider is None:
            current = trace.get_tracer_provider()
            if isinstance(current, TracerProvider):  # the process set one up: use it
                provider = current
            else:
                name = os.environ.get("OTEL_SERVICE_NAME") or f"hotline-gateway-{party.lower()}"
                provider = TracerProvider(resource=Resource.create({"service.name": name}))
                provider.add_span_processor(BatchSpanProcessor(_exporter(mode)))
                self._own = provider
        self.tracer = provider.get_tracer("hotline.gateway")
        # message id -> (the span context of the call that journaled it, journal time in ns)
        self._messages: OrderedDict[str, tuple[SpanContext, int]] = OrderedDict()
        self.unsubscribe: Callable[[], None] | None = None  # from the journal, set by the gateway
        log.info("tracing operator calls and message stages (OpenTelemetry, %s)", mode)

    def interceptor(self) -> grpc.aio.ServerInterceptor:
        return _TracingInterceptor(self)

    def stop(self) -> None:
        """Leave the journal and flush what is buffered (a provider of our own is shut down)."""
        if self.unsubscribe is not None:
            self.unsubscribe()
            self.unsubscribe = None
        if self._own is not None:
            self._own.shutdown()
            self._own = None

    # -------------------------------------------------------------- calls

    def start_call(
        self, method: str, metadata: tuple[tuple[str, str | bytes], ...] | None
    ) -> trace.Span:
        parent = _PROPAGATOR.extract(metadata or (), getter=_GETTER)
        name = method.lstrip("/")
        return self.tracer.start_span(
            name,
            context=parent,
            kind=SpanKind.SERVER,
            attributes={
                "rpc.system": "grpc",
                "rpc.service": name.partition("/")[0],
                "rpc.method": name.partition("/")[2],
            },
        )

    def sent(self, span: trace.Span, response: object) -> None:
        """Remember which messages a Send / SendBatch / SendStream response journaled."""
        if isinstance(response, operator_pb2.SendResponse):
            sent = [response]
        elif isinstance(response, operator_pb2.SendBatchResponse | operator_pb2.SendStreamResponse):
            sent = [r.sent for r in response.results if r.HasField("sent")]
        else:
            return
        context = span.get_span_context()
        for one in sent:
            self._messages[one.message_id] = (context, one.journal_time.ToNanoseconds())
        while len(self._messages) > _TRACKED:
            self._messages.popitem(last=False)

    # -------------------------------------------------------------- stages

    def observe(self, entries: Iterable[Entry]) -> None:
        """Stage spans of traced messages (subscribed to the journal; on the event loop)."""
        for entry in entries:
            kind = entry.kind
            if kind is Kind.DELIVERED:
                known = self._messages.get(entry.message_id)
                if known is not None:
                    self._stage("hotline.deliver", entry.message_id, known, entry.time_ns)
            elif kind is Kind.REFUSED_BY_PEER:
                known = self._messages.pop(entry.message_id, None)
                if known is not None:
                    self._stage(
                        "hotline.deliver", entry.message_id, known, entry.time_ns, "refused by peer"
                    )
            elif kind is Kind.MESSAGE_IN:
                acknowledged = acknowledged_id(entry)
                known = self._messages.pop(acknowledged, None) if acknowledged else None
                if known is not None:
                    self._stage("hotline.acknowledge", acknowledged, known, entry.time_ns)

    def _stage(
        self,
        name: str,
        message_id: str,
        known: tuple[SpanContext, int],
        end_ns: int,
        error: str = "",
    ) -> None:
        context, start_ns = known
        span = self.tracer.start_span(
            name,
            context=trace.set_span_in_context(trace.NonRecordingSpan(context)),
            start_time=start_ns,
            attributes={"hotline.message_id": message_id},
        )
        if error:
            span.set_status(Status(StatusCode.ERROR, error))
        span.end(end_time=max(end_ns, start_ns))


def _finish(span: trace.Span, context: grpc.aio.ServicerContext[Any, Any], error: object) -> None:
    code: object = context.code()  # None while nothing has set it
    if isinstance(error, asyncio.CancelledError | GeneratorExit):  # the caller left (a Watch)
        span.set_attribute("rpc.grpc.status_code", grpc.StatusCode.CANCELLED.value[0])
    elif isinstance(code, grpc.StatusCode):
        span.set_attribute("rpc.grpc.status_code", code.value[0])
        if code is not grpc.StatusCode.OK:
            span.set_status(Status(StatusCode.ERROR, f"{code.name}: {context.details() or ''}"))
    elif error is not None:
        span.set_status(Status(StatusCode.ERROR, type(error).__name__))
    span.end()


class _TracingInterceptor(grpc.aio.ServerInterceptor):
    """Wraps each OperatorService handler in a SERVER span (made once per method)."""

    def __init__(self, tracing: GatewayTracing) -> None:
        self._tracing = tracing
        self._wrapped: dict[
            str, tuple[grpc.RpcMethodHandler[Any, Any], grpc.RpcMethodHandler[Any, Any]]
        ] = {}

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(handler_call_details)
        method: str = handler_call_details.method
        if handler is None or not method.startswith(SERVICE):
            return handler
        known = self._wrapped.get(method)
        if known is not None and known[0] is handler:
            return known[1]
        wrapped = _wrap(handler, self._tracing, method)
        self._wrapped[method] = (handler, wrapped)
        return wrapped


def _wrap(
    original: grpc.RpcMethodHandler[Any, Any], tracing: GatewayTracing, method: str
) -> grpc.RpcMethodHandler[Any, Any]:
    handler: Any = original  # grpc's stubs type behaviours for the sync API
    serializers = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }

    def start(context: grpc.aio.ServicerContext[Any, Any]) -> trace.Span:
        return tracing.start_call(method, context.invocation_metadata())  # type: ignore[arg-type]

    if handler.unary_unary is not None:
        inner_uu = handler.unary_unary

        async def unary_unary(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            span, error = start(context), None
            try:
                response = await inner_uu(request, context)
                tracing.sent(span, response)
                return response
            except BaseException as exc:
                error = exc
                raise
            finally:
                _finish(span, context, error)

        return grpc.unary_unary_rpc_method_handler(unary_unary, **serializers)

    def streamed(behaviour: Any) -> Any:
        async def stream(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            span, error = start(context), None
            try:
                result = behaviour(request, context)
                if inspect.isawaitable(result):  # a handler that writes with context.write()
                    await result
                    return
                try:
                    async for item in result:
                        tracing.sent(span, item)
                        yield item
                finally:
                    if hasattr(result, "aclose"):
                        await result.aclose()
            except BaseException as exc:
                error = exc
                raise
            finally:
                _finish(span, context, error)

        return stream

    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(streamed(handler.unary_stream), **serializers)
    if handler.stream_stream is not None:
        return grpc.stream_stream_rpc_method_handler(streamed(handler.stream_stream), **serializers)
    return original  # no client-streaming operator call exists

"""Trace context for the gateway: the caller's current OpenTelemetry span, in gRPC metadata.

When the optional `otel` extra is installed and the calling code has a span active (its own
tracer, set up as it likes), each call of `OperatorClient` carries that span's W3C trace
context as `traceparent` (and `tracestate`) metadata, so the gateway's span for the call
(`tracing` in its file) is a child of the caller's. The context travels in the call's
metadata only, never inside the envelope: what the gateway signs is what the caller sent.

Without the package, or with no span active, `trace_metadata()` is None and the calls are
made exactly as before; the cost is one lookup of the current span.
"""

from __future__ import annotations

__all__ = ["trace_metadata"]

try:
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
except ImportError:  # the `otel` extra is not installed
    _PROPAGATOR = None
else:
    _PROPAGATOR = TraceContextTextMapPropagator()


def trace_metadata() -> tuple[tuple[str, str], ...] | None:
    """The current trace context as gRPC metadata, or None (no package, no span)."""
    if _PROPAGATOR is None:
        return None
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier)
    return tuple(carrier.items()) or None

"""OpenTelemetry tracing (`tracing` in the gateway's file, the `otel` extra): real gateways on
loopback with mTLS, the operator client, and the SDK's in-memory exporter.

The caller's span travels to the gateway in gRPC metadata (W3C traceparent) and becomes the
parent of the gateway's span for the call, whose children time each message's delivery and
acknowledgement; the trace id is nowhere in what the gateways signed and journaled.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from client.operator import ACKNOWLEDGED, DELIVERED, OperatorClient
from hotline.cli import main
from hotline.v1 import bodies_pb2
from tests.harness import Pair, free_text, running_pair

SERVICE = "hotline.v1.OperatorService/"


@pytest.fixture(scope="module")
def exporter() -> InMemorySpanExporter:
    """The process's tracer provider (set once per process) with an in-memory exporter."""
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    found = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(found))
    return found


def client_for(pair: Pair, party: str) -> OperatorClient:
    side = pair.jp if party == "JP" else pair.tw
    return OperatorClient.from_pki(pair.pki, party, "watch-1", address=f"127.0.0.1:{side.port}")


def named(spans: Sequence[ReadableSpan], name: str) -> list[ReadableSpan]:
    return [s for s in spans if s.name == name]


async def spans_with(exporter: InMemorySpanExporter, name: str, count: int) -> list[ReadableSpan]:
    """The finished spans once `count` named `name` are among them (the stage spans are made
    when the journal's commit is published, just after the client saw it)."""
    for _ in range(200):
        spans = list(exporter.get_finished_spans())
        if len(named(spans, name)) >= count:
            return spans
        await asyncio.sleep(0.05)
    raise AssertionError(f"fewer than {count} {name} spans: {[s.name for s in spans]}")


async def test_the_callers_span_is_the_parent_of_the_gateway_call_and_its_stages(
    tmp_path: Path, exporter: InMemorySpanExporter
) -> None:
    exporter.clear()
    tracer = trace.get_tracer("watch officer script")
    async with (
        running_pair(tmp_path, overrides={"tracing": "otlp"}) as pair,
        client_for(pair, "JP") as jp,
        client_for(pair, "TW") as tw,
    ):
        with tracer.start_as_current_span("report an encounter") as root:
            sent = await jp.send(free_text("traced"))
            batch = await jp.send_many([free_text("batch 1"), free_text("batch 2")])
            async with jp.stream() as stream:
                streamed = await stream.send(free_text("streamed"))
        ids = [sent.message_id, streamed.message_id]
        ids += [r.message_id for r in batch if not isinstance(r, Exception)]
        for message_id in ids:
            await jp.wait_for(message_id, DELIVERED)
        await tw.wait_for(sent.message_id, DELIVERED)  # TW holds it
        await tw.acknowledge(sent.message_id, bodies_pb2.ACKNOWLEDGEMENT_LEVEL_ROGER)
        await jp.wait_for(sent.message_id, ACKNOWLEDGED)
        spans = await spans_with(exporter, "hotline.acknowledge", 1)
        spans = await spans_with(exporter, "hotline.deliver", len(ids))
        journals = [p for p in tmp_path.iterdir() if p.name.startswith(("jp.db", "tw.db"))]
        journal_bytes = b"".join(p.read_bytes() for p in journals)

    assert len(ids) == 4
    context = root.get_span_context()
    calls = {}
    for method in ("Send", "SendBatch", "SendStream"):
        (call,) = named(spans, SERVICE + method)
        assert call.kind is SpanKind.SERVER
        assert call.context.trace_id == context.trace_id, method
        assert call.parent is not None, method
        assert call.parent.span_id == context.span_id, method
        assert call.attributes is not None
        assert call.attributes["rpc.method"] == method
        calls[method] = call.context.span_id
    parent_of = {
        sent.message_id: calls["Send"],
        streamed.message_id: calls["SendStream"],
        **{r.message_id: calls["SendBatch"] for r in batch if not isinstance(r, Exception)},
    }
    delivered = {
        str(s.attributes["hotline.message_id"]): s
        for s in named(spans, "hotline.deliver")
        if s.attributes is not None
    }
    assert set(delivered) == set(ids)
    for message_id, span in delivered.items():
        assert span.parent is not None
        assert span.parent.span_id == parent_of[message_id]
        assert span.context.trace_id == context.trace_id
        assert span.start_time is not None
        assert span.end_time is not None
        assert span.start_time <= span.end_time
        assert span.status.is_ok
    (acknowledged,) = named(spans, "hotline.acknowledge")
    assert acknowledged.attributes is not None
    assert acknowledged.attributes["hotline.message_id"] == sent.message_id
    assert acknowledged.parent is not None
    assert acknowledged.parent.span_id == calls["Send"]
    # TW's Acknowledge was traced too, in a trace of its own (no span was active at the caller)
    (ack_call,) = named(spans, SERVICE + "Acknowledge")
    assert ack_call.parent is None
    # the trace context travelled in metadata only: nothing of it in either journal
    assert journal_bytes
    for trace_id in {context.trace_id, ack_call.context.trace_id}:
        assert format(trace_id, "032x").encode() not in journal_bytes
        assert trace_id.to_bytes(16, "big") not in journal_bytes


async def test_a_gateway_without_tracing_makes_no_spans(
    tmp_path: Path, exporter: InMemorySpanExporter
) -> None:
    exporter.clear()
    tracer = trace.get_tracer("watch officer script")
    async with running_pair(tmp_path) as pair, client_for(pair, "JP") as jp:
        assert pair.jp.gateway.tracing is None
        with tracer.start_as_current_span("report an encounter"):
            sent = await jp.send(free_text("not traced"))
        await jp.wait_for(sent.message_id, DELIVERED)
    assert [s.name for s in exporter.get_finished_spans()] == ["report an encounter"]


@pytest.mark.parametrize("mode", ["otlp", "console"])
def test_tracing_without_the_packages_exits_2_saying_what_to_install(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    mode: str,
) -> None:
    # as if the `otel` extra were not installed: importing any of it fails
    for name in [n for n in sys.modules if n.startswith("opentelemetry.")]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, "opentelemetry.sdk", None)
    config = tmp_path / "jp.toml"
    config.write_text(
        'party = "JP"\npeer_party = "TW"\npeer_address = "127.0.0.1:1"\n'
        f'listen = "127.0.0.1:0"\ntracing = "{mode}"\n'
    )
    assert main(["serve", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert f'tracing = "{mode}": needs the OpenTelemetry packages' in err
    assert "opentelemetry.sdk is not installed: pip install 'hotline[otel]'" in err
    assert err.count("\n") == 1
    assert "Traceback" not in err

"""Strict envelopes and malformed requests, against real gateways over mutual TLS.

* An envelope holding a field the specification does not define (999), at the top level or
  deep in its body, is refused at `Send` (INVALID_ARGUMENT naming the path and the number) and
  so never signed or relayed; on the link a signed one is rejected as INVALID_MESSAGE naming
  the number; unknown fields smuggled into an acknowledgement's remarks are refused too.
* A request whose bytes do not parse gets INVALID_ARGUMENT saying so, in unary calls and in
  streams, with no traceback in the log; a caller who may not call gets its refusal instead.
* A forged page token (a huge, negative or non-integer position, or garbage) gets
  INVALID_ARGUMENT, never UNKNOWN.
"""

from __future__ import annotations

import base64
import json
import logging
from pathlib import Path

import grpc
import pytest
from google.protobuf import text_format

from hotline.strict import strip_unknown_fields
from hotline.v1 import bodies_pb2, common_pb2, envelope_pb2, operator_pb2, operator_pb2_grpc
from server.journal import Kind
from tests.harness import free_text, running_pair, wait_state
from tests.security.conftest import (
    WAIT,
    Lone,
    fake_tw_peer,
    journal_entries,
    operator_of,
    rpc_error,
    signer_of,
    signing_der,
    tw_envelope,
)

EXAMPLES = Path(__file__).resolve().parents[2] / "proto" / "examples" / "valid"
FIELD_999 = b"\xb8\x3e\x01"  # field 999, varint 1: no message of hotline.v1 defines it


def with_unknown(message: envelope_pb2.Envelope | object) -> None:
    """Give `message` (any protobuf message) an unknown field 999, as a newer peer might."""
    assert hasattr(message, "MergeFromString")
    message.MergeFromString(FIELD_999)


def encounter() -> envelope_pb2.Envelope:
    env = text_format.Parse(
        (EXAMPLES / "maritime_encounter.txtpb").read_text(encoding="utf-8"),
        envelope_pb2.Envelope(),
    )
    for name in ("message_id", "sender_party", "originator", "create_time", "expire_time"):
        env.ClearField(name)
    return env


def no_tracebacks(caplog: pytest.LogCaptureFixture) -> None:
    for record in caplog.records:
        assert record.exc_info is None, f"{record.name}: {record.getMessage()}"
        assert "Traceback" not in record.getMessage()


# ------------------------------------------------------------------------------ strict envelopes


def test_unknown_fields_are_found_at_any_depth_and_stripped() -> None:
    env = encounter()
    assert strip_unknown_fields(env) == ()
    with_unknown(env)
    with_unknown(env.maritime_encounter.contacts[0].identity)
    found = strip_unknown_fields(env)
    assert [(f.path, f.number) for f in found] == [
        ("", 999),
        ("maritime_encounter.contacts[0].identity", 999),
    ]
    assert strip_unknown_fields(env) == ()  # stripped


@pytest.mark.parametrize("where", ["top", "deep"])
async def test_send_refuses_an_envelope_with_an_unknown_field(tmp_path: Path, where: str) -> None:
    env = encounter()
    if where == "top":
        with_unknown(env)
        path = "envelope: unknown field number 999"
    else:
        with_unknown(env.maritime_encounter.contacts[0].identity)
        path = "envelope.maritime_encounter.contacts[0].identity: unknown field number 999"
    async with running_pair(tmp_path) as pair:
        error = await rpc_error(
            pair.jp.stub.Send(operator_pb2.SendRequest(envelope=env), timeout=WAIT)
        )
        assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert path in (error.details() or "")
        # ... in a batch too, per envelope, the others unaffected
        good = free_text("fine")
        batch = await pair.jp.stub.SendBatch(
            operator_pb2.SendBatchRequest(envelopes=[env, good]), timeout=WAIT
        )
        assert batch.results[0].error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
        assert path in batch.results[0].error.message
        await wait_state(pair.jp.stub, good.message_id, operator_pb2.DELIVERY_STATE_DELIVERED)
        # nothing with field 999 was journaled, signed or relayed
        for side in (pair.jp, pair.tw):
            listed = await side.stub.ListMessages(operator_pb2.ListMessagesRequest(), timeout=WAIT)
            assert [m.envelope.message_id for m in listed.messages] == [good.message_id]
            for m in listed.messages:
                assert FIELD_999 not in m.signed_envelope.payload


async def test_acknowledge_refuses_remarks_with_an_unknown_field(tmp_path: Path) -> None:
    async with running_pair(tmp_path) as pair:
        sent = await pair.jp.stub.Send(operator_pb2.SendRequest(envelope=free_text("hello")))
        await wait_state(pair.jp.stub, sent.message_id, operator_pb2.DELIVERY_STATE_DELIVERED)
        remarks = common_pb2.LocalizedText()
        variant = remarks.variants.add(
            language="en", text="noted", kind=common_pb2.TRANSLATION_KIND_ORIGINAL
        )
        with_unknown(variant)
        error = await rpc_error(
            pair.tw.stub.Acknowledge(
                operator_pb2.AcknowledgeRequest(
                    message_id=sent.message_id,
                    level=bodies_pb2.ACKNOWLEDGEMENT_LEVEL_ROGER,
                    remarks=remarks,
                ),
                timeout=WAIT,
            )
        )
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "acknowledgement.remarks.variants[0]: unknown field number 999" in (
        error.details() or ""
    )


async def test_the_link_rejects_a_signed_envelope_with_an_unknown_field(jp: Lone) -> None:
    env = tw_envelope("carries field 999")
    with_unknown(env.free_text.text.variants[0])
    signed = signer_of(jp.pki, "TW").sign(
        "application/vnd.hotline.v1.Envelope+protobuf", env.SerializeToString()
    )
    async with fake_tw_peer(jp) as peer:
        await peer.open([signing_der(jp.pki, "TW")])
        receipt = await peer.deliver(1, signed)
    assert receipt.receipts == ()
    [rejection] = receipt.rejections
    assert rejection.reason.name == "INVALID_MESSAGE"
    assert rejection.message_id == env.message_id
    assert "free_text.text.variants[0]: unknown field number 999" in rejection.detail
    assert [e.message_id for e in journal_entries(jp.gateway, Kind.MESSAGE_IN)] == []
    assert [e.message_id for e in journal_entries(jp.gateway, Kind.REFUSED_INBOUND)] == [
        env.message_id
    ]


# ------------------------------------------------------------------------------ malformed bytes

GARBAGE = b"\xff\xff\xff\xff not protobuf"


async def test_malformed_requests_get_invalid_argument_and_no_traceback(
    jp: Lone, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    ch = operator_of(jp.pki, "JP", "watch-1", jp.port, "JP")
    try:
        for method in ("Send", "GetMessage", "ListMessages", "Acknowledge"):
            call: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = ch.unary_unary(
                f"/hotline.v1.OperatorService/{method}"
            )
            error = await rpc_error(call(GARBAGE, timeout=WAIT))
            assert error.code() is grpc.StatusCode.INVALID_ARGUMENT, method
            assert f"Error parsing message with type 'hotline.v1.{method}Request'" in (
                error.details() or ""
            )
            assert "the request does not parse" in (error.details() or "")
        watching: grpc.aio.UnaryStreamMultiCallable[bytes, bytes] = ch.unary_stream(
            "/hotline.v1.OperatorService/Watch"
        )
        watch = watching(GARBAGE, timeout=WAIT)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await watch.read()
        assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        # a stream: the good requests before the bad one are answered, then the call ends
        streaming: grpc.aio.StreamStreamMultiCallable[bytes, bytes] = ch.stream_stream(
            "/hotline.v1.OperatorService/SendStream"
        )
        stream = streaming(timeout=WAIT)
        good = operator_pb2.SendStreamRequest(envelopes=[free_text("before", recipient="TW")])
        await stream.write(good.SerializeToString())
        answer = await stream.read()
        assert isinstance(answer, bytes)
        first = operator_pb2.SendStreamResponse.FromString(answer)
        assert first.results[0].WhichOneof("outcome") == "sent"
        await stream.write(GARBAGE)
        ended = await rpc_error(stream.read())
        assert ended.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert "SendStreamRequest" in (ended.details() or "")
        # and the gateway still serves the same connection
        stub = operator_pb2_grpc.OperatorServiceStub(ch)
        await stub.GetLinkStatus(operator_pb2.GetLinkStatusRequest(), timeout=WAIT)
    finally:
        await ch.close()
    no_tracebacks(caplog)


async def test_a_caller_who_may_not_call_gets_its_refusal_not_a_parse_error(jp: Lone) -> None:
    intruder = operator_of(jp.pki, "TW", "watch-1", jp.port, "JP")  # TW operator at JP
    try:
        call: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = intruder.unary_unary(
            "/hotline.v1.OperatorService/Send"
        )
        error = await rpc_error(call(GARBAGE, timeout=WAIT))
    finally:
        await intruder.close()
    assert error.code() is grpc.StatusCode.PERMISSION_DENIED
    assert "parse" not in (error.details() or "")


# ------------------------------------------------------------------------------ page tokens


def forged(token: str, before: object) -> str:
    data = json.loads(base64.urlsafe_b64decode(token.encode()))
    data["before"] = before
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode()


async def test_forged_page_tokens_get_invalid_argument(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with running_pair(tmp_path) as pair:
        for text in ("one", "two"):
            await pair.jp.stub.Send(operator_pb2.SendRequest(envelope=free_text(text)))
        first = await pair.jp.stub.ListMessages(
            operator_pb2.ListMessagesRequest(page_size=1), timeout=WAIT
        )
        token = first.next_page_token
        assert token
        tokens = [
            forged(token, 10**30),  # was UNKNOWN: OverflowError from SQLite
            forged(token, 2**63),
            forged(token, -1),
            forged(token, 0),
            forged(token, 1.5),
            forged(token, "3"),
            forged(token, True),
            "garbage!",
            base64.urlsafe_b64encode(b"[" * 700).decode(),
            base64.urlsafe_b64encode(b'{"before": 2, "filters": []}').decode(),
        ]
        for bad in tokens:
            error = await rpc_error(
                pair.jp.stub.ListMessages(
                    operator_pb2.ListMessagesRequest(page_size=1, page_token=bad), timeout=WAIT
                )
            )
            assert error.code() is grpc.StatusCode.INVALID_ARGUMENT, bad
            assert "page_token" in (error.details() or ""), bad
        # the genuine token still works
        second = await pair.jp.stub.ListMessages(
            operator_pb2.ListMessagesRequest(page_size=1, page_token=token), timeout=WAIT
        )
        assert len(second.messages) == 1
    no_tracebacks(caplog)

"""The peer link's stated bounds: the window, the frame sizes, and the heartbeat settings.

A sender's batches are serialized here exactly as they travel (`hotline.wire`), so the bound on
a frame is checked on real bytes, not on an estimate.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from hotline import link, transport, wire
from hotline.errors import ConfigError
from hotline.link import Delivery, OutboundLink, Outgoing, Send, Welcome
from hotline.signing import PAYLOAD_TYPE_ENVELOPE, sha256
from hotline.v1 import common_pb2
from server.config import GatewayConfig

NONCE = b"n" * 16


def signed(size: int, n: int) -> common_pb2.SignedPayload:
    """A signed payload of `size` bytes, with fields of the sizes a real signature has."""
    return common_pb2.SignedPayload(
        payload=bytes([n % 251]) * size,
        payload_type=PAYLOAD_TYPE_ENVELOPE,
        signature=b"s" * 64,
        key_id="k" * 64,
        algorithm=common_pb2.SIGNATURE_ALGORITHM_ED25519,
    )


def opened(messages: list[Outgoing], **options: object) -> tuple[OutboundLink, list[object]]:
    # large sequences, for the longest varints: a sender that has settled up to 2**40 already
    sender = OutboundLink("JP", "TW", last_receipted_sequence=2**40, **options)  # type: ignore[arg-type]
    for message in messages:
        sender.enqueue(message)
    sender.connect(0.0, NONCE)
    sender.receive(Welcome("TW", "JP", 2**40, NONCE), 0.0)
    sender.tick(0.0)
    return sender, [a.frame for a in sender.drain() if isinstance(a, Send)]


def outgoing(n: int, size: int, precedence: int = 4) -> Outgoing:
    payload = signed(size, n)
    return Outgoing(f"m{n}", precedence, n, sha256(payload.payload), payload, size)


@pytest.mark.must("LINK-8")
@pytest.mark.parametrize("size", [1, 1000, 32_700, 60_000, 400_000, link.MAX_ENVELOPE_BYTES])
def test_every_batch_fits_the_maximum_frame_size(size: int) -> None:
    _, frames = opened([outgoing(n, size) for n in range(1, 41)])
    batches = [f for f in frames if isinstance(f, link.DeliveryBatch)]
    assert batches
    for batch in batches:
        frame = wire.sender_frame_to_wire(batch, [])
        assert frame.ByteSize() <= link.MAX_FRAME_BYTES
        for d in batch.deliveries:
            overhead = wire.sender_frame_to_wire(link.DeliveryBatch((d,)), []).ByteSize()
            assert isinstance(d, Delivery)
            assert overhead - d.size <= link.DELIVERY_OVERHEAD


@pytest.mark.must("LINK-8")
def test_a_gateway_accepts_frames_of_at_least_the_maximum_frame_size(tmp_path: Path) -> None:
    base = {"party": "JP", "peer_party": "TW", "listen": "127.0.0.1:1", "pki_dir": str(tmp_path)}
    base |= {"peer_address": "127.0.0.1:2", "journal": str(tmp_path / "j.db")}
    assert GatewayConfig.from_mapping(base, base=tmp_path).max_message_bytes >= 1 << 20
    with pytest.raises(
        ConfigError, match="max_message_bytes = 4096: must be a whole number from 1_048_576"
    ):
        GatewayConfig.from_mapping(base | {"max_message_bytes": 4096}, base=tmp_path)


@pytest.mark.must("LINK-9")
def test_a_sender_accepts_receiver_frames_of_16_mib() -> None:
    limits = dict(transport.CLIENT_OPTIONS)
    assert limits["grpc.max_receive_message_length"] == 16 * 1024 * 1024


@pytest.mark.must("LINK-21")
def test_a_sender_keeps_at_most_the_window_unsettled() -> None:
    sender, frames = opened(
        [outgoing(n, 10, 1 + n % 4) for n in range(1, 1001)],
        lanes={1: 256, 2: 256, 3: 256, 4: 256},
    )
    sent = sum(len(f.deliveries) for f in frames if isinstance(f, link.DeliveryBatch))
    assert sent == link.DEFAULT_WINDOW == 256
    assert sender.in_flight == 256
    sender.tick(1.0)
    assert not any(
        isinstance(a, Send) and isinstance(a.frame, link.DeliveryBatch) for a in sender.drain()
    )


@pytest.mark.must("LINK-23")
def test_dead_after_must_exceed_the_heartbeat_interval(tmp_path: Path) -> None:
    base = {"party": "JP", "peer_party": "TW", "listen": "127.0.0.1:1", "pki_dir": str(tmp_path)}
    base |= {"peer_address": "127.0.0.1:2", "journal": str(tmp_path / "j.db")}
    with pytest.raises(ConfigError, match="dead_after_s = 2: must exceed heartbeat_interval_s"):
        GatewayConfig.from_mapping(
            base | {"heartbeat_interval_s": 2.0, "dead_after_s": 2.0}, base=tmp_path
        )

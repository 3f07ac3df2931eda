"""The simulator counts each answered message once, by its latest acknowledgement: a message
answered ROGER, then WILCO, then UNABLE counts as UNABLE (the latest stands, as on the
gateways), and its acknowledgement latency stays that of the first answer."""

from __future__ import annotations

import time

from hotline.v1 import bodies_pb2, common_pb2, operator_pb2
from sim.clock import VirtualClock
from sim.engine import Engine, Tracked
from sim.metrics import Metrics


def acknowledged(message_id: str, level: int, cursor: int) -> operator_pb2.Event:
    event = operator_pb2.Event(
        cursor=cursor, kind=operator_pb2.EVENT_KIND_MESSAGE_ACKNOWLEDGED, message_id=message_id
    )
    event.message.acknowledgement.level = level  # type: ignore[assignment]
    return event


async def test_answers_are_counted_by_their_latest_level() -> None:
    engine = Engine(sides={}, clock=VirtualClock(None), metrics=Metrics())
    engine.start_mono = time.monotonic()
    for message_id in ("a", "b"):
        engine.tracked[message_id] = Tracked(
            message_id, "JP", "TW", "free_text", common_pb2.PRECEDENCE_ROUTINE, time.monotonic()
        )
    ladder = [
        ("a", bodies_pb2.ACKNOWLEDGEMENT_LEVEL_ROGER),
        ("b", bodies_pb2.ACKNOWLEDGEMENT_LEVEL_ROGER),
        ("a", bodies_pb2.ACKNOWLEDGEMENT_LEVEL_WILCO),
        ("a", bodies_pb2.ACKNOWLEDGEMENT_LEVEL_UNABLE),
    ]
    first = None
    for cursor, (message_id, level) in enumerate(ladder, 1):
        engine._on_event("JP", acknowledged(message_id, level, cursor))
        if first is None:
            first = engine.tracked["a"].acknowledged
    assert dict(engine.metrics.ack_levels) == {"ROGER": 1, "UNABLE": 1}
    assert engine.tracked["a"].ack_level == bodies_pb2.ACKNOWLEDGEMENT_LEVEL_UNABLE
    assert engine.tracked["a"].acknowledged == first  # latency: the first answer
    assert engine.progress.acknowledged == 2
    assert engine.metrics.counts["acknowledged"] == 2

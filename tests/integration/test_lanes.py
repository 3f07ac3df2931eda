"""Lanes on the wire, end to end: a FLASH is settled while the ROUTINE lane is stuck.

The real JP gateway dials a receiver that plays TW with the protocol core's own receiving end
(the conformance suite's `Listener`: real gRPC, mutual TLS, `InboundLink` per lane, signed
batch receipts), whose ROUTINE lane stops receipting, as if its disk hung. In link protocol 2
a FLASH sent behind ROUTINE deliveries in flight could not be settled before them (one
sequence space); with a lane per precedence it is DELIVERED at once, and the ROUTINE messages
stay JOURNALED until their lane moves again.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from certs.pki import PkiLayout
from hotline import link
from hotline.v1 import common_pb2, operator_pb2, operator_pb2_grpc
from server.gateway import Gateway
from sim.conformance.listener import Listener
from sim.conformance.material import Material
from tests.harness import config, free_port, free_text, make_pki, operator_channel, wait_for

DELIVERED = operator_pb2.DELIVERY_STATE_DELIVERED
JOURNALED = operator_pb2.DELIVERY_STATE_JOURNALED


async def test_a_flash_is_settled_while_the_routine_lane_is_stuck(tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki")
    listener = Listener(
        Material(PkiLayout.load(pki), target="JP", us="TW"), host="127.0.0.1", port=0, timeout=5
    )
    port = await listener.start()
    listener.hold_lanes = {link.ROUTINE_LANE}
    jp = Gateway(config(pki, "JP", port=free_port(), peer_port=port, journal=tmp_path / "jp.db"))
    jp_port = await jp.start()
    channel = operator_channel(pki, "JP", jp_port)
    stub = operator_pb2_grpc.OperatorServiceStub(channel)
    try:
        await wait_for(lambda: jp.sender.status.up, 10, "JP's four lanes up")
        routine = [free_text(f"routine {i}") for i in range(5)]
        for envelope in routine:
            await stub.Send(operator_pb2.SendRequest(envelope=envelope))
        await wait_for(
            lambda: all(e.message_id in listener.accepted for e in routine), 10, "ROUTINE arrived"
        )
        flash = free_text("FLASH behind the stuck ROUTINE", precedence=common_pb2.PRECEDENCE_FLASH)
        await stub.Send(operator_pb2.SendRequest(envelope=flash))
        await wait_for(lambda: state(jp, flash.message_id) == DELIVERED, 10, "the FLASH DELIVERED")
        assert [state(jp, e.message_id) for e in routine] == [JOURNALED] * 5
        assert listener.problems == []
        listener.hold_lanes = set()
        listener.end_current("the ROUTINE lane's disk is back")  # releases what was held
        await wait_for(
            lambda: all(state(jp, e.message_id) == DELIVERED for e in routine),
            15,
            "ROUTINE DELIVERED after the reconnect",
        )
        assert all(listener.accepted[e.message_id] == 1 for e in routine)  # once each
    finally:
        await channel.close()
        await jp.stop(0.5)
        await listener.close()
        await asyncio.sleep(0)


def state(gateway: Gateway, message_id: str) -> int:
    record = gateway.store.record(message_id)
    return record.state if record is not None else 0

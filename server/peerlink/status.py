"""What operators see of one direction of the peer link (`GetLinkStatus`, `hotline status`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from hotline import link
from hotline.display import escaped
from hotline.v1 import common_pb2

LANE_NAMES = {
    lane: common_pb2.Precedence.Name(common_pb2.Precedence.ValueType(lane)).removeprefix(
        "PRECEDENCE_"
    )
    for lane in link.LANES
}


def by_lane(sequences: Mapping[int, int]) -> str:
    """`{lane: sequence}` as operators read it: "FLASH 3, IMMEDIATE 0, ..."."""
    return ", ".join(f"{LANE_NAMES[lane]} {sequence}" for lane, sequence in sequences.items())


@dataclass
class LinkStatus:
    """The state of one direction of the link, as its adapter last saw it.

    `last_sequence` is the last settled sequence: for the outbound direction the highest
    sequence we hold every settlement up to; for the inbound one the highest we settled.
    """

    up: bool = False
    since: float = 0.0  # when `up` last changed, seconds since the epoch (0: never)
    rtt: float = 0.0  # seconds, from the last heartbeat
    clock_offset: float = 0.0  # the peer's clock minus ours, seconds
    detail: str = "not yet connected"
    last_sequence: int = 0

    def went(self, up: bool, now: float, detail: str) -> None:
        """Record a change of state (the timings belong to the connection that ended)."""
        self.up, self.since, self.detail = up, now, detail
        if not up:
            self.rtt = self.clock_offset = 0.0


def printable(text: str, limit: int = 300) -> str:
    """Peer-supplied text made safe for one log line: cut to `limit` characters, anything not
    printable escaped (`hotline.display.escaped`, the same escaping the CLI shows).

    Printable text of any script (ja, zh-Hant) stays as it is; a newline or escape sequence in
    a peer's rejection detail cannot forge a log line or drive a terminal.
    """
    return escaped(text[:limit]) + ("…" if len(text) > limit else "")

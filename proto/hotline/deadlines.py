"""Acknowledgement deadlines per precedence (after ACP 121's handling times).

The defaults are part of the specification (`hotline.v1.Precedence`); each gateway may
configure its own in `[deadlines]` of its TOML file.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from hotline.v1 import common_pb2

FLASH = common_pb2.PRECEDENCE_FLASH
IMMEDIATE = common_pb2.PRECEDENCE_IMMEDIATE
PRIORITY = common_pb2.PRECEDENCE_PRIORITY
ROUTINE = common_pb2.PRECEDENCE_ROUTINE

DEFAULT_DEADLINES_S: Mapping[int, float] = {
    FLASH: 10 * 60.0,
    IMMEDIATE: 30 * 60.0,
    PRIORITY: 3 * 3600.0,
    ROUTINE: 6 * 3600.0,
}

NAMES = {FLASH: "FLASH", IMMEDIATE: "IMMEDIATE", PRIORITY: "PRIORITY", ROUTINE: "ROUTINE"}


@dataclass(frozen=True)
class Deadlines:
    """Seconds from journaling to the acknowledgement deadline, per precedence."""

    seconds: Mapping[int, float] = field(default_factory=lambda: dict(DEFAULT_DEADLINES_S))

    def for_precedence(self, precedence: int) -> float:
        return self.seconds.get(precedence, self.seconds[ROUTINE])

    @classmethod
    def from_names(cls, values: Mapping[str, float]) -> Deadlines:
        """Build from {"FLASH": 600, ...} (config files); missing names keep the default."""
        by_name = {name: value for value, name in NAMES.items()}
        merged = dict(DEFAULT_DEADLINES_S)
        for name, seconds in values.items():
            key = name.upper()
            if key not in by_name:
                raise ValueError(f"unknown precedence {name!r} (use {', '.join(by_name)})")
            if not seconds > 0:
                raise ValueError(f"deadline for {key} must be positive, got {seconds}")
            merged[by_name[key]] = float(seconds)
        return cls(merged)

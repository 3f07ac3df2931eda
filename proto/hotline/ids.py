"""Message ids: UUIDv7 (RFC 9562), time-ordered, in canonical lowercase form."""

from __future__ import annotations

import os
import re
import time
import uuid

MESSAGE_ID_PATTERN = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def new_message_id(now_ns: int | None = None) -> str:
    """A new UUIDv7: 48-bit Unix milliseconds, version 7, 74 random bits."""
    ms = (time.time_ns() if now_ns is None else now_ns) // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    value = (ms & ((1 << 48) - 1)) << 80
    value |= 0x7 << 76
    value |= ((rand >> 62) & 0xFFF) << 64
    value |= 0b10 << 62
    value |= rand & ((1 << 62) - 1)
    return str(uuid.UUID(int=value))


def is_message_id(text: str) -> bool:
    return MESSAGE_ID_PATTERN.fullmatch(text) is not None  # `$` alone lets "...\n" through

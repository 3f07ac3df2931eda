"""The interfaces the peer link's adapters need from the gateway's durable records.

`server.store.Store` satisfies them; tests may pass anything with the same methods.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Protocol

from hotline import link


class Outbox(Protocol):
    """What the sending end needs: the unsettled outbox, and a way to journal settlements."""

    def unsettled_outbound(self) -> list[link.Outgoing]: ...

    def last_settled_outbound(self, lane: int) -> int:
        """The highest sequence settled on our lane `lane` (0: none)."""
        ...

    def record_settlement(self, plan: link.SettleOutbound) -> Awaitable[None]:
        """Submit a verified batch receipt's settlements to the journal now (in arrival
        order); the result resolves once they are durable."""
        ...

    def journal_hash_at(self, entry_count: int) -> bytes | None:
        """Our journal's chain hash after `entry_count` entries; None if it holds fewer."""
        ...

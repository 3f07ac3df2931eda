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

    def last_settled_outbound(self) -> int: ...

    def record_receipt(self, info: link.ReceiptInfo) -> Awaitable[None]:
        """Submit the receipt to the journal now (in arrival order); await durability."""
        ...

    def record_refused_by_peer(self, rejection: link.Rejection) -> Awaitable[None]: ...

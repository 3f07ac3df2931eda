"""The `operator` role's checks (placeholder)."""

from __future__ import annotations

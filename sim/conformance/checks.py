"""Every check, registered in the order they run: import this module to fill the registry."""

from __future__ import annotations

from sim.conformance import listen_checks, operator_checks, peer_checks

__all__ = ["listen_checks", "operator_checks", "peer_checks"]

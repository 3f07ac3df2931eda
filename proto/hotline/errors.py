"""The exception tree of Hotline.

    HotlineError                      root of everything this project raises on purpose
    ├── ValidationError               a message breaks the spec's field constraints (has .violations)
    ├── SignatureError                a signature is missing, malformed, by the wrong key or wrong party
    ├── ProtocolError                 the link protocol was broken
    │   ├── LocalProtocolError        ... by us (a bug on this side)
    │   └── RemoteProtocolError       ... by the peer
    └── ConfigError                   a configuration or file problem the user must fix

Errors are translated to gRPC status codes only in the adapters (`server`, `client`).
"""

from __future__ import annotations

from dataclasses import dataclass


class HotlineError(Exception):
    """Root of all errors raised on purpose by Hotline."""


@dataclass(frozen=True)
class Violation:
    """One broken field constraint: the dotted field path and what is wrong with it."""

    field: str
    description: str

    def __str__(self) -> str:
        return f"{self.field}: {self.description}"


class ValidationError(HotlineError):
    """A message breaks the field constraints of the specification."""

    def __init__(self, violations: list[Violation]) -> None:
        self.violations = list(violations)
        super().__init__("; ".join(str(v) for v in self.violations) or "invalid message")


class SignatureError(HotlineError):
    """A signature is missing, malformed, or made by a key that may not sign this."""


class ProtocolError(HotlineError):
    """The peer link protocol was broken."""


class LocalProtocolError(ProtocolError):
    """We broke the protocol (a bug on this side)."""


class RemoteProtocolError(ProtocolError):
    """The peer broke the protocol."""


class ConfigError(HotlineError):
    """A configuration or file problem that the user must fix."""

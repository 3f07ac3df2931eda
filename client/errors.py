"""What the operator client raises: one tree, translated once from gRPC status codes.

    HotlineError                      (hotline.errors) root of everything Hotline raises on purpose
    └── ClientError                   a call to the gateway failed; has .code and .detail
        ├── InvalidMessage            INVALID_ARGUMENT: the request breaks a constraint
        │                             (.violations: list[Violation], parsed from the status text)
        ├── NotAuthenticated          UNAUTHENTICATED: our certificate is missing, invalid, revoked
        ├── PermissionDenied          PERMISSION_DENIED: we are not an operator of this gateway
        ├── NotFound                  NOT_FOUND: no such message in the journal
        ├── AlreadyExists             ALREADY_EXISTS: the id was used for something else
        ├── WrongState                FAILED_PRECONDITION: e.g. acknowledging our own message
        ├── RateLimited               RESOURCE_EXHAUSTED: slow down (rate limit, outbox full,
        │                             too large, or a watcher fell behind)
        ├── Unavailable               UNAVAILABLE: cannot reach the gateway; retryable
        ├── Timeout                   DEADLINE_EXCEEDED, or `wait_for` gave up waiting
        ├── OutOfRange                OUT_OF_RANGE: a watch cursor beyond the journal's end
        ├── MessageRejected           the peer gateway refused the message (final state)
        └── ServerError               any other status (INTERNAL, UNKNOWN, ...): a gateway bug

Lower-layer errors (`grpc.aio.AioRpcError`) never escape the client: `from_rpc_error` is the one
place where they become these classes, so callers catch Hotline's words, not gRPC's.
`Unavailable` is retryable; `Timeout` (DEADLINE_EXCEEDED) is retried only on idempotent calls
(all unary calls of the operator API are: they carry the id of what they create). Every other
code means the same request would fail again. An error raised by a send carries the message id
it was sent with (`message_id`): retry with that id, never a new one.
"""

from __future__ import annotations

import re
from typing import ClassVar

import grpc

from hotline.errors import HotlineError, Violation

__all__ = [
    "AlreadyExists",
    "ClientError",
    "InvalidMessage",
    "MessageRejected",
    "NotAuthenticated",
    "NotFound",
    "OutOfRange",
    "PermissionDenied",
    "RateLimited",
    "ServerError",
    "Timeout",
    "Unavailable",
    "WrongState",
    "from_rpc_error",
    "from_status",
    "parse_violations",
]


class ClientError(HotlineError):
    """A call to the gateway failed. `detail` is the gateway's explanation, `code` its status."""

    retryable: ClassVar[bool] = False
    default_code: ClassVar[grpc.StatusCode | None] = None

    def __init__(self, detail: str, *, code: grpc.StatusCode | None = None) -> None:
        self.detail = detail
        self.code = code if code is not None else self.default_code
        self.message_id = ""  # set by a send: the id to retry with
        super().__init__(detail)

    def __str__(self) -> str:
        name = self.code.name if self.code is not None else type(self).__name__
        return f"{name}: {self.detail}" if self.detail else name


class InvalidMessage(ClientError):
    """The gateway refused the request as invalid; `violations` lists each broken constraint."""

    default_code = grpc.StatusCode.INVALID_ARGUMENT

    def __init__(self, detail: str, *, code: grpc.StatusCode | None = None) -> None:
        super().__init__(detail, code=code)
        self.violations: list[Violation] = parse_violations(detail)


class NotAuthenticated(ClientError):
    """Our certificate was not accepted (missing, wrong CA, expired or revoked)."""

    default_code = grpc.StatusCode.UNAUTHENTICATED


class PermissionDenied(ClientError):
    """We are authenticated but may not do this (e.g. an operator of another party)."""

    default_code = grpc.StatusCode.PERMISSION_DENIED


class NotFound(ClientError):
    """No such message in the gateway's journal."""

    default_code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(ClientError):
    """The id was already used for a different message or acknowledgement."""

    default_code = grpc.StatusCode.ALREADY_EXISTS


class WrongState(ClientError):
    """The request does not fit the message's state (e.g. acknowledging an outbound message)."""

    default_code = grpc.StatusCode.FAILED_PRECONDITION


class RateLimited(ClientError):
    """The gateway asks us to slow down, or the request is too large."""

    default_code = grpc.StatusCode.RESOURCE_EXHAUSTED


class Unavailable(ClientError):
    """The gateway cannot be reached now; the same request may succeed later."""

    retryable = True
    default_code = grpc.StatusCode.UNAVAILABLE


class Timeout(ClientError):
    """A call's deadline passed, or a message did not reach a state in time."""

    default_code = grpc.StatusCode.DEADLINE_EXCEEDED


class OutOfRange(ClientError):
    """A watch cursor lies beyond the end of the gateway's journal."""

    default_code = grpc.StatusCode.OUT_OF_RANGE


class MessageRejected(ClientError):
    """The message was refused by the receiving gateway (its final state is REJECTED)."""

    def __init__(self, detail: str, *, message_id: str = "", reason: str = "") -> None:
        super().__init__(detail)
        self.message_id = message_id
        self.reason = reason


class ServerError(ClientError):
    """Any other status: the gateway failed in a way the protocol does not name."""


_BY_CODE: dict[grpc.StatusCode, type[ClientError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidMessage,
    grpc.StatusCode.UNAUTHENTICATED: NotAuthenticated,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExists,
    grpc.StatusCode.FAILED_PRECONDITION: WrongState,
    grpc.StatusCode.RESOURCE_EXHAUSTED: RateLimited,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: Timeout,
    grpc.StatusCode.OUT_OF_RANGE: OutOfRange,
}

# A violation starts where a dotted field path is followed by ": " (the spec's
# `<field>: <description>` joined with "; "); a "; " inside a description does not split it.
_FIELD = r"[a-z_][a-z0-9_]*(?:\[[0-9]+\])?(?:\.[a-z_][a-z0-9_]*(?:\[[0-9]+\])?)*"
_SPLIT = re.compile(rf"; (?={_FIELD}: )")
_ONE = re.compile(rf"^({_FIELD}): (.*)$", re.DOTALL)


def parse_violations(detail: str) -> list[Violation]:
    """Parse `field: description; field: description` into violations (text that does not
    name a field becomes one violation with an empty field)."""
    violations = []
    for part in _SPLIT.split(detail.strip()):
        if not part:
            continue
        match = _ONE.match(part)
        if match:
            violations.append(Violation(match.group(1), match.group(2)))
        else:
            violations.append(Violation("", part))
    return violations


def from_status(code: grpc.StatusCode, detail: str) -> ClientError:
    """The client error for a gRPC status code and the gateway's status message."""
    cls = _BY_CODE.get(code, ServerError)
    return cls(detail, code=code)


def from_rpc_error(exc: grpc.RpcError) -> ClientError:
    """Translate a gRPC error (the client's one boundary with grpc's exceptions)."""
    code_of = getattr(exc, "code", None)
    details_of = getattr(exc, "details", None)
    code = code_of() if callable(code_of) else grpc.StatusCode.UNKNOWN
    detail = details_of() if callable(details_of) else str(exc)
    if not isinstance(code, grpc.StatusCode):
        code = grpc.StatusCode.UNKNOWN
    return from_status(code, str(detail or ""))

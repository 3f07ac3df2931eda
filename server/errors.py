"""What the gateway refuses an operator with: one tree, turned into gRPC status codes once.

    HotlineError                      (hotline.errors) root of everything Hotline raises on purpose
    └── GatewayError                  a request the gateway refuses; .status names the gRPC code
        ├── InvalidArgument           INVALID_ARGUMENT: breaks a constraint or a bound
        ├── PermissionDenied          PERMISSION_DENIED: claims another sender or originator
        ├── NotFound                  NOT_FOUND: no such message in the journal
        ├── FailedPrecondition        FAILED_PRECONDITION: the message is in the wrong state
        ├── AlreadyExists             ALREADY_EXISTS: the id was used for something else
        ├── ResourceExhausted         RESOURCE_EXHAUSTED: rate limit, outbox full, too large
        └── OutOfRange                OUT_OF_RANGE: a watch cursor beyond the journal's end

The service layer (`server.service`) raises these; the gRPC servicer maps them with `STATUS`,
the inverse of the client's `client.errors.from_status`.
"""

from __future__ import annotations

from typing import ClassVar

from hotline.errors import HotlineError


class GatewayError(HotlineError):
    """A request the gateway refuses; `status` is the name of its gRPC status code."""

    status: ClassVar[str] = "INTERNAL"


class InvalidArgument(GatewayError):
    status = "INVALID_ARGUMENT"


class PermissionDenied(GatewayError):
    status = "PERMISSION_DENIED"


class NotFound(GatewayError):
    status = "NOT_FOUND"


class FailedPrecondition(GatewayError):
    status = "FAILED_PRECONDITION"


class AlreadyExists(GatewayError):
    status = "ALREADY_EXISTS"


class ResourceExhausted(GatewayError):
    status = "RESOURCE_EXHAUSTED"


class OutOfRange(GatewayError):
    status = "OUT_OF_RANGE"

"""The operator SDK and the operator CLI: everything a watch officer or a script uses to talk to
its own gateway.

The public API for operators and tools (the simulator, consoles, scripts):

    from client import OperatorClient, bodies
    from client.errors import ClientError, InvalidMessage, ...

`OperatorClient` (see `client.operator`) speaks to one's own gateway; `client.bodies` builds
message bodies; `client.errors` is the exception tree. Everything else in the package is an
implementation detail of the CLI (`cli_*`, `config`). The gateway's peer link is not here: it
lives in `server.peerlink`, and the mTLS transport both use in `hotline.transport`.
"""

from client import bodies
from client.errors import (
    AlreadyExists,
    ClientError,
    InvalidMessage,
    MessageRejected,
    NotAuthenticated,
    NotFound,
    OutOfRange,
    PermissionDenied,
    RateLimited,
    ServerError,
    Timeout,
    Unavailable,
    WrongState,
)
from client.operator import (
    AckResult,
    Envelope,
    Event,
    GetLinkStatusResponse,
    MessageRecord,
    OperatorClient,
    RetryPolicy,
    SendResult,
)

__all__ = [
    "AckResult",
    "AlreadyExists",
    "ClientError",
    "Envelope",
    "Event",
    "GetLinkStatusResponse",
    "InvalidMessage",
    "MessageRecord",
    "MessageRejected",
    "NotAuthenticated",
    "NotFound",
    "OperatorClient",
    "OutOfRange",
    "PermissionDenied",
    "RateLimited",
    "RetryPolicy",
    "SendResult",
    "ServerError",
    "Timeout",
    "Unavailable",
    "WrongState",
    "bodies",
]

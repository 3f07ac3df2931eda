"""The dialling side of Hotline: the operator client, the peer-link sender, the operator CLI.

The public API for operators and tools (the simulator, consoles, scripts):

    from client import OperatorClient, bodies
    from client.errors import ClientError, InvalidMessage, ...

`OperatorClient` (see `client.operator`) speaks to one's own gateway; `client.bodies` builds
message bodies; `client.errors` is the exception tree. Everything else in the package is an
implementation detail of the CLI (`cli_*`, `config`) or of the gateway (`channels`,
`peer_sender`).
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

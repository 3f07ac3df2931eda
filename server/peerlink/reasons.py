"""Why a peer link went down, in words an operator can act on.

gRPC reports a lost connection in its own terms ("UNAVAILABLE: failed to connect to all
addresses; last error: ... Ssl handshake failed: ... CERTIFICATE_VERIFY_FAILED", "INTERNAL:
Internal error from Core" when a stalled stream resumes, or an `asyncio.InvalidStateError: RPC
already finished` when the stream ends under a write). These are expected network faults, and
the sender recovers from each by reconnecting; `in_words` turns them into one short sentence for
the "link to TW down: <reason>" log line and the link status, so that the log tells an operator
what happened without a traceback that looks like a bug.
"""

from __future__ import annotations

import asyncio

import grpc

__all__ = ["in_words"]

# Substrings of grpc's (C-core's) error text, most specific first, with what they mean here.
_TLS_WORDS: tuple[tuple[str, str], ...] = (
    ("CERTIFICATE_EXPIRED", "the peer's TLS certificate has expired"),
    ("certificate has expired", "the peer's TLS certificate has expired"),
    ("CERTIFICATE_NOT_YET_VALID", "the peer's TLS certificate is not yet valid"),
    ("HOSTNAME_MISMATCH", "the peer's TLS certificate is for another name"),
    ("UNKNOWN_CA", "the peer does not trust our certificate (issued by a CA it does not know)"),
    ("unknown ca", "the peer does not trust our certificate (issued by a CA it does not know)"),
    ("CERTIFICATE_REQUIRED", "the peer asked for a client certificate we did not present"),
    (
        "CERTIFICATE_VERIFY_FAILED",
        "the peer's TLS certificate is not issued by the peer CA we trust",
    ),
    (
        "certificate verify failed",
        "the peer's TLS certificate is not issued by the peer CA we trust",
    ),
    ("Ssl handshake failed", "the TLS handshake with the peer failed"),
    ("Handshake failed", "the TLS handshake with the peer failed"),
)
_NETWORK_WORDS: tuple[tuple[str, str], ...] = (
    ("Connection refused", "the peer is not listening (connection refused)"),
    ("Connection reset", "the connection was reset"),
    ("No route to host", "no route to the peer"),
    ("Socket closed", "the connection was closed"),
    ("keepalive", "the peer stopped answering keepalive pings"),
    ("Deadline Exceeded", "the peer did not answer in time"),
    ("GOAWAY", "the peer is shutting down"),
)


def in_words(error: BaseException) -> str:
    """One sentence saying why the link's connection failed (no traceback needed)."""
    if isinstance(error, asyncio.InvalidStateError):
        return "the connection was lost while a frame was being written"
    if isinstance(error, grpc.aio.AioRpcError):
        return _rpc_in_words(error.code(), error.details() or "")
    return f"{type(error).__name__}: {error}"


def _rpc_in_words(code: grpc.StatusCode, details: str) -> str:
    for needle, words in _TLS_WORDS:
        if needle.lower() in details.lower():
            return words
    for needle, words in _NETWORK_WORDS:
        if needle.lower() in details.lower():
            return words
    if code == grpc.StatusCode.INTERNAL and "Internal error from Core" in details:
        return "the connection broke mid-stream (the transport reported an internal error)"
    if code == grpc.StatusCode.UNAVAILABLE:
        return "the peer cannot be reached"
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return "the peer did not answer in time"
    if code == grpc.StatusCode.CANCELLED:
        return "the connection was cancelled"
    if code == grpc.StatusCode.UNAUTHENTICATED:
        return f"the peer refused our identity: {details}"
    if code == grpc.StatusCode.PERMISSION_DENIED:
        return f"the peer does not allow us: {details}"
    return f"{code.name}: {details}"

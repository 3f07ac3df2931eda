"""Admission control: how much of the gateway one caller, or one kind of caller, may hold.

Every authenticated call belongs to one **lane**, decided by what it calls (the authorization
matrix in `server.auth` has already checked that the caller may call it):

| lane | calls | allowance |
|---|---|---|
| operator streams | `OperatorService` streaming calls (Watch, SendStream) and server reflection | `operator_streams` per operator |
| operator calls | `OperatorService` unary calls (Send, Acknowledge, GetMessage, ...) | `operator_calls` per operator |
| (both operator lanes) | | `operators_total` for all operators together |
| peer link | `PeerLinkService` (only the peer gateway may call it) | `peer_link_calls` |
| health | `grpc.health.v1.Health` (any authenticated caller) | `health_calls` per caller, `health_total` in all |

A slot is taken when the call is admitted (after authentication and authorization, before the
handler runs) and given back when the call ends, however it ends. A call over its allowance is
refused at once with RESOURCE_EXHAUSTED, and the message names the limit and its setting. The
peer link and health have allowances of their own that operator calls never draw on, so no
operator, and no number of operators, can lock the peer gateway out; and one operator's 500
idle Watch streams cost the others nothing but the 32 it holds.

Refusals are cheap: no journal entry (they are not security events: the caller is who it says
and may call what it called, it only asked for too much at once), a counter per caller and
lane, and one log line per caller per `LOG_INTERVAL_S` that says how many were refused.

grpc's own `maximum_concurrent_rpcs` counts every call before anyone knows who made it, so when
it binds it refuses the peer link as readily as a flooding operator. It is kept only as a
backstop above the sum of all allowances (`Limits.backstop`): it can bind only while more than
`REFUSAL_HEADROOM` calls are at once being refused (by admission or authorization), which a
caller can cause only by flooding; it then bounds the work those refusals cost.

Below the calls, the connections (`connection_options`): grpc closes a connection that has not
finished its TLS handshake and HTTP/2 set-up within `handshake_timeout_s` (grpc's default is
120 s, long enough for ~1,100 silent TCP connections to exhaust a 1,024-descriptor process),
closes at accept any connection beyond `max_connections` (counted by grpc whether or not the
handshake is done: it protects the process's descriptors, it cannot tell an operator from a
flood), and closes an authenticated connection with no call for `connection_idle_s`. The
gateway raises its own open-file limit to the hard limit at start (`raise_open_file_limit`) and
keeps `max_connections` below it, with room for the journal and the peer link.
"""

from __future__ import annotations

import enum
import logging
import resource
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, fields

log = logging.getLogger("hotline.admission")

LOG_INTERVAL_S = 60.0
"""Log refusals at most once per this many seconds per caller (with the count since)."""

REFUSAL_HEADROOM = 64
"""Calls that may be in the middle of being refused at once before grpc's global cap binds."""

FD_RESERVE = 256
"""Descriptors kept free of connections: the journal (and its WAL), the peer link, CRL and
certificate reads, logs, grpc's own pipes and epoll."""


class Lane(enum.Enum):
    """What kind of call: each lane has its own allowance (its setting's name is the value)."""

    OPERATOR_STREAM = "operator_streams"
    OPERATOR_CALL = "operator_calls"
    PEER_LINK = "peer_link_calls"
    HEALTH = "health_calls"


@dataclass(frozen=True)
class Limits:
    """The allowances (see the module's table); every one must be at least 1."""

    operator_streams: int = 32
    operator_calls: int = 128
    operators_total: int = 1024
    peer_link_calls: int = 16  # four lanes a connection, and a reconnect overlapping
    health_calls: int = 8
    health_total: int = 64

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{f.name} must be a positive integer, got {value!r}")

    @property
    def backstop(self) -> int:
        """grpc's global cap on concurrent calls, high enough that it never binds first: every
        allowance at once, plus calls in the middle of being refused."""
        return self.operators_total + self.peer_link_calls + self.health_total + REFUSAL_HEADROOM


class Admission:
    """Counts the calls each caller holds, per lane, and refuses those over their allowance.

    Runs on the event loop (not thread-safe); `acquire` and `release` cost a dict operation
    or two. Callers are keyed by their SPIFFE ID.
    """

    def __init__(
        self,
        limits: Limits,
        *,
        log_interval: float = LOG_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limits = limits
        self._log_interval = log_interval
        self._clock = clock
        self._open: dict[tuple[str, Lane], int] = {}
        self._operators = 0  # both operator lanes, all operators
        self._health = 0  # all callers
        self.refused: Counter[Lane] = Counter()  # since start, per lane
        self._unlogged: Counter[str] = Counter()  # refusals per caller since its last log line
        self._logged_at: dict[str, float] = {}
        self._per_caller = {
            Lane.OPERATOR_STREAM: limits.operator_streams,
            Lane.OPERATOR_CALL: limits.operator_calls,
            Lane.PEER_LINK: limits.peer_link_calls,
            Lane.HEALTH: limits.health_calls,
        }

    def open(self, who: str, lane: Lane) -> int:
        """How many calls of `lane` `who` holds now."""
        return self._open.get((who, lane), 0)

    @property
    def operators_open(self) -> int:
        return self._operators

    def acquire(self, who: str, lane: Lane) -> str | None:
        """Take a slot for a call by `who` in `lane`: None if admitted (then `release` it when
        the call ends), else why not, for a RESOURCE_EXHAUSTED status."""
        key = (who, lane)
        held = self._open.get(key, 0)
        limit = self._per_caller[lane]
        if held >= limit:
            return self._refuse(who, lane, _too_many(who, lane, held, limit))
        if lane is Lane.OPERATOR_STREAM or lane is Lane.OPERATOR_CALL:
            if self._operators >= self.limits.operators_total:
                return self._refuse(
                    who,
                    lane,
                    f"operators together have {self._operators} calls and streams open "
                    f"(limit {self.limits.operators_total}, operators_total); retry with backoff",
                )
            self._operators += 1
        elif lane is Lane.HEALTH:
            if self._health >= self.limits.health_total:
                return self._refuse(
                    who,
                    lane,
                    f"{self._health} health checks are open from all callers together "
                    f"(limit {self.limits.health_total}, health_total); retry with backoff",
                )
            self._health += 1
        self._open[key] = held + 1
        return None

    def release(self, who: str, lane: Lane) -> None:
        """Give back the slot of a call that `acquire` admitted."""
        key = (who, lane)
        held = self._open.get(key, 0) - 1
        if held > 0:
            self._open[key] = held
        else:
            self._open.pop(key, None)
        if lane is Lane.OPERATOR_STREAM or lane is Lane.OPERATOR_CALL:
            self._operators -= 1
        elif lane is Lane.HEALTH:
            self._health -= 1

    def _refuse(self, who: str, lane: Lane, reason: str) -> str:
        self.refused[lane] += 1
        self._unlogged[who] += 1
        now = self._clock()
        if now - self._logged_at.get(who, float("-inf")) >= self._log_interval:
            count = self._unlogged.pop(who)
            self._logged_at[who] = now
            log.warning(
                "admission refused %d call(s) from %s since the last report (at most one "
                "report per %g s per caller); the latest: %s",
                count,
                who,
                self._log_interval,
                reason,
            )
        return reason


def _too_many(who: str, lane: Lane, held: int, limit: int) -> str:
    if lane is Lane.OPERATOR_STREAM:
        return (
            f"operator {who} has {held} streams open (Watch, SendStream, reflection; limit {limit}, "
            f"operator_streams); close one before opening another"
        )
    if lane is Lane.OPERATOR_CALL:
        return (
            f"operator {who} has {held} calls in progress (limit {limit}, operator_calls); "
            f"retry with backoff"
        )
    if lane is Lane.PEER_LINK:
        return (
            f"the peer gateway {who} has {held} PeerLinkService calls open "
            f"(limit {limit}, peer_link_calls)"
        )
    return f"{who} has {held} health checks open (limit {limit}, health_calls)"


# ------------------------------------------------------------------------------ connections


def connection_options(
    *, max_connections: int, handshake_timeout_s: float, idle_s: float
) -> list[tuple[str, int]]:
    """grpc server options bounding connections (grpc core's channel arguments, checked
    against grpcio 1.85 by tests/server/test_admission.py)."""
    options = [
        # Close, at accept, every connection beyond this many (TLS handshake or not).
        ("grpc.max_allowed_incoming_connections", max_connections),
        # Close a connection whose TLS handshake and HTTP/2 settings are not done by then.
        ("grpc.server_handshake_timeout_ms", max(1, round(handshake_timeout_s * 1000))),
    ]
    if idle_s > 0:  # GOAWAY to a connection without a call for this long; clients reconnect
        options.append(("grpc.max_connection_idle_ms", max(1, round(idle_s * 1000))))
    return options


def connection_cap(configured: int, open_files: int) -> int:
    """`configured`, or fewer if the open-file limit leaves no room for it (with FD_RESERVE)."""
    room = open_files - FD_RESERVE
    if room < 16:  # a tiny limit: share it
        room = max(1, open_files // 2)
    if configured > room:
        log.warning(
            "max_connections %d does not fit the open-file limit %d (keeping %d descriptors "
            "for the journal and the link): at most %d connections",
            configured,
            open_files,
            FD_RESERVE,
            room,
        )
        return room
    return configured


def raise_open_file_limit() -> int:
    """Raise this process's RLIMIT_NOFILE soft limit to its hard limit; return the soft limit
    now in force (logged)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard
    if hard == resource.RLIM_INFINITY:  # Linux caps descriptors at fs.nr_open anyway
        try:
            with open("/proc/sys/fs/nr_open", encoding="ascii") as f:
                target = int(f.read().strip())
        except (OSError, ValueError):
            target = 1 << 20
    if soft == resource.RLIM_INFINITY:
        log.info("open-file limit (RLIMIT_NOFILE) is unlimited (in effect %d)", target)
        return target
    if target > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError) as exc:
            log.warning(
                "open-file limit stays at %d (could not raise it to %d: %s)", soft, target, exc
            )
            return soft
        log.info(
            "open-file limit (RLIMIT_NOFILE) raised from %d to %d (the hard limit)", soft, target
        )
        return target
    log.info("open-file limit (RLIMIT_NOFILE) is %d (hard limit %s)", soft, _limit(hard))
    return soft


def _limit(value: int) -> str:
    return "unlimited" if value == resource.RLIM_INFINITY else str(value)

"""Admission control as plain objects: lanes, allowances, refusals, connection settings, config."""

from __future__ import annotations

import logging
import resource
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hotline.errors import ConfigError
from server.admission import (
    FD_RESERVE,
    REFUSAL_HEADROOM,
    Admission,
    Lane,
    Limits,
    connection_cap,
    connection_options,
    raise_open_file_limit,
)
from server.config import GatewayConfig

W1 = "spiffe://jp.hotline/operator/watch-1"
W2 = "spiffe://jp.hotline/operator/watch-2"
TW_GATEWAY = "spiffe://tw.hotline/gateway"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def fill(admission: Admission, who: str, lane: Lane, count: int) -> None:
    for _ in range(count):
        assert admission.acquire(who, lane) is None


def test_an_operator_gets_its_streams_then_a_refusal_that_names_the_limit() -> None:
    admission = Admission(Limits(operator_streams=32))
    fill(admission, W1, Lane.OPERATOR_STREAM, 32)
    reason = admission.acquire(W1, Lane.OPERATOR_STREAM)
    assert reason == (
        f"operator {W1} has 32 streams open (Watch, SendStream, reflection; limit 32, operator_streams); "
        "close one before opening another"
    )
    assert admission.open(W1, Lane.OPERATOR_STREAM) == 32  # the refused call took nothing
    admission.release(W1, Lane.OPERATOR_STREAM)
    assert admission.acquire(W1, Lane.OPERATOR_STREAM) is None
    assert admission.refused[Lane.OPERATOR_STREAM] == 1


def test_streams_and_unary_calls_are_separate_allowances() -> None:
    admission = Admission(Limits(operator_streams=2, operator_calls=3))
    fill(admission, W1, Lane.OPERATOR_STREAM, 2)
    assert admission.acquire(W1, Lane.OPERATOR_STREAM) is not None
    fill(admission, W1, Lane.OPERATOR_CALL, 3)  # Watch streams do not use up unary calls
    reason = admission.acquire(W1, Lane.OPERATOR_CALL)
    assert reason is not None
    assert "has 3 calls in progress (limit 3, operator_calls)" in reason


def test_one_operators_streams_cost_another_operator_nothing() -> None:
    admission = Admission(Limits(operator_streams=32))
    fill(admission, W1, Lane.OPERATOR_STREAM, 32)
    for _ in range(468):
        assert admission.acquire(W1, Lane.OPERATOR_STREAM) is not None
    fill(admission, W2, Lane.OPERATOR_STREAM, 32)
    fill(admission, W2, Lane.OPERATOR_CALL, 10)


def test_all_operators_together_are_bounded_and_the_peer_link_and_health_are_not_drawn_on() -> None:
    limits = Limits(operator_streams=4, operator_calls=4, operators_total=10, peer_link_calls=2)
    admission = Admission(limits)
    for name in ("a", "b", "c"):
        who = f"spiffe://jp.hotline/operator/{name}"
        for lane in (Lane.OPERATOR_STREAM, Lane.OPERATOR_CALL):
            for _ in range(4):
                admission.acquire(who, lane)
    assert admission.operators_open == 10
    reason = admission.acquire("spiffe://jp.hotline/operator/d", Lane.OPERATOR_CALL)
    assert reason is not None
    assert "operators together have 10 calls and streams open (limit 10, operators_total)" in (
        reason
    )
    # The peer link and health have allowances of their own.
    fill(admission, TW_GATEWAY, Lane.PEER_LINK, 2)
    reason = admission.acquire(TW_GATEWAY, Lane.PEER_LINK)
    assert reason is not None
    assert f"the peer gateway {TW_GATEWAY} has 2 PeerLinkService calls open" in reason
    assert "(limit 2, peer_link_calls)" in reason
    fill(admission, TW_GATEWAY, Lane.HEALTH, 1)
    fill(admission, W1, Lane.HEALTH, 1)


def test_health_has_a_limit_per_caller_and_in_all() -> None:
    admission = Admission(Limits(health_calls=2, health_total=3))
    fill(admission, W1, Lane.HEALTH, 2)
    reason = admission.acquire(W1, Lane.HEALTH)
    assert reason is not None
    assert "(limit 2, health_calls)" in reason
    fill(admission, W2, Lane.HEALTH, 1)
    reason = admission.acquire(TW_GATEWAY, Lane.HEALTH)
    assert reason is not None
    assert "(limit 3, health_total)" in reason
    admission.release(W1, Lane.HEALTH)
    assert admission.acquire(TW_GATEWAY, Lane.HEALTH) is None


def test_releasing_every_slot_leaves_nothing_behind() -> None:
    admission = Admission(Limits())
    lanes = list(Lane)
    for lane in lanes:
        fill(admission, W1, lane, 3)
    for lane in lanes:
        for _ in range(3):
            admission.release(W1, lane)
    assert all(admission.open(W1, lane) == 0 for lane in lanes)
    assert admission.operators_open == 0
    assert admission._open == {}


def test_refusals_are_logged_at_most_once_per_interval_per_caller(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    admission = Admission(Limits(operator_calls=1), log_interval=60.0, clock=clock)
    fill(admission, W1, Lane.OPERATOR_CALL, 1)
    fill(admission, W2, Lane.OPERATOR_CALL, 1)
    with caplog.at_level(logging.WARNING, logger="hotline.admission"):
        for _ in range(100):
            assert admission.acquire(W1, Lane.OPERATOR_CALL) is not None
        assert admission.acquire(W2, Lane.OPERATOR_CALL) is not None
        clock.now += 30
        assert admission.acquire(W1, Lane.OPERATOR_CALL) is not None
        clock.now += 31
        assert admission.acquire(W1, Lane.OPERATOR_CALL) is not None
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 3, lines
    assert lines[0].startswith(f"admission refused 1 call(s) from {W1}")
    assert lines[1].startswith(f"admission refused 1 call(s) from {W2}")
    # the 99 after the first report and the one 30 s later, then this one: 101
    assert lines[2].startswith(f"admission refused 101 call(s) from {W1}")
    assert admission.refused[Lane.OPERATOR_CALL] == 103


def test_limits_must_be_positive_and_the_backstop_is_above_their_sum() -> None:
    with pytest.raises(ValueError, match="operator_streams must be a positive integer"):
        Limits(operator_streams=0)
    with pytest.raises(ValueError, match="health_total"):
        Limits(health_total=True)
    limits = Limits()
    assert limits.backstop == (
        limits.operators_total + limits.peer_link_calls + limits.health_total + REFUSAL_HEADROOM
    )


# ------------------------------------------------------------------------------ connections


def test_connection_options_are_grpc_core_arguments() -> None:
    assert connection_options(max_connections=900, handshake_timeout_s=2.5, idle_s=600) == [
        ("grpc.max_allowed_incoming_connections", 900),
        ("grpc.server_handshake_timeout_ms", 2500),
        ("grpc.max_connection_idle_ms", 600_000),
    ]
    assert connection_options(max_connections=5, handshake_timeout_s=1, idle_s=0) == [
        ("grpc.max_allowed_incoming_connections", 5),
        ("grpc.server_handshake_timeout_ms", 1000),
    ]


def test_the_connection_cap_leaves_descriptors_for_the_journal_and_the_link() -> None:
    assert connection_cap(4096, 1_048_576) == 4096
    assert connection_cap(4096, 1024) == 1024 - FD_RESERVE
    assert connection_cap(100, 1024) == 100
    assert connection_cap(4096, 100) == 50  # a tiny limit is shared


@pytest.fixture
def restore_nofile() -> Iterator[tuple[int, int]]:
    original = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        yield original
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, original)


def test_the_gateway_raises_its_open_file_limit_to_the_hard_limit(
    restore_nofile: tuple[int, int], caplog: pytest.LogCaptureFixture
) -> None:
    _soft, hard = restore_nofile
    if hard == resource.RLIM_INFINITY or hard <= 256:
        pytest.skip(f"needs a finite hard limit above 256 (it is {hard})")
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
    with caplog.at_level(logging.INFO, logger="hotline.admission"):
        assert raise_open_file_limit() == hard
    assert resource.getrlimit(resource.RLIMIT_NOFILE) == (hard, hard)
    assert f"raised from 256 to {hard}" in caplog.text
    with caplog.at_level(logging.INFO, logger="hotline.admission"):
        assert raise_open_file_limit() == hard  # already there: says so
    assert f"is {hard} (hard limit {hard})" in caplog.text


# ------------------------------------------------------------------------------ configuration


def load(tmp_path: Path, **settings: Any) -> GatewayConfig:
    raw = {"party": "JP", "peer_party": "TW", "peer_address": "127.0.0.1:1", **settings}
    return GatewayConfig.from_mapping(raw, base=tmp_path)


def test_admission_settings_have_defaults_and_are_read(tmp_path: Path) -> None:
    default = load(tmp_path)
    assert default.limits == Limits()
    assert default.concurrent_rpcs_cap == Limits().backstop
    assert (default.max_connections, default.handshake_timeout_s) == (4096, 5.0)
    assert default.connection_idle_s == 600.0
    cfg = load(
        tmp_path,
        operator_streams=4,
        operator_calls=5,
        operators_total=6,
        peer_link_calls=2,
        health_calls=1,
        health_total=3,
        max_connections=100,
        handshake_timeout_s=0.5,
        connection_idle_s=0,
    )
    assert cfg.limits == Limits(4, 5, 6, 2, 1, 3)
    assert cfg.concurrent_rpcs_cap == 6 + 2 + 3 + REFUSAL_HEADROOM


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"operator_streams": 0}, "operator_streams = 0: must be a whole number from 1"),
        ({"peer_link_calls": 1.5}, "peer_link_calls = 1.5: must be a whole number from 1"),
        ({"max_concurrent_rpcs": 256}, "max_concurrent_rpcs = 256: must be at least 1168"),
        ({"max_connections": 0}, "max_connections = 0: must be a whole number from 1"),
        ({"handshake_timeout_s": 0}, "handshake_timeout_s = 0: must be a number more than 0"),
        ({"connection_idle_s": -1}, "connection_idle_s = -1: must be a number from 0"),
    ],
)
def test_bad_admission_settings_are_refused(
    tmp_path: Path, settings: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, **settings)
    assert message in str(caught.value)


def test_an_explicit_global_cap_above_the_allowances_is_kept(tmp_path: Path) -> None:
    assert load(tmp_path, max_concurrent_rpcs=5000).concurrent_rpcs_cap == 5000

"""Errors that say what went wrong: certificate problems named with the file to fix, short ids,
`watch --from now`, a repeated acknowledgement, a gateway that never answers, one-line usage.

Real gateways (in-process, mutual TLS on loopback), real certificates, and the real `hotline`
command as a subprocess (so that grpc's C-core output, if any, would show on its stderr).
"""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from certs.pki import PartyPaths, init_pki, issue_gateway, issue_operator, revoke
from client.diagnose import certificate_problem
from client.operator import OperatorClient
from hotline.cli import main
from tests.cli.test_cli import Result, clean_env, hotline
from tests.harness import Pair, free_port, free_text, make_pki, running_pair, wait_state
from tests.security.conftest import make_backdated_pki

EXIT_USAGE, EXIT_UNAVAILABLE = 2, 3
C_CORE_MARKS = ("E0000", "ssl_transport_security", "Handshake failed with", ".cc:")


async def as_operator(
    pair: Pair, *args: str, cert: Path, key: Path, ca: Path, party: str = "JP"
) -> Result:
    port = pair.jp.port if party == "JP" else pair.tw.port
    env = clean_env(pair.pki.parent / "home")
    return await hotline(
        *args,
        "--address",
        f"127.0.0.1:{port}",
        "--party",
        party,
        "--cert",
        str(cert),
        "--key",
        str(key),
        "--ca",
        str(ca),
        env=env,
    )


def no_c_core_noise(result: Result) -> None:
    assert not any(mark in result.err for mark in C_CORE_MARKS), result.err
    assert result.err.count("\n") <= 2, result.err


async def test_an_expired_operator_certificate_is_named_with_its_file(tmp_path: Path) -> None:
    pki = make_backdated_pki(tmp_path / "pki")
    async with running_pair(tmp_path, pki) as pair:
        jp = PartyPaths.of(pki, "JP")
        cert = issue_operator(
            pki,
            "JP",
            "expired-1",
            now=datetime.now(UTC) - timedelta(days=1, hours=1),
            validity_days=1,
        )
        result = await as_operator(
            pair, "status", cert=cert, key=jp.operator_key("expired-1"), ca=jp.ca_cert
        )
    assert result.rc == EXIT_USAGE, result
    assert f"your operator certificate {cert} expired on" in result.err
    no_c_core_noise(result)


async def test_an_expired_gateway_certificate_is_named_by_operators_and_both_gateways(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """JP's gateway certificate expired an hour ago (its CA is valid): JP's operators are told
    the gateway presents an expired certificate, TW's gateway will not dial it and says why,
    and JP's own gateway says its certificate expired instead of "the connection was closed"."""
    caplog.set_level(logging.INFO, logger="hotline")
    pki = make_backdated_pki(tmp_path / "pki")
    expired = issue_gateway(
        pki, "JP", now=datetime.now(UTC) - timedelta(days=1, hours=1), validity_days=1
    )
    async with running_pair(tmp_path, pki) as pair:
        jp = PartyPaths.of(pki, "JP")
        result = await as_operator(
            pair, "status", cert=jp.operator_cert("watch-1"), key=jp.operator_key("watch-1"),
            ca=jp.ca_cert,
        )  # fmt: skip
        for _ in range(100):  # both ends have tried to dial (bounded: 10 s)
            details = (pair.jp.gateway.sender.status.detail, pair.tw.gateway.sender.status.detail)
            if all("expired" in detail for detail in details):
                break
            await asyncio.sleep(0.1)
        port = pair.jp.port
    assert result.rc == EXIT_USAGE, result
    assert f"the gateway at 127.0.0.1:{port} presents an expired certificate" in result.err
    no_c_core_noise(result)
    jp_detail, tw_detail = details
    assert f"our gateway certificate {expired} expired on" in jp_detail
    assert "hotline certs rotate" in jp_detail
    assert "certificate has expired" in tw_detail
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert any(f"our gateway certificate {expired} expired on" in e for e in errors), errors
    assert any("not dialling JP" in e and "certificate has expired" in e for e in errors), errors
    link_lines = [r.getMessage() for r in caplog.records if "down:" in r.getMessage()]
    assert not any("connection was closed" in line for line in link_lines), link_lines


async def test_a_not_yet_valid_operator_certificate_is_named(tmp_path: Path) -> None:
    async with running_pair(tmp_path) as pair:
        jp = PartyPaths.of(pair.pki, "JP")
        cert = issue_operator(pair.pki, "JP", "future-1", now=datetime.now(UTC) + timedelta(days=2))
        result = await as_operator(
            pair, "status", cert=cert, key=jp.operator_key("future-1"), ca=jp.ca_cert
        )
    assert result.rc == EXIT_USAGE, result
    assert f"your operator certificate {cert} is not valid until" in result.err


async def test_a_gateway_from_an_unknown_ca_is_named_and_not_retried(tmp_path: Path) -> None:
    """Our files come from another PKI (its own JP CA): the real JP gateway's certificate is
    not issued by the CA we trust."""
    other = tmp_path / "other-pki"
    init_pki(other, ("JP", "TW"), ("watch-1",))
    mine = PartyPaths.of(other, "JP")
    async with running_pair(tmp_path) as pair:
        result = await as_operator(
            pair,
            "status",
            cert=mine.operator_cert("watch-1"),
            key=mine.operator_key("watch-1"),
            ca=mine.ca_cert,
        )
    assert result.rc == EXIT_USAGE, result
    assert f"not issued by {mine.ca_cert} (unknown CA)" in result.err
    no_c_core_noise(result)


async def test_a_gateway_of_another_name_is_a_name_mismatch(tmp_path: Path) -> None:
    async with running_pair(tmp_path) as pair:
        tw = PartyPaths.of(pair.pki, "TW")
        problem = await certificate_problem(
            f"127.0.0.1:{pair.tw.port}",  # TW's gateway, dialled as if it were JP's
            cert=tw.operator_cert("watch-1"),
            key=tw.operator_key("watch-1"),
            ca=tw.ca_cert,
            party="JP",
        )
    assert problem is not None
    assert problem.startswith("name mismatch: the gateway at")
    assert "gateway.jp.hotline" in problem


async def test_a_certificate_the_gateway_does_not_know_is_refused_by_it_and_named(
    tmp_path: Path,
) -> None:
    """We trust the real JP gateway, but our certificate comes from another PKI's JP CA: the
    handshake passes our side and the gateway's alert says why it refused us."""
    other = tmp_path / "other-pki"
    init_pki(other, ("JP", "TW"), ("watch-1",))
    mine = PartyPaths.of(other, "JP")
    async with running_pair(tmp_path) as pair:
        problem = await certificate_problem(
            f"127.0.0.1:{pair.jp.port}",
            cert=mine.operator_cert("watch-1"),
            key=mine.operator_key("watch-1"),
            ca=PartyPaths.of(pair.pki, "JP").ca_cert,
            party="JP",
        )
        # the local check names the mismatch first; the handshake alone says the same
        assert problem is not None
        assert "is not issued by" in problem


async def test_a_revoked_operator_certificate_is_named(tmp_path: Path) -> None:
    async with running_pair(tmp_path) as pair:
        jp = PartyPaths.of(pair.pki, "JP")
        revoke(pair.pki, "JP", jp.operator_cert("watch-2"))
        result = Result(0, "", "")
        for _ in range(40):  # the gateway re-reads its revocation list every 2 s
            result = await as_operator(
                pair,
                "status",
                cert=jp.operator_cert("watch-2"),
                key=jp.operator_key("watch-2"),
                ca=jp.ca_cert,
            )
            if result.rc != 0:
                break
            await asyncio.sleep(0.5)
    assert result.rc == 1, result
    assert "has been revoked" in result.err
    no_c_core_noise(result)


async def test_watch_gives_up_with_exit_3_when_it_never_reached_the_gateway(
    tmp_path: Path,
) -> None:
    pki = make_pki(tmp_path / "pki")
    home = tmp_path / "home"
    config = home / "op.toml"
    home.mkdir()
    config.write_text(
        f'address = "127.0.0.1:{free_port()}"\nparty = "JP"\npki_dir = "{pki}"\n'
        "retry_window_s = 1.0\n"
    )
    result = await hotline("watch", "--config", str(config), env=clean_env(home), timeout=60)
    assert result.rc == EXIT_UNAVAILABLE, result
    assert "cannot reach the gateway" in result.err
    no_c_core_noise(result)


async def test_short_ids_watch_from_now_and_a_repeated_ack(tmp_path: Path) -> None:
    async with running_pair(tmp_path) as pair:
        jp_client = OperatorClient.from_pki(pair.pki, "JP", address=f"127.0.0.1:{pair.jp.port}")
        async with jp_client:
            old = await jp_client.send(free_text("before now"))
            await wait_state(pair.tw.stub, old.message_id, 2)
        home = tmp_path / "home"
        env = clean_env(home)
        tw = ["--address", f"127.0.0.1:{pair.tw.port}", "--party", "TW", "--pki", str(pair.pki)]

        tail = "…" + old.message_id[-8:]
        shown = await hotline("show", tail, "--json", *tw, env=env)
        assert shown.rc == 0, shown.err
        assert json.loads(shown.out)["envelope"]["message_id"] == old.message_id
        head = old.message_id[:13]  # the clock part: unique here, with one message
        assert (await hotline("show", head, "--json", *tw, env=env)).rc == 0
        missing = await hotline("show", "…ffffffff", *tw, env=env)
        assert missing.rc == 1
        assert "no message id ends with" in missing.err

        first = await hotline("ack", tail, "--level", "roger", *tw, env=env)
        assert first.rc == 0, first.err
        again = await hotline("ack", tail, "--level", "roger", *tw, env=env)
        assert again.rc == 0, again.err
        assert "was already acknowledged ROGER" in again.out
        assert "nothing sent" in again.out
        wilco = await hotline("ack", tail, "--level", "wilco", *tw, env=env)
        assert "acknowledged WILCO" in wilco.out

        watching = asyncio.create_task(
            hotline(
                "watch",
                "--from",
                "now",
                "--json",
                "--kinds",
                "received",
                "--count",
                "1",
                *tw,
                env=env,
            )
        )
        await asyncio.sleep(1.5)
        async with jp_client:
            new = await jp_client.send(free_text("after now"))
        watched = await asyncio.wait_for(watching, 30)
        assert watched.rc == 0, watched.err
        assert json.loads(watched.out)["message_id"] == new.message_id


def test_a_usage_error_is_one_line_with_the_help_hint(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["send", "free-text", "--precedence", "sometime"])
    assert caught.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "unknown precedence 'sometime'" in err
    assert "(see `hotline send free-text --help`)" in err

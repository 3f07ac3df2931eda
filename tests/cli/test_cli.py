"""The operator commands end to end: `hotline send|watch|ack|history|show|status` as subprocesses
against real gateways (in-process, mutual TLS on loopback, real journals), and how they find
their gateway (`client.config`).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

from client import bodies
from client.config import default_config_path, resolve, write_operator_config
from client.operator import DELIVERED, OperatorClient
from hotline.errors import ConfigError
from tests.harness import Pair, free_port, running_pair

EXAMPLES = Path(__file__).resolve().parents[2] / "proto" / "examples" / "valid"


@dataclass
class Result:
    rc: int
    out: str
    err: str

    def json(self) -> dict[str, object]:
        value = json.loads(self.out)
        assert isinstance(value, dict)
        return value

    def lines(self) -> list[dict[str, object]]:
        return [json.loads(line) for line in self.out.splitlines() if line.strip()]


def clean_env(home: Path, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment without any HOTLINE_* setting and with an empty home folder."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOTLINE_")}
    env.pop("NO_COLOR", None)
    env.update({"HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config")})
    env.update(extra or {})
    return env


async def hotline(*args: str, env: Mapping[str, str], timeout: float = 30.0) -> Result:
    """Run `hotline ARGS...` as a subprocess, without blocking the gateways' event loop."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "hotline.cli",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=dict(env),
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise AssertionError(f"hotline {' '.join(args)} did not finish in {timeout} s") from None
    assert proc.returncode is not None
    return Result(proc.returncode, out.decode(), err.decode())


@dataclass
class Floor:
    """One party's operator configuration, as `hotline ... --config FILE` uses it."""

    party: str
    config: Path
    address: str


def floors(pair: Pair, tmp: Path) -> tuple[Floor, Floor]:
    made = []
    for side in (pair.jp, pair.tw):
        address = f"127.0.0.1:{side.port}"
        path = write_operator_config(
            tmp / f"{side.party.lower()}-operator.toml",
            address=address,
            party=side.party,
            pki_dir=pair.pki,
        )
        made.append(Floor(side.party, path, address))
    return made[0], made[1]


async def link_up(pair: Pair) -> None:
    async with OperatorClient.from_pki(pair.pki, "JP", address=f"127.0.0.1:{pair.jp.port}") as jp:
        async with asyncio.timeout(15):
            while True:
                status = await jp.link_status()
                if status.outbound.up and status.inbound.up:
                    return
                await asyncio.sleep(0.1)


# --------------------------------------------------------------------------- end to end


@pytest.mark.slow
async def test_send_watch_ack_history_show_status_end_to_end(tmp_path: Path) -> None:
    env = clean_env(tmp_path)
    async with running_pair(tmp_path) as pair:
        jp, tw = floors(pair, tmp_path)
        await link_up(pair)

        status = await hotline("status", "--json", "--config", str(jp.config), env=env)
        assert status.rc == 0, status.err
        link = status.json()
        assert link["party"] == "JP"
        assert link["peer_party"] == "TW"
        assert link["outbound"]["up"] is True  # type: ignore[index]
        assert link["inbound"]["up"] is True  # type: ignore[index]

        sent = await hotline(
            "send",
            "free-text",
            "--subject",
            "Radio check",
            "--text",
            "How do you read?",
            "--precedence",
            "flash",
            "--wait",
            "delivered",
            "--json",
            "--config",
            str(jp.config),
            env=env,
        )
        assert sent.rc == 0, sent.err
        result = sent.json()
        message_id = str(result["message_id"])
        assert result["state"] == "DELIVERY_STATE_DELIVERED"
        assert int(str(result["journal_position"])) > 0

        watched = await hotline(
            "watch",
            "--json",
            "--count",
            "1",
            "--kinds",
            "received",
            "--config",
            str(tw.config),
            env=env,
        )
        assert watched.rc == 0, watched.err
        [event] = watched.lines()
        assert event["kind"] == "EVENT_KIND_MESSAGE_RECEIVED"
        assert event["message_id"] == message_id
        envelope = event["message"]["envelope"]  # type: ignore[index]
        assert envelope["precedence"] == "PRECEDENCE_FLASH"
        assert envelope["status"] == "MESSAGE_STATUS_EXERCISE"
        assert envelope["free_text"]["text"]["variants"][0]["text"] == "How do you read?"

        acked = await hotline(
            "ack",
            message_id,
            "--level",
            "wilco",
            "--remarks",
            "Loud and clear",
            "--wait",
            "delivered",
            "--config",
            str(tw.config),
            env=env,
        )
        assert acked.rc == 0, acked.err
        assert "WILCO" in acked.out

        shown = await hotline("show", message_id, "--json", "--config", str(jp.config), env=env)
        assert shown.rc == 0, shown.err
        record = shown.json()
        assert record["state"] == "DELIVERY_STATE_ACKNOWLEDGED"
        assert record["direction"] == "DIRECTION_OUTBOUND"
        assert record["acknowledgement"]["level"] == "ACKNOWLEDGEMENT_LEVEL_WILCO"  # type: ignore[index]
        assert record["signed_envelope"]["key_id"]  # type: ignore[index]

        text = await hotline("show", message_id, "--config", str(jp.config), env=env)
        assert text.rc == 0
        assert "ACKNOWLEDGED" in text.out
        assert "WILCO by spiffe://tw.hotline/operator/watch-1" in text.out
        assert "\x1b[" not in text.out  # piped: no colour

        history = await hotline(
            "history", "--json", "--direction", "out", "--config", str(jp.config), env=env
        )
        assert history.rc == 0, history.err
        messages = history.json()["messages"]
        assert isinstance(messages, list)
        assert [m["envelope"]["message_id"] for m in messages] == [message_id]
        inbound = await hotline(
            "history", "--json", "--direction", "in", "--config", str(tw.config), env=env
        )
        assert [m["envelope"]["message_id"] for m in inbound.json()["messages"]] == [  # type: ignore[attr-defined]
            message_id
        ]
        table = await hotline("history", "--config", str(jp.config), env=env)
        assert table.rc == 0
        assert message_id in table.out
        assert "FLASH" in table.out
        assert "(2 messages)" in table.out  # ours, and TW's acknowledgement of it

        plain = await hotline("status", "--config", str(tw.config), env=env)
        assert plain.rc == 0
        assert "outbound" in plain.out
        assert "UP" in plain.out
        assert "overdue messages: 0" in plain.out


@pytest.mark.slow
async def test_watch_marks_drills_on_every_line_and_is_plain_when_piped(tmp_path: Path) -> None:
    env = clean_env(tmp_path)
    async with running_pair(tmp_path) as pair:
        jp, tw = floors(pair, tmp_path)
        test = await hotline(
            "send", "link-test", "--number", "4", "--config", str(jp.config), env=env
        )
        assert test.rc == 0, test.err
        drill = await hotline(
            "send",
            "free-text",
            "--subject",
            "Drill",
            "--text",
            "Exercise only",
            "--wait",
            "delivered",
            "--config",
            str(jp.config),
            env=env,
        )
        assert drill.rc == 0, drill.err
        watched = await hotline(
            "watch",
            "--until-idle",
            "1.5",
            "--kinds",
            "received",
            "--config",
            str(tw.config),
            env=env,
        )
        assert watched.rc == 0, watched.err
        lines = watched.out.splitlines()
        assert len(lines) == 2
        assert "[TEST]" in lines[0]
        assert "link-test" in lines[0]
        assert "[EXERCISE]" in lines[1]
        assert "ack due in" in lines[1]
        assert all("\x1b[" not in line for line in lines)
        coloured = await hotline(
            "watch", "--count", "1", "--color", "always", "--config", str(tw.config), env=env
        )
        assert "\x1b[" in coloured.out


@pytest.mark.slow
async def test_send_every_typed_body_and_envelope_files(tmp_path: Path) -> None:
    env = clean_env(tmp_path)
    async with running_pair(tmp_path) as pair:
        jp, _ = floors(pair, tmp_path)
        cfg = ("--config", str(jp.config))
        commands = [
            (
                "maritime-encounter",
                "--lat", "24.30", "--lon", "122.95", "--course", "270", "--speed", "14",
                "--platform-name", "JS AOZORA", "--contact-lat", "24.27", "--contact-lon", "122.91",
                "--contact-course", "20", "--contact-speed", "16", "--encounter", "crossing",
                "--cpa", "900", "--intentions", "Maintaining course",
            ),
            (
                "manoeuvre-notice",
                "--lat", "24.3", "--lon", "122.9", "--course", "20", "--speed", "16",
                "--signal", "i-am-altering-course-to-starboard", "--new-course", "80",
                "--keep-clear", "3700",
            ),
            (
                "air-incident",
                "--kind", "intercept", "--lat", "23.85", "--lon", "123.55",
                "--altitude-ft", "26000", "--interceptor", "TIGER 21", "--adiz", "JADIZ",
                "--precedence", "flash",
            ),
            (
                "call-request",
                "--from-org", "Japan Coast Guard", "--to-org", "Coast Guard Administration",
                "--topic", "Search coordination", "--callback", "+81988671234",
            ),
            ("link-test", "--number", "9"),
        ]  # fmt: skip
        for command in commands:
            result = await hotline("send", *command, *cfg, env=env)
            assert result.rc == 0, (command[0], result.err)
            assert "JOURNALED" in result.out
        sitrep = tmp_path / "sitrep.txtpb"
        sitrep.write_text(
            'sitrep_number: 1\nreporting_rcc: "RCC Naha"\nstatus: SAR_STATUS_ONGOING\n'
            'situation { variants { language: "en" text: "Searching" '
            "kind: TRANSLATION_KIND_ORIGINAL } }\n"
        )
        body = await hotline("send", "body", "--type", "sar-sitrep", str(sitrep), *cfg, env=env)
        assert body.rc == 0, body.err
        example = await hotline(
            "send",
            "--file",
            str(EXAMPLES / "sar_request.txtpb"),
            "--fresh",
            "--json",
            *cfg,
            env=env,
        )
        assert example.rc == 0, example.err
        history = await hotline("history", "--json", *cfg, env=env)
        messages = history.json()["messages"]
        assert isinstance(messages, list)
        types = {member for m in messages for member in m["envelope"] if member in BODY_KEYS}
        assert types == {
            "maritime_encounter",
            "manoeuvre_notice",
            "air_incident",
            "call_request",
            "link_test",
            "sar_sitrep",
            "sar_request",
        }
        flash = await hotline("history", "--json", "--precedence", "flash", *cfg, env=env)
        assert len(flash.json()["messages"]) == 1  # type: ignore[arg-type]
        tests = await hotline(
            "history", "--json", "--type", "link-test,call-request", *cfg, env=env
        )
        assert len(tests.json()["messages"]) == 2  # type: ignore[arg-type]


BODY_KEYS = {
    "maritime_encounter",
    "manoeuvre_notice",
    "air_incident",
    "hazardous_activity",
    "launch_warning",
    "sar_request",
    "sar_sitrep",
    "hadr_request",
    "hadr_offer",
    "evacuation",
    "cyber_threat",
    "call_request",
    "link_test",
    "free_text",
    "acknowledgement",
}


# --------------------------------------------------------------------------- failures


@pytest.mark.slow
async def test_refusals_and_failures_have_distinct_exit_codes_and_clear_messages(
    tmp_path: Path,
) -> None:
    env = clean_env(tmp_path)
    async with running_pair(tmp_path) as pair:
        jp, tw = floors(pair, tmp_path)
        cfg = ("--config", str(jp.config))
        invalid = await hotline(
            "send", "maritime-encounter", "--lat", "95", "--lon", "122", "--course", "0",
            "--speed", "1", "--contact-lat", "24", "--contact-lon", "122", *cfg, env=env,
        )  # fmt: skip
        assert invalid.rc == 1
        assert "INVALID_ARGUMENT" in invalid.err
        assert "latitude_deg" in invalid.err

        sent = await hotline(
            "send", "free-text", "--subject", "s", "--text", "t", "--json", *cfg, env=env
        )
        message_id = str(sent.json()["message_id"])
        wrong = await hotline("ack", message_id, "--level", "roger", *cfg, env=env)
        assert wrong.rc == 1
        assert "FAILED_PRECONDITION" in wrong.err

        unable = await hotline(
            "ack", message_id, "--level", "unable", "--config", str(tw.config), env=env
        )
        assert unable.rc == 2
        assert "--reason" in unable.err

        waited = await hotline(
            "send", "free-text", "--subject", "s", "--text", "nobody answers",
            "--wait", "acknowledged", "--timeout", "1", *cfg, env=env,
        )  # fmt: skip
        assert waited.rc == 4
        assert "did not reach ACKNOWLEDGED" in waited.err

        missing = await hotline("show", "01a21188-d3fb-7f8f-bec5-67136624aa02", *cfg, env=env)
        assert missing.rc == 1
        assert "NOT_FOUND" in missing.err

        no_such = await hotline("show", "not-an-id", *cfg, env=env)
        assert no_such.rc == 2

        nothing = await hotline("send", *cfg, env=env)
        assert nothing.rc == 2
        assert "say what to send" in nothing.err

        closed = f"127.0.0.1:{free_port()}"
        down = await hotline(
            "status", "--address", closed, "--party", "JP", "--pki", str(pair.pki), env=env
        )
        assert down.rc == 3
        assert "cannot reach the gateway" in down.err


async def test_nothing_configured_is_a_usage_error_that_says_where_to_configure(
    tmp_path: Path,
) -> None:
    result = await hotline("status", env=clean_env(tmp_path))
    assert result.rc == 2
    assert "no gateway address" in result.err
    assert "--address" in result.err
    assert "HOTLINE_ADDRESS" in result.err
    assert "operator.toml" in result.err


async def test_help_of_every_operator_command_shows_where_the_configuration_lives(
    tmp_path: Path,
) -> None:
    env = clean_env(tmp_path)
    expected = str(default_config_path(env))
    for command in ("send", "watch", "ack", "history", "show", "status"):
        result = await hotline(command, "--help", env=env)
        assert result.rc == 0, result.err
        assert expected in result.out, command
        assert "HOTLINE_CONFIG" in result.out
    demo = await hotline("demo", "--help", env=env)
    assert demo.rc == 0
    assert "SHORTENED" in demo.out.upper() or "shortened" in demo.out


@pytest.mark.slow
async def test_environment_variables_alone_reach_the_gateway(tmp_path: Path) -> None:
    async with running_pair(tmp_path) as pair:
        env = clean_env(
            tmp_path,
            {
                "HOTLINE_ADDRESS": f"127.0.0.1:{pair.tw.port}",
                "HOTLINE_PARTY": "TW",
                "HOTLINE_PKI": str(pair.pki),
                "HOTLINE_OPERATOR": "watch-2",
            },
        )
        result = await hotline("status", "--json", env=env)
        assert result.rc == 0, result.err
        assert result.json()["party"] == "TW"
        # A flag overrides the environment: JP's address with TW's certificates is refused.
        wrong = await hotline("status", "--address", f"127.0.0.1:{pair.jp.port}", env=env)
        assert wrong.rc != 0


# --------------------------------------------------------------------------- configuration


def test_flags_override_environment_which_overrides_the_file(tmp_path: Path) -> None:
    config = tmp_path / "operator.toml"
    config.write_text(
        'address = "file:1"\nparty = "JP"\npki_dir = "pki"\noperator = "watch-2"\ntimeout_s = 3\n'
    )
    from_file = resolve({}, config_file=config, env={})
    assert from_file.address == "file:1"
    assert from_file.cert == tmp_path / "pki" / "jp" / "operators" / "watch-2.crt"
    assert from_file.ca == tmp_path / "pki" / "jp" / "ca.crt"
    assert from_file.timeout_s == 3.0
    env = {"HOTLINE_ADDRESS": "env:2", "HOTLINE_OPERATOR": "watch-1", "HOTLINE_CONFIG": str(config)}
    from_env = resolve({}, env=env)
    assert from_env.address == "env:2"
    assert from_env.cert.name == "watch-1.crt"
    flags = resolve({"address": "flag:3", "cert": "/elsewhere/me.crt"}, env=env)
    assert flags.address == "flag:3"
    assert flags.cert == Path("/elsewhere/me.crt")
    assert flags.key.name == "watch-1.key"  # still derived from the PKI


def test_the_default_file_is_used_when_present(tmp_path: Path) -> None:
    env = {"XDG_CONFIG_HOME": str(tmp_path)}
    path = default_config_path(env)
    assert path == tmp_path / "hotline" / "operator.toml"
    write_operator_config(path, address="127.0.0.1:5", party="TW", pki_dir=tmp_path / "pki")
    config = resolve({}, env=env)
    assert config.party == "TW"
    assert config.address == "127.0.0.1:5"
    assert config.source == str(path)


def test_configuration_mistakes_are_reported_plainly(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no gateway address"):
        resolve({}, env={"XDG_CONFIG_HOME": str(tmp_path)})
    with pytest.raises(ConfigError, match="no party"):
        resolve({"address": "h:1"}, env={"XDG_CONFIG_HOME": str(tmp_path)})
    with pytest.raises(ConfigError, match="no operator certificate"):
        resolve({"address": "h:1", "party": "JP"}, env={"XDG_CONFIG_HOME": str(tmp_path)})
    with pytest.raises(ConfigError, match="HOST:PORT"):
        resolve({"address": "nowhere", "party": "JP"}, env={})
    with pytest.raises(ConfigError, match="invalid party"):
        resolve({"address": "h:1", "party": "jp", "pki_dir": "p"}, env={})
    with pytest.raises(ConfigError, match="does not exist"):
        resolve({}, config_file=tmp_path / "missing.toml", env={})
    bad = tmp_path / "bad.toml"
    bad.write_text('address = "h:1"\nparty = "JP"\ncolour = "red"\n')
    with pytest.raises(ConfigError, match="unknown setting"):
        resolve({}, config_file=bad, env={})
    bad.write_text("address = [\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        resolve({}, config_file=bad, env={})


async def test_operator_file_written_for_a_party_reaches_its_gateway(tmp_path: Path) -> None:
    async with running_pair(tmp_path) as pair:
        jp, _ = floors(pair, tmp_path)
        config = resolve({}, config_file=jp.config, env={})
        async with OperatorClient(
            config.address, cert=config.cert, key=config.key, ca=config.ca, party=config.party
        ) as client:
            sent = await client.send_body(bodies.free_text("a", "b"), precedence=4)
            record = await client.wait_for(sent.message_id, DELIVERED, timeout=10)
            assert record.state == DELIVERED


async def test_send_many_envelopes_from_a_jsonl_file_in_batches(tmp_path: Path) -> None:
    """`hotline send --file X.jsonl`: one result line per envelope, in order; a refused one is
    reported on stderr with its reason and makes the exit code 1; the others are journaled."""
    from google.protobuf import json_format

    from tests.harness import free_text

    env = clean_env(tmp_path)
    async with running_pair(tmp_path) as pair:
        jp, _ = floors(pair, tmp_path)
        good = [free_text(f"line {i}") for i in range(3)]
        bad = free_text("bad language")
        bad.language = "not a language"
        lines = [json_format.MessageToJson(e, indent=None) for e in (good[0], bad, *good[1:])]
        path = tmp_path / "reports.jsonl"
        path.write_text("\n".join(lines) + "\n\n")
        result = await hotline("send", "--file", str(path), "--config", str(jp.config), env=env)
        assert result.rc == 1, result.err
        out = result.out.splitlines()
        assert [line.split()[0] for line in out] == [e.message_id for e in good]
        assert all("JOURNALED" in line for line in out)
        assert f"{bad.message_id} REFUSED" in result.err
        assert "envelope.language" in result.err
        for envelope in good:
            assert pair.jp.gateway.store.record(envelope.message_id) is not None
        assert pair.jp.gateway.store.record(bad.message_id) is None

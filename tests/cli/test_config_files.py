"""Configuration files are checked by typed models: every bad value is named, never a traceback.

The bad values are the ones a new user met on main (issue 14): each must stop the command with
exit status 2 and one line naming the key, the value as written and what is allowed.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from client.config import OperatorFile
from hotline.cli import main
from server.config import GatewayConfig
from tools.settings_tables import README, current

MINIMAL = {
    "party": '"JP"',
    "peer_party": '"TW"',
    "listen": '"127.0.0.1:0"',
    "peer_address": '"127.0.0.1:1"',
}


def gateway_file(tmp_path: Path, **settings: str) -> Path:
    path = tmp_path / "jp.toml"
    lines = [f"{k} = {v}" for k, v in {**MINIMAL, **settings}.items()]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("key", "written", "expected"),
    [
        ("window", '"256"', 'window = "256": must be a whole number from 1 to 65536'),
        ("max_message_bytes", '"big"', 'max_message_bytes = "big": must be a whole number'),
        ("operator_rate_per_s", "-1.0", "operator_rate_per_s = -1.0: must be a number more than 0"),
        ("max_concurrent_rpcs", "0", "max_concurrent_rpcs = 0: must be a whole number from 1"),
        ("log_level", "5", 'log_level = 5: must be one of "DEBUG", "INFO"'),
        ("heartbeat_interval_s", "true", "heartbeat_interval_s = true: must be a number"),
        ("party", '"jp"', 'party = "jp": must be 2 to 8 uppercase letters A-Z'),
        ("windw", "256", "unknown setting windw (did you mean window?)"),
        ("listen", '"50051"', 'listen = "50051": must be HOST:PORT'),
        ("deadlines", "{ FLASH = 0 }", "deadlines.FLASH = 0: must be a number more than 0"),
        ("deadlines", "{ FLSH = 60 }", "unknown setting deadlines.FLSH (did you mean FLASH?)"),
    ],
)
def test_every_bad_gateway_setting_exits_2_naming_key_value_and_what_is_allowed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], key: str, written: str, expected: str
) -> None:
    path = gateway_file(tmp_path, **{key: written})
    assert main(["serve", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert expected in err
    assert err.count("\n") == 1, f"one line expected, got: {err}"
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        (
            {"metrics_listen": '"127.0.0.1:0"', "metrics_client_ca": '"nowhere/ca.crt"'},
            'nowhere/ca.crt": no such file; must be a PEM CA certificate file',
        ),
        (
            {"metrics_listen": '"127.0.0.1:0"', "metrics_client_ca": '"jp.toml"'},
            "metrics_cert (not set: the gateway's own, ",
        ),
        (
            {"metrics_client_ca": '"jp.toml"'},
            'metrics_client_ca = "%s/jp.toml": needs metrics_listen',
        ),
        (
            {"metrics_listen": '"127.0.0.1:0"', "metrics_cert": '"jp.toml"'},
            'metrics_cert = "%s/jp.toml": needs metrics_key too',
        ),
        (
            {
                "metrics_listen": '"127.0.0.1:0"',
                "metrics_cert": '"jp.toml"',
                "metrics_key": '"jp.toml"',
            },
            "needs metrics_client_ca (the endpoint is HTTPS only with client certificates)",
        ),
        ({"metrics_client_ca": "1"}, "metrics_client_ca = 1: must be a path to a PEM CA"),
    ],
)
def test_bad_metrics_tls_settings_exit_2_naming_the_key_and_the_file(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    settings: dict[str, str],
    expected: str,
) -> None:
    path = gateway_file(tmp_path, **settings)
    assert main(["serve", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert expected.replace("%s", str(tmp_path.resolve())) in err
    assert err.count("\n") == 1, f"one line expected, got: {err}"
    assert "Traceback" not in err


def test_a_bad_gateway_file_exits_2_from_the_real_command_without_a_traceback(
    tmp_path: Path,
) -> None:
    path = gateway_file(tmp_path, window='"256"')
    done = subprocess.run(
        [sys.executable, "-m", "hotline.cli", "serve", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert 'window = "256"' in done.stderr
    assert "Traceback" not in done.stderr


def test_print_config_schema_writes_a_json_schema_that_forbids_unknown_keys(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["serve", "--print-config-schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert schema["additionalProperties"] is False
    assert set(schema["required"]) == {"party", "peer_party", "peer_address"}
    assert schema["properties"]["window"]["maximum"] == 65536


def numbers(schema: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found = {}
    for name, prop in schema["properties"].items():
        options = prop.get("anyOf", [prop])
        for option in options:
            if option.get("type") in ("integer", "number"):
                found[name] = option
    return found


@pytest.mark.parametrize("model", [GatewayConfig, OperatorFile])
def test_every_number_in_a_configuration_file_has_a_range(model: type[Any]) -> None:
    found = numbers(model.model_json_schema())
    assert found
    for name, prop in found.items():
        assert "minimum" in prop or "exclusiveMinimum" in prop, f"{name} has no lower bound"
        assert "maximum" in prop or "exclusiveMaximum" in prop, f"{name} has no upper bound"


@pytest.mark.parametrize(
    ("written", "expected"),
    [
        ('timeout_s = "10"', 'timeout_s = "10": must be a number more than 0'),
        ("retry_window_s = -1", "retry_window_s = -1: must be a number from 0 to 600"),
        ('adress = "127.0.0.1:1"', "unknown setting adress (did you mean address?)"),
        ('party = "jp"', 'party = "jp": must be 2 to 8 uppercase letters'),
        ("operator = 7", "operator = 7: must be"),
    ],
)
def test_every_bad_operator_setting_exits_2_naming_key_and_value(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], written: str, expected: str
) -> None:
    path = tmp_path / "operator.toml"
    path.write_text(written + "\n", encoding="utf-8")
    assert main(["status", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert expected in err
    assert "Traceback" not in err


def test_the_readme_settings_tables_are_generated_from_the_models() -> None:
    text = README.read_text(encoding="utf-8")
    assert current(text) == text, (
        "README.md's settings tables are stale: run `.venv/bin/python tools/settings_tables.py`"
    )

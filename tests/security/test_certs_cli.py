"""`hotline certs`: the PKI commands, in process through `hotline.cli.main` and as a real process."""

from __future__ import annotations

import stat
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from certs import (
    PartyPaths,
    RevocationList,
    fingerprint,
    init_pki,
    load_certificate,
    load_key_pair,
)
from hotline.cli import main

ERROR_PREFIX = "hotline certs: error: "


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["certs", *argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def pki(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    directory = tmp_path / "pki"
    code, _, err = run(capsys, "init", "--dir", str(directory))
    assert code == 0, err
    return directory


def test_init_creates_the_pki_and_says_what_next(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    directory = tmp_path / "pki"
    code, out, err = run(
        capsys,
        "init",
        "--dir",
        str(directory),
        "--party",
        "jp",
        "--party",
        "TW",
        "--operator",
        "watch-1",
        "--operator",
        "watch-2",
        "--days",
        "30",
    )
    assert (code, err) == (0, "")
    jp = PartyPaths.of(directory, "JP")
    for path in (jp.ca_cert, jp.gateway_key, jp.bundle, jp.operator_cert("watch-2"), jp.crl):
        assert str(path) in out
        assert path.is_file()
    assert stat.S_IMODE(jp.gateway_key.stat().st_mode) == 0o600
    assert "Next steps" in out
    gateway = load_certificate(jp.gateway_cert)
    assert gateway.not_valid_after_utc - gateway.not_valid_before_utc < timedelta(days=31)


def test_init_twice_fails_and_mentions_force(pki: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _out, err = run(capsys, "init", "--dir", str(pki))
    assert code == 2
    assert err.startswith(ERROR_PREFIX)
    assert "--force" in err
    assert "ca.crt" in err
    code, _, err = run(capsys, "init", "--dir", str(pki), "--force")
    assert (code, err) == (0, "")


@pytest.mark.parametrize(
    "parties",
    [["--party", "JP"], ["--party", "JP", "--party", "JP"], ["--party", "J1", "--party", "TW"]],
)
def test_init_refuses_bad_parties(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], parties: list[str]
) -> None:
    code, _, err = run(capsys, "init", "--dir", str(tmp_path), *parties)
    assert code == 2
    assert err.startswith(ERROR_PREFIX)


def test_issue_operator(pki: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(
        capsys, "issue", "operator", "--dir", str(pki), "--party", "TW", "--name", "watch-5"
    )
    assert (code, err) == (0, "")
    tw = PartyPaths.of(pki, "TW")
    assert str(tw.operator_cert("watch-5")) in out
    load_key_pair(tw.operator_cert("watch-5"), tw.operator_key("watch-5"))
    code, _, err = run(
        capsys, "issue", "operator", "--dir", str(pki), "--party", "TW", "--name", "watch-5"
    )
    assert code == 2
    assert "--force" in err


def test_issue_gateway_with_extra_names(pki: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(
        capsys,
        "issue",
        "gateway",
        "--dir",
        str(pki),
        "--party",
        "JP",
        "--dns",
        "gw.example.jp",
        "--ip",
        "192.0.2.1",
    )
    assert (code, err) == (0, "")
    code, out, _ = run(capsys, "show", str(PartyPaths.of(pki, "JP").gateway_cert))
    assert code == 0
    assert "gw.example.jp" in out
    assert "192.0.2.1" in out


def test_rotate_then_revoke_the_previous_certificate(
    pki: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    jp = PartyPaths.of(pki, "JP")
    old = load_certificate(jp.gateway_cert)
    code, out, err = run(capsys, "rotate", "--dir", str(pki), "--party", "JP")
    assert (code, err) == (0, "")
    assert "gateway.crt.prev" in out
    load_key_pair(jp.gateway_cert, jp.gateway_key)
    assert load_certificate(jp.gateway_cert_prev) == old

    code, out, err = run(
        capsys,
        "revoke",
        "--dir",
        str(pki),
        "--party",
        "JP",
        str(jp.gateway_cert_prev),
        "--reason",
        "superseded",
    )
    assert (code, err) == (0, "")
    assert f"{old.serial_number:#x}" in out
    crl = RevocationList.load(jp.crl, load_certificate(jp.ca_cert))
    assert crl.is_revoked(old)
    assert not crl.is_revoked(load_certificate(jp.gateway_cert))

    code, out, _ = run(capsys, "crl", "--dir", str(pki), "--party", "JP")
    assert code == 0
    assert "CRL number 3" in out


def test_revoke_refuses_a_certificate_of_the_other_party(
    pki: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tw_gateway = PartyPaths.of(pki, "TW").gateway_cert
    code, _, err = run(capsys, "revoke", "--dir", str(pki), "--party", "JP", str(tw_gateway))
    assert code == 2
    assert err.startswith(ERROR_PREFIX)
    assert "not issued by the JP CA" in err


def test_show_prints_fingerprint_and_identity(
    pki: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    jp = PartyPaths.of(pki, "JP")
    code, out, _ = run(capsys, "show", str(jp.operator_cert("watch-1")))
    assert code == 0
    assert fingerprint(load_certificate(jp.operator_cert("watch-1"))) in out
    assert "spiffe://jp.hotline/operator/watch-1" in out
    code, out, _ = run(capsys, "show", str(pki))
    assert code == 0
    assert "spiffe://tw.hotline/signing" in out


@pytest.mark.parametrize(
    "argv",
    [
        ["show", "{tmp}/nowhere.crt"],
        ["rotate", "--dir", "{tmp}/nowhere", "--party", "JP"],
        ["issue", "operator", "--dir", "{tmp}", "--party", "JP", "--name", "x"],
        ["issue", "operator", "--dir", "{pki}", "--party", "KR", "--name", "x"],
        ["issue", "operator", "--dir", "{pki}", "--party", "JP", "--name", "Not_Valid"],
        ["issue", "gateway", "--dir", "{pki}", "--party", "JP", "--dns", "*.example.jp"],
        ["revoke", "--dir", "{pki}", "--party", "JP", "{tmp}/nowhere.crt"],
        ["revoke", "--dir", "{pki}", "--party", "JP", "{pki}/jp/ca.key"],
    ],
)
def test_user_errors_exit_2_with_one_error_line(
    pki: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    args = [a.format(tmp=tmp_path, pki=pki) for a in argv]
    code, _out, err = run(capsys, *args)
    assert code == 2
    assert err.startswith(ERROR_PREFIX)
    assert err.count("\n") == 1
    assert "Traceback" not in err


def test_a_ca_key_that_does_not_match_is_reported(
    pki: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    jp = PartyPaths.of(pki, "JP")
    stranger = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    jp.ca_key.write_bytes(stranger)
    code, _, err = run(
        capsys, "issue", "operator", "--dir", str(pki), "--party", "JP", "--name", "a"
    )
    assert code == 2
    assert "does not match" in err
    assert "ca.key" in err


def test_an_expired_ca_is_reported(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    long_ago = datetime.now(UTC) - timedelta(days=40)
    init_pki(tmp_path, now=long_ago, validity_days=10, ca_validity_days=30)
    code, _, err = run(capsys, "rotate", "--dir", str(tmp_path), "--party", "TW")
    assert code == 2
    assert "expired on" in err


def test_help_has_examples(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["certs", "--help"], ["certs", "revoke", "--help"], ["certs", "init", "--help"]):
        with pytest.raises(SystemExit) as exited:
            main(argv)
        assert exited.value.code == 0
        out = capsys.readouterr().out
        assert "examples:" in out
        assert "hotline certs" in out


def test_certs_without_a_subcommand_prints_usage(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys)
    assert code == 2
    assert "SUBCOMMAND" in err


def test_real_process_init_twice(tmp_path: Path) -> None:
    hotline = Path(sys.executable).parent / "hotline"
    if not hotline.exists():
        pytest.skip("the hotline console script is not installed in this environment")
    directory = tmp_path / "pki"
    first = subprocess.run(
        [str(hotline), "certs", "init", "--dir", str(directory)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert first.returncode == 0, first.stderr
    assert str(directory / "jp" / "gateway.crt") in first.stdout
    second = subprocess.run(
        [str(hotline), "certs", "init", "--dir", str(directory)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert second.returncode == 2
    assert second.stderr.startswith(ERROR_PREFIX)
    assert "--force" in second.stderr
    assert second.stdout == ""

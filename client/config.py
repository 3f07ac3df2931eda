"""Where the operator commands find their gateway and their certificate.

Three layers, each overriding the one before, field by field:

1. a TOML file: `--config FILE`, else `$HOTLINE_CONFIG`, else `~/.config/hotline/operator.toml`
   (`$XDG_CONFIG_HOME/hotline/operator.toml`) if it exists;
2. environment variables: `HOTLINE_ADDRESS`, `HOTLINE_PARTY`, `HOTLINE_PKI`, `HOTLINE_OPERATOR`;
3. command-line flags: `--address`, `--party`, `--pki`, `--operator`, `--cert`, `--key`, `--ca`.

The file (relative paths are relative to the file's folder):

    address = "127.0.0.1:50051"     # host:port of your own party's gateway (required)
    party = "JP"                    # your party, which is the gateway's (required)
    # either the three files ...
    cert = "pki/jp/operators/watch-1.crt"
    key = "pki/jp/operators/watch-1.key"
    ca = "pki/jp/ca.crt"            # your party's CA: the only root trusted for the gateway
    # ... or a PKI folder made by `hotline certs init` and your operator name
    pki_dir = "pki"
    operator = "watch-1"            # default watch-1
    timeout_s = 10.0                # per-call deadline, seconds (optional; >0, <= 3600)
    retry_window_s = 15.0           # retry UNAVAILABLE / DEADLINE_EXCEEDED this long with the
                                    #   same request (optional; 0 = never, <= 600)

`cert`, `key` and `ca` given explicitly win over those derived from `pki_dir` and `operator`.
The file is checked by a strict typed model (`OperatorFile`): an unknown key is refused with a
"did you mean", a value of the wrong type or out of range with the key, the value and what is
allowed; the commands exit 2. The README's "Operator settings" table is generated from it.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from certs.errors import CertsError
from certs.identity import validate_operator_name, validate_party
from certs.pki import PartyPaths
from hotline.errors import ConfigError
from settings import config_error, markdown_table

__all__ = [
    "DEFAULT_OPERATOR",
    "ENV_ADDRESS",
    "ENV_CONFIG",
    "ENV_OPERATOR",
    "ENV_PARTY",
    "ENV_PKI",
    "OperatorConfig",
    "OperatorFile",
    "default_config_path",
    "resolve",
    "write_operator_config",
]

ENV_ADDRESS = "HOTLINE_ADDRESS"
ENV_PARTY = "HOTLINE_PARTY"
ENV_PKI = "HOTLINE_PKI"
ENV_OPERATOR = "HOTLINE_OPERATOR"
ENV_CONFIG = "HOTLINE_CONFIG"
DEFAULT_OPERATOR = "watch-1"

_PATHS = ("cert", "key", "ca", "pki_dir")
DEFAULT_RETRY_WINDOW_S = 15.0  # client.operator.DEFAULT_RETRY_WINDOW_S
_PARTY_RULE = "2 to 8 uppercase letters A-Z, such as JP or TW"
_ADDRESS_RULE = "HOST:PORT, such as 127.0.0.1:50051"
_PATH: dict[str, Any] = {"allowed": "a path, relative to the file's folder"}
_OPERATOR_RULE = "1 to 63 of a-z, 0-9 and '-', such as watch-1"


class OperatorFile(BaseModel):
    """An operator's TOML file: every key optional (the environment and flags may give it)."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True, allow_inf_nan=False)

    address: str | None = Field(
        None,
        description="your own party's gateway",
        json_schema_extra={"allowed": _ADDRESS_RULE},
    )
    party: str | None = Field(
        None,
        description="your party, which is the gateway's",
        json_schema_extra={"allowed": _PARTY_RULE},
    )
    cert: str | None = Field(
        None, min_length=1, description="your operator certificate file", json_schema_extra=_PATH
    )
    key: str | None = Field(
        None, min_length=1, description="its private key file", json_schema_extra=_PATH
    )
    ca: str | None = Field(
        None,
        min_length=1,
        description="your party's CA: the only root trusted for the gateway",
        json_schema_extra=_PATH,
    )
    pki_dir: str | None = Field(
        None,
        min_length=1,
        description="instead of the three files: a `hotline certs init` folder",
        json_schema_extra=_PATH,
    )
    operator: str | None = Field(
        None,
        description="your operator name in that folder (default watch-1)",
        json_schema_extra={"allowed": _OPERATOR_RULE},
    )
    timeout_s: float | None = Field(
        None, gt=0, le=3600, description="deadline of each call to the gateway (default 10)"
    )
    retry_window_s: float | None = Field(
        None,
        ge=0,
        le=600,
        description="how long a call failing with UNAVAILABLE or DEADLINE_EXCEEDED is retried "
        "with the same request (default 15; 0 = never)",
    )

    @field_validator("address")
    @classmethod
    def _check_address(cls, value: str | None) -> str | None:
        if value is not None and (":" not in value or not value.rsplit(":", 1)[1].isdigit()):
            raise ValueError(f"must be {_ADDRESS_RULE}")
        return value

    @field_validator("party")
    @classmethod
    def _check_party(cls, value: str | None) -> str | None:
        try:
            return None if value is None else validate_party(value)
        except CertsError:
            raise ValueError(f"must be {_PARTY_RULE}") from None

    @field_validator("operator")
    @classmethod
    def _check_operator(cls, value: str | None) -> str | None:
        try:
            return None if value is None else validate_operator_name(value)
        except CertsError:
            raise ValueError(f"must be {_OPERATOR_RULE}") from None


def readme_table() -> str:
    """The README's operator settings table (generated; a test compares it)."""
    return markdown_table(OperatorFile).replace("| (not set) |", "| |")


BEGIN = "<!-- operator-settings:begin (generated by `python tools/settings_tables.py`) -->"
END = "<!-- operator-settings:end -->"


def default_config_path(env: Mapping[str, str] | None = None) -> Path:
    """`$XDG_CONFIG_HOME/hotline/operator.toml`, or `~/.config/hotline/operator.toml`."""
    env = os.environ if env is None else env
    base = env.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "hotline" / "operator.toml"


@dataclass(frozen=True)
class OperatorConfig:
    """Everything needed to dial one's own gateway as one operator."""

    address: str
    party: str
    cert: Path
    key: Path
    ca: Path
    timeout_s: float = 10.0
    source: str = ""
    retry_window_s: float = DEFAULT_RETRY_WINDOW_S

    def describe(self) -> str:
        return f"gateway {self.party} at {self.address}, operator certificate {self.cert}"


def _read_file(path: Path) -> dict[str, Any]:
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"configuration file {path} does not exist") from None
    except OSError as exc:
        raise ConfigError(f"cannot read configuration file {path}: {exc}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    try:
        checked = OperatorFile.model_validate(raw)
    except ValidationError as exc:
        raise config_error(OperatorFile, exc, str(path)) from None
    values: dict[str, Any] = checked.model_dump(exclude_none=True)
    base = path.resolve().parent
    for name in _PATHS:
        if name in values:
            values[name] = base / Path(values[name]).expanduser()
    return values


def resolve(
    flags: Mapping[str, Any] | None = None,
    *,
    config_file: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> OperatorConfig:
    """Merge file, environment and flags (later wins) into a complete configuration.

    `flags` holds the command-line values (None for not given): address, party, pki_dir,
    operator, cert, key, ca, timeout_s. Raises `ConfigError` saying what is missing and where
    it may be given.
    """
    env = os.environ if env is None else env
    flags = {k: v for k, v in (flags or {}).items() if v is not None}
    explicit = config_file or (Path(env[ENV_CONFIG]) if env.get(ENV_CONFIG) else None)
    if explicit is not None:
        path: Path | None = explicit.expanduser()
    else:
        default = default_config_path(env)
        path = default if default.is_file() else None
    merged: dict[str, Any] = _read_file(path) if path is not None else {}
    from_env = {
        "address": env.get(ENV_ADDRESS),
        "party": env.get(ENV_PARTY),
        "pki_dir": Path(env[ENV_PKI]).expanduser() if env.get(ENV_PKI) else None,
        "operator": env.get(ENV_OPERATOR),
    }
    merged.update({k: v for k, v in from_env.items() if v})
    for name in _PATHS:
        if name in flags:
            flags[name] = Path(flags[name]).expanduser()
    merged.update(flags)
    where = (
        f"the configuration file {path}"
        if path is not None
        else f"a configuration file (--config, ${ENV_CONFIG} or {default_config_path(env)})"
    )

    timeout = merged.get("timeout_s", 10.0)
    if not 0 < float(timeout) <= 3600:
        raise ConfigError(f"call timeout {timeout:g} s: must be more than 0 and at most 3600")
    address = merged.get("address")
    if not address:
        raise ConfigError(
            "no gateway address: nothing says where your gateway is. Pass --address HOST:PORT, "
            f'set ${ENV_ADDRESS}, or write address = "HOST:PORT" in {where}'
        )
    if ":" not in str(address):
        raise ConfigError(f"gateway address must be HOST:PORT, got {address!r}")
    party = merged.get("party")
    if not party:
        raise ConfigError(
            f'no party: pass --party (e.g. JP), set ${ENV_PARTY}, or write party = "JP" in {where}'
        )
    try:
        party = validate_party(str(party))
    except CertsError as exc:
        raise ConfigError(str(exc)) from None

    files: dict[str, Path] = {n: Path(merged[n]) for n in ("cert", "key", "ca") if n in merged}
    if len(files) < 3:
        pki = merged.get("pki_dir")
        if pki is None:
            missing = ", ".join(n for n in ("cert", "key", "ca") if n not in files)
            raise ConfigError(
                f"no operator certificate ({missing} missing): pass --pki DIR (and --operator), "
                f"set ${ENV_PKI}, or give cert, key and ca (or pki_dir) in {where}"
            )
        operator = str(merged.get("operator") or DEFAULT_OPERATOR)
        try:
            paths = PartyPaths.of(Path(pki), party)
            derived = {
                "cert": paths.operator_cert(operator),
                "key": paths.operator_key(operator),
                "ca": paths.ca_cert,
            }
        except CertsError as exc:
            raise ConfigError(str(exc)) from None
        files = {**derived, **files}
    return OperatorConfig(
        address=str(address),
        party=party,
        cert=files["cert"],
        key=files["key"],
        ca=files["ca"],
        timeout_s=float(merged.get("timeout_s", 10.0)),
        source=str(path) if path is not None else "",
        retry_window_s=float(merged.get("retry_window_s", DEFAULT_RETRY_WINDOW_S)),
    )


def write_operator_config(
    path: Path, *, address: str, party: str, pki_dir: Path, operator: str = DEFAULT_OPERATOR
) -> Path:
    """Write a ready operator file (used by `hotline demo --keep`)."""

    def quoted(value: str) -> str:
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        f"# Operator {operator} of party {party}: `hotline watch --config {path}`\n"
        f"address = {quoted(address)}\n"
        f"party = {quoted(party)}\n"
        f"pki_dir = {quoted(str(pki_dir.resolve()))}\n"
        f"operator = {quoted(operator)}\n",
        encoding="utf-8",
    )
    return path

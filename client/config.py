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
    timeout_s = 10.0                # per-call deadline (optional)

`cert`, `key` and `ca` given explicitly win over those derived from `pki_dir` and `operator`.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from certs.errors import CertsError
from certs.identity import validate_party
from certs.pki import PartyPaths
from hotline.errors import ConfigError

__all__ = [
    "DEFAULT_OPERATOR",
    "ENV_ADDRESS",
    "ENV_CONFIG",
    "ENV_OPERATOR",
    "ENV_PARTY",
    "ENV_PKI",
    "OperatorConfig",
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

_KEYS = ("address", "party", "cert", "key", "ca", "pki_dir", "operator", "timeout_s")
_PATHS = ("cert", "key", "ca", "pki_dir")


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

    def describe(self) -> str:
        return f"gateway {self.party} at {self.address}, operator certificate {self.cert}"


def _read_file(path: Path) -> dict[str, Any]:
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"configuration file {path} does not exist") from None
    except OSError as exc:
        raise ConfigError(f"cannot read configuration file {path}: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    unknown = sorted(set(raw) - set(_KEYS))
    if unknown:
        raise ConfigError(
            f"{path}: unknown setting(s) {', '.join(unknown)} (known: {', '.join(_KEYS)})"
        )
    values: dict[str, Any] = {}
    base = path.resolve().parent
    for name, value in raw.items():
        if name == "timeout_s":
            if not isinstance(value, int | float) or isinstance(value, bool) or value <= 0:
                raise ConfigError(f"{path}: timeout_s must be a positive number")
            values[name] = float(value)
        elif not isinstance(value, str) or not value:
            raise ConfigError(f"{path}: {name} must be a non-empty string")
        elif name in _PATHS:
            values[name] = base / Path(value).expanduser()
        else:
            values[name] = value
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

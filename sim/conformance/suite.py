"""Runs one role's checks against a target: load the material, open the session, run, close."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from hotline.errors import ConfigError
from sim.conformance.examples import DEFAULT_DIR, load_examples
from sim.conformance.material import load_material, read_server_certificate
from sim.conformance.registry import Check, Result, Role, checks_of, run_checks


def select(role: Role, only: list[str], *, listening: bool) -> list[Check]:
    chosen = [
        c
        for c in checks_of(role)
        if (not only or any(c.id.startswith(prefix) for prefix in only))
        and (listening or c.optional != "listen")
    ]
    if not chosen:
        raise ConfigError(f"no {role.value} check matches --only {' '.join(only)}")
    return chosen


async def run_suite(
    role: Role,
    *,
    target: str,
    pki: Path,
    target_party: str | None = None,
    listen: int | None = None,
    listen_host: str = "127.0.0.1",
    operator: str | None = None,
    only: list[str] | None = None,
    timeout: float = 10.0,
    examples: Path | None = None,
    on_result: Callable[[Result], None] | None = None,
    announce: Callable[[str], None] | None = None,
) -> tuple[list[Result], dict[str, str]]:
    """Run `role`'s checks against the gateway at `target`; ConfigError if it cannot start."""
    checks = select(role, only or [], listening=listen is not None)
    material = await load_material(pki, target, target_party)
    try:
        valid, invalid = load_examples(examples or DEFAULT_DIR)
    except FileNotFoundError as exc:
        raise ConfigError(f"{exc}; pass --examples DIR") from None
    parties = {"target": material.target, "suite": material.us}
    session: Any
    if role is Role.PEER:
        from sim.conformance.pushlink import PeerSession

        if not material.has_peer_material():
            raise ConfigError(
                f"the PKI at {pki} lacks party {material.us}'s gateway or signing certificate "
                f"and key, which the suite needs to play {material.us}'s gateway"
            )
        session = PeerSession(material, target, timeout=timeout)
        session.operator = operator
        session.examples_dir = examples or DEFAULT_DIR
        if listen is not None:
            from sim.conformance.listener import Listener

            session.listener = Listener(material, host=listen_host, port=listen, timeout=timeout)
            port = await session.listener.start()
            if announce is not None:
                announce(
                    f"listening for the {material.target} gateway's PeerLink on "
                    f"{listen_host}:{port} (point its peer_address here)"
                )
    else:
        from sim.conformance.operator_checks import OperatorSession

        session = OperatorSession(material, target, operator=operator, timeout=timeout)
        # a clear error for a target that does not answer, before any check runs
        _, cert, key, ca = material.operator_files(operator)
        await read_server_certificate(target, cert=cert, key=key, cafiles=[ca], server_name=None)
    session.examples = (valid, invalid)
    try:
        results = await run_checks(checks, session, on_result=on_result)
    finally:
        await session.close()
    return results, parties

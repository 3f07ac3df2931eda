"""Where the simulator sends: a gateway pair it starts itself, or endpoints that already run.

    target = await Target.start_pair(workdir, proxies=True)          # fresh PKI, two processes
    target = Target.external({"JP": "host:port", "TW": "host:port"}, pki=Path("pki"))
    sides = await target.connect(operators_per_side=4)
    ...
    await target.close(sides)

A pair the simulator starts gets its own PKI with as many operator certificates as the run
needs, fault proxies on both links (unless `proxies=False`), and the settings the run asks for
(load and bench lift the gateways' per-operator rate limit). Its journals are read directly for
the integrity check; for external endpoints they can be named with `journals=`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sim.engine import Side, close_side, connect_side
from sim.pair import GatewayPair

# The gateways' per-operator send limit (token bucket) is a guard for people at consoles; load
# and bench lift it so that they measure the delivery path, not the limiter.
UNLIMITED = {
    "operator_rate_per_s": 1e9,
    "operator_burst": 1_000_000,
    # an open-loop load may hold many calls at once: the load tester decides, not the limits
    "operator_calls": 100_000,
    "operators_total": 100_000,
}
BASE_OPERATORS = ("watch-1", "watch-2")


def operator_names(count: int) -> list[str]:
    """watch-1, watch-2, then sim-3, sim-4, ... (`count` names)."""
    names = list(BASE_OPERATORS[:count])
    names += [f"sim-{i}" for i in range(len(names) + 1, count + 1)]
    return names


@dataclass
class Target:
    parties: tuple[str, str]
    addresses: dict[str, str]
    pki: Path
    operators: list[str]
    pair: GatewayPair | None = None
    journals: dict[str, Path] | None = None

    @property
    def owned(self) -> bool:
        return self.pair is not None

    @classmethod
    async def start_pair(
        cls,
        workdir: Path,
        *,
        proxies: bool = True,
        operators: int = 2,
        settings: Mapping[str, Any] | None = None,
        deadlines: Mapping[str, float] | None = None,
        parties: tuple[str, str] = ("JP", "TW"),
        extra_operators: Sequence[str] = (),
    ) -> Target:
        """`extra_operators`: more operator identities to issue certificates for (a distributed
        load's workers, `load-1` ...), beside the `operators` the driver connects with."""
        names = operator_names(max(2, operators))
        names += [n for n in extra_operators if n not in names]
        pair = await GatewayPair.start(
            workdir,
            parties=parties,
            operators=names,
            proxies=proxies,
            settings=settings,
            deadlines=deadlines,
        )
        return cls(
            parties=pair.parties,
            addresses={p: pair.side(p).address for p in pair.parties},
            pki=pair.pki,
            operators=names,
            pair=pair,
            journals={p: pair.side(p).journal for p in pair.parties},
        )

    @classmethod
    def external(
        cls,
        addresses: Mapping[str, str],
        *,
        pki: Path,
        operators: Sequence[str] = ("watch-1",),
        journals: Mapping[str, Path] | None = None,
    ) -> Target:
        a, b = addresses
        return cls(
            parties=(a, b),
            addresses=dict(addresses),
            pki=pki,
            operators=list(operators),
            journals=dict(journals) if journals else None,
        )

    async def connect(self, operators_per_side: int = 1) -> dict[str, Side]:
        names = self.operators[: max(1, operators_per_side)]
        sides: dict[str, Side] = {}
        try:
            for party in self.parties:
                journal = self.journals.get(party) if self.journals else None
                sides[party] = await connect_side(
                    party, self.addresses[party], self.pki, names, journal=journal
                )
        except BaseException:
            await self.disconnect(sides)
            raise
        return sides

    async def disconnect(self, sides: Mapping[str, Side]) -> None:
        for side in sides.values():
            await close_side(side)

    async def stop(self) -> None:
        if self.pair is not None:
            await self.pair.stop()

    def gateway_pids(self) -> dict[str, int]:
        if self.pair is None:
            return {}
        return {
            party: side.proc.pid
            for party, side in self.pair.sides.items()
            if side.proc is not None and side.running
        }

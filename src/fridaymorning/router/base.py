"""The Router role: moves traffic between versions of a backend, at run time, without a reload."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from fridaymorning.models import ServerState


@dataclass(frozen=True, slots=True)
class ServerSpec:
    """One server of a backend as haproxy.cfg declares it: where it is and its current weight.

    The runtime reads these from the running HAProxy (`HAProxyRouter.current_servers`) and renders them
    as static `server` lines, so that a reload, whoever triggers it, keeps every server.
    """

    backend: str
    name: str
    address: str
    port: int
    weight: int


@dataclass(frozen=True, slots=True)
class Share:
    """One version's part of a backend's traffic: `percent` of it, spread evenly over `servers`.

    A backend's shares are named by version, or arm ("stable", "baseline", "canary"). Their percents add
    up to 100, or are all 0 when the backend is to serve no request at all.
    """

    percent: int
    servers: tuple[str, ...]


class Router(Protocol):
    """Moves traffic between versions of a backend. It is told shares in percent, and each implementation
    turns them into its own units; every share it sets is read back and verified."""

    async def ensure_backend(self, backend: str) -> None:
        """Fail unless `backend` exists and accepts dynamic servers."""
        ...

    async def add_server(self, backend: str, server: str, address: str, port: int) -> None:
        """Add a server with health checks and no traffic yet (set_shares gives it some), and enable it."""
        ...

    async def set_shares(self, backend: str, shares: Mapping[str, Share]) -> None:
        """Give each version its share of `backend`'s traffic, then read the shares back.

        Servers of the backend that no share names keep what they had. Raises ValueError for shares
        that cannot be honoured, and WeightMismatchError when the shares read back differ.
        """
        ...

    async def drain(self, backend: str, server: str) -> None:
        """Stop sending new requests to `server`; requests in flight complete."""
        ...

    async def remove_server(self, backend: str, server: str) -> None:
        """Disable then delete a dynamic server."""
        ...

    async def server_states(self, backend: str) -> list[ServerState]:
        """Status, weight and request counters of every server of `backend` (from `show stat`)."""
        ...

    async def check_every_instance(self) -> None:
        """InstanceLagError unless every load balancer holds what it was told (a fleet's promotion
        gate; a single HAProxy raises on each change already, so it has nothing to check)."""
        ...

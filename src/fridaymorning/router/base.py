"""The Router role: moves traffic between versions of a backend, at run time, without a reload."""

from __future__ import annotations

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


class Router(Protocol):
    """Moves traffic between servers of a backend. Every weight it sets is read back and verified."""

    async def ensure_backend(self, backend: str) -> None:
        """Fail unless `backend` exists and accepts dynamic servers."""
        ...

    async def add_server(self, backend: str, server: str, address: str, port: int, weight: int = 0) -> None:
        """Add a dynamic server at `weight`, with health checks, then enable its health checks and itself."""
        ...

    async def set_weights(self, backend: str, weights: dict[str, int]) -> None:
        """Set each server's weight, then read each back; raises WeightMismatchError on a difference."""
        ...

    async def get_weights(self, backend: str) -> dict[str, int]:
        """Current weight of every server of `backend`."""
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

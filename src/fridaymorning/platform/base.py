"""The Platform role: starts and stops instances of a version."""

from __future__ import annotations

from typing import Protocol

from fridaymorning.models import Instance


class Platform(Protocol):
    """Starts instances of a version, checks their health, stops them, and adopts the ones a previous
    controller left running (the data plane never depends on the controller being alive)."""

    async def start(self, version: str, replicas: int, label: str = "") -> list[Instance]:
        """Start `replicas` instances of `version` and wait until each answers its health check.

        They are named `label` when given, else `version`; their indices continue after the running
        instances of that name, so server names never collide.
        """
        ...

    async def adopt(self) -> list[Instance]:
        """Take over the healthy instances a previous controller left running, stop the unhealthy ones it
        can vouch for, and return the adopted ones with their original version, label, index and port."""
        ...

    async def stop(self, instances: list[Instance]) -> None:
        """Stop the instances: a graceful signal first, then a forced stop after the grace period."""
        ...

    async def health(self, instance: Instance) -> bool:
        """True when the instance answers its health check with a 2xx."""
        ...

    async def close(self) -> None:
        """Stop every instance this platform started or adopted."""
        ...

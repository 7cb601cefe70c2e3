"""The Platform role: starts and stops instances of a version."""

from __future__ import annotations

from typing import Protocol

from fridaymorning.models import Instance


class Platform(Protocol):
    """Starts instances of a version, checks their health, and stops them."""

    async def start(self, version: str, replicas: int) -> list[Instance]:
        """Start `replicas` instances of `version` and wait until each answers its health check."""
        ...

    async def stop(self, instances: list[Instance]) -> None:
        """Stop the instances: a graceful signal first, then a forced stop after the grace period."""
        ...

    async def health(self, instance: Instance) -> bool:
        """True when the instance answers its health check with a 2xx."""
        ...

    async def close(self) -> None:
        """Stop every instance this platform started."""
        ...

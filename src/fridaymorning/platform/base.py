"""The Platform role: starts and stops instances of a version."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

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


@runtime_checkable
class TracksReplacements(Protocol):
    """A platform that replaces instances by itself (Swarm restarts a task whose container died or whose
    health check failed). The controller asks it, about once a second, which instances now stand for the
    ones it routes to, and replaces the HAProxy servers of those that changed. Local processes are never
    replaced by the platform, so LocalPlatform does not implement it."""

    async def current(self, instances: Sequence[Instance]) -> list[Instance]:
        """The running instances that now stand for `instances`: each one still running, or the one that
        replaced it under the same server name (a new address or port); one that is gone and not yet
        replaced is left out."""
        ...

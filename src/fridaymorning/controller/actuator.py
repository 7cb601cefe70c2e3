"""The traffic actuator: every router call made for one service goes through here.

The planner (`planner`, `strategy`) decides and the loop persists; the actuator turns "the canary at
N%", "these servers join" and "these leave" into the router's calls: backends, servers, shares and the
health HAProxy reports. It holds no rollout state: each call is given the service's instances by role
(a `Roster`), so a restarted controller acts on what it adopted.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass

from fridaymorning.config import ServiceConfig
from fridaymorning.controller.shares import all_or_nothing, version_shares
from fridaymorning.errors import RolloutError
from fridaymorning.models import Instance, ServerStatus
from fridaymorning.router import ab_backend
from fridaymorning.router.base import Router

# How long new servers may take to pass HAProxy's health checks once added.
SERVERS_UP_TIMEOUT_S = 15.0


@dataclass(frozen=True, slots=True)
class Roster:
    """A service's instances by role: the stable version, the fresh baseline and the canary."""

    stable: Sequence[Instance]
    baseline: Sequence[Instance]
    canary: Sequence[Instance]


class TrafficActuator:
    """Moves one service's traffic: its backends, its servers, and the canary's share."""

    def __init__(self, service: ServiceConfig, router: Router) -> None:
        self.router = router
        self.backend = service.name
        self.ab = service.rollout.strategy == "ab"
        # Where canary servers live: the A/B backend for `ab`, else the service's backend.
        self.canary_backend = ab_backend(self.backend) if self.ab else self.backend

    async def check_every_instance(self) -> None:
        """Fail (InstanceLagError) unless every load balancer of a fleet has taken every change."""
        await self.router.check_every_instance()

    async def ensure_backends(self) -> None:
        """Make sure the service's backend (and its A/B backend) exist."""
        await self.router.ensure_backend(self.backend)
        if self.ab:
            await self.router.ensure_backend(self.canary_backend)

    async def reconcile(self, roster: Roster) -> None:
        """Make HAProxy's servers match the instances: add the missing, remove the stale."""
        wanted = {self.backend: [*roster.stable, *roster.baseline, *([] if self.ab else roster.canary)]}
        if self.ab:
            wanted[self.canary_backend] = list(roster.canary)
        for backend, instances in wanted.items():
            present = {state.server for state in await self.router.server_states(backend)}
            for instance in instances:
                if instance.server not in present:
                    await self.router.add_server(backend, instance.server, instance.host, instance.port)
            names = {instance.server for instance in instances}
            for stale in sorted(present - names):
                await self.router.drain(backend, stale)
                await self.router.remove_server(backend, stale)

    async def add_rollout_servers(self, canary: Sequence[Instance], baseline: Sequence[Instance]) -> None:
        """Add a rollout's canary and fresh baseline servers (at weight 0), and wait until they are UP."""
        for instance in canary:
            await self.router.add_server(self.canary_backend, instance.server, instance.host, instance.port)
        for instance in baseline:
            await self.router.add_server(self.backend, instance.server, instance.host, instance.port)
        await self.wait_servers_up(canary, self.canary_backend)
        await self.wait_servers_up(baseline, self.backend)

    async def set_canary_percent(
        self, canary_percent: int, roster: Roster, *, only_servers_in_haproxy: bool = False
    ) -> None:
        """Give the canary `canary_percent` of the traffic (a fresh baseline gets as much), verified.

        `only_servers_in_haproxy` leaves out canary and baseline servers HAProxy does not hold: a rollout
        stopped between starting its instances and adding them has servers that get no traffic already,
        and "No such server" would otherwise be retried for ever.
        """
        stable = [instance.server for instance in roster.stable]
        baseline = [instance.server for instance in roster.baseline]
        canary = [instance.server for instance in roster.canary]
        if only_servers_in_haproxy:
            held = {
                state.server
                for backend in sorted({self.backend, self.canary_backend})
                for state in await self.router.server_states(backend)
            }
            baseline = [server for server in baseline if server in held]
            canary = [server for server in canary if server in held]
        if self.ab:
            in_main = {s.server for s in await self.router.server_states(self.backend)}
            canary_in_main = [server for server in canary if server in in_main]
            if canary and not canary_in_main:
                # A/B: the canary gets every matched request, or none; the main backend keeps stable.
                await self.router.set_shares(self.canary_backend, all_or_nothing(canary_percent > 0, canary))
                await self.router.set_shares(self.backend, version_shares(0, stable, [], []))
                return
            canary = canary_in_main
        await self.router.set_shares(self.backend, version_shares(canary_percent, stable, baseline, canary))

    async def move_canary_to_main_backend(self, roster: Roster) -> None:
        """A/B promotion: the canary's servers join the main backend, take it all, then leave the A/B one."""
        present = {s.server for s in await self.router.server_states(self.backend)}
        for instance in roster.canary:
            if instance.server not in present:
                await self.router.add_server(self.backend, instance.server, instance.host, instance.port)
        await self.wait_servers_up(roster.canary, self.backend)
        await self.set_canary_percent(100, roster)
        in_ab = {s.server for s in await self.router.server_states(self.canary_backend)}
        for instance in roster.canary:
            if instance.server in in_ab:
                await self.router.drain(self.canary_backend, instance.server)
                await self.router.remove_server(self.canary_backend, instance.server)

    async def take_out(self, instances: Sequence[Instance]) -> None:
        """Drain `instances`' servers, then delete them from HAProxy: no request is cut in flight."""
        for backend in sorted({self.backend, self.canary_backend}):
            existing = {state.server for state in await self.router.server_states(backend)}
            mine = [instance.server for instance in instances if instance.server in existing]
            for server in mine:
                await self.router.drain(backend, server)
            for server in mine:
                await self.router.remove_server(backend, server)

    async def wait_servers_up(self, instances: Sequence[Instance], backend: str) -> None:
        """Wait until HAProxy reports every server of `instances` in `backend` UP; else RolloutError."""
        names = {instance.server for instance in instances}
        deadline = time.monotonic() + SERVERS_UP_TIMEOUT_S
        while names:
            states = {s.server: s.status for s in await self.router.server_states(backend)}
            if all(states.get(name) is ServerStatus.UP for name in names):
                return
            if time.monotonic() > deadline:
                not_up = sorted(name for name in names if states.get(name) is not ServerStatus.UP)
                raise RolloutError(f"servers not UP in HAProxy after {SERVERS_UP_TIMEOUT_S:.0f} s: {not_up}")
            await asyncio.sleep(0.2)

    async def servers_down(self, canary: Sequence[Instance]) -> list[str]:
        """The canary's servers that HAProxy's health checks hold DOWN."""
        names = {instance.server for instance in canary}
        states = await self.router.server_states(self.canary_backend)
        return [s.server for s in states if s.server in names and s.status is ServerStatus.DOWN]

    async def servers_held(self, backend: str) -> set[str]:
        """The names of the servers HAProxy holds in `backend`."""
        return {state.server for state in await self.router.server_states(backend)}

    async def drain_server(self, backend: str, server: str) -> None:
        """Send no new request to `server` (its instance stopped; the platform is replacing it)."""
        await self.router.drain(backend, server)

    async def replace_server(self, backend: str, old: Instance, new: Instance, held: set[str]) -> None:
        """The platform replaced `old` by `new` (same server name, new address): swap the HAProxy server.
        It joins with no traffic; the caller gives it its share again."""
        if old.server in held:
            await self.router.remove_server(backend, old.server)
        await self.router.add_server(backend, new.server, new.host, new.port)

    async def weights(self) -> dict[str, int]:
        """Each server's weight in the service's backend, as HAProxy has it now."""
        return {state.server: state.weight for state in await self.router.server_states(self.backend)}

"""A fleet of HAProxy instances behind one Router: every change goes to every instance.

`FleetRouter` keeps what the fleet is meant to hold (`Desired`: our servers per backend, the drained
ones, each backend's shares) and applies every change to every instance at once, each retried a few
times. An instance that still fails *lags*: the others keep the change, the fleet records why, and
its reconciler brings the instance back to the desired state as soon as it answers again (servers
added, drained or removed, shares set, read back). Only `set_shares` raises for a lagging instance
(InstanceLagError, naming it), so a rollout does not move traffic forward while one instance would
be left behind; a rollback's weight 0, drains and removals never wait for one.

The reconciler also checks instances that are in sync: one that was reloaded with a file that lacks
our servers, or restarted empty, is found missing them and restored. The desired state and what each
instance last acknowledged are kept in a JSON file, so a restarted `fm up` reconciles every instance.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from fridaymorning.errors import InstanceLagError, RouterError
from fridaymorning.models import ServerState, ServerStatus
from fridaymorning.router._weights import weights_for_shares
from fridaymorning.router.base import ServerSpec, Share
from fridaymorning.router.haproxy import HAProxyRouter, UnreachableError, write_atomically

log = logging.getLogger(__name__)

T = TypeVar("T")

# Attempts of one change on one instance before it counts as lagging, and the pause between them.
ATTEMPTS = 3
RETRY_PAUSE_S = 0.2
# How often the reconciler looks at the fleet (lagging instances are retried each time).
RECONCILE_INTERVAL_S = 1.0
# How long a reconciled instance may take to report the servers it was given UP.
SERVERS_UP_TIMEOUT_S = 15.0

# Worst first: the merged status of a server is the worst any in-sync instance reports.
STATUS_ORDER = (
    ServerStatus.DOWN,
    ServerStatus.MAINT,
    ServerStatus.DRAIN,
    ServerStatus.NOLB,
    ServerStatus.UNKNOWN,
    ServerStatus.UP,
)


@dataclass
class Member:
    """One HAProxy instance of the fleet and what the fleet knows of it."""

    name: str
    router: HAProxyRouter
    managed: bool = False
    lag_reason: str | None = None  # why it lags; None while it holds the desired state
    lagging_since: float | None = None
    last_sync: float | None = None
    told: dict[str, dict[str, int]] = field(default_factory=dict)  # backend → arm → percent acknowledged

    @property
    def in_sync(self) -> bool:
        return self.lag_reason is None

    def status(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "admin": str(self.router.socket_path),
            "managed": self.managed,
            "state": "in_sync" if self.in_sync else "lagging",
            "reason": self.lag_reason,
            "lagging_since": self.lagging_since,
            "last_sync": self.last_sync,
            "told": self.told,
        }


@dataclass
class Desired:
    """What every instance should hold: our servers, the drained ones, and each backend's shares."""

    servers: dict[str, dict[str, tuple[str, int]]] = field(default_factory=dict)
    drained: set[tuple[str, str]] = field(default_factory=set)
    shares: dict[str, dict[str, Share]] = field(default_factory=dict)

    def remove(self, backend: str, server: str) -> None:
        """Forget a server, and take it out of its backend's shares (dropping shares it would break)."""
        self.servers.get(backend, {}).pop(server, None)
        self.drained.discard((backend, server))
        shares = self.shares.get(backend)
        if shares is None:
            return
        pruned = {
            arm: Share(s.percent, tuple(n for n in s.servers if n != server)) for arm, s in shares.items()
        }
        if any(share.percent > 0 and not share.servers for share in pruned.values()):
            del self.shares[backend]
        else:
            self.shares[backend] = pruned

    def weights(self, backend: str) -> dict[str, int]:
        """The weight each server of `backend` should have under the desired shares."""
        shares = self.shares.get(backend)
        return weights_for_shares(shares) if shares else {}

    def to_dict(self) -> dict[str, Any]:
        return {
            "servers": {b: {s: list(a) for s, a in servers.items()} for b, servers in self.servers.items()},
            "drained": sorted(list(pair) for pair in self.drained),
            "shares": {
                b: {arm: [s.percent, list(s.servers)] for arm, s in shares.items()}
                for b, shares in self.shares.items()
            },
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Desired:
        return cls(
            servers={
                b: {s: (str(a[0]), int(a[1])) for s, a in servers.items()}
                for b, servers in data.get("servers", {}).items()
            },
            drained={(str(b), str(s)) for b, s in data.get("drained", [])},
            shares={
                b: {arm: Share(int(p), tuple(names)) for arm, (p, names) in shares.items()}
                for b, shares in data.get("shares", {}).items()
            },
        )


def differences(desired: Desired, actual: Mapping[str, Sequence[ServerSpec]], owned: set[str]) -> list[str]:
    """What an instance's servers (`show servers state`) lack, or weigh wrongly, of the desired ones;
    and the servers it has that are not ours, in the backends we `owned` whole."""
    problems = []
    for backend in sorted(desired.servers):
        wanted = desired.servers[backend]
        present = {spec.name: spec for spec in actual.get(backend, ())}
        missing = sorted(set(wanted) - set(present))
        extra = sorted(set(present) - set(wanted)) if backend in owned else []
        if missing:
            problems.append(f"{backend}: servers missing: {', '.join(missing)}")
        if extra:
            problems.append(f"{backend}: servers not ours: {', '.join(extra)}")
        for server, weight in desired.weights(backend).items():
            spec = present.get(server)
            if spec is not None and spec.weight != weight:
                problems.append(f"{backend}/{server}: weight {spec.weight}, should be {weight}")
    return problems


def merge_states(per_member: Sequence[list[ServerState]]) -> list[ServerState]:
    """One view of a backend's servers over several instances: every server any of them has, its
    worst status, the first one's weight and address, and requests and sessions summed."""
    merged: dict[str, ServerState] = {}
    for states in per_member:
        for state in states:
            seen = merged.get(state.server)
            if seen is None:
                merged[state.server] = state
                continue
            worst = min(seen.status, state.status, key=STATUS_ORDER.index)
            merged[state.server] = ServerState(
                backend=seen.backend,
                server=seen.server,
                status=worst,
                weight=seen.weight,
                total_requests=seen.total_requests + state.total_requests,
                current_sessions=seen.current_sessions + state.current_sessions,
                address=seen.address,
            )
    return list(merged.values())


class FleetRouter:
    """The Router role over several HAProxy instances (see the module's docstring)."""

    def __init__(
        self,
        members: Sequence[Member],
        *,
        state_path: str | Path | None = None,
        owned_backends: set[str] | None = None,
        attempts: int = ATTEMPTS,
        retry_pause_s: float = RETRY_PAUSE_S,
        reconcile_interval_s: float = RECONCILE_INTERVAL_S,
        servers_up_timeout_s: float = SERVERS_UP_TIMEOUT_S,
        clock: Callable[[], float] = time.time,
        on_change: Callable[[], Awaitable[object]] | None = None,
    ) -> None:
        if not members:
            raise RouterError("a fleet needs at least one HAProxy instance")
        self.members = list(members)
        self.state_path = Path(state_path) if state_path is not None else None
        self.attempts = attempts
        self.retry_pause_s = retry_pause_s
        self.reconcile_interval_s = reconcile_interval_s
        self.servers_up_timeout_s = servers_up_timeout_s
        self.clock = clock
        # Awaited after every change (the runtime rewrites the include file there); never raises.
        self.on_change = on_change
        self.desired = Desired()
        # Backends whose every server is ours: a server we did not add is removed from them.
        self.owned_backends = set(owned_backends or ())
        self.changes_lock = asyncio.Lock()
        self._reconciler: asyncio.Task[None] | None = None
        self.load_state()

    # -- persistence -------------------------------------------------------------------------------

    def load_state(self) -> None:
        """The desired state and what each instance acknowledged, as the last run left them."""
        if self.state_path is None or not self.state_path.exists():
            return
        try:
            data = json.loads(self.state_path.read_text(encoding="utf-8"))
            self.desired = Desired.from_dict(data.get("desired", {}))
        except (OSError, ValueError, TypeError, KeyError) as error:
            log.warning("ignoring the fleet state in %s: %s", self.state_path, error)
            return
        for member in self.members:
            told = data.get("members", {}).get(member.name, {}).get("told")
            if isinstance(told, dict):
                member.told = told

    def save_state(self) -> None:
        if self.state_path is None:
            return
        data = {"desired": self.desired.to_dict(), "members": {m.name: m.status() for m in self.members}}
        try:
            write_atomically(self.state_path, json.dumps(data, indent=1, sort_keys=True))
        except OSError as error:
            log.error("cannot write the fleet state %s: %s", self.state_path, error)

    # -- applying a change everywhere -------------------------------------------------------------

    def lagging(self) -> list[Member]:
        return [member for member in self.members if not member.in_sync]

    def mark_lagging(self, member: Member, reason: str) -> None:
        if member.in_sync:
            log.warning("HAProxy instance %s lags: %s", member.name, reason)
            member.lagging_since = self.clock()
        member.lag_reason = reason

    def mark_in_sync(self, member: Member) -> None:
        if not member.in_sync:
            log.info("HAProxy instance %s holds the fleet's state again", member.name)
        member.lag_reason = None
        member.lagging_since = None
        member.last_sync = self.clock()

    async def attempt(self, member: Member, action: Callable[[HAProxyRouter], Awaitable[T]]) -> T:
        """`action` on one instance, tried up to `attempts` times; the last RouterError is raised."""
        for attempt in range(1, self.attempts + 1):
            try:
                return await action(member.router)
            except RouterError:
                if attempt == self.attempts:
                    raise
            await asyncio.sleep(self.retry_pause_s * attempt)
        raise AssertionError("unreachable")

    async def everywhere(self, action: Callable[[HAProxyRouter], Awaitable[object]]) -> list[Member]:
        """Run `action` on every in-sync instance and reconcile the lagging ones; the instances that
        lag afterwards. Call it after updating `desired`, so a reconciled instance gets the change too."""

        async def one(member: Member) -> None:
            if not member.in_sync:
                await self.reconcile_member(member)
                return
            try:
                await self.attempt(member, action)
            except RouterError as error:
                self.mark_lagging(member, str(error))
                await self.reconcile_member(member)

        await asyncio.gather(*(one(member) for member in self.members))
        self.save_state()
        await self.record_change()
        return self.lagging()

    async def record_change(self) -> None:
        if self.on_change is None:
            return
        try:
            await self.on_change()
        except Exception:  # the change is done on the instances; the next one writes again
            log.exception("after a change of the fleet's servers")

    # -- the Router protocol ----------------------------------------------------------------------

    async def ensure_backend(self, backend: str) -> None:
        """Every instance that answers must have `backend`; one that does not answer lags."""
        answered = 0
        for member in self.members:
            try:
                await self.attempt(member, lambda router: router.ensure_backend(backend))
            except UnreachableError as error:
                self.mark_lagging(member, str(error))
                continue
            except RouterError as error:
                raise RouterError(f"HAProxy instance {member.name}: {error}") from error
            answered += 1
            if backend not in self.desired.servers:  # first sight: what it holds is the starting point
                servers = (await member.router.current_servers()).get(backend, [])
                self.desired.servers[backend] = {spec.name: (spec.address, spec.port) for spec in servers}
        if answered == 0:
            names = ", ".join(member.name for member in self.members)
            raise RouterError(f"no HAProxy instance of the fleet answers ({names})")
        self.owned_backends.add(backend)
        self.save_state()

    async def add_server(self, backend: str, server: str, address: str, port: int) -> None:
        async with self.changes_lock:
            self.desired.servers.setdefault(backend, {})[server] = (address, port)

            async def add(router: HAProxyRouter) -> None:
                if server not in {state.server for state in await router.server_states(backend)}:
                    await router.add_server(backend, server, address, port)

            await self.everywhere(add)

    async def set_shares(self, backend: str, shares: Mapping[str, Share]) -> None:
        """Set the shares on every instance; InstanceLagError naming those that did not take them."""
        weights_for_shares(shares)  # a ValueError for shares that cannot be honoured, before anything
        async with self.changes_lock:
            self.desired.shares[backend] = dict(shares)
            percents = {arm: share.percent for arm, share in shares.items()}

            async def set_and_note(router: HAProxyRouter) -> None:
                await router.set_shares(backend, shares)

            lagging = await self.everywhere(set_and_note)
            for member in self.members:
                if member.in_sync:
                    member.told[backend] = percents
            self.save_state()
        if lagging:
            took = len(self.members) - len(lagging)
            detail = "; ".join(f"{m.name}: {m.lag_reason}" for m in lagging)
            raise InstanceLagError(
                f"{', '.join(m.name for m in lagging)} lag ({took} of {len(self.members)} instances took "
                f"{percents} on {backend}): {detail}",
                tuple(m.name for m in lagging),
            )

    async def drain(self, backend: str, server: str) -> None:
        async with self.changes_lock:
            self.desired.drained.add((backend, server))
            await self.everywhere(lambda router: router.drain(backend, server))

    async def remove_server(self, backend: str, server: str) -> None:
        async with self.changes_lock:
            self.desired.remove(backend, server)

            async def remove(router: HAProxyRouter) -> None:
                if server in {state.server for state in await router.server_states(backend)}:
                    await router.remove_server(backend, server)

            await self.everywhere(remove)

    async def server_states(self, backend: str) -> list[ServerState]:
        """The backend's servers over the in-sync instances (see merge_states); a lagging instance is
        left out, so one still being restored does not report a new server DOWN."""
        answers: list[list[ServerState]] = []
        for member in [m for m in self.members if m.in_sync] or self.members:
            try:
                answers.append(await member.router.server_states(backend))
            except UnreachableError as error:
                self.mark_lagging(member, str(error))
        if not answers:
            raise RouterError(f"no HAProxy instance of the fleet answers for backend {backend!r}")
        return merge_states(answers)

    async def check_every_instance(self) -> None:
        """InstanceLagError unless every instance holds the desired state (tried once more now)."""
        async with self.changes_lock:
            for member in self.lagging():
                await self.reconcile_member(member)
            self.save_state()
            lagging = self.lagging()
        if lagging:
            detail = "; ".join(f"{m.name}: {m.lag_reason}" for m in lagging)
            raise InstanceLagError(
                f"{', '.join(m.name for m in lagging)} lag: {detail}", tuple(m.name for m in lagging)
            )

    # -- more than the protocol ------------------------------------------------------------------

    async def current_servers(self) -> dict[str, list[ServerSpec]]:
        """The servers of the first in-sync instance that answers (what an include file must list)."""
        for member in [m for m in self.members if m.in_sync] or self.members:
            with contextlib.suppress(UnreachableError):
                return await member.router.current_servers()
        raise RouterError("no HAProxy instance of the fleet answers")

    async def reconcile_member(self, member: Member) -> bool:
        """Bring one instance to the desired state; True when it holds it (and is then in sync)."""
        try:
            added = await self.restore(member)
            await self.wait_up(member, added)
        except RouterError as error:
            self.mark_lagging(member, str(error))
            return False
        for backend, shares in self.desired.shares.items():
            member.told[backend] = {arm: share.percent for arm, share in shares.items()}
        self.mark_in_sync(member)
        return True

    async def restore(self, member: Member) -> dict[str, list[str]]:
        """Add our missing servers, remove those not ours, drain, set the shares; the servers added."""
        router = member.router
        actual = await router.current_servers()
        added: dict[str, list[str]] = {}
        for backend, wanted in self.desired.servers.items():
            present = {spec.name for spec in actual.get(backend, ())}
            for server, (address, port) in sorted(wanted.items()):
                if server not in present:
                    await router.add_server(backend, server, address, port)
                    added.setdefault(backend, []).append(server)
            if backend in self.owned_backends:
                for server in sorted(present - set(wanted)):
                    await router.drain(backend, server)
                    await router.remove_server(backend, server)
        for backend, server in sorted(self.desired.drained):
            if server in self.desired.servers.get(backend, {}):
                await router.drain(backend, server)
        for backend, shares in self.desired.shares.items():
            await router.set_shares(backend, shares)
        return added

    async def wait_up(self, member: Member, added: Mapping[str, Sequence[str]]) -> None:
        """Wait (bounded) until the servers just added to `member` pass their health checks, so that a
        returning instance does not report them DOWN to the controller; after that, DOWN means down."""
        deadline = time.monotonic() + self.servers_up_timeout_s
        for backend, servers in added.items():
            while time.monotonic() < deadline:
                states = {s.server: s.status for s in await member.router.server_states(backend)}
                if all(states.get(server) is ServerStatus.UP for server in servers):
                    break
                await asyncio.sleep(0.1)

    async def check_member(self, member: Member) -> None:
        """Reconcile a lagging instance; verify an in-sync one still holds our servers and weights."""
        if member.in_sync:
            try:
                actual = await member.router.current_servers()
            except RouterError as error:
                self.mark_lagging(member, str(error))
                return
            problems = differences(self.desired, actual, self.owned_backends)
            if not problems:
                return
            self.mark_lagging(member, "; ".join(problems))
        await self.reconcile_member(member)

    async def reconcile_once(self) -> None:
        async with self.changes_lock:
            before = [member.in_sync for member in self.members]
            await asyncio.gather(*(self.check_member(member) for member in self.members))
            self.save_state()
            if before != [member.in_sync for member in self.members]:
                await self.record_change()

    def start_reconciling(self) -> None:
        """Check every instance every `reconcile_interval_s` seconds, until stop_reconciling()."""
        if self._reconciler is None:
            self._reconciler = asyncio.create_task(self._reconcile_forever(), name="fleet-reconciler")

    async def stop_reconciling(self) -> None:
        if self._reconciler is not None:
            self._reconciler.cancel()
            await asyncio.gather(self._reconciler, return_exceptions=True)
            self._reconciler = None

    async def _reconcile_forever(self) -> None:
        while True:
            await asyncio.sleep(self.reconcile_interval_s)
            try:
                await self.reconcile_once()
            except Exception:  # the loop must outlive any one failure; it is retried next interval
                log.exception("reconciling the HAProxy fleet")

    def status(self) -> list[dict[str, Any]]:
        """Every instance: in sync or lagging (and why, since when), and the shares it acknowledged."""
        return [member.status() for member in self.members]

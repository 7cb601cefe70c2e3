"""HAProxyRouter against testing.FakeHAProxyAdmin, an admin socket that keeps servers like HAProxy does:
the router's commands change that state, and HAProxy's refusals reach the caller as RouterErrors."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from fridaymorning.errors import RouterError
from fridaymorning.models import ServerStatus
from fridaymorning.router import HAProxyRouter, ServerSpec
from fridaymorning.testing import FakeHAProxyAdmin, wait_for


@pytest.fixture
def admin(tmp_path: Path) -> Iterator[FakeHAProxyAdmin]:
    """A fake HAProxy with backend `web` (roundrobin, one static server v1-1) and `legacy` (static-rr)."""
    with FakeHAProxyAdmin(tmp_path / "admin.sock", {"web": "roundrobin", "legacy": "static-rr"}) as fake:
        fake.add_static_server("web", "v1-1", "127.0.0.1", 9001, weight=200)
        yield fake


def router_for(admin: FakeHAProxyAdmin) -> HAProxyRouter:
    return HAProxyRouter(admin.path, check_interval_ms=500, timeout_s=5.0, drain_timeout_s=30.0)


async def test_an_added_server_is_health_checked_enabled_and_listed(admin: FakeHAProxyAdmin) -> None:
    """add_server leaves the server in HAProxy, out of maintenance, with its health checks on, and the
    router reads it back from `show stat` and `show servers state`."""
    router = router_for(admin)
    await router.add_server("web", "v2-1", "127.0.0.1", 9002, weight=5)
    added = admin.server("web", "v2-1")
    assert (added.admin, added.health_enabled, added.weight) == ("ready", True, 5)
    assert {state.server: state.status for state in await router.server_states("web")} == {
        "v1-1": ServerStatus.UP,
        "v2-1": ServerStatus.UP,
    }
    assert await router.get_weights("web") == {"v1-1": 200, "v2-1": 5}
    assert await router.current_servers() == {
        "web": [
            ServerSpec("web", "v1-1", "127.0.0.1", 9001, 200),
            ServerSpec("web", "v2-1", "127.0.0.1", 9002, 5),
        ]
    }


async def test_failing_health_checks_and_a_drain_show_in_the_states(admin: FakeHAProxyAdmin) -> None:
    """A server whose checks fail is DOWN; a drained one is DRAIN, and keeps its weight."""
    router = router_for(admin)
    await router.add_server("web", "v2-1", "127.0.0.1", 9002, weight=5)
    admin.server("web", "v2-1").healthy = False
    await router.drain("web", "v1-1")
    states = {state.server: state for state in await router.server_states("web")}
    assert states["v2-1"].status is ServerStatus.DOWN
    assert (states["v1-1"].status, states["v1-1"].weight) == (ServerStatus.DRAIN, 200)


async def test_remove_server_deletes_only_once_its_sessions_end(admin: FakeHAProxyAdmin) -> None:
    """remove_server puts the server in maintenance, waits while it has sessions, then deletes it."""
    router = router_for(admin)
    admin.server("web", "v1-1").sessions = 2
    removal = asyncio.create_task(router.remove_server("web", "v1-1"))
    await wait_for(lambda: admin.commands.count("show stat") >= 2, "the router to poll the sessions")
    assert admin.server("web", "v1-1").admin == "maint"
    assert "v1-1" in admin.backends["web"]
    admin.server("web", "v1-1").sessions = 0
    await asyncio.wait_for(removal, 30)
    assert admin.backends["web"] == {}
    assert admin.commands[-1] == "del server web/v1-1"


@pytest.mark.parametrize(
    ("act", "refusal"),
    [
        (lambda router: router.drain("web", "v9-1"), "No such server."),
        (lambda router: router.remove_server("web", "v9-1"), "No such server."),
        (lambda router: router.drain("shop", "v1-1"), "No such backend."),
        (lambda router: router.add_server("web", "v1-1", "127.0.0.1", 9001), "Already exists a server"),
        (lambda router: router.add_server("legacy", "v2-1", "127.0.0.1", 9002), "dynamic load balancing"),
    ],
    ids=["drain unknown server", "remove unknown server", "unknown backend", "duplicate", "static backend"],
)
async def test_haproxys_refusals_are_router_errors_quoting_it(
    admin: FakeHAProxyAdmin, act: Callable[[HAProxyRouter], Awaitable[None]], refusal: str
) -> None:
    """What HAProxy refuses (an unknown server or backend, a duplicate, a static backend) raises a
    RouterError that quotes HAProxy's answer, and leaves the servers as they were."""
    before = {backend: list(servers) for backend, servers in admin.backends.items()}
    with pytest.raises(RouterError, match=refusal):
        await act(router_for(admin))
    assert {backend: list(servers) for backend, servers in admin.backends.items()} == before


async def test_backends_are_checked_against_what_haproxy_has(admin: FakeHAProxyAdmin) -> None:
    """ensure_backend accepts a dynamic backend, and refuses a static one or one HAProxy does not have."""
    router = router_for(admin)
    await router.ensure_backend("web")
    with pytest.raises(RouterError, match="static-rr"):
        await router.ensure_backend("legacy")
    with pytest.raises(RouterError, match="has no backend 'shop'"):
        await router.ensure_backend("shop")


async def test_a_socket_without_admin_level_is_refused_loudly(admin: FakeHAProxyAdmin) -> None:
    """On a socket below `level admin`, HAProxy answers 'Permission denied': add_server raises a RouterError
    quoting it, and the server is not added."""
    admin.answers["add server"] = "Permission denied\n\n"
    with pytest.raises(RouterError, match="Permission denied"):
        await router_for(admin).add_server("web", "v2-1", "127.0.0.1", 9002)
    assert list(admin.backends["web"]) == ["v1-1"]

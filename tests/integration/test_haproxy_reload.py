"""Reloads, adoption, A/B routing and affinity against a real HAProxy 2.6 on loopback.

The runtime's flow is reproduced here: render haproxy.cfg, start (or adopt) HAProxy, change servers
through the router (which dumps the server state and re-renders the config after each change), reload.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest

from fridaymorning.config import Config
from fridaymorning.errors import RouterError
from fridaymorning.models import ServerStatus
from fridaymorning.procfs import parent_pid, process_alive
from fridaymorning.router import (
    HAProxyProcess,
    HAProxyRouter,
    Share,
    StopTimeouts,
    affinity_backends,
    render_haproxy_config,
    write_live_config,
)
from fridaymorning.testing import EVENT_DEADLINE_S, router_config, wrk_failures, wrk_load, wrk_report

pytestmark = [pytest.mark.haproxy, pytest.mark.timeout(600)]

COLLECTOR = ("127.0.0.1", 9)  # the discard port: nobody reads the logs here
# A test's HAProxy has no client worth waiting 12 s for.
FAST_STOP = StopTimeouts(graceful_s=3.0)
LOAD_SECONDS = 4

Upstreams = Callable[[list[str]], Awaitable[list[int]]]


@dataclass
class Deployment:
    config: Config
    config_path: Path
    process: HAProxyProcess
    router: HAProxyRouter
    frontend_port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.frontend_port}/"

    @property
    def state_file(self) -> Path:
        return self.config.runtime_path(self.config.haproxy.state_file)


def router_for(config: Config, config_path: Path) -> HAProxyRouter:
    """The router as the runtime builds it: state file, affinity backends, and a config re-render
    after every change."""
    router = HAProxyRouter(
        config.runtime_path(config.haproxy.admin_socket),
        check_interval_ms=config.haproxy.health_check_interval_ms,
        state_file=config.runtime_path(config.haproxy.state_file),
        affinity_backends=affinity_backends(config),
    )
    router.on_change = partial(write_live_config, config_path, config, COLLECTOR, router)
    return router


@pytest.fixture
async def deploy(
    haproxy_binary: str,
    tmp_path: Path,
    free_port: Callable[[], int],
    processes_using: Callable[[Path], list[int]],
) -> AsyncIterator[Callable[..., Awaitable[Deployment]]]:
    """A factory: `await deploy(**rollout)` renders a config, starts HAProxy and builds its router.

    Every HAProxy started is stopped at teardown, and whatever still runs with its config is killed.
    """
    started: list[Deployment] = []

    async def start(**rollout: Any) -> Deployment:
        frontend_port = free_port()
        config = router_config(tmp_path, frontend_port, **rollout)
        config_path = config.state_path("haproxy.cfg")
        config_path.write_text(render_haproxy_config(config, COLLECTOR), encoding="utf-8")
        process = HAProxyProcess(config_path, binary=haproxy_binary, stop_timeouts=FAST_STOP)
        await process.start()
        deployment = Deployment(config, config_path, process, router_for(config, config_path), frontend_port)
        started.append(deployment)
        return deployment

    try:
        yield start
    finally:
        for deployment in started:
            await deployment.process.stop()
            kill_all(processes_using(deployment.config_path))


def kill_all(pids: list[int]) -> None:
    """SIGKILL each of `pids` (processes this test started, found by their unique config path)."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


async def wait_until_up(router: HAProxyRouter, backend: str, servers: list[str]) -> None:
    """Wait (at most EVENT_DEADLINE_S) until each of `servers` of `backend` passes its health check."""
    async with asyncio.timeout(EVENT_DEADLINE_S):
        while True:
            states = {state.server: state.status for state in await router.server_states(backend)}
            if all(states.get(server) == ServerStatus.UP for server in servers):
                return
            await asyncio.sleep(0.05)


async def wait_for_new_worker(process: HAProxyProcess, old_worker: int) -> int:
    """Wait (at most EVENT_DEADLINE_S) until another worker than `old_worker` answers on the admin socket."""
    async with asyncio.timeout(EVENT_DEADLINE_S):
        while True:
            try:
                worker = await process.worker_pid()
            except RouterError:
                worker = old_worker
            if worker != old_worker:
                return worker
            await asyncio.sleep(0.05)


# --------------------------------------------------------------------------------------------------
# Reloads
# --------------------------------------------------------------------------------------------------


async def test_reload_keeps_servers_and_weights_without_failed_requests(
    deploy: Callable[..., Awaitable[Deployment]], labelled_upstreams: Upstreams, wrk_binary: str
) -> None:
    """Two dynamic servers at 180/20, the config re-rendered from current_servers(), then reload():
    a new worker serves the same servers at the same weights, and requests during it all succeed."""
    web = await deploy()
    stable_port, canary_port = await labelled_upstreams(["stable", "canary"])
    await web.router.add_server("web", "v1-1", "127.0.0.1", stable_port, weight=180)
    await web.router.add_server("web", "v2-1", "127.0.0.1", canary_port, weight=20)
    await wait_until_up(web.router, "web", ["v1-1", "v2-1"])
    async with wrk_load(wrk_binary, web.url, LOAD_SECONDS) as load:
        await asyncio.sleep(1)

        text = await write_live_config(web.config_path, web.config, COLLECTOR, web.router)
        assert f"server v1-1 127.0.0.1:{stable_port} weight 180 check" in text
        assert f"server v2-1 127.0.0.1:{canary_port} weight 20 check" in text
        old_worker = await web.process.worker_pid()
        await web.process.reload()

        assert await web.process.worker_pid() != old_worker
        assert await web.router.get_weights("web") == {"v1-1": 180, "v2-1": 20}
        output = await wrk_report(load, LOAD_SECONDS + EVENT_DEADLINE_S)
    assert wrk_failures(output) == [], output
    states = {state.server: state for state in await web.router.server_states("web")}
    assert {name: state.status for name, state in states.items()} == {
        "v1-1": ServerStatus.UP,
        "v2-1": ServerStatus.UP,
    }


async def test_external_reload_keeps_weights_and_drain(
    deploy: Callable[..., Awaitable[Deployment]], http_upstreams: Callable[[int], Awaitable[list[int]]]
) -> None:
    """An operator's SIGUSR2 to the master keeps servers, weights and a drain: each router change
    already dumped the server state and re-rendered haproxy.cfg, so nothing else is needed."""
    web = await deploy()
    ports = await http_upstreams(3)
    for name, port in zip(["v1-1", "v1-2", "v2-1"], ports, strict=True):
        await web.router.add_server("web", name, "127.0.0.1", port, weight=100 if name < "v2" else 0)
    weights = {"v1-1": 90, "v1-2": 90, "v2-1": 20}
    await web.router.set_shares(
        "web", {"stable": Share(90, ("v1-1", "v1-2")), "canary": Share(10, ("v2-1",))}
    )
    await web.router.drain("web", "v1-2")

    on_disk = web.config_path.read_text(encoding="utf-8")
    for name, port in zip(["v1-1", "v1-2", "v2-1"], ports, strict=True):
        assert f"server {name} 127.0.0.1:{port} weight {weights[name]} " in on_disk
    assert " v1-2 " in web.state_file.read_text(encoding="utf-8")
    assert web.router.record_error is None

    old_worker = await web.process.worker_pid()
    assert web.process.pid is not None
    os.kill(web.process.pid, signal.SIGUSR2)
    await wait_for_new_worker(web.process, old_worker)

    assert await web.router.get_weights("web") == weights
    states = {state.server: state.status for state in await web.router.server_states("web")}
    assert states["v1-2"] == ServerStatus.DRAIN  # only the state file carries a drain across a reload


async def test_reloads_right_after_start_and_back_to_back_keep_the_master(
    deploy: Callable[..., Awaitable[Deployment]], processes_using: Callable[[Path], list[int]]
) -> None:
    """reload() at once after start(), then twice more in a row: each gives a new worker under the
    same master. HAProxy 2.6's master loses a SIGUSR2, or dies of it, while it re-executes itself
    (after a start and after each reload); start() and reload() return only once it handles signals."""
    web = await deploy()
    master = web.process.pid
    workers = {await web.process.worker_pid()}
    for _ in range(3):
        await web.process.reload()
        workers.add(await web.process.worker_pid())
    assert len(workers) == 4
    assert web.process.pid == master and web.process.running
    await web.process.stop()
    assert processes_using(web.config_path) == []


async def test_reload_refuses_a_bad_config_and_keeps_serving(
    deploy: Callable[..., Awaitable[Deployment]], http_upstreams: Callable[[int], Awaitable[list[int]]]
) -> None:
    """reload() with an invalid config on disk raises RouterError and leaves the running worker alone."""
    web = await deploy()
    [port] = await http_upstreams(1)
    await web.router.add_server("web", "v1-1", "127.0.0.1", port, weight=50)
    old_worker = await web.process.worker_pid()
    with web.config_path.open("a", encoding="utf-8") as config_file:
        config_file.write("    no-such-keyword\n")
    with pytest.raises(RouterError, match="no-such-keyword"):
        await web.process.reload()
    assert await web.process.worker_pid() == old_worker
    assert await web.router.get_weights("web") == {"v1-1": 50}


async def test_reload_removes_nothing_and_static_servers_can_be_removed(
    deploy: Callable[..., Awaitable[Deployment]], http_upstreams: Callable[[int], Awaitable[list[int]]]
) -> None:
    """After a reload the servers are static `server` lines; remove_server still deletes one, and the
    re-rendered config no longer lists it."""
    web = await deploy()
    first, second = await http_upstreams(2)
    await web.router.add_server("web", "v1-1", "127.0.0.1", first, weight=10)
    await web.router.add_server("web", "v2-1", "127.0.0.1", second, weight=10)
    await web.process.reload()
    await web.router.remove_server("web", "v1-1")
    assert await web.router.get_weights("web") == {"v2-1": 10}
    assert "server v1-1 " not in web.config_path.read_text(encoding="utf-8")


# --------------------------------------------------------------------------------------------------
# Adoption
# --------------------------------------------------------------------------------------------------

START_AND_WAIT = """
import asyncio, sys
from fridaymorning.router import HAProxyProcess

async def main():
    process = HAProxyProcess(sys.argv[1], binary=sys.argv[2])
    await process.start()
    print(process.pid, flush=True)
    await asyncio.sleep(120)

asyncio.run(main())
"""


async def test_haproxy_survives_sigkill_of_its_parent_and_is_adopted(
    haproxy_binary: str,
    tmp_path: Path,
    free_port: Callable[[], int],
    http_upstreams: Callable[[int], Awaitable[list[int]]],
    processes_using: Callable[[Path], list[int]],
) -> None:
    """A SIGKILLed `fm` leaves HAProxy serving; a new HAProxyProcess adopts it (nothing started), the
    router and reload() work on it, and stop() ends it: no process with its config remains."""
    frontend_port = free_port()
    config = router_config(tmp_path, frontend_port)
    config_path = config.state_path("haproxy.cfg")
    config_path.write_text(render_haproxy_config(config, COLLECTOR), encoding="utf-8")
    parent = await asyncio.create_subprocess_exec(
        sys.executable, "-c", START_AND_WAIT, str(config_path), haproxy_binary, stdout=asyncio.subprocess.PIPE
    )
    try:
        assert parent.stdout is not None
        async with asyncio.timeout(EVENT_DEADLINE_S):
            master = int(await parent.stdout.readline())
        parent.kill()
        await parent.wait()
        # Its output file is gone too: HAProxy holds its own descriptor and does not care.
        config_path.with_suffix(".out").unlink()

        router = router_for(config, config_path)
        [port] = await http_upstreams(1)
        await router.add_server("web", "v1-1", "127.0.0.1", port, weight=30)
        await wait_until_up(router, "web", ["v1-1"])
        async with httpx.AsyncClient(timeout=2) as client:
            assert (await client.get(f"http://127.0.0.1:{frontend_port}/")).status_code == 200
        assert process_alive(master) and parent_pid(master) != parent.pid

        adopter = HAProxyProcess(config_path, binary=haproxy_binary, stop_timeouts=FAST_STOP)
        assert await adopter.adopt() is True
        assert (adopter.pid, adopter.adopted) == (master, True)
        old_worker = await adopter.worker_pid()
        await adopter.reload()
        assert await adopter.worker_pid() != old_worker
        assert await router.get_weights("web") == {"v1-1": 30}

        await adopter.stop()
        assert not adopter.running
        assert processes_using(config_path) == []
        assert not config.state_path("haproxy.pid").exists()
    finally:
        if parent.returncode is None:
            parent.kill()
            await parent.wait()
        kill_all(processes_using(config_path))


async def test_adopt_finds_nothing_and_cleans_stale_files(haproxy_binary: str, tmp_path: Path) -> None:
    """With a pidfile naming a process that is not our HAProxy and a dead socket, adopt() returns
    False and removes both, so the caller starts a fresh HAProxy."""
    config = router_config(tmp_path, 8080)
    config_path = config.state_path("haproxy.cfg")
    config_path.write_text(render_haproxy_config(config, COLLECTOR), encoding="utf-8")
    pidfile = config.state_path("haproxy.pid")
    pidfile.write_text(f"{os.getpid()}\n", encoding="ascii")
    socket_path = config.runtime_path(config.haproxy.admin_socket)
    with socket.socket(socket.AF_UNIX) as dead:
        dead.bind(str(socket_path))  # a socket file that nothing listens on, as a killed HAProxy leaves
    process = HAProxyProcess(config_path, binary=haproxy_binary)
    assert await process.adopt() is False
    assert not pidfile.exists()
    assert not socket_path.exists()
    assert not process.running


# --------------------------------------------------------------------------------------------------
# A/B routing and affinity
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ab", "matching", "other"),
    [
        ({"header": "X-Canary", "value": "yes"}, {"X-Canary": "yes"}, {"X-Canary": "no"}),
        ({"cookie": "beta", "value": "on"}, {"Cookie": "a=1; beta=on"}, {"Cookie": "beta=off"}),
    ],
    ids=["header", "cookie"],
)
async def test_ab_requests_reach_the_ab_backend(
    deploy: Callable[..., Awaitable[Deployment]],
    labelled_upstreams: Upstreams,
    ab: dict[str, str],
    matching: dict[str, str],
    other: dict[str, str],
) -> None:
    """With strategy 'ab', requests carrying the header (or cookie) value go to 'web__ab' (the
    canary), all others, including other values, to the default backend 'web'."""
    web = await deploy(strategy="ab", ab=ab)
    stable_port, canary_port = await labelled_upstreams(["stable", "canary"])
    await web.router.add_server("web", "v1-1", "127.0.0.1", stable_port, weight=100)
    await web.router.add_server("web__ab", "v2-1", "127.0.0.1", canary_port, weight=100)
    await wait_until_up(web.router, "web", ["v1-1"])
    await wait_until_up(web.router, "web__ab", ["v2-1"])
    async with httpx.AsyncClient(timeout=2) as client:
        for _ in range(5):
            assert (await client.get(web.url, headers=matching)).text == "canary"
            assert (await client.get(web.url)).text == "stable"
            assert (await client.get(web.url, headers=other)).text == "stable"


async def test_affinity_cookie_keeps_a_client_on_one_server_across_a_reload(
    deploy: Callable[..., Awaitable[Deployment]], labelled_upstreams: Upstreams
) -> None:
    """With affinity and weights 50/50, new clients are spread over both servers, but a client with
    the cookie HAProxy gave it stays on one server for 20 requests, and still after a reload."""
    web = await deploy(affinity={"cookie": "FMSERVER"})
    ports = await labelled_upstreams(["stable", "canary"])
    await web.router.add_server("web", "v1-1", "127.0.0.1", ports[0], weight=0)
    await web.router.add_server("web", "v2-1", "127.0.0.1", ports[1], weight=0)
    await web.router.set_shares("web", {"stable": Share(50, ("v1-1",)), "canary": Share(50, ("v2-1",))})
    await wait_until_up(web.router, "web", ["v1-1", "v2-1"])
    async with httpx.AsyncClient(timeout=2) as newcomer:
        spread = set()
        for _ in range(10):
            newcomer.cookies.clear()
            response = await newcomer.get(web.url)
            assert "FMSERVER" in response.cookies
            spread.add(response.text)
        assert spread == {"stable", "canary"}

    async with httpx.AsyncClient(timeout=2) as client:
        first = (await client.get(web.url)).text
        assert [(await client.get(web.url)).text for _ in range(20)] == [first] * 20
        await web.process.reload()
        assert [(await client.get(web.url)).text for _ in range(20)] == [first] * 20

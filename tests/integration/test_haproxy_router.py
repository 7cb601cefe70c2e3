"""The HAProxy router against a real HAProxy 2.6 on loopback: rendering, process control, runtime API."""

from __future__ import annotations

import asyncio
import signal
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from fridaymorning.config import Config
from fridaymorning.errors import MissingBinaryError, PortInUseError, RouterError
from fridaymorning.models import ServerStatus
from fridaymorning.router import (
    HAProxyProcess,
    HAProxyRouter,
    Share,
    StopTimeouts,
    render_haproxy_config,
)
from fridaymorning.testing import (
    EVENT_DEADLINE_S,
    router_config,
    wait_for,
    wrk_failures,
    wrk_load,
    wrk_report,
)

if TYPE_CHECKING:
    from tests.integration.conftest import Upstreams

pytestmark = [pytest.mark.haproxy, pytest.mark.timeout(600)]

LOAD_SECONDS = 300


def write_config(config: Config, directory: Path) -> Path:
    """Render `config` into directory/haproxy.cfg, with logs sent to the discard port (nobody reads them)."""
    config.state_path().mkdir(parents=True, exist_ok=True)
    path = directory / "haproxy.cfg"
    path.write_text(render_haproxy_config(config, ("127.0.0.1", 9)), encoding="utf-8")
    return path


@dataclass
class RunningHAProxy:
    config: Config
    config_path: Path
    process: HAProxyProcess
    router: HAProxyRouter
    frontend_port: int


@pytest.fixture
async def haproxy(
    haproxy_binary: str, tmp_path: Path, free_port: Callable[[], int]
) -> AsyncIterator[RunningHAProxy]:
    """A real HAProxy started from a rendered config, with a router on its admin socket."""
    frontend_port = free_port()
    config = router_config(tmp_path, frontend_port)
    config_path = write_config(config, tmp_path)
    process = HAProxyProcess(config_path, binary=haproxy_binary)
    await process.start()
    router = HAProxyRouter(
        config.runtime_path(config.haproxy.admin_socket),
        check_interval_ms=config.haproxy.health_check_interval_ms,
        state_file=config.runtime_path(config.haproxy.state_file),
    )
    try:
        yield RunningHAProxy(config, config_path, process, router, frontend_port)
    finally:
        await process.stop()


async def wait_for_status(router: HAProxyRouter, server: str, status: ServerStatus) -> None:
    """Wait (at most EVENT_DEADLINE_S) until `server` of backend 'web' has `status`."""
    async with asyncio.timeout(EVENT_DEADLINE_S):
        while True:
            states = {state.server: state.status for state in await router.server_states("web")}
            if states.get(server) == status:
                return
            await asyncio.sleep(0.05)


async def requests_of(router: HAProxyRouter, server: str) -> int:
    states = {state.server: state.total_requests for state in await router.server_states("web")}
    return states.get(server, 0)


async def served_by(router: HAProxyRouter, server: str, more_than: int = 0) -> None:
    """Wait until `server` of backend 'web' has served more than `more_than` requests in all."""
    await wait_for(lambda: requests_of_more(router, server, more_than), f"{server} serving requests")


async def requests_of_more(router: HAProxyRouter, server: str, more_than: int) -> bool:
    return await requests_of(router, server) > more_than


def test_rendered_config_passes_haproxy_check(
    haproxy_binary: str, tmp_path: Path, free_port: Callable[[], int]
) -> None:
    """HAProxy itself accepts the rendered config (`haproxy -c`)."""
    config_path = write_config(router_config(tmp_path, free_port()), tmp_path)
    HAProxyProcess(config_path, binary=haproxy_binary).check()


def test_check_reports_haproxys_alert(haproxy_binary: str, tmp_path: Path) -> None:
    """An invalid config raises RouterError carrying HAProxy's own explanation."""
    config_path = tmp_path / "bad.cfg"
    config_path.write_text("frontend web\n    bind 127.0.0.1:1\n    no-such-keyword\n", encoding="utf-8")
    with pytest.raises(RouterError, match="no-such-keyword"):
        HAProxyProcess(config_path, binary=haproxy_binary).check()


async def test_start_waits_for_admin_socket(haproxy: RunningHAProxy) -> None:
    """start() returns only once the admin socket answers, and the backend accepts dynamic servers."""
    info = await haproxy.router.show_info()
    assert info["Name"] == "HAProxy"
    assert "DroppedLogs" in info
    await haproxy.router.ensure_backend("web")
    assert await haproxy.router.server_states("web") == []


async def test_unknown_backend_is_refused(haproxy: RunningHAProxy) -> None:
    """ensure_backend names the backends that exist when asked for another one."""
    with pytest.raises(RouterError, match="backends: web"):
        await haproxy.router.ensure_backend("nope")


async def test_set_weight_reads_back(haproxy: RunningHAProxy, http_upstreams: Upstreams) -> None:
    """A weight set through the admin socket is read back as set, by get weight and by show stat."""
    [port] = await http_upstreams(1)
    router = haproxy.router
    await router.add_server("web", "v1-1", "127.0.0.1", port, weight=10)
    await router.set_weights("web", {"v1-1": 50})
    assert await router.get_weight("web", "v1-1") == 50
    assert await router.get_weights("web") == {"v1-1": 50}


async def test_shares_become_weights_that_give_them(
    haproxy: RunningHAProxy, http_upstreams: Upstreams
) -> None:
    """70% over two stable servers and 30% on one canary are set as weights 70+70 and 60, read back."""
    ports = await http_upstreams(3)
    router = haproxy.router
    for name, port in zip(["v1-1", "v1-2", "v2-1"], ports, strict=True):
        await router.add_server("web", name, "127.0.0.1", port)
    await router.set_shares("web", {"stable": Share(70, ("v1-1", "v1-2")), "canary": Share(30, ("v2-1",))})
    assert await router.get_weights("web") == {"v1-1": 70, "v1-2": 70, "v2-1": 60}


async def test_errors_of_haproxy_become_router_errors(haproxy: RunningHAProxy) -> None:
    """HAProxy's refusals ('No such server', out-of-range weight) raise RouterError with its answer."""
    with pytest.raises(RouterError, match="No such server"):
        await haproxy.router.get_weight("web", "ghost-1")
    with pytest.raises(RouterError, match="No such server"):
        await haproxy.router.drain("web", "ghost-1")


async def test_new_server_gets_traffic(haproxy: RunningHAProxy, http_upstreams: Upstreams) -> None:
    """An added server leaves maintenance, passes its HTTP health check and serves the frontend."""
    [port] = await http_upstreams(1)
    await haproxy.router.add_server("web", "v1-1", "127.0.0.1", port, weight=100)
    await wait_for_status(haproxy.router, "v1-1", ServerStatus.UP)
    reader, writer = await asyncio.open_connection("127.0.0.1", haproxy.frontend_port)
    writer.write(b"GET / HTTP/1.0\r\nHost: test\r\n\r\n")
    response = await reader.read()
    writer.close()
    assert response.startswith(b"HTTP/1.1 200")
    [state] = await haproxy.router.server_states("web")
    assert (state.total_requests, state.address) == (1, f"127.0.0.1:{port}")


async def test_server_state_dump_is_written(haproxy: RunningHAProxy, http_upstreams: Upstreams) -> None:
    """dump_server_state writes `show servers state` (format version 1) with the dynamic servers."""
    [port] = await http_upstreams(1)
    await haproxy.router.add_server("web", "v1-1", "127.0.0.1", port, weight=7)
    path = await haproxy.router.dump_server_state()
    assert path == haproxy.config.runtime_path(haproxy.config.haproxy.state_file)
    lines = path.read_text().splitlines()
    assert lines[0] == "1"
    assert any(" web " in line and " v1-1 " in line for line in lines[2:])


async def test_servers_change_under_load_without_failed_requests(
    haproxy: RunningHAProxy, http_upstreams: Upstreams, wrk_binary: str
) -> None:
    """Adding a server, shifting weights, draining and removing another under load fails 0 requests."""
    stable_port, canary_port = await http_upstreams(2)
    router = haproxy.router
    await router.add_server("web", "v1-1", "127.0.0.1", stable_port, weight=100)
    await wait_for_status(router, "v1-1", ServerStatus.UP)
    # LOAD_SECONDS is an upper bound: SIGINT ends wrk once the servers have changed.
    async with wrk_load(wrk_binary, f"http://127.0.0.1:{haproxy.frontend_port}/", LOAD_SECONDS) as load:
        await served_by(router, "v1-1")
        await router.add_server("web", "v2-1", "127.0.0.1", canary_port, weight=0)
        await wait_for_status(router, "v2-1", ServerStatus.UP)
        await router.set_shares("web", {"stable": Share(90, ("v1-1",)), "canary": Share(10, ("v2-1",))})
        await served_by(router, "v2-1")
        await router.set_shares("web", {"stable": Share(0, ("v1-1",)), "canary": Share(100, ("v2-1",))})
        await router.drain("web", "v1-1")
        await served_by(router, "v2-1", more_than=await requests_of(router, "v2-1"))
        await router.remove_server("web", "v1-1")
        await served_by(router, "v2-1", more_than=await requests_of(router, "v2-1"))
        load.send_signal(signal.SIGINT)  # wrk stops and prints its report
        output = await wrk_report(load, EVENT_DEADLINE_S)
    assert wrk_failures(output) == [], output
    [canary] = await router.server_states("web")
    assert canary.server == "v2-1" and canary.total_requests > 0


async def test_port_in_use_is_reported(
    haproxy_binary: str, tmp_path: Path, processes_using: Callable[[Path], list[int]]
) -> None:
    """A frontend port taken by another program gives PortInUseError naming the address and frontend."""
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        config_path = write_config(router_config(tmp_path, port), tmp_path)
        process = HAProxyProcess(config_path, binary=haproxy_binary)
        with pytest.raises(PortInUseError, match=f"HAProxy frontend web cannot listen on 127.0.0.1:{port}"):
            await process.start()
    assert processes_using(config_path) == []


async def test_missing_binary_gives_install_advice(tmp_path: Path) -> None:
    """A missing haproxy binary gives MissingBinaryError that says how to install HAProxy."""
    config_path = write_config(router_config(tmp_path, 8080), tmp_path)
    process = HAProxyProcess(config_path, binary="haproxy-does-not-exist")
    with pytest.raises(MissingBinaryError, match="sudo apt-get install -y haproxy"):
        await process.start()


async def test_second_haproxy_on_the_same_socket_is_refused(
    haproxy: RunningHAProxy, haproxy_binary: str
) -> None:
    """Starting a second HAProxy on a socket another one answers on is refused, not silently stolen."""
    second = HAProxyProcess(haproxy.config_path, binary=haproxy_binary)
    try:
        with pytest.raises(RouterError, match="already answers"):
            await second.start()
    finally:
        await second.stop()
    assert second.process is None
    assert (await haproxy.router.show_info())["Pid"]


async def test_stop_leaves_no_process(
    haproxy_binary: str,
    tmp_path: Path,
    free_port: Callable[[], int],
    processes_using: Callable[[Path], list[int]],
) -> None:
    """stop() escalates past a client that holds HAProxy's soft stop; then neither master nor worker runs.

    A connection that never sends a request keeps a soft-stopping HAProxy alive until `timeout
    http-request`, so the graceful wait (1 s here) runs out and stop() sends SIGTERM.
    """
    port = free_port()
    config_path = write_config(router_config(tmp_path, port), tmp_path)
    process = HAProxyProcess(config_path, binary=haproxy_binary, stop_timeouts=StopTimeouts(graceful_s=1.0))
    await process.start()
    assert len(processes_using(config_path)) == 2  # master and worker
    _, idle_client = await asyncio.open_connection("127.0.0.1", port)
    await process.stop()
    idle_client.close()
    assert not process.running
    assert processes_using(config_path) == []
    await process.stop()  # idempotent

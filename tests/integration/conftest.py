"""Shared fixtures for integration tests that run a real HAProxy on loopback.

A missing program fails the test with install advice: a skipped integration test hides a broken setup.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from fridaymorning.ingest.syslog import UdpCollector
from fridaymorning.platform.local import free_port as free_port_on
from fridaymorning.procfs import pids, process_alive, read_cmdline
from fridaymorning.router import HAProxyProcess, HAProxyRouter, StopTimeouts
from fridaymorning.testing import (
    LoggingHAProxy,
    answering_haproxy_config,
    logging_haproxy_config,
    quick_service,
)
from fridaymorning.testservers import (
    MissingServerError,
    RunningServer,
    influxdb_server,
    prometheus_server,
    victoria_metrics_server,
)

if TYPE_CHECKING:
    from fridaymorning.config import Config
    from fridaymorning.runtime import Runtime

# What the factory fixtures below give a test, for its annotations.
ServiceSettings = Callable[..., dict[str, Any]]
RuntimeConfig = Callable[..., "Config"]
StartRuntime = Callable[["Config"], Awaitable["Runtime"]]
Upstreams = Callable[[int], Awaitable[list[int]]]
LabelledUpstreams = Callable[[list[str]], Awaitable[list[int]]]


def required_binary(name: str, package: str) -> str:
    """The path of `name`, or fail the test with the command that installs it."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"'{name}' is not installed. Install it with: sudo apt-get install -y {package}")
    return path


@pytest.fixture(scope="session")
def haproxy_binary() -> str:
    """Path of the haproxy binary; fails (never skips) when it is missing."""
    return required_binary("haproxy", "haproxy")


@pytest.fixture(scope="session")
def wrk_binary() -> str:
    """Path of the wrk load generator; fails (never skips) when it is missing."""
    return required_binary("wrk", "wrk")


def find_free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    return free_port_on("127.0.0.1")


@pytest.fixture
def free_port() -> Callable[[], int]:
    """A function returning a fresh free loopback port at each call."""
    return find_free_port


@pytest.fixture
def processes_using() -> Callable[[Path], list[int]]:
    """A function listing the live processes whose command line mentions a path (e.g. a haproxy.cfg)."""
    return live_processes_using


def live_processes_using(path: Path) -> list[int]:
    """Pids of live processes whose command line mentions `path` (e.g. a haproxy.cfg)."""
    needle = str(path)
    return [
        pid
        for pid in pids()
        if pid != os.getpid()
        and any(needle in argument for argument in read_cmdline(pid) or ())
        and process_alive(pid)
    ]


@pytest.fixture
def http_upstreams(labelled_upstreams: LabelledUpstreams) -> Upstreams:
    """A factory: `await http_upstreams(n)` starts one HAProxy answering 200 'ok' on n loopback ports.

    These stand in for the instances of a service. The HAProxy is stopped at teardown.
    """

    async def start(count: int) -> list[int]:
        return await labelled_upstreams(["ok"] * count)

    return start


@pytest.fixture
async def logging_haproxy(
    haproxy_binary: str, tmp_path: Path
) -> AsyncIterator[Callable[..., Awaitable[LoggingHAProxy]]]:
    """A factory: `await logging_haproxy(logged=("fe",))` starts a collector and a HAProxy logging to it.

    The HAProxy balances its frontends over two servers it answers itself (testing.logging_haproxy_config);
    `quiet` frontends do not log. Both are stopped at teardown.
    """
    started: list[LoggingHAProxy] = []

    async def start(
        logged: Sequence[str] = ("fe",),
        quiet: Sequence[str] = (),
        seamless_reload: bool = False,
        stop_timeouts: StopTimeouts | None = None,
    ) -> LoggingHAProxy:
        collector = UdpCollector("127.0.0.1", 0, lambda windows: None, flush_interval_s=0.2)
        await collector.start()
        ports = {name: find_free_port() for name in (*logged, *quiet)}
        admin_socket = tmp_path / "admin.sock"
        config = logging_haproxy_config(
            collector_port=collector.address[1],
            admin_socket=admin_socket,
            logged={name: ports[name] for name in logged},
            quiet={name: ports[name] for name in quiet},
            servers={"v1-1": find_free_port(), "v1-2": find_free_port()},
            seamless_reload=seamless_reload,
        )
        config_path = tmp_path / "haproxy.cfg"
        config_path.write_text(config, encoding="utf-8")
        timeouts = StopTimeouts() if stop_timeouts is None else stop_timeouts
        haproxy = HAProxyProcess(config_path, binary=haproxy_binary, stop_timeouts=timeouts)
        started.append(LoggingHAProxy(collector, haproxy, HAProxyRouter(admin_socket), ports))
        await haproxy.start()
        return started[-1]

    yield start
    for setup in started:
        await setup.haproxy.stop()
        await setup.collector.stop()


@pytest.fixture
async def labelled_upstreams(haproxy_binary: str, tmp_path: Path) -> AsyncIterator[LabelledUpstreams]:
    """A factory: `await labelled_upstreams(["v1", "v2"])` starts one HAProxy with one loopback port per
    label, each answering 200 with its label as the body, so a test sees which server answered.

    The HAProxy is stopped at teardown.
    """
    started: list[HAProxyProcess] = []

    async def start(labels: list[str]) -> list[int]:
        directory = tmp_path / f"upstream{len(started)}"
        directory.mkdir()
        answers = [(find_free_port(), label) for label in labels]
        config_path = directory / "haproxy.cfg"
        config_path.write_text(answering_haproxy_config(directory / "admin.sock", answers), encoding="utf-8")
        process = HAProxyProcess(config_path, binary=haproxy_binary)
        await process.start()
        started.append(process)
        return [port for port, _ in answers]

    yield start
    for process in started:
        await process.stop()


@pytest.fixture
def service_settings(free_port: Callable[[], int]) -> ServiceSettings:
    """`service_settings(name, **rollout)`: a quick service of the versioned demo app on a free port."""

    def build(name: str = "web", **rollout: Any) -> dict[str, Any]:
        return quick_service(name, f"127.0.0.1:{free_port()}", **rollout)

    return build


@pytest.fixture
def runtime_config(tmp_path: Path, free_port: Callable[[], int], haproxy_binary: str) -> RuntimeConfig:
    """Build a Config on free loopback ports: `runtime_config(service_settings(...), ...)`."""
    from fridaymorning.config import Config

    def build(*services: dict[str, Any]) -> Config:
        return Config.model_validate(
            {
                "state_dir": str(tmp_path / "state"),
                "haproxy": {"binary": haproxy_binary},
                "collector": {"listen": f"127.0.0.1:{free_port()}", "lateness_s": 0.5},
                "api": {"listen": f"127.0.0.1:{free_port()}"},
                "services": list(services) or [quick_service("web", f"127.0.0.1:{free_port()}")],
            }
        )

    return build


@pytest.fixture
async def start_runtime() -> AsyncIterator[StartRuntime]:
    """Start a Runtime for a Config; every runtime started is stopped at teardown."""
    from fridaymorning.runtime import Runtime

    started: list[Runtime] = []

    async def start(config: Config) -> Runtime:
        runtime = Runtime(config)
        started.append(runtime)
        await runtime.start()
        return runtime

    yield start
    for runtime in started:
        await runtime.stop()


@pytest.fixture
def influxdb(tmp_path: Path) -> Iterator[RunningServer]:
    """A real InfluxDB 1.x on a loopback port, its data under the test's temp dir."""
    with contextlib.ExitStack() as stack:
        yield _enter_server(stack, influxdb_server(tmp_path / "influxdb"))


@pytest.fixture
def victoria_metrics(tmp_path: Path) -> Iterator[RunningServer]:
    """A real VictoriaMetrics with `-search.latencyOffset=1s`, so instant queries see the newest data."""
    with contextlib.ExitStack() as stack:
        yield _enter_server(stack, victoria_metrics_server(tmp_path / "victoria-metrics"))


@pytest.fixture
def start_prometheus(tmp_path: Path) -> Iterator[Callable[..., RunningServer]]:
    """A function that starts a real Prometheus scraping the given HOST:PORT targets; all stop at teardown."""
    with contextlib.ExitStack() as stack:
        started = itertools.count()

        def start(targets: Sequence[str], scrape_interval_s: float = 1.0) -> RunningServer:
            data_dir = tmp_path / f"prometheus-{next(started)}"
            return _enter_server(stack, prometheus_server(data_dir, targets, scrape_interval_s))

        yield start


def _enter_server(
    stack: contextlib.ExitStack, server: contextlib.AbstractContextManager[RunningServer]
) -> RunningServer:
    """Start a server for the test's lifetime; a missing program fails the test (never skips it)."""
    try:
        return stack.enter_context(server)
    except MissingServerError as missing:
        pytest.fail(str(missing))

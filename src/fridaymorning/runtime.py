"""`fm up`: the explicit lifecycle of one running fridaymorning.

Startup: take the state directory (one `fm up` per state directory), bind the API's socket and check
the other listen ports, start the collector, render and check haproxy.cfg, start HAProxy, then each
service's stable instances and controller, then the API. Shutdown runs in reverse: a running rollout
is aborted "stopped by the operator", and no child process outlives `fm`. Signals are handled in one
place, `run_until_signalled`.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import logging
import os
import signal
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import uvicorn

from fridaymorning.api.app import create_app
from fridaymorning.api.auth import load_or_create_token
from fridaymorning.client import TOKEN_FILE
from fridaymorning.config import Config, parse_address
from fridaymorning.controller.loop import ServiceController
from fridaymorning.controller.state import StateStore
from fridaymorning.errors import AlreadyRunningError, FridayMorningError, PortInUseError
from fridaymorning.ingest.process import CollectorProcess, collector_settings
from fridaymorning.models import Window
from fridaymorning.platform.base import Platform
from fridaymorning.registry import resolve
from fridaymorning.router import (
    FleetRouter,
    HAProxyProcess,
    HAProxyRouter,
    affinity_backends,
    backends_of,
    render_haproxy_config,
    write_live_config,
)
from fridaymorning.router.base import Router
from fridaymorning.router.brought import build_fleet, include_path, write_include_file, writes_include_file
from fridaymorning.store.base import MetricStore

log = logging.getLogger(__name__)

# Connections the API's socket queues until they are accepted (uvicorn's default).
BACKLOG = 2048
# Seconds the API's open responses get to finish when `fm up` stops. Event streams (an open dashboard,
# `fm watch`) never finish on their own: after this they are closed, so a stop never waits on a browser.
API_SHUTDOWN_GRACE_S = 2
# In the state directory: held (flock) by the one `fm up` that uses it, and holding its pid.
LOCK_FILE = "fm.lock"


def lock_state_dir(state_dir: Path) -> int:
    """Take the state directory for this process; raise AlreadyRunningError naming the holder's pid.

    The lock is the kernel's (flock), so it ends with the process however the process ends, kill -9
    included; the file's content is only for the message. The descriptor is not inherited by HAProxy
    or the instances, which may outlive this process.
    """
    path = state_dir / LOCK_FILE
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(descriptor, 32, 0).decode("ascii", "replace").strip() or "unknown"
        os.close(descriptor)
        raise AlreadyRunningError(holder, state_dir) from None
    os.ftruncate(descriptor, 0)
    os.pwrite(descriptor, f"{os.getpid()}\n".encode("ascii"), 0)
    return descriptor


def bind_listener(address: str, what: str) -> socket.socket:
    """A TCP socket bound to `address` for a server to listen on; PortInUseError when it is taken.

    `fm up` binds the API's socket itself before it starts anything, so a taken port is its own
    one-line error, not the web server's.
    """
    host, port = parse_address(address)
    listener = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind((host, port))
        listener.listen(BACKLOG)
    except OSError as error:
        listener.close()
        if error.errno == errno.EADDRINUSE:
            raise PortInUseError(host, port, what) from error
        raise FridayMorningError(f"{what} cannot listen on {host}:{port}: {error.strerror}") from error
    return listener


def ensure_port_free(address: str, what: str, kind: int = socket.SOCK_STREAM) -> None:
    """Raise PortInUseError when `address` cannot be bound, before anything is started."""
    host, port = parse_address(address)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, kind) as probe:
        if kind == socket.SOCK_STREAM:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as error:
            if error.errno == errno.EADDRINUSE:
                raise PortInUseError(host, port, what) from error
            raise FridayMorningError(f"{what} cannot listen on {host}:{port}: {error.strerror}") from error


class QuietServer(uvicorn.Server):
    """uvicorn without its own signal handlers: `fm up` handles signals for every component at once."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class Runtime:
    """Every component of `fm up`, started and stopped in order."""

    def __init__(self, config: Config, announce: Callable[[str], Any] = log.info) -> None:
        self.config = config
        self.announce = announce
        self.state_dir = config.state_path()
        self.controllers: dict[str, ServiceController] = {}
        self.metrics: MetricStore | None = None
        self.states: StateStore
        self.collector: CollectorProcess | None = None
        self.haproxy: HAProxyProcess | None = None
        self.router: Router | None = None  # what the controllers move traffic with
        self.managed_router: HAProxyRouter | None = None  # the HAProxy `fm up` runs, if it runs one
        self.fleet: FleetRouter | None = None  # with `haproxy.instances`
        self.platforms: list[Platform] = []
        self._api: QuietServer | None = None
        self._api_task: asyncio.Task[None] | None = None
        self._api_socket: socket.socket | None = None
        self._lock: int | None = None

    async def start(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.state_dir, 0o700)
        self._lock = lock_state_dir(self.state_dir)
        self.check_ports()
        self.metrics = resolve("store", self.config.store_url())(self.config.store_url())
        self.states = StateStore(self.state_dir / "state.db")
        await self.start_collector()
        if self.config.haproxy.instances:
            await self.start_fleet()
        else:
            await self.start_haproxy()
        for service in self.config.services:
            await self.start_service(service)
        if self.fleet is not None:
            self.fleet.start_reconciling()
        await self.start_api()

    def check_ports(self) -> None:
        """The ports `fm up` itself binds (HAProxy's frontends are checked when HAProxy is started)."""
        kind = socket.SOCK_STREAM if self.config.collector.protocol == "tcp" else socket.SOCK_DGRAM
        if CollectorProcess(collector_settings(self.config), self.state_dir).running_pid() is None:
            ensure_port_free(self.config.collector.listen, "the collector", kind)
        self._api_socket = bind_listener(self.config.api.listen, "the API")

    def check_frontend_ports(self) -> None:
        for service in self.config.services:
            ensure_port_free(service.frontend, f"the HAProxy frontend of {service.name}")

    async def start_collector(self) -> None:
        """The collector runs in its own process, adopted after a crash of `fm up` (ingest.process)."""
        host, port = parse_address(self.config.collector.listen)
        protocol = self.config.collector.protocol
        self.collector = CollectorProcess(collector_settings(self.config), self.state_dir)
        await self.collector.start()
        how = "adopted the collector" if self.collector.adopted else "collector"
        self.announce(f"{how} listening on {protocol}://{host}:{port} (pid {self.collector.pid})")

    def collector_started_at(self) -> float | None:
        """When this `fm up` last started the collector process; None for an adopted one."""
        return self.collector.started_at if self.collector is not None else None

    async def write_windows(self, windows: list[Window]) -> None:
        """The collector's sink: windows go to the store off the event loop."""
        if windows and self.metrics is not None:
            await asyncio.to_thread(self.metrics.write, windows)

    async def start_haproxy(self) -> None:
        """Adopt the HAProxy a previous run left serving, or start one; then keep haproxy.cfg live."""
        collector_address = parse_address(self.config.collector.listen)
        config_path = self.state_dir / "haproxy.cfg"
        self.haproxy = HAProxyProcess(config_path, binary=self.config.haproxy.binary)
        adopted = config_path.exists() and await self.haproxy.adopt()
        router_url = f"haproxy+unix://{self.config.runtime_path(self.config.haproxy.admin_socket)}"
        self.router = self.managed_router = resolve("router", router_url).from_url(
            router_url,
            check_interval_ms=self.config.haproxy.health_check_interval_ms,
            state_file=self.config.runtime_path(self.config.haproxy.state_file),
            affinity_backends=affinity_backends(self.config),
            on_change=self.write_live_config,
        )
        if adopted:
            await self.refresh_adopted_haproxy(config_path)
            self.announce(f"adopted the running HAProxy (pid {self.haproxy.pid}) with {config_path}")
        else:
            self.check_frontend_ports()
            config_path.write_text(render_haproxy_config(self.config, collector_address), encoding="utf-8")
            await self.haproxy.start()
            self.announce(f"HAProxy running with {config_path}")
        assert self.collector is not None
        self.collector.watch_haproxy(
            self.router,
            reconcile_interval_s=self.config.collector.reconcile_interval_s,
            backends={backend for service in self.config.services for backend in backends_of(service)},
        )

    async def refresh_adopted_haproxy(self, config_path: Path) -> None:
        """Reload an adopted HAProxy only if its config must change (e.g. a service was added).

        The file on disk already lists the live servers (it is rewritten after every change), so a
        plain restart of `fm up` does not reload, and no client connection is disturbed.
        """
        assert self.managed_router is not None
        collector_address = parse_address(self.config.collector.listen)
        wanted = render_haproxy_config(
            self.config, collector_address, await self.managed_router.current_servers()
        )
        if config_path.read_text(encoding="utf-8") != wanted:
            await self.reload_haproxy()

    async def write_live_config(self) -> None:
        """After every router change: haproxy.cfg lists the live servers, so any reload keeps them."""
        assert self.managed_router is not None
        collector_address = parse_address(self.config.collector.listen)
        await write_live_config(
            self.state_dir / "haproxy.cfg", self.config, collector_address, self.managed_router
        )

    async def start_fleet(self) -> None:
        """`haproxy.instances`: the HAProxy `fm up` manages, if one is listed, and the brought ones,
        moved together by one FleetRouter (router.fleet, router.brought)."""
        if any(instance.admin is None for instance in self.config.haproxy.instances):
            await self.start_haproxy()
        if writes_include_file(self.config) and not include_path(self.config).exists():
            write_include_file(self.config)
            self.announce(f"wrote {include_path(self.config)}: load it in your HAProxy with a second -f")
        self.router = self.fleet = build_fleet(self.config, self.managed_router, self.write_include_file)
        names = ", ".join(instance.name for instance in self.config.haproxy.instances)
        self.announce(f"HAProxy fleet: {names}")

    async def write_include_file(self) -> None:
        """After every change of the fleet: our file lists the live servers, so a reload keeps them."""
        if self.fleet is not None and writes_include_file(self.config):
            write_include_file(self.config, await self.fleet.current_servers())

    async def reload_haproxy(self) -> None:
        """Re-render haproxy.cfg with the live servers and reload HAProxy seamlessly."""
        if self.managed_router is None or self.haproxy is None:
            raise FridayMorningError("fridaymorning runs no HAProxy of its own here: reload yours")
        async with self.managed_router.changes_lock:
            await self.write_live_config()
            await self.haproxy.reload()

    async def start_service(self, service: Any) -> None:
        assert self.router is not None and self.metrics is not None
        workdir = self.state_dir / "instances" / service.name
        workdir.mkdir(parents=True, exist_ok=True)
        platform: Platform = resolve("platform", service.platform.url)(service.platform, workdir=str(workdir))
        self.platforms.append(platform)
        # A second reaches the store `lateness_s` after it ends, at the next flush (every second).
        data_lag_s = self.config.collector.lateness_s + 1.0
        controller = ServiceController(
            service,
            self.router,
            platform,
            self.metrics,
            self.states,
            data_lag_s=data_lag_s,
            hooks_cwd=self.config.base_dir,
        )
        self.controllers[service.name] = controller
        # A collector started anew may still store delayed lines into written seconds (controller.judging).
        controller.evidence.collector_started_at = self.collector_started_at
        # Instances a previous run left serving (after a crash) are taken over, not restarted.
        adopted = await platform.adopt()
        if adopted:
            self.announce(f"service {service.name}: adopted {', '.join(i.server for i in adopted)}")
        await controller.start(adopted)
        self.announce(f"service {service.name}: {controller.stable_version} serving on {service.frontend}")

    async def start_api(self) -> None:
        host, port = parse_address(self.config.api.listen)
        token = load_or_create_token(Path(self.state_dir, TOKEN_FILE))
        app = create_app(self, token)
        self._api = QuietServer(
            uvicorn.Config(
                app,
                host=host,
                port=port,
                log_level="warning",
                lifespan="off",
                timeout_graceful_shutdown=API_SHUTDOWN_GRACE_S,
            )
        )
        assert self._api_socket is not None
        self._api_task = asyncio.create_task(self._api.serve(sockets=[self._api_socket]))
        while not self._api.started and not self._api_task.done():
            await asyncio.sleep(0.05)
        if self._api_task.done():
            try:
                self._api_task.result()
            except SystemExit as error:  # uvicorn exits on a failed startup; `fm up` reports it
                raise FridayMorningError(f"the API did not start on {host}:{port}") from error
        self.announce(f"API on http://{host}:{port}/api/v1 (token in {self.state_dir / TOKEN_FILE})")

    async def stop(self) -> None:
        """Stop everything that was started, in reverse order; errors are logged, not raised."""
        if self._api is not None and self._api_task is not None:
            self._api.should_exit = True
            await asyncio.gather(self._api_task, return_exceptions=True)
        for controller in self.controllers.values():
            await log_errors(controller.stop(), f"stopping {controller.service.name}")
        for platform in self.platforms:
            await log_errors(platform.close(), "stopping instances")
        if self.fleet is not None:
            await log_errors(self.fleet.stop_reconciling(), "stopping the fleet's reconciler")
        if self.collector is not None:  # its polls of HAProxy end before HAProxy does
            await log_errors(self.collector.stop_watching_haproxy(), "stopping the collector's polls")
        if self.haproxy is not None:
            await log_errors(self.haproxy.stop(), "stopping HAProxy")
        if self.collector is not None:
            await log_errors(self.collector.stop(), "stopping the collector")
        if self.metrics is not None:
            self.metrics.close()
        if hasattr(self, "states"):
            self.states.close()
        if self._api_socket is not None:
            self._api_socket.close()
        if self._lock is not None:
            os.close(self._lock)  # releases the state directory
            self._lock = None

    def status(self) -> dict[str, Any]:
        return {
            "services": [controller.snapshot() for controller in self.controllers.values()],
            "collector": self.collector.stats() if self.collector else {},
            **({"haproxy": self.fleet.status()} if self.fleet is not None else {}),
        }


async def log_errors(operation: Any, what: str) -> None:
    try:
        await operation
    except Exception:
        log.exception("error while %s", what)


async def run_until_signalled(config: Config, announce: Callable[[str], Any] = log.info) -> None:
    """Run `fm up` until SIGINT or SIGTERM, then stop every component."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    runtime = Runtime(config, announce)
    try:
        await runtime.start()
        announce("fm up: running; Ctrl-C to stop")
        await stop.wait()
        announce("stopping")
    finally:
        await runtime.stop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)

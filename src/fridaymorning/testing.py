"""Test doubles for fridaymorning's roles, for unit tests of pure logic and of the controller loop.

Integration tests use the real HAProxy, SQLite and processes; these fakes stand in for them where
the logic, not the component, is under test.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import inspect
import itertools
import json
import os
import re
import signal
import socket
import socketserver
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, TypeVar

from fridaymorning.errors import InstanceLagError, RouterError
from fridaymorning.models import Instance, ServerState, ServerStatus, Window
from fridaymorning.notify.base import Notifier
from fridaymorning.procfs import parent_pid, pids
from fridaymorning.router import Share, weights_for_shares

if TYPE_CHECKING:
    from hypothesis.strategies import SearchStrategy

    from fridaymorning.config import Config, ServiceConfig
    from fridaymorning.ingest.syslog import UdpCollector
    from fridaymorning.router import HAProxyProcess, HAProxyRouter


T = TypeVar("T")


class FakeRouter:
    """A Router that keeps servers in memory and records every share it was given.

    It refuses the shares HAProxyRouter refuses, and gives servers the weights HAProxy would.
    """

    def __init__(self) -> None:
        self.servers: dict[str, dict[str, ServerState]] = {}
        # Every set_shares call: the backend, and each arm's percent.
        self.share_history: list[tuple[str, dict[str, int]]] = []
        self.removed: list[str] = []
        self.down: set[str] = set()
        # The next this-many set_shares calls fail, as a HAProxy that times out would.
        self.failing_set_shares = 0
        # While set, the router is a fleet with these instances lagging: set_shares takes effect on
        # the others and raises InstanceLagError, and check_every_instance raises it.
        self.lagging: tuple[str, ...] = ()

    async def ensure_backend(self, backend: str) -> None:
        self.servers.setdefault(backend, {})

    async def add_server(self, backend: str, server: str, address: str, port: int, weight: int = 0) -> None:
        servers = self.servers.setdefault(backend, {})
        if server in servers:
            raise RouterError(f"server {backend}/{server} already exists")
        servers[server] = ServerState(backend, server, ServerStatus.UP, weight, 0, 0, f"{address}:{port}")

    async def set_shares(self, backend: str, shares: Mapping[str, Share]) -> None:
        weights = weights_for_shares(shares)
        if self.failing_set_shares > 0:
            self.failing_set_shares -= 1
            raise RouterError("HAProxy did not answer 'set weight' in time")
        for server, weight in weights.items():
            state = self._server(backend, server)
            self.servers[backend][server] = ServerState(
                backend, server, state.status, weight, state.total_requests, 0, state.address
            )
        self.share_history.append((backend, {arm: share.percent for arm, share in shares.items()}))
        await self.check_every_instance()

    def percents_of(self, arm: str, backend: str | None = None) -> list[int]:
        """The percent each set_shares call gave `arm` (0 when it was not named), on `backend` or any."""
        return [
            percents.get(arm, 0)
            for where, percents in self.share_history
            if backend is None or where == backend
        ]

    async def drain(self, backend: str, server: str) -> None:
        self._server(backend, server)

    async def remove_server(self, backend: str, server: str) -> None:
        self._server(backend, server)
        del self.servers[backend][server]
        self.removed.append(server)

    async def check_every_instance(self) -> None:
        if self.lagging:
            raise InstanceLagError(f"{', '.join(self.lagging)} lag: connection refused", self.lagging)

    async def server_states(self, backend: str) -> list[ServerState]:
        return [
            ServerState(s.backend, s.server, ServerStatus.DOWN, s.weight, s.total_requests, 0, s.address)
            if s.server in self.down
            else s
            for s in self.servers.get(backend, {}).values()
        ]

    def _server(self, backend: str, server: str) -> ServerState:
        try:
            return self.servers[backend][server]
        except KeyError:
            raise RouterError(f"no such server {backend}/{server}") from None


# --------------------------------------------------------------------------------------------------
# HAProxy's admin socket (runtime API), in memory
# --------------------------------------------------------------------------------------------------

# What HAProxy 2.6 answers, read from a running one. Commands that succeed silently answer one newline.
DONE = "\n"
NO_SUCH_BACKEND = "No such backend.\n\n"
NO_SUCH_SERVER = "No such server.\n\n"
UNKNOWN_COMMAND = (
    "Unknown command, but maybe one of the following ones is a better match:\n"
    "  help [<command>]                        : list matching or all commands\n\n"
)
# `show servers state`, format 1: the header HAProxy writes, and what a fake server fills in.
SERVERS_STATE_HEADER = (
    "# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight srv_iweight "
    "srv_time_since_last_change srv_check_status srv_check_result srv_check_health srv_check_state "
    "srv_agent_state bk_f_forced_id srv_f_forced_id srv_fqdn srv_port srvrecord srv_use_ssl "
    "srv_check_port srv_check_addr srv_agent_addr srv_agent_port"
)
# The columns of `show stat` the router reads, in HAProxy's order (HAProxy has about a hundred more).
SHOW_STAT_COLUMNS = (
    "pxname",
    "svname",
    "qcur",
    "scur",
    "stot",
    "status",
    "weight",
    "addr",
    "algo",
    "uweight",
)
# srv_admin_state bits (HAProxy's SRV_ADMF_FMAINT and SRV_ADMF_FDRAIN).
ADMIN_STATE_BITS = {"ready": 0, "maint": 1, "drain": 8}
HAPROXY_MAX_WEIGHT = 256


class FakeServer:
    """One server of a FakeHAProxyAdmin backend. Tests may set `sessions`, `total_requests` and `healthy`."""

    def __init__(self, address: str, port: int, weight: int, *, checked: bool, admin: str) -> None:
        self.address = address
        self.port = port
        self.weight = weight
        self.initial_weight = weight
        self.checked = checked  # declared with `check`
        self.health_enabled = False
        self.admin = admin  # ready, drain or maint
        self.healthy = True  # what its health checks find, once enabled
        self.sessions = 0
        self.total_requests = 0

    @property
    def status(self) -> str:
        """The status column of `show stat`."""
        if self.admin == "maint":
            return "MAINT"
        if not self.health_enabled:
            return "DRAIN" if self.admin == "drain" else "no check"
        if not self.healthy:
            return "DOWN"
        return "DRAIN" if self.admin == "drain" else "UP"


class FakeHAProxyAdmin:
    """HAProxy's admin socket: a Unix-socket server that keeps backends and servers in memory.

    It answers the runtime API commands HAProxyRouter sends, one per connection, with HAProxy 2.6's
    texts for success and for refusal: `show stat`, `show info`, `show servers state`, `add server`,
    `del server`, `enable|disable server`, `enable health`, `set server B/S state ready|drain|maint`,
    `set weight`, `get weight` and `enable dynamic-cookie backend`. Any other command gets HAProxy's
    "Unknown command". As in HAProxy, an added server starts in maintenance, `del server` takes only
    a server in maintenance without sessions, and weights are integers within 0..256.

    Every command received is kept in `commands`. `answers` maps a command prefix to an answer that
    replaces the real one (the longest prefix wins), to make HAProxy refuse something the model
    would accept. Use it as a context manager, or call `close()`.
    """

    def __init__(self, path: str | Path, backends: dict[str, str] | None = None) -> None:
        self.path = Path(path)
        self.backends: dict[str, dict[str, FakeServer]] = {}
        self.algorithms: dict[str, str] = {}
        for name, algorithm in (backends or {"web": "roundrobin"}).items():
            self.add_backend(name, algorithm)
        self.commands: list[str] = []
        self.answers: dict[str, str] = {}
        self._lock = threading.Lock()
        self._server = socketserver.ThreadingUnixStreamServer(str(self.path), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()

    def add_backend(self, name: str, algorithm: str = "roundrobin") -> None:
        """A backend, as haproxy.cfg declares it, balanced by `algorithm`."""
        self.backends[name] = {}
        self.algorithms[name] = algorithm

    def add_static_server(
        self, backend: str, name: str, address: str, port: int, weight: int = 1
    ) -> FakeServer:
        """A server as a `server` line of haproxy.cfg declares it (no health check): ready at once."""
        server = FakeServer(address, port, weight, checked=False, admin="ready")
        self.backends[backend][name] = server
        return server

    def server(self, backend: str, name: str) -> FakeServer:
        return self.backends[backend][name]

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
        self.path.unlink(missing_ok=True)

    def __enter__(self) -> FakeHAProxyAdmin:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # -- answering ---------------------------------------------------------------------------------

    def answer(self, command: str) -> str:
        """HAProxy's answer to `command` (one line, no newline), changing the state as HAProxy would."""
        with self._lock:
            self.commands.append(command)
            overrides = [prefix for prefix in self.answers if command.startswith(prefix)]
            if overrides:
                return self.answers[max(overrides, key=len)]
            words = command.split()
            for prefix, handler in self._handlers():
                if words[: len(prefix)] == prefix:
                    return handler(words[len(prefix) :])
            return UNKNOWN_COMMAND

    def _handlers(self) -> list[tuple[list[str], Callable[[list[str]], str]]]:
        return [
            (["show", "stat"], self._show_stat),
            (["show", "info"], self._show_info),
            (["show", "servers", "state"], self._show_servers_state),
            (["add", "server"], self._add_server),
            (["del", "server"], self._del_server),
            (["enable", "server"], lambda args: self._set_admin(args, "ready")),
            (["disable", "server"], lambda args: self._set_admin(args, "maint")),
            (["enable", "health"], self._enable_health),
            (["set", "server"], self._set_server),
            (["set", "weight"], self._set_weight),
            (["get", "weight"], self._get_weight),
            (["enable", "dynamic-cookie", "backend"], self._enable_dynamic_cookie),
        ]

    def _find(self, args: list[str]) -> tuple[str, str, FakeServer] | str:
        """The backend, name and server that `args[0]` ('backend/server') names, else HAProxy's refusal."""
        backend, slash, name = (args[0] if args else "").partition("/")
        if not slash:
            return "Require 'backend/server'.\n\n"
        if backend not in self.backends:
            return NO_SUCH_BACKEND
        server = self.backends[backend].get(name)
        return NO_SUCH_SERVER if server is None else (backend, name, server)

    def _show_stat(self, _: list[str]) -> str:
        rows = [",".join(SHOW_STAT_COLUMNS)]
        for backend, servers in self.backends.items():
            for name, server in servers.items():
                address = f"{server.address}:{server.port}"
                counts = (0, server.sessions, server.total_requests)
                fields = (backend, name, *counts, server.status, server.weight, address, "", server.weight)
                rows.append(",".join(map(str, fields)))
            weight = sum(server.weight for server in servers.values() if server.admin == "ready")
            sessions = sum(server.sessions for server in servers.values())
            requests = sum(server.total_requests for server in servers.values())
            row = (
                backend,
                "BACKEND",
                0,
                sessions,
                requests,
                "UP",
                weight,
                "",
                self.algorithms[backend],
                weight,
            )
            rows.append(",".join(map(str, row)))
        return "# " + "\n".join(rows) + "\n\n"

    def _show_info(self, _: list[str]) -> str:
        return f"Name: HAProxy\nVersion: 2.6.12\nPid: {os.getpid()}\nDroppedLogs: 0\n\n"

    def _show_servers_state(self, _: list[str]) -> str:
        lines = ["1", SERVERS_STATE_HEADER]
        for backend_id, (backend, servers) in enumerate(self.backends.items(), start=3):
            for server_id, (name, server) in enumerate(servers.items(), start=1):
                running = 0 if server.admin == "maint" else 2
                lines.append(
                    f"{backend_id} {backend} {server_id} {name} {server.address} {running} "
                    f"{ADMIN_STATE_BITS[server.admin]} {server.weight} {server.initial_weight} "
                    f"0 1 0 2 0 0 0 0 - {server.port} - 0 0 - - 0"
                )
        return "\n".join(lines) + "\n\n"

    def _add_server(self, args: list[str]) -> str:
        backend, _, name = (args[0] if args else "").partition("/")
        if backend not in self.backends:
            return "No such backend.\n"
        if self.algorithms[backend] not in ("roundrobin", "leastconn", "first", "random"):
            return "Backend must use a dynamic load balancing to support dynamic servers.\n"
        if name in self.backends[backend]:
            return "Already exists a server with the same name in backend.\n\n"
        address, _, port = args[1].rpartition(":") if len(args) > 1 else ("", "", "")
        options = args[2:]
        weight = int(options[options.index("weight") + 1]) if "weight" in options else 1
        if not 0 <= weight <= HAPROXY_MAX_WEIGHT:
            return f"weight of server {name} is not within 0 and {HAPROXY_MAX_WEIGHT} ({weight})..\n\n"
        self.backends[backend][name] = FakeServer(
            address.strip("[]"), int(port), weight, checked="check" in options, admin="maint"
        )
        return "New server registered.\n\n"

    def _del_server(self, args: list[str]) -> str:
        found = self._find(args)
        if isinstance(found, str):
            return found.rstrip("\n") + "\n"  # `del server` ends its refusals with one newline
        backend, name, server = found
        if server.admin != "maint":
            return "Only servers in maintenance mode can be deleted.\n"
        if server.sessions:
            return "Server still has connections attached to it, cannot remove it.\n"
        del self.backends[backend][name]
        return "Server deleted.\n"

    def _set_admin(self, args: list[str], admin: str) -> str:
        found = self._find(args)
        if isinstance(found, str):
            return found
        found[2].admin = admin
        return DONE

    def _enable_health(self, args: list[str]) -> str:
        found = self._find(args)
        if isinstance(found, str):
            return found
        if not found[2].checked:
            return "Health check was not configured on this server, cannot enable.\n\n"
        found[2].health_enabled = True
        return DONE

    def _set_server(self, args: list[str]) -> str:
        found = self._find(args)
        if isinstance(found, str):
            return found
        if args[1:2] != ["state"] or len(args) < 3 or args[2] not in ADMIN_STATE_BITS:
            return "'set server <srv> state' expects 'ready', 'drain' and 'maint'.\n\n"
        found[2].admin = args[2]
        return DONE

    def _set_weight(self, args: list[str]) -> str:
        found = self._find(args)
        if isinstance(found, str):
            return found
        try:
            weight = int(args[1])
        except (IndexError, ValueError):
            return "Require <weight> or <weight%>.\n\n"
        if not 0 <= weight <= HAPROXY_MAX_WEIGHT:
            return f"Absolute weight can only be between 0 and {HAPROXY_MAX_WEIGHT} inclusive.\n\n"
        found[2].weight = weight
        return DONE

    def _get_weight(self, args: list[str]) -> str:
        found = self._find(args)
        if isinstance(found, str):
            return found
        return f"{found[2].weight} (initial {found[2].initial_weight})\n\n"

    def _enable_dynamic_cookie(self, args: list[str]) -> str:
        return DONE if args and args[0] in self.backends else NO_SUCH_BACKEND

    def _handler_class(self) -> type[socketserver.StreamRequestHandler]:
        admin = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                command = self.rfile.readline().decode(errors="replace").rstrip("\r\n")
                self.wfile.write(admin.answer(command).encode())

        return Handler


class FakePlatform:
    """A Platform whose instances are records; `fail_versions` never start."""

    def __init__(self, fail_versions: Sequence[str] = ()) -> None:
        self.running: list[Instance] = []
        self.stopped: list[Instance] = []
        self.fail_versions = set(fail_versions)
        self._ports = itertools.count(20000)

    async def start(self, version: str, replicas: int, label: str = "") -> list[Instance]:
        from fridaymorning.errors import PlatformError

        if version in self.fail_versions:
            raise PlatformError(f"{version} exited with status 1 before it was healthy")
        name = label or version
        first = 1 + max((i.index for i in self.running if (i.label or i.version) == name), default=0)
        started = [
            Instance(version, index, "127.0.0.1", next(self._ports), "fake", label)
            for index in range(first, first + replicas)
        ]
        self.running.extend(started)
        return started

    async def stop(self, instances: list[Instance]) -> None:
        for instance in instances:
            if instance in self.running:
                self.running.remove(instance)
                self.stopped.append(instance)

    async def health(self, instance: Instance) -> bool:
        return instance in self.running

    async def adopt(self) -> list[Instance]:
        """Instances survive a restart of the controller: the same ones are handed over."""
        return list(self.running)

    async def close(self) -> None:
        await self.stop(list(self.running))


class ReplacingFakePlatform(FakePlatform):
    """A FakePlatform that replaces instances by itself, as Swarm restarts a task: `replace(instance)`
    swaps it for a new one under the same server name on a new port, and `current()` reports it."""

    async def current(self, instances: Sequence[Instance]) -> list[Instance]:
        names = {instance.server for instance in instances}
        return [instance for instance in self.running if instance.server in names]

    def replace(self, instance: Instance) -> Instance:
        replacement = Instance(
            instance.version, instance.index, instance.host, next(self._ports), "replaced", instance.label
        )
        self.running[self.running.index(instance)] = replacement
        return replacement


class FakeNotifier:
    """A Notifier that keeps every event it was given, in order, and delivers them at once."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    @property
    def kinds(self) -> list[str]:
        """The kind of each event given ("started", "step", ...), in order."""
        return [event["event"] for event in self.events]

    def send_in_background(self, event: dict[str, Any]) -> list[asyncio.Task[bool]]:
        self.events.append(event)
        return []

    def stats(self) -> dict[str, Any]:
        return {"sent": len(self.events), "failed": 0, "skipped": 0, "targets": []}


class FakeMetricProvider:
    """A MetricProvider that answers from a script: each query's next value, an error, or a stall.

    `answers` maps a rendered query to what it gives, one entry per call (the last repeats): a number,
    or an Exception to raise (e.g. ProviderError). `stall` makes every call wait until `release()`.
    Every call is recorded in `calls` with its window.
    """

    def __init__(self, answers: Mapping[str, Sequence[float | Exception]] | None = None) -> None:
        self.answers: dict[str, list[float | Exception]] = {q: list(a) for q, a in (answers or {}).items()}
        self.calls: list[tuple[str, Any]] = []
        self.stall = False
        self.closed = False
        self._released = asyncio.Event()

    def answer(self, query: str, *values: float | Exception) -> None:
        """From now on, `query` gives `values` in turn (the last one repeats)."""
        self.answers[query] = list(values)

    def release(self) -> None:
        self._released.set()

    async def run(self, query: str, window: Any) -> float:
        from fridaymorning.errors import ProviderError

        self.calls.append((query, window))
        if self.stall:
            await self._released.wait()
        script = self.answers.get(query)
        if not script:
            raise ProviderError(f"query {query!r} gave no series (no data)")
        answer = script.pop(0) if len(script) > 1 else script[0]
        if isinstance(answer, Exception):
            raise answer
        return answer

    async def aclose(self) -> None:
        self.closed = True


class MemoryMetricStore:
    """A MetricStore in a list: windows written are served back, merged per second."""

    def __init__(self) -> None:
        self.windows: list[Window] = []
        self.fail_with: Exception | None = None

    def write(self, windows: Sequence[Window]) -> None:
        self.windows.extend(windows)

    def query(self, backend: str, version: str, start: int, end: int) -> list[Window]:
        if self.fail_with is not None:
            raise self.fail_with
        merged: dict[int, Window] = {}
        for window in self.windows:
            if window.backend == backend and window.version == version and start <= window.second < end:
                if window.second in merged:
                    merged[window.second].merge(window)
                else:
                    copy = Window(backend, version, window.second)
                    copy.merge(window)
                    merged[window.second] = copy
        return [merged[second] for second in sorted(merged)]

    def close(self) -> None:
        pass


def synthetic_window(
    backend: str, version: str, second: int, requests: int, failed: int = 0, latency_ms: float = 10.0
) -> Window:
    """A window of `requests` with `failed` 5xx answers, every one taking `latency_ms`."""
    window = Window(backend, version, second, requests=requests, failed=failed)
    window.status[1] = requests - failed
    window.status[4] = failed
    for _ in range(requests):
        window.tr.add(latency_ms)
        window.ta.add(latency_ms)
    return window


# What HAProxy puts before each message it sends to syslog (RFC 3164, without a hostname).
SYSLOG_HEADER = "<134>Nov 26 12:38:53 haproxy[6027]: "


def compact_log_line(
    at: float,
    server: str,
    status: int = 200,
    tr_ms: int = 3,
    ta_ms: int = 5,
    *,
    size: int = 100,
    termination: str = "--",
    header: str = SYSLOG_HEADER,
) -> str:
    """One request of backend `web` from 127.0.0.1 in the compact log format (logformat.COMPACT_LOG_FORMAT),
    as HAProxy sends it at `at`."""
    fields = (f"{at:.3f}", "web", server, status, tr_ms, ta_ms, size, termination, "127.0.0.1")
    return header + "fm1 " + " ".join(str(field) for field in fields)


def httplog_line(
    *,
    client: str = "127.0.0.1:41054",
    date: str = "[26/Nov/2026:12:38:53.468]",
    frontend: str = "hl",
    target: str = "be/v1-1",
    timers: str = "0/0/1/4/9",
    status: int | str = 200,
    size: int | str = 73,
    termination: str = "----",
    counts: str = "4/1/0/0/0",
    tail: str = ' 0/0 {Mozilla 5 x} "GET /x?a=b HTTP/1.1"',
) -> str:
    """One request in HAProxy's `option httplog` format, without the syslog header.

    Every field is text as it stands in the line, so a test can give it malformed on purpose.
    """
    return f"{client} {date} {frontend} {target} {timers} {status} {size} - - {termination} {counts}{tail}"


def mutated(samples: Sequence[Sequence[T]], alphabet: Sequence[T]) -> SearchStrategy[list[T]]:
    """A hypothesis strategy (for property tests of parsers): one of `samples` as a list of its items,
    with up to three items replaced or inserted (from `alphabet`) or deleted."""
    from hypothesis import strategies as st

    def mutate(draw: st.DrawFn) -> list[T]:
        line = list(draw(st.sampled_from(samples)))
        for _ in range(draw(st.integers(0, 3))):
            position = draw(st.integers(0, len(line)))
            item = draw(st.sampled_from(alphabet))
            action = draw(st.sampled_from(("replace", "insert", "delete")))
            if action == "insert" or position == len(line):
                line.insert(position, item)
            elif action == "replace":
                line[position] = item
            else:
                del line[position]
        return line

    return st.composite(mutate)()


@contextlib.contextmanager
def local_time_zone(spec: str) -> Iterator[None]:
    """Run with the local time zone `spec` (a TZ value such as "UTC0"), then restore the machine's.

    HAProxy's httplog dates are local time, so tests of the log parsers pin the zone. The parser's
    date cache is cleared on entry and on exit, so no date read in one zone is reused in another.
    """
    from fridaymorning.ingest.haproxy_log import clear_date_cache

    previous = os.environ.get("TZ")
    os.environ["TZ"] = spec
    time.tzset()
    clear_date_cache()
    try:
        yield
    finally:
        if previous is None:
            del os.environ["TZ"]
        else:
            os.environ["TZ"] = previous
        time.tzset()
        clear_date_cache()


def logging_haproxy_config(
    *,
    collector_port: int,
    admin_socket: str | Path,
    logged: Mapping[str, int],
    servers: Mapping[str, int],
    quiet: Mapping[str, int] | None = None,
    maxconn: int = 2000,
    seamless_reload: bool = False,
) -> str:
    """A haproxy.cfg whose frontends log every request in the compact format to a collector on loopback.

    `logged` and `quiet` name frontends (name → port) with and without logging; all balance over one
    backend `app` of `servers` (server name → port). HAProxy itself plays each server: a frontend on
    the server's port answers 200 "ok". `seamless_reload` passes the listeners to a reloaded worker
    and closes idle keep-alive connections on the old one, as fridaymorning's own config does.
    """
    from fridaymorning.logformat import COMPACT_LOG_FORMAT

    stats_socket = f"    stats socket {admin_socket} mode 600 level admin"
    lines = ["global", f"    log 127.0.0.1:{collector_port} local0"]
    lines += [stats_socket + " expose-fd listeners" if seamless_reload else stats_socket]
    lines += [f"    maxconn {maxconn}"] + (["    hard-stop-after 5s"] if seamless_reload else [])
    lines += ["defaults", "    mode http", "    timeout connect 2s", "    timeout client 10s"]
    lines += ["    timeout server 10s"] + (["    option idle-close-on-response"] if seamless_reload else [])
    for name, port in logged.items():
        lines += [
            f"frontend {name}",
            f"    bind 127.0.0.1:{port}",
            "    log global",
            "    option dontlognull",
        ]
        lines += [f'    log-format "{COMPACT_LOG_FORMAT}"', "    default_backend app"]
    for name, port in (quiet or {}).items():
        lines += [f"frontend {name}", f"    bind 127.0.0.1:{port}", "    default_backend app"]
    lines += ["backend app", "    balance roundrobin"]
    lines += [f"    server {server} 127.0.0.1:{port}" for server, port in servers.items()]
    for server, port in servers.items():
        lines += [f"frontend serve-{server}", f"    bind 127.0.0.1:{port}"]
        lines += ["    http-request return status 200 content-type text/plain string ok"]
    return "\n".join(lines) + "\n"


# What an answering HAProxy returns becomes an unquoted word of its haproxy.cfg.
ANSWER_PATTERN = re.compile(r"^[A-Za-z0-9_.-]{1,32}$")


def answering_haproxy_config(admin_socket: str | Path, answers: Sequence[tuple[int, str]]) -> str:
    """A haproxy.cfg of stand-ins for instances: on each loopback (port, body), 200 with that body.

    HAProxy answers every request itself, so the stand-ins cost little beside the HAProxy under test;
    they stop soon even while that HAProxy still holds connections to them.
    """
    for _, body in answers:
        if not ANSWER_PATTERN.match(body):
            raise ValueError(f"an answer must match {ANSWER_PATTERN.pattern}, got {body!r}")
    lines = ["global", f"    stats socket {admin_socket} mode 600 level admin", "    maxconn 1000"]
    lines += ["    hard-stop-after 2s", "defaults", "    mode http", "    timeout connect 2s"]
    lines += ["    timeout client 30s", "    timeout server 30s", "    timeout http-request 2s"]
    lines += ["    timeout http-keep-alive 2s"]
    for index, (port, body) in enumerate(answers):
        lines += [f"frontend answer{index}", f"    bind 127.0.0.1:{port}"]
        lines += [f"    http-request return status 200 content-type text/plain string {body}"]
    return "\n".join(lines) + "\n"


@dataclass
class LoggingHAProxy:
    """A UDP collector and a HAProxy logging every request of its logged frontends to it."""

    collector: UdpCollector
    haproxy: HAProxyProcess
    router: HAProxyRouter
    ports: dict[str, int]  # frontend name → port


class FakeClock:
    """Virtual time: advanced by hand (the controller harness moves it one second per driven tick)."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def unstarted_service(name: str = "web", frontend: str = "127.0.0.1:8080", **sections: Any) -> dict[str, Any]:
    """A service's settings for tests that never run its command: stable v1, a placeholder command and
    one step of 10%; `sections` (rollout, analysis…) replace or add to them."""
    return {
        "name": name,
        "frontend": frontend,
        "stable": "v1",
        "platform": {"command": ["app", "{port}"]},
        "rollout": {"steps": [{"weight": 10}]},
        **sections,
    }


def router_config(base_dir: Path, frontend_port: int, **rollout: Any) -> Config:
    """A config for tests of the router and a real HAProxy alone (nothing runs the service's command):
    one service 'web' on 127.0.0.1:`frontend_port` with steps of 10 and 50% and fast health checks;
    `rollout` adds strategy, ab or affinity settings. Its state directory is made."""
    from fridaymorning.config import Config

    service = unstarted_service(
        frontend=f"127.0.0.1:{frontend_port}",
        platform={"command": ["app", "--port", "{port}"], "health_path": "/healthz"},
        rollout={"steps": [{"weight": 10}, {"weight": 50}], **rollout},
    )
    config = Config.model_validate({"haproxy": {"health_check_interval_ms": 200}, "services": [service]})
    config.base_dir = str(base_dir)
    config.state_path().mkdir(parents=True, exist_ok=True)
    return config


def harness_service(*weights: int) -> ServiceConfig:
    """A service for ControllerHarness: one step per canary weight (percent), each of 5 to 20 s and at
    least 50 canary requests, judged at every driven second."""
    from fridaymorning.config import ServiceConfig

    step = {"min_duration_s": 5, "max_duration_s": 20, "min_requests": 50}
    return ServiceConfig.model_validate(
        unstarted_service(
            rollout={"judge_interval_s": 0.001, "steps": [{"weight": weight, **step} for weight in weights]},
            analysis={"min_requests": 50},
        )
    )


class ControllerHarness:
    """A ServiceController on fakes, driven second by second with synthetic traffic.

    Each driven second writes what the collector would: the canary's windows (under the canary's
    backend) and the baseline's (under the fresh baseline's label when there is one), splitting
    `rps` by the rollout's weight. `restart()` replaces the controller as a kill -9 and a new
    `fm up` would: the old one vanishes without cleaning up; the new one adopts the instances.
    """

    def __init__(
        self,
        service: Any,
        state_path: str | Path,
        canary_failure_rate: float = 0.0,
        platform: FakePlatform | None = None,
        rps: int = 200,
        ab_share: float = 0.2,
        notifier: Notifier | None = None,
        providers: Mapping[str, Any] | None = None,
    ) -> None:
        from fridaymorning.controller.state import StateStore

        self.service = service
        self.clock = FakeClock()
        self.router = FakeRouter()
        self.platform = platform or FakePlatform()
        self.metrics = MemoryMetricStore()
        # None: the service's own webhooks, as in production.
        self.notifier = notifier
        # None: the providers the service's custom checks name, as in production.
        self.providers = providers
        self.states = StateStore(state_path)
        self.canary_failure_rate = canary_failure_rate
        self.rps = rps
        self.ab_share = ab_share
        self.controller = self._new_controller()

    def _new_controller(self) -> Any:
        from fridaymorning.controller.loop import ServiceController

        return ServiceController(
            self.service,
            self.router,
            self.platform,
            self.metrics,
            self.states,
            clock=self.clock,
            notifier=self.notifier,
            providers=self.providers,
        )

    async def restart(self) -> None:
        """Kill the controller without cleanup, then start a new one on the surviving instances."""
        task = self.controller._task
        if task is not None and not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        self.controller = self._new_controller()
        await self.controller.start(await self.platform.adopt())

    async def start_rollout(self, version: str = "v2", seconds: int = 0, traffic: bool = True) -> Any:
        """Start the controller, deploy `version` and drive `seconds`; the rollout as deployed."""
        await self.controller.start()
        rollout = self.controller.deploy(version)
        await self.drive(seconds, traffic)
        return rollout

    async def drive(self, seconds: int, traffic: bool = True) -> None:
        """Advance virtual time second by second, writing windows as the collector would."""
        for _ in range(seconds):
            await asyncio.sleep(0.005)
            rollout = self.states.active_rollout(self.service.name)
            if traffic and rollout is not None:
                self._write_second(rollout, int(self.clock.now))
            self.clock.now += 1
            task = self.controller._task
            if rollout is None and task is not None and task.done():
                return

    def _write_second(self, rollout: Any, second: int) -> None:
        from fridaymorning.models import baseline_label

        controller = self.controller
        if controller.ab:
            canary = round(self.rps * self.ab_share) if controller.canary_instances else 0
        else:
            canary = self.rps * rollout.canary_weight // 100
        baseline_version = (
            baseline_label(rollout.baseline) if controller.baseline_instances else rollout.baseline
        )
        baseline = canary if controller.baseline_instances else self.rps - canary
        failed = round(canary * self.canary_failure_rate)
        if canary:
            self.metrics.write(
                [synthetic_window(controller.canary_backend, rollout.version, second, canary, failed)]
            )
        if baseline:
            self.metrics.write([synthetic_window(controller.backend, baseline_version, second, baseline)])


class WebhookReceiver:
    """A real HTTP server on a free loopback port that records webhook posts, and fails or stalls on demand.

    POSTs are recorded with their JSON body and answered 200, or 500 while `failures_left` > 0; with
    `stall_s` set they answer only after that long (or when the receiver closes). GETs answer 200 with
    X-Version: v2, like an instance of the canary. `most_in_flight` is the largest number of POSTs it was
    answering at once.
    """

    def __init__(self, path: str = "/hook") -> None:
        self.posts: list[dict[str, Any]] = []
        self.in_flight = 0
        self.most_in_flight = 0
        self.get_paths: list[str] = []
        self.failures_left = 0
        self.stall_s = 0.0
        self._closing = threading.Event()
        self._lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self.url = f"http://127.0.0.1:{self.server.server_port}{path}"
        self.frontend = f"127.0.0.1:{self.server.server_port}"
        self._thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._closing.set()
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=5)

    def _next_status(self) -> int:
        with self._lock:
            if self.failures_left > 0:
                self.failures_left -= 1
                return 500
            return 200

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with receiver._lock:
                    receiver.posts.append(json.loads(body))
                    receiver.in_flight += 1
                    receiver.most_in_flight = max(receiver.most_in_flight, receiver.in_flight)
                try:
                    if receiver.stall_s:
                        receiver._closing.wait(receiver.stall_s)
                    self._answer(receiver._next_status())
                finally:
                    with receiver._lock:
                        receiver.in_flight -= 1

            def do_GET(self) -> None:
                with receiver._lock:
                    receiver.get_paths.append(self.path)
                self._answer(200)

            def _answer(self, status: int) -> None:
                self.send_response(status)
                self.send_header("X-Version", "v2")
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, format: str, *args: Any) -> None:
                pass  # keep test output quiet

        return Handler


# How long a test waits for an event (a phase, a log line, a weight read back) before it fails: sized for a
# machine whose cores are busy with other work, where what takes a second when idle can take thirty.
EVENT_DEADLINE_S = 120.0


async def wait_for(
    condition: Callable[[], Any], what: str, timeout_s: float = EVENT_DEADLINE_S, interval_s: float = 0.05
) -> Any:
    """Call `condition` (a function or a coroutine function) until it returns a true value; return that
    value. Past `timeout_s`, fail with AssertionError naming `what` and the last value seen."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout_s:g} s: {what} (last seen: {value!r})")
        await asyncio.sleep(interval_s)


async def deploy_each(
    controller: Any, versions: Sequence[str], timeout_s: float = 2 * EVENT_DEADLINE_S
) -> list[Any]:
    """Deploy each version in turn to a running ServiceController, each once the previous rollout has
    finished; the final state of every rollout."""
    finals = []
    for version in versions:
        controller.deploy(version)
        final = await asyncio.wait_for(controller.wait(), timeout_s)
        assert final is not None, f"the rollout of {version} left no state"
        finals.append(final)
    return finals


@contextlib.asynccontextmanager
async def wrk_load(wrk: str, url: str, seconds: int) -> AsyncIterator[asyncio.subprocess.Process]:
    """wrk (one thread, 10 connections) against `url` for `seconds` at the most, its report piped; it is
    killed on leaving the block if it still runs. Read the report with `wrk_report`."""
    load = await asyncio.create_subprocess_exec(
        wrk,
        "-t1",
        "-c10",
        f"-d{seconds}s",
        url,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        yield load
    finally:
        if load.returncode is None:
            load.kill()
            await load.wait()


async def wrk_report(load: asyncio.subprocess.Process, timeout_s: float) -> str:
    """wrk's report once it has ended (within `timeout_s`); wrk must have exited 0 and counted requests."""
    async with asyncio.timeout(timeout_s):
        output = (await load.communicate())[0].decode()
    assert load.returncode == 0, output
    assert re.search(r"\d+ requests in", output), output
    return output


def wrk_failures(report: str) -> list[str]:
    """The lines of wrk's report that announce failures (wrk prints them only when non-zero)."""
    return [line for line in report.splitlines() if re.search(r"Non-2xx|Socket errors", line)]


def admin_answer(socket_path: str | Path, command: str, timeout_s: float = 10.0) -> str:
    """One command on a fresh connection to a HAProxy admin socket (or a fake's), as the router sends
    it, without an event loop: the whole answer."""
    with socket.socket(socket.AF_UNIX) as connection:
        connection.settimeout(timeout_s)
        connection.connect(str(socket_path))
        connection.sendall(command.encode() + b"\n")
        chunks = []
        while chunk := connection.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks).decode()


def listening(port: int) -> bool:
    """True when something accepts TCP connections on 127.0.0.1:`port` right now."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_for_sync(
    condition: Callable[[], Any], what: str, timeout_s: float = EVENT_DEADLINE_S, interval_s: float = 0.1
) -> Any:
    """wait_for, for tests without an event loop (those that drive `fm` processes)."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout_s:g} s: {what} (last seen: {value!r})")
        time.sleep(interval_s)


# `fm` as a user runs it, with the interpreter of this environment.
FM = [sys.executable, "-m", "fridaymorning"]


def run_fm(
    *args: str, config: str | Path, timeout: float = EVENT_DEADLINE_S
) -> subprocess.CompletedProcess[str]:
    """Run one `fm` command with `--config`, capturing its output."""
    return subprocess.run(
        [*FM, *args, "--config", str(config)], capture_output=True, text=True, timeout=timeout, check=False
    )


class FmUpProcess:
    """`fm up` in a subprocess, waited for until its API answers. Its output goes to `<config>.up.log`."""

    def __init__(self, config: str | Path, timeout_s: float = EVENT_DEADLINE_S) -> None:
        import httpx
        import yaml

        self.config = Path(config)
        settings = yaml.safe_load(self.config.read_text())
        self.api = f"http://{settings['api']['listen']}/api/v1"
        self.frontend = f"http://{settings['services'][0]['frontend']}/"
        self.log_path = self.config.with_suffix(".up.log")
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen([*FM, "up", "--config", str(self.config)], stdout=log, stderr=log)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"fm up exited: {self.log_path.read_text()}")
            try:
                httpx.get(self.api + "/status", timeout=1)
                return
            except httpx.TransportError:
                time.sleep(0.2)
        raise AssertionError(f"fm up did not answer within {timeout_s} s: {self.log_path.read_text()}")

    def stop(self) -> int:
        """SIGTERM, as a user's Ctrl-C or a service manager would; the exit status."""
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=EVENT_DEADLINE_S)

    def kill(self) -> None:
        """kill -9: no cleanup at all, as in a crash."""
        self.process.kill()
        self.process.wait(timeout=10)


def descendants(pid: int) -> list[int]:
    """Pids of every live process whose parent chain reaches `pid`."""
    parents = {child: parent_pid(child) for child in pids()}
    found, frontier = [], [pid]
    while frontier:
        current = frontier.pop()
        children = [child for child, parent in parents.items() if parent == current]
        found += children
        frontier += children
    return found


# The demo app as a one-line program for tests and benchmarks: every request fails when the version's
# name starts with "broken"; otherwise it never fails; latency is a fifth of the demo's.
VERSIONED_APP = (
    "import os, runpy, sys\n"
    "port, version = sys.argv[1], sys.argv[2]\n"
    "os.environ['FM_DEMO_ERROR_RATE'] = '1' if version.startswith('broken') else '0'\n"
    "os.environ['FM_DEMO_LATENCY_FACTOR'] = '0.2'\n"
    "sys.argv = ['app', '--port', port, '--version', version]\n"
    "runpy.run_module('fridaymorning.demo.app', run_name='__main__')\n"
)


def versioned_app_platform(**settings: Any) -> dict[str, Any]:
    """The `platform` section that runs VERSIONED_APP as local processes; `settings` adds to it."""
    return {"command": [sys.executable, "-c", VERSIONED_APP, "{port}", "{version}"], **settings}


# A step is done within seconds when idle; its maximum duration leaves a busy machine time to gather
# the evidence before the rollout is held.
QUICK_STEPS = [
    {"weight": 20, "min_duration_s": 3, "max_duration_s": 120, "min_requests": 50},
    {"weight": 50, "min_duration_s": 3, "max_duration_s": 120, "min_requests": 50},
]
# p50 alone: a few hundred requests settle it, where p99 would need thousands.
QUICK_ANALYSIS = {"min_requests": 50, "quantiles": [0.5], "latency_tolerance": 1.5}


def quick_service(
    name: str,
    frontend: str,
    *,
    platform: dict[str, Any] | None = None,
    steps: Sequence[Mapping[str, Any]] = QUICK_STEPS,
    **rollout: Any,
) -> dict[str, Any]:
    """A service (of VERSIONED_APP unless `platform` says otherwise), stable at v1, with quick steps and
    the p50-only analysis; `rollout` adds rollout settings."""
    return {
        "name": name,
        "frontend": frontend,
        "stable": "v1",
        "platform": versioned_app_platform() if platform is None else platform,
        "rollout": {"steps": [dict(step) for step in steps], **rollout},
        "analysis": dict(QUICK_ANALYSIS),
    }


def quick_settings(
    state_dir: str | Path, service: dict[str, Any], *, collector: dict[str, Any], api: str, **sections: Any
) -> dict[str, Any]:
    """A whole fridaymorning.yaml, as a dict, for one service: `collector` and `api` on addresses the
    caller chose, `sections` (haproxy, base_dir…) as given."""
    return {
        "state_dir": str(state_dir),
        **sections,
        "collector": collector,
        "api": {"listen": api},
        "services": [service],
    }


class FakeHAProxyCounters:
    """What the loss accounting reads of a HAProxy (`show info`, `show stat`): settable request counters
    per (backend, server), DroppedLogs and worker pid; `answering = False` makes both raise RouterError."""

    def __init__(self, pid: int = 100) -> None:
        self.stot: dict[tuple[str, str], int] = {}
        self.dropped = 0
        self.pid = pid
        self.answering = True

    async def show_info(self) -> dict[str, str]:
        self._check()
        return {"Name": "HAProxy", "Pid": str(self.pid), "DroppedLogs": str(self.dropped)}

    async def show_stat(self) -> list[dict[str, str]]:
        self._check()
        return [{"pxname": b, "svname": s, "stot": str(value)} for (b, s), value in self.stot.items()]

    def _check(self) -> None:
        if not self.answering:
            raise RouterError("the fake HAProxy does not answer")


def load_script(path: Path) -> ModuleType:
    """Import a script that is not part of the package (e.g. under deploy/) as a module, to test it."""
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module

"""How fridaymorning talks to HAProxy: the process, its admin socket, and per-server weights.

- `HAProxyProcess` runs HAProxy in master-worker mode (`-W`, foreground, in its own session), reloads
  it, stops it gracefully, and adopts one a previous `fm` left running: the data plane never depends
  on the controller being alive.
- `HAProxyRouter` implements the Router role over the admin socket: one command per connection, each
  answer checked against what that command answers on success. Anything else is a RouterError. After
  each change it dumps the server state, so a reload by anyone keeps every weight.
  It is told each version's share in percent, and sets the per-server weights (router._weights) that
  give exactly those shares.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import ipaddress
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from fridaymorning.config import Config, parse_address
from fridaymorning.errors import MissingBinaryError, PortInUseError, RouterError, WeightMismatchError
from fridaymorning.models import ServerState, ServerStatus
from fridaymorning.procfs import process_alive, read_pid
from fridaymorning.router._render import MAX_WEIGHT, health_check_options, render_haproxy_config
from fridaymorning.router._weights import realised_percents, requested_percents, weights_for_shares
from fridaymorning.router.base import ServerSpec, Share

log = logging.getLogger(__name__)

# Backend and server names we send: no spaces, slashes or newlines can reach the admin socket.
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
HOSTNAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.-]{0,252}$")
GET_WEIGHT_ANSWER = re.compile(r"^(\d+) \(initial (\d+)\)$")
BIND_ERROR = re.compile(
    r"for (?:frontend|proxy) '?(?P<name>[^\s:']+)'?: cannot bind socket \((?P<reason>[^)]*)\) "
    r"for \[(?P<address>[^\]]+)\]"
)
STATS_SOCKET_LINE = re.compile(r"^\s*stats\s+socket\s+(\S+)", re.MULTILINE)
STATE_FILE_LINE = re.compile(r"^\s*server-state-file\s+(\S+)", re.MULTILINE)
PIDFILE_LINE = re.compile(r"^\s*pidfile\s+(\S+)", re.MULTILINE)

# How often stop() repeats a signal HAProxy's master may have missed.
SIGNAL_REPEAT_S = 0.5

# Balance algorithms that accept dynamic servers (HAProxy refuses `add server` with the others).
DYNAMIC_ALGORITHMS = frozenset({"roundrobin", "leastconn", "first", "random"})


# --------------------------------------------------------------------------------------------------
# Answers of the admin socket (pure parsers)
# --------------------------------------------------------------------------------------------------


def parse_get_weight(answer: str) -> tuple[int, int]:
    """'50 (initial 10)' → (50, 10): the current and the configured weight."""
    match = GET_WEIGHT_ANSWER.match(answer.strip())
    if match is None:
        raise RouterError(f"unexpected answer to 'get weight': {answer.strip()!r}")
    return int(match.group(1)), int(match.group(2))


def is_weight_answer(answer: str) -> bool:
    return GET_WEIGHT_ANSWER.match(answer.strip()) is not None


def parse_show_stat(answer: str) -> list[dict[str, str]]:
    """The rows of `show stat` CSV, each a dict keyed by the header's field names."""
    text = answer.lstrip()
    if not text.startswith("# pxname"):
        raise RouterError(f"unexpected answer to 'show stat': {first_line(answer)!r}")
    rows = csv.reader(line for line in text[2:].splitlines() if line)
    header = next(rows)
    return [dict(zip(header, row, strict=False)) for row in rows]


def parse_show_info(answer: str) -> dict[str, str]:
    """`show info` ('Name: value' lines) as a dict."""
    info: dict[str, str] = {}
    for line in answer.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            info[key.strip()] = value.strip()
    if "Name" not in info:
        raise RouterError(f"unexpected answer to 'show info': {first_line(answer)!r}")
    return info


def parse_servers_state(answer: str) -> list[ServerSpec]:
    """The servers in `show servers state` (format 1): backend, name, address, port and current weight."""
    text = answer.strip()
    version, _, rest = text.partition("\n")
    header_line, _, body = rest.partition("\n")
    if version != "1" or not header_line.startswith("# be_id"):
        raise RouterError(f"unexpected answer to 'show servers state': {first_line(answer)!r}")
    header = header_line[2:].split()
    servers = []
    for line in body.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        row = dict(zip(header, line.split(), strict=False))
        try:
            fqdn = row.get("srv_fqdn", "-")
            servers.append(
                ServerSpec(
                    backend=row["be_name"],
                    name=row["srv_name"],
                    address=fqdn if fqdn not in ("", "-") else row["srv_addr"],
                    port=int(row["srv_port"]),
                    weight=int(row["srv_uweight"]),
                )
            )
        except (KeyError, ValueError):
            raise RouterError(f"unexpected line in 'show servers state': {line!r}") from None
    return servers


def server_state_of(row: dict[str, str]) -> ServerState:
    """One server row of `show stat` as a ServerState."""
    return ServerState(
        backend=row["pxname"],
        server=row["svname"],
        status=status_of(row.get("status", "")),
        weight=int(row.get("uweight") or row.get("weight") or 0),
        total_requests=int(row.get("stot") or 0),
        current_sessions=int(row.get("scur") or 0),
        address=row.get("addr", ""),
    )


def status_of(text: str) -> ServerStatus:
    """'UP', 'UP 1/2' (going down), 'DOWN 1/2' (going up), 'MAINT (via x/y)', 'no check'… → ServerStatus."""
    if text == "no check":
        return ServerStatus.UP
    word = text.split(" ", 1)[0]
    return ServerStatus(word) if word in ServerStatus.__members__ else ServerStatus.UNKNOWN


def is_server_row(row: dict[str, str]) -> bool:
    """True for a server row of `show stat`; False for the FRONTEND and BACKEND summary rows."""
    return row.get("svname") not in ("FRONTEND", "BACKEND")


def first_line(text: str) -> str:
    return text.strip().split("\n", 1)[0]


# --------------------------------------------------------------------------------------------------
# The admin socket
# --------------------------------------------------------------------------------------------------


def silent(answer: str) -> bool:
    """Commands such as `set weight` and `enable server` answer nothing when they succeed."""
    return answer.strip() == ""


def says(expected: str) -> Callable[[str], bool]:
    """A check that the answer is exactly `expected`."""
    return lambda answer: answer.strip() == expected


def starts_with(prefix: str) -> Callable[[str], bool]:
    return lambda answer: answer.lstrip().startswith(prefix)


def check_name(name: str, what: str) -> str:
    """`name` if it is safe to send to the admin socket, else a RouterError."""
    if not NAME_PATTERN.match(name):
        raise RouterError(f"invalid {what} name {name!r}: use letters, digits, '.', '_' and '-' only")
    return name


def server_ref(backend: str, server: str) -> str:
    """'backend/server', both names validated."""
    return f"{check_name(backend, 'backend')}/{check_name(server, 'server')}"


async def admin_command(socket_path: str | os.PathLike[str], command: str, timeout_s: float) -> str:
    """Send one command on a fresh connection and return the whole answer (HAProxy closes after it)."""
    if "\n" in command or "\r" in command or ";" in command:
        raise RouterError(f"refusing to send a command with a separator: {command!r}")
    try:
        async with asyncio.timeout(timeout_s):
            reader, writer = await asyncio.open_unix_connection(os.fspath(socket_path))
            try:
                writer.write(command.encode() + b"\n")
                await writer.drain()
                return (await reader.read()).decode(errors="replace")
            finally:
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
    except TimeoutError:
        message = f"HAProxy did not answer {command!r} within {timeout_s}s on {socket_path}"
        raise RouterError(message) from None
    except OSError as error:
        raise RouterError(f"cannot reach the HAProxy admin socket {socket_path}: {error}") from error


async def read_servers_state(socket_path: str | os.PathLike[str], timeout_s: float) -> str:
    """The answer of `show servers state`: what HAProxy reloads weights and admin states from."""
    answer = await admin_command(socket_path, "show servers state", timeout_s)
    if not answer.startswith("1\n"):
        raise RouterError(f"HAProxy refused 'show servers state': {answer.strip()}")
    return answer.strip() + "\n"


def write_atomically(path: Path, text: str) -> None:
    """Write `text` to `path` through a temporary file and a rename: a reader never sees half a file."""
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as file:
            file.write(text)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


async def write_live_config(
    path: str | os.PathLike[str], config: Config, collector_address: tuple[str, int], router: HAProxyRouter
) -> str:
    """Render haproxy.cfg with the servers HAProxy has now and write it atomically to `path`.

    Run it after every change (as the router's `on_change`) so that the file always lists the current
    servers: whoever reloads HAProxy then keeps them. Returns the text written.
    """
    text = render_haproxy_config(config, collector_address, await router.current_servers())
    write_atomically(Path(path), text)
    return text


class HAProxyRouter:
    """The Router role over HAProxy's admin socket (`stats socket ... level admin`).

    After every change (add_server, set_weights, drain, remove_server) it dumps `show servers state`
    to `state_file`, then awaits `on_change` (the runtime re-renders haproxy.cfg there), so a reload
    at any moment, by us or by an operator, keeps the servers and their weights. Changes hold
    `changes_lock`; hold it too around a reload, so no change lands between the dump and the reload.
    Servers added to `affinity_backends` get their dynamic affinity cookie.
    """

    def __init__(
        self,
        socket_path: str | os.PathLike[str],
        *,
        check_interval_ms: int = 1000,
        timeout_s: float = 5.0,
        drain_timeout_s: float = 30.0,
        state_file: str | os.PathLike[str] | None = None,
        affinity_backends: Iterable[str] = (),
        on_change: Callable[[], Awaitable[object]] | None = None,
    ) -> None:
        self.socket_path = Path(socket_path)
        self.check_interval_ms = check_interval_ms
        self.timeout_s = timeout_s
        self.drain_timeout_s = drain_timeout_s
        self.state_file = Path(state_file) if state_file is not None else None
        self.affinity_backends = frozenset(affinity_backends)
        self.on_change = on_change
        self.changes_lock = asyncio.Lock()
        # Why the last change could not be recorded (state file or on_change), or None.
        self.record_error: str | None = None

    @classmethod
    def from_url(cls, url: str, **options: Any) -> HAProxyRouter:
        """'haproxy+unix:///run/haproxy/admin.sock' → a router on that socket."""
        prefix = "haproxy+unix://"
        if not url.startswith(prefix) or not url[len(prefix) :].startswith("/"):
            raise RouterError(f"expected haproxy+unix:///ABSOLUTE/PATH, got {url!r}")
        return cls(url[len(prefix) :], **options)

    async def command(self, command: str, succeeded: Callable[[str], bool] = silent) -> str:
        """Run `command`; a RouterError carries the command and HAProxy's answer unless `succeeded`."""
        answer = await admin_command(self.socket_path, command, self.timeout_s)
        if not succeeded(answer):
            raise RouterError(f"HAProxy refused {command!r}: {answer.strip()}")
        return answer

    # -- the Router protocol ---------------------------------------------------------------------

    async def ensure_backend(self, backend: str) -> None:
        check_name(backend, "backend")
        summaries = {row["pxname"]: row for row in await self.show_stat() if row.get("svname") == "BACKEND"}
        row = summaries.get(backend)
        if row is None:
            raise RouterError(f"HAProxy has no backend {backend!r}; backends: {', '.join(sorted(summaries))}")
        algorithm = row.get("algo", "")
        if algorithm not in DYNAMIC_ALGORITHMS:
            raise RouterError(
                f"backend {backend!r} balances with {algorithm!r}, which refuses dynamic servers; "
                f"use one of {', '.join(sorted(DYNAMIC_ALGORITHMS))}"
            )

    async def add_server(self, backend: str, server: str, address: str, port: int, weight: int = 0) -> None:
        ref = server_ref(backend, server)
        target = f"{check_address(address)}:{check_port(port)}"
        async with self.changing():
            await self.command(
                f"add server {ref} {target} weight {check_weight(weight)} "
                f"{health_check_options(self.check_interval_ms)}",
                says("New server registered."),
            )
            if backend in self.affinity_backends:
                # 2.6 refuses `cookie` on `add server`; this gives the new server its dynamic cookie.
                await self.command(f"enable dynamic-cookie backend {backend}")
            await self.enable_health(backend, server)
            await self.enable(backend, server)

    async def set_shares(self, backend: str, shares: Mapping[str, Share]) -> None:
        """Set the per-server weights that give each arm its share, then read back the shares they give."""
        weights = weights_for_shares(shares)
        actual = await self.write_weights(backend, weights)
        realised = realised_percents(actual, shares)
        if realised != requested_percents(shares):
            asked = {arm: share.percent for arm, share in shares.items()}
            given = {arm: float(percent) for arm, percent in realised.items()}
            raise WeightMismatchError(
                f"backend {backend!r}: shares asked {asked}, read back {given} (weights {actual})"
            )

    async def drain(self, backend: str, server: str) -> None:
        async with self.changing():
            await self.command(f"set server {server_ref(backend, server)} state drain")

    async def remove_server(self, backend: str, server: str) -> None:
        """Put `server` in maintenance, wait (bounded) for its sessions to end, then delete it.

        A static server (one a reload turned from dynamic into a `server` line) is deleted the same way.
        """
        async with self.changing():
            await self.delete_server(backend, server)

    async def delete_server(self, backend: str, server: str) -> None:
        await self.disable(backend, server)
        deadline = time.monotonic() + self.drain_timeout_s
        while await self.current_sessions(backend, server) > 0:
            await pause_until(deadline, f"sessions of {backend}/{server} to end")
        while True:
            answer = await self.command(f"del server {server_ref(backend, server)}", lambda _: True)
            if answer.strip() == "Server deleted.":
                return
            if "still" not in answer:  # anything but "still has connections" is final
                raise RouterError(f"HAProxy refused 'del server {backend}/{server}': {answer.strip()}")
            await pause_until(deadline, f"connections of {backend}/{server} to close")

    async def server_states(self, backend: str) -> list[ServerState]:
        check_name(backend, "backend")
        rows = await self.show_stat()
        if not any(row["pxname"] == backend for row in rows):
            raise RouterError(f"HAProxy has no backend {backend!r}")
        return [server_state_of(row) for row in rows if row["pxname"] == backend and is_server_row(row)]

    # -- more than the protocol ------------------------------------------------------------------

    async def current_servers(self) -> dict[str, list[ServerSpec]]:
        """Every server HAProxy has now, by backend, with its current weight: what haproxy.cfg must list."""
        servers: dict[str, list[ServerSpec]] = {}
        for spec in parse_servers_state(await read_servers_state(self.socket_path, self.timeout_s)):
            servers.setdefault(spec.backend, []).append(spec)
        return servers

    @contextlib.asynccontextmanager
    async def changing(self) -> AsyncIterator[None]:
        """One change at a time; afterwards, whether it succeeded or not, record the state it left."""
        async with self.changes_lock:
            try:
                yield
            finally:
                await self.record_change()

    async def record_change(self) -> None:
        """Dump the server state, then run `on_change`. A failure here is logged and kept in
        `record_error`, not raised: the change itself is done, and retrying it would fail."""
        errors = []
        if self.state_file is not None:
            try:
                await self.dump_server_state()
            except (RouterError, OSError) as error:
                errors.append(f"cannot write the server-state file {self.state_file}: {error}")
        if self.on_change is not None:
            try:
                await self.on_change()
            except Exception as error:  # any failure of the hook: the change is done regardless
                errors.append(f"on_change failed: {error!r}")
        for problem in errors:
            log.error("after a change of HAProxy's servers: %s", problem)
        self.record_error = "; ".join(errors) or None

    async def set_weights(self, backend: str, weights: dict[str, int]) -> None:
        """Set each server's weight (HAProxy's units), read each back; WeightMismatchError on a difference."""
        actual = await self.write_weights(backend, weights)
        if actual != weights:
            raise WeightMismatchError(f"backend {backend!r}: weights set {weights}, read back {actual}")

    async def write_weights(self, backend: str, weights: Mapping[str, int]) -> dict[str, int]:
        """Set each server's weight, as one change; the weights then read back."""
        async with self.changing():
            for server, weight in weights.items():
                await self.set_weight(backend, server, weight)
            return {server: await self.get_weight(backend, server) for server in weights}

    async def get_weights(self, backend: str) -> dict[str, int]:
        """The current weight of every server of `backend`, in HAProxy's units."""
        return {state.server: state.weight for state in await self.server_states(backend)}

    async def set_weight(self, backend: str, server: str, weight: int) -> None:
        await self.command(f"set weight {server_ref(backend, server)} {check_weight(weight)}")

    async def get_weight(self, backend: str, server: str) -> int:
        answer = await self.command(f"get weight {server_ref(backend, server)}", is_weight_answer)
        return parse_get_weight(answer)[0]

    async def enable(self, backend: str, server: str) -> None:
        await self.command(f"enable server {server_ref(backend, server)}")

    async def disable(self, backend: str, server: str) -> None:
        """Maintenance: no new requests; requests in flight complete."""
        await self.command(f"disable server {server_ref(backend, server)}")

    async def enable_health(self, backend: str, server: str) -> None:
        await self.command(f"enable health {server_ref(backend, server)}")

    async def current_sessions(self, backend: str, server: str) -> int:
        for state in await self.server_states(backend):
            if state.server == server:
                return state.current_sessions
        raise RouterError(f"No such server: {backend}/{server}")

    async def show_stat(self) -> list[dict[str, str]]:
        """Every row of `show stat`, FRONTEND and BACKEND rows included."""
        return parse_show_stat(await self.command("show stat", starts_with("# pxname")))

    async def show_info(self) -> dict[str, str]:
        """`show info` as a dict; e.g. 'DroppedLogs' counts log lines HAProxy could not send."""
        return parse_show_info(await self.command("show info", starts_with("Name:")))

    async def dump_server_state(self, path: str | os.PathLike[str] | None = None) -> Path:
        """Write `show servers state` to the state file, so a reload keeps dynamic servers and weights."""
        target = Path(path) if path is not None else self.state_file
        if target is None:
            raise RouterError("no server-state file given to dump_server_state")
        write_atomically(target, await read_servers_state(self.socket_path, self.timeout_s))
        return target


def check_weight(weight: int) -> int:
    if isinstance(weight, bool) or not isinstance(weight, int) or not 0 <= weight <= MAX_WEIGHT:
        raise RouterError(f"a weight must be an integer within 0..{MAX_WEIGHT}, got {weight!r}")
    return weight


def check_port(port: int) -> int:
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        raise RouterError(f"a port must be an integer within 1..65535, got {port!r}")
    return port


def check_address(address: str) -> str:
    """An IP address (IPv6 in brackets) or a host name, else a RouterError."""
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        if not HOSTNAME_PATTERN.match(address):
            raise RouterError(f"invalid server address {address!r}") from None
        return address
    return f"[{parsed}]" if parsed.version == 6 else str(parsed)


async def pause_until(deadline: float, waiting_for: str) -> None:
    """Sleep a little, or raise RouterError once `deadline` (monotonic) has passed."""
    if time.monotonic() >= deadline:
        raise RouterError(f"timed out waiting for {waiting_for}")
    await asyncio.sleep(0.05)


# --------------------------------------------------------------------------------------------------
# The process
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StopTimeouts:
    """How long stop() waits after each signal before escalating."""

    graceful_s: float = 12.0  # SIGUSR1: finish requests in flight (haproxy.cfg's hard-stop-after is 10s)
    terminate_s: float = 3.0  # SIGTERM: close everything now


class HAProxyProcess:
    """HAProxy in master-worker mode (`haproxy -W -f cfg`): start or adopt, reload, stop.

    The master runs in its own session, so a Ctrl-C meant for `fm` does not reach it, and nothing ties
    it to `fm`: when `fm` dies (even by SIGKILL), HAProxy keeps serving. A later `fm` adopts it
    (`adopt()`) through the pidfile the config names; then it is no longer our child, and `stop()`
    and `reload()` work on it by pid. The worker exits when the master does, so stopping the master
    leaves nothing behind. HAProxy's output goes to `output_path` (default: the config path with
    suffix '.out'), which is read to explain a failed start or reload.

    The master ignores signals, or dies of them, while it re-executes itself: after its start and
    after each reload. reload() therefore waits until the master handles signals before sending one.
    """

    def __init__(
        self,
        config_path: str | os.PathLike[str],
        binary: str = "haproxy",
        *,
        admin_socket: str | os.PathLike[str] | None = None,
        output_path: str | os.PathLike[str] | None = None,
        start_timeout_s: float = 10.0,
        reload_timeout_s: float = 10.0,
        stop_timeouts: StopTimeouts = StopTimeouts(),  # frozen, so sharing the default is safe
    ) -> None:
        # Absolute, so that adopt() can recognise our HAProxy by its command line.
        self.config_path = Path(os.path.abspath(config_path))
        self.binary = binary
        self._admin_socket = Path(admin_socket) if admin_socket is not None else None
        self.output_path = Path(output_path) if output_path else self.config_path.with_suffix(".out")
        self.start_timeout_s = start_timeout_s
        self.reload_timeout_s = reload_timeout_s
        self.stop_timeouts = stop_timeouts
        self.process: asyncio.subprocess.Process | None = None
        self.adopted_pid: int | None = None  # the master we adopted: not our child

    @property
    def admin_socket(self) -> Path:
        """The admin socket: given, or read from the config's `stats socket` line."""
        if self._admin_socket is None:
            self._admin_socket = Path(self.config_setting(STATS_SOCKET_LINE, "stats socket"))
        return self._admin_socket

    @property
    def pidfile(self) -> Path | None:
        """The config's `pidfile`: HAProxy writes the master's pid there. None when there is none."""
        match = PIDFILE_LINE.search(self.config_text())
        return Path(match.group(1)) if match else None

    @property
    def state_file(self) -> Path | None:
        """The config's `server-state-file`, which reload() refreshes. None when there is none."""
        match = STATE_FILE_LINE.search(self.config_text())
        return Path(match.group(1)) if match else None

    def config_text(self) -> str:
        try:
            return self.config_path.read_text(encoding="utf-8")
        except OSError as error:
            raise RouterError(f"cannot read the HAProxy config {self.config_path}: {error}") from error

    def config_setting(self, pattern: re.Pattern[str], keyword: str) -> str:
        match = pattern.search(self.config_text())
        if match is None:
            raise RouterError(f"{self.config_path} has no '{keyword}' line")
        return match.group(1)

    @property
    def pid(self) -> int | None:
        """The master's pid while it runs."""
        if not self.running:
            return None
        return self.process.pid if self.process is not None else self.adopted_pid

    @property
    def running(self) -> bool:
        if self.process is not None:
            return self.process.returncode is None
        return self.adopted_pid is not None and process_alive(self.adopted_pid)

    @property
    def adopted(self) -> bool:
        """True when the running master was started by another process (an earlier `fm`)."""
        return self.process is None and self.running

    def executable(self) -> str:
        """The binary's full path, or MissingBinaryError with install advice."""
        found = shutil.which(self.binary)
        if found is None:
            raise MissingBinaryError(self.binary, package="haproxy")
        return found

    def check(self) -> None:
        """`haproxy -c -f cfg`; a RouterError with HAProxy's alerts when the config is invalid."""
        result = subprocess.run(
            [self.executable(), "-c", "-f", str(self.config_path)],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        if result.returncode != 0:
            raise RouterError(f"HAProxy rejects {self.config_path}:\n{alerts(result.stdout + result.stderr)}")

    # -- start and adopt ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Start HAProxy and return once its admin socket answers and its master handles signals."""
        if self.running:
            raise RouterError("HAProxy is already running")
        executable = self.executable()
        await asyncio.to_thread(self.check)
        await self.refuse_foreign_haproxy()
        self.admin_socket.parent.mkdir(parents=True, exist_ok=True)
        with self.output_path.open("wb") as output:
            self.process = await asyncio.create_subprocess_exec(
                executable,
                "-W",
                "-f",
                str(self.config_path),
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                # Its own session: the terminal's SIGINT (Ctrl-C on `fm up`) would stop it at once,
                # before `fm` could stop it gracefully; and nothing else of ours should reach it.
                start_new_session=True,
            )
        try:
            await self.wait_until_answering()
            await self.wait_until_master_ready(self.process.pid, time.monotonic() + self.start_timeout_s)
        except BaseException:
            await self.stop()
            raise

    async def refuse_foreign_haproxy(self) -> None:
        """HAProxy would silently take over the socket path of another instance: refuse instead."""
        if not self.admin_socket.exists():
            return
        try:
            await admin_command(self.admin_socket, "show info", timeout_s=1.0)
        except RouterError:
            return  # a stale socket file left by a HAProxy that is gone
        raise RouterError(f"another HAProxy already answers on {self.admin_socket}; stop it first")

    async def wait_until_answering(self) -> None:
        deadline = time.monotonic() + self.start_timeout_s
        while True:
            assert self.process is not None
            if self.process.returncode is not None:
                raise self.start_failure()
            with contextlib.suppress(RouterError):
                await admin_command(self.admin_socket, "show info", timeout_s=1.0)
                return
            if time.monotonic() >= deadline:
                raise RouterError(
                    f"HAProxy's admin socket {self.admin_socket} did not answer within "
                    f"{self.start_timeout_s}s:\n{self.output()}"
                )
            await asyncio.sleep(0.05)

    async def adopt(self) -> bool:
        """Take over the HAProxy an earlier `fm` started with this config; False when there is none.

        It is adopted when the pidfile names a live master whose command line is `haproxy -W ... -f
        <our config>`, and our admin socket answers from one of its workers. Nothing is started. When
        there is nothing to adopt, a stale pidfile and a dead admin socket are removed. A master
        that runs our config but whose socket stays silent is a RouterError: starting a second
        HAProxy beside it would fail or, worse, share its ports.
        """
        if self.running:
            raise RouterError("HAProxy is already running")
        pidfile = self.pidfile
        pid = read_pid(pidfile) if pidfile is not None else None
        if pid is None or not runs_haproxy_master(pid, self.config_path):
            self.remove_stale_files(pidfile)
            return False
        deadline = time.monotonic() + self.start_timeout_s
        while not await self.serves_admin_socket(pid):
            if not process_alive(pid):
                self.remove_stale_files(pidfile)
                return False
            await pause_until(
                deadline, f"the admin socket {self.admin_socket} of HAProxy (pid {pid}) to answer"
            )
        await self.wait_until_master_ready(pid, deadline)
        self.adopted_pid = pid
        return True

    async def serves_admin_socket(self, master_pid: int) -> bool:
        """True when the admin socket answers, from a worker of `master_pid`."""
        try:
            worker_pid = await self.worker_pid()
        except RouterError:
            return False
        return parent_pid(worker_pid) == master_pid

    def remove_stale_files(self, pidfile: Path | None) -> None:
        """Remove the pidfile and the admin socket of a HAProxy that is gone (a live socket is kept)."""
        if pidfile is not None:
            with contextlib.suppress(OSError):
                pidfile.unlink()
        with contextlib.suppress(OSError, RouterError):
            socket_path = self.admin_socket
            if socket_path.is_socket() and not socket_answers(socket_path):
                socket_path.unlink()

    async def worker_pid(self) -> int:
        """The pid of the worker that answers on the admin socket now."""
        info = parse_show_info(await admin_command(self.admin_socket, "show info", timeout_s=1.0))
        try:
            return int(info["Pid"])
        except (KeyError, ValueError):
            raise RouterError(f"'show info' on {self.admin_socket} names no Pid") from None

    async def wait_until_master_ready(self, pid: int, deadline: float) -> None:
        """Wait until the master handles SIGUSR1 and SIGUSR2; sent earlier, they are lost or kill it."""
        while not handles_signals(pid, signal.SIGUSR1, signal.SIGUSR2):
            if not process_alive(pid):
                raise RouterError(f"HAProxy's master (pid {pid}) exited:\n{alerts(self.output())}")
            await pause_until(deadline, f"HAProxy's master (pid {pid}) to handle signals")

    # -- reload ------------------------------------------------------------------------------------

    async def reload(self) -> None:
        """Reload HAProxy with the config now at `config_path`, without dropping a connection.

        Dumps the server state (so weights and admin states survive), checks the new config (a bad
        one is a RouterError and the running HAProxy is left untouched), sends SIGUSR2 to the master,
        and returns once a new worker answers on the admin socket and the master handles signals
        again. The master hands its listening sockets to the new worker itself (`-x sockpair@...`).
        """
        pid = self.pid
        if pid is None:
            raise RouterError("HAProxy is not running: nothing to reload")
        deadline = time.monotonic() + self.reload_timeout_s
        old_worker = await self.worker_pid()
        state_file = self.state_file
        if state_file is not None:
            write_atomically(state_file, await read_servers_state(self.admin_socket, timeout_s=5.0))
        await asyncio.to_thread(self.check)
        await self.wait_until_master_ready(pid, deadline)
        failed_before = failed_reloads(pid)
        output_before = self.output_size()
        os.kill(pid, signal.SIGUSR2)
        await self.wait_until_reloaded(pid, old_worker, failed_before, output_before, deadline)

    async def wait_until_reloaded(
        self, pid: int, old_worker: int, failed_before: int | None, output_before: int, deadline: float
    ) -> None:
        while True:
            if not process_alive(pid):
                raise RouterError(f"HAProxy's master exited while reloading:\n{self.output(output_before)}")
            ready = handles_signals(pid, signal.SIGUSR1, signal.SIGUSR2)
            with contextlib.suppress(RouterError):
                if ready and await self.worker_pid() != old_worker:
                    return
            failed_now = failed_reloads(pid)
            if ready and failed_before is not None and failed_now is not None and failed_now > failed_before:
                raise RouterError(
                    f"HAProxy refused the reload and kept the previous worker:\n"
                    f"{alerts(self.output(output_before))}"
                )
            if time.monotonic() >= deadline:
                raise RouterError(
                    f"no new HAProxy worker answered within {self.reload_timeout_s}s of the reload:\n"
                    f"{alerts(self.output(output_before))}"
                )
            await asyncio.sleep(0.05)

    # -- output ------------------------------------------------------------------------------------

    def start_failure(self) -> Exception:
        """The error that explains why HAProxy exited during start: a taken port, or its alerts."""
        output = self.output()
        return port_in_use_error(output) or RouterError(
            f"HAProxy exited with code {self.process.returncode if self.process else '?'} while starting:\n"
            f"{alerts(output)}"
        )

    def output(self, offset: int = 0) -> str:
        """HAProxy's output, from byte `offset` on."""
        try:
            with self.output_path.open("rb") as file:
                file.seek(offset)
                return file.read().decode("utf-8", errors="replace")
        except OSError:
            return ""

    def output_size(self) -> int:
        try:
            return self.output_path.stat().st_size
        except OSError:
            return 0

    # -- stop --------------------------------------------------------------------------------------

    async def stop(self) -> None:
        """Graceful stop (SIGUSR1), then SIGTERM, then SIGKILL, each after a timeout. Idempotent.

        An adopted master is not our child: it is signalled by pid and watched through /proc.
        """
        stopped_pid = self.pid
        for signal_number, timeout_s in (
            (signal.SIGUSR1, self.stop_timeouts.graceful_s),
            (signal.SIGTERM, self.stop_timeouts.terminate_s),
            (signal.SIGKILL, None),
        ):
            if not self.running:
                break
            if await self.signal_and_wait(signal_number, timeout_s):
                break
        self.adopted_pid = None
        if stopped_pid is not None:
            self.remove_own_pidfile(stopped_pid)

    def remove_own_pidfile(self, stopped_pid: int) -> None:
        """HAProxy leaves its pidfile behind; remove it when it still names the master we stopped."""
        with contextlib.suppress(OSError, RouterError):
            pidfile = self.pidfile
            if pidfile is not None and read_pid(pidfile) == stopped_pid:
                pidfile.unlink()

    async def signal_and_wait(self, signal_number: int, timeout_s: float | None) -> bool:
        """Signal the master until it exits; True when it did within `timeout_s` (None: wait for ever).

        The signal is repeated because a master that has just started re-executes itself into its
        "wait mode", and a signal that lands during that exec is lost. Repeating one is harmless.
        """
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            self.send_signal(signal_number)
            remaining = SIGNAL_REPEAT_S if deadline is None else deadline - time.monotonic()
            if remaining <= 0:
                return False
            if await self.wait_exit(min(remaining, SIGNAL_REPEAT_S)):
                return True

    def send_signal(self, signal_number: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            if self.process is not None:
                self.process.send_signal(signal_number)
            elif self.adopted_pid is not None:
                os.kill(self.adopted_pid, signal_number)

    async def wait_exit(self, timeout_s: float) -> bool:
        """True once the master has exited (at most `timeout_s` from now)."""
        if self.process is not None:
            try:
                await asyncio.wait_for(self.process.wait(), timeout_s)
            except TimeoutError:
                return False
            return True
        deadline = time.monotonic() + timeout_s
        while self.running:
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.02)
        return True

    async def __aenter__(self) -> HAProxyProcess:
        await self.start()
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        await self.stop()


# --------------------------------------------------------------------------------------------------
# Processes, seen through /proc (Linux); read_pid and process_alive come from fridaymorning.procfs
# --------------------------------------------------------------------------------------------------


def parent_pid(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def runs_haproxy_master(pid: int, config_path: Path) -> bool:
    """True when `pid` is a live `haproxy -W ... -f <config_path>` (a master-worker master)."""
    try:
        arguments = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
        cwd = os.readlink(f"/proc/{pid}/cwd")
    except OSError:
        return False
    if not arguments or not os.path.basename(arguments[0]).startswith("haproxy") or "-W" not in arguments:
        return False
    configs = [arguments[index + 1] for index, argument in enumerate(arguments[:-1]) if argument == "-f"]
    return any(os.path.normpath(os.path.join(cwd, config)) == str(config_path) for config in configs)


def handles_signals(pid: int, *signals: int) -> bool:
    """True when `pid` has a handler for each of `signals` and blocks none of them (/proc/PID/status)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text(encoding="ascii")
    except OSError:
        return False
    fields = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
    try:
        caught, blocked = int(fields["SigCgt"], 16), int(fields["SigBlk"], 16)
    except (KeyError, ValueError):
        return False
    mask = sum(1 << (number - 1) for number in signals)
    return caught & mask == mask and blocked & mask == 0


def failed_reloads(pid: int) -> int | None:
    """How many reloads the master has failed, from the HAPROXY_PROCESSES it passes itself; None if unknown.

    The master re-executes itself with this variable after every reload, so /proc/PID/environ has it.
    """
    try:
        environment = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return None
    for variable in environment:
        if variable.startswith(b"HAPROXY_PROCESSES="):
            for entry in variable.decode(errors="replace").split("|"):
                fields = dict(part.split("=", 1) for part in entry.split(";") if "=" in part)
                if fields.get("type") == "m" and fields.get("failedreloads", "").isdigit():
                    return int(fields["failedreloads"])
    return None


def socket_answers(socket_path: Path) -> bool:
    """True when something accepts connections on the Unix socket `socket_path`."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(1.0)
        try:
            probe.connect(str(socket_path))
        except OSError:
            return False
    return True


def port_in_use_error(output: str) -> PortInUseError | None:
    """A PortInUseError from HAProxy's 'cannot bind socket (Address already in use)' alert, if any."""
    for match in BIND_ERROR.finditer(output):
        if "in use" in match.group("reason"):
            host, port = parse_address(match.group("address"))
            return PortInUseError(host, port, f"HAProxy frontend {match.group('name')}")
    return None


def alerts(output: str) -> str:
    """HAProxy's ALERT lines (the reasons it refused), or all of its output when there are none."""
    found = [line for line in output.splitlines() if "[ALERT]" in line]
    return "\n".join(found) if found else output.strip()

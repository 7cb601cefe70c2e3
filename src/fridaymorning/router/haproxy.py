"""How fridaymorning talks to HAProxy: the process, its admin socket, and per-server weights.

- `HAProxyProcess` runs HAProxy as our child in master-worker mode (`-W`, foreground) and stops it
  gracefully, so no HAProxy process outlives us.
- `HAProxyRouter` implements the Router role over the admin socket: one command per connection, each
  answer checked against what that command answers on success. Anything else is a RouterError.
- `split_weights` turns a canary percentage into per-server weights.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import ipaddress
import math
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from fridaymorning.config import parse_address
from fridaymorning.errors import MissingBinaryError, PortInUseError, RouterError, WeightMismatchError
from fridaymorning.models import ServerState, ServerStatus
from fridaymorning.router._render import HEALTH_CHECK_FALL, HEALTH_CHECK_RISE

MAX_WEIGHT = 256
# The canary and stable weights sum to about this much, so each weight stays well under MAX_WEIGHT.
TARGET_TOTAL_WEIGHT = 200

# Backend and server names we send: no spaces, slashes or newlines can reach the admin socket.
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
HOSTNAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.-]{0,252}$")
GET_WEIGHT_ANSWER = re.compile(r"^(\d+) \(initial (\d+)\)$")
BIND_ERROR = re.compile(
    r"for (?:frontend|proxy) '?(?P<name>[^\s:']+)'?: cannot bind socket \((?P<reason>[^)]*)\) "
    r"for \[(?P<address>[^\]]+)\]"
)
STATS_SOCKET_LINE = re.compile(r"^\s*stats\s+socket\s+(\S+)", re.MULTILINE)

# How often stop() repeats a signal HAProxy's master may have missed.
SIGNAL_REPEAT_S = 0.5

# Balance algorithms that accept dynamic servers (HAProxy refuses `add server` with the others).
DYNAMIC_ALGORITHMS = frozenset({"roundrobin", "leastconn", "first", "random"})


# --------------------------------------------------------------------------------------------------
# Weights
# --------------------------------------------------------------------------------------------------


def split_weights(
    canary_percent: int, stable_servers: list[str], canary_servers: list[str]
) -> dict[str, int]:
    """Per-server weights that give the canary servers `canary_percent` of the traffic, exactly.

    Each arm gets a total of percent * K (K about 2, so the weights sum to about 200) and shares it evenly
    among its servers. K grows when an arm has more servers than weight, so that no server idles,
    but never so far that a weight exceeds 256. 0 % gives the canaries weight 0; 100 % the stable ones.
    """
    check_split(canary_percent, stable_servers, canary_servers)
    stable_percent = 100 - canary_percent
    scale = weight_scale([(canary_percent, len(canary_servers)), (stable_percent, len(stable_servers))])
    weights = spread(canary_percent * scale, canary_servers)
    weights.update(spread(stable_percent * scale, stable_servers))
    return weights


def check_split(canary_percent: int, stable_servers: list[str], canary_servers: list[str]) -> None:
    """Refuse a split that cannot be honoured."""
    if not 0 <= canary_percent <= 100:
        raise ValueError(f"canary_percent must be within 0..100, got {canary_percent}")
    if set(stable_servers) & set(canary_servers):
        raise ValueError("a server cannot be both stable and canary")
    if canary_percent > 0 and not canary_servers:
        raise ValueError(f"cannot send {canary_percent}% of the traffic to no canary server")
    if canary_percent < 100 and not stable_servers:
        raise ValueError(f"cannot send {100 - canary_percent}% of the traffic to no stable server")


def weight_scale(arms: list[tuple[int, int]]) -> int:
    """The K of split_weights for arms of (percent, server count)."""
    busy = [(percent, count) for percent, count in arms if percent > 0]
    wanted = max([TARGET_TOTAL_WEIGHT // 100, *(math.ceil(count / percent) for percent, count in busy)])
    allowed = min((MAX_WEIGHT * count) // percent for percent, count in busy)
    return min(wanted, allowed)


def spread(total: int, servers: list[str]) -> dict[str, int]:
    """Share `total` among `servers` as evenly as integers allow (the first ones get the remainder)."""
    if not servers:
        return {}
    base, remainder = divmod(total, len(servers))
    return {server: base + (1 if position < remainder else 0) for position, server in enumerate(servers)}


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


class HAProxyRouter:
    """The Router role over HAProxy's admin socket (`stats socket ... level admin`)."""

    def __init__(
        self,
        socket_path: str | os.PathLike[str],
        *,
        check_interval_ms: int = 1000,
        timeout_s: float = 5.0,
        drain_timeout_s: float = 30.0,
        state_file: str | os.PathLike[str] | None = None,
    ) -> None:
        self.socket_path = Path(socket_path)
        self.check_interval_ms = check_interval_ms
        self.timeout_s = timeout_s
        self.drain_timeout_s = drain_timeout_s
        self.state_file = Path(state_file) if state_file is not None else None

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
        await self.command(
            f"add server {ref} {target} weight {check_weight(weight)} check inter {self.check_interval_ms}ms "
            f"fall {HEALTH_CHECK_FALL} rise {HEALTH_CHECK_RISE}",
            says("New server registered."),
        )
        await self.enable_health(backend, server)
        await self.enable(backend, server)

    async def set_weights(self, backend: str, weights: dict[str, int]) -> None:
        for server, weight in weights.items():
            await self.set_weight(backend, server, weight)
        actual = {server: await self.get_weight(backend, server) for server in weights}
        if actual != weights:
            raise WeightMismatchError(f"backend {backend!r}: weights set {weights}, read back {actual}")

    async def get_weights(self, backend: str) -> dict[str, int]:
        return {state.server: state.weight for state in await self.server_states(backend)}

    async def drain(self, backend: str, server: str) -> None:
        await self.command(f"set server {server_ref(backend, server)} state drain")

    async def remove_server(self, backend: str, server: str) -> None:
        """Put `server` in maintenance, wait (bounded) for its sessions to end, then delete it."""
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
        answer = await self.command("show servers state", starts_with("1\n"))
        temporary = target.with_name(target.name + ".tmp")
        temporary.write_text(answer.strip() + "\n", encoding="utf-8")
        temporary.replace(target)  # atomic: a reload never reads half a file
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
    """HAProxy as our child, in master-worker mode in the foreground (`haproxy -W -f cfg`).

    The master is our child and the worker its child; the worker exits when the master does, so
    stopping the master leaves nothing behind. HAProxy's output goes to `output_path`
    (default: the config path with suffix '.out'), which is read to explain a failed start.
    """

    def __init__(
        self,
        config_path: str | os.PathLike[str],
        binary: str = "haproxy",
        *,
        admin_socket: str | os.PathLike[str] | None = None,
        output_path: str | os.PathLike[str] | None = None,
        start_timeout_s: float = 10.0,
        stop_timeouts: StopTimeouts = StopTimeouts(),  # frozen, so sharing the default is safe
    ) -> None:
        self.config_path = Path(config_path)
        self.binary = binary
        self._admin_socket = Path(admin_socket) if admin_socket is not None else None
        self.output_path = Path(output_path) if output_path else self.config_path.with_suffix(".out")
        self.start_timeout_s = start_timeout_s
        self.stop_timeouts = stop_timeouts
        self.process: asyncio.subprocess.Process | None = None

    @property
    def admin_socket(self) -> Path:
        """The admin socket: given, or read from the config's `stats socket` line."""
        if self._admin_socket is None:
            match = STATS_SOCKET_LINE.search(self.config_path.read_text(encoding="utf-8"))
            if match is None:
                raise RouterError(f"{self.config_path} has no 'stats socket' line")
            self._admin_socket = Path(match.group(1))
        return self._admin_socket

    @property
    def pid(self) -> int | None:
        """The master's pid while it runs."""
        return self.process.pid if self.running else None  # type: ignore[union-attr]

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.returncode is None

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

    async def start(self) -> None:
        """Start HAProxy and return once its admin socket answers."""
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
            )
        try:
            await self.wait_until_answering()
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

    def start_failure(self) -> Exception:
        """The error that explains why HAProxy exited during start: a taken port, or its alerts."""
        output = self.output()
        return port_in_use_error(output) or RouterError(
            f"HAProxy exited with code {self.process.returncode if self.process else '?'} while starting:\n"
            f"{alerts(output)}"
        )

    def output(self) -> str:
        try:
            return self.output_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""

    async def stop(self) -> None:
        """Graceful stop (SIGUSR1), then SIGTERM, then SIGKILL, each after a timeout. Idempotent."""
        for signal_number, timeout_s in (
            (signal.SIGUSR1, self.stop_timeouts.graceful_s),
            (signal.SIGTERM, self.stop_timeouts.terminate_s),
            (signal.SIGKILL, None),
        ):
            if not self.running:
                return
            if await self.signal_and_wait(signal_number, timeout_s):
                return

    async def signal_and_wait(self, signal_number: int, timeout_s: float | None) -> bool:
        """Signal the master until it exits; True when it did within `timeout_s` (None: wait for ever).

        The signal is repeated because a master that has just started re-executes itself into its
        "wait mode", and a signal that lands during that exec is lost. Repeating one is harmless.
        """
        assert self.process is not None
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal_number)
            remaining = SIGNAL_REPEAT_S if deadline is None else deadline - time.monotonic()
            if remaining <= 0:
                return False
            try:
                await asyncio.wait_for(self.process.wait(), min(remaining, SIGNAL_REPEAT_S))
            except TimeoutError:
                continue
            return True

    async def __aenter__(self) -> HAProxyProcess:
        await self.start()
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        await self.stop()


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

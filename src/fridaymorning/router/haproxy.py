"""How fridaymorning moves traffic in HAProxy: the Router role over the admin socket.

`HAProxyRouter` sends one command per connection and checks each answer against what that command
answers on success; anything else is a RouterError. It is told each version's share in percent, and
sets the per-server weights (router._weights) that give exactly those shares, then reads them back.
After each change it dumps the server state, so a reload by anyone keeps every weight. The process
itself (start, adopt, reload, stop) is router.process.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import ipaddress
import logging
import os
import re
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from fridaymorning.config import Config
from fridaymorning.errors import RouterError, WeightMismatchError
from fridaymorning.models import ServerState, ServerStatus
from fridaymorning.router._render import MAX_WEIGHT, health_check_options, render_haproxy_config
from fridaymorning.router._weights import realised_percents, requested_percents, weights_for_shares
from fridaymorning.router.base import ServerSpec, Share

log = logging.getLogger(__name__)

# Backend and server names we send: no spaces, slashes or newlines can reach the admin socket.
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
HOSTNAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.-]{0,252}$")
GET_WEIGHT_ANSWER = re.compile(r"^(\d+) \(initial (\d+)\)$")

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


class UnreachableError(RouterError):
    """The admin socket could not be reached, or did not answer in time: HAProxy refused nothing."""


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
            reader, writer = await open_admin(os.fspath(socket_path))
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
        raise UnreachableError(message) from None
    except OSError as error:
        raise UnreachableError(f"cannot reach the HAProxy admin socket {socket_path}: {error}") from error


ADMIN_TCP_PREFIX = "ipv4@"


async def open_admin(address: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A connection to an admin socket: a Unix socket path, or 'ipv4@HOST:PORT' (a `stats socket
    ipv4@...` line) for a HAProxy reached over TCP."""
    if address.startswith(ADMIN_TCP_PREFIX):
        host, port = admin_tcp_address(address)
        return await asyncio.open_connection(host, port)
    return await asyncio.open_unix_connection(address)


def admin_tcp_address(address: str) -> tuple[str, int]:
    """'ipv4@10.0.0.2:9999' → ('10.0.0.2', 9999); a RouterError when it is not an IPv4 address and port."""
    host, _, port = address[len(ADMIN_TCP_PREFIX) :].rpartition(":")
    try:
        return str(ipaddress.IPv4Address(host)), check_port(int(port))
    except ValueError:
        raise RouterError(f"expected ipv4@A.B.C.D:PORT for an admin address, got {address!r}") from None


def admin_address(url: str) -> str:
    """A configured admin endpoint as `admin_command` takes it: 'unix:///path' → '/path';
    'ipv4@host:port' stays as it is. A RouterError for anything else."""
    if url.startswith("unix://") and url[len("unix://") :].startswith("/"):
        return url[len("unix://") :]
    if url.startswith(ADMIN_TCP_PREFIX):
        admin_tcp_address(url)
        return url
    raise RouterError(f"expected unix:///ABSOLUTE/PATH or ipv4@A.B.C.D:PORT, got {url!r}")


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
        # A Unix socket's path, or 'ipv4@HOST:PORT' (Path keeps that text as it is).
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

    async def check_every_instance(self) -> None:
        """One instance: each change raises when it fails, so nothing is left to check."""

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

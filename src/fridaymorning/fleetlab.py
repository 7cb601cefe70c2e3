"""HAProxy fleets on one machine, for the fleet tests and `bench/faults.py`: network namespaces
joined to this one by veth pairs, and HAProxy processes that fridaymorning does not own (a team's,
started as `haproxy -W -f theirs -f ours`, optionally inside a namespace).

Every namespace and veth gets a random suffix, so two runs never collide; `remove_namespaces` takes
them away again. Needs root (`ip netns`), iproute2 and util-linux's `nsenter`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fridaymorning.errors import MissingBinaryError, RouterError
from fridaymorning.logformat import COMPACT_LOG_FORMAT
from fridaymorning.procfs import handles_signals
from fridaymorning.router.haproxy import admin_command

# How long a HAProxy may take to answer on its admin socket, or to start a new worker.
DEADLINE_S = 120.0


# The `defaults` section of every team's HAProxy here (fleet instances and the fleet tests' own).
TEAM_DEFAULTS = """\
defaults
    mode http
    timeout connect 2s
    timeout client 30s
    timeout server 30s
"""

# One instance of a fleet, as its team would write it: an admin socket, logs to the one collector
# tagged with the instance's name (`log-send-hostname`), and a frontend sending everything to our
# backend `web`, which it loads from fridaymorning's file (a second `-f`).
INSTANCE_CONFIG = (
    """\
global
    stats socket {admin} mode 600 level admin
    log {collector} local0
    log-send-hostname {name}
    maxconn 500
"""
    + TEAM_DEFAULTS
    + """\
frontend www
    bind {address}:{port}
    log global
    log-format "{log_format}"
    default_backend web
"""
)


def instance_config(*, admin: str, collector: str, name: str, address: str, port: int) -> str:
    """INSTANCE_CONFIG for one instance: `admin` a Unix path or 'ipv4@A.B.C.D:PORT'."""
    return INSTANCE_CONFIG.format(
        admin=admin, collector=collector, name=name, address=address, port=port, log_format=COMPACT_LOG_FORMAT
    )


# The versioned demo app listening on `host` (an address every namespace routes to): v1, v2… answer
# well; a version named broken… answers 500.
APP_ON_HOST = (
    "import os, runpy, sys\n"
    "port, version, host = sys.argv[1], sys.argv[2], sys.argv[3]\n"
    "os.environ['FM_DEMO_ERROR_RATE'] = '1' if version.startswith('broken') else '0'\n"
    "os.environ['FM_DEMO_LATENCY_FACTOR'] = '0.2'\n"
    "sys.argv = ['app', '--host', host, '--port', port, '--version', version]\n"
    "runpy.run_module('fridaymorning.demo.app', run_name='__main__')\n"
)


def app_command(host: str) -> list[str]:
    """The argv template (`platform.command`) of the demo app on `host`."""
    return [sys.executable, "-c", APP_ON_HOST, "{port}", "{version}", host]


def binary(name: str, package: str) -> str:
    """The path of `name`, or MissingBinaryError saying how to install it."""
    path = shutil.which(name)
    if path is None:
        raise MissingBinaryError(name, package=package)
    return path


async def until(condition: Callable[[], Awaitable[bool]], what: str, timeout_s: float = DEADLINE_S) -> None:
    """Await `condition()` until it is true; a RouterError past `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not await condition():
        if time.monotonic() > deadline:
            raise RouterError(f"not within {timeout_s:g} s: {what}")
        await asyncio.sleep(0.05)


class TeamHAProxy:
    """A HAProxy someone else runs: `haproxy -W -f theirs [-f ours]`, optionally inside a network
    namespace (`nsenter --net=...`), in its own session. kill() is a crash; reload() is SIGUSR2."""

    def __init__(self, configs: Sequence[Path], admin: str, output: Path, netns: str | None = None) -> None:
        self.configs = list(configs)
        self.admin = admin  # a Unix path or 'ipv4@A.B.C.D:PORT'
        self.output = output
        self.netns = netns
        self.process: subprocess.Popen[bytes] | None = None

    def argv(self) -> list[str]:
        argv = [binary("haproxy", "haproxy"), "-W"]
        for config in self.configs:
            argv += ["-f", str(config)]
        if self.netns is not None:
            argv = [binary("nsenter", "util-linux"), f"--net=/var/run/netns/{self.netns}", *argv]
        return argv

    async def start(self) -> None:
        with self.output.open("ab") as output:
            self.process = subprocess.Popen(
                self.argv(),
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        await until(self.answers, f"HAProxy's admin socket {self.admin} (output in {self.output})")

    async def answers(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise RouterError(f"HAProxy exited: {self.output.read_text(errors='replace')}")
        try:
            await admin_command(self.admin, "show info", 1.0)
        except RouterError:
            return False
        return True

    async def worker_pid(self) -> int:
        answer = await admin_command(self.admin, "show info", 2.0)
        return int(next(line.split(":")[1] for line in answer.splitlines() if line.startswith("Pid:")))

    async def reload(self) -> None:
        """SIGUSR2 to the master (it reads the files again), then wait for a new worker."""
        assert self.process is not None
        before = await self.worker_pid()
        master = self.process.pid

        async def ready() -> bool:
            return handles_signals(master, signal.SIGUSR2)

        await until(ready, "the master to handle SIGUSR2")
        os.kill(master, signal.SIGUSR2)

        async def new_worker() -> bool:
            with contextlib.suppress(RouterError, StopIteration, ValueError):
                return await self.worker_pid() != before
            return False

        await until(new_worker, "a new HAProxy worker after the reload")

    def kill(self) -> None:
        """A crash: SIGKILL to the master and its worker."""
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=DEADLINE_S)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()


@dataclass(frozen=True)
class Namespace:
    """A network namespace joined to this one by a veth pair: `host_address` on our side,
    `address` inside; its default route goes through us, so it reaches every address of ours."""

    name: str
    host_veth: str
    host_address: str
    address: str


def ip(*args: str) -> None:
    subprocess.run([binary("ip", "iproute2"), *args], check=True, capture_output=True, timeout=30)


def free_subnet() -> int:
    """A second octet N such that no address of this machine lies in 10.N.0.0/16."""
    taken = subprocess.run(["ip", "-4", "-o", "addr"], capture_output=True, text=True, check=True).stdout
    for _ in range(200):
        octet = 100 + secrets.randbelow(150)
        if f" 10.{octet}." not in taken:
            return octet
    raise AssertionError("no free 10.N.0.0/16 subnet for the test's namespaces")


def create_namespaces(count: int) -> list[Namespace]:
    """`count` namespaces, each with a veth pair, addresses in a free 10.N.0.0/16, and a default
    route through this namespace; partly made ones are removed again when a step fails."""
    suffix, octet = secrets.token_hex(3), free_subnet()
    made: list[Namespace] = []
    try:
        for index in range(1, count + 1):
            namespace = Namespace(
                name=f"fmfleet-{suffix}-{index}",
                host_veth=f"fv{suffix}{index}",
                host_address=f"10.{octet}.{index}.1",
                address=f"10.{octet}.{index}.2",
            )
            made.append(namespace)
            inner = f"fi{suffix}{index}"
            ip("netns", "add", namespace.name)
            ip("link", "add", namespace.host_veth, "type", "veth", "peer", "name", inner)
            ip("link", "set", inner, "netns", namespace.name)
            ip("addr", "add", f"{namespace.host_address}/30", "dev", namespace.host_veth)
            ip("link", "set", namespace.host_veth, "up")
            inside = ("-n", namespace.name)
            ip(*inside, "addr", "add", f"{namespace.address}/30", "dev", inner)
            ip(*inside, "link", "set", inner, "up")
            ip(*inside, "link", "set", "lo", "up")
            ip(*inside, "route", "add", "default", "via", namespace.host_address)
    except BaseException:
        remove_namespaces(made)
        raise
    return made


def remove_namespaces(namespaces: Sequence[Namespace]) -> None:
    """Delete each namespace's veth pair (both ends) and the namespace itself; missing ones are fine."""
    for namespace in namespaces:
        with contextlib.suppress(subprocess.CalledProcessError):
            ip("link", "del", namespace.host_veth)
        with contextlib.suppress(subprocess.CalledProcessError):
            ip("netns", "del", namespace.name)


async def count_requests(
    client: Any, url: str, tally: dict[str, int], stop: asyncio.Event, pause_s: float = 0.01
) -> None:
    """GET `url` until `stop`, counting answers by status ('200', '503', …) and 'transport' failures."""
    while not stop.is_set():
        try:
            response = await client.get(url)
            key = str(response.status_code)
        except Exception:  # any failure to get an answer at all
            key = "transport"
        tally[key] = tally.get(key, 0) + 1
        await asyncio.sleep(pause_s)


@contextlib.asynccontextmanager
async def requests_while(client: Any, urls: dict[str, str]) -> AsyncIterator[dict[str, dict[str, int]]]:
    """Requests to each of `urls` (name → url) while the block runs; yields the tallies by name."""
    stop = asyncio.Event()
    tallies: dict[str, dict[str, int]] = {name: {} for name in urls}
    tasks = [
        asyncio.create_task(count_requests(client, url, tallies[name], stop)) for name, url in urls.items()
    ]
    try:
        yield tallies
    finally:
        stop.set()
        await asyncio.gather(*tasks)

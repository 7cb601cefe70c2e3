"""Helpers for HAProxy instances fridaymorning does not own: a team's HAProxy loading our file with a
second `-f`, network namespaces joined to this one by veth pairs, and a self-signed certificate.

Every namespace and veth gets a random suffix, so two test runs never collide, and is removed at
teardown. Traffic goes only to the addresses of these namespaces, or to loopback.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import signal
import subprocess
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from fridaymorning.errors import RouterError
from fridaymorning.router.haproxy import admin_command
from fridaymorning.testing import EVENT_DEADLINE_S, wait_for


def required_binary(name: str, package: str) -> str:
    """The path of `name`, or fail the test with the command that installs it."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"'{name}' is not installed. Install it with: sudo apt-get install -y {package}")
    return path


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
        argv = [required_binary("haproxy", "haproxy"), "-W"]
        for config in self.configs:
            argv += ["-f", str(config)]
        if self.netns is not None:
            argv = [required_binary("nsenter", "util-linux"), f"--net=/var/run/netns/{self.netns}", *argv]
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
        await wait_for(self.answers, f"HAProxy's admin socket {self.admin} (output in {self.output})")

    async def answers(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise AssertionError(f"HAProxy exited: {self.output.read_text(errors='replace')}")
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
        await wait_for(lambda: handles_usr2(self.process.pid), "the master to handle SIGUSR2")  # type: ignore[union-attr]
        os.kill(self.process.pid, signal.SIGUSR2)

        async def new_worker() -> bool:
            with contextlib.suppress(RouterError, StopIteration, ValueError):
                return await self.worker_pid() != before
            return False

        await wait_for(new_worker, "a new HAProxy worker after the reload")

    def kill(self) -> None:
        """A crash: SIGKILL to the master and its worker."""
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=EVENT_DEADLINE_S)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()


def handles_usr2(pid: int) -> bool:
    """True once the master has installed its SIGUSR2 handler (signals sent earlier are lost)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    caught = next(line.split()[1] for line in status.splitlines() if line.startswith("SigCgt:"))
    return bool(int(caught, 16) & (1 << (signal.SIGUSR2 - 1)))


@pytest.fixture
def team_haproxies() -> Iterator[Callable[..., TeamHAProxy]]:
    """A factory of TeamHAProxy; every one is stopped at teardown."""
    made: list[TeamHAProxy] = []

    def make(*args: Any, **kwargs: Any) -> TeamHAProxy:
        made.append(TeamHAProxy(*args, **kwargs))
        return made[-1]

    yield make
    for haproxy in made:
        haproxy.stop()


@pytest.fixture
def self_signed_pem() -> Callable[[Path], Path]:
    """`self_signed_pem(directory)`: see make_self_signed_pem."""
    return make_self_signed_pem


def make_self_signed_pem(directory: Path) -> Path:
    """A key and a self-signed certificate for 'localhost', in one PEM file as HAProxy's `crt` wants."""
    openssl = required_binary("openssl", "openssl")
    key, cert = directory / "key.pem", directory / "cert.pem"
    subprocess.run(
        [
            openssl,
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    pem = directory / "site.pem"
    pem.write_bytes(cert.read_bytes() + key.read_bytes())
    os.chmod(pem, 0o600)
    return pem


# --------------------------------------------------------------------------------------------------
# Network namespaces
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Namespace:
    """A network namespace joined to this one by a veth pair: `host_address` on our side,
    `address` inside; its default route goes through us, so it reaches every address of ours."""

    name: str
    host_veth: str
    host_address: str
    address: str


def ip(*args: str) -> None:
    subprocess.run([required_binary("ip", "iproute2"), *args], check=True, capture_output=True, timeout=30)


def free_subnet() -> int:
    """A second octet N such that no address of this machine lies in 10.N.0.0/16."""
    taken = subprocess.run(["ip", "-4", "-o", "addr"], capture_output=True, text=True, check=True).stdout
    for _ in range(200):
        octet = 100 + secrets.randbelow(150)
        if f" 10.{octet}." not in taken:
            return octet
    raise AssertionError("no free 10.N.0.0/16 subnet for the test's namespaces")


@pytest.fixture
def namespaces() -> Iterator[Callable[[int], list[Namespace]]]:
    """`namespaces(n)`: n network namespaces, each with its own veth pair; removed at teardown."""
    if os.geteuid() != 0:
        pytest.fail("fleet tests create network namespaces and need root (run them as root)")
    made: list[Namespace] = []

    def make(count: int) -> list[Namespace]:
        suffix, octet = secrets.token_hex(3), free_subnet()
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
        return made[-count:]

    yield make
    for namespace in made:
        with contextlib.suppress(subprocess.CalledProcessError):
            ip("link", "del", namespace.host_veth)  # takes its peer with it
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


@pytest.fixture
def background_requests() -> Callable[..., Any]:
    """`async with background_requests(client, {name: url}) as tallies`: see requests_while."""
    return requests_while


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

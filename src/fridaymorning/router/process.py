"""The HAProxy process: start it or adopt it, reload it without dropping a connection, stop it.

`HAProxyProcess` runs HAProxy in master-worker mode (`-W`, foreground, in its own session) and adopts
one a previous `fm` left running: the data plane never depends on the controller being alive. It
uses the admin socket only to learn which worker answers, and to dump the server state before a
reload; moving traffic is the Router's work (router.haproxy). It watches the master through /proc.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from fridaymorning.config import parse_address
from fridaymorning.errors import MissingBinaryError, PortInUseError, RouterError
from fridaymorning.procfs import (
    handles_signals,
    parent_pid,
    process_alive,
    read_cmdline,
    read_cwd,
    read_environ,
    read_pid,
)
from fridaymorning.router.haproxy import (
    admin_command,
    parse_show_info,
    pause_until,
    read_servers_state,
    write_atomically,
)

BIND_ERROR = re.compile(
    r"for (?:frontend|proxy) '?(?P<name>[^\s:']+)'?: cannot bind socket \((?P<reason>[^)]*)\) "
    r"for \[(?P<address>[^\]]+)\]"
)
STATS_SOCKET_LINE = re.compile(r"^\s*stats\s+socket\s+(\S+)", re.MULTILINE)
STATE_FILE_LINE = re.compile(r"^\s*server-state-file\s+(\S+)", re.MULTILINE)
PIDFILE_LINE = re.compile(r"^\s*pidfile\s+(\S+)", re.MULTILINE)

# How often stop() repeats a signal HAProxy's master may have missed.
SIGNAL_REPEAT_S = 0.5


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
# What the master tells through /proc and its output
# --------------------------------------------------------------------------------------------------


def runs_haproxy_master(pid: int, config_path: Path) -> bool:
    """True when `pid` is a live `haproxy -W ... -f <config_path>` (a master-worker master)."""
    arguments, cwd = read_cmdline(pid), read_cwd(pid)
    if not arguments or cwd is None:
        return False
    if not os.path.basename(arguments[0]).startswith("haproxy") or "-W" not in arguments:
        return False
    configs = [arguments[index + 1] for index, argument in enumerate(arguments[:-1]) if argument == "-f"]
    return any(os.path.normpath(os.path.join(cwd, config)) == str(config_path) for config in configs)


def failed_reloads(pid: int) -> int | None:
    """How many reloads the master has failed, from the HAPROXY_PROCESSES it passes itself; None if unknown.

    The master re-executes itself with this variable after every reload, so /proc/PID/environ has it.
    """
    for variable in read_environ(pid) or ():
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

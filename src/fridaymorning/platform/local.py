"""local:// — each instance is a subprocess of fm, listening on a free loopback port.

Lifecycle guarantees:
- Children are started with an argv (never a shell), in their own session, so a Ctrl-C on the terminal reaches
  fm only and fm stops them in order.
- On Linux no child outlives fm, even after a SIGKILL of fm: each child runs with PR_SET_PDEATHSIG=SIGKILL
  (see PDEATHSIG_WRAPPER for why a wrapper rather than a preexec_fn).
- Given a workdir, running instances are recorded in a JSON file there, so a later fm can clean up
  (`cleanup_stale`) what an earlier one left behind on a platform without PDEATHSIG.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import httpx

from fridaymorning.config import PlatformConfig
from fridaymorning.errors import PlatformError
from fridaymorning.models import VERSION_PATTERN, Instance, server_name

log = logging.getLogger(__name__)

STATE_FILE_NAME = "local-instances.json"
HEALTH_POLL_INTERVAL_S = 0.1
HEALTH_REQUEST_TIMEOUT_S = 1.0
STDERR_TAIL_LINES = 15
STDERR_TAIL_BYTES = 8192
EXIT_CODE_NOT_EXECUTABLE = 127

# Why a wrapper and not preexec_fn: preexec_fn runs Python between fork and exec, which the subprocess docs
# call unsafe when the parent has threads, and fm has them (asyncio's child watcher starts one per child,
# httpx/DNS use executors). A forked child that inherits a held lock can deadlock before exec. This wrapper
# is a fresh interpreter (-I -S: no site, no env influence, ~15 ms) that sets the flag and execs the real
# program, so the pid, argv and /proc/<pid>/cmdline are the program's own. `setpriv --pdeathsig` would do
# the same but needs util-linux >= 2.33, and a Python we know is there.
# Checking getppid() after prctl closes the race where fm dies between fork and prctl.
# Caveat: the kernel sends the signal when the *thread* that forked exits, so LocalPlatform must be used
# from an event loop in a long-lived thread (normally the main thread).
PDEATHSIG_WRAPPER = """\
import ctypes, os, signal, sys
PR_SET_PDEATHSIG = 1
parent_pid, program, argv = int(sys.argv[1]), sys.argv[2], sys.argv[2:]
libc = ctypes.CDLL(None, use_errno=True)
if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
    sys.exit(f"fridaymorning: prctl(PR_SET_PDEATHSIG) failed: errno {ctypes.get_errno()}")
if os.getppid() != parent_pid:
    sys.exit("fridaymorning: fm exited before the instance started")
try:
    os.execvp(program, argv)
except OSError as error:
    sys.stderr.write(f"fridaymorning: cannot execute {program!r}: {error.strerror}\\n")
    sys.exit(127)
"""


def build_argv(template: Sequence[str], *, port: int, version: str, index: int) -> list[str]:
    """Format each element of the command template; one element stays one argument (no shell splitting)."""
    return [part.format(port=port, version=version, index=index) for part in template]


def build_env(
    extra: Mapping[str, str], *, port: int, version: str, index: int, base: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The child's environment: fm's own, then the configured `extra`, then FM_VERSION/FM_PORT/FM_INDEX."""
    env = dict(os.environ if base is None else base)
    env.update(extra)
    env.update(FM_VERSION=version, FM_PORT=str(port), FM_INDEX=str(index))
    return env


def spawn_argv(argv: Sequence[str], parent_pid: int | None = None) -> list[str]:
    """The argv actually executed: on Linux, `argv` behind the PDEATHSIG wrapper; elsewhere `argv` itself."""
    if not sys.platform.startswith("linux"):
        return list(argv)
    parent = os.getpid() if parent_pid is None else parent_pid
    return [sys.executable, "-I", "-S", "-c", PDEATHSIG_WRAPPER, str(parent), *argv]


def find_program(program: str, env: Mapping[str, str]) -> str | None:
    """The path `program` would be executed from, or None when it is missing or not executable."""
    if os.sep in program:
        return program if os.path.isfile(program) and os.access(program, os.X_OK) else None
    return shutil.which(program, path=env.get("PATH", os.defpath))


def free_port(host: str) -> int:
    """A TCP port that is free on `host` right now. Another program may take it before the child binds it."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def tail_lines(stream: IO[bytes], max_lines: int = STDERR_TAIL_LINES) -> str:
    """The last lines written to `stream` (a regular file), decoded leniently."""
    size = os.fstat(stream.fileno()).st_size
    start = max(0, size - STDERR_TAIL_BYTES)
    data = os.pread(stream.fileno(), size - start, start)
    lines = data.decode("utf-8", errors="replace").splitlines()
    return "\n".join(lines[-max_lines:])


def looks_like_address_in_use(stderr_text: str) -> bool:
    """True when a child's stderr says its port was taken (the free-port race)."""
    text = stderr_text.lower()
    return "address already in use" in text or "eaddrinuse" in text


def describe_exit(returncode: int) -> str:
    """'exit code 3' or 'killed by SIGKILL' for an asyncio return code."""
    if returncode >= 0:
        return f"exit code {returncode}"
    try:
        return f"killed by {signal.Signals(-returncode).name}"
    except ValueError:
        return f"killed by signal {-returncode}"


def signal_group(pid: int, signum: int) -> None:
    """Signal the child's whole process group (its pgid is its pid: start_new_session), so helpers it spawned
    stop with it. A group that is already gone is not an error."""
    with contextlib.suppress(ProcessLookupError):
        try:
            os.killpg(pid, signum)
        except PermissionError:
            os.kill(pid, signum)


@dataclass(slots=True)
class _Child:
    """A child process started by LocalPlatform, with what is needed to stop it and explain its failure."""

    instance: Instance
    process: asyncio.subprocess.Process
    argv: list[str]
    stderr: IO[bytes]
    stdout: IO[bytes] | None


class _StartFailed(Exception):
    """One attempt to start a replica failed; `port_taken` says whether to retry on another port."""

    def __init__(self, message: str, *, port_taken: bool) -> None:
        super().__init__(message)
        self.port_taken = port_taken


class LocalPlatform:
    """Starts instances of a version as local subprocesses on free ports of `host`.

    `workdir`, when given, receives the instances' stdout/stderr logs (`logs/`) and the running-instances
    file (STATE_FILE_NAME). Without it, stderr goes to an anonymous temporary file and stdout is discarded.
    """

    def __init__(self, config: PlatformConfig, host: str = "127.0.0.1", workdir: str | None = None) -> None:
        self._config = config
        self._host = host
        self._workdir = Path(workdir) if workdir is not None else None
        self._children: dict[int, _Child] = {}
        self._client: httpx.AsyncClient | None = None

    @property
    def instances(self) -> list[Instance]:
        """The instances this platform started and has not stopped yet."""
        return [child.instance for child in self._children.values()]

    async def start(self, version: str, replicas: int) -> list[Instance]:
        """Start `replicas` instances of `version` concurrently and wait until each is healthy.

        On any failure, the replicas already started are stopped and PlatformError is raised.
        """
        if not VERSION_PATTERN.match(version):
            raise PlatformError(f"cannot start version {version!r}: not a valid version token")
        if replicas < 1:
            raise PlatformError(
                f"cannot start version {version}: replicas must be at least 1, got {replicas}"
            )
        deadline = asyncio.get_running_loop().time() + self._config.health_timeout_s
        results = await asyncio.gather(
            *(self._start_replica(version, index, deadline) for index in range(1, replicas + 1)),
            return_exceptions=True,
        )
        started = [result for result in results if isinstance(result, _Child)]
        failures = [result for result in results if isinstance(result, BaseException)]
        if failures:
            await self._stop_children(started)
            raise failures[0]
        return [child.instance for child in started]

    async def stop(self, instances: list[Instance]) -> None:
        """SIGTERM each instance's process group, SIGKILL after stop_grace_s, and reap it.

        Instances this platform did not start are skipped with a warning: without owning the process we
        could neither reap it nor be sure its pid was not reused.
        """
        children = []
        for instance in instances:
            child = self._children.get(int(instance.ref))
            if child is None:
                log.warning(
                    "not stopping %s (pid %s): not started by this platform", instance.server, instance.ref
                )
            else:
                children.append(child)
        await self._stop_children(children)

    async def health(self, instance: Instance) -> bool:
        """True when GET http://host:port{health_path} answers 2xx within a second."""
        url = f"http://{_url_host(instance.host)}:{instance.port}{self._config.health_path}"
        try:
            response = await self._http().get(url)
        except httpx.HTTPError:
            return False
        return response.is_success

    async def close(self) -> None:
        """Stop every instance still running and release the HTTP client."""
        await self._stop_children(list(self._children.values()))
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def _start_replica(self, version: str, index: int, deadline: float) -> _Child:
        """Start one replica, retrying once on another port when the free-port race was lost."""
        for attempt in (1, 2):
            child = await self._spawn(version, index, free_port(self._host))
            try:
                await self._wait_healthy(child, deadline)
                return child
            except _StartFailed as failure:
                await self._stop_children([child])
                if failure.port_taken and attempt == 1:
                    log.info("%s lost its port to another program; retrying on another port", child.instance)
                    continue
                raise PlatformError(str(failure)) from None
            except BaseException:
                await self._stop_children([child])
                raise
        raise AssertionError("unreachable: the second attempt returns or raises")

    async def _spawn(self, version: str, index: int, port: int) -> _Child:
        """Launch the command for one instance and register it, so close() stops it whatever happens next."""
        argv = build_argv(self._config.command, port=port, version=version, index=index)
        env = build_env(self._config.env, port=port, version=version, index=index)
        if find_program(argv[0], env) is None:
            raise PlatformError(
                f"cannot start version {version}: program {argv[0]!r} was not found or is not executable"
            )
        stderr, stdout = self._open_logs(server_name(version, index))
        try:
            process = await asyncio.create_subprocess_exec(
                *spawn_argv(argv),
                env=env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=stdout if stdout is not None else asyncio.subprocess.DEVNULL,
                stderr=stderr,
                start_new_session=True,
            )
        except OSError as error:
            _close_logs(stderr, stdout)
            raise PlatformError(f"cannot start version {version}: {argv[0]!r}: {error.strerror}") from error
        instance = Instance(version=version, index=index, host=self._host, port=port, ref=str(process.pid))
        child = _Child(instance, process, argv, stderr, stdout)
        self._children[process.pid] = child
        self._write_state()
        return child

    async def _wait_healthy(self, child: _Child, deadline: float) -> None:
        """Poll the health URL until 2xx; raise _StartFailed if the child exits or the deadline passes."""
        loop = asyncio.get_running_loop()
        while True:
            if child.process.returncode is not None:
                raise self._exited_failure(child)
            if await self.health(child.instance):
                return
            if loop.time() >= deadline:
                break
            await asyncio.sleep(HEALTH_POLL_INTERVAL_S)
        if child.process.returncode is not None:
            raise self._exited_failure(child)
        raise _StartFailed(
            f"version {child.instance.version} ({child.argv[0]}, pid {child.process.pid}) did not answer "
            f"GET {self._config.health_path} with 2xx within {self._config.health_timeout_s:g}s "
            f"(still running, now stopped); last lines of its stderr:\n{tail_lines(child.stderr)}",
            port_taken=False,
        )

    def _exited_failure(self, child: _Child) -> _StartFailed:
        """The failure of a child that exited before it became healthy."""
        stderr_tail = tail_lines(child.stderr)
        returncode = child.process.returncode
        assert returncode is not None
        return _StartFailed(
            f"version {child.instance.version} ({child.argv[0]}) exited with {describe_exit(returncode)} "
            f"before it became healthy; last lines of its stderr:\n{stderr_tail}",
            port_taken=looks_like_address_in_use(stderr_tail),
        )

    async def _stop_children(self, children: list[_Child]) -> None:
        """Stop the children concurrently, then forget them and rewrite the state file."""
        if not children:
            return
        await asyncio.gather(*(self._terminate(child) for child in children))
        for child in children:
            self._children.pop(child.process.pid, None)
            _close_logs(child.stderr, child.stdout)
        self._write_state()

    async def _terminate(self, child: _Child) -> None:
        """SIGTERM, then SIGKILL after the grace period; always wait, so no zombie is left."""
        process = child.process
        if process.returncode is None:
            signal_group(process.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), self._config.stop_grace_s)
            except TimeoutError:
                log.warning(
                    "%s did not stop within %ss; killing it", child.instance.server, self._config.stop_grace_s
                )
                signal_group(process.pid, signal.SIGKILL)
        await process.wait()

    def _http(self) -> httpx.AsyncClient:
        """One client for every health check; trust_env=False so a proxy setting never catches loopback."""
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=HEALTH_REQUEST_TIMEOUT_S, trust_env=False)
        return self._client

    def _open_logs(self, server: str) -> tuple[IO[bytes], IO[bytes] | None]:
        """(stderr, stdout) files for one instance; stderr is a real file, never a pipe that could fill up."""
        if self._workdir is None:
            return tempfile.TemporaryFile(prefix=f"fm-{server}-"), None
        logs = self._workdir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        return open(logs / f"{server}.stderr.log", "w+b"), open(logs / f"{server}.stdout.log", "wb")

    def _write_state(self) -> None:
        """Record the running instances in workdir (atomically), or remove the file when none run."""
        if self._workdir is None:
            return
        path = self._workdir / STATE_FILE_NAME
        if not self._children:
            path.unlink(missing_ok=True)
            return
        entries = [_state_entry(child) for child in self._children.values()]
        self._workdir.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps({"fm_pid": os.getpid(), "instances": entries}, indent=2))
        os.replace(temporary, path)


def _state_entry(child: _Child) -> dict[str, object]:
    instance = child.instance
    return {
        "pid": child.process.pid,
        "version": instance.version,
        "index": instance.index,
        "host": instance.host,
        "port": instance.port,
        "argv": child.argv,
    }


def _close_logs(stderr: IO[bytes], stdout: IO[bytes] | None) -> None:
    stderr.close()
    if stdout is not None:
        stdout.close()


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def read_cmdline(pid: int) -> list[str] | None:
    """The argv of a live process from /proc, or None when it is gone, a zombie, or unreadable."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    if not raw:  # zombies and kernel threads have an empty cmdline
        return None
    return [part.decode("utf-8", errors="surrogateescape") for part in raw.rstrip(b"\0").split(b"\0")]


def cleanup_stale(workdir: str | os.PathLike[str]) -> list[int]:
    """Kill the instances a previous fm recorded in `workdir` and left running; return their pids.

    A pid is killed only if it is alive and its /proc cmdline is exactly the recorded argv: a pid reused
    by an unrelated process is left alone. The file is removed afterwards, and an unreadable file too.
    """
    path = Path(workdir) / STATE_FILE_NAME
    try:
        entries = json.loads(path.read_text())["instances"]
    except FileNotFoundError:
        return []
    except (OSError, ValueError, KeyError, TypeError) as error:
        log.warning("ignoring unreadable instance file %s: %s", path, error)
        path.unlink(missing_ok=True)
        return []
    killed = [pid for pid in (_kill_if_ours(entry) for entry in entries) if pid is not None]
    path.unlink(missing_ok=True)
    return killed


def _kill_if_ours(entry: object) -> int | None:
    """SIGKILL the recorded process (and its group) when it still runs the recorded argv; return its pid."""
    if not isinstance(entry, dict):
        return None
    pid, argv = entry.get("pid"), entry.get("argv")
    if not isinstance(pid, int) or pid <= 1 or not isinstance(argv, list):
        return None
    if read_cmdline(pid) != argv:
        return None
    log.warning("killing stale instance pid %d left by a previous fm: %s", pid, " ".join(argv))
    try:
        if os.getpgid(pid) == pid:
            os.killpg(pid, signal.SIGKILL)
        else:
            os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return None
    return pid

"""local:// — each instance is a local process started by fm, listening on a free loopback port.

Lifecycle guarantees:
- Children are started with an argv (never a shell), each in its own session and process group, so a Ctrl-C on
  the terminal reaches fm only, and fm stops them in order. Their stdout/stderr go to files, never to pipes,
  which would break once fm is gone.
- The data plane never depends on fm being alive: instances outlive a crash or a SIGKILL of fm, and HAProxy
  keeps routing to them.
- Given a workdir, every instance is recorded in a JSON file there (STATE_FILE_NAME) with what proves
  that a process is still that instance: pid, start time (the guard against pid reuse) and command line.
  A restarted fm calls `adopt()` to take over the live, healthy instances and stop the live, unhealthy
  ones, or `cleanup_stale()` to kill them all. A process that cannot be vouched for is never signalled.
- `close()` (an orderly stop of fm) stops every instance started or adopted, and removes the file.
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
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from fridaymorning.config import PlatformConfig
from fridaymorning.errors import PlatformError
from fridaymorning.models import Instance, server_name
from fridaymorning.platform._common import HealthProbe, check_start
from fridaymorning.procfs import read_cmdline, read_start_time

log = logging.getLogger(__name__)

STATE_FILE_NAME = "local-instances.json"
HEALTH_POLL_INTERVAL_S = 0.1
# A recorded instance must answer within this long to be adopted, else it is stopped. A restart should not
# wait long for a sick one, but stopping a healthy stable instance that a busy host made slow to answer
# takes the service down (3 s did, at load average 10 with 100 req/s on it): so 15 s.
ADOPT_HEALTH_TIMEOUT_S = 15.0
# An adopted process is not our child, so its exit is observed by polling /proc.
EXIT_POLL_INTERVAL_S = 0.05
KILL_WAIT_S = 5.0
STDERR_TAIL_LINES = 15
STDERR_TAIL_BYTES = 8192


def build_argv(
    template: Sequence[str], *, port: int, version: str, index: int, python: str = sys.executable
) -> list[str]:
    """Format each element of the command template; one element stays one argument (no shell splitting).
    `{python}` is the interpreter running fm, so a Python service can run in fm's own environment."""
    return [part.format(port=port, version=version, index=index, python=python) for part in template]


def build_env(
    extra: Mapping[str, str], *, port: int, version: str, index: int, base: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The child's environment: fm's own, then the configured `extra`, then FM_VERSION/FM_PORT/FM_INDEX."""
    env = dict(os.environ if base is None else base)
    env.update(extra)
    env.update(FM_VERSION=version, FM_PORT=str(port), FM_INDEX=str(index))
    return env


def next_index(name: str, taken: Iterable[tuple[str, int]]) -> int:
    """The first index for new instances named `name`: one above the highest index of that name among the
    `taken` (name, index) pairs, else 1. Gaps are not reused, so a server name is never given to two
    running instances."""
    return 1 + max((index for taken_name, index in taken if taken_name == name), default=0)


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
    """Signal the process group `pid` leads (start_new_session made it leader), so helpers it spawned stop
    with it; signal the process alone if it leads no group. A process already gone is not an error."""
    with contextlib.suppress(ProcessLookupError):
        if os.getpgid(pid) == pid:
            with contextlib.suppress(PermissionError):  # a member we may not signal: fall back to the leader
                os.killpg(pid, signum)
                return
        os.kill(pid, signum)


class InstanceRecord(BaseModel):
    """One entry of the running-instances file: an Instance, and what proves a process is still it.

    `argv` is exactly what was executed. `cmdline` is what /proc showed for it once healthy: `argv` itself,
    unless the program is a `#!` script or re-executes itself. `start_time` is /proc/<pid>/stat field 22;
    None where there is no /proc, and then the record can never be verified.
    """

    model_config = ConfigDict(strict=True, frozen=True, extra="ignore")

    pid: int = Field(gt=1)
    version: str
    label: str = ""
    index: int = Field(ge=1)
    host: str
    port: int = Field(gt=0, lt=65536)
    argv: list[str] = Field(min_length=1)
    cmdline: list[str] = Field(min_length=1)
    start_time: int | None

    @property
    def instance(self) -> Instance:
        """The Instance this record stands for; its ref is the pid."""
        return Instance(self.version, self.index, self.host, self.port, str(self.pid), self.label)

    def still_running(self) -> bool:
        """True while the recorded process runs: its pid is alive, not a zombie, and started when recorded."""
        return self.start_time is not None and read_start_time(self.pid) == self.start_time

    def is_verified(self) -> bool:
        """True when the recorded process still runs the recorded command line: it is ours to adopt or stop.
        A pid reused by another process fails the start-time check, whatever its command line."""
        return self.still_running() and read_cmdline(self.pid) == self.cmdline


def read_instance_file(workdir: str | os.PathLike[str]) -> list[InstanceRecord]:
    """The records of the running-instances file in `workdir`: [] when there is none or it is unreadable,
    and without the malformed entries (each is logged: it cannot identify a process)."""
    path = Path(workdir) / STATE_FILE_NAME
    try:
        entries = json.loads(path.read_text())["instances"]
        if not isinstance(entries, list):
            raise TypeError("'instances' is not a list")
    except FileNotFoundError:
        return []
    except (OSError, ValueError, KeyError, TypeError) as error:
        log.warning("ignoring unreadable instance file %s: %s", path, error)
        return []
    records = []
    for entry in entries:
        try:
            records.append(InstanceRecord.model_validate(entry))
        except ValidationError as error:
            log.warning("ignoring a malformed entry of %s: %r (%d errors)", path, entry, error.error_count())
    return records


def write_instance_file(workdir: Path, records: Sequence[InstanceRecord]) -> None:
    """Write the records atomically (a crash leaves the old file or the new one), or remove the file."""
    path = workdir / STATE_FILE_NAME
    if not records:
        path.unlink(missing_ok=True)
        return
    document = {"fm_pid": os.getpid(), "instances": [record.model_dump(mode="json") for record in records]}
    workdir.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(document, indent=2))
    os.replace(temporary, path)


def cleanup_stale(workdir: str | os.PathLike[str]) -> list[int]:
    """Kill (SIGKILL, with their process groups) the instances a previous fm recorded in `workdir` and left
    running; return their pids. For callers who do not adopt them.

    Only verified records are killed (same pid, start time and command line): a pid reused by an unrelated
    process is left alone. The file is removed afterwards, an unreadable one too.
    """
    killed = []
    for record in read_instance_file(workdir):
        if record.is_verified():
            log.warning(
                "killing stale instance %s (pid %d) left by a previous fm", record.instance.server, record.pid
            )
            signal_group(record.pid, signal.SIGKILL)
            killed.append(record.pid)
    (Path(workdir) / STATE_FILE_NAME).unlink(missing_ok=True)
    return killed


async def _wait_gone(record: InstanceRecord, timeout_s: float) -> bool:
    """Poll /proc until the recorded process is gone (a zombie counts as gone); False after `timeout_s`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while record.still_running():
        if loop.time() >= deadline:
            return False
        await asyncio.sleep(EXIT_POLL_INTERVAL_S)
    return True


@dataclass(slots=True)
class _Managed:
    """An instance this platform answers for: a child it started (with `process` and its log files), or a
    process it adopted from a previous fm (no process handle: it is not our child)."""

    record: InstanceRecord
    process: asyncio.subprocess.Process | None = None
    stderr: IO[bytes] | None = None
    stdout: IO[bytes] | None = None

    @property
    def instance(self) -> Instance:
        return self.record.instance

    def close_logs(self) -> None:
        for stream in (self.stderr, self.stdout):
            if stream is not None:
                stream.close()


class _StartFailed(Exception):
    """One attempt to start a replica failed; `port_taken` says whether to retry on another port."""

    def __init__(self, message: str, *, port_taken: bool) -> None:
        super().__init__(message)
        self.port_taken = port_taken


class LocalPlatform:
    """Starts instances of a version as local processes on free ports of `host`, and adopts the ones a
    previous fm left running.

    `workdir`, when given, receives the instances' stdout/stderr logs (`logs/`) and the running-instances
    file (STATE_FILE_NAME). Without it, stderr goes to an anonymous temporary file, stdout is discarded,
    and nothing can be adopted later.
    """

    def __init__(self, config: PlatformConfig, host: str | None = None, workdir: str | None = None) -> None:
        self._config = config
        self._host = host or config.host
        self._workdir = Path(workdir) if workdir is not None else None
        self._managed: dict[int, _Managed] = {}
        # Records of a previous fm neither adopted nor cleaned up yet: kept in the file, so none is orphaned.
        # None until the file is first read.
        self._inherited: list[InstanceRecord] | None = None
        # (name, index) pairs of replicas being started, so concurrent start() calls never share an index.
        self._reserved: set[tuple[str, int]] = set()
        self._probe = HealthProbe(config.health_path, HEALTH_POLL_INTERVAL_S)

    @property
    def instances(self) -> list[Instance]:
        """The instances this platform started or adopted and has not stopped yet."""
        return [managed.instance for managed in self._managed.values()]

    async def start(self, version: str, replicas: int, label: str = "") -> list[Instance]:
        """Start `replicas` instances of `version` concurrently and wait until each is healthy.

        They are named `label` when given (server 'v1__baseline-1'), else `version`. Their indices continue
        after the highest index of a running instance (started or adopted) of the same name, from 1 when
        none runs, so server names never collide. On any failure, the replicas already started are stopped
        and PlatformError is raised.
        """
        check_start(version, replicas, label)
        name = label or version
        first = next_index(name, self._taken_indices())
        reserved = {(name, index) for index in range(first, first + replicas)}
        self._reserved |= reserved
        try:
            deadline = asyncio.get_running_loop().time() + self._config.health_timeout_s
            results = await asyncio.gather(
                *(self._start_replica(version, label, index, deadline) for _, index in sorted(reserved)),
                return_exceptions=True,
            )
        finally:
            self._reserved -= reserved
        started = [result for result in results if isinstance(result, _Managed)]
        failures = [result for result in results if isinstance(result, BaseException)]
        if failures:
            await self._stop_managed(started)
            raise failures[0]
        return [managed.instance for managed in started]

    async def adopt(self, *, health_timeout_s: float = ADOPT_HEALTH_TIMEOUT_S) -> list[Instance]:
        """Take over the instances a previous fm recorded in workdir and left running; return those adopted.

        A record is adopted when its process is verified (same pid, start time and command line) and answers
        its health check within `health_timeout_s`. It is then managed like a started instance: it counts
        for index allocation, and stop()/close() stop it. A verified process that does not answer is stopped
        (SIGTERM to its group, SIGKILL after stop_grace_s) and not returned. A record whose process is gone,
        or whose pid now runs another program, is dropped from the file and its pid left alone. Adopted
        instances keep their version, label, index, host, port and ref (the pid).

        Call it before start(), so new indices continue after the adopted ones. A second call returns [].
        """
        pending = list(self._inherited_records())
        if not pending:
            return []
        verified = [record for record in pending if record.is_verified()]
        answers = await asyncio.gather(
            *(self._probe.answers_within(record.instance, health_timeout_s) for record in verified)
        )
        for record in pending:
            if record not in verified:
                log.info("dropping %s (pid %d): no longer running", record.instance.server, record.pid)
        self._inherited = [record for record in self._inherited_records() if record not in pending]
        adopted: list[_Managed] = []
        unhealthy: list[_Managed] = []
        for record, healthy in zip(verified, answers, strict=True):
            managed = _Managed(record)
            self._managed[record.pid] = managed
            (adopted if healthy else unhealthy).append(managed)
        self._write_state()
        for managed in adopted:
            log.info(
                "adopted %s (pid %d, port %d)",
                managed.instance.server,
                managed.record.pid,
                managed.record.port,
            )
        for managed in unhealthy:
            log.warning(
                "stopping %s (pid %d): running but not healthy within %gs",
                managed.instance.server,
                managed.record.pid,
                health_timeout_s,
            )
        await self._stop_managed(unhealthy)
        return [managed.instance for managed in adopted]

    async def stop(self, instances: list[Instance]) -> None:
        """SIGTERM each instance's process group, SIGKILL after stop_grace_s, and wait until it is gone.

        Started instances are reaped; adopted ones are not our children, so /proc is polled until they are
        gone. Instances this platform neither started nor adopted are skipped with a warning: it cannot be
        sure their pid was not reused.
        """
        selected = []
        for instance in instances:
            managed = self._managed.get(int(instance.ref))
            if managed is None:
                log.warning(
                    "not stopping %s (pid %s): not started or adopted by this platform",
                    instance.server,
                    instance.ref,
                )
            else:
                selected.append(managed)
        await self._stop_managed(selected)

    async def health(self, instance: Instance) -> bool:
        """True when GET http://host:port{health_path} answers 2xx within a second."""
        return await self._probe.health(instance)

    async def close(self) -> None:
        """Stop every instance started or adopted and still running, and release the HTTP client.

        The running-instances file is then removed, unless it still lists instances of a previous fm that
        were neither adopted nor cleaned up: those are not ours to stop yet, so they stay listed.
        """
        await self._stop_managed(list(self._managed.values()))
        await self._probe.aclose()

    def _taken_indices(self) -> list[tuple[str, int]]:
        running = [(instance.label or instance.version, instance.index) for instance in self.instances]
        return running + list(self._reserved)

    async def _start_replica(self, version: str, label: str, index: int, deadline: float) -> _Managed:
        """Start one replica, retrying once on another port when the free-port race was lost."""
        for attempt in (1, 2):
            child = await self._spawn(version, label, index, free_port(self._host))
            try:
                await self._wait_healthy(child, deadline)
            except _StartFailed as failure:
                await self._stop_managed([child])
                if failure.port_taken and attempt == 1:
                    log.info("%s lost its port to another program; retrying on another port", child.instance)
                    continue
                raise PlatformError(str(failure)) from None
            except BaseException:
                await self._stop_managed([child])
                raise
            self._record_cmdline(child)
            return child
        raise AssertionError("unreachable: the second attempt returns or raises")

    async def _spawn(self, version: str, label: str, index: int, port: int) -> _Managed:
        """Launch the command for one instance and record it, so close() stops it whatever happens next."""
        argv = build_argv(self._config.command, port=port, version=version, index=index)
        env = build_env(self._config.env, port=port, version=version, index=index)
        if find_program(argv[0], env) is None:
            raise PlatformError(
                f"cannot start version {version}: program {argv[0]!r} was not found or is not executable"
            )
        stderr, stdout = self._open_logs(server_name(label or version, index))
        try:
            process = await asyncio.create_subprocess_exec(
                *argv,
                env=env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=stdout if stdout is not None else asyncio.subprocess.DEVNULL,
                stderr=stderr,
                start_new_session=True,
            )
        except OSError as error:
            for stream in (stderr, stdout):
                if stream is not None:
                    stream.close()
            raise PlatformError(f"cannot start version {version}: {argv[0]!r}: {error.strerror}") from error
        # The process has exec'd by now (subprocess waits for that), so /proc shows the program itself.
        record = InstanceRecord(
            pid=process.pid,
            version=version,
            label=label,
            index=index,
            host=self._host,
            port=port,
            argv=argv,
            cmdline=read_cmdline(process.pid) or argv,
            start_time=read_start_time(process.pid),
        )
        child = _Managed(record, process, stderr, stdout)
        self._managed[process.pid] = child
        self._write_state()
        return child

    def _record_cmdline(self, child: _Managed) -> None:
        """Record the command line of a child that became healthy: a `#!` script or a program that
        re-executes itself shows a different one than at spawn, and adoption compares against this one."""
        cmdline = read_cmdline(child.record.pid)
        if cmdline is not None and cmdline != child.record.cmdline:
            child.record = child.record.model_copy(update={"cmdline": cmdline})
            self._write_state()

    async def _wait_healthy(self, child: _Managed, deadline: float) -> None:
        """Poll the health URL until 2xx; raise _StartFailed if the child exits or the deadline passes."""
        process, stderr = child.process, child.stderr
        assert process is not None and stderr is not None
        loop = asyncio.get_running_loop()
        while True:
            if process.returncode is not None:
                raise self._exited_failure(child)
            if await self.health(child.instance):
                return
            if loop.time() >= deadline:
                break
            await asyncio.sleep(HEALTH_POLL_INTERVAL_S)
        if process.returncode is not None:
            raise self._exited_failure(child)
        raise _StartFailed(
            f"version {child.record.version} ({child.record.argv[0]}, pid {process.pid}) did not answer "
            f"GET {self._config.health_path} with 2xx within {self._config.health_timeout_s:g}s "
            f"(still running, now stopped); last lines of its stderr:\n{tail_lines(stderr)}",
            port_taken=False,
        )

    def _exited_failure(self, child: _Managed) -> _StartFailed:
        """The failure of a child that exited before it became healthy."""
        assert child.process is not None and child.stderr is not None
        returncode = child.process.returncode
        assert returncode is not None
        stderr_tail = tail_lines(child.stderr)
        return _StartFailed(
            f"version {child.record.version} ({child.record.argv[0]}) exited with "
            f"{describe_exit(returncode)} before it became healthy; last lines of its stderr:\n{stderr_tail}",
            port_taken=looks_like_address_in_use(stderr_tail),
        )

    async def _stop_managed(self, selected: list[_Managed]) -> None:
        """Stop the instances concurrently, then forget them and rewrite the state file."""
        if not selected:
            return
        await asyncio.gather(*(self._terminate(managed) for managed in selected))
        for managed in selected:
            self._managed.pop(managed.record.pid, None)
            managed.close_logs()
        self._write_state()

    async def _terminate(self, managed: _Managed) -> None:
        if managed.process is None:
            await self._terminate_adopted(managed.record)
        else:
            await self._terminate_child(managed)

    async def _terminate_child(self, child: _Managed) -> None:
        """SIGTERM, then SIGKILL after the grace period; always wait, so no zombie is left."""
        process = child.process
        assert process is not None
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

    async def _terminate_adopted(self, record: InstanceRecord) -> None:
        """SIGTERM, then SIGKILL after the grace period, each only while the pid is still the recorded
        process; its exit is observed in /proc, since only its parent (now init) can wait for it."""
        if not record.is_verified():
            return
        signal_group(record.pid, signal.SIGTERM)
        if await _wait_gone(record, self._config.stop_grace_s):
            return
        log.warning(
            "%s did not stop within %ss; killing it", record.instance.server, self._config.stop_grace_s
        )
        if record.still_running():
            signal_group(record.pid, signal.SIGKILL)
        if not await _wait_gone(record, KILL_WAIT_S):
            log.error(
                "%s (pid %d) still runs %ss after SIGKILL", record.instance.server, record.pid, KILL_WAIT_S
            )

    def _open_logs(self, server: str) -> tuple[IO[bytes], IO[bytes] | None]:
        """(stderr, stdout) files for one instance: real files, never pipes, so the instance can keep
        writing after fm is gone. A running instance's files are never reused: its server name is unique."""
        if self._workdir is None:
            return tempfile.TemporaryFile(prefix=f"fm-{server}-"), None
        logs = self._workdir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        return open(logs / f"{server}.stderr.log", "w+b"), open(logs / f"{server}.stdout.log", "wb")

    def _inherited_records(self) -> list[InstanceRecord]:
        """The records a previous fm left in workdir and not yet adopted, read at the first need."""
        if self._inherited is None:
            self._inherited = read_instance_file(self._workdir) if self._workdir is not None else []
        return self._inherited

    def _write_state(self) -> None:
        """Record the managed instances, and the inherited ones not yet handled, in workdir."""
        if self._workdir is None:
            return
        inherited = self._inherited_records()
        write_instance_file(self._workdir, [managed.record for managed in self._managed.values()] + inherited)

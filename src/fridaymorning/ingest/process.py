"""The collector in a process of its own, so the log path outlives `fm up` as the data plane does.

Why a process, and not HAProxy's ring alone (measured on HAProxy 2.6.12 here): a `ring` forwarding
to a TCP receiver that was killed with SIGKILL and started again 2 s later resumed from where it had
stopped. Of 111,939 requests (about 14,000/s, under wrk), 6 lines were lost, those in flight in the
dead connection, and none came twice. So the ring does hold lines across a receiver's restart. But
inside `fm up`, a kill -9 also loses what the collector held in memory: the lines queued for parsing
and the open windows of the last `lateness_s` + 1 s, about 1,500 lines at 900 req/s. And UDP, the
default path, has no buffer at all: every line sent while nobody listens is gone (about 4,300 in a
5 s restart at 900 req/s). A collector process that `fm up` starts and a later `fm up` adopts (like
HAProxy: a pidfile, its command line checked) is not touched by a crash of `fm up`: no line is lost.
With `collector.protocol: tcp`, the ring also covers a crash of the collector process itself.

Whatever is still lost (the collector process itself killed, with UDP) is counted: the process keeps
its last reconciled HAProxy counters in the state directory, and the next one compares HAProxy's
growth since then with the requests the store holds (`Reconciler.check_restart`), reporting the
difference as `lost_across_restart` in its stats.

Files in the state directory: `collector.json` (settings, written by `fm up`), `collector.pid`,
`collector-stats.json` (the collector's `stats()`, rewritten every second: what `fm status` shows),
`collector-reconciled.json` (the last snapshot) and `collector.out` (its output).

Run as `python -m fridaymorning.ingest.process STATE_DIR/collector.json`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from fridaymorning.config import Config, parse_address
from fridaymorning.errors import FridayMorningError, PortInUseError
from fridaymorning.ingest.accounting import cancel_and_wait, write_atomically
from fridaymorning.procfs import process_alive, read_cmdline, read_pid

logger = logging.getLogger(__name__)

MODULE = "fridaymorning.ingest.process"
SETTINGS_FILE = "collector.json"
PIDFILE = "collector.pid"
STATS_FILE = "collector-stats.json"
RECONCILED_FILE = "collector-reconciled.json"
OUTPUT_FILE = "collector.out"
UNWATCHED_FILE = "collector-unwatched"
EXIT_PORT_IN_USE = 98  # the child's exit status when its address is taken (errno EADDRINUSE)
STATS_INTERVAL_S = 1.0


def collector_settings(config: Config) -> dict[str, Any]:
    """What the collector process needs of the config, as JSON-ready values."""
    from fridaymorning.router import backends_of

    host, port = parse_address(config.collector.listen)
    return {
        "protocol": config.collector.protocol,
        "host": host,
        "port": port,
        "lateness_s": config.collector.lateness_s,
        "reconcile_interval_s": config.collector.reconcile_interval_s,
        "store_url": config.store_url(),
        "admin_socket": str(config.runtime_path(config.haproxy.admin_socket)),
        "admin_sockets": admin_sockets(config),
        "instances": [
            {"name": instance.name, "managed": instance.admin is None}
            for instance in config.haproxy.instances
        ],
        "backends": sorted({backend for service in config.services for backend in backends_of(service)}),
    }


def admin_sockets(config: Config) -> list[str]:
    """The admin socket of every HAProxy whose counters the collector reconciles: the managed one,
    or each instance of `haproxy.instances` (a brought one's `unix://` path or `ipv4@` address)."""
    from fridaymorning.router import admin_address

    managed = str(config.runtime_path(config.haproxy.admin_socket))
    if not config.haproxy.instances:
        return [managed]
    return [
        managed if instance.admin is None else admin_address(instance.admin)
        for instance in config.haproxy.instances
    ]


# --------------------------------------------------------------------------------------------------
# fm up's side: start, adopt, stop, read stats
# --------------------------------------------------------------------------------------------------


class CollectorProcess:
    """The collector process of one state directory, seen from `fm up`.

    `start()` adopts the process an earlier `fm up` left running with the same settings (the pidfile
    names a live `python -m fridaymorning.ingest.process <our settings file>`), or starts one in its
    own session, so neither a Ctrl-C meant for `fm` nor its death reaches it. `stop()` asks it to
    flush everything and exit (SIGTERM), then kills it after `stop_timeout_s`.
    """

    def __init__(
        self,
        settings: dict[str, Any],
        state_dir: Path,
        *,
        python: str = sys.executable,
        start_timeout_s: float = 30.0,
        stop_timeout_s: float = 20.0,
    ) -> None:
        self.settings = settings
        self.state_dir = Path(state_dir)
        self.python = python
        self.start_timeout_s = start_timeout_s
        self.stop_timeout_s = stop_timeout_s
        self.process: subprocess.Popen[bytes] | None = None
        self.pid: int | None = None
        self.adopted = False
        self.restarts = 0  # times it died under us and was started again
        # When this `fm up` last started the process (wall clock); None for an adopted one.
        self.started_at: float | None = None
        self._supervisor: asyncio.Task[None] | None = None

    @property
    def settings_path(self) -> Path:
        return self.state_dir / SETTINGS_FILE

    @property
    def address(self) -> tuple[str, int]:
        return self.settings["host"], self.settings["port"]

    def running_pid(self) -> int | None:
        """The pid of a live collector process of this state directory (whatever its settings)."""
        pid = read_pid(self.state_dir / PIDFILE)
        return pid if pid is not None and runs_collector(pid, self.settings_path) else None

    def adoptable(self) -> int | None:
        """The pid of a live collector process of this state directory with our settings, or None."""
        pid = self.running_pid()
        if pid is None:
            return None
        try:
            running = json.loads(self.settings_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return pid if running == self.settings else None

    async def start(self) -> None:
        """Adopt the running collector process, or start one; then keep it running (see `supervise`)."""
        pid = self.adoptable()
        if pid is not None:
            self.pid, self.adopted = pid, True
        else:
            await self.stop_stale()
            await self.spawn()
        self._supervisor = asyncio.create_task(self.supervise(), name="collector-process-supervisor")

    async def supervise(self, interval_s: float = 0.5) -> None:
        """Start the collector again when it dies (a crash, kill -9); its successor counts the loss."""
        while True:
            await asyncio.sleep(interval_s)
            if self.running:
                continue
            self.restarts += 1
            logger.error(
                "the collector process %s died: starting another (%s)", self.pid, self.output()[-300:]
            )
            with contextlib.suppress(FridayMorningError):
                await self.spawn()

    async def spawn(self) -> None:
        """Start the collector process and wait until it listens."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        write_atomically(self.settings_path, json.dumps(self.settings, indent=1))
        (self.state_dir / PIDFILE).unlink(missing_ok=True)
        with (self.state_dir / OUTPUT_FILE).open("ab") as output:
            self.process = subprocess.Popen(
                [self.python, "-m", MODULE, str(self.settings_path)],
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.pid = self.process.pid
        self.started_at = time.time()
        await self.wait_until_listening()

    async def stop_stale(self) -> None:
        """A collector of this state directory running other settings (the config changed): stop it."""
        pid = self.running_pid()
        if pid is not None:
            logger.info("stopping the collector process %d: its settings differ from the config", pid)
            self.pid = pid
            await self.stop()

    async def wait_until_listening(self) -> None:
        """Until the child wrote its pidfile (it listens then); its failure as fm's own error."""
        assert self.process is not None
        deadline = time.monotonic() + self.start_timeout_s
        while read_pid(self.state_dir / PIDFILE) != self.process.pid:
            code = self.process.poll()
            if code is not None:
                self.pid = None
                if code == EXIT_PORT_IN_USE:
                    raise PortInUseError(*self.address, "the collector")
                raise FridayMorningError(f"the collector process exited with status {code}: {self.output()}")
            if time.monotonic() > deadline:
                await self.stop()
                raise FridayMorningError(
                    f"the collector process did not listen within {self.start_timeout_s} s: {self.output()}"
                )
            await asyncio.sleep(0.05)

    def output(self) -> str:
        with contextlib.suppress(OSError):
            return (self.state_dir / OUTPUT_FILE).read_text(errors="replace")[-2000:].strip()
        return ""

    @property
    def running(self) -> bool:
        if self.process is not None:
            return self.process.poll() is None
        return self.pid is not None and process_alive(self.pid)

    async def stop(self) -> None:
        """SIGTERM (it flushes every window, then exits), SIGKILL after `stop_timeout_s`. Idempotent."""
        await cancel_and_wait(self._supervisor)
        self._supervisor = None
        if self.pid is None:
            return
        for signal_number, timeout_s in ((signal.SIGTERM, self.stop_timeout_s), (signal.SIGKILL, 5.0)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal_number)
            deadline = time.monotonic() + timeout_s
            while self.running and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            if not self.running:
                break
        if self.process is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=1)
        self.pid, self.process = None, None

    async def stop_watching_haproxy(self) -> None:
        """Ask the process to stop polling HAProxy (before HAProxy stops); wait a few seconds for it."""
        if self.pid is None or not self.running or read_pid(self.state_dir / PIDFILE) != self.pid:
            return  # not started, gone, or not yet handling signals (it writes its pidfile after that)
        acknowledgement = self.state_dir / UNWATCHED_FILE
        with contextlib.suppress(OSError):
            acknowledgement.unlink()
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGUSR1)
        deadline = time.monotonic() + 5.0
        while self.running and not acknowledgement.exists() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)

    def watch_haproxy(self, *_: Any, **__: Any) -> None:
        """Nothing to do: the process watches HAProxy itself once its admin socket answers."""

    def stats(self) -> dict[str, Any]:
        """The collector's counters as it last wrote them (at most a second old), with its pid."""
        try:
            stats: dict[str, Any] = json.loads((self.state_dir / STATS_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            stats = {}
        stats["pid"] = self.pid
        stats["process_running"] = self.running
        stats["process_restarts"] = self.restarts
        return stats


def runs_collector(pid: int, settings_path: Path) -> bool:
    """True when `pid` is a live `python -m fridaymorning.ingest.process <settings_path>`."""
    arguments = read_cmdline(pid) or []
    return process_alive(pid) and MODULE in arguments and str(settings_path) in arguments


# --------------------------------------------------------------------------------------------------
# The process itself
# --------------------------------------------------------------------------------------------------


async def serve(settings_path: Path) -> int:
    """Receive, store and account for log lines until SIGTERM or SIGINT; then flush and exit 0."""
    from fridaymorning.ingest.store_sink import StoreSink
    from fridaymorning.ingest.syslog import TcpCollector, UdpCollector
    from fridaymorning.registry import resolve

    settings = json.loads(settings_path.read_text(encoding="utf-8"))
    state_dir = settings_path.parent
    store = resolve("store", settings["store_url"])(settings["store_url"])
    sink = StoreSink(store, settings["lateness_s"])

    receiver = TcpCollector if settings["protocol"] == "tcp" else UdpCollector
    collector = receiver(settings["host"], settings["port"], sink, lateness_s=settings["lateness_s"])
    try:
        await collector.start()
    except PortInUseError as error:
        print(error, file=sys.stderr, flush=True)
        return EXIT_PORT_IN_USE
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    watcher = asyncio.create_task(watch_haproxy_when_up(collector, settings, state_dir, store))
    tasks = [watcher, asyncio.create_task(write_stats_periodically(collector, state_dir, sink))]
    tasks.append(asyncio.create_task(sink.heartbeat()))

    async def unwatch() -> None:
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
        await collector.stop_watching_haproxy()
        write_atomically(state_dir / UNWATCHED_FILE, f"{os.getpid()}\n")

    # fm up stops HAProxy in an orderly stop: SIGUSR1 first ends the polls, so none meets HAProxy gone.
    loop.add_signal_handler(signal.SIGUSR1, lambda: tasks.append(asyncio.create_task(unwatch())))
    write_atomically(state_dir / PIDFILE, f"{os.getpid()}\n")  # after the handlers: signals are safe now
    await stopping.wait()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await collector.stop()
    store.close()  # sends what its buffer holds, if it has one
    write_atomically(state_dir / STATS_FILE, json.dumps(stats_of(collector, sink)))
    with contextlib.suppress(OSError):
        if read_pid(state_dir / PIDFILE) == os.getpid():
            (state_dir / PIDFILE).unlink()
    return 0


async def watch_haproxy_when_up(
    collector: Any, settings: dict[str, Any], state_dir: Path, store: Any
) -> None:
    """Once HAProxy's admin socket answers, poll DroppedLogs and reconcile (see accounting). A fleet
    of two instances or more is accounted per instance, each from when it first answers (see
    fleet_stats); a single one, brought or managed, as always (its lines need no host name)."""
    from fridaymorning.errors import RouterError
    from fridaymorning.ingest.fleet_stats import FleetMember, log_hosts
    from fridaymorning.router import HAProxyRouter

    addresses = settings.get("admin_sockets") or [settings["admin_socket"]]
    routers = [HAProxyRouter(address) for address in addresses]
    backends = set(settings["backends"])
    instances = settings.get("instances") or []
    if len(instances) > 1:
        hosts = log_hosts((each["name"], bool(each["managed"])) for each in instances)

        async def watch(member: FleetMember) -> None:
            await answered(member.router, RouterError)
            collector.watch_fleet(
                [member],
                reconcile_interval_s=settings["reconcile_interval_s"],
                backends=backends,
                state_dir=state_dir,
            )

        members = [
            FleetMember(each["name"], hosts[each["name"]], router)
            for each, router in zip(instances, routers, strict=True)
        ]
        await asyncio.gather(*(watch(member) for member in members))
        return
    router = routers[0]
    await answered(router, RouterError)
    collector.watch_haproxy(
        router,
        reconcile_interval_s=settings["reconcile_interval_s"],
        backends=backends,
        state_path=state_dir / RECONCILED_FILE,
        stored=stored_counter(store, backends),
    )


async def answered(router: Any, error: type[Exception]) -> None:
    """Return once the router's admin socket answers `show info`."""
    while True:
        with contextlib.suppress(error):
            await router.show_info()
            return
        await asyncio.sleep(0.2)


def stored_counter(store: Any, backends: set[str]) -> Any:
    """Requests the store holds for `backends` in [first, end), when the store can sum them (SQLite)."""
    totals = getattr(store, "totals", None)
    if totals is None:
        return None

    def stored(first: int, end: int) -> int:
        return sum(
            entry["requests"] for backend in backends for entry in totals(backend, first, end).values()
        )

    return stored


def stats_of(collector: Any, sink: Any = None) -> dict[str, Any]:
    """What the stats file holds: the collector's counters, and its store's write buffer (`store_buffer`)
    when the store has one."""
    return {**collector.stats(), **(sink.stats() if sink is not None else {})}


async def write_stats_periodically(collector: Any, state_dir: Path, sink: Any = None) -> None:
    while True:
        try:
            write_atomically(state_dir / STATS_FILE, json.dumps(stats_of(collector, sink)))
        except OSError:
            logger.warning("cannot write the collector's stats", exc_info=True)
        await asyncio.sleep(STATS_INTERVAL_S)


def main(argv: list[str] | None = None) -> int:
    arguments = sys.argv[1:] if argv is None else argv
    if len(arguments) != 1:
        print(f"usage: python -m {MODULE} STATE_DIR/{SETTINGS_FILE}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return asyncio.run(serve(Path(arguments[0])))


if __name__ == "__main__":
    sys.exit(main())

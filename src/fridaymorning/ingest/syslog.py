"""The syslog receivers: HAProxy's log lines in (UDP datagrams, or TCP from a HAProxy ring), windows out.

UDP (`UdpCollector`) is HAProxy's default and never slows HAProxy down, but a line the collector
cannot take in time is dropped (by HAProxy, counted as DroppedLogs, or by the kernel, counted in the
socket's drops). TCP (`TcpCollector`) is the lossless path: a HAProxy `ring` buffers the lines and
forwards them over one TCP connection with RFC 6587 framing; back-pressure makes the ring hold lines,
and the ring reports any it had to overwrite as 'N events dropped', which is counted.

The hot path, the same for both (see `pipeline`): a receiver only moves bytes into a bounded queue;
one parser thread parses and counts them. The UDP receiver is a dedicated thread calling
`recvmmsg` (up to `max_batch` datagrams per system call, GIL released), with a receive buffer as
large as allowed (SO_RCVBUFFORCE as root, SO_RCVBUF capped by net.core.rmem_max otherwise). When
traffic is light it waits `coalesce_s` between batches, so a batch holds many lines and the per-batch
cost stays negligible; the kernel buffer holds the lines meanwhile.

Once per `flush_interval_s`, the event loop hands windows older than `lateness_s` to the sink (their
sketches are built outside the parser's lock). `stop()` reads what is still queued in the socket,
parses everything received, and hands every open window to the sink before returning.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import inspect
import logging
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar, TypedDict, Unpack

from fridaymorning.errors import PortInUseError
from fridaymorning.ingest._receive import MmsgReceiver, PlainReceiver, batch_receiver
from fridaymorning.ingest.accounting import (
    Baseline,
    HAProxyLossMonitor,
    HAProxyStats,
    Reconciler,
    StoredCount,
    socket_drops,
    socket_inode,
    udp_rcvbuf_errors,
)
from fridaymorning.ingest.aggregate import ServerKey, finish_windows
from fridaymorning.ingest.fleet_stats import FleetMember, InstanceAccounting, InstanceLog, fleet_totals
from fridaymorning.ingest.framing import FramingError, SyslogStreamDecoder
from fridaymorning.ingest.pipeline import CollectorStats, IngestPipeline
from fridaymorning.models import Window

logger = logging.getLogger(__name__)

Sink = Callable[[list[Window]], Awaitable[None] | None]

__all__ = ["CollectorStats", "Sink", "TcpCollector", "UdpCollector"]

# Linux's SO_RCVBUFFORCE; the socket module does not export it.
_SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)
_STOP_DRAIN_LIMIT = 1_000_000  # datagrams read at stop(), so a flood cannot hold shutdown forever
_SMALL_BATCH_FRACTION = 4  # a batch under max_batch / 4 means light traffic: wait before the next


class CollectorOptions(TypedDict, total=False):
    """What both receivers take besides their address and sink (see the module's docstring)."""

    lateness_s: float
    flush_interval_s: float
    max_queued_bytes: int
    clock: Callable[[], float]


class _Collector:
    """What both receivers share: the pipeline, the periodic flush to the sink, HAProxy loss checks."""

    # How many received bytes may wait for the parser when the caller does not say.
    default_max_queued_bytes: ClassVar[int]

    def __init__(
        self,
        host: str,
        port: int,
        sink: Sink,
        *,
        lateness_s: float = 1.0,
        flush_interval_s: float = 1.0,
        max_queued_bytes: int | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._host = host
        self._port = port
        self._sink = sink
        self._lateness_s = lateness_s
        self._flush_interval_s = flush_interval_s
        self._clock = clock
        self._pipeline = IngestPipeline(
            self.default_max_queued_bytes if max_queued_bytes is None else max_queued_bytes
        )
        self._flush_task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._loss_monitor: HAProxyLossMonitor | None = None
        self._reconciler: Reconciler | None = None
        self._fleet: list[InstanceAccounting] = []

    @property
    def _counters(self) -> CollectorStats:
        return self._pipeline.counters

    def logged_by_server(self) -> dict[ServerKey, int]:
        """Requests logged per (backend, server) since start."""
        return self._pipeline.logged_by_server()

    def logged_between(
        self, first_second: int, end_second: int, instance: str | None = None
    ) -> dict[ServerKey, int]:
        """Requests logged per (backend, server) with an accept second in [first_second, end_second),
        by every instance or by the one whose lines carry the host name `instance`."""
        return self._pipeline.logged_between(first_second, end_second, instance)

    def watch_haproxy(
        self,
        router: HAProxyStats,
        *,
        reconcile_interval_s: float = 60.0,
        dropped_logs_interval_s: float = 5.0,
        backends: set[str] | None = None,
        state_path: Path | None = None,
        stored: StoredCount | None = None,
    ) -> None:
        """Poll HAProxy's DroppedLogs and reconcile logged requests with its counters (see accounting).

        Call once HAProxy runs (the collector starts before it); the results appear in `stats()`
        under 'haproxy_dropped_logs', 'lost_across_restart' and 'reconciliation', and both stop with
        the collector. `state_path` keeps the last reconciled counters for the next collector, and
        `stored` (requests the store holds for an interval) lets it count what was lost meanwhile.
        """
        self._loss_monitor = HAProxyLossMonitor(router, dropped_logs_interval_s)
        self._loss_monitor.start()
        self._reconciler = Reconciler(
            router,
            self,
            interval_s=reconcile_interval_s,
            settle_s=self._lateness_s + self._flush_interval_s + 1.0,
            backends=backends,
            state_path=state_path,
            stored=stored,
        )
        self._reconciler.start()

    def watch_fleet(
        self,
        members: Sequence[FleetMember],
        *,
        reconcile_interval_s: float = 60.0,
        dropped_logs_interval_s: float = 5.0,
        backends: set[str] | None = None,
        state_dir: Path | None = None,
    ) -> None:
        """`watch_haproxy` for each instance of a fleet on its own (see `fleet_stats`): its DroppedLogs,
        and its counters reconciled with the lines that carry its host name. Results appear in
        `stats()` summed over the instances, and per instance under 'instances' (call again to add
        an instance, e.g. once it answers). `state_dir` keeps each instance's last reconciled
        counters (`reconciled-NAME.json`)."""
        for member in members:
            monitor = HAProxyLossMonitor(member.router, dropped_logs_interval_s)
            reconciler = Reconciler(
                member.router,
                InstanceLog(self, member.log_host),
                interval_s=reconcile_interval_s,
                settle_s=self._lateness_s + self._flush_interval_s + 1.0,
                backends=backends,
                state_path=None if state_dir is None else state_dir / f"reconciled-{member.name}.json",
            )
            self._fleet.append(InstanceAccounting(member, monitor, reconciler))
            monitor.start()
            reconciler.start()

    def _start_flushing(self) -> None:
        self._stopping.clear()
        self._pipeline.start()
        self._flush_task = asyncio.create_task(self._flush_periodically(), name="collector-flush")

    async def stop_watching_haproxy(self) -> None:
        """Stop polling HAProxy's counters; call before HAProxy stops, so no poll meets it gone."""
        for watcher in (self._reconciler, self._loss_monitor):
            if watcher is not None:
                await watcher.stop()
        for accounting in self._fleet:
            await accounting.reconciler.stop()
            await accounting.monitor.stop()

    async def _stop_flushing(self) -> None:
        """Stop the HAProxy checks and the flush task, parse what is queued, and flush every window."""
        await self.stop_watching_haproxy()
        self._stopping.set()
        if self._flush_task is not None:
            await self._flush_task
            self._flush_task = None
        await asyncio.to_thread(self._pipeline.close)
        await self._deliver(finish_windows(self._pipeline.pop_all()))

    async def _flush_periodically(self) -> None:
        """Every flush interval, hand the windows that can no longer change to the sink."""
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self._flush_interval_s)
            popped = self._pipeline.pop_due(self._clock(), self._lateness_s)
            await self._deliver(finish_windows(popped))

    async def _deliver(self, windows: list[Window]) -> None:
        """Give windows to the sink; a failure is logged and counted, and those windows are lost."""
        if not windows:
            return
        try:
            result = self._sink(windows)
            if inspect.isawaitable(result):
                await result
        except Exception:
            self._counters.sink_errors += 1
            self._counters.windows_dropped += len(windows)
            logger.exception("the collector's sink failed; %d windows were dropped", len(windows))
            return
        self._counters.windows_flushed += len(windows)

    def _haproxy_stats(self) -> dict[str, Any]:
        if self._fleet:
            by_host = self._pipeline.logged_by_instance()
            instances = {each.member.name: each.stats(by_host) for each in self._fleet}
            return fleet_totals(instances, by_host)
        if self._loss_monitor is None or self._reconciler is None:
            return {}
        return {
            "haproxy_dropped_logs": self._loss_monitor.dropped_logs,
            "lost_across_restart": self._reconciler.lost_across_restart,
            "reconciliation": self._reconciler.stats(),
        }


class UdpCollector(_Collector):
    """Receives HAProxy's syslog datagrams on (host, port) and feeds per-second windows to `sink`.

    `sink` receives a non-empty list of windows; it may be a plain function or a coroutine function
    (the lead's writes to SQLite in a thread). A failing sink is logged and counted, never fatal.
    `port` 0 binds a free port: read it back from `address` after `start()`.
    """

    default_max_queued_bytes = 256 * 1024 * 1024

    def __init__(
        self,
        host: str,
        port: int,
        sink: Sink,
        *,
        receive_buffer_bytes: int = 256 * 1024 * 1024,
        max_batch: int = 1024,
        coalesce_s: float = 0.005,
        **options: Unpack[CollectorOptions],
    ) -> None:
        super().__init__(host, port, sink, **options)
        self._receive_buffer_bytes = receive_buffer_bytes
        self._max_batch = max_batch
        self._coalesce_s = coalesce_s
        self._socket: socket.socket | None = None
        self._receiver_thread: threading.Thread | None = None
        self._receiving = threading.Event()
        self._effective_buffer = 0
        self._inode = 0
        self._socket_drops: Baseline | None = None
        self._rcvbuf_errors: Baseline | None = None

    @property
    def address(self) -> tuple[str, int]:
        """The bound (host, port); the real port once started, even when 0 was asked for."""
        if self._socket is None:
            return self._host, self._port
        bound = self._socket.getsockname()
        return bound[0], bound[1]

    async def start(self) -> None:
        """Bind the socket and start receiving. Raises PortInUseError if the address is taken."""
        if self._socket is not None:
            raise RuntimeError("the collector is already started")
        self._socket = self._bind()
        self._inode = socket_inode(self._socket.fileno())
        self._socket_drops = Baseline(lambda: socket_drops(self._inode))
        self._rcvbuf_errors = Baseline(udp_rcvbuf_errors)
        self._start_flushing()
        self._receiving.set()
        self._receiver_thread = threading.Thread(
            target=self._receive_forever, args=(self._socket,), name="fm-collector-udp", daemon=True
        )
        self._receiver_thread.start()
        logger.info(
            "collector listening on udp://%s:%d (receive buffer %d bytes)",
            *self.address,
            self._effective_buffer,
        )

    async def stop(self) -> None:
        """Stop receiving, read what is already queued, and hand every open window to the sink."""
        if self._socket is None:
            return
        self._receiving.clear()
        if self._receiver_thread is not None:
            await asyncio.to_thread(self._receiver_thread.join)
            self._receiver_thread = None
        await self._stop_flushing()
        self._final_drops = self._kernel_drops()
        self._socket.close()
        self._socket = None

    def stats(self) -> dict[str, Any]:
        """A snapshot of the counters, JSON-ready."""
        host, port = self.address
        return {
            "address": f"{host}:{port}",
            "transport": "udp",
            "receive_buffer_bytes": self._effective_buffer,
            **self._pipeline.counter_stats(),
            **self._kernel_drops(),
            **self._haproxy_stats(),
        }

    def _kernel_drops(self) -> dict[str, int | None]:
        """The socket's own drops and the host's RcvbufErrors, both as growth since start."""
        if self._socket is None:
            return getattr(self, "_final_drops", {"socket_drops": 0, "udp_rcvbuf_errors": None})
        assert self._socket_drops is not None and self._rcvbuf_errors is not None
        return {"socket_drops": self._socket_drops.delta(), "udp_rcvbuf_errors": self._rcvbuf_errors.delta()}

    def _bind(self) -> socket.socket:
        """A UDP socket bound to the address, with the largest receive buffer allowed."""
        family = socket.AF_INET6 if ":" in self._host else socket.AF_INET
        udp = socket.socket(family, socket.SOCK_DGRAM)
        try:
            self._enlarge_receive_buffer(udp)
            udp.bind((self._host, self._port))
        except OSError as error:
            udp.close()
            if error.errno == errno.EADDRINUSE:
                raise PortInUseError(self._host, self._port, "the collector") from error
            raise
        return udp

    def _enlarge_receive_buffer(self, udp: socket.socket) -> None:
        """SO_RCVBUFFORCE needs CAP_NET_ADMIN; without it SO_RCVBUF is silently capped by rmem_max."""
        try:
            udp.setsockopt(socket.SOL_SOCKET, _SO_RCVBUFFORCE, self._receive_buffer_bytes)
        except OSError:
            udp.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self._receive_buffer_bytes)
        self._effective_buffer = udp.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)

    def _receive_forever(self, udp: socket.socket) -> None:
        """The receiver thread: batches of datagrams into the pipeline until stop, then a final drain."""
        receiver = batch_receiver(udp, self._max_batch)
        small_batch = max(1, self._max_batch // _SMALL_BATCH_FRACTION)
        try:
            while self._receiving.is_set():
                if self._receive_once(receiver, wait=True) < small_batch and self._coalesce_s > 0:
                    time.sleep(self._coalesce_s)
            drained = 0
            while drained < _STOP_DRAIN_LIMIT:
                received = self._receive_once(receiver, wait=False)
                if received == 0:
                    break
                drained += received
        finally:
            receiver.close()

    def _receive_once(self, receiver: MmsgReceiver | PlainReceiver, wait: bool) -> int:
        """One batch into the pipeline; how many datagrams it held (0 on a receive error)."""
        try:
            batch, count = receiver.receive(wait)
        except OSError as error:
            self._counters.receive_errors += 1
            logger.warning("collector receive failed: %s", error)
            time.sleep(0.01)  # a persistent error must not spin a core
            return 0
        if count:
            self._pipeline.submit(batch, count)
        return count


class TcpCollector(_Collector):
    """Receives HAProxy's log lines over TCP (RFC 6587, octet counting or LF framing, auto-detected).

    The lossless path: point a HAProxy `ring` at it (docs/collector.md). Same sink, windows and stats
    as `UdpCollector`, plus 'connections' and 'framing_errors'.
    """

    default_max_queued_bytes = 64 * 1024 * 1024

    def __init__(self, host: str, port: int, sink: Sink, **options: Unpack[CollectorOptions]) -> None:
        super().__init__(host, port, sink, **options)
        self._server: asyncio.Server | None = None
        self._connections: set[_SyslogStream] = set()
        self.connections_total = 0
        self.framing_errors = 0

    @property
    def address(self) -> tuple[str, int]:
        """The bound (host, port); the real port once started."""
        if self._server is None or not self._server.sockets:
            return self._host, self._port
        bound = self._server.sockets[0].getsockname()
        return bound[0], bound[1]

    async def start(self) -> None:
        """Listen and start parsing. Raises PortInUseError if the address is taken."""
        if self._server is not None:
            raise RuntimeError("the collector is already started")
        loop = asyncio.get_running_loop()
        try:
            self._server = await loop.create_server(
                lambda: _SyslogStream(self), self._host, self._port, reuse_address=True
            )
        except OSError as error:
            if error.errno == errno.EADDRINUSE:
                raise PortInUseError(self._host, self._port, "the TCP collector") from error
            raise
        self._start_flushing()
        logger.info("collector listening on tcp://%s:%d", *self.address)

    async def stop(self) -> None:
        """Stop accepting, close connections (keeping what they sent), flush every open window."""
        if self._server is None:
            return
        self._server.close()
        for connection in list(self._connections):
            connection.close()
        await self._server.wait_closed()
        self._server = None
        await self._stop_flushing()

    def stats(self) -> dict[str, Any]:
        host, port = self.address
        return {
            "address": f"{host}:{port}",
            "transport": "tcp",
            "connections": len(self._connections),
            "connections_total": self.connections_total,
            "framing_errors": self.framing_errors,
            **self._pipeline.counter_stats(),
            **self._haproxy_stats(),
        }


class _SyslogStream(asyncio.Protocol):
    """One TCP connection: frames decoded on the event loop (C-level splitting), parsing elsewhere."""

    def __init__(self, collector: TcpCollector) -> None:
        self._collector = collector
        self._decoder = SyslogStreamDecoder()
        self._transport: asyncio.Transport | None = None
        self._held: tuple[bytes, int] | None = None  # a batch the full queue refused

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self._collector._connections.add(self)
        self._collector.connections_total += 1

    def connection_lost(self, exc: Exception | None) -> None:
        self._collector._connections.discard(self)
        if self._held is not None:  # never lose what was received: the queue bound is soft here
            self._collector._pipeline.submit(*self._held, wait=True)
            self._held = None

    def data_received(self, data: bytes) -> None:
        try:
            messages = self._decoder.feed(data)
        except FramingError as error:
            self._collector.framing_errors += 1
            logger.warning("closing a syslog connection: %s", error)
            if error.messages:
                self._offer(b"\n".join(error.messages), len(error.messages))
            self.close()
            return
        if messages:
            self._offer(b"\n".join(messages), len(messages))

    def _offer(self, batch: bytes, count: int) -> None:
        """Queue a batch; if the queue is full, stop reading (TCP back-pressure) and retry shortly."""
        if self._collector._pipeline.submit(batch, count, wait=False):
            return
        self._held = (batch, count)
        assert self._transport is not None
        self._transport.pause_reading()
        asyncio.get_running_loop().call_later(0.01, self._retry)

    def _retry(self) -> None:
        held, self._held = self._held, None
        if held is None:
            return
        if self._collector._pipeline.submit(*held, wait=False):
            if self._transport is not None and not self._transport.is_closing():
                self._transport.resume_reading()
        else:
            self._held = held
            asyncio.get_running_loop().call_later(0.01, self._retry)

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

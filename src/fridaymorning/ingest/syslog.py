"""The UDP syslog receiver: HAProxy's log datagrams in, per-second windows out.

asyncio's `DatagramProtocol` calls back once per datagram and tops out near 70k datagrams/s on the
project's machines; a `loop.add_reader` callback that drains up to `max_batch` datagrams per readiness
event did more than 300k lines/s. So the socket is a plain non-blocking one, read in batches, and each
line is parsed and aggregated inline (both are cheap and pure).

HAProxy never blocks on UDP logging: what the receiver cannot take is dropped by the kernel (see
`RcvbufErrors` in /proc/net/snmp). The receive buffer is therefore made as large as allowed:
SO_RCVBUFFORCE when running as root, SO_RCVBUF (capped by net.core.rmem_max) otherwise.

Once per `flush_interval_s`, windows older than `lateness_s` are handed to the sink. `stop()` reads
what is still queued in the socket and hands every open window to the sink before returning.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import inspect
import logging
import socket
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from fridaymorning.errors import PortInUseError
from fridaymorning.ingest.aggregate import Aggregator
from fridaymorning.ingest.haproxy_log import parse_event, parse_line
from fridaymorning.models import Window

logger = logging.getLogger(__name__)

Sink = Callable[[list[Window]], Awaitable[None] | None]

# Linux's SO_RCVBUFFORCE; the socket module does not export it.
_SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)
_MAX_DATAGRAM = 65535
_REJECTED_LINE_LIMIT = 500  # characters kept of each rejected line, for `stats()`
_STOP_DRAIN_LIMIT = 1_000_000  # datagrams read at stop(), so a flood cannot hold shutdown forever


class CollectorStats:
    """Counters of the receiver, updated on the hot path (hence plain slotted attributes)."""

    __slots__ = (
        "datagrams",
        "events",
        "last_rejected",
        "lines",
        "receive_errors",
        "rejected",
        "requests",
        "sink_errors",
        "windows_dropped",
        "windows_flushed",
    )

    def __init__(self) -> None:
        self.datagrams = 0
        self.lines = 0
        self.requests = 0
        self.events = 0
        self.rejected = 0
        self.receive_errors = 0
        self.windows_flushed = 0
        self.windows_dropped = 0
        self.sink_errors = 0
        self.last_rejected: deque[str] = deque(maxlen=5)


class UdpCollector:
    """Receives HAProxy's syslog datagrams on (host, port) and feeds per-second windows to `sink`.

    `sink` receives a non-empty list of windows; it may be a plain function or a coroutine function
    (the lead's writes to SQLite in a thread). A failing sink is logged and counted, never fatal.
    `port` 0 binds a free port: read it back from `address` after `start()`.
    """

    def __init__(
        self,
        host: str,
        port: int,
        sink: Sink,
        *,
        lateness_s: float = 1.0,
        flush_interval_s: float = 1.0,
        receive_buffer_bytes: int = 32 * 1024 * 1024,
        max_batch: int = 256,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._host = host
        self._port = port
        self._sink = sink
        self._lateness_s = lateness_s
        self._flush_interval_s = flush_interval_s
        self._receive_buffer_bytes = receive_buffer_bytes
        self._max_batch = max_batch
        self._clock = clock
        self._aggregator = Aggregator()
        self._counters = CollectorStats()
        self._socket: socket.socket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._flush_task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._effective_buffer = 0

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
        self._loop = asyncio.get_running_loop()
        self._stopping.clear()
        self._loop.add_reader(self._socket.fileno(), self._on_readable)
        self._flush_task = asyncio.create_task(self._flush_periodically(), name="collector-flush")
        logger.info(
            "collector listening on %s:%d (receive buffer %d bytes)", *self.address, self._effective_buffer
        )

    async def stop(self) -> None:
        """Stop receiving, read what is already queued, and hand every open window to the sink."""
        if self._socket is None or self._loop is None:
            return
        self._loop.remove_reader(self._socket.fileno())
        self._stopping.set()
        if self._flush_task is not None:
            await self._flush_task
            self._flush_task = None
        self._drain(_STOP_DRAIN_LIMIT)
        self._socket.close()
        self._socket = None
        await self._deliver(self._aggregator.flush_all())

    def stats(self) -> dict[str, Any]:
        """A snapshot of the counters, JSON-ready."""
        counters = self._counters
        host, port = self.address
        return {
            "address": f"{host}:{port}",
            "receive_buffer_bytes": self._effective_buffer,
            "datagrams": counters.datagrams,
            "lines": counters.lines,
            "requests": counters.requests,
            "events": counters.events,
            "rejected": counters.rejected,
            "late_requests": self._aggregator.late_requests,
            "receive_errors": counters.receive_errors,
            "open_windows": self._aggregator.open_windows,
            "windows_flushed": counters.windows_flushed,
            "windows_dropped": counters.windows_dropped,
            "sink_errors": counters.sink_errors,
            "last_rejected": list(counters.last_rejected),
        }

    def _bind(self) -> socket.socket:
        """A non-blocking UDP socket bound to the address, with the largest receive buffer allowed."""
        family = socket.AF_INET6 if ":" in self._host else socket.AF_INET
        udp = socket.socket(family, socket.SOCK_DGRAM)
        try:
            udp.setblocking(False)
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

    def _on_readable(self) -> None:
        """Readiness callback: a bounded batch, so one busy socket cannot starve the event loop."""
        self._drain(self._max_batch)

    def _drain(self, limit: int) -> None:
        """Receive and ingest up to `limit` datagrams, stopping early when the socket is empty."""
        if self._socket is None:
            return
        receive = self._socket.recv
        ingest = self._ingest_datagram
        for _ in range(limit):
            try:
                datagram = receive(_MAX_DATAGRAM)
            except BlockingIOError:
                return
            except OSError as error:
                self._counters.receive_errors += 1
                logger.warning("collector receive failed: %s", error)
                return
            ingest(datagram)

    def _ingest_datagram(self, datagram: bytes) -> None:
        """Parse every line of one datagram; nothing in it can raise out of here."""
        counters = self._counters
        counters.datagrams += 1
        add = self._aggregator.add
        for line in datagram.decode("utf-8", "replace").splitlines():
            if not line:
                continue
            counters.lines += 1
            request = parse_line(line)
            if request is not None:
                counters.requests += 1
                add(request)
            elif parse_event(line) is not None:
                counters.events += 1
            else:
                counters.rejected += 1
                counters.last_rejected.append(line[:_REJECTED_LINE_LIMIT])

    async def _flush_periodically(self) -> None:
        """Every flush interval, hand the windows that can no longer change to the sink."""
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self._flush_interval_s)
            await self._deliver(self._aggregator.flush(self._clock(), self._lateness_s))

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

"""A paced HTTP load generator for `fm demo` and load-test hooks, tallying answers by serving version.

It only ever targets loopback: it must not be usable to load someone else's server. Plain http
goes through the lean LoopbackClient (loopback_http.py), so that generating load costs little CPU on a
busy machine; https, or a test's httpx transport, goes through httpx.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import threading
from collections.abc import Mapping
from typing import Any, Protocol
from urllib.parse import urlsplit

import httpx

from fridaymorning.loadgen.loopback_http import LoopbackClient

log = logging.getLogger(__name__)

VERSION_HEADER = "X-Version"
UNKNOWN_VERSION = "unknown"  # answered, but without an X-Version header
NO_VERSION = "none"  # no answer at all: a transport error
TICK_S = 0.01
# A tick that comes late (a busy machine) may catch up on this much time's worth of requests at once;
# a longer stall is not made up for with a burst.
CATCH_UP_S = 0.1
# A request unanswered this long is a transport error. HAProxy's own timeouts are 30 s; 10 s leaves a
# busy machine (load average 40+) room without calling a slow answer a lost one.
REQUEST_TIMEOUT_S = 10.0

# Tally counters, per version.
REQUESTS, ERRORS, TRANSPORT_ERRORS = "requests", "errors", "transport_errors"


def check_loopback_url(url: str) -> str:
    """Return `url` if it is http(s) to 127.0.0.0/8, ::1 or localhost; raise ValueError otherwise."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"traffic URL must be http:// or https://, got {url!r}")
    host = parts.hostname or ""
    if host == "localhost":
        return url
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"traffic is sent to loopback only; {host!r} is not a loopback address") from None
    if not address.is_loopback:
        raise ValueError(f"traffic is sent to loopback only; {host} is not a loopback address")
    return url


class Answered(Protocol):
    """What the generator reads of a response."""

    status_code: int

    @property
    def headers(self) -> Any: ...  # with .get(name) ignoring case


class Getter(Protocol):
    """What the generator needs of an HTTP client: httpx.AsyncClient and LoopbackClient both are."""

    async def get(self, url: str, *, headers: Mapping[str, str]) -> Answered: ...


def check_header_values(headers: Mapping[str, str]) -> dict[str, str]:
    """The headers, or ValueError when a name or value would break the request's framing."""
    for name, value in headers.items():
        if any(character in f"{name}{value}" for character in "\r\n\0") or not name or ":" in name:
            raise ValueError(f"header {name!r} cannot be sent as given")
    return dict(headers)


class TrafficGenerator:
    """Sends GETs to `url` at about `rate_per_s`, with at most `concurrency` in flight.

    Pacing is a token bucket refilled every TICK_S; when all `concurrency` slots are busy the tick's tokens
    are dropped, so a slow server gets less load rather than a growing backlog. It stops after
    `max_requests` requests, or when the stop event is set, and never raises because a request failed.

    Tally per version (from X-Version; "unknown" when absent): requests, errors (status >= 500).
    A request that got no answer (refused, reset, timeout) counts under version "none" as a request and a
    transport error, not as an error. `transport` lets tests substitute httpx.MockTransport.
    """

    def __init__(
        self,
        url: str,
        rate_per_s: float = 200,
        concurrency: int = 16,
        max_requests: int | None = None,
        *,
        headers: dict[str, str] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if rate_per_s <= 0 or concurrency < 1:
            raise ValueError("rate_per_s must be positive and concurrency at least 1")
        self.url = check_loopback_url(url)
        self.rate_per_s = rate_per_s
        self.concurrency = concurrency
        self.max_requests = max_requests
        self._transport = transport
        self.headers = check_header_values(headers or {})  # sent with every request, e.g. an A/B header
        self._tally: dict[str, dict[str, int]] = {}
        # snapshot() may be called from another thread than the one running the loop (the demo does).
        self._tally_lock = threading.Lock()
        self._sent = 0
        self._in_flight: set[asyncio.Task[None]] = set()
        self._stop_event: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None

    def snapshot(self) -> dict[str, dict[str, int]]:
        """A copy of the tally: {version: {"requests": n, "errors": n, "transport_errors": n}}.

        Safe to call from any thread."""
        with self._tally_lock:
            return {version: dict(counts) for version, counts in self._tally.items()}

    @property
    def sent(self) -> int:
        """Requests sent so far, answered or not."""
        return self._sent

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Send paced requests until `stop` is set or max_requests were sent; wait for those in flight."""
        if stop is None:
            stop = asyncio.Event()
        async with self._client() as client:
            try:
                await self._pace(client, stop)
                if self._in_flight:
                    await asyncio.wait(self._in_flight)
            finally:
                for task in self._in_flight:
                    task.cancel()

    def _client(self) -> httpx.AsyncClient | LoopbackClient:
        if self._transport is None and urlsplit(self.url).scheme == "http":
            return LoopbackClient(timeout_s=REQUEST_TIMEOUT_S)
        limits = httpx.Limits(max_connections=self.concurrency, max_keepalive_connections=self.concurrency)
        return httpx.AsyncClient(
            transport=self._transport, limits=limits, timeout=REQUEST_TIMEOUT_S, trust_env=False
        )

    def start(self) -> None:
        """Run in the background until stop()."""
        if self._task is not None:
            raise RuntimeError("this traffic generator is already running")
        self._stop_event = asyncio.Event()
        self._task = asyncio.create_task(self.run(self._stop_event))

    async def stop(self) -> None:
        """Stop a generator started with start() and wait for its requests in flight."""
        if self._task is None or self._stop_event is None:
            return
        self._stop_event.set()
        await self._task
        self._task = None

    async def _pace(self, client: Getter, stop: asyncio.Event) -> None:
        """Launch requests as tokens accrue, until stopped or max_requests were sent."""
        loop = asyncio.get_running_loop()
        tokens, last = 1.0, loop.time()  # one token at once, so the first request leaves immediately
        burst = max(1.0, self.rate_per_s * CATCH_UP_S)
        while not stop.is_set() and not self._done_sending():
            now = loop.time()
            tokens = min(burst, tokens + (now - last) * self.rate_per_s)
            last = now
            while tokens >= 1 and not self._done_sending():
                tokens -= 1
                if len(self._in_flight) < self.concurrency:
                    self._launch(client)
            await asyncio.sleep(TICK_S)

    def _done_sending(self) -> bool:
        return self.max_requests is not None and self._sent >= self.max_requests

    def _launch(self, client: Getter) -> None:
        self._sent += 1
        task = asyncio.create_task(self._one_request(client))
        self._in_flight.add(task)
        task.add_done_callback(self._in_flight.discard)

    async def _one_request(self, client: Getter) -> None:
        try:
            response = await client.get(self.url, headers=self.headers)
        except httpx.HTTPError:
            self._count(NO_VERSION, transport_error=True)
            return
        except Exception:  # a failed request is a tally entry, never the end of the load
            log.exception("unexpected failure of a request to %s", self.url)
            self._count(NO_VERSION, transport_error=True)
            return
        version = response.headers.get(VERSION_HEADER, UNKNOWN_VERSION)
        self._count(version, error=response.status_code >= 500)

    def _count(self, version: str, *, error: bool = False, transport_error: bool = False) -> None:
        with self._tally_lock:
            counts = self._tally.setdefault(version, {REQUESTS: 0, ERRORS: 0, TRANSPORT_ERRORS: 0})
            counts[REQUESTS] += 1
            counts[ERRORS] += error
            counts[TRANSPORT_ERRORS] += transport_error

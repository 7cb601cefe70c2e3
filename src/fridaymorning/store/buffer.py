"""A bounded, ordered buffer of line-protocol lines, sent in batches by a thread of its own.

`put` never blocks and never does I/O: the collector hands its windows over and goes back to its
socket. The sender thread takes up to `batch_lines` lines from the front, sends them, and removes them
only once the server accepted them. A failed send (connection refused, timeout, 5xx) is retried with
exponential backoff, from `backoff_initial_s` up to `backoff_max_s`, for as long as it takes: an outage
shorter than the buffer lasts loses nothing, and the lines arrive in the order they were put.

The buffer is bounded in bytes (`max_bytes`, line protocol as sent). When it is full, the newest lines
are refused and counted in `overflowed`: what is already buffered (older, and earlier in the order
marks rely on) is kept. A batch the server rejects as
malformed (HTTP 400) would fail forever, so it is dropped and counted in `rejected`.
"""

from __future__ import annotations

import collections
import itertools
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

logger = logging.getLogger(__name__)


class RejectedBatchError(Exception):
    """The server refused the batch itself (malformed lines): sending it again cannot succeed."""


@dataclass(frozen=True, slots=True)
class BufferSettings:
    """How much is held, how much goes per request, and how failed sends back off."""

    max_bytes: int = 64 * 1024 * 1024
    batch_lines: int = 5_000
    # InfluxDB 1.x refuses a request body above 25 MB by default (`max-body-size`).
    batch_bytes: int = 4 * 1024 * 1024
    linger_s: float = 0.05
    backoff_initial_s: float = 0.1
    backoff_max_s: float = 5.0
    close_timeout_s: float = 10.0


class LineBuffer:
    """Lines waiting for the server, and the thread that sends them (started at the first `put`)."""

    def __init__(self, send: Callable[[Sequence[str]], None], settings: BufferSettings, name: str) -> None:
        self._send = send
        self.settings = settings
        self._name = name
        self._lines: collections.deque[str] = collections.deque()
        self._bytes = 0
        self._condition = threading.Condition()
        self._closing = False
        self._thread: threading.Thread | None = None
        self.sent = 0
        self.overflowed = 0
        self.rejected = 0
        self.retries = 0
        self.failing_since: float | None = None
        self.last_error = ""

    def put(self, lines: Sequence[str]) -> bool:
        """Queue `lines` behind every line put before; False (and counted) when they do not fit."""
        with self._condition:
            if self._closing:
                raise RuntimeError(f"{self._name}: the buffer is closed")
            size = sum(map(len, lines))
            if self._bytes + size > self.settings.max_bytes:
                self.overflowed += len(lines)
                return False
            self._lines.extend(lines)
            self._bytes += size
            self._start_thread()
            self._condition.notify_all()
        return True

    def stats(self) -> dict[str, object]:
        """Lines pending, sent, overflowed and rejected, retries, and whether sending fails right now."""
        with self._condition:
            return {
                "pending": len(self._lines),
                "pending_bytes": self._bytes,
                "capacity_bytes": self.settings.max_bytes,
                "sent": self.sent,
                "overflowed": self.overflowed,
                "rejected": self.rejected,
                "retries": self.retries,
                "failing_for_s": (
                    round(time.monotonic() - self.failing_since, 1) if self.failing_since else 0.0
                ),
                "last_error": self.last_error,
            }

    def drain(self, timeout_s: float) -> bool:
        """Wait until every line put so far was sent (or dropped); False if `timeout_s` passed first."""
        deadline = time.monotonic() + timeout_s
        with self._condition:
            while self._lines:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._condition.wait(min(remaining, 0.1))
        return True

    def close(self) -> None:
        """Send what is buffered, for at most `close_timeout_s`, then stop the thread."""
        if not self.drain(self.settings.close_timeout_s):
            logger.warning("%s: %d lines were still unsent at close", self._name, len(self._lines))
        with self._condition:
            self._closing = True
            self._condition.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=self.settings.backoff_max_s + 30)

    def _start_thread(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
            self._thread.start()

    def _run(self) -> None:
        backoff = self.settings.backoff_initial_s
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            try:
                self._send(batch)
            except RejectedBatchError as error:
                logger.error("%s: the server rejected %d lines: %s", self._name, len(batch), error)
                self._done(batch, rejected=True, error=str(error))
            except Exception as error:  # any failure of the transport is retried, until closed
                if self._closing:
                    logger.warning("%s: closed with %d lines unsent: %s", self._name, len(self._lines), error)
                    return
                backoff = self._failed(error, backoff)
            else:
                self._done(batch, rejected=False, error="")
                backoff = self.settings.backoff_initial_s

    def _next_batch(self) -> list[str] | None:
        """Up to `batch_lines` lines from the front (left in place until sent); None once closed and empty."""
        with self._condition:
            while not self._lines:
                if self._closing:
                    return None
                self._condition.wait()
            if len(self._lines) < self.settings.batch_lines and not self._closing:
                # A short wait lets one flush's windows go out in one request, not one each.
                self._condition.wait(self.settings.linger_s)
            batch: list[str] = []
            size = 0
            for line in itertools.islice(self._lines, self.settings.batch_lines):
                if batch and size + len(line) > self.settings.batch_bytes:
                    break
                batch.append(line)
                size += len(line)
            return batch

    def _done(self, batch: list[str], *, rejected: bool, error: str) -> None:
        with self._condition:
            for _ in batch:
                self._bytes -= len(self._lines.popleft())
            if rejected:
                self.rejected += len(batch)
                self.last_error = error
            else:
                self.sent += len(batch)
            self.failing_since = None
            self._condition.notify_all()

    def _failed(self, error: Exception, backoff: float) -> float:
        """Count the failure, wait `backoff` (less if closing), and return the next backoff."""
        with self._condition:
            self.retries += 1
            self.last_error = f"{type(error).__name__}: {error}"
            if self.failing_since is None:
                self.failing_since = time.monotonic()
                logger.warning("%s: sending failed, retrying with backoff: %s", self._name, self.last_error)
            if not self._closing:
                self._condition.wait(backoff)
        return min(backoff * 2, self.settings.backoff_max_s)

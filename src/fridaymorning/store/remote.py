"""What the InfluxDB and VictoriaMetrics stores share: URL, buffered writes, marks and decisions.

Writes go through a `LineBuffer` (store.buffer): `write` only turns windows into lines and queues them.
The collector says, after each flush, below which second every window was handed over
(`mark_complete`); that mark is queued behind those windows, so once the server holds the mark it holds
them too. The controller reads through `query_complete`, which waits (briefly) for the mark to reach
the seconds it judges and otherwise raises StoreError: a judge never sees a second the buffer still
holds, and `fm replay` later reads exactly what each decision read. `query` reads what is there.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx

from fridaymorning.errors import StoreError
from fridaymorning.models import Window
from fridaymorning.store.buffer import BufferSettings, LineBuffer
from fridaymorning.store.lineprotocol import Flavour, decision_line, mark_line, window_lines

logger = logging.getLogger(__name__)

# How long `query_complete` waits for the collector's mark to reach the judged seconds.
COMPLETE_WAIT_S = 3.0
HTTP_TIMEOUT_S = 10.0
# Sequence numbers are kept this long after a second, to number a late window of it apart.
SEQUENCE_MEMORY_S = 3600
_SETTINGS = {
    "buffer_mb": "max_bytes",
    "batch_lines": "batch_lines",
    "backoff_max_s": "backoff_max_s",
    "close_timeout_s": "close_timeout_s",
}


class RemoteStoreUrl:
    """`<scheme>://[user:password@]host:port/<db>[?buffer_mb=N&batch_lines=N&backoff_max_s=S&…]`."""

    def __init__(self, url: str, default_port: int) -> None:
        parts = urlsplit(url)
        database = parts.path.strip("/")
        if not parts.hostname or not database or "/" in database:
            raise StoreError(f"expected {parts.scheme}://host:port/database, got {url!r}")
        self.scheme = parts.scheme
        self.database = database
        self.base_url = f"http://{parts.hostname}:{parts.port or default_port}"
        self.auth = (parts.username or "", parts.password or "") if parts.username else None
        self.settings = buffer_settings(parse_qs(parts.query), url)
        self.shown = f"{parts.scheme}://{parts.hostname}:{parts.port or default_port}/{database}"


def buffer_settings(query: Mapping[str, list[str]], url: str) -> BufferSettings:
    """Buffer settings from a URL's query string; an unknown or malformed one is a StoreError."""
    values: dict[str, Any] = {}
    for key, raw in query.items():
        if key not in _SETTINGS:
            raise StoreError(f"unknown option {key!r} in {url!r}; valid: {', '.join(sorted(_SETTINGS))}")
        try:
            value = float(raw[-1]) if key.endswith("_s") else int(raw[-1])
        except ValueError as error:
            raise StoreError(f"option {key} in {url!r} must be a number") from error
        if value <= 0:
            raise StoreError(f"option {key} in {url!r} must be positive")
        values[_SETTINGS[key]] = value * 1024 * 1024 if key == "buffer_mb" else value
    return BufferSettings(**values)


class LineProtocolStore:
    """A MetricStore over HTTP line protocol. Subclasses send batches and read windows back."""

    flavour: Flavour
    default_port: int

    def __init__(self, url: str) -> None:
        self.url = RemoteStoreUrl(url, self.default_port)
        self.writer = secrets.token_hex(4)
        self._client = self._http_client()  # reads, from any thread
        self._writer_client = self._http_client()  # the buffer's thread only
        self._buffer = LineBuffer(self._send, self.url.settings, f"{self.url.scheme}-writer")
        self._sequences: dict[tuple[str, str, int], int] = {}
        self._newest_second = 0
        self._complete_below = 0

    # --- writing -------------------------------------------------------------------------------------

    def write(self, windows: Sequence[Window]) -> None:
        """Queue the windows' lines; never blocks on the server (see `buffer_stats` for what happens)."""
        lines: list[str] = []
        for window in windows:
            lines.extend(window_lines(window, self.writer, self._next_sequence(window), self.flavour))
        self._buffer.put(lines)

    def mark_complete(self, complete_below: int) -> None:
        """Every window of a second below `complete_below` has been given to `write` (by the collector)."""
        self._buffer.put([mark_line(self.writer, complete_below, time.time_ns())])

    def record_decision(self, event: Mapping[str, object]) -> None:
        """A controller's decision (its notification event), for dashboards: weight and annotation."""
        try:
            self._buffer.put([decision_line(event, time.time_ns())])
        except RuntimeError:  # closed: the rollout's last words come after the store's
            logger.warning("%s is closed: decision %s not recorded", self.url.shown, event.get("event"))

    def buffer_stats(self) -> dict[str, object]:
        """The write buffer's counters (pending, sent, overflowed, rejected, retries), for status pages."""
        return {"store": self.url.shown, **self._buffer.stats()}

    def flush(self, timeout_s: float = 30.0) -> bool:
        """Wait until everything written so far reached the server; False if `timeout_s` passed first."""
        return self._buffer.drain(timeout_s)

    def _next_sequence(self, window: Window) -> int:
        key = (window.backend, window.version, window.second)
        sequence = self._sequences.get(key, 0)
        self._sequences[key] = sequence + 1
        if window.second > self._newest_second:
            self._newest_second = window.second
            if len(self._sequences) > 100_000:
                oldest = self._newest_second - SEQUENCE_MEMORY_S
                self._sequences = {key: n for key, n in self._sequences.items() if key[2] >= oldest}
        return sequence

    def _http_client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url.base_url, auth=self.url.auth, timeout=HTTP_TIMEOUT_S)

    def _send(self, lines: Sequence[str]) -> None:
        """Send one batch (in the buffer's thread); raise to have it retried."""
        raise NotImplementedError

    # --- reading -------------------------------------------------------------------------------------

    def query(self, backend: str, version: str, start: int, end: int) -> list[Window]:
        raise NotImplementedError

    def newest_mark(self) -> int:
        """The highest `complete_below` any collector has written lately (0 if none)."""
        raise NotImplementedError

    def check_judgeable(self) -> None:
        """Raise StoreError if the server is set up so that a judge would see stale data."""

    def query_complete(self, backend: str, version: str, start: int, end: int) -> list[Window]:
        """As `query`, once the collector's mark shows every second below `end` is in the store.

        Waits up to COMPLETE_WAIT_S for the mark; then raises StoreError (the judge holds, never passes).
        """
        self.check_judgeable()
        deadline = time.monotonic() + COMPLETE_WAIT_S
        while self._complete_below < end:
            self._complete_below = max(self._complete_below, self.newest_mark())
            if self._complete_below >= end:
                break
            if time.monotonic() > deadline:
                raise StoreError(
                    f"{self.url.shown} holds windows only up to second {self._complete_below} and the judge "
                    f"needs them up to {end}: the collector's writes are behind (see `fm status`)"
                )
            time.sleep(0.1)
        return self.query(backend, version, start, end)

    def _get_json(self, path: str, params: Mapping[str, str | int | float]) -> Any:
        try:
            response = self._client.get(path, params=dict(params))
        except httpx.HTTPError as error:
            raise StoreError(f"cannot read {self.url.shown}: {error}") from error
        if response.status_code >= 400:
            raise StoreError(f"{self.url.shown} answered {response.status_code}: {response.text[:300]}")
        try:
            return response.json()
        except ValueError as error:
            raise StoreError(f"{self.url.shown} answered with malformed JSON: {error}") from error

    def close(self) -> None:
        self._buffer.close()
        self._client.close()
        self._writer_client.close()

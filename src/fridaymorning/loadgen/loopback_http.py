"""A small HTTP/1.1 keep-alive client for GETs on loopback: what the traffic generator sends with.

httpx spent 5 to 8 ms of CPU per request here (its connection pool polls every idle connection's
socket for each request), so on a machine whose cores are busy, generating a few hundred requests per
second took most of a core from the very processes under test. This client writes a GET and reads the
answer on asyncio streams, at a fraction of that cost. It has the surface the generator uses:
`await client.get(url, headers=...)` returning an object with `status_code` and `headers.get(name)`;
failures raise httpx's exception types, so callers catch `httpx.HTTPError` whichever client they hold.

Only plain http to loopback (the generator checks the URL); no redirects, no cookies, no TLS. Bodies
are read (by Content-Length, chunked, or to the end of the connection) and dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from types import TracebackType
from urllib.parse import urlsplit

import httpx

HEAD_LIMIT = 64 * 1024  # bytes of status line and headers; more is a protocol error
NO_BODY_STATUSES = frozenset({204, 304})


class Headers(dict[str, str]):
    """Response headers by lower-case name; `get` ignores case, as HTTP does."""

    def get(self, name: str, default: str | None = None) -> str | None:  # type: ignore[override]
        return super().get(name.lower(), default)


class Answer:
    """A response: its status and headers (the body has been read and dropped)."""

    __slots__ = ("headers", "status_code")

    def __init__(self, status_code: int, headers: Headers) -> None:
        self.status_code = status_code
        self.headers = headers


class _Connection:
    __slots__ = ("reader", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @property
    def reusable(self) -> bool:
        """False once the server closed it (seen by the event loop as end of stream) or we did."""
        return not self.reader.at_eof() and not self.writer.is_closing()

    def close(self) -> None:
        self.writer.close()


class LoopbackClient:
    """GETs over a pool of keep-alive connections to one host and port, each request bounded in time.

    Use as `async with LoopbackClient(timeout_s=2.0) as client: answer = await client.get(url)`. The
    number of connections is the number of requests in flight: the caller bounds it.
    """

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self._idle: list[_Connection] = []

    async def __aenter__(self) -> LoopbackClient:
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()
        for connection in idle:
            with contextlib.suppress(OSError):
                await connection.writer.wait_closed()

    async def get(self, url: str, headers: Mapping[str, str] | None = None) -> Answer:
        """GET `url`; raise httpx.TimeoutException, httpx.ConnectError or httpx.ReadError (or its
        subclass RemoteProtocolError for a malformed answer) when no whole answer arrives."""
        parts = urlsplit(url)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        request = _request_bytes(target, parts.netloc, headers or {})
        try:
            async with asyncio.timeout(self.timeout_s):
                connection = await self._connection(parts.hostname or "127.0.0.1", parts.port or 80)
                return await self._exchange(connection, request)
        except TimeoutError:
            raise httpx.ReadTimeout(f"no answer from {url} within {self.timeout_s} s") from None

    async def _connection(self, host: str, port: int) -> _Connection:
        while self._idle:
            connection = self._idle.pop()
            if connection.reusable:
                return connection
            connection.close()
        try:
            reader, writer = await asyncio.open_connection(host, port, limit=HEAD_LIMIT)
        except OSError as error:
            raise httpx.ConnectError(f"cannot connect to {host}:{port}: {error}") from None
        return _Connection(reader, writer)

    async def _exchange(self, connection: _Connection, request: bytes) -> Answer:
        """Send one request and read its answer; the connection goes back to the pool if it may."""
        try:
            connection.writer.write(request)
            status, headers, keep_alive = await _read_head(connection.reader)
            keep_alive = await _read_body(connection.reader, status, headers) and keep_alive
        except asyncio.CancelledError:
            connection.close()
            raise
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as error:
            connection.close()
            raise httpx.RemoteProtocolError(f"malformed or cut-off answer: {error!r}") from None
        except OSError as error:
            connection.close()
            raise httpx.ReadError(f"connection failed: {error}") from None
        if keep_alive and connection.reusable:
            self._idle.append(connection)
        else:
            connection.close()
        return Answer(status, headers)


def _request_bytes(target: str, host: str, headers: Mapping[str, str]) -> bytes:
    lines = [f"GET {target} HTTP/1.1", f"Host: {host}", "User-Agent: fridaymorning-traffic"]
    lines.extend(f"{name}: {value}" for name, value in headers.items())
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


async def _read_head(reader: asyncio.StreamReader) -> tuple[int, Headers, bool]:
    """Status, headers and whether the connection may be kept, skipping any 1xx interim answers."""
    while True:
        head = await reader.readuntil(b"\r\n\r\n")
        status_line, *header_lines = head[:-4].decode("latin-1").split("\r\n")
        version, status_text = status_line.split(" ", 2)[:2]
        if not version.startswith("HTTP/1.") or len(status_text) != 3:
            raise ValueError(f"not an HTTP/1.x status line: {status_line[:80]!r}")
        status = int(status_text)
        if status >= 200:
            break
    headers = Headers()
    for line in header_lines:
        name, separator, value = line.partition(":")
        if not separator:
            raise ValueError(f"not a header line: {line[:80]!r}")
        headers[name.strip().lower()] = value.strip()
    connection = (headers.get("connection") or "").lower()
    keep_alive = version == "HTTP/1.1" and "close" not in connection
    return status, headers, keep_alive


async def _read_body(reader: asyncio.StreamReader, status: int, headers: Headers) -> bool:
    """Read and drop the body; False when its end was the end of the connection."""
    if status in NO_BODY_STATUSES:
        return True
    if "chunked" in (headers.get("transfer-encoding") or "").lower():
        await _read_chunks(reader)
        return True
    length = headers.get("content-length")
    if length is not None:
        await reader.readexactly(int(length))
        return True
    await reader.read()  # delimited by the end of the connection
    return False


async def _read_chunks(reader: asyncio.StreamReader) -> None:
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";", 1)[0], 16)
        if size == 0:
            while await reader.readuntil(b"\r\n") != b"\r\n":  # trailers, then the blank line
                pass
            return
        await reader.readexactly(size + 2)

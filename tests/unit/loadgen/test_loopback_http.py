"""The traffic generator's HTTP client, against a real socket server on loopback that answers canned bytes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest

from fridaymorning.loadgen.loopback_http import LoopbackClient
from fridaymorning.loadgen.traffic import TrafficGenerator

OK = b"HTTP/1.1 200 OK\r\nX-Version: v2\r\nContent-Length: 5\r\n\r\nhello"
CHUNKED = (
    b"HTTP/1.1 500 Internal Server Error\r\nx-version: v3\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"3;ext=1\r\nabc\r\n2\r\nde\r\n0\r\nTrailer: t\r\n\r\n"
)
CLOSE_DELIMITED = b"HTTP/1.0 503 Service Unavailable\r\nContent-Type: text/html\r\n\r\n<html>busy</html>"
INTERIM_THEN_OK = b"HTTP/1.1 100 Continue\r\n\r\n" + OK
NO_CONTENT = b"HTTP/1.1 204 No Content\r\nX-Version: v1\r\n\r\n"
GARBAGE = b"SSH-2.0-OpenSSH\r\n\r\n"

OK_CLOSE = b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 5\r\n\r\nhello"


@asynccontextmanager
async def serving(answer: bytes | None, *, close_after: bool = False) -> AsyncIterator[tuple[str, list[int]]]:
    """A loopback server answering each request head with `answer` (None: never answers).

    Yields its URL and a list with the number of connections accepted so far.
    """
    accepted = [0]

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted[0] += 1
        try:
            while await reader.readuntil(b"\r\n\r\n"):
                if answer is None:
                    await asyncio.sleep(3600)
                    return
                writer.write(answer)
                await writer.drain()
                if close_after or answer.startswith(b"HTTP/1.0"):
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}/path?q=1", accepted
    finally:
        server.close()


async def test_keep_alive_answers_are_read_and_the_connection_is_reused() -> None:
    """Status and headers (any case) are read; three GETs in turn share one connection."""
    async with serving(OK) as (url, accepted), LoopbackClient(timeout_s=5) as client:
        for _ in range(3):
            answer = await client.get(url, headers={"X-Canary": "1"})
            assert answer.status_code == 200
            assert answer.headers.get("X-VERSION") == "v2"
    assert accepted[0] == 1


@pytest.mark.parametrize(
    ("canned", "status", "version"),
    [
        (CHUNKED, 500, "v3"),
        (CLOSE_DELIMITED, 503, None),
        (INTERIM_THEN_OK, 200, "v2"),
        (NO_CONTENT, 204, "v1"),
    ],
)
async def test_every_way_of_ending_a_body_is_understood(
    canned: bytes, status: int, version: str | None
) -> None:
    """Chunked bodies with trailers, bodies ended by closing, 1xx interim answers and 204s: two GETs each."""
    async with serving(canned) as (url, _), LoopbackClient(timeout_s=5) as client:
        for _ in range(2):
            answer = await client.get(url)
            assert (answer.status_code, answer.headers.get("x-version")) == (status, version)


async def test_connection_close_is_honoured() -> None:
    """After an answer with `Connection: close`, the next GET opens a new connection."""
    async with serving(OK_CLOSE, close_after=True) as (url, accepted), LoopbackClient(timeout_s=5) as client:
        assert (await client.get(url)).status_code == 200
        assert (await client.get(url)).status_code == 200
    assert accepted[0] == 2


async def test_failures_raise_httpx_errors() -> None:
    """Refused: ConnectError; garbage: RemoteProtocolError; silence: a timeout. All are httpx.HTTPError."""
    async with serving(OK) as (url, _):
        pass  # the server is closed: its port now refuses
    async with LoopbackClient(timeout_s=5) as client:
        with pytest.raises(httpx.ConnectError):
            await client.get(url)
    async with serving(GARBAGE) as (url, _), LoopbackClient(timeout_s=5) as client:
        with pytest.raises(httpx.RemoteProtocolError):
            await client.get(url)
    async with serving(None) as (url, _), LoopbackClient(timeout_s=0.2) as client:
        with pytest.raises(httpx.TimeoutException):
            await client.get(url)


async def test_the_generator_tallies_through_the_loopback_client() -> None:
    """Without a test transport, the generator sends through LoopbackClient and tallies by X-Version."""
    async with serving(OK) as (url, _):
        traffic = TrafficGenerator(url, rate_per_s=1000, max_requests=20)
        await asyncio.wait_for(traffic.run(), timeout=60)
    assert traffic.snapshot() == {"v2": {"requests": 20, "errors": 0, "transport_errors": 0}}


@pytest.mark.parametrize("headers", [{"X-A": "1\r\nHost: evil"}, {"X-A\n": "1"}, {"": "1"}, {"A:B": "1"}])
def test_headers_that_would_break_the_request_are_refused(headers: dict[str, str]) -> None:
    """A header name or value with CR, LF, NUL or a colon in the name cannot smuggle another header."""
    with pytest.raises(ValueError):
        TrafficGenerator("http://127.0.0.1:1/", headers=headers)

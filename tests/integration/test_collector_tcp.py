"""The TCP collector fed by a real HAProxy 2.6 `ring` forwarding over TCP, in both RFC 6587 framings.

The ring is HAProxy's lossless path: the lines wait in the ring until the TCP connection takes them.
`log-proto octet-count` frames each message as 'LEN MSG'; `log-proto legacy` ends each with LF.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from fridaymorning.ingest.syslog import TcpCollector
from fridaymorning.logformat import COMPACT_LOG_FORMAT
from fridaymorning.models import Window
from fridaymorning.router import HAProxyProcess
from fridaymorning.testing import EVENT_DEADLINE_S

pytestmark = [pytest.mark.haproxy, pytest.mark.timeout(600)]

REQUESTS = 200

CONFIG = """\
global
    log ring@fmlogs local0
    stats socket {admin_socket} mode 600 level admin
defaults
    mode http
    timeout connect 2s
    timeout client 10s
    timeout server 10s
ring fmlogs
    format rfc3164
    maxlen 2048
    size 1048576
    timeout connect 2s
    timeout server 10s
    server collector 127.0.0.1:{collector_port} log-proto {log_proto}
frontend fe
    bind 127.0.0.1:{frontend_port}
    log global
    option dontlognull
    log-format "{compact_format}"
    default_backend app
backend app
    server v1-1 127.0.0.1:{instance_port}
frontend instance
    bind 127.0.0.1:{instance_port}
    http-request return status 200 content-type text/plain string ok
"""


@pytest.mark.parametrize("log_proto", ["octet-count", "legacy"])
async def test_ring_forwarding_delivers_every_request(
    haproxy_binary: str, free_port: Callable[[], int], tmp_path: Path, log_proto: str
) -> None:
    """Every request HAProxy served arrives through the ring's TCP connection, parsed, none rejected."""
    received: list[Window] = []
    collector = TcpCollector("127.0.0.1", 0, received.extend, flush_interval_s=0.2)
    await collector.start()
    frontend_port, instance_port = free_port(), free_port()
    config_path = tmp_path / "haproxy.cfg"
    config_path.write_text(
        CONFIG.format(
            collector_port=collector.address[1],
            log_proto=log_proto,
            frontend_port=frontend_port,
            instance_port=instance_port,
            compact_format=COMPACT_LOG_FORMAT,
            admin_socket=tmp_path / "admin.sock",
        ),
        encoding="utf-8",
    )
    haproxy = HAProxyProcess(config_path, binary=haproxy_binary)
    await haproxy.start()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{frontend_port}", trust_env=False) as client:
            for index in range(REQUESTS):
                assert (await client.get(f"/{index}")).status_code == 200
        deadline = asyncio.get_running_loop().time() + EVENT_DEADLINE_S
        while collector.stats()["requests"] < REQUESTS and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)
    finally:
        await haproxy.stop()
        await collector.stop()
    stats = collector.stats()
    assert (stats["requests"], stats["rejected"], stats["framing_errors"]) == (REQUESTS, 0, 0), stats
    assert stats["connections_total"] >= 1
    assert sum(window.requests for window in received) == REQUESTS

"""Which listen addresses take the same socket: a table of hosts, and pairs of listeners."""

from __future__ import annotations

import pytest

from fridaymorning.config_addresses import Listener, collisions, hosts_overlap


@pytest.mark.parametrize(
    ("first", "second", "overlap"),
    [
        ("127.0.0.1", "127.0.0.1", True),
        ("0.0.0.0", "127.0.0.1", True),
        ("127.0.0.1", "0.0.0.0", True),
        ("*", "10.1.2.3", True),
        ("::", "127.0.0.1", True),  # dual-stack: :: takes the IPv4 port too
        ("::", "::1", True),
        ("0.0.0.0", "::1", False),  # 0.0.0.0 is IPv4 only
        ("127.0.0.1", "127.0.0.2", False),
        ("127.0.0.1", "::1", False),
        ("::ffff:127.0.0.1", "127.0.0.1", True),  # an IPv4-mapped IPv6 address is the IPv4 address
        ("localhost", "127.0.0.1", True),
        ("LOCALHOST", "::1", True),
        ("web.internal", "0.0.0.0", True),  # a name may be any address: a wildcard covers it
        ("web.internal", "127.0.0.1", False),
        ("web.internal", "Web.Internal", True),
    ],
)
def test_hosts_overlap(first: str, second: str, overlap: bool) -> None:
    """Two hosts overlap when they are the same address, or a wildcard covers the other."""
    assert hosts_overlap(first, second) is overlap


def test_collisions_need_the_same_port_and_protocol() -> None:
    """Only listeners on one port and one protocol, with overlapping hosts, collide; each pair once."""
    api = Listener("api.listen", "127.0.0.1", 8080, "tcp")
    frontend = Listener("services[0].frontend", "0.0.0.0", 8080, "tcp")
    collector = Listener("collector.listen", "127.0.0.1", 8080, "udp")
    other_port = Listener("services[1].frontend", "127.0.0.1", 8081, "tcp")
    assert collisions([api, frontend, collector, other_port]) == [(api, frontend)]
    assert frontend.describe() == "services[0].frontend 0.0.0.0:8080/tcp"
    assert Listener("api.listen", "::1", 1, "tcp").address() == "[::1]:1/tcp"

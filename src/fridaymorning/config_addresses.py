"""Which configured listen addresses would take the same socket: pure functions, no bind is tried.

Two listeners collide when they use the same protocol and port, and their hosts overlap: the same
address, or a wildcard that covers the other one. `0.0.0.0` (and HAProxy's `*`) covers every IPv4
address; `::` covers every IPv6 address and, since Linux binds it dual-stack by default, every IPv4
address too. A UDP socket and a TCP socket may share a port, so the UDP collector collides only with
UDP listeners.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from itertools import combinations
from typing import Literal

__all__ = ["Listener", "collisions", "hosts_overlap"]

Protocol = Literal["tcp", "udp"]

WILDCARD_V4 = "0.0.0.0"
WILDCARD_V6 = "::"
LOOPBACK_NAMES = {"localhost": ("127.0.0.1", "::1")}


@dataclass(frozen=True)
class Listener:
    """One configured listen address: who it belongs to (a dotted field), its host, port and protocol."""

    field: str
    host: str
    port: int
    protocol: Protocol

    def address(self) -> str:
        """'127.0.0.1:8080/tcp', '[::]:8080/tcp'."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}/{self.protocol}"

    def describe(self) -> str:
        return f"{self.field} {self.address()}"


def collisions(listeners: list[Listener]) -> list[tuple[Listener, Listener]]:
    """Every pair of listeners that cannot both bind, in the order given."""
    return [
        (first, second)
        for first, second in combinations(listeners, 2)
        if first.port == second.port
        and first.protocol == second.protocol
        and hosts_overlap(first.host, second.host)
    ]


def hosts_overlap(first: str, second: str) -> bool:
    """Whether binding both hosts on one port would clash (a host name may be any address: it overlaps
    a wildcard, and 'localhost' is its loopback addresses)."""
    first_addresses, second_addresses = addresses_of(first), addresses_of(second)
    return any(
        covers(one, other) or covers(other, one) for one in first_addresses for other in second_addresses
    )


def addresses_of(host: str) -> tuple[str, ...]:
    """The canonical addresses a host stands for: itself, or a name's known addresses."""
    if host in ("*", ""):
        return (WILDCARD_V4,)
    if host.lower() in LOOPBACK_NAMES:
        return LOOPBACK_NAMES[host.lower()]
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return (host.lower(),)  # an unresolved name
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return (str(address),)


def covers(wide: str, narrow: str) -> bool:
    """Whether binding `wide` takes the port for `narrow` too."""
    if wide in (narrow, WILDCARD_V6):
        return True
    if wide == WILDCARD_V4:
        return version_of(narrow) != 6
    return False


def version_of(host: str) -> int | None:
    """4 or 6 for an address, None for a host name."""
    try:
        return ipaddress.ip_address(host).version
    except ValueError:
        return None

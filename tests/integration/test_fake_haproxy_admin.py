"""testing.FakeHAProxyAdmin answers like a real HAProxy 2.6: the same commands, sent to both, get the same
answers, and leave the same servers, weights and states behind. Unit tests of the router rely on it."""

from __future__ import annotations

import csv
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from fridaymorning.testing import FakeHAProxyAdmin, admin_answer, wait_for_sync

pytestmark = pytest.mark.haproxy

# One dynamic backend with a static server, one static one; no frontend is needed for the runtime API.
CONFIG = """\
global
    stats socket {socket} mode 600 level admin
defaults
    mode http
    timeout connect 1s
    timeout client 5s
    timeout server 5s
backend web
    balance roundrobin
    server v1-1 127.0.0.1:9001 weight 200
backend legacy
    balance static-rr
"""

# Successes and refusals of every command the router sends. Servers point at the discard port: their
# health checks fail the same way everywhere, and no answer below depends on them.
SCRIPT = [
    "get weight web/v1-1",
    "set weight web/v1-1 50",
    "get weight web/v1-1",
    "get weight web/v9-1",
    "get weight shop/v1-1",
    "get weight web",
    "set weight web/v9-1 5",
    "set weight shop/v1-1 5",
    "set weight web/v1-1 300",
    "add server web/v2-1 127.0.0.1:9 weight 5 check inter 500ms fall 2 rise 1",
    "add server web/v2-1 127.0.0.1:9 weight 5",
    "add server legacy/v2-1 127.0.0.1:9 weight 5",
    "add server shop/v2-1 127.0.0.1:9 weight 5",
    "add server web/v2-2 127.0.0.1:9 weight 300",
    "get weight web/v2-1",
    "enable health web/v2-1",
    "enable health web/v1-1",
    "enable health web/v9-1",
    "enable server web/v9-1",
    "disable server shop/v1-1",
    "set server web/v2-1 state drain",
    "set server web/v9-1 state drain",
    "set server web/v2-1 state sideways",
    "del server web/v2-1",
    "disable server web/v2-1",
    "set weight web/v2-1 0",
    "add server web/v2-3 127.0.0.1:9 weight 7",
    "del server web/v2-3",
    "del server web/v2-3",
    "del server web/v9-1",
    "del server shop/v1-1",
    "enable dynamic-cookie backend web",
    "enable dynamic-cookie backend shop",
]


def answers(path: Path) -> list[tuple[str, str]]:
    return [(command, admin_answer(path, command)) for command in SCRIPT]


def servers_left(path: Path) -> list[tuple[str, ...]]:
    """From `show servers state`: each server's backend, name, address, admin state, weights and port."""
    lines = admin_answer(path, "show servers state").strip().splitlines()
    header = lines[1][2:].split()
    keep = ("be_name", "srv_name", "srv_addr", "srv_admin_state", "srv_uweight", "srv_iweight", "srv_port")
    return [tuple(dict(zip(header, line.split(), strict=False))[key] for key in keep) for line in lines[2:]]


def stat_rows(path: Path) -> list[tuple[str, ...]]:
    """From `show stat`: the rows of backends web and legacy, with the columns the router reads."""
    text = admin_answer(path, "show stat")
    rows = csv.DictReader(line for line in text[2:].splitlines() if line)
    keep = ("pxname", "svname", "status", "uweight", "addr", "algo")
    return [tuple(row[key] for key in keep) for row in rows if row["pxname"] in ("web", "legacy")]


@pytest.fixture
def real_admin(haproxy_binary: str, tmp_path: Path) -> Iterator[Path]:
    """The admin socket of a real HAProxy started from CONFIG, stopped at teardown."""
    socket_path = tmp_path / "real.sock"
    config_path = tmp_path / "haproxy.cfg"
    config_path.write_text(CONFIG.format(socket=socket_path), encoding="utf-8")
    process = subprocess.Popen([haproxy_binary, "-db", "-f", str(config_path)], stderr=subprocess.DEVNULL)
    try:
        wait_for_sync(
            lambda: socket_path.exists() and admin_answer(socket_path, "show info"), "HAProxy's admin socket"
        )
        yield socket_path
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.fixture
def fake_admin(tmp_path: Path) -> Iterator[Path]:
    """FakeHAProxyAdmin set up as CONFIG declares."""
    with FakeHAProxyAdmin(tmp_path / "fake.sock", {"web": "roundrobin", "legacy": "static-rr"}) as fake:
        fake.add_static_server("web", "v1-1", "127.0.0.1", 9001, weight=200)
        yield fake.path


def test_the_fake_answers_every_command_as_haproxy_does(real_admin: Path, fake_admin: Path) -> None:
    """Each command of the script gets the same answer, byte for byte, from the fake and from HAProxy."""
    assert answers(fake_admin) == answers(real_admin)


def test_the_fake_is_left_in_the_state_haproxy_is_left_in(real_admin: Path, fake_admin: Path) -> None:
    """After the script, `show servers state` and `show stat` agree on servers, weights and states."""
    answers(real_admin)
    answers(fake_admin)
    assert servers_left(fake_admin) == servers_left(real_admin)
    assert stat_rows(fake_admin) == stat_rows(real_admin)


def test_an_unknown_command_is_refused_as_haproxy_does(real_admin: Path, fake_admin: Path) -> None:
    """An unknown command gets HAProxy's 'Unknown command' answer (its list of suggestions aside)."""
    real, fake = admin_answer(real_admin, "show nothing"), admin_answer(fake_admin, "show nothing")
    assert fake.splitlines()[0] == real.splitlines()[0]

"""HAProxyRouter against a fake admin socket: the commands it sends and how it reads the answers."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from fridaymorning.errors import RouterError, WeightMismatchError
from fridaymorning.models import ServerState, ServerStatus
from fridaymorning.router import HAProxyRouter, Share
from fridaymorning.router.haproxy import parse_get_weight, parse_show_info, parse_show_stat, status_of

if TYPE_CHECKING:  # the fixture's class, for annotations only: test directories are not packages
    from tests.unit.router.conftest import FakeAdminSocket

SHOW_STAT = (
    "# pxname,svname,qcur,scur,stot,status,weight,uweight,addr,algo\n"
    "web,FRONTEND,,2,40,OPEN,,,,\n"
    "web,v1-1,0,1,30,UP,256,100,127.0.0.1:9001,\n"
    "web,v2-1,0,0,10,DRAIN,0,20,127.0.0.1:9002,\n"
    "web,v2-2,0,0,0,DOWN 1/2,0,0,127.0.0.1:9003,\n"
    "web,BACKEND,0,1,40,UP,256,256,,roundrobin\n"
    "other,BACKEND,0,0,0,UP,0,0,,static-rr\n"
    "\n"
)

NINETY_TEN = {"stable": Share(90, ("v1-1",)), "canary": Share(10, ("v2-1",))}


def router_for(fake: FakeAdminSocket) -> HAProxyRouter:
    return HAProxyRouter(fake.path, check_interval_ms=500, timeout_s=2.0, drain_timeout_s=1.0)


def test_get_weight_answer_is_parsed() -> None:
    """'50 (initial 10)' is read as current weight 50, configured weight 10."""
    assert parse_get_weight("50 (initial 10)\n\n") == (50, 10)


def test_get_weight_error_answer_is_a_router_error() -> None:
    """An error answer where a weight was expected raises RouterError quoting it."""
    with pytest.raises(RouterError, match="No such server"):
        parse_get_weight("No such server.\n\n")


def test_show_stat_csv_is_parsed_into_rows() -> None:
    """show stat's CSV header names the fields of each row."""
    rows = parse_show_stat(SHOW_STAT)
    assert [row["svname"] for row in rows] == ["FRONTEND", "v1-1", "v2-1", "v2-2", "BACKEND", "BACKEND"]
    assert rows[1]["addr"] == "127.0.0.1:9001"


def test_show_info_is_parsed() -> None:
    """show info's 'Key: value' lines become a dict (DroppedLogs is read from it later)."""
    info = parse_show_info("Name: HAProxy\nVersion: 2.6.12\nDroppedLogs: 3\n\n")
    assert info["DroppedLogs"] == "3"


@pytest.mark.parametrize(
    ("text", "status"),
    [
        ("UP", ServerStatus.UP),
        ("UP 1/2", ServerStatus.UP),
        ("DOWN 1/2", ServerStatus.DOWN),
        ("MAINT (via web/x)", ServerStatus.MAINT),
        ("DRAIN", ServerStatus.DRAIN),
        ("no check", ServerStatus.UP),
        ("weird", ServerStatus.UNKNOWN),
    ],
)
def test_status_words(text: str, status: ServerStatus) -> None:
    """HAProxy's status column, transitional states included, maps onto ServerStatus."""
    assert status_of(text) == status


async def test_server_states_skip_summary_rows(fake_admin_socket: FakeAdminSocket) -> None:
    """server_states returns the servers of one backend, not its FRONTEND/BACKEND rows, with user weights."""
    fake_admin_socket.answers["show stat"] = SHOW_STAT
    states = await router_for(fake_admin_socket).server_states("web")
    assert states[:2] == [
        ServerState("web", "v1-1", ServerStatus.UP, 100, 30, 1, "127.0.0.1:9001"),
        ServerState("web", "v2-1", ServerStatus.DRAIN, 20, 10, 0, "127.0.0.1:9002"),
    ]
    assert await router_for(fake_admin_socket).get_weights("web") == {"v1-1": 100, "v2-1": 20, "v2-2": 0}


async def test_ensure_backend_needs_a_dynamic_algorithm(fake_admin_socket: FakeAdminSocket) -> None:
    """A backend balanced by a static algorithm is refused, since HAProxy would refuse dynamic servers."""
    fake_admin_socket.answers["show stat"] = SHOW_STAT
    router = router_for(fake_admin_socket)
    await router.ensure_backend("web")
    with pytest.raises(RouterError, match="static-rr"):
        await router.ensure_backend("other")


async def test_add_server_sends_the_documented_sequence(fake_admin_socket: FakeAdminSocket) -> None:
    """add_server adds with explicit health-check settings, then enables health checks and the server."""
    fake_admin_socket.answers = {"add server": "New server registered.\n\n", "enable": "\n"}
    await router_for(fake_admin_socket).add_server("web", "v2-1", "127.0.0.1", 9002, weight=5)
    assert fake_admin_socket.commands == [
        "add server web/v2-1 127.0.0.1:9002 weight 5 check inter 500ms fall 2 rise 1 "
        "observe layer4 error-limit 1 on-error mark-down",
        "enable health web/v2-1",
        "enable server web/v2-1",
    ]


@pytest.mark.parametrize(
    "change",
    [
        lambda router: router.set_weights("web", {"v1-1": 180, "v2-1": 20}),
        lambda router: router.set_shares(
            "web", {"stable": Share(90, ("v1-1",)), "canary": Share(10, ("v2-1",))}
        ),
    ],
    ids=["weights", "shares of 90% and 10%"],
)
async def test_weights_are_set_then_read_back(
    fake_admin_socket: FakeAdminSocket, change: Callable[[HAProxyRouter], Awaitable[None]]
) -> None:
    """set_weights, and set_shares through the weights it computes, set every weight then read each back."""
    fake_admin_socket.answers = {"set weight": "\n", "get weight web/v1-1": "180 (initial 1)\n\n"}
    fake_admin_socket.answers["get weight web/v2-1"] = "20 (initial 1)\n\n"
    await change(router_for(fake_admin_socket))
    assert fake_admin_socket.commands == [
        "set weight web/v1-1 180",
        "set weight web/v2-1 20",
        "get weight web/v1-1",
        "get weight web/v2-1",
    ]


async def test_weight_read_back_different_raises(fake_admin_socket: FakeAdminSocket) -> None:
    """A weight read back unlike the one set raises WeightMismatchError naming both."""
    fake_admin_socket.answers = {"set weight": "\n", "get weight": "10 (initial 10)\n\n"}
    with pytest.raises(WeightMismatchError, match=r"set \{'v2-1': 50\}, read back \{'v2-1': 10\}"):
        await router_for(fake_admin_socket).set_weights("web", {"v2-1": 50})


async def test_shares_read_back_different_raise(fake_admin_socket: FakeAdminSocket) -> None:
    """Weights read back that give other shares than asked raise WeightMismatchError naming both."""
    fake_admin_socket.answers = {"set weight": "\n", "get weight": "10 (initial 10)\n\n"}
    with pytest.raises(
        WeightMismatchError, match=r"asked \{'stable': 90, 'canary': 10\}, read back \{'stable': 50"
    ):
        await router_for(fake_admin_socket).set_shares("web", NINETY_TEN)


@pytest.mark.parametrize(
    "answer",
    [
        "No such server.\n\n",
        "Unknown command, but maybe one of the following ones is a better match:\n  help\n\n",
        "Permission denied\n\n",
        "Absolute weight can only be between 0 and 256 inclusive.\n\n",
    ],
)
async def test_any_answer_to_a_silent_command_is_an_error(
    fake_admin_socket: FakeAdminSocket, answer: str
) -> None:
    """Commands that answer nothing on success raise RouterError with the command and any answer."""
    fake_admin_socket.answers["set server"] = answer
    with pytest.raises(RouterError, match=r"'set server web/v1-1 state drain': " + answer.split()[0]):
        await router_for(fake_admin_socket).drain("web", "v1-1")


@pytest.mark.parametrize("name", ["v1 1", "v1\nshow info", "v1;del", "", "../x", "a/b", "-x"])
async def test_unsafe_names_are_never_sent(fake_admin_socket: FakeAdminSocket, name: str) -> None:
    """A server or backend name outside the strict pattern raises RouterError before any I/O."""
    router = router_for(fake_admin_socket)
    with pytest.raises(RouterError, match="invalid"):
        await router.set_weight("web", name, 1)
    with pytest.raises(RouterError, match="invalid"):
        await router.set_weight(name, "v1-1", 1)
    assert fake_admin_socket.commands == []


@pytest.mark.parametrize("weight", [-1, 257, 1.5, True])
async def test_weights_outside_0_to_256_are_refused(
    fake_admin_socket: FakeAdminSocket, weight: object
) -> None:
    """Weights must be integers within 0..256, HAProxy's range; anything else is refused before sending."""
    with pytest.raises(RouterError, match=r"0\.\.256"):
        await router_for(fake_admin_socket).set_weight("web", "v1-1", weight)  # type: ignore[arg-type]
    assert fake_admin_socket.commands == []


async def test_remove_server_waits_for_sessions_then_deletes(fake_admin_socket: FakeAdminSocket) -> None:
    """remove_server disables the server, waits until it has no session, then deletes it."""
    idle_stat = SHOW_STAT.replace("web,v1-1,0,1,30", "web,v1-1,0,0,30")
    fake_admin_socket.answers = {
        "disable server": "\n",
        "show stat": SHOW_STAT,
        "del server": "Server deleted.\n",
    }
    router = router_for(fake_admin_socket)

    original = fake_admin_socket.answer

    def answer(command: str) -> str:
        if command == "show stat" and fake_admin_socket.commands.count("show stat") >= 3:
            return idle_stat  # the last session ends after a few polls
        return original(command)

    fake_admin_socket.answer = answer  # type: ignore[method-assign]
    await router.remove_server("web", "v1-1")
    assert fake_admin_socket.commands[0] == "disable server web/v1-1"
    assert fake_admin_socket.commands.count("show stat") == 3
    assert fake_admin_socket.commands[-1] == "del server web/v1-1"


async def test_remove_server_gives_up_after_drain_timeout(fake_admin_socket: FakeAdminSocket) -> None:
    """A server whose sessions never end is not deleted; RouterError after drain_timeout_s."""
    fake_admin_socket.answers = {"disable server": "\n", "show stat": SHOW_STAT}
    with pytest.raises(RouterError, match="timed out waiting for sessions of web/v1-1"):
        await router_for(fake_admin_socket).remove_server("web", "v1-1")
    assert not any(command.startswith("del server") for command in fake_admin_socket.commands)


async def test_unreachable_socket_is_a_router_error(tmp_path: Path) -> None:
    """No HAProxy behind the socket path gives RouterError naming the path."""
    with pytest.raises(RouterError, match="cannot reach the HAProxy admin socket"):
        await HAProxyRouter(tmp_path / "missing.sock").show_info()


async def test_dump_server_state_writes_the_file(fake_admin_socket: FakeAdminSocket, tmp_path: Path) -> None:
    """dump_server_state writes `show servers state` to the state file given to the router."""
    fake_admin_socket.answers["show servers state"] = "1\n# be_id be_name\n3 web 1 v1-1\n\n"
    state_file = tmp_path / "haproxy.state"
    router = HAProxyRouter(fake_admin_socket.path, state_file=state_file)
    assert await router.dump_server_state() == state_file
    assert state_file.read_text() == "1\n# be_id be_name\n3 web 1 v1-1\n"


def test_router_from_url() -> None:
    """'haproxy+unix:///path' selects the admin socket at /path; other forms are refused."""
    assert HAProxyRouter.from_url("haproxy+unix:///run/haproxy/admin.sock").socket_path == Path(
        "/run/haproxy/admin.sock"
    )
    with pytest.raises(RouterError, match="haproxy\\+unix"):
        HAProxyRouter.from_url("haproxy+unix://relative.sock")

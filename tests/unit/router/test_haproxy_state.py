"""Keeping HAProxy's state reloadable: state-file dumps after each change, current_servers, and the
/proc checks HAProxyProcess uses to adopt, reload and stop a master that is not its child."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from fridaymorning.errors import RouterError
from fridaymorning.router import HAProxyProcess, HAProxyRouter, ServerSpec
from fridaymorning.router.haproxy import parse_servers_state, write_atomically
from fridaymorning.router.process import failed_reloads, runs_haproxy_master

if TYPE_CHECKING:  # the fixture's class, for annotations only: test directories are not packages
    from tests.unit.router.conftest import FakeAdminSocket

SERVERS_STATE = (
    "1\n"
    "# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight srv_iweight "
    "srv_time_since_last_change srv_check_status srv_check_result srv_check_health srv_check_state "
    "srv_agent_state bk_f_forced_id srv_f_forced_id srv_fqdn srv_port srvrecord srv_use_ssl "
    "srv_check_port srv_check_addr srv_agent_addr srv_agent_port\n"
    "3 web 1 v1-1 127.0.0.1 2 0 180 100 15 6 3 2 6 0 0 0 - 9001 - 0 0 - - 0\n"
    "3 web 2 v2-1 127.0.0.1 2 8 20 20 1 6 3 2 6 0 0 0 - 9002 - 0 0 - - 0\n"
    "4 web__ab 1 v2-2 ::1 2 0 7 7 1 6 3 2 6 0 0 0 app.internal 9003 - 0 0 - - 0\n"
    "\n"
)


def router_for(fake: FakeAdminSocket, state_file: Path | None = None, **options: Any) -> HAProxyRouter:
    return HAProxyRouter(fake.path, check_interval_ms=500, timeout_s=2.0, state_file=state_file, **options)


def test_servers_state_is_parsed_into_server_specs() -> None:
    """`show servers state` gives each server's backend, name, address (its FQDN when it has one),
    port and current (user) weight, not its initial one."""
    assert parse_servers_state(SERVERS_STATE) == [
        ServerSpec("web", "v1-1", "127.0.0.1", 9001, 180),
        ServerSpec("web", "v2-1", "127.0.0.1", 9002, 20),
        ServerSpec("web__ab", "v2-2", "app.internal", 9003, 7),
    ]


@pytest.mark.parametrize("answer", ["Unknown command.\n", "1\n", "1\n# be_id be_name\n3 web\n"])
def test_unexpected_servers_state_is_a_router_error(answer: str) -> None:
    """An error answer, a missing header or a short line raises RouterError instead of losing servers."""
    with pytest.raises(RouterError):
        parse_servers_state(answer)


async def test_current_servers_groups_by_backend(fake_admin_socket: FakeAdminSocket) -> None:
    """current_servers maps each backend to its servers, ready for render_haproxy_config."""
    fake_admin_socket.answers["show servers state"] = SERVERS_STATE
    servers = await router_for(fake_admin_socket).current_servers()
    assert list(servers) == ["web", "web__ab"]
    assert [spec.name for spec in servers["web"]] == ["v1-1", "v2-1"]


@pytest.fixture
def answering(fake_admin_socket: FakeAdminSocket) -> FakeAdminSocket:
    """A fake admin socket that accepts every change and reads back weight 20."""
    fake_admin_socket.answers = {
        "add server": "New server registered.\n\n",
        "enable": "\n",
        "set ": "\n",
        "disable server": "\n",
        "del server": "Server deleted.\n",
        "get weight": "20 (initial 0)\n\n",
        "show stat": "# pxname,svname,scur\nweb,v2-1,0\nweb,BACKEND,0\n",
        "show servers state": SERVERS_STATE,
    }
    return fake_admin_socket


async def test_every_change_dumps_the_server_state(answering: FakeAdminSocket, tmp_path: Path) -> None:
    """add_server, set_weights, drain and remove_server each end with `show servers state` written to
    the state file, so a reload by anyone restores the weights."""
    state_file = tmp_path / "haproxy.state"
    router = router_for(answering, state_file)
    changes = [
        router.add_server("web", "v2-1", "127.0.0.1", 9002),
        router.set_weights("web", {"v2-1": 20}),
        router.drain("web", "v2-1"),
        router.remove_server("web", "v2-1"),
    ]
    for change in changes:
        answering.commands.clear()
        state_file.unlink(missing_ok=True)
        await change
        assert answering.commands[-1] == "show servers state"
        assert state_file.read_text() == SERVERS_STATE.strip() + "\n"
    assert [path.name for path in tmp_path.iterdir() if path.name != "admin.sock"] == ["haproxy.state"]


async def test_on_change_runs_after_the_dump(answering: FakeAdminSocket, tmp_path: Path) -> None:
    """on_change (the runtime re-renders haproxy.cfg there) runs after each change, state file written."""
    state_file = tmp_path / "haproxy.state"
    seen: list[bool] = []

    async def on_change() -> None:
        seen.append(state_file.exists())

    router = router_for(answering, state_file, on_change=on_change)
    await router.set_weights("web", {"v2-1": 20})
    await router.drain("web", "v2-1")
    assert seen == [True, True]


async def test_a_failed_record_is_kept_not_raised(answering: FakeAdminSocket, tmp_path: Path) -> None:
    """When the state file cannot be written or on_change fails, the change (already made in HAProxy)
    still succeeds; the reason is logged and kept in record_error until a later record succeeds."""

    async def broken() -> None:
        raise OSError("disk full")

    router = router_for(answering, tmp_path / "missing-dir" / "haproxy.state", on_change=broken)
    await router.drain("web", "v2-1")
    assert router.record_error is not None
    assert "server-state file" in router.record_error and "disk full" in router.record_error
    router.state_file, router.on_change = tmp_path / "haproxy.state", None
    await router.drain("web", "v2-1")
    assert router.record_error is None


async def test_a_failed_change_still_records_the_state(answering: FakeAdminSocket, tmp_path: Path) -> None:
    """A change HAProxy refuses halfway still dumps the state: part of it may have been applied."""
    answering.answers["set weight web/v2-1"] = "No such server.\n"
    state_file = tmp_path / "haproxy.state"
    with pytest.raises(RouterError, match="No such server"):
        await router_for(answering, state_file).set_weights("web", {"v1-1": 180, "v2-1": 20})
    assert state_file.exists()


async def test_affinity_backends_give_added_servers_their_cookie(answering: FakeAdminSocket) -> None:
    """HAProxy 2.6 refuses `cookie` on `add server`: in an affinity backend the router regenerates the
    dynamic cookies before enabling the new server, so its first response already sets one."""
    router = router_for(answering, affinity_backends=["web"])
    await router.add_server("web", "v2-1", "127.0.0.1", 9002, weight=5)
    await router.add_server("api", "v2-1", "127.0.0.1", 9003, weight=5)
    assert answering.commands == [
        "add server web/v2-1 127.0.0.1:9002 weight 5 check inter 500ms fall 2 rise 1 "
        "observe layer4 error-limit 1 on-error mark-down",
        "enable dynamic-cookie backend web",
        "enable health web/v2-1",
        "enable server web/v2-1",
        "add server api/v2-1 127.0.0.1:9003 weight 5 check inter 500ms fall 2 rise 1 "
        "observe layer4 error-limit 1 on-error mark-down",
        "enable health api/v2-1",
        "enable server api/v2-1",
    ]


def test_write_atomically_replaces_the_file_whole(tmp_path: Path) -> None:
    """write_atomically leaves the new text and no temporary file behind."""
    target = tmp_path / "haproxy.state"
    target.write_text("old")
    write_atomically(target, "new\n")
    assert target.read_text() == "new\n"
    assert list(tmp_path.iterdir()) == [target]


# -- processes seen through /proc (procfs itself: tests/unit/test_procfs.py) -------------------------


def test_only_a_haproxy_master_with_our_config_is_recognised(tmp_path: Path) -> None:
    """runs_haproxy_master refuses a process that is not `haproxy -W -f <config>` (here: pytest)."""
    assert not runs_haproxy_master(os.getpid(), tmp_path / "haproxy.cfg")
    assert not runs_haproxy_master(2**22 + 1, tmp_path / "haproxy.cfg")  # above pid_max: no such process
    assert failed_reloads(os.getpid()) is None


async def test_adopt_returns_false_and_removes_a_stale_pidfile(tmp_path: Path) -> None:
    """A pidfile naming a process that is not our HAProxy is stale: adopt() removes it and says False."""
    pidfile = tmp_path / "haproxy.pid"
    pidfile.write_text(f"{os.getpid()}\n")
    config_path = tmp_path / "haproxy.cfg"
    config_path.write_text(f"global\n    stats socket {tmp_path}/admin.sock\n    pidfile {pidfile}\n")
    process = HAProxyProcess(config_path)
    assert await process.adopt() is False
    assert not pidfile.exists() and not process.running and process.pid is None


async def test_reload_without_haproxy_is_a_router_error(tmp_path: Path) -> None:
    """reload() before start() or adopt() says there is nothing to reload."""
    with pytest.raises(RouterError, match="not running"):
        await HAProxyProcess(tmp_path / "haproxy.cfg").reload()

"""FleetRouter on three in-memory HAProxy admin sockets: every change everywhere, lag, restore."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from fridaymorning.errors import InstanceLagError, RouterError
from fridaymorning.router import FleetRouter, HAProxyRouter, Member, Share
from fridaymorning.router.fleet import Desired, differences
from fridaymorning.router.haproxy import admin_address, admin_tcp_address
from fridaymorning.testing import FakeHAProxyAdmin

NAMES = ("lb1", "lb2", "lb3")


@pytest.fixture
def admins(tmp_path: Path) -> Iterator[dict[str, FakeHAProxyAdmin]]:
    fakes = {name: FakeHAProxyAdmin(tmp_path / f"{name}.sock") for name in NAMES}
    yield fakes
    for fake in fakes.values():
        fake.close()


def fleet_of(tmp_path: Path, state: str = "fleet.json") -> FleetRouter:
    members = [
        Member(name, HAProxyRouter(tmp_path / f"{name}.sock", timeout_s=2.0, drain_timeout_s=2.0))
        for name in NAMES
    ]
    return FleetRouter(
        members, state_path=tmp_path / state, attempts=2, retry_pause_s=0.01, servers_up_timeout_s=1
    )


def weights(admin: FakeHAProxyAdmin, backend: str = "web") -> dict[str, int]:
    return {name: server.weight for name, server in admin.backends[backend].items()}


SHARES_20 = {"stable": Share(80, ("v1-1",)), "canary": Share(20, ("v2-1",))}


async def started(tmp_path: Path) -> FleetRouter:
    fleet = fleet_of(tmp_path)
    await fleet.ensure_backend("web")
    await fleet.add_server("web", "v1-1", "127.0.0.1", 9001)
    await fleet.add_server("web", "v2-1", "127.0.0.1", 9002)
    return fleet


async def test_shares_are_set_and_read_back_on_every_instance(
    tmp_path: Path, admins: dict[str, FakeHAProxyAdmin]
) -> None:
    """One set_shares gives every instance the same weights; each acknowledged the percents."""
    fleet = await started(tmp_path)
    await fleet.set_shares("web", SHARES_20)
    assert {name: weights(admin) for name, admin in admins.items()} == {
        name: {"v1-1": 160, "v2-1": 40} for name in NAMES
    }
    assert all(member["told"]["web"] == {"stable": 80, "canary": 20} for member in fleet.status())


async def test_a_dead_instance_lags_is_named_and_is_restored_when_it_returns(
    tmp_path: Path, admins: dict[str, FakeHAProxyAdmin]
) -> None:
    """set_shares raises naming the dead instance while the others take the change; a new HAProxy on
    the same socket, empty, gets our servers and the weights back."""
    fleet = await started(tmp_path)
    admins["lb2"].close()
    with pytest.raises(InstanceLagError) as raised:
        await fleet.set_shares("web", SHARES_20)
    assert raised.value.instances == ("lb2",)
    assert weights(admins["lb1"]) == weights(admins["lb3"]) == {"v1-1": 160, "v2-1": 40}
    assert [m["state"] for m in fleet.status()] == ["in_sync", "lagging", "in_sync"]
    with pytest.raises(InstanceLagError):
        await fleet.check_every_instance()
    admins["lb2"] = FakeHAProxyAdmin(tmp_path / "lb2.sock")
    await fleet.reconcile_once()
    assert weights(admins["lb2"]) == {"v1-1": 160, "v2-1": 40}
    assert all(server.admin == "ready" for server in admins["lb2"].backends["web"].values())
    await fleet.check_every_instance()
    assert [m["state"] for m in fleet.status()] == ["in_sync"] * 3


async def test_removal_never_waits_for_a_dead_instance(
    tmp_path: Path, admins: dict[str, FakeHAProxyAdmin]
) -> None:
    """Weight 0, drain and removal go through on the live instances; the dead one is fixed later."""
    fleet = await started(tmp_path)
    await fleet.set_shares("web", SHARES_20)
    admins["lb3"].close()
    zero = {"stable": Share(100, ("v1-1",)), "canary": Share(0, ("v2-1",))}
    with pytest.raises(InstanceLagError):
        await fleet.set_shares("web", zero)
    await fleet.drain("web", "v2-1")
    await fleet.remove_server("web", "v2-1")
    assert set(admins["lb1"].backends["web"]) == set(admins["lb2"].backends["web"]) == {"v1-1"}
    admins["lb3"] = FakeHAProxyAdmin(tmp_path / "lb3.sock")  # it comes back with a stale file
    admins["lb3"].add_static_server("web", "v1-1", "127.0.0.1", 9001, weight=160)
    admins["lb3"].add_static_server("web", "v2-1", "127.0.0.1", 9002, weight=40)
    await fleet.reconcile_once()
    assert weights(admins["lb3"]) == {"v1-1": 200}


async def test_an_instance_reloaded_without_our_servers_is_restored(
    tmp_path: Path, admins: dict[str, FakeHAProxyAdmin]
) -> None:
    """An in-sync instance found lacking our servers (a reload with a stale file) gets them back."""
    fleet = await started(tmp_path)
    await fleet.set_shares("web", SHARES_20)
    admins["lb1"].backends["web"].clear()
    await fleet.reconcile_once()
    assert weights(admins["lb1"]) == {"v1-1": 160, "v2-1": 40}


async def test_the_desired_state_survives_a_restart(
    tmp_path: Path, admins: dict[str, FakeHAProxyAdmin]
) -> None:
    """A new FleetRouter reads what the last one was told, and restores an instance from it."""
    fleet = await started(tmp_path)
    await fleet.set_shares("web", SHARES_20)
    saved = json.loads((tmp_path / "fleet.json").read_text())
    assert saved["desired"]["shares"]["web"]["canary"] == [20, ["v2-1"]]
    again = fleet_of(tmp_path)
    assert again.desired.shares["web"] == SHARES_20
    assert again.status()[0]["told"]["web"] == {"stable": 80, "canary": 20}
    admins["lb2"].backends["web"].clear()
    await again.reconcile_once()
    assert weights(admins["lb2"]) == {"v1-1": 160, "v2-1": 40}


async def test_no_instance_answering_is_an_error(tmp_path: Path) -> None:
    """ensure_backend refuses a fleet of which no instance answers."""
    with pytest.raises(RouterError, match="no HAProxy instance"):
        await fleet_of(tmp_path).ensure_backend("web")


def test_differences_name_missing_foreign_and_misweighted_servers() -> None:
    """What an instance lacks, holds too many of, or weighs wrongly, in words."""
    from fridaymorning.router.base import ServerSpec

    desired = Desired(servers={"web": {"v1-1": ("a", 1), "v2-1": ("a", 2)}}, shares={"web": SHARES_20})
    actual = {"web": [ServerSpec("web", "v1-1", "a", 1, 100), ServerSpec("web", "x", "a", 3, 1)]}
    assert differences(desired, actual, {"web"}) == [
        "web: servers missing: v2-1",
        "web: servers not ours: x",
        "web/v1-1: weight 100, should be 160",
    ]


def test_admin_addresses() -> None:
    """unix:///path and ipv4@A.B.C.D:PORT are accepted; anything else is refused."""
    assert admin_address("unix:///run/haproxy/admin.sock") == "/run/haproxy/admin.sock"
    assert admin_address("ipv4@10.0.0.2:9999") == "ipv4@10.0.0.2:9999"
    assert admin_tcp_address("ipv4@10.0.0.2:9999") == ("10.0.0.2", 9999)
    for bad in ("unix://relative", "ipv4@host:1", "ipv4@10.0.0.2:99999", "tcp://1.2.3.4:5"):
        with pytest.raises(RouterError):
            admin_address(bad)

"""The traffic actuator on a FakeRouter; the controller reaches the router only through it."""

from __future__ import annotations

import ast
from pathlib import Path

from fridaymorning.config import ServiceConfig
from fridaymorning.controller import loop
from fridaymorning.controller.actuator import Roster, TrafficActuator
from fridaymorning.models import Instance
from fridaymorning.testing import ControllerHarness, FakeRouter, harness_service


def instance(version: str, index: int = 1, label: str = "") -> Instance:
    return Instance(version, index, "127.0.0.1", 9000 + index, ref=str(index), label=label)


def ab_service() -> ServiceConfig:
    config = harness_service(10).model_dump()
    config["rollout"] |= {"strategy": "ab", "ab": {"header": "X-Canary", "value": "1"}}
    return ServiceConfig.model_validate(config)


async def actuator_with(service: ServiceConfig, roster: Roster) -> tuple[TrafficActuator, FakeRouter]:
    """An actuator whose router holds `roster`'s servers where the controller puts them."""
    router = FakeRouter()
    traffic = TrafficActuator(service, router)
    await traffic.ensure_backends()
    await traffic.reconcile(Roster(roster.stable, roster.baseline, ()))
    await traffic.add_rollout_servers(roster.canary, ())
    return traffic, router


def test_the_controller_makes_no_router_call_of_its_own(tmp_path: Path) -> None:
    """loop.py names no `.router`: the router it is given goes to the actuator, and nowhere else."""
    tree = ast.parse(Path(loop.__file__).read_text())
    attributes = {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)}
    assert "router" not in attributes
    harness = ControllerHarness(harness_service(10), tmp_path / "state.db")
    assert not hasattr(harness.controller, "router")
    assert harness.controller.traffic.router is harness.router


async def test_a_fresh_baseline_gets_as_much_as_the_canary() -> None:
    """At 20%, stable keeps 60% and the fresh baseline and the canary get 20% each, in the one backend."""
    roster = Roster([instance("v1")], [instance("v1", label="v1__baseline")], [instance("v2")])
    traffic, router = await actuator_with(harness_service(20), roster)
    await traffic.set_canary_percent(20, roster)
    assert router.share_history[-1] == ("web", {"stable": 60, "baseline": 20, "canary": 20})


async def test_an_ab_canary_gets_all_matched_requests_or_none() -> None:
    """A/B: the A/B backend sends every matched request to the canary; the main backend stays stable."""
    roster = Roster([instance("v1")], [], [instance("v2")])
    traffic, router = await actuator_with(ab_service(), roster)
    assert set(router.servers["web__ab"]) == {"v2-1"}
    await traffic.set_canary_percent(10, roster)
    await traffic.set_canary_percent(0, roster)
    assert router.share_history == [
        ("web__ab", {"canary": 100}),
        ("web", {"stable": 100, "baseline": 0, "canary": 0}),
        ("web__ab", {"canary": 0}),
        ("web", {"stable": 100, "baseline": 0, "canary": 0}),
    ]


async def test_ab_promotion_moves_the_canary_into_the_main_backend() -> None:
    """Promotion adds the canary to the main backend at 100%, then takes it out of the A/B backend."""
    roster = Roster([instance("v1")], [], [instance("v2")])
    traffic, router = await actuator_with(ab_service(), roster)
    await traffic.move_canary_to_main_backend(roster)
    assert router.share_history[-1] == ("web", {"stable": 0, "baseline": 0, "canary": 100})
    assert set(router.servers["web"]) == {"v1-1", "v2-1"} and router.servers["web__ab"] == {}


async def test_servers_haproxy_does_not_hold_are_left_out_on_request() -> None:
    """A canary started but never added is left out of the shares instead of failing "no such server"."""
    never_added = instance("v2", 2)
    roster = Roster([instance("v1")], [], [instance("v2"), never_added])
    traffic, router = await actuator_with(harness_service(10), roster)
    router.servers["web"].pop(never_added.server)
    await traffic.set_canary_percent(0, roster, only_servers_in_haproxy=True)
    assert router.share_history[-1] == ("web", {"stable": 100, "baseline": 0, "canary": 0})
    assert set(router.servers["web"]) == {"v1-1", "v2-1"}


async def test_reconcile_adds_the_missing_and_removes_the_stale() -> None:
    """Servers HAProxy lacks are added; servers no instance has any more are drained and removed."""
    traffic, router = await actuator_with(harness_service(10), Roster([instance("v0")], [], []))
    await traffic.reconcile(Roster([instance("v1")], [], [instance("v2")]))
    assert set(router.servers["web"]) == {"v1-1", "v2-1"}
    assert router.removed == ["v0-1"]


async def test_take_out_removes_only_the_given_servers_and_reads_back_weights() -> None:
    """take_out deletes the named servers from every backend; the others keep their weights."""
    roster = Roster([instance("v1")], [], [instance("v2")])
    traffic, router = await actuator_with(harness_service(10), roster)
    await traffic.set_canary_percent(100, roster)
    await traffic.take_out(roster.stable)
    assert router.removed == ["v1-1"]
    weights = await traffic.weights()
    assert list(weights) == ["v2-1"] and weights["v2-1"] > 0
    assert await traffic.servers_down(roster.canary) == []
    router.down.add("v2-1")
    assert await traffic.servers_down(roster.canary) == ["v2-1"]

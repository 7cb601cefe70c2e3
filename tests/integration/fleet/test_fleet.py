"""A fleet of three real HAProxy processes, each in its own network namespace with its own address,
moved together by one `fm up`: rollouts, a killed instance, an instance reloaded with a stale file."""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from fridaymorning.cli import collector_line
from fridaymorning.client import ApiClient
from fridaymorning.config import Config, load_config
from fridaymorning.controller.phases import RolloutPhase
from fridaymorning.fleetlab import app_command, instance_config
from fridaymorning.router import HAProxyRouter
from fridaymorning.router.brought import write_include_file
from fridaymorning.testing import (
    EVENT_DEADLINE_S,
    FmUpProcess,
    quick_service,
    quick_settings,
    wait_for,
    wait_for_sync,
)

pytestmark = pytest.mark.fleet

ADMIN_TCP_PORT = 9999  # inside instance 1's own namespace: nothing else listens there
FRONTEND_PORT = 8080  # each instance's frontend, on its own address

STEPS = [
    {"weight": 20, "min_duration_s": 3, "max_duration_s": 300, "min_requests": 50},
    {"weight": 50, "min_duration_s": 3, "max_duration_s": 300, "min_requests": 50},
]


class Fleet:
    """Three namespaces, their HAProxy processes (`-f theirs -f ours`) and the fm config over them."""

    def __init__(
        self, tmp_path: Path, namespaces: list[Any], team_haproxies: Callable[..., Any], port: int
    ) -> None:
        self.directory = tmp_path / "fleet"
        self.directory.mkdir()
        self.namespaces = namespaces
        self.collector = f"{namespaces[0].host_address}:{port}"
        self.admins = [f"ipv4@{namespaces[0].address}:{ADMIN_TCP_PORT}"] + [
            str(self.directory / f"lb{index}.sock") for index in (2, 3)
        ]
        self.ours = self.directory / "fridaymorning.cfg"
        # lb3 loads a copy of our file, which a test makes stale; the others load ours.
        self.lb3_copy = self.directory / "fridaymorning.lb3.cfg"
        self.haproxies = [
            team_haproxies(
                [self.instance_config(index), self.lb3_copy if index == 3 else self.ours],
                self.admins[index - 1],
                self.directory / f"lb{index}.out",
                netns=namespace.name,
            )
            for index, namespace in enumerate(namespaces, start=1)
        ]

    def instance_config(self, index: int, collector: str | None = None) -> Path:
        """lb`index`'s own file, logging to the collector (or to `collector`)."""
        namespace = self.namespaces[index - 1]
        path = self.directory / f"lb{index}.cfg"
        path.write_text(
            instance_config(
                admin=self.admins[index - 1],
                collector=collector or self.collector,
                name=f"lb{index}",
                address=namespace.address,
                port=FRONTEND_PORT,
            )
        )
        return path

    def config(self, tmp_path: Path, api_port: int) -> Config:
        config = Config.model_validate(self.settings(tmp_path, api_port))
        config.base_dir = str(tmp_path)
        return config

    def settings(self, tmp_path: Path, api_port: int) -> dict[str, Any]:
        host = self.namespaces[0].host_address
        instances = [{"name": "lb1", "admin": self.admins[0]}] + [
            {"name": f"lb{index}", "admin": f"unix://{self.admins[index - 1]}"} for index in (2, 3)
        ]
        return quick_settings(
            tmp_path / "state",
            quick_service(
                "web",
                f"{self.namespaces[0].address}:{FRONTEND_PORT}",
                platform={"command": app_command(host), "host": host},
                steps=STEPS,
            ),
            haproxy={"instances": instances, "include_file": str(self.ours)},
            collector={"listen": self.collector, "lateness_s": 0.5, "reconcile_interval_s": 5},
            api=f"127.0.0.1:{api_port}",
        )

    def urls(self) -> dict[str, str]:
        return {
            f"lb{i}": f"http://{ns.address}:{FRONTEND_PORT}/" for i, ns in enumerate(self.namespaces, start=1)
        }

    async def weights(self, index: int) -> dict[str, int]:
        """The weights instance `index` reports for backend web, read over its own admin socket."""
        return await HAProxyRouter(self.admins[index - 1], timeout_s=5.0).get_weights("web")


@pytest.fixture
async def instances(
    tmp_path: Path, namespaces: Any, team_haproxies: Any, free_port: Callable[[], int]
) -> Any:
    """Three HAProxy instances in their own namespaces, loading our file (written as `fm up` would)."""
    made = Fleet(tmp_path, namespaces(3), team_haproxies, free_port())
    made.api_port = free_port()  # type: ignore[attr-defined]
    write_include_file(made.config(tmp_path, made.api_port))  # type: ignore[attr-defined]
    shutil.copy(made.ours, made.lb3_copy)
    for haproxy in made.haproxies:
        await haproxy.start()
    return made


@pytest.fixture
async def fleet(tmp_path: Path, instances: Any, start_runtime: Any) -> Any:
    """The three instances, and `fm up` (in this process) steering them all."""
    instances.runtime = await start_runtime(instances.config(tmp_path, instances.api_port))
    return instances


def accounting(runtime: Any) -> dict[str, Any]:
    """The collector's loss accounting of each instance (name → its counters)."""
    return dict(runtime.status()["collector"].get("instances") or {})


async def reconciled_with_traffic(runtime: Any, names: list[str]) -> dict[str, Any]:
    """Each named instance's accounting, once its last reconciled interval held logged requests."""

    def ready() -> Any:
        instances = accounting(runtime)
        lasts = [(instances.get(name, {}).get("reconciliation") or {}).get("last") or {} for name in names]
        return instances if all(last.get("logged", 0) > 0 for last in lasts) else None

    return dict(await wait_for(ready, f"reconciliations of {names} with logged requests"))


async def reconciled_again(runtime: Any, since: dict[str, Any], names: list[str]) -> dict[str, Any]:
    """The collector's stats, once each named instance was reconciled twice more than in `since`
    (the instances' accounting at some earlier moment)."""
    done = {name: since[name]["reconciliation"]["reconciliations"] for name in names}

    def again() -> Any:
        collector = runtime.status()["collector"]
        instances = collector["instances"]
        counts = {name: instances[name]["reconciliation"]["reconciliations"] for name in names}
        return collector if all(counts[name] > done[name] + 1 for name in names) else None

    return dict(await wait_for(again, f"{names} reconciled again"))


def failed(tally: dict[str, int]) -> int:
    return sum(count for status, count in tally.items() if status != "200")


async def rollout(runtime: Any, version: str) -> Any:
    runtime.controllers["web"].deploy(version)
    return await asyncio.wait_for(runtime.controllers["web"].wait(), 2 * EVENT_DEADLINE_S)


async def test_a_fleet_promotes_and_rolls_back_on_all_three(fleet: Any, background_requests: Any) -> None:
    """v2 is promoted and broken3 rolled back; each time every instance reports the same weights."""
    runtime = fleet.runtime
    async with httpx.AsyncClient(timeout=10) as client, background_requests(client, fleet.urls()) as tallies:
        promoted = await rollout(runtime, "v2")
        assert promoted.phase is RolloutPhase.PROMOTED, promoted.reason
        after_promotion = [await fleet.weights(index) for index in (1, 2, 3)]
        rolled_back = await rollout(runtime, "broken3")
        # The lines of all three instances, logged to the one collector, each reconciled with the
        # counters of the instance its syslog header names.
        instances = await reconciled_with_traffic(runtime, ["lb1", "lb2", "lb3"])
    assert rolled_back.phase is RolloutPhase.ROLLED_BACK, rolled_back.reason
    assert after_promotion == [{"v2-1": 200}] * 3
    assert [await fleet.weights(index) for index in (1, 2, 3)] == [{"v2-1": 200}] * 3
    for name, tally in tallies.items():
        assert tally.get("200", 0) > 0, (name, tally)
    assert all(instance["state"] == "in_sync" for instance in runtime.status()["haproxy"])
    for name, instance in instances.items():
        reconciliation = instance["reconciliation"]
        assert instance["log_host"] == name and instance["requests"] > 0, (name, instance)
        assert reconciliation["last"]["expected_low"] > 0, (name, instance)
        assert reconciliation["missing_lines"] == reconciliation["errors"] == 0, (name, instance)
        assert instance["haproxy_dropped_logs"] == 0, (name, instance)
    assert runtime.status()["collector"]["unattributed_requests"] == 0


async def test_a_loss_on_one_instance_is_attributed_to_it(
    fleet: Any, background_requests: Any, free_port: Callable[[], int]
) -> None:
    """lb2 is reloaded with its log target pointed at a port nobody reads: the lines it logs from then
    on are lost, and the reconciliation finds them missing on lb2 alone, while lb1 and lb3 go on
    being reconciled with nothing missing."""
    runtime = fleet.runtime
    async with httpx.AsyncClient(timeout=10) as client, background_requests(client, fleet.urls()):
        await reconciled_with_traffic(runtime, ["lb1", "lb2", "lb3"])
        nowhere = f"{fleet.namespaces[1].host_address}:{free_port()}"
        fleet.instance_config(2, collector=nowhere)
        await fleet.haproxies[1].reload()

        def lb2_missing() -> Any:
            instances = accounting(runtime)
            return instances if instances["lb2"]["reconciliation"]["missing_lines"] > 0 else None

        at_loss = await wait_for(lb2_missing, "lines missing on lb2", 2 * EVENT_DEADLINE_S)
        collector = await reconciled_again(runtime, at_loss, ["lb1", "lb3"])
    after = collector["instances"]
    missing = {name: after[name]["reconciliation"]["missing_lines"] for name in ("lb1", "lb2", "lb3")}
    assert missing["lb2"] > 0 and missing["lb1"] == missing["lb3"] == 0, after
    assert after["lb2"]["haproxy_dropped_logs"] == 0, after  # sent, then lost: only the counters tell
    assert all(after[name]["reconciliation"]["errors"] == 0 for name in ("lb1", "lb3")), after
    assert collector["reconciliation"]["missing_lines"] == sum(missing.values()), collector
    print(collector_line(collector))  # what `fm status` shows of it (pytest -s)


async def test_a_killed_instance_holds_the_rollout_until_it_returns(
    fleet: Any, background_requests: Any
) -> None:
    """lb2 dies at step 1: the rollout holds naming lb2 and `fm status` shows it lagging; restarted
    (empty of our servers but for its file), it gets servers and weights back and the rollout promotes."""
    runtime = fleet.runtime
    async with httpx.AsyncClient(timeout=5) as client, background_requests(client, fleet.urls()) as tallies:
        state = runtime.controllers["web"].deploy("v2")

        def at_step_one() -> Any:
            current = runtime.states.rollout(state.id)
            return current is not None and current.canary_weight == STEPS[0]["weight"]

        await wait_for(at_step_one, "the rollout at step 1")
        fleet.haproxies[1].kill()

        def held() -> Any:
            current = runtime.states.rollout(state.id)
            return current is not None and "lb2" in current.reason and "lagging" in current.reason

        await wait_for(held, "the rollout held for lb2")
        lagging = [i for i in runtime.status()["haproxy"] if i["state"] == "lagging"]
        assert [instance["name"] for instance in lagging] == ["lb2"]

        def lb2_skipped() -> Any:
            instances = accounting(runtime)
            return instances if instances["lb2"]["reconciliation"]["errors"] > 0 else None

        # lb2's reconciliation is skipped (an error of its own); lb1 and lb3 are still reconciled.
        skipped = await wait_for(lb2_skipped, "lb2's reconciliation skipped")
        meanwhile = (await reconciled_again(runtime, skipped, ["lb1", "lb3"]))["instances"]
        assert runtime.states.rollout(state.id).phase is RolloutPhase.PROGRESSING
        tallies["lb2"].clear()  # requests to the dead instance fail, as they must
        await fleet.haproxies[1].start()
        final = await asyncio.wait_for(runtime.controllers["web"].wait(), 2 * EVENT_DEADLINE_S)
    assert final.phase is RolloutPhase.PROMOTED, final.reason
    assert [await fleet.weights(index) for index in (1, 2, 3)] == [{"v2-1": 200}] * 3
    assert failed(tallies["lb1"]) == failed(tallies["lb3"]) == 0, tallies
    for name in ("lb1", "lb3"):
        reconciliation = meanwhile[name]["reconciliation"]
        assert reconciliation["errors"] == reconciliation["missing_lines"] == 0, meanwhile


async def test_an_instance_reloaded_with_a_stale_file_gets_our_servers_back(fleet: Any) -> None:
    """lb3 reloads with a file that has none of our servers: fridaymorning adds them back, weighed."""
    runtime = fleet.runtime
    expected = await fleet.weights(1)
    assert expected, "lb1 holds the stable servers"
    shutil.copy(fleet.ours, fleet.lb3_copy)
    assert "server v1-1" in fleet.lb3_copy.read_text()
    await fleet.haproxies[2].reload()
    assert await fleet.weights(3) == expected  # a reload with a current file keeps them
    fleet.lb3_copy.write_text(fleet.ours.read_text().split("\n    server ")[0] + "\n")  # stale: no servers
    await fleet.haproxies[2].reload()

    async def restored() -> bool:
        return bool(await fleet.weights(3) == expected)

    await wait_for(restored, "lb3's servers restored")
    assert all(instance["state"] == "in_sync" for instance in runtime.status()["haproxy"])


async def test_a_restarted_fm_up_reconciles_every_instance(
    tmp_path: Path, instances: Any, background_requests: Any
) -> None:
    """`fm up` is killed (kill -9) at step 1; lb3 then reloads with a stale file and loses our servers.
    The next `fm up` reads what the fleet was told, restores lb3, resumes, and promotes."""
    config_path = tmp_path / "fridaymorning.yaml"
    config_path.write_text(json.dumps(instances.settings(tmp_path, instances.api_port)))
    api = ApiClient(load_config(config_path))
    first = await asyncio.to_thread(FmUpProcess, config_path)
    instances.second = None
    try:
        async with httpx.AsyncClient(timeout=10) as client, background_requests(client, instances.urls()):
            await restart_during_rollout(instances, config_path, api, first)
    finally:
        for process in (first, instances.second):
            if process is not None and process.process.poll() is None:
                await asyncio.to_thread(process.stop)


async def restart_during_rollout(instances: Any, config_path: Path, api: ApiClient, first: Any) -> None:
    """Deploy v2; kill `fm up` at step 1; make lb3 lose our servers; start `fm up` again; promoted."""
    rollout = await asyncio.to_thread(api.post, "/services/web/deploy", {"version": "v2"})

    def at_step_one() -> bool:
        return bool(api.get(f"/rollouts/{rollout['id']}")["canary_weight"] == STEPS[0]["weight"])

    await asyncio.to_thread(wait_for_sync, at_step_one, "the rollout at step 1")
    first.kill()
    told = json.loads((config_path.parent / "state" / "fleet.json").read_text())
    assert told["desired"]["shares"]["web"]["canary"][0] == STEPS[0]["weight"]
    instances.lb3_copy.write_text(instances.ours.read_text().split("\n    server ")[0] + "\n")
    await instances.haproxies[2].reload()
    assert await instances.weights(3) == {}
    instances.second = await asyncio.to_thread(FmUpProcess, config_path)
    fresh = ApiClient(load_config(config_path))  # no connection kept from the killed `fm up`

    def finished() -> Any:
        current = fresh.get(f"/rollouts/{rollout['id']}")
        return current if current["phase"] in ("promoted", "rolled_back", "aborted") else None

    final = await asyncio.to_thread(
        wait_for_sync, finished, "the resumed rollout's end", 2 * EVENT_DEADLINE_S
    )
    assert final["phase"] == "promoted", final
    assert [await instances.weights(index) for index in (1, 2, 3)] == [{"v2-1": 200}] * 3

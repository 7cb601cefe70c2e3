"""A fleet of one HAProxy that `fm up` runs and one that a team runs, moved as one (loopback only)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from fridaymorning.config import Config
from fridaymorning.controller.phases import RolloutPhase
from fridaymorning.fleetlab import instance_config
from fridaymorning.router import HAProxyRouter
from fridaymorning.router.brought import write_include_file
from fridaymorning.testing import EVENT_DEADLINE_S, quick_service, quick_settings, wait_for

pytestmark = pytest.mark.haproxy

ONE_STEP = {"weight": 50, "min_duration_s": 3, "max_duration_s": 120, "min_requests": 50}


async def test_a_managed_and_a_brought_instance_move_together(
    tmp_path: Path,
    free_port: Callable[[], int],
    team_haproxies: Callable[..., Any],
    start_runtime: Any,
    background_requests: Callable[..., Any],
) -> None:
    """`fm up` starts its own HAProxy beside the team's; v2 is promoted and both report its weights."""
    own_frontend, team_frontend, collector = free_port(), free_port(), free_port()
    admin = tmp_path / "team.sock"
    config = Config.model_validate(
        quick_settings(
            tmp_path / "state",
            quick_service("web", f"127.0.0.1:{own_frontend}", steps=[ONE_STEP]),
            haproxy={"instances": [{"name": "own"}, {"name": "team", "admin": f"unix://{admin}"}]},
            collector={"listen": f"127.0.0.1:{collector}", "lateness_s": 0.5, "reconcile_interval_s": 5},
            api=f"127.0.0.1:{free_port()}",
            base_dir=str(tmp_path),
        )
    )
    ours = write_include_file(config)
    theirs = tmp_path / "team.cfg"
    theirs.write_text(
        instance_config(
            admin=str(admin),
            collector=f"127.0.0.1:{collector}",
            name="team",
            address="127.0.0.1",
            port=team_frontend,
        )
    )
    await team_haproxies([theirs, ours], str(admin), tmp_path / "team.out").start()
    runtime = await start_runtime(config)
    urls = {"own": f"http://127.0.0.1:{own_frontend}/", "team": f"http://127.0.0.1:{team_frontend}/"}
    async with httpx.AsyncClient(timeout=10) as client, background_requests(client, urls) as tallies:
        runtime.controllers["web"].deploy("v2")
        final = await asyncio.wait_for(runtime.controllers["web"].wait(), 2 * EVENT_DEADLINE_S)

        def reconciled() -> Any:
            instances = runtime.status()["collector"].get("instances") or {}
            lasts = [(instances.get(name, {}).get("reconciliation") or {}).get("last") or {} for name in urls]
            return instances if all(last.get("logged", 0) > 0 for last in lasts) else None

        # The managed instance logs without a host name, the team's as "team": each reconciled alone.
        instances = await wait_for(reconciled, "both instances reconciled with logged requests")
    assert final.phase is RolloutPhase.PROMOTED, final.reason
    assert await runtime.managed_router.get_weights("web") == {"v2-1": 200}
    assert await HAProxyRouter(admin).get_weights("web") == {"v2-1": 200}
    assert [instance["managed"] for instance in runtime.status()["haproxy"]] == [True, False]
    for name, tally in tallies.items():
        assert set(tally) == {"200"}, (name, tally)
    assert {name: instance["log_host"] for name, instance in instances.items()} == {"own": "", "team": "team"}
    for name, instance in instances.items():
        assert instance["reconciliation"]["missing_lines"] == instance["reconciliation"]["errors"] == 0, (
            name,
            instance,
        )

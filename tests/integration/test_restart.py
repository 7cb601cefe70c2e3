"""kill -9 of `fm up` mid-rollout: HAProxy and the instances keep serving, and a restarted `fm up`
adopts them and resumes the rollout where it was."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import yaml

from fridaymorning.demo.run import BackgroundTraffic
from fridaymorning.procfs import process_alive
from fridaymorning.testing import EVENT_DEADLINE_S, FmUpProcess, descendants, run_fm, wait_for_sync

if TYPE_CHECKING:
    from tests.integration.conftest import RuntimeConfig, ServiceSettings

pytestmark = pytest.mark.haproxy


# A loaded machine can take seconds to answer one API call; the deadline is the phase's, not the call's.
API_CALL_TIMEOUT_S = 30.0


def wait_for_phase(
    api: str, rollout_id: int, phases: set[str], timeout_s: float = EVENT_DEADLINE_S
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            rollout: dict[str, Any] = httpx.get(
                f"{api}/rollouts/{rollout_id}", timeout=API_CALL_TIMEOUT_S
            ).json()
        except httpx.TransportError:  # a restarted fm up not listening yet, or too busy to answer
            time.sleep(0.2)
            continue
        if rollout["phase"] in phases:
            return rollout
        time.sleep(0.2)
    raise AssertionError(f"rollout {rollout_id} never reached {phases}")


def test_kill_9_keeps_serving_and_the_rollout_resumes(
    tmp_path: Path, runtime_config: RuntimeConfig, service_settings: ServiceSettings, haproxy_binary: str
) -> None:
    """After kill -9 of fm up at step 1, no request fails; the restarted fm up adopts HAProxy and the
    instances, resumes the rollout at the same weight, and an orderly stop leaves no process."""
    steps = [
        {"weight": 30, "min_duration_s": 600, "max_duration_s": 900, "min_requests": 50},
        {"weight": 60, "min_duration_s": 2, "min_requests": 50},
    ]
    config = tmp_path / "fridaymorning.yaml"
    config.write_text(yaml.safe_dump(runtime_config(service_settings(steps=steps)).model_dump(mode="json")))
    first = FmUpProcess(config)
    data_plane = descendants(first.process.pid)
    traffic = BackgroundTraffic(first.frontend, rate=100)
    traffic.start()
    second = None
    try:
        assert run_fm("deploy", "v2", config=config).returncode == 0
        rollout = httpx.get(f"{first.api}/rollouts", timeout=API_CALL_TIMEOUT_S).json()[0]
        wait_for_phase(first.api, rollout["id"], {"progressing"})
        data_plane = descendants(first.process.pid)
        first.kill()
        time.sleep(3)  # HAProxy and the instances serve alone
        assert all(process_alive(pid) for pid in data_plane)
        second = FmUpProcess(config)
        resumed = wait_for_phase(second.api, rollout["id"], {"progressing"})
        assert resumed["canary_weight"] == 30
        assert "resumed" in [event["kind"] for event in resumed["events"]]
        assert run_fm("promote", "--full", config=config).returncode == 0
        final = wait_for_phase(second.api, rollout["id"], {"promoted", "rolled_back", "aborted"})
        assert final["phase"] == "promoted", final["reason"]
    finally:
        tally = traffic.stop()
        if second is not None:
            second.stop()
    assert sum(counts["errors"] + counts["transport_errors"] for counts in tally.values()) == 0, tally
    assert tally["v1"]["requests"] > 0 and tally["v2"]["requests"] > 0
    wait_for_sync(lambda: not [pid for pid in data_plane if process_alive(pid)], "the data plane gone")

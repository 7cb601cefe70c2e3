"""`fm deploy` prints the evidence plan at the traffic stable served over the last minute."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest
import yaml

from fridaymorning.demo.run import BackgroundTraffic
from fridaymorning.testing import FmUpProcess, run_fm

if TYPE_CHECKING:
    from tests.integration.conftest import RuntimeConfig, ServiceSettings

pytestmark = pytest.mark.haproxy


def test_deploy_prints_the_plan_from_observed_traffic(
    tmp_path: Path, runtime_config: RuntimeConfig, service_settings: ServiceSettings, haproxy_binary: str
) -> None:
    """After some traffic to stable, `fm deploy v2` prints each step's plan at the observed rate."""
    steps = [{"weight": 10, "min_duration_s": 60, "max_duration_s": 120, "min_requests": 100}]
    config = tmp_path / "fridaymorning.yaml"
    settings = runtime_config(service_settings("web", steps=steps)).model_dump(mode="json")
    config.write_text(yaml.safe_dump(settings))
    up = FmUpProcess(config)
    traffic = BackgroundTraffic(up.frontend, rate=50)
    try:
        traffic.start()
        deadline = time.monotonic() + 60
        seen = 0
        while time.monotonic() < deadline and seen < 100:
            now = int(time.time())
            answer = httpx.get(
                up.api + "/services/web/metrics", params={"start": now - 60, "end": now, "version": "v1"}
            )
            seen = answer.json()["requests"] if answer.status_code == 200 else 0
            time.sleep(0.5)
        assert seen >= 100, "the collector saw no traffic to stable within 60 s"
        deployed = run_fm("deploy", "v2", config=config, timeout=60)
        assert deployed.returncode == 0, deployed.stdout + deployed.stderr
        assert "web: evidence plan at" in deployed.stdout
        assert "step 1: 10%" in deployed.stdout and "binding:" in deployed.stdout
        assert run_fm("abort", config=config).returncode == 0
    finally:
        traffic.stop()
        up.stop()

"""`fm up`, `fm deploy --wait`, `fm status`, `fm abort` as a user runs them: real processes, real HAProxy."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import yaml

from fridaymorning.demo.run import BackgroundTraffic
from fridaymorning.procfs import process_alive
from fridaymorning.testing import EVENT_DEADLINE_S, FM, FmUpProcess, descendants, run_fm, wait_for_sync

if TYPE_CHECKING:
    from tests.integration.conftest import RuntimeConfig, ServiceSettings

pytestmark = pytest.mark.haproxy

# `write_config(steps)`: the path of a config for one quick service with these steps.
WriteConfig = Callable[[list[dict[str, Any]]], Path]


@pytest.fixture
def write_config(
    tmp_path: Path, runtime_config: RuntimeConfig, service_settings: ServiceSettings
) -> WriteConfig:
    """`write_config(steps)`: a fridaymorning.yaml for one quick service with these steps."""

    def write(steps: list[dict[str, Any]]) -> Path:
        config = runtime_config(service_settings("web", steps=steps)).model_dump(mode="json")
        path = tmp_path / "fridaymorning.yaml"
        path.write_text(yaml.safe_dump(config))
        return path

    return write


def send_requests(url: str, count: int) -> None:
    with httpx.Client(timeout=2) as client:
        for _ in range(count):
            client.get(url)


def test_up_deploy_wait_promotes_and_sigterm_leaves_nothing(
    tmp_path: Path, write_config: WriteConfig, haproxy_binary: str
) -> None:
    """`fm deploy v2 --wait` exits 0 once promoted; `fm status --json` shows v2 stable; SIGTERM on
    `fm up` stops HAProxy and every instance."""
    config = write_config([{"weight": 50, "min_duration_s": 2, "min_requests": 30}])
    up = FmUpProcess(config)
    try:
        children = descendants(up.process.pid)
        assert len(children) >= 2  # haproxy master + worker, and the v1 instance
        traffic = BackgroundTraffic(up.frontend, rate=150)
        traffic.start()
        try:
            deployed = run_fm("deploy", "v2", "--wait", "--json", config=config, timeout=2 * EVENT_DEADLINE_S)
        finally:
            traffic.stop()
        assert deployed.returncode == 0, deployed.stdout + deployed.stderr
        assert json.loads(deployed.stdout.strip().splitlines()[-1])["phase"] == "promoted"
        status = run_fm("status", "--json", config=config)
        assert json.loads(status.stdout)["services"][0]["stable"] == "v2"
    finally:
        assert up.stop() == 0
    assert [pid for pid in children if process_alive(pid)] == []


def test_deploy_refusals_and_abort_exit_code(
    tmp_path: Path, write_config: WriteConfig, haproxy_binary: str
) -> None:
    """A second deploy is refused with the reason; `fm abort` ends the first, and its `--wait` exits 4."""
    config = write_config([{"weight": 10, "min_duration_s": 60, "min_requests": 10_000}])
    up = FmUpProcess(config)
    try:
        waiting = subprocess.Popen(
            [*FM, "deploy", "v2", "--wait", "--json", "--config", str(config)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

        def progressing() -> bool:
            rollouts = httpx.get(up.api + "/rollouts").json()
            return bool(rollouts) and rollouts[0]["phase"] == "progressing"

        wait_for_sync(progressing, "the rollout progressing")
        second = run_fm("deploy", "v3", config=config)
        assert second.returncode == 1
        assert "refused" in second.stderr and "still progressing" in second.stderr
        aborted = run_fm("abort", config=config)
        assert aborted.returncode == 0, aborted.stderr
        assert waiting.wait(timeout=EVENT_DEADLINE_S) == 4
        promote_after = run_fm("promote", config=config)
        assert promote_after.returncode == 1 and "no rollout" in promote_after.stderr
    finally:
        up.stop()


def test_state_changes_need_the_token(tmp_path: Path, write_config: WriteConfig, haproxy_binary: str) -> None:
    """Without the bearer token a deploy is refused with 401; with a bad version it is a 4xx with a reason."""
    config = write_config([{"weight": 10}])
    up = FmUpProcess(config)
    try:
        anonymous = httpx.post(up.api + "/services/web/deploy", json={"version": "v2"})
        assert anonymous.status_code == 401
        token = (tmp_path / "state" / "api-token").read_text().strip()
        assert oct((tmp_path / "state" / "api-token").stat().st_mode & 0o777) == "0o600"
        headers = {"Authorization": f"Bearer {token}"}
        bad = httpx.post(up.api + "/services/web/deploy", json={"version": "v2;reboot"}, headers=headers)
        assert bad.status_code == 409 and "must start with" in bad.json()["detail"]
        unknown = httpx.post(up.api + "/services/nope/deploy", json={"version": "v2"}, headers=headers)
        assert unknown.status_code == 404
        malformed = httpx.post(up.api + "/services/web/deploy", content=b"{", headers=headers)
        assert malformed.status_code == 422
    finally:
        up.stop()


def test_port_in_use_is_a_clear_error(tmp_path: Path, write_config: WriteConfig, haproxy_binary: str) -> None:
    """`fm up` whose frontend port is taken exits 1 and says which port and what wanted it."""
    import socket

    config = write_config([{"weight": 10}])
    frontend = yaml.safe_load(config.read_text())["services"][0]["frontend"]
    host, port = frontend.rsplit(":", 1)
    with socket.socket() as taken:
        taken.bind((host, int(port)))
        taken.listen()
        result = subprocess.run(
            [*FM, "up", "--config", str(config)], capture_output=True, text=True, timeout=30
        )
    assert result.returncode == 1
    assert f"{host}:{port}" in result.stderr and "already in use" in result.stderr


def test_missing_haproxy_gives_install_advice(tmp_path: Path, write_config: WriteConfig) -> None:
    """A config naming a haproxy binary that does not exist makes `fm up` say how to install it."""
    config = write_config([{"weight": 10}])
    text = yaml.safe_load(config.read_text())
    text["haproxy"] = {"binary": "haproxy-not-installed"}
    config.write_text(yaml.safe_dump(text))
    result = subprocess.run(
        [*FM, "up", "--config", str(config)], capture_output=True, text=True, timeout=EVENT_DEADLINE_S
    )
    assert result.returncode == 1
    assert "apt-get install -y haproxy" in result.stderr


def test_validate_exit_codes(tmp_path: Path, write_config: WriteConfig) -> None:
    """`fm validate`: 0 on a good file, 2 with file:line: field on a bad one; `fm init` writes a good one."""
    config = write_config([{"weight": 10}])
    assert subprocess.run([*FM, "validate", str(config)], capture_output=True, check=False).returncode == 0
    bad = tmp_path / "bad.yaml"
    bad.write_text(config.read_text().replace("weight: 10", "weight: 0"))
    result = subprocess.run([*FM, "validate", str(bad)], capture_output=True, text=True, check=False)
    assert result.returncode == 2
    assert f"{bad}:" in result.stderr and "steps[0].weight" in result.stderr
    example = tmp_path / "example.yaml"
    assert subprocess.run([*FM, "init", str(example)], capture_output=True, check=False).returncode == 0
    assert subprocess.run([*FM, "validate", str(example)], capture_output=True, check=False).returncode == 0
    again = subprocess.run([*FM, "init", str(example)], capture_output=True, text=True, check=False)
    assert again.returncode == 2 and "--force" in again.stderr


def test_environment_has_no_stray_children() -> None:
    """Sanity: this test process itself has no leftover children from the tests above."""
    assert descendants(os.getpid()) == []

"""`fm up`'s lifecycle as a user meets it: one `fm up` per state directory, taken ports as fm's own
one-line errors, and an orderly stop that ends a running rollout instead of leaving it to resume."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from fridaymorning.testing import FM, FmUpProcess, run_fm

pytestmark = pytest.mark.haproxy

# Generous for a machine whose cores are busy with other work.
DEADLINE_S = 120.0
LONG_STEP = [{"weight": 20, "min_duration_s": 3600, "max_duration_s": 7200, "min_requests": 10}]


@pytest.fixture
def write_config(
    tmp_path: Path, runtime_config: Callable[..., Any], service_settings: Callable[..., Any]
) -> Callable[..., Path]:
    """`write_config(**changes)`: a fridaymorning.yaml for one service whose step lasts an hour."""

    def write(**changes: Any) -> Path:
        config = runtime_config(service_settings(steps=LONG_STEP)).model_dump(mode="json")
        config.update(changes)
        path = tmp_path / "fridaymorning.yaml"
        path.write_text(yaml.safe_dump(config))
        return path

    return write


def fm_up_until_exit(config: Path) -> subprocess.CompletedProcess[str]:
    """`fm up` that is expected to stop by itself; one still running at the deadline is stopped in
    order (SIGTERM), so it leaves no HAProxy behind, and the test fails."""
    process = subprocess.Popen(
        [*FM, "up", "--config", str(config)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        stdout, stderr = process.communicate(timeout=DEADLINE_S)
    except subprocess.TimeoutExpired:
        process.terminate()
        stdout, stderr = process.communicate(timeout=DEADLINE_S)
        raise AssertionError(f"fm up kept running: {stdout}{stderr}") from None
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def address_of(config: Path, *keys: str | int) -> tuple[str, int]:
    value: Any = yaml.safe_load(config.read_text())
    for key in keys:
        value = value[key]
    host, port = str(value).rsplit(":", 1)
    return host, int(port)


def test_second_up_on_the_same_state_dir_says_already_running(write_config: Callable[..., Path]) -> None:
    """A second `fm up` with the same config exits 1 with "already running (pid N)", N the first's pid,
    and disturbs nothing: the first still answers."""
    config = write_config()
    first = FmUpProcess(config, timeout_s=DEADLINE_S)
    try:
        second = fm_up_until_exit(config)
        assert second.returncode == 1, second.stderr
        assert f"already running (pid {first.process.pid})" in second.stderr
        assert httpx.get(first.api + "/status", timeout=30).status_code == 200
    finally:
        assert first.stop() == 0
    lock = Path(yaml.safe_load(config.read_text())["state_dir"]) / "fm.lock"
    assert lock.read_text().strip() == str(first.process.pid)


@pytest.mark.parametrize(
    ("keys", "what"),
    [
        (("api", "listen"), "the API"),
        (("collector", "listen"), "the collector"),
        (("services", 0, "frontend"), "the HAProxy frontend of web"),
    ],
)
def test_a_taken_port_is_one_line_of_fm_and_exit_1(
    write_config: Callable[..., Path], keys: tuple[str | int, ...], what: str
) -> None:
    """A port another program holds (API, collector, frontend) makes `fm up` exit 1 with one line that
    names it, never a traceback or the web server's raw [Errno 98]."""
    config = write_config()
    host, port = address_of(config, *keys)
    kind = socket.SOCK_DGRAM if keys[0] == "collector" else socket.SOCK_STREAM
    with socket.socket(socket.AF_INET, kind) as taken:
        taken.bind((host, port))
        if kind == socket.SOCK_STREAM:
            taken.listen()
        result = fm_up_until_exit(config)
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert what in lines[0] and f"{host}:{port}" in lines[0] and "already in use" in lines[0]
    assert "Errno" not in result.stderr and "Traceback" not in result.stderr


def test_api_on_a_frontend_address_never_exits_3(write_config: Callable[..., Path]) -> None:
    """The API configured on a frontend's address: `fm up` (or the config check) refuses it with fm's
    own one line, exit 1 or 2; never uvicorn's [Errno 98] and never 3, which means "rolled back"."""
    config = write_config()
    settings = yaml.safe_load(config.read_text())
    settings["api"]["listen"] = settings["services"][0]["frontend"]
    config.write_text(yaml.safe_dump(settings))
    result = fm_up_until_exit(config)
    assert result.returncode in (1, 2), (result.returncode, result.stderr)
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "Errno" not in result.stderr and "Traceback" not in result.stderr


def test_ctrl_c_mid_rollout_aborts_it_and_a_restart_starts_clean(write_config: Callable[..., Path]) -> None:
    """Ctrl-C on `fm up` mid-rollout aborts the rollout "stopped by the operator" in the state store; the
    next `fm up` resumes nothing and marks nothing rolled back."""
    config = write_config()
    first = FmUpProcess(config, timeout_s=DEADLINE_S)
    try:
        assert run_fm("deploy", "v2", config=config, timeout=DEADLINE_S).returncode == 0
        rollout = wait_for_progressing(first.api)
        first.process.send_signal(signal.SIGINT)
        assert first.process.wait(timeout=DEADLINE_S) == 0
    finally:
        if first.process.poll() is None:
            first.kill()
    stored = history(config)[0]
    assert (stored["id"], stored["phase"], stored["reason"]) == (
        rollout["id"],
        "aborted",
        "stopped by the operator",
    )
    second = FmUpProcess(config, timeout_s=DEADLINE_S)
    try:
        assert httpx.get(second.api + "/status", timeout=30).json()["services"][0]["rollout"] is None
        events = httpx.get(f"{second.api}/rollouts/{rollout['id']}", timeout=30).json()["events"]
        kinds = [event["kind"] for event in events]
        assert "resumed" not in kinds and "rolled_back" not in kinds, kinds
        assert history(config)[0]["phase"] == "aborted"
    finally:
        assert second.stop() == 0


def wait_for_progressing(api: str) -> dict[str, Any]:
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        rollouts = httpx.get(api + "/rollouts", timeout=30).json()
        if rollouts and rollouts[0]["phase"] == "progressing":
            return dict(rollouts[0])
        time.sleep(0.2)
    raise AssertionError(f"no rollout progressing within {DEADLINE_S:.0f} s")


def history(config: Path) -> list[dict[str, Any]]:
    """`fm history --json`, which reads the state store without `fm up`."""
    listed = run_fm("history", "--json", config=config, timeout=DEADLINE_S)
    assert listed.returncode == 0, listed.stderr
    return list(json.loads(listed.stdout))

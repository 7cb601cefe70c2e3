"""Following a rollout as a user does: `fm deploy --wait` and `fm watch` as real processes against a
real `fm up`, to the rollout's end or to a Ctrl-C that leaves the rollout running."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from fridaymorning.demo.run import BackgroundTraffic
from fridaymorning.testing import FM, FmUpProcess, run_fm

pytestmark = pytest.mark.haproxy

# Generous for a machine whose cores are busy with other work.
DEADLINE_S = 120.0
INTERRUPTED = "the rollout goes on; `fm abort` stops it"


def wait_until(condition: Callable[[], Any], what: str, timeout_s: float = DEADLINE_S) -> Any:
    """Poll `condition` until it returns something true; that value. Fails naming `what`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"{what}: not within {timeout_s:.0f} s")


def default_config(directory: Path, free_port: Callable[[], int], haproxy_binary: str) -> Path:
    """`fm init`'s config, unchanged but for free loopback ports, a private state_dir, and (while the
    example names `python3`) this environment's interpreter for the demo app."""
    example = directory / "fridaymorning.yaml"
    assert subprocess.run([*FM, "init", str(example)], capture_output=True, check=False).returncode == 0
    config = yaml.safe_load(example.read_text())
    config["state_dir"] = str(directory / "state")
    config["haproxy"]["binary"] = haproxy_binary
    config["collector"]["listen"] = f"127.0.0.1:{free_port()}"
    config["api"]["listen"] = f"127.0.0.1:{free_port()}"
    service = config["services"][0]
    service["frontend"] = f"127.0.0.1:{free_port()}"
    command = service["platform"]["command"]
    if command[0] == "python3":
        command[0] = sys.executable
    example.write_text(yaml.safe_dump(config))
    return example


def popen_fm(*args: str, config: Path, stderr_path: Path) -> subprocess.Popen[str]:
    """`fm ARGS --config CONFIG` in the background, its stderr in a file, Ctrl-C acting as in a terminal
    (a test runner started in the background may have SIGINT ignored, and children inherit that)."""
    return subprocess.Popen(
        [*FM, *args, "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=stderr_path.open("w"),
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def latest_verdict(api: str) -> dict[str, Any] | None:
    """The newest rollout's latest recorded verdict, from the API."""
    rollouts = httpx.get(f"{api}/rollouts", timeout=30).json()
    if not rollouts:
        return None
    events = httpx.get(f"{api}/rollouts/{rollouts[0]['id']}", timeout=30).json()["events"]
    verdicts = [event["verdict"] for event in events if event["verdict"]]
    return verdicts[-1] if verdicts else None


def running_rollout(api: str) -> dict[str, Any] | None:
    rollout: dict[str, Any] | None = httpx.get(f"{api}/status", timeout=30).json()["services"][0]["rollout"]
    return rollout


def test_deploy_wait_with_the_default_config_follows_to_promotion(
    tmp_path: Path, free_port: Callable[[], int], haproxy_binary: str
) -> None:
    """With `fm init`'s config, `fm deploy v2 --wait` shows verdicts whose statistics the judge could
    not compute yet (None in the API) without a crash, and exits 0 once `fm promote --full` promotes."""
    config = default_config(tmp_path, free_port, haproxy_binary)
    up = FmUpProcess(config, timeout_s=DEADLINE_S)
    traffic = BackgroundTraffic(up.frontend, rate=20)
    traffic.start()
    deploy = popen_fm("deploy", "v2", "--wait", config=config, stderr_path=tmp_path / "deploy.err")
    try:
        verdict = wait_until(lambda: latest_verdict(up.api), "a first verdict")
        numbers = [check[key] for check in verdict["checks"] for key in ("statistic", "bound")]
        assert None in numbers, verdict  # the case that crashed the live view
        assert deploy.poll() is None, (tmp_path / "deploy.err").read_text()
        promoted = run_fm("promote", "--full", config=config, timeout=DEADLINE_S)
        assert promoted.returncode == 0, promoted.stderr
        stdout, _ = deploy.communicate(timeout=DEADLINE_S)
    finally:
        traffic.stop()
        if deploy.poll() is None:
            deploy.kill()
        up.stop()
    stderr = (tmp_path / "deploy.err").read_text()
    assert deploy.returncode == 0, stdout + stderr
    assert "Traceback" not in stderr
    assert "promoted" in stdout and "canary n" in stdout


def test_watch_reattaches_and_ctrl_c_leaves_the_rollout_running(
    tmp_path: Path, runtime_config: Callable[..., Any], service_settings: Callable[..., Any]
) -> None:
    """`fm watch` follows the running rollout; Ctrl-C on it or on `fm deploy --wait` exits 130 with
    "the rollout goes on", and the rollout does go on; a later `fm watch` exits 4 on abort and 0 on
    promotion, as `deploy --wait` would."""
    steps = [{"weight": 20, "min_duration_s": 3600, "max_duration_s": 7200, "min_requests": 10}]
    config = tmp_path / "fridaymorning.yaml"
    config.write_text(yaml.safe_dump(runtime_config(service_settings(steps=steps)).model_dump(mode="json")))
    up = FmUpProcess(config, timeout_s=DEADLINE_S)
    try:
        nothing = run_fm("watch", config=config, timeout=DEADLINE_S)
        assert nothing.returncode == 1 and "no rollout" in nothing.stderr

        assert run_fm("deploy", "v2", config=config, timeout=DEADLINE_S).returncode == 0
        rollout = wait_until(lambda: running_rollout(up.api), "the rollout of v2")
        interrupted_exit, stderr = interrupt(
            popen_fm("watch", config=config, stderr_path=tmp_path / "w1"), tmp_path / "w1"
        )
        assert interrupted_exit == 130 and INTERRUPTED in stderr, stderr
        assert (running_rollout(up.api) or {}).get("id") == rollout["id"]  # still running

        rewatch = popen_fm("watch", str(rollout["id"]), config=config, stderr_path=tmp_path / "w2")
        wait_for_following(tmp_path / "w2")
        assert run_fm("abort", config=config, timeout=DEADLINE_S).returncode == 0
        assert rewatch.wait(timeout=DEADLINE_S) == 4, (tmp_path / "w2").read_text()

        deploy = popen_fm("deploy", "v3", "--wait", config=config, stderr_path=tmp_path / "d1")
        interrupted_exit, stderr = interrupt(deploy, tmp_path / "d1")
        assert interrupted_exit == 130 and INTERRUPTED in stderr, stderr
        assert (running_rollout(up.api) or {}).get("version") == "v3"

        watch = popen_fm("watch", config=config, stderr_path=tmp_path / "w3")
        wait_for_following(tmp_path / "w3")
        assert run_fm("promote", "--full", config=config, timeout=DEADLINE_S).returncode == 0
        stdout, _ = watch.communicate(timeout=DEADLINE_S)
        assert watch.returncode == 0, stdout + (tmp_path / "w3").read_text()
    finally:
        up.stop()


def wait_for_following(stderr_path: Path) -> None:
    """Wait until an `fm watch` or `fm deploy --wait` says it follows its rollout."""
    wait_until(lambda: "following rollout" in stderr_path.read_text(), f"{stderr_path.name} following")


def interrupt(process: subprocess.Popen[str], stderr_path: Path) -> tuple[int, str]:
    """Ctrl-C a following `fm` process once it follows; its exit status and its stderr."""
    wait_for_following(stderr_path)
    process.send_signal(signal.SIGINT)
    status = process.wait(timeout=DEADLINE_S)
    return status, stderr_path.read_text()

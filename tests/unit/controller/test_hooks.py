"""Rollout hooks against a real local HTTP receiver and real processes: results, retries, timeouts, load."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fridaymorning.config import HookConfig, LoadTestConfig
from fridaymorning.controller.hooks import (
    HookContext,
    LoadTest,
    all_ok,
    describe_failures,
    load_tests,
    run_hook,
    run_hooks,
)
from fridaymorning.controller.phases import RolloutPhase, RolloutState
from fridaymorning.errors import ConfigError
from fridaymorning.procfs import process_alive
from fridaymorning.testing import WebhookReceiver, wait_for

pytestmark = pytest.mark.timeout(30)

BACKOFF_S = 0.01  # retries are tested for their count, not for their pacing

CONTEXT = HookContext(
    service="web",
    rollout_id=7,
    version="v2",
    baseline="v1",
    phase="progressing",
    step=2,
    canary_weight=25,
    frontend="127.0.0.1:8080",
    reason="step 2 of 4",
)


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    server = WebhookReceiver()
    yield server
    server.close()


def url_hook(url: str, **settings: Any) -> HookConfig:
    return HookConfig.model_validate({"name": "notify-ci", "kind": "rollout", "url": url, **settings})


def command_hook(code: str, *args: str, **settings: Any) -> HookConfig:
    command = [sys.executable, "-c", code, *args]
    return HookConfig.model_validate({"name": "smoke", "kind": "rollout", "command": command, **settings})


def process_gone(pid: int) -> bool:
    """True when `pid` no longer runs. A zombie counts as gone: whoever reaps it is not under test."""
    return not process_alive(pid)


async def eventually_gone(pid: int, within_s: float = 60.0) -> bool:
    deadline = time.monotonic() + within_s
    while not process_gone(pid) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    return process_gone(pid)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_webhook_hook_posts_the_hook_and_its_context_as_json(receiver: WebhookReceiver) -> None:
    """A url hook POSTs {"hook", "kind", **context} once and succeeds on a 2xx answer."""
    result = await run_hook(url_hook(receiver.url), CONTEXT, backoff_s=BACKOFF_S)
    assert (result.ok, result.detail, result.attempts, result.name, result.kind) == (
        True,
        "HTTP 200",
        1,
        "notify-ci",
        "rollout",
    )
    assert receiver.posts == [{"hook": "notify-ci", "kind": "rollout", **CONTEXT.to_dict()}]


async def test_webhook_hook_is_retried_until_it_succeeds(receiver: WebhookReceiver) -> None:
    """Two 500s then a 200, with retries=2: ok on the third attempt, and the detail says so."""
    receiver.failures_left = 2
    result = await run_hook(url_hook(receiver.url, retries=2), CONTEXT, backoff_s=BACKOFF_S)
    assert result.ok
    assert result.attempts == 3
    assert result.detail == "HTTP 200 after 3 attempts"
    assert len(receiver.posts) == 3


async def test_webhook_hook_fails_after_its_retries_with_the_status(receiver: WebhookReceiver) -> None:
    """A webhook that keeps answering 500 is tried 1 + retries times, then fails naming the status."""
    receiver.failures_left = 100
    result = await run_hook(url_hook(receiver.url, retries=2), CONTEXT, backoff_s=BACKOFF_S)
    assert not result.ok
    assert result.detail == "HTTP 500 after 3 attempts"
    assert result.output == "ok"
    assert len(receiver.posts) == 3


async def test_webhook_hook_times_out(receiver: WebhookReceiver) -> None:
    """A webhook slower than timeout_s fails with 'timed out after …', without waiting for the answer."""
    receiver.stall_s = 10
    result = await run_hook(url_hook(receiver.url, timeout_s=0.3, retries=0), CONTEXT)
    assert not result.ok
    assert result.detail == "timed out after 0.3 s"
    assert result.duration_s < 3


async def test_unreachable_webhook_fails_without_raising() -> None:
    """A refused connection is a failed hook with a detail, not an exception."""
    result = await run_hook(url_hook(f"http://127.0.0.1:{free_port()}/"), CONTEXT, backoff_s=BACKOFF_S)
    assert not result.ok
    assert result.detail.startswith("request failed: ")
    assert result.attempts == 3


async def test_command_hook_gets_the_rollout_in_fm_variables(tmp_path: Path) -> None:
    """A command hook exits 0 → ok, and sees every FM_* variable on top of the controller's environment."""
    out = tmp_path / "env.json"
    code = (
        "import json, os, sys\n"
        "names = [n for n in os.environ if n.startswith('FM_')] + ['PATH']\n"
        "json.dump({n: os.environ[n] for n in names}, open(sys.argv[1], 'w'))"
    )
    result = await run_hook(command_hook(code, str(out)), CONTEXT)
    assert (result.ok, result.detail, result.attempts) == (True, "exit status 0", 1)
    seen = json.loads(out.read_text())
    assert seen.pop("PATH") == os.environ["PATH"]
    assert seen == {
        "FM_SERVICE": "web",
        "FM_ROLLOUT_ID": "7",
        "FM_VERSION": "v2",
        "FM_BASELINE": "v1",
        "FM_PHASE": "progressing",
        "FM_STEP": "2",
        "FM_CANARY_WEIGHT": "25",
        "FM_FRONTEND": "127.0.0.1:8080",
        "FM_REASON": "step 2 of 4",
    }


async def test_command_hook_runs_without_a_shell(tmp_path: Path) -> None:
    """Arguments reach the program verbatim: shell syntax in them is never interpreted."""
    out = tmp_path / "argv.json"
    code = "import json, sys; json.dump(sys.argv[1:], open(sys.argv[1], 'w'))"
    result = await run_hook(command_hook(code, str(out), "$HOME; echo hi > /tmp/x"), CONTEXT)
    assert result.ok
    assert json.loads(out.read_text()) == [str(out), "$HOME; echo hi > /tmp/x"]


async def test_failing_command_reports_its_status_and_last_stderr_line() -> None:
    """Exit 2 is a failure whose detail quotes the last stderr line; it is retried like a webhook."""
    code = (
        "import sys; print('checking')\n"
        "sys.stderr.write('warming up\\nsmoke test failed: /health 503\\n')\n"
        "sys.exit(2)"
    )
    result = await run_hook(command_hook(code, retries=1), CONTEXT, backoff_s=BACKOFF_S)
    assert not result.ok
    assert result.detail == "exit status 2: smoke test failed: /health 503 after 2 attempts"
    assert result.output == "checking\nwarming up\nsmoke test failed: /health 503"


async def test_command_output_kept_is_bounded() -> None:
    """A command that prints megabytes leaves only its last few lines in the result."""
    code = "import sys\nfor i in range(200000): print(f'line {i}')\nsys.exit(1)"
    result = await run_hook(command_hook(code, retries=0), CONTEXT)
    assert result.detail == "exit status 1: line 199999"
    assert len(result.output.splitlines()) <= 10
    assert len(result.output) < 5000


async def test_command_timeout_kills_its_whole_process_group(tmp_path: Path) -> None:
    """A command past timeout_s fails as timed out, and it and its children are killed, not left behind."""
    pids = tmp_path / "pids"
    code = (
        "import os, subprocess, sys, time\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        "open(sys.argv[1], 'w').write(f'{os.getpid()} {child.pid}')\n"
        "time.sleep(60)"
    )
    result = await run_hook(command_hook(code, str(pids), timeout_s=1.0, retries=0), CONTEXT)
    assert not result.ok
    assert result.detail == "timed out after 1 s"
    assert result.duration_s < 5
    for pid in map(int, pids.read_text().split()):
        assert await eventually_gone(pid), f"process {pid} survived the timeout"


async def test_cancelled_command_hook_leaves_no_process_behind(tmp_path: Path) -> None:
    """When the controller cancels a running hook (abort, shutdown), the command is killed, not orphaned."""
    pid_file = tmp_path / "pid"
    code = "import os, sys, time; open(sys.argv[1], 'w').write(str(os.getpid())); time.sleep(60)"
    hook = command_hook(code, str(pid_file), timeout_s=60, retries=0)
    running = asyncio.create_task(run_hook(hook, CONTEXT))
    deadline = time.monotonic() + 10
    while not (pid_file.exists() and pid_file.read_text()) and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    assert await eventually_gone(int(pid_file.read_text()))


async def test_missing_program_fails_at_once_with_a_clear_detail() -> None:
    """A program that does not exist is not retried: nothing would change between attempts."""
    hook = HookConfig.model_validate(
        {"name": "smoke", "kind": "rollout", "command": ["fm-no-such-program", "--x"], "retries": 3}
    )
    result = await run_hook(hook, CONTEXT)
    assert (result.ok, result.detail, result.attempts) == (False, "program 'fm-no-such-program' not found", 1)


async def test_relative_program_resolves_against_cwd(tmp_path: Path) -> None:
    """With cwd set (the config's directory), './script' runs from there."""
    script = tmp_path / "smoke.sh"
    script.write_text("#!/bin/sh\nexit 0\n")
    script.chmod(0o755)
    hook = HookConfig.model_validate({"name": "smoke", "kind": "rollout", "command": ["./smoke.sh"]})
    result = await run_hook(hook, CONTEXT, cwd=str(tmp_path))
    assert result.ok, result.detail


async def test_run_hooks_runs_only_the_kind_asked_in_config_order(tmp_path: Path) -> None:
    """run_hooks runs the hooks of one kind one after another in config order; load tests are apart."""
    log = tmp_path / "order"
    code = "import sys; open(sys.argv[1], 'a').write(sys.argv[2] + '\\n')"

    def hook(name: str, kind: str) -> dict[str, Any]:
        return {"name": name, "kind": kind, "command": [sys.executable, "-c", code, str(log), name]}

    hooks = [
        HookConfig.model_validate(data)
        for data in (
            hook("migrate", "pre_rollout"),
            hook("smoke-a", "rollout"),
            {"name": "load", "kind": "rollout", "load_test": {}},
            hook("announce", "post_rollout"),
            hook("smoke-b", "rollout"),
        )
    ]
    results = await run_hooks(hooks, "rollout", CONTEXT)
    assert [result.name for result in results] == ["smoke-a", "smoke-b"]
    assert log.read_text().split() == ["smoke-a", "smoke-b"]
    assert all_ok(results)
    assert await run_hooks(hooks, "rollback", CONTEXT) == []
    assert [load.name for load in load_tests(hooks)] == ["load"]


async def test_failures_are_summarised_for_the_rollout_reason(receiver: WebhookReceiver) -> None:
    """describe_failures names each failed hook and its detail; all_ok is False with any failure."""
    receiver.failures_left = 100
    ok = await run_hook(command_hook("pass"), CONTEXT)
    failed = await run_hook(url_hook(receiver.url, retries=0), CONTEXT)
    assert not all_ok([ok, failed])
    assert describe_failures([ok, failed]) == "hook 'notify-ci': HTTP 500"


async def test_a_load_test_hook_given_to_run_hook_fails_without_raising() -> None:
    """run_hook never raises, even when handed a load_test hook by mistake."""
    hook = HookConfig.model_validate({"name": "load", "kind": "rollout", "load_test": {}})
    result = await run_hook(hook, CONTEXT)
    assert not result.ok
    assert "LoadTest" in result.detail


def test_context_of_a_rollout_counts_steps_from_one() -> None:
    """HookContext.for_rollout turns the persisted 0-based step index into the 1-based step."""
    rollout = RolloutState(7, "web", "v2", "v1", RolloutPhase.PROGRESSING, 1, 25, 0.0, 0.0, reason="r")
    assert HookContext.for_rollout(rollout, "127.0.0.1:8080") == dataclasses.replace(CONTEXT, reason="r")


async def test_load_test_sends_paced_traffic_through_the_frontend(receiver: WebhookReceiver) -> None:
    """A load test sends GETs to the frontend's path until stopped, and returns the tally per version."""
    load = LoadTest(LoadTestConfig(rate_per_s=100, path="/checkout", concurrency=4), name="load")
    load.start(receiver.frontend)
    await wait_for(lambda: len(receiver.get_paths) >= 10, "10 GETs received")
    tally = await asyncio.wait_for(load.stop(), timeout=60)
    assert tally["v2"]["requests"] >= 10
    assert tally["v2"]["requests"] == len(receiver.get_paths)
    assert set(receiver.get_paths) == {"/checkout"}
    assert await load.stop() == {}


async def test_load_test_targets_a_wildcard_frontend_through_loopback(receiver: WebhookReceiver) -> None:
    """A frontend bound to 0.0.0.0 is loaded through 127.0.0.1, which it also listens on."""
    load = LoadTest(LoadTestConfig(rate_per_s=50))
    assert load.url_for(f"0.0.0.0:{receiver.server.server_port}") == receiver.url.replace("/hook", "/")
    assert load.url_for("[::1]:8080") == "http://[::1]:8080/"


@pytest.mark.parametrize("frontend", ["10.0.0.5:80", "example.com:8080"])
async def test_load_test_refuses_a_frontend_off_loopback(frontend: str) -> None:
    """fridaymorning never loads another machine: start raises a ConfigError that says loopback only."""
    load = LoadTest(LoadTestConfig(), name="load")
    with pytest.raises(ConfigError, match="loopback"):
        load.start(frontend)
    assert not load.running

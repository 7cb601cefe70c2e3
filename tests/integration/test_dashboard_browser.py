"""The dashboard in a real browser (Debian's Chromium, driven by Playwright) against a real `fm up`.

Set FM_SCREENSHOTS to a directory (e.g. `docs`) to keep the screenshots of the rollout page and the
overview that the first test takes; the README shows the ones in docs/.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from fridaymorning.config import Config
from fridaymorning.demo.run import BackgroundTraffic
from fridaymorning.models import version_of_server
from fridaymorning.router import HAProxyRouter
from fridaymorning.testing import EVENT_DEADLINE_S, FmUpProcess, run_fm

pytestmark = [pytest.mark.haproxy, pytest.mark.browser]

CHROMIUM = "/usr/bin/chromium"
# DESIGN.md's flags for headless Chromium on this kind of machine; the user data directory is the
# persistent context's own.
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# Milliseconds Playwright waits for a page to show something: generous for a busy machine.
PAGE_DEADLINE_MS = 2 * EVENT_DEADLINE_S * 1000
INSTALL_ADVICE = "install it with: sudo apt-get install -y chromium (make test does, as root)"


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    """A headless Chromium context (Debian's binary; Playwright downloads none). Fails, not skips,
    when Chromium or Playwright is missing."""
    if not Path(CHROMIUM).exists():
        pytest.fail(f"the browser tests need Chromium at {CHROMIUM}: {INSTALL_ADVICE}")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("the browser tests need Playwright: pip install -e '.[dev]'")
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"),
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_FLAGS,
            viewport={"width": 1400, "height": 1000},
        )
        context.set_default_timeout(PAGE_DEADLINE_MS)
        try:
            yield context
        finally:
            context.close()


def write_config(config: Config, directory: Path) -> Path:
    path = directory / "fridaymorning.yaml"
    path.write_text(yaml.safe_dump(config.model_dump(mode="json")))
    return path


def log_in(page: Any, base: str, token: str) -> None:
    page.context.clear_cookies()
    page.goto(f"{base}/login")
    page.fill("#token", token)
    page.click("button[type=submit]")
    page.wait_for_selector("#logout")
    assert page.url == f"{base}/", page.content()


def deploy(up: FmUpProcess, token: str, version: str) -> int:
    answer = httpx.post(
        f"{up.api}/services/web/deploy",
        json={"version": version},
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )
    assert answer.status_code == 202, answer.text
    return int(answer.json()["id"])


def wait_for_phase(up: FmUpProcess, rollout_id: int, phases: set[str]) -> str:
    def phase() -> str:
        return str(httpx.get(f"{up.api}/rollouts/{rollout_id}", timeout=30).json()["phase"])

    deadline = time.monotonic() + 2 * EVENT_DEADLINE_S
    while time.monotonic() < deadline:
        current = phase()
        if current in phases:
            return current
        time.sleep(0.2)
    raise AssertionError(f"rollout {rollout_id} never reached {phases}; it is {phase()}")


def canary_weight(config: Config, version: str) -> int:
    """The canary's weight as HAProxy itself reports it (its servers gone counts as 0)."""
    router = HAProxyRouter(config.runtime_path(config.haproxy.admin_socket))
    # In a thread of its own: Playwright's sync API keeps an event loop running in this one.
    with ThreadPoolExecutor(1) as pool:
        weights = pool.submit(asyncio.run, router.get_weights("web")).result()
    return sum(weight for server, weight in weights.items() if version_of_server(server) == version)


def keep_screenshot(page: Any, tmp_path: Path, name: str) -> None:
    target = tmp_path / name
    page.screenshot(path=str(target), full_page=True)
    if os.environ.get("FM_SCREENSHOTS"):
        shutil.copy(target, Path(os.environ["FM_SCREENSHOTS"]) / name)


def test_watch_a_rollout_as_viewer_then_abort_it_as_admin(
    tmp_path: Path,
    runtime_config: Callable[..., Config],
    service_settings: Callable[..., dict[str, Any]],
    browser: Any,
) -> None:
    """The viewer sees the buttons disabled; the admin sees both versions' charts fill, clicks abort,
    confirms, and sees the rollout end aborted while HAProxy's canary weight is 0."""
    long_step = {"weight": 30, "min_duration_s": 3600, "max_duration_s": 7200, "min_requests": 50}
    config = runtime_config(service_settings(steps=[long_step]))
    up = FmUpProcess(write_config(config, tmp_path))
    traffic = BackgroundTraffic(up.frontend, rate=80)
    traffic.start()
    try:
        state_dir = config.state_path()
        admin = (state_dir / "api-token").read_text().strip()
        viewer = (state_dir / "viewer-token").read_text().strip()
        base = up.api.removesuffix("/api/v1")
        rollout_id = deploy(up, admin, "v2")
        wait_for_phase(up, rollout_id, {"progressing"})
        assert canary_weight(config, "v2") > 0

        page = browser.new_page()
        log_in(page, base, viewer)
        page.goto(f"{base}/rollouts/{rollout_id}")
        page.wait_for_selector('#actions button[data-action="abort"]')
        buttons = page.query_selector_all("#actions button")
        assert len(buttons) == 7
        assert all(button.is_disabled() for button in buttons)

        log_in(page, base, admin)
        page.goto(f"{base}/rollouts/{rollout_id}")
        page.wait_for_selector('#actions button[data-action="abort"]:not([disabled])')
        page.wait_for_function(
            "() => { const c = document.getElementById('charts');"
            " return Number(c.dataset.baselineSeconds) > 2 && Number(c.dataset.canarySeconds) > 2; }"
        )
        page.wait_for_selector("#checks table.checks")
        keep_screenshot(page, tmp_path, "dashboard-rollout.png")

        page.goto(f"{base}/")
        page.wait_for_selector('#overview tr[data-service="web"] .phase')
        page.wait_for_function(
            "() => document.querySelector('#overview tr[data-service=\"web\"]')"
            ".textContent.includes('progressing')"
        )
        keep_screenshot(page, tmp_path, "dashboard-overview.png")

        page.goto(f"{base}/rollouts/{rollout_id}")
        page.once("dialog", lambda dialog: dialog.accept())
        page.click('#actions button[data-action="abort"]:not([disabled])')
        page.wait_for_selector("#action-result.ok")
        page.wait_for_selector('#phase[data-phase="aborted"]')
    finally:
        traffic.stop()
    assert wait_for_phase(up, rollout_id, {"aborted"}) == "aborted"
    assert canary_weight(config, "v2") == 0
    assert up.stop() == 0


def test_history_and_explanation_show_why_a_rollout_was_rolled_back(
    tmp_path: Path,
    runtime_config: Callable[..., Config],
    service_settings: Callable[..., dict[str, Any]],
    browser: Any,
) -> None:
    """A failing canary is rolled back; its explanation page shows the failing check's statistic and
    threshold, as the API recorded them."""
    config = runtime_config(service_settings())
    config_path = write_config(config, tmp_path)
    up = FmUpProcess(config_path)
    traffic = BackgroundTraffic(up.frontend, rate=80)
    traffic.start()
    try:
        admin = (config.state_path() / "api-token").read_text().strip()
        rollout_id = deploy(up, admin, "broken2")
        assert wait_for_phase(up, rollout_id, {"rolled_back", "aborted", "promoted"}) == "rolled_back"
    finally:
        traffic.stop()
    events = httpx.get(f"{up.api}/rollouts/{rollout_id}", timeout=30).json()["events"]
    failing = next(
        check
        for event in reversed(events)
        if event["verdict"] and event["verdict"]["phase"] == "fail"
        for check in event["verdict"]["checks"]
        if check["phase"] == "fail"
    )

    base = up.api.removesuffix("/api/v1")
    printed = run_fm("dashboard", config=config_path)
    assert printed.returncode == 0, printed.stderr
    link = printed.stdout.strip()
    assert link.startswith(f"{base}/login?code="), link
    page = browser.new_page()
    page.goto(link)  # the one-time link logs in
    page.wait_for_selector("#logout")
    assert page.inner_text("#who") == "admin"
    page.goto(link)  # and is used up
    assert page.query_selector('input[name="token"]') is not None
    log_in(page, base, admin)
    page.goto(f"{base}/history")
    row = page.wait_for_selector(f'#history a[href="/rollouts/{rollout_id}"]')
    assert row is not None
    assert "rolled_back" in page.inner_text("#history")
    page.click(f'#history a[href="/rollouts/{rollout_id}/explain"]')
    page.wait_for_selector("#explanation tr.check-fail")
    shown = page.query_selector_all("#explanation tr.check-fail")
    names = [row.query_selector("td").inner_text() for row in shown]
    assert failing["name"] in names
    row = shown[names.index(failing["name"])]
    statistic = row.query_selector("td.statistic").get_attribute("data-value")
    threshold = row.query_selector("td.threshold").get_attribute("data-value")
    assert float(statistic) == pytest.approx(failing["statistic"])
    assert float(threshold) == pytest.approx(failing["threshold"])

    page.click("#replay")
    page.wait_for_selector("#replay-result.ok")
    assert "decisions reproduced" in page.inner_text("#replay-result")
    assert up.stop() == 0

"""The dashboard's login, roles and CSRF check, over the real app and a runtime of fakes.

Without a session the pages and the dashboard's calls are refused; the viewer token gives a read-only
session; an action needs the admin role and the page's CSRF token; a login link works once.
"""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import pytest
from fastapi.testclient import TestClient

from fridaymorning.api.app import create_app
from fridaymorning.api.dashboard import (
    CSRF_HEADER,
    SESSION_COOKIE,
    VIEWER_TOKEN_FILE,
    allowed_actions,
    canary_share,
    install_dashboard,
    reads_need_token,
    role_of_token,
)
from fridaymorning.controller.phases import RolloutPhase

if TYPE_CHECKING:
    from tests.unit.api.conftest import Served

TOKEN = "dashboard-test-admin-token"


def deploy(served: Served, service: str = "web") -> int:
    answer = served.client.post(
        f"/api/v1/services/{service}/deploy", json={"version": "v2"}, headers=served.auth
    )
    assert answer.status_code == 202, answer.text
    return int(answer.json()["id"])


def log_in(client: TestClient, token: str) -> str:
    """Log in with a token; the page's CSRF token."""
    answer = client.post("/login", data={"token": token}, follow_redirects=False)
    assert answer.status_code == 303, answer.text
    page = client.get("/")
    assert page.status_code == 200
    found = re.search(r'name="fm-csrf" content="([^"]+)"', page.text)
    assert found is not None
    return found.group(1)


def viewer_token(served: Served) -> str:
    return str(served.app.state.dashboard.viewer_token)


def test_without_a_session_the_pages_and_calls_are_refused(served: Served) -> None:
    rollout_id = deploy(served)
    for path in ("/", "/history", f"/rollouts/{rollout_id}", f"/rollouts/{rollout_id}/explain"):
        answer = served.client.get(path)
        assert answer.status_code == 401, path
        assert 'name="token"' in answer.text  # the login form
    for path in ("/dashboard/api/overview", "/dashboard/api/history", "/dashboard/api/events"):
        assert served.client.get(path).status_code == 401, path
    answer = served.client.post(f"/dashboard/api/rollouts/{rollout_id}/abort")
    assert answer.status_code == 401
    assert served.runtime.states.rollout(rollout_id).phase is not RolloutPhase.ABORTED  # type: ignore[union-attr]


def test_a_wrong_token_is_refused_and_the_admin_token_sets_a_strict_httponly_cookie(served: Served) -> None:
    assert served.client.post("/login", data={"token": "nope"}).status_code == 401
    answer = served.client.post("/login", data={"token": served.token}, follow_redirects=False)
    assert answer.status_code == 303
    cookie = answer.headers["set-cookie"]
    assert cookie.startswith(f"{SESSION_COOKIE}=")
    assert served.token not in cookie  # the browser keeps a session id, never the token
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie
    assert served.client.get("/").status_code == 200


def test_an_action_needs_the_csrf_token(served: Served) -> None:
    rollout_id = deploy(served)
    csrf = log_in(served.client, served.token)
    url = f"/dashboard/api/rollouts/{rollout_id}/pause"
    assert served.client.post(url).status_code == 403
    assert served.client.post(url, headers={CSRF_HEADER: "forged"}).status_code == 403
    served.wait_until(lambda: served.runtime.states.rollout(rollout_id).phase is RolloutPhase.PROGRESSING)  # type: ignore[union-attr]
    answer = served.client.post(url, headers={CSRF_HEADER: csrf})
    assert answer.status_code == 200, answer.text
    served.wait_until(lambda: served.runtime.states.rollout(rollout_id).phase is RolloutPhase.PAUSED)  # type: ignore[union-attr]
    refused = served.client.post(url, headers={CSRF_HEADER: csrf})
    assert refused.status_code == 409
    assert "cannot pause" in refused.json()["detail"]


def test_logging_out_ends_the_session(served: Served) -> None:
    csrf = log_in(served.client, served.token)
    assert served.client.post("/logout").status_code == 403  # without the page's CSRF token
    assert served.client.get("/").status_code == 200
    answer = served.client.post("/logout", headers={CSRF_HEADER: csrf}, follow_redirects=False)
    assert answer.status_code == 303
    assert served.client.get("/").status_code == 401


def test_the_viewer_token_reads_but_cannot_act(served: Served) -> None:
    rollout_id = deploy(served)
    csrf = log_in(served.client, viewer_token(served))
    assert 'name="fm-role" content="viewer"' in served.client.get("/").text
    assert served.client.get("/dashboard/api/overview").status_code == 200
    details = served.client.get(f"/dashboard/api/rollouts/{rollout_id}").json()
    assert details["id"] == rollout_id and "abort" in details["actions"]
    answer = served.client.post(f"/dashboard/api/rollouts/{rollout_id}/abort", headers={CSRF_HEADER: csrf})
    assert answer.status_code == 403
    assert "read-only" in answer.json()["detail"]


def test_a_login_link_works_once_and_needs_the_admin_token(served: Served) -> None:
    assert served.client.post("/dashboard/login-link").status_code == 401
    with_viewer = {"Authorization": f"Bearer {viewer_token(served)}"}
    assert served.client.post("/dashboard/login-link", headers=with_viewer).status_code == 401
    link = served.client.post("/dashboard/login-link", headers=served.auth).json()["path"]
    assert served.client.get(link, follow_redirects=False).status_code == 303
    assert served.client.get("/").status_code == 200
    served.client.cookies.clear()
    assert served.client.get(link, follow_redirects=False).status_code == 401


def test_assets_ship_in_the_package(served: Served) -> None:
    page = served.client.post("/login", data={"token": served.token}).text
    for asset in re.findall(r'(?:src|href)="(/static/[^"]+)"', page):
        assert served.client.get(asset).status_code == 200, asset
    links = re.findall(r'(?:src|href)="([^"]+)"', page)
    assert links and all(
        link.startswith("/") and not link.startswith("//") for link in links
    )  # no other host
    assert "MIT" in served.client.get("/static/uplot/LICENSE").text


def test_beyond_loopback_api_reads_need_a_token(served: Served, tmp_path: Path) -> None:
    runtime: Any = type(served.runtime)(tmp_path / "state.db")  # another runtime of fakes
    runtime.config = SimpleNamespace(api=SimpleNamespace(listen="0.0.0.0:8787"))
    runtime.state_dir = tmp_path
    app = create_app(runtime, TOKEN)
    viewer = (tmp_path / VIEWER_TOKEN_FILE).read_text().strip()
    assert (tmp_path / VIEWER_TOKEN_FILE).stat().st_mode & 0o777 == 0o600
    with TestClient(app) as client:
        assert client.get("/api/v1/status").status_code == 401
        assert client.get("/api/v1/status", headers={"Authorization": f"Bearer {viewer}"}).status_code == 200
        assert client.get("/api/v1/rollouts", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
        log_in(client, viewer)
        assert client.get("/api/v1/status").status_code == 200  # the dashboard's cookie counts too
    runtime.states.close()


@pytest.mark.parametrize(
    ("listen", "needed"),
    [
        ("127.0.0.1:8787", False),
        ("127.0.0.5:1", False),
        ("localhost:8787", False),
        ("0.0.0.0:8787", True),
        ("192.0.2.4:8787", True),
        ("fm.example:8787", True),
    ],
)
def test_reads_need_a_token_beyond_loopback(listen: str, needed: bool) -> None:
    assert reads_need_token(listen) is needed


def test_roles_and_buttons() -> None:
    assert role_of_token("admin-t", "admin-t", "viewer-t") == "admin"
    assert role_of_token("viewer-t\n", "admin-t", "viewer-t") == "viewer"
    assert role_of_token("", "admin-t", "viewer-t") is None
    assert allowed_actions(RolloutPhase.PROGRESSING) == ["promote", "promote_full", "abort", "pause"]
    assert allowed_actions(RolloutPhase.AWAITING_APPROVAL) == ["promote", "promote_full", "abort", "approve"]
    assert allowed_actions(RolloutPhase.ROLLED_BACK) == ["retry"]
    assert allowed_actions(RolloutPhase.PROMOTED) == []
    assert canary_share({"v1-0": 80, "v2-0": 20}, ["v2-0"]) == 20.0
    assert canary_share({"v1-0": 0}, []) is None


def test_install_without_a_state_directory_makes_a_viewer_token() -> None:
    from fastapi import FastAPI

    runtime = SimpleNamespace(states=SimpleNamespace(listeners=[]))
    dashboard = install_dashboard(FastAPI(), runtime, TOKEN)
    assert dashboard.viewer_token and dashboard.viewer_token != TOKEN

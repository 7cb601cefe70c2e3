"""The live web dashboard that `fm up` serves at `/`: overview, rollout, history and explanation pages.

Login: the admin token (`<state_dir>/api-token`) or the read-only viewer token
(`<state_dir>/viewer-token`) is entered once, at `/login` or through the one-time link `fm dashboard`
prints; the browser then keeps only an opaque session id in an HttpOnly, SameSite=Strict cookie. Every
page and every dashboard call needs a session; every action also needs the admin role and the session's
CSRF token in the `X-CSRF-Token` header (the page holds it; another site can neither read it nor send it).

Reads of `/api/v1` stay open while the API listens on loopback only: whoever reaches a loopback port is
on this machine already. When it listens on any other address, every read needs a token too (either
one, as a bearer token or the dashboard's cookie); see `reads_need_token`.

Live data reaches the pages by server-sent events from one `LiveFeed`: it reads the metric store once
a second for all open pages together, so twenty open dashboards cost the controller no more than one.
"""

from __future__ import annotations

import asyncio
import html
import ipaddress
import json
import secrets
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qs

from fastapi import APIRouter, FastAPI, HTTPException, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, StreamingResponse
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint

from fridaymorning.api.auth import load_or_create_token, token_equals, token_matches
from fridaymorning.config import parse_address
from fridaymorning.controller.loop import ServiceController, rollout_dict
from fridaymorning.controller.phases import RolloutPhase, RolloutState
from fridaymorning.controller.strategy import ALLOWED_COMMANDS, ManualCommand
from fridaymorning.models import Window
from fridaymorning.sketches import merge_sketches, shown_quantiles

Role = Literal["admin", "viewer"]

VIEWER_TOKEN_FILE = "viewer-token"
SESSION_COOKIE = "fm_session"
CSRF_HEADER = "X-CSRF-Token"
# How long a session lasts, and a one-time login link stays usable.
SESSION_TTL_S = 12 * 3600
LOGIN_LINK_TTL_S = 300
# The live feed: one tick a second; the overview's rates are over the last RATE_WINDOW_S seconds
# that the collector has written (it writes a second `lateness_s` after it ends).
FEED_INTERVAL_S = 1.0
RATE_WINDOW_S = 10
DATA_LAG_S = 2
# The most seconds of a rollout the page's charts show (an hour).
MAX_SERIES_S = 3600
# A closed page's queue is dropped; a slow one loses ticks rather than growing without bound.
CLIENT_QUEUE = 64

# Buttons of the rollout page, and the controller command each sends.
ACTIONS: dict[str, ManualCommand] = {
    "promote": "promote",
    "promote_full": "promote_full",
    "abort": "abort",
    "pause": "pause",
    "resume": "resume",
    "approve": "approve",
}
STATIC_FILES = {
    "app.js": "text/javascript",
    "app.css": "text/css",
    "uplot/uPlot.iife.min.js": "text/javascript",
    "uplot/uPlot.min.css": "text/css",
    "uplot/LICENSE": "text/plain",
}


# --- decisions (pure) ----------------------------------------------------------------------------


def role_of_token(presented: str, admin_token: str, viewer_token: str) -> Role | None:
    """Which role a token grants (constant-time compares), or None."""
    if token_equals(presented, admin_token):
        return "admin"
    if token_equals(presented, viewer_token):
        return "viewer"
    return None


def is_loopback_listen(listen: str) -> bool:
    """True when an API address is on loopback only (127.0.0.0/8, ::1, localhost)."""
    host, _ = parse_address(listen)
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a name other than localhost may resolve anywhere
        return False


def reads_need_token(listen: str) -> bool:
    """The read rule: API reads need a token whenever the API listens beyond loopback."""
    return not is_loopback_listen(listen)


def allowed_actions(phase: RolloutPhase) -> list[str]:
    """The rollout page's buttons that the phase allows (the controller's own rule), and retry."""
    allowed = [button for button, command in ACTIONS.items() if phase in ALLOWED_COMMANDS[command]]
    if phase in (RolloutPhase.ROLLED_BACK, RolloutPhase.ABORTED):
        allowed.append("retry")
    return allowed


def canary_share(weights: dict[str, int], canary_servers: Iterable[str]) -> float | None:
    """The canary's share (percent) of a backend's weights as HAProxy reports them; None when all are 0."""
    total = sum(weights.values())
    if total <= 0:
        return None
    return 100.0 * sum(weights.get(server, 0) for server in canary_servers) / total


def window_point(window: Window) -> dict[str, Any]:
    """One second of one version, as a chart shows it."""
    return {
        "second": window.second,
        "requests": window.requests,
        "failed": window.failed,
        **shown_quantiles(window.tr),
    }


def version_summary(windows: Sequence[Window], seconds: int) -> dict[str, Any]:
    """Req/s, error rate and p99 of a version over `seconds` seconds."""
    requests = sum(window.requests for window in windows)
    failed = sum(window.failed for window in windows)
    latency = merge_sketches(window.tr for window in windows)
    return {
        "rps": requests / seconds,
        "error_rate": failed / requests if requests else None,
        "p99": latency.get_quantile_value(0.99) if latency.count else None,
    }


Query = Callable[[str, str, int, int], list[Window]]


def points_of(query: Query, backend: str, version: str, start: int, end: int) -> list[dict[str, Any]]:
    """A version's seconds in [start, end) as chart points (blocking: run in a thread)."""
    return [window_point(window) for window in query(backend, version, start, end)]


def summary_of(query: Query, backend: str, version: str, start: int, end: int) -> dict[str, Any]:
    """A version's req/s, error rate and p99 over [start, end) (blocking: run in a thread)."""
    return version_summary(query(backend, version, start, end), end - start)


def verdict_line(verdict: dict[str, Any] | None) -> str:
    """The latest verdict in one line."""
    if not verdict:
        return "not judged yet"
    return f"{verdict.get('phase')}: {verdict.get('reason')}"


# --- sessions ------------------------------------------------------------------------------------


@dataclass
class Session:
    role: Role
    csrf: str
    expires: float


@dataclass
class Sessions:
    """Logged-in browsers and unused one-time login links, in memory: a restart of `fm up` logs out."""

    clock: Callable[[], float] = time.time
    sessions: dict[str, Session] = field(default_factory=dict)
    links: dict[str, tuple[Role, float]] = field(default_factory=dict)

    def open(self, role: Role) -> tuple[str, Session]:
        session_id = secrets.token_urlsafe(32)
        session = Session(role, secrets.token_urlsafe(32), self.clock() + SESSION_TTL_S)
        self.sessions[session_id] = session
        return session_id, session

    def get(self, session_id: str | None) -> Session | None:
        session = self.sessions.get(session_id or "")
        if session is None or session.expires < self.clock():
            return None
        return session

    def close(self, session_id: str | None) -> None:
        self.sessions.pop(session_id or "", None)

    def new_link(self, role: Role) -> str:
        code = secrets.token_urlsafe(32)
        self.links[code] = (role, self.clock() + LOGIN_LINK_TTL_S)
        return code

    def use_link(self, code: str) -> Role | None:
        """The role of a login link, which is used up; None when unknown, used or expired."""
        role, expires = self.links.pop(code, (None, 0.0))
        return role if role is not None and expires >= self.clock() else None


# --- the live feed -------------------------------------------------------------------------------


class LiveFeed:
    """One reader of the metric store and the state store for every open page.

    While at least one page listens, it ticks once a second: an `overview` message (every service's
    row) and a `points` message (the newest seconds of each running rollout's versions). Rollout events
    are passed on as they are committed.
    """

    def __init__(self, runtime: Any) -> None:
        self.runtime = runtime
        self.queues: set[asyncio.Queue[str]] = set()
        self.task: asyncio.Task[None] | None = None
        self.sent_until: dict[int, int] = {}
        runtime.states.listeners.append(self.publish_event)

    def publish_event(self, event: dict[str, Any]) -> None:
        self.broadcast("rollout", event)

    def broadcast(self, kind: str, data: Any) -> None:
        message = f"event: {kind}\ndata: {json.dumps(data, default=str)}\n\n"
        for queue in self.queues:
            if queue.qsize() < CLIENT_QUEUE:
                queue.put_nowait(message)

    async def stream(self) -> AsyncIterator[str]:
        queue: asyncio.Queue[str] = asyncio.Queue()
        self.queues.add(queue)
        if self.task is None or self.task.done():
            self.task = asyncio.create_task(self.run(), name="dashboard-feed")
        try:
            yield ": connected\n\n"
            while True:
                try:
                    yield await asyncio.wait_for(queue.get(), 15.0)
                except TimeoutError:
                    yield ": keep-alive\n\n"
        finally:
            self.queues.discard(queue)

    async def run(self) -> None:
        while self.queues:
            try:
                self.broadcast("overview", await overview(self.runtime))
                for rollout_id, points in (await self.new_points()).items():
                    self.broadcast("points", {"rollout": rollout_id, "versions": points})
            except Exception as error:  # a failed tick is reported to the pages, and the next one tried
                self.broadcast("feed_error", {"detail": str(error)})
            await asyncio.sleep(FEED_INTERVAL_S)

    async def new_points(self) -> dict[int, dict[str, list[dict[str, Any]]]]:
        """Seconds of running rollouts not yet sent, per rollout and version."""
        now = int(time.time()) - DATA_LAG_S
        found = {}
        for controller in self.runtime.controllers.values():
            state = self.runtime.states.active_rollout(controller.service.name)
            if state is None:
                continue
            start = self.sent_until.get(state.id, now - 1)
            if now <= start:
                continue
            found[state.id] = await series(self.runtime, controller, state, start, now)
            self.sent_until[state.id] = now
        return found


async def series(
    runtime: Any, controller: ServiceController, state: RolloutState, start: int, end: int
) -> dict[str, list[dict[str, Any]]]:
    """Per second, per version (baseline and canary) of a rollout: requests, failures and quantiles.

    The store's query and the sketches' quantiles run off the event loop, which the controllers share.
    """
    found: dict[str, list[dict[str, Any]]] = {}
    if runtime.metrics is None:
        return found
    query = runtime.metrics.query
    for version, backend in (
        (state.baseline, controller.backend),
        (state.version, controller.canary_backend),
    ):
        found[version] = await asyncio.to_thread(points_of, query, backend, version, start, end)
    return found


async def read_back_weight(controller: ServiceController) -> float | None:
    """The canary's share of the service's backend as HAProxy has it now (None without a canary)."""
    if not controller.canary_instances or controller.ab:
        return None
    try:
        weights = await controller.traffic.weights()
    except Exception:  # HAProxy restarting: the row shows no read-back rather than failing
        return None
    return canary_share(weights, (instance.server for instance in controller.canary_instances))


async def overview(runtime: Any) -> list[dict[str, Any]]:
    """One row per service, as the overview table shows it."""
    now = int(time.time()) - DATA_LAG_S
    rows = []
    for name, controller in runtime.controllers.items():
        state = runtime.states.active_rollout(name)
        versions: list[tuple[str, str, str]] = [("stable", controller.stable_version, controller.backend)]
        if state is not None:
            versions = [
                ("stable", state.baseline, controller.backend),
                ("canary", state.version, controller.canary_backend),
            ]
        per_version = {}
        for role, version, backend in versions:
            summary = version_summary([], RATE_WINDOW_S)
            if runtime.metrics is not None:
                query = runtime.metrics.query
                summary = await asyncio.to_thread(
                    summary_of, query, backend, version, now - RATE_WINDOW_S, now
                )
            per_version[role] = {"version": version, **summary}
        rows.append(
            {
                "service": name,
                "stable": controller.stable_version,
                "rollout": rollout_dict(state) if state else None,
                "weight_set": state.canary_weight if state else None,
                "weight_read": await read_back_weight(controller) if state else None,
                "affinity": controller.service.rollout.affinity is not None,
                "verdict": verdict_line(controller.current_verdict(state)) if state else "",
                "versions": per_version,
            }
        )
    return rows


# --- HTTP ----------------------------------------------------------------------------------------


def static_text(name: str) -> bytes:
    return resources.files("fridaymorning.api").joinpath("static", name).read_bytes()


LOGOUT_BUTTON = '<button id="logout">log out</button>'


def page(title: str, body: str, session: Session | None, status: int = 200) -> HTMLResponse:
    """A page of the dashboard: the shell the script fills in."""
    meta = ""
    if session is not None:
        meta = (
            f'<meta name="fm-role" content="{session.role}">'
            f'<meta name="fm-csrf" content="{html.escape(session.csrf)}">'
        )
    text = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)} · fridaymorning</title>
<meta name="viewport" content="width=device-width, initial-scale=1">{meta}
<link rel="stylesheet" href="/static/uplot/uPlot.min.css"><link rel="stylesheet" href="/static/app.css">
</head><body>
<header><a href="/" class="brand">fridaymorning</a>
<nav><a href="/">overview</a> <a href="/history">history</a></nav>
<span id="who">{session.role if session else ""}</span>{LOGOUT_BUTTON if session else ""}
</header>
<main id="main">{body}</main>
<script src="/static/uplot/uPlot.iife.min.js"></script><script src="/static/app.js"></script>
</body></html>"""
    return HTMLResponse(text, status_code=status, headers={"Cache-Control": "no-store"})


LOGIN_FORM = """<h1>Log in</h1><p class="error">{error}</p>
<form method="post" action="/login"><label>Token <input type="password" name="token" id="token"
autocomplete="current-password" size="50"></label> <button type="submit">Log in</button></form>
<p>The admin token is in <code>&lt;state_dir&gt;/api-token</code>, the read-only viewer token in
<code>&lt;state_dir&gt;/viewer-token</code>; <code>fm dashboard</code> prints a one-time login link.</p>"""


# The dashboard's pages, its JSON calls under /dashboard/api, and the login-link call. Each finds what
# `install_dashboard` set up (sessions, feed, tokens, runtime) on `app.state.dashboard`.
router = APIRouter(include_in_schema=False)


def dashboard_of(request: Request) -> Dashboard:
    dashboard: Dashboard = request.app.state.dashboard
    return dashboard


def session_of(request: Request) -> Session | None:
    return dashboard_of(request).sessions.get(request.cookies.get(SESSION_COOKIE))


def require_session(request: Request) -> Session:
    session = session_of(request)
    if session is None:
        raise HTTPException(401, "log in to the dashboard first")
    return session


def require_action(request: Request) -> Session:
    """An action: an admin session that proves, by the header, that the page itself sent it."""
    session = require_session(request)
    if session.role != "admin":
        raise HTTPException(403, "the viewer token is read-only")
    check_csrf(request, session, "the action")
    return session


def require_action_or_viewer_csrf(request: Request) -> Session:
    """A call that changes nothing in the controller but must come from the page: any role, CSRF."""
    session = require_session(request)
    check_csrf(request, session, "the call")
    return session


def logged_in(request: Request, role: Role) -> Response:
    session_id, _ = dashboard_of(request).sessions.open(role)
    response = RedirectResponse("/", status_code=303)
    response.set_cookie(
        SESSION_COOKIE, session_id, max_age=SESSION_TTL_S, httponly=True, samesite="strict", path="/"
    )
    return response


def rollout_or_404(request: Request, rollout_id: int) -> RolloutState:
    state: RolloutState | None = dashboard_of(request).runtime.states.rollout(rollout_id)
    if state is None:
        raise HTTPException(404, f"no rollout {rollout_id}")
    return state


def controller_or_404(request: Request, service: str) -> ServiceController:
    controller: ServiceController | None = dashboard_of(request).runtime.controllers.get(service)
    if controller is None:
        raise HTTPException(404, f"service {service!r} is no longer configured")
    return controller


def shell(title: str, request: Request) -> HTMLResponse:
    session = session_of(request)
    if session is None:
        return page("log in", LOGIN_FORM.format(error="Log in to see this page."), None, 401)
    return page(title, '<p class="loading">loading…</p>', session)


@router.get("/", response_class=HTMLResponse)
async def overview_page(request: Request) -> HTMLResponse:
    return shell("overview", request)


@router.get("/history", response_class=HTMLResponse)
async def history_page(request: Request) -> HTMLResponse:
    return shell("history", request)


@router.get("/rollouts/{rollout_id}", response_class=HTMLResponse)
async def rollout_page(request: Request, rollout_id: int) -> HTMLResponse:
    return shell(f"rollout {rollout_id}", request)


@router.get("/rollouts/{rollout_id}/explain", response_class=HTMLResponse)
async def explain_page(request: Request, rollout_id: int) -> HTMLResponse:
    return shell(f"rollout {rollout_id} explained", request)


@router.get("/login", response_class=HTMLResponse)
async def login_page(request: Request, code: str | None = None) -> Response:
    if code is not None:
        role = dashboard_of(request).sessions.use_link(code)
        if role is not None:
            return logged_in(request, role)
        return page("log in", LOGIN_FORM.format(error="That login link is used or expired."), None, 401)
    return page("log in", LOGIN_FORM.format(error=""), None)


@router.post("/login")
async def login(request: Request) -> Response:
    # A plain form post, parsed here: no multipart parser is needed for one field.
    fields = parse_qs((await request.body()).decode("utf-8", "replace"))
    dashboard = dashboard_of(request)
    role = role_of_token((fields.get("token") or [""])[0], dashboard.admin_token, dashboard.viewer_token)
    if role is None:
        return page("log in", LOGIN_FORM.format(error="That token is not valid."), None, 401)
    return logged_in(request, role)


@router.post("/logout")
async def logout(request: Request) -> Response:
    require_action_or_viewer_csrf(request)
    dashboard_of(request).sessions.close(request.cookies.get(SESSION_COOKIE))
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


@router.get("/static/{name:path}")
async def static(name: str) -> Response:
    if name not in STATIC_FILES:
        raise HTTPException(404, "no such file")
    return Response(static_text(name), media_type=STATIC_FILES[name])


@router.post("/dashboard/login-link", status_code=201)
async def login_link(request: Request, viewer: bool = False) -> dict[str, Any]:
    """A one-time link that logs a browser in (as admin, or with viewer=true read-only); needs the admin
    token as a bearer token: `fm dashboard` asks for it."""
    header = request.headers.get("authorization", "")
    dashboard = dashboard_of(request)
    if not header.isascii() or not token_matches(header, dashboard.admin_token):
        raise HTTPException(
            401, "a valid bearer token is required for this call", headers={"WWW-Authenticate": "Bearer"}
        )
    code = dashboard.sessions.new_link("viewer" if viewer else "admin")
    return {"path": f"/login?code={code}", "expires_in_s": LOGIN_LINK_TTL_S}


@router.get("/dashboard/api/overview")
async def overview_data(request: Request) -> list[dict[str, Any]]:
    require_session(request)
    return await overview(dashboard_of(request).runtime)


@router.get("/dashboard/api/history")
async def history_data(request: Request, limit: int = 100) -> list[dict[str, Any]]:
    require_session(request)
    return [
        {**rollout_dict(state), "duration_s": duration_of(state)}
        for state in dashboard_of(request).runtime.states.rollouts(None, min(max(limit, 1), 1000))
    ]


@router.get("/dashboard/api/rollouts/{rollout_id}")
async def rollout_data(request: Request, rollout_id: int) -> dict[str, Any]:
    require_session(request)
    runtime = dashboard_of(request).runtime
    state = rollout_or_404(request, rollout_id)
    controller = runtime.controllers.get(state.service)
    verdict = controller.current_verdict(state) if controller and state.active else None
    events = runtime.states.events(rollout_id)
    if verdict is None:
        verdict = next((e["verdict"] for e in reversed(events) if e.get("verdict")), None)
    return {
        **rollout_dict(state),
        "duration_s": duration_of(state),
        "events": events,
        "verdict": verdict,
        "actions": allowed_actions(state.phase),
        "affinity": bool(controller and controller.service.rollout.affinity is not None),
    }


@router.get("/dashboard/api/rollouts/{rollout_id}/series")
async def series_data(request: Request, rollout_id: int) -> dict[str, Any]:
    require_session(request)
    state = rollout_or_404(request, rollout_id)
    controller = controller_or_404(request, state.service)
    end = int(state.finished_at or time.time() - DATA_LAG_S) + 1
    start = max(int(state.started_at), end - MAX_SERIES_S)
    versions = await series(dashboard_of(request).runtime, controller, state, start, end)
    return {"rollout": rollout_id, "versions": versions}


@router.post("/dashboard/api/rollouts/{rollout_id}/replay")
async def replay_data(request: Request, rollout_id: int) -> dict[str, Any]:
    require_action_or_viewer_csrf(request)
    from fridaymorning.controller.replay import replay

    runtime = dashboard_of(request).runtime
    state = rollout_or_404(request, rollout_id)
    controller = controller_or_404(request, state.service)
    if runtime.metrics is None:
        raise HTTPException(503, "the metric store is not open")
    events = runtime.states.events(rollout_id)
    decisions = await asyncio.to_thread(replay, state, events, runtime.metrics.query, controller.service)
    return {
        "rollout": rollout_id,
        "decisions": [
            {
                "at": decision.at - state.started_at,
                "kind": decision.kind,
                "start": decision.start,
                "end": decision.end,
                "recorded": decision.recorded,
                "replayed": decision.replayed,
                "incremental": decision.incremental,
                "same": decision.same,
            }
            for decision in decisions
        ],
        "reproduced": all(decision.same for decision in decisions),
    }


@router.post("/dashboard/api/rollouts/{rollout_id}/{action}")
async def act(request: Request, rollout_id: int, action: str) -> dict[str, Any]:
    require_action(request)
    state = rollout_or_404(request, rollout_id)
    controller = controller_or_404(request, state.service)
    if action == "retry":
        return rollout_dict(controller.retry(rollout_id))  # RolloutError: the app's 409 handler
    if action not in ACTIONS:
        raise HTTPException(404, f"no action {action!r}")
    return rollout_dict(controller.command(rollout_id, ACTIONS[action]))


@router.get("/dashboard/api/events")
async def live(request: Request) -> StreamingResponse:
    require_session(request)
    return StreamingResponse(dashboard_of(request).feed.stream(), media_type="text/event-stream")


def check_csrf(request: Request, session: Session, what: str) -> None:
    """403 unless the request's CSRF header carries the session's token: the page itself sent it."""
    given = request.headers.get(CSRF_HEADER, "")
    if not secrets.compare_digest(given.encode(), session.csrf.encode()):
        raise HTTPException(403, f"{what} lacks the page's CSRF token")


def duration_of(state: RolloutState) -> float:
    return (state.finished_at or time.time()) - state.started_at


# Reads outside /api/v1 that the read rule guards too.
GUARDED_PATHS = ("/openapi.json", "/docs", "/metrics")


class ReadGuard(BaseHTTPMiddleware):
    """Beyond loopback, reads of `/api/v1` and /metrics need a token (admin or viewer) or a session."""

    def __init__(self, app: Any, tokens: tuple[str, str], has_session: Callable[[str | None], bool]) -> None:
        super().__init__(app)
        self.tokens = tokens
        self.has_session = has_session

    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        guarded = request.url.path.startswith("/api/v1") or request.url.path in GUARDED_PATHS
        if guarded and request.method in ("GET", "HEAD"):
            header = request.headers.get("authorization", "")
            allowed = header.isascii() and any(token_matches(header, token) for token in self.tokens)
            if not allowed and not self.has_session(request.cookies.get(SESSION_COOKIE)):
                return JSONResponse(
                    {"detail": "the API listens beyond loopback: reads need a token too"},
                    status_code=401,
                    headers={"WWW-Authenticate": "Bearer"},
                )
        return await call_next(request)


@dataclass
class Dashboard:
    """What `install_dashboard` set up, for the routes: its sessions and live feed (the benchmark counts
    the feed's pages), the two tokens and the runtime."""

    sessions: Sessions
    feed: LiveFeed
    viewer_token: str
    admin_token: str
    runtime: Any


def install_dashboard(app: FastAPI, runtime: Any, admin_token: str) -> Dashboard:
    """Serve the dashboard from `app`, and guard API reads when the API listens beyond loopback.

    The viewer token lives beside the admin token (`<state_dir>/viewer-token`, mode 600); a runtime
    without a state directory (a test's) gets a fresh one.
    """
    state_dir = getattr(runtime, "state_dir", None)
    viewer_token = (
        load_or_create_token(Path(state_dir, VIEWER_TOKEN_FILE))
        if state_dir is not None
        else secrets.token_urlsafe(32)
    )
    dashboard = Dashboard(Sessions(), LiveFeed(runtime), viewer_token, admin_token, runtime)
    app.state.dashboard = dashboard
    app.include_router(router)
    config = getattr(runtime, "config", None)
    if config is not None and reads_need_token(config.api.listen):
        app.add_middleware(
            ReadGuard,
            tokens=(admin_token, viewer_token),
            has_session=lambda session_id: dashboard.sessions.get(session_id) is not None,
        )
    return dashboard

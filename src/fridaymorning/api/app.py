"""The HTTP API: reads go to the controllers and stores, changes go through the controllers only.

Every state-changing call needs the bearer token. OpenAPI is served at /openapi.json, and documents
every answer a call can get: a refused call gets a 4xx whose `detail` says why.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal, Protocol

from fastapi import Depends, FastAPI, HTTPException, Path, Query, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field

from fridaymorning import __version__
from fridaymorning.api.auth import token_matches
from fridaymorning.api.dashboard import install_dashboard
from fridaymorning.api.docs import mount_docs
from fridaymorning.controller.loop import ServiceController, rollout_dict
from fridaymorning.controller.state import StateStore
from fridaymorning.errors import FridayMorningError, RolloutError
from fridaymorning.sketches import merge_sketches
from fridaymorning.store.base import MetricStore

# Seconds between keep-alive comments on the event stream, so proxies keep it open.
KEEPALIVE_S = 15.0
# The most seconds one metrics query may span.
MAX_QUERY_SPAN_S = 24 * 3600
# Rollout ids and seconds are SQLite INTEGERs: larger numbers cannot even be looked up.
SQLITE_MAX_INTEGER = 2**63 - 1

Action = Literal["promote", "abort", "approve", "pause", "resume"]


class RuntimeView(Protocol):
    """What the API needs of a running `fm up`."""

    controllers: dict[str, ServiceController]
    states: StateStore
    metrics: MetricStore | None

    def status(self) -> dict[str, Any]: ...

    async def reload_haproxy(self) -> None: ...


class DeployRequest(BaseModel):
    version: str = Field(min_length=1, max_length=51)  # the length the version rule allows


class Refusal(BaseModel):
    """Why a call was refused."""

    detail: str


def refusal(description: str) -> dict[str, Any]:
    """An OpenAPI response entry for a refusal."""
    return {"model": Refusal, "description": description}


# The refusals each operation documents, beside FastAPI's own 422 for invalid parameters.
Responses = dict[int | str, dict[str, Any]]
UNAUTHORIZED: Responses = {401: refusal("No valid bearer token")}
NO_SERVICE: Responses = {404: refusal("No service of that name")}
NO_ROLLOUT: Responses = {404: refusal("No rollout with that id, or its service is no longer configured")}
REFUSED: Responses = {409: refusal("Refused in the rollout's phase, or the version breaks the version rule")}
BAD_BODY: Responses = {400: refusal("The body is not text")}
UNAVAILABLE: Responses = {503: refusal("The metric store is not open, or failed")}
FAILED: Responses = {503: refusal("The controller or its state store failed")}

# Declares the token in the OpenAPI document; `require_token` does the checking.
BEARER = HTTPBearer(auto_error=False, description="the API token `fm up` wrote to its state directory")

RolloutId = Annotated[int, Path(ge=1, le=SQLITE_MAX_INTEGER, description="a rollout's id")]
Second = Annotated[int, Query(ge=0, le=SQLITE_MAX_INTEGER, description="a Unix time, in seconds")]


class EventStreamResponse(StreamingResponse):
    """A server-sent event stream; its media type is what the OpenAPI document declares."""

    media_type = "text/event-stream"


EVENT_STREAM: Responses = {
    200: {
        "description": "A server-sent event stream: one `event: KIND` and `data: {json}` per committed "
        "rollout event, and a comment every 15 s to keep the connection open",
        "content": {"text/event-stream": {"schema": {"type": "string"}}},
    }
}


class EventHub:
    """Fans the state store's committed events out to every open event stream."""

    def __init__(self, states: StateStore) -> None:
        self._queues: set[asyncio.Queue[dict[str, Any]]] = set()
        states.listeners.append(self.publish)

    def publish(self, event: dict[str, Any]) -> None:
        for queue in self._queues:
            queue.put_nowait(event)

    async def stream(self, service: str | None) -> AsyncIterator[str]:
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._queues.add(queue)
        try:
            yield ": connected\n\n"
            while True:
                try:
                    event = await asyncio.wait_for(queue.get(), KEEPALIVE_S)
                except TimeoutError:
                    yield ": keep-alive\n\n"
                    continue
                if service is None or event["service"] == service:
                    yield f"event: {event['kind']}\ndata: {json.dumps(event, default=str)}\n\n"
        finally:
            self._queues.discard(queue)


def create_app(runtime: RuntimeView, token: str) -> FastAPI:
    """The API of one running `fm up`."""
    # /docs is served from the package's own copy of Swagger UI (api/docs.py), never from a CDN.
    app = FastAPI(title="fridaymorning", version=__version__, docs_url=None, redoc_url=None)
    mount_docs(app)
    hub = EventHub(runtime.states)
    install_dashboard(app, runtime, token)  # the web dashboard at /, and the read rule beyond loopback

    def require_token(
        request: Request, _: Annotated[HTTPAuthorizationCredentials | None, Security(BEARER)]
    ) -> None:
        header = request.headers.get("authorization")
        # Headers arrive decoded as latin-1; the token is ASCII, and compare_digest refuses non-ASCII text.
        if header is None or not header.isascii() or not token_matches(header, token):
            raise HTTPException(
                401, "a valid bearer token is required for this call", headers={"WWW-Authenticate": "Bearer"}
            )

    def controller_of(service: str) -> ServiceController:
        controller = runtime.controllers.get(service)
        if controller is None:
            known = ", ".join(sorted(runtime.controllers))
            raise HTTPException(404, f"no service named {service!r}; configured services: {known}")
        return controller

    def rollout_or_404(rollout_id: int) -> Any:
        state = runtime.states.rollout(rollout_id)
        if state is None:
            raise HTTPException(404, f"no rollout {rollout_id}")
        return state

    @app.exception_handler(RolloutError)
    async def refused(_: Request, error: RolloutError) -> JSONResponse:
        return JSONResponse({"detail": str(error)}, status_code=409)

    @app.exception_handler(FridayMorningError)
    async def failed(_: Request, error: FridayMorningError) -> JSONResponse:
        return JSONResponse({"detail": f"the controller could not do this: {error}"}, status_code=503)

    # Handlers are coroutines on purpose: they run on the controllers' event loop, where a deploy
    # starts its rollout task. Their store reads are short SQLite queries.

    @app.get("/api/v1/status")
    async def status() -> dict[str, Any]:
        return runtime.status()

    @app.get("/api/v1/services")
    async def services() -> list[dict[str, Any]]:
        return [
            {
                "name": name,
                "frontend": controller.service.frontend,
                "strategy": controller.service.rollout.strategy,
                "stable": controller.stable_version,
                "steps": [step.model_dump() for step in controller.service.rollout.steps],
            }
            for name, controller in runtime.controllers.items()
        ]

    @app.get("/api/v1/services/{service}/metrics", responses={**NO_SERVICE, **UNAVAILABLE})
    async def metrics(
        service: str, start: Second, end: Second, version: str = Query(min_length=1, max_length=64)
    ) -> dict[str, Any]:
        controller_of(service)
        if not 0 < end - start <= MAX_QUERY_SPAN_S:
            # Shaped like every other 422, so clients read one error format.
            reason = f"end must be after start, by at most {MAX_QUERY_SPAN_S} s"
            raise RequestValidationError(
                [{"type": "value_error", "loc": ("query", "end"), "msg": reason, "input": end}]
            )
        if runtime.metrics is None:
            raise HTTPException(503, "the metric store is not open")
        try:
            windows = await asyncio.to_thread(runtime.metrics.query, service, version, start, end)
        except FridayMorningError as error:
            raise HTTPException(503, f"the metric store failed: {error}") from error
        latency = merge_sketches(window.tr for window in windows)
        return {
            "service": service,
            "version": version,
            "start": start,
            "end": end,
            "requests": sum(window.requests for window in windows),
            "failed": sum(window.failed for window in windows),
            "latency_ms": {f"p{round(q * 100)}": latency.get_quantile_value(q) for q in (0.5, 0.9, 0.99)},
            "seconds": [{"second": w.second, "requests": w.requests, "failed": w.failed} for w in windows],
        }

    @app.get("/api/v1/rollouts")
    async def rollouts(
        service: str | None = None, limit: int = Query(50, ge=1, le=1000)
    ) -> list[dict[str, object]]:
        return [rollout_dict(state) for state in runtime.states.rollouts(service, limit)]

    @app.get("/api/v1/rollouts/{rollout_id}", responses=NO_ROLLOUT)
    async def rollout(rollout_id: RolloutId) -> dict[str, object]:
        state = rollout_or_404(rollout_id)
        return {**rollout_dict(state), "events": runtime.states.events(rollout_id)}

    @app.get("/api/v1/events", response_class=EventStreamResponse, responses=EVENT_STREAM)
    async def events(service: str | None = None) -> EventStreamResponse:
        """Server-sent events: every committed rollout event, as it happens."""
        return EventStreamResponse(hub.stream(service))

    @app.post(
        "/api/v1/services/{service}/deploy",
        status_code=202,
        dependencies=[Depends(require_token)],
        responses={**BAD_BODY, **UNAUTHORIZED, **NO_SERVICE, **REFUSED, **FAILED},
    )
    async def deploy(service: str, body: DeployRequest) -> dict[str, object]:
        return rollout_dict(controller_of(service).deploy(body.version))

    @app.post(
        "/api/v1/haproxy/reload",
        status_code=202,
        dependencies=[Depends(require_token)],
        responses={**UNAUTHORIZED, **FAILED},
    )
    async def reload_haproxy() -> dict[str, str]:
        """Re-render haproxy.cfg with the live servers and reload HAProxy seamlessly."""
        await runtime.reload_haproxy()
        return {"detail": "HAProxy reloaded; servers and weights kept"}

    @app.post(
        "/api/v1/rollouts/{rollout_id}/retry",
        status_code=202,
        dependencies=[Depends(require_token)],
        responses={**UNAUTHORIZED, **NO_ROLLOUT, **REFUSED, **FAILED},
    )
    async def retry(rollout_id: RolloutId) -> dict[str, object]:
        state = rollout_or_404(rollout_id)
        return rollout_dict(controller_of(state.service).retry(rollout_id))

    @app.post(
        "/api/v1/rollouts/{rollout_id}/{action}",
        status_code=202,
        dependencies=[Depends(require_token)],
        responses={**UNAUTHORIZED, **NO_ROLLOUT, **REFUSED, **FAILED},
    )
    async def act(rollout_id: RolloutId, action: Action, full: bool = False) -> dict[str, object]:
        state = rollout_or_404(rollout_id)
        command = "promote_full" if action == "promote" and full else action
        return rollout_dict(controller_of(state.service).command(rollout_id, command))

    return app

"""The HTTP API: reads go to the controllers and stores, changes go through the controllers only.

Every state-changing call needs the bearer token. OpenAPI is served at /openapi.json.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any, Literal, Protocol

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, Field

from fridaymorning import __version__
from fridaymorning.api.auth import token_matches
from fridaymorning.controller.loop import ServiceController, rollout_dict
from fridaymorning.controller.state import StateStore
from fridaymorning.errors import FridayMorningError, RolloutError
from fridaymorning.sketches import merge_sketches
from fridaymorning.store.base import MetricStore

# Seconds between keep-alive comments on the event stream, so proxies keep it open.
KEEPALIVE_S = 15.0
# The most seconds one metrics query may span.
MAX_QUERY_SPAN_S = 24 * 3600

Action = Literal["promote", "abort", "approve", "pause", "resume"]


class RuntimeView(Protocol):
    """What the API needs of a running `fm up`."""

    controllers: dict[str, ServiceController]
    states: StateStore
    metrics: MetricStore | None

    def status(self) -> dict[str, Any]: ...


class DeployRequest(BaseModel):
    version: str = Field(min_length=1, max_length=64)


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
    app = FastAPI(title="fridaymorning", version=__version__)
    hub = EventHub(runtime.states)

    def require_token(request: Request) -> None:
        if not token_matches(request.headers.get("authorization"), token):
            raise HTTPException(401, "a valid bearer token is required for this call")

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

    @app.get("/api/v1/services/{service}/metrics")
    async def metrics(
        service: str,
        version: str = Query(min_length=1, max_length=64),
        start: int = Query(ge=0),
        end: int = Query(ge=0),
    ) -> dict[str, Any]:
        controller_of(service)
        if not 0 < end - start <= MAX_QUERY_SPAN_S:
            raise HTTPException(422, f"end must be after start, by at most {MAX_QUERY_SPAN_S} s")
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

    @app.get("/api/v1/rollouts/{rollout_id}")
    async def rollout(rollout_id: int) -> dict[str, object]:
        state = rollout_or_404(rollout_id)
        return {**rollout_dict(state), "events": runtime.states.events(rollout_id)}

    @app.get("/api/v1/events")
    async def events(service: str | None = None) -> StreamingResponse:
        """Server-sent events: every committed rollout event, as it happens."""
        return StreamingResponse(hub.stream(service), media_type="text/event-stream")

    @app.post("/api/v1/services/{service}/deploy", status_code=202, dependencies=[Depends(require_token)])
    async def deploy(service: str, body: DeployRequest) -> dict[str, object]:
        return rollout_dict(controller_of(service).deploy(body.version))

    @app.post("/api/v1/rollouts/{rollout_id}/retry", status_code=202, dependencies=[Depends(require_token)])
    async def retry(rollout_id: int) -> dict[str, object]:
        state = rollout_or_404(rollout_id)
        return rollout_dict(controller_of(state.service).retry(rollout_id))

    @app.post(
        "/api/v1/rollouts/{rollout_id}/{action}", status_code=202, dependencies=[Depends(require_token)]
    )
    async def act(rollout_id: int, action: Action, full: bool = False) -> dict[str, object]:
        state = rollout_or_404(rollout_id)
        command = "promote_full" if action == "promote" and full else action
        return rollout_dict(controller_of(state.service).command(rollout_id, command))

    return app

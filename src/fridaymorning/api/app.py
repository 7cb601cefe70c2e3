"""The HTTP API: reads go to the controllers and stores, changes go through the controllers only.

Every state-changing call needs the bearer token. OpenAPI is served at /openapi.json.
"""

from __future__ import annotations

from typing import Any, Literal, Protocol

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from fridaymorning import __version__
from fridaymorning.api.auth import token_matches
from fridaymorning.controller.loop import ServiceController, rollout_dict
from fridaymorning.controller.state import StateStore
from fridaymorning.errors import RolloutError


class RuntimeView(Protocol):
    """What the API needs of a running `fm up`."""

    controllers: dict[str, ServiceController]
    states: StateStore

    def status(self) -> dict[str, Any]: ...


class DeployRequest(BaseModel):
    version: str


def create_app(runtime: RuntimeView, token: str) -> FastAPI:
    """The API of one running `fm up`."""
    app = FastAPI(title="fridaymorning", version=__version__)

    def require_token(request: Request) -> None:
        if not token_matches(request.headers.get("authorization"), token):
            raise HTTPException(401, "a valid bearer token is required for this call")

    def controller_of(service: str) -> ServiceController:
        controller = runtime.controllers.get(service)
        if controller is None:
            known = ", ".join(sorted(runtime.controllers))
            raise HTTPException(404, f"no service named {service!r}; configured services: {known}")
        return controller

    @app.exception_handler(RolloutError)
    async def refused(_: Request, error: RolloutError) -> JSONResponse:
        return JSONResponse({"detail": str(error)}, status_code=409)

    # Handlers are coroutines on purpose: they run on the controllers' event loop, where a deploy
    # starts its rollout task. Their store reads are short SQLite queries.

    @app.get("/api/v1/status")
    async def status() -> dict[str, Any]:
        return runtime.status()

    @app.get("/api/v1/rollouts")
    async def rollouts(service: str | None = None, limit: int = 50) -> list[dict[str, object]]:
        return [rollout_dict(state) for state in runtime.states.rollouts(service, limit)]

    @app.get("/api/v1/rollouts/{rollout_id}")
    async def rollout(rollout_id: int) -> dict[str, object]:
        state = runtime.states.rollout(rollout_id)
        if state is None:
            raise HTTPException(404, f"no rollout {rollout_id}")
        return {**rollout_dict(state), "events": runtime.states.events(rollout_id)}

    @app.post("/api/v1/services/{service}/deploy", status_code=202, dependencies=[Depends(require_token)])
    async def deploy(service: str, body: DeployRequest) -> dict[str, object]:
        return rollout_dict(controller_of(service).deploy(body.version))

    @app.post(
        "/api/v1/rollouts/{rollout_id}/{action}", status_code=202, dependencies=[Depends(require_token)]
    )
    async def act(rollout_id: int, action: Literal["promote", "abort"]) -> dict[str, object]:
        state = runtime.states.rollout(rollout_id)
        if state is None:
            raise HTTPException(404, f"no rollout {rollout_id}")
        return rollout_dict(controller_of(state.service).command(rollout_id, action))

    return app

"""What every route of the API shares: the running `fm up` it reads and commands, the token check, and the
refusals it documents.

`create_app` keeps the runtime and the token on `app.state`; the routes reach them through the
dependencies here, so each route module is a plain `APIRouter` with no closure over the app.
"""

from __future__ import annotations

from typing import Annotated, Any, Protocol

from fastapi import Depends, HTTPException, Path, Query, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel

from fridaymorning.api.auth import token_matches
from fridaymorning.controller.loop import ServiceController
from fridaymorning.controller.phases import RolloutState
from fridaymorning.controller.state import StateStore
from fridaymorning.store.base import MetricStore

# Rollout ids and seconds are SQLite INTEGERs: larger numbers cannot even be looked up.
SQLITE_MAX_INTEGER = 2**63 - 1


class RuntimeView(Protocol):
    """What the API needs of a running `fm up`."""

    controllers: dict[str, ServiceController]
    states: StateStore
    metrics: MetricStore | None

    def status(self) -> dict[str, Any]: ...

    async def reload_haproxy(self) -> None: ...


def runtime_of(request: Request) -> RuntimeView:
    """The running `fm up` the app was created for."""
    runtime: RuntimeView = request.app.state.runtime
    return runtime


Runtime = Annotated[RuntimeView, Depends(runtime_of)]


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


def require_token(
    request: Request, _: Annotated[HTTPAuthorizationCredentials | None, Security(BEARER)]
) -> None:
    """Refuse (401) a call without the app's bearer token."""
    header = request.headers.get("authorization")
    # Headers arrive decoded as latin-1; the token is ASCII, and compare_digest refuses non-ASCII text.
    if header is None or not header.isascii() or not token_matches(header, request.app.state.token):
        raise HTTPException(
            401, "a valid bearer token is required for this call", headers={"WWW-Authenticate": "Bearer"}
        )


# For every route that changes state.
TOKEN_REQUIRED = [Depends(require_token)]


def controller_of(runtime: RuntimeView, service: str) -> ServiceController:
    """The controller of `service`, else a 404 that lists the configured services."""
    controller = runtime.controllers.get(service)
    if controller is None:
        known = ", ".join(sorted(runtime.controllers))
        raise HTTPException(404, f"no service named {service!r}; configured services: {known}")
    return controller


def rollout_or_404(runtime: RuntimeView, rollout_id: int) -> RolloutState:
    """The rollout `rollout_id`, else a 404."""
    state = runtime.states.rollout(rollout_id)
    if state is None:
        raise HTTPException(404, f"no rollout {rollout_id}")
    return state

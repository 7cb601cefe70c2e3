"""Calls that change state: deploys, commands on a rollout, retries and HAProxy reloads. Each needs the token,
and goes through the controllers."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter
from pydantic import BaseModel, Field

from fridaymorning.api.dependencies import (
    BAD_BODY,
    FAILED,
    NO_ROLLOUT,
    NO_SERVICE,
    REFUSED,
    TOKEN_REQUIRED,
    UNAUTHORIZED,
    RolloutId,
    Runtime,
    controller_of,
    rollout_or_404,
)
from fridaymorning.controller.loop import rollout_dict

Action = Literal["promote", "abort", "approve", "pause", "resume"]

router = APIRouter(dependencies=TOKEN_REQUIRED)


class DeployRequest(BaseModel):
    version: str = Field(min_length=1, max_length=51)  # the length the version rule allows


@router.post(
    "/api/v1/services/{service}/deploy",
    status_code=202,
    responses={**BAD_BODY, **UNAUTHORIZED, **NO_SERVICE, **REFUSED, **FAILED},
)
async def deploy(runtime: Runtime, service: str, body: DeployRequest) -> dict[str, object]:
    return rollout_dict(controller_of(runtime, service).deploy(body.version))


@router.post("/api/v1/haproxy/reload", status_code=202, responses={**UNAUTHORIZED, **FAILED})
async def reload_haproxy(runtime: Runtime) -> dict[str, str]:
    """Re-render haproxy.cfg with the live servers and reload HAProxy seamlessly."""
    await runtime.reload_haproxy()
    return {"detail": "HAProxy reloaded; servers and weights kept"}


@router.post(
    "/api/v1/rollouts/{rollout_id}/retry",
    status_code=202,
    responses={**UNAUTHORIZED, **NO_ROLLOUT, **REFUSED, **FAILED},
)
async def retry(runtime: Runtime, rollout_id: RolloutId) -> dict[str, object]:
    state = rollout_or_404(runtime, rollout_id)
    return rollout_dict(controller_of(runtime, state.service).retry(rollout_id))


# Declared after /retry, which it would otherwise match.
@router.post(
    "/api/v1/rollouts/{rollout_id}/{action}",
    status_code=202,
    responses={**UNAUTHORIZED, **NO_ROLLOUT, **REFUSED, **FAILED},
)
async def act(
    runtime: Runtime, rollout_id: RolloutId, action: Action, full: bool = False
) -> dict[str, object]:
    state = rollout_or_404(runtime, rollout_id)
    command = "promote_full" if action == "promote" and full else action
    return rollout_dict(controller_of(runtime, state.service).command(rollout_id, command))

"""Reads of what `fm up` is doing: its status, the configured services, and the rollouts with their events."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query

from fridaymorning.api.dependencies import NO_ROLLOUT, RolloutId, Runtime, rollout_or_404
from fridaymorning.controller.loop import rollout_dict

router = APIRouter()

# Handlers are coroutines on purpose: they run on the controllers' event loop, where a deploy
# starts its rollout task. Their store reads are short SQLite queries.


@router.get("/api/v1/status")
async def status(runtime: Runtime) -> dict[str, Any]:
    return runtime.status()


@router.get("/api/v1/services")
async def services(runtime: Runtime) -> list[dict[str, Any]]:
    return [
        {
            "name": name,
            "frontend": controller.service.frontend,
            "strategy": controller.service.rollout.strategy,
            "stable": controller.stable_version,
            "steps": [step.model_dump() for step in controller.service.rollout.steps],
            "checks": [check.model_dump() for check in controller.service.rollout.checks],
        }
        for name, controller in runtime.controllers.items()
    ]


@router.get("/api/v1/rollouts")
async def rollouts(
    runtime: Runtime, service: str | None = None, limit: int = Query(50, ge=1, le=1000)
) -> list[dict[str, object]]:
    return [rollout_dict(state) for state in runtime.states.rollouts(service, limit)]


@router.get("/api/v1/rollouts/{rollout_id}", responses=NO_ROLLOUT)
async def rollout(runtime: Runtime, rollout_id: RolloutId) -> dict[str, object]:
    state = rollout_or_404(runtime, rollout_id)
    return {**rollout_dict(state), "events": runtime.states.events(rollout_id)}

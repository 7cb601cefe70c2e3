"""A service's traffic over a span of seconds, per version, from the metric store."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, HTTPException, Query
from fastapi.exceptions import RequestValidationError

from fridaymorning.api.dependencies import NO_SERVICE, UNAVAILABLE, Runtime, Second, controller_of
from fridaymorning.errors import FridayMorningError
from fridaymorning.sketches import merge_sketches, shown_quantiles

# The most seconds one metrics query may span.
MAX_QUERY_SPAN_S = 24 * 3600

router = APIRouter()


@router.get("/api/v1/services/{service}/metrics", responses={**NO_SERVICE, **UNAVAILABLE})
async def metrics(
    runtime: Runtime,
    service: str,
    start: Second,
    end: Second,
    version: str = Query(min_length=1, max_length=64),
) -> dict[str, Any]:
    controller_of(runtime, service)
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
        "latency_ms": shown_quantiles(latency),
        "seconds": [{"second": w.second, "requests": w.requests, "failed": w.failed} for w in windows],
    }

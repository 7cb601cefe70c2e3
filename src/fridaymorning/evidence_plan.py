"""The evidence plan of `fm validate --rps` and `fm deploy`: analysis.planning applied to a config.

`fm validate --rps N` plans every service's steps at N requests per second; `fm deploy` plans the
service's steps at the rate stable served over the last minute, as the API's metrics give it.
"""

from __future__ import annotations

import math
import time
from typing import Any

from fridaymorning.analysis.planning import EvidencePlan, Traffic, format_plan, plan_evidence
from fridaymorning.config import Config, ServiceConfig
from fridaymorning.errors import FridayMorningError

OBSERVED_WINDOW_S = 60


def service_plan(service: ServiceConfig, traffic: Traffic) -> EvidencePlan | None:
    """The plan of one service's rollout at this traffic; None for A/B (its share is the matched requests)."""
    rollout = service.rollout
    if rollout.strategy == "ab":
        return None
    if rollout.strategy == "blue_green":
        first = rollout.steps[0]
        whole = first.model_copy(update={"weight": 100})
        return plan_evidence(traffic, service.analysis, [whole], compare=False)
    return plan_evidence(traffic, service.analysis, rollout.steps, fresh_baseline=rollout.fresh_baseline)


def plan_lines(service: ServiceConfig, traffic: Traffic) -> list[str]:
    """The plan of one service as lines for a person, headed by the service's name."""
    plan = service_plan(service, traffic)
    if plan is None:
        return [f"{service.name}: A/B rollout: the canary's share is the requests it matches; no plan"]
    return [f"{service.name}: {line}" if index == 0 else line for index, line in enumerate(format_plan(plan))]


def plan_json(service: ServiceConfig, traffic: Traffic) -> dict[str, Any] | None:
    """The plan of one service as JSON: per step the seconds, requests and binding requirement."""
    plan = service_plan(service, traffic)
    if plan is None:
        return None

    def number(value: float) -> float | None:
        return round(value, 1) if math.isfinite(value) else None

    return {
        "rps": traffic.rps,
        "promoted_after_s": number(plan.total_seconds),
        "steps": [
            {
                "step": step.index,
                "weight": step.weight,
                "seconds": number(step.seconds),
                "max_duration_s": step.max_duration_s,
                "step_requests": number(step.step_requests),
                "total_requests": number(step.total_requests),
                "binding": step.binding.name,
                "fits": step.fits,
            }
            for step in plan.steps
        ],
        "warnings": plan.warnings,
    }


def traffic_of_metrics(metrics: dict[str, Any], seconds: float) -> Traffic | None:
    """The traffic in an answer of the API's metrics endpoint over `seconds`; None without requests."""
    requests, failed = int(metrics.get("requests") or 0), int(metrics.get("failed") or 0)
    if requests <= 0 or seconds <= 0:
        return None
    latency = metrics.get("latency_ms") or {}
    p50, p99 = latency.get("p50"), latency.get("p99")
    shape = {"p50_ms": float(p50), "p99_ms": float(p99)} if p50 and p99 and p99 > p50 else {}
    return Traffic(rps=requests / seconds, error_rate=min(failed / requests, 1.0), **shape)


def observed_traffic(client: Any, service: ServiceConfig, now: float | None = None) -> Traffic | None:
    """The traffic stable served over the last minute, from the API's metrics; None without any."""
    end = math.floor(time.time() if now is None else now)
    try:
        metrics = client.get(
            f"/services/{service.name}/metrics",
            start=end - OBSERVED_WINDOW_S,
            end=end,
            version=service.stable,
        )
    except FridayMorningError:  # the plan is advice: without metrics it is skipped
        return None
    return traffic_of_metrics(metrics, OBSERVED_WINDOW_S) if isinstance(metrics, dict) else None


def observed_plan_lines(client: Any, config: Config, name: str) -> list[str]:
    """The plan of service `name` at the traffic of the last minute; no lines when the API has none."""
    service = config.service(name)
    traffic = observed_traffic(client, service)
    if traffic is None:
        return []
    return plan_lines(service, traffic)


def validate_plans(config: Config, rps: float) -> tuple[list[str], dict[str, Any]]:
    """Every service's plan at `rps`, as lines and as JSON (by service name)."""
    traffic = Traffic(rps=rps)
    lines = [line for service in config.services for line in plan_lines(service, traffic)]
    document = {service.name: plan_json(service, traffic) for service in config.services}
    return lines, document

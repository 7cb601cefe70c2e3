"""`fm validate --rps` and the plan `fm deploy` prints: analysis.planning applied to a config."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import fridaymorning
from fridaymorning.analysis.planning import DEFAULT_P50_MS, Traffic
from fridaymorning.cli import app
from fridaymorning.config import load_config
from fridaymorning.evidence_plan import plan_lines, service_plan, traffic_of_metrics, validate_plans

EXAMPLE = Path(fridaymorning.__file__).with_name("example.yaml")


def test_validate_with_rps_prints_the_plan_and_warns() -> None:
    """`fm validate FILE --rps 100` plans the example's steps in time; at 20 req/s its first step warns."""
    result = CliRunner().invoke(app, ["validate", str(EXAMPLE), "--rps", "100"], terminal_width=400)
    assert result.exit_code == 0, result.output
    assert "evidence plan at 100 req/s" in result.output
    assert "step 1: 10%" in result.output and "warning" not in result.output
    result = CliRunner().invoke(app, ["validate", str(EXAMPLE), "--rps", "20"], terminal_width=400)
    assert result.exit_code == 0, result.output
    assert "warning: step 1" in result.output and "max_duration_s" in result.output


def test_validate_with_rps_as_json() -> None:
    """With --json the plan is in `evidence_plans`, by service, with each step's binding requirement."""
    result = CliRunner().invoke(app, ["validate", str(EXAMPLE), "--rps", "5000", "--json"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.output)
    plan = document["evidence_plans"]["web"]
    assert plan["rps"] == 5000 and plan["warnings"] == []
    assert [step["step"] for step in plan["steps"]] == [1, 2, 3]
    assert all(step["fits"] for step in plan["steps"]) and plan["promoted_after_s"] > 0


def test_validate_without_rps_prints_no_plan() -> None:
    """Without --rps, `fm validate` says only whether the file is valid."""
    result = CliRunner().invoke(app, ["validate", str(EXAMPLE), "--json"])
    assert result.exit_code == 0 and "evidence_plans" not in json.loads(result.output)


def test_strategies_are_planned_as_they_judge() -> None:
    """Blue/green plans one whole-traffic step on the SLOs alone; A/B has no plan (its share is unknown)."""
    config = load_config(EXAMPLE)
    service = config.services[0]
    blue_green = service.model_copy(
        update={"rollout": service.rollout.model_copy(update={"strategy": "blue_green"})}
    )
    plan = service_plan(blue_green, Traffic(100))
    assert plan is not None and not plan.compare and [step.weight for step in plan.steps] == [100]
    ab = service.model_copy(update={"rollout": service.rollout.model_copy(update={"strategy": "ab"})})
    assert service_plan(ab, Traffic(100)) is None
    assert "no plan" in plan_lines(ab, Traffic(100))[0]
    lines, document = validate_plans(config, 100)
    assert lines[0].startswith("web: evidence plan") and set(document) == {"web"}


@pytest.mark.parametrize(
    ("metrics", "expected"),
    [
        (
            {"requests": 6000, "failed": 6, "latency_ms": {"p50": 10.0, "p90": 20.0, "p99": 50.0}},
            Traffic(rps=100, error_rate=0.001, p50_ms=10.0, p99_ms=50.0),
        ),
        (
            {"requests": 600, "failed": 0, "latency_ms": {"p50": None, "p99": None}},
            Traffic(rps=10, error_rate=0.0),
        ),
        ({"requests": 0, "failed": 0, "latency_ms": {}}, None),
    ],
)
def test_traffic_of_metrics(metrics: dict[str, Any], expected: Traffic | None) -> None:
    """The API's last minute of stable becomes the planned traffic; without latencies the default shape."""
    traffic = traffic_of_metrics(metrics, 60)
    assert traffic == expected
    if traffic is not None and metrics["latency_ms"].get("p50") is None:
        assert traffic.p50_ms == DEFAULT_P50_MS

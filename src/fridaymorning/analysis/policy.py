"""The judge's policy, as the `analysis:` section of a service in fridaymorning.yaml."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class AnalysisConfig(BaseModel):
    """The judge's policy: SLOs on the canary, and tolerances against the baseline."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    min_requests: int = Field(default=100, ge=1, description="canary requests needed before any pass")
    max_error_rate: float = Field(default=0.01, gt=0, lt=1, description="SLO: canary failed/requests")
    max_p99_ms: float = Field(default=1000.0, gt=0, description="SLO: canary p99 of Tr, in ms")
    error_rate_tolerance: float = Field(
        default=0.005, ge=0, lt=1, description="allowed canary error rate above the baseline's"
    )
    latency_tolerance: float = Field(
        default=1.25, ge=1, description="allowed ratio of canary to baseline p50 and p99"
    )
    confidence: float = Field(default=0.99, gt=0.5, lt=1)


# The name the judge uses for its policy.
Policy = AnalysisConfig

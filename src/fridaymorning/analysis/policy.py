"""The judge's policy, as the `analysis:` section of a service in fridaymorning.yaml.

docs/statistics.md explains each field and why its default is what it is.
"""

from __future__ import annotations

import math

from pydantic import BaseModel, ConfigDict, Field, field_validator


class AnalysisConfig(BaseModel):
    """The judge's policy: the false-rollback budget, SLOs on the canary, tolerances against the baseline."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    alpha: float = Field(
        default=0.01,
        gt=0,
        lt=0.5,
        description="chance of rolling back a canary that is no worse than the baseline and meets its SLOs, "
        "however often the judge looks; also the error rate of each promotion bound",
    )
    min_requests: int = Field(default=1000, ge=1, description="canary requests needed before any pass")
    max_error_rate: float = Field(default=0.01, gt=0, lt=1, description="SLO: canary failed/requests")
    max_p99_ms: float = Field(default=1000.0, gt=0, description="SLO: canary p99 of Tr, in ms")
    error_rate_tolerance: float = Field(
        default=0.005, ge=0, lt=1, description="to pass: canary error rate at most the baseline's plus this"
    )
    latency_tolerance: float = Field(
        default=1.5,
        ge=1,
        description="to pass: canary quantiles shown to be at most this times the baseline's (a canary "
        "surely slower than the baseline is still rolled back: latency_fail_ratio)",
    )
    latency_offset_ms: float = Field(
        default=5.0,
        ge=1,
        description="to pass: added to both versions' quantiles before their ratio is compared with "
        "latency_tolerance, so that a canary at 2 ms beside a baseline at 1 ms is not held for a millisecond "
        "(HAProxy logs whole milliseconds; a busy host adds a few more)",
    )
    latency_fail_ratio: float = Field(
        default=1.0,
        ge=1,
        description="to fail: canary requests slower than this times the baseline's quantile plus "
        "latency_fail_floor_ms, more often than the baseline's requests are slower than its quantile",
    )
    latency_fail_floor_ms: float = Field(
        default=1.0,
        ge=1,
        description="to fail: the margin in ms added to the scaled baseline quantile; at least HAProxy's "
        "1 ms resolution of Tr, so that 1 ms instead of 0 ms is never a regression",
    )
    error_fail_ratio: float = Field(
        default=1.0,
        ge=1,
        description="to fail: the canary's error rate is surely above this times the baseline's plus "
        "error_fail_margin",
    )
    error_fail_margin: float = Field(
        default=0.001,
        ge=0,
        lt=1,
        description="to fail: the absolute error-rate difference that matters (0.001: 0.1 percentage point)",
    )
    slo_window_s: int = Field(
        default=60,
        ge=2,
        le=86400,
        description="SLOs fail on the last this many seconds, where the canary breaches and the baseline "
        "surely does not",
    )
    warmup_s: int = Field(
        default=30,
        ge=0,
        le=3600,
        description="the canary's first seconds of traffic are not judged on latency (errors still count); "
        "the warm-up ends earlier once the canary's median has matched the baseline's for 3 seconds",
    )
    quantiles: tuple[float, ...] = Field(
        default=(0.5, 0.9, 0.99), min_length=1, description="latency quantiles compared with the baseline"
    )

    @field_validator("quantiles")
    @classmethod
    def quantiles_in_range(cls, quantiles: tuple[float, ...]) -> tuple[float, ...]:
        if any(not 0 < q < 1 for q in quantiles) or list(quantiles) != sorted(set(quantiles)):
            raise ValueError(f"quantiles must increase strictly within (0, 1), got {list(quantiles)}")
        return quantiles

    def gates(self, rate: float) -> bool:
        """Whether min_requests can ever show, at 1 - alpha, that a rate is below `rate`.

        Even with no events at all, n requests only show a rate below r when (1 - r)^n ≤ alpha, that is
        n·r ≳ ln(1/alpha). A bound that min_requests cannot reach is not required for a pass: the check
        then passes on its point estimate, and says so. Its failing side always applies.
        """
        return self.min_requests * rate >= math.log(1.0 / self.alpha)


# The name the judge uses for its policy.
Policy = AnalysisConfig

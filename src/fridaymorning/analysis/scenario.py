"""Scenarios for `fm simulate`: traffic, error rates and latencies of a baseline and a canary over time.

A scenario file::

    name: five-percent-errors
    duration_s: 900          # virtual seconds; the run ends earlier if the rollout finishes
    rps: 1000                # total req/s, or a list of [at_s, rps] points (piecewise constant)
    seed: 1                  # run i uses seed + i
    baseline:
      error_rate: 0.001
      latency_ms: {p50: 40, p99: 180}   # lognormal fitted to these two quantiles
    canary:
      error_rate: 0.05
      latency_ms: {p50: 40, p99: 180}
    changes:                 # optional, in time order
      - {at_s: 300, version: canary, error_rate: 0.02, latency_ms: {p50: 60, p99: 300}}

Optional keys: `description`, `startup_s` (seconds from the rollout's creation to the canary's first
traffic, default 1), `lateness_s` (how long after its end a second reaches the judge, default 0).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from fridaymorning.errors import ConfigError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Latency(_Strict):
    """Server response time (Tr) as the lognormal with this median and 99th percentile, in ms."""

    p50: float = Field(gt=0)
    p99: float = Field(gt=0)

    @model_validator(mode="after")
    def p99_above_p50(self) -> Latency:
        if self.p99 <= self.p50:
            raise ValueError(f"p99 ({self.p99}) must be above p50 ({self.p50})")
        return self


class Behaviour(_Strict):
    """How one version answers: the chance a request fails, and its latency."""

    error_rate: float = Field(ge=0, le=1)
    latency_ms: Latency


class Change(_Strict):
    """From `at_s` on, a version behaves differently; omitted fields keep their value."""

    at_s: float = Field(ge=0)
    version: Literal["canary", "baseline"]
    error_rate: float | None = Field(default=None, ge=0, le=1)
    latency_ms: Latency | None = None


class Scenario(_Strict):
    """A scenario file, validated."""

    name: str = Field(min_length=1)
    description: str = ""
    duration_s: int = Field(gt=0, le=7 * 86400)
    rps: float | list[tuple[float, float]]
    seed: int = 0
    baseline: Behaviour
    canary: Behaviour
    changes: list[Change] = Field(default_factory=list)
    startup_s: float = Field(default=1.0, ge=0)
    lateness_s: int = Field(default=0, ge=0, le=60)

    @field_validator("rps")
    @classmethod
    def rates_are_valid(cls, rps: float | list[tuple[float, float]]) -> float | list[tuple[float, float]]:
        if isinstance(rps, list):
            if not rps:
                raise ValueError("give a number, or a non-empty list of [at_s, rps] points")
            times = [at for at, _ in rps]
            if times != sorted(times) or times[0] != 0:
                raise ValueError(f"the [at_s, rps] points must start at 0 and be in time order, got {times}")
            if any(rate < 0 for _, rate in rps):
                raise ValueError("rps must not be negative")
        elif rps < 0:
            raise ValueError("rps must not be negative")
        return rps

    @field_validator("changes")
    @classmethod
    def changes_in_order(cls, changes: list[Change]) -> list[Change]:
        times = [change.at_s for change in changes]
        if times != sorted(times):
            raise ValueError(f"changes must be in time order, got at_s {times}")
        return changes

    def rps_at(self, second: int) -> float:
        """Total requests per second during `second`."""
        if not isinstance(self.rps, list):
            return float(self.rps)
        current = 0.0
        for at, rate in self.rps:
            if at <= second:
                current = rate
        return current

    def behaviour_at(self, version: Literal["canary", "baseline"], second: int) -> Behaviour:
        """How `version` behaves during `second`, after the changes made so far."""
        behaviour = self.canary if version == "canary" else self.baseline
        for change in self.changes:
            if change.version == version and change.at_s <= second:
                behaviour = Behaviour(
                    error_rate=behaviour.error_rate if change.error_rate is None else change.error_rate,
                    latency_ms=change.latency_ms or behaviour.latency_ms,
                )
        return behaviour

    def change_seconds(self) -> list[int]:
        """Seconds at which something changes (rates or behaviours), in order."""
        seconds = {int(-(-change.at_s // 1)) for change in self.changes}
        if isinstance(self.rps, list):
            seconds |= {int(-(-at // 1)) for at, _ in self.rps}
        return sorted(seconds)


def parse_scenario(text: str, filename: str) -> Scenario:
    """Validate scenario text. Raises ConfigError naming `filename`, the line and the field."""
    from fridaymorning.config import dotted, key_lines, line_of

    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as error:
        line = error.problem_mark.line + 1 if error.problem_mark else None
        raise ConfigError(f"YAML syntax error: {error.problem}", path=filename, line=line) from error
    if not isinstance(data, dict):
        raise ConfigError("a scenario must be a mapping of settings", path=filename, line=1)
    try:
        return Scenario.model_validate(data)
    except ValidationError as error:
        first = error.errors()[0]
        location = tuple(first["loc"])
        raise ConfigError(
            f"{dotted(location)}: {first['msg']}", path=filename, line=line_of(location, key_lines(node))
        ) from error


def load_scenario(path: str | Path) -> Scenario:
    """Read and validate a scenario file. Raises ConfigError naming the file, line and field."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError(f"cannot read the scenario: {error.strerror}", path=str(file)) from error
    return parse_scenario(text, str(file))

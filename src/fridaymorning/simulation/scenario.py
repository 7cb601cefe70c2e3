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

Optional keys, each defaulting to what production does:

- `description`; `startup_s`: seconds from the rollout's creation to the canary's first traffic (default 1).
- `lateness_s`: the collector's lateness (default 1.0, `collector.lateness_s`'s default). As in production,
  a second reaches the judge `lateness_s` + 1 s (the collector's flush) after its end.
- `latency_resolution_ms`: HAProxy logs Tr in whole milliseconds, so simulated latencies are floored to
  this resolution before they are binned (default 1; 0 keeps them continuous).
- `timeout_s`: HAProxy's `timeout server` (default 30, as fridaymorning renders it). A request that takes
  this long fails with no latency, and is logged (so reaches the judge) `timeout_s` after it began. A
  version's `timeout_rate` (default 0) is the share of its requests that never answer at all.
- `incidents`: `[{at_s, duration_s, error_rate, latency_factor}]`, something shared (a database, the
  network) that fails `error_rate` of the requests of BOTH versions and multiplies their latencies.
- per version, `cold_start: {duration_s, latency_factor}`: latencies multiplied by `latency_factor` for
  the first `duration_s` seconds of the version's traffic (the canary's begins at `startup_s`, the
  baseline's at 0).
- `clients: {count, sticky, groups: [{share, error_rate, latency_factor}]}`: `count` clients send the
  traffic evenly; a group of `share` times `count` of them fails `error_rate` more of its requests and is
  `latency_factor` slower on whichever version serves it (the remaining clients are plain). With
  `sticky: true` a client stays on the version it was sent to when first seen (chosen by the canary
  weight of that moment), as with cookie affinity or A/B routing.

Failure chances combine as independent causes: a request fails unless its version, its client group and
every incident in force all let it through. Latency factors multiply.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Final, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from fridaymorning.errors import ConfigError

# Production's defaults the simulator reproduces (a unit test keeps them equal to config and router).
COLLECTOR_LATENESS_S: Final[float] = 1.0  # config.CollectorConfig.lateness_s
FLUSH_INTERVAL_S: Final[float] = 1.0  # the collector writes closed seconds once a second (runtime.py)
HAPROXY_TIMEOUT_SERVER_S: Final[float] = 30.0  # `timeout server` of router._render.render_defaults
HAPROXY_TIMER_RESOLUTION_MS: Final[float] = 1.0  # HAProxy's timers (Tr) are whole milliseconds

Version = Literal["canary", "baseline"]


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


class ColdStart(_Strict):
    """A new version's first seconds: its latencies are `latency_factor` times longer for `duration_s`."""

    duration_s: float = Field(gt=0)
    latency_factor: float = Field(gt=0)


class Behaviour(_Strict):
    """How one version answers: the chance a request fails, its latency, and its warm-up if any."""

    error_rate: float = Field(ge=0, le=1)
    latency_ms: Latency
    timeout_rate: float = Field(default=0.0, ge=0, le=1)
    cold_start: ColdStart | None = None


class Change(_Strict):
    """From `at_s` on, a version behaves differently; omitted fields keep their value."""

    at_s: float = Field(ge=0)
    version: Version
    error_rate: float | None = Field(default=None, ge=0, le=1)
    latency_ms: Latency | None = None
    timeout_rate: float | None = Field(default=None, ge=0, le=1)


class Incident(_Strict):
    """Something both versions depend on misbehaves from `at_s` for `duration_s` seconds."""

    at_s: float = Field(ge=0)
    duration_s: float = Field(gt=0)
    error_rate: float = Field(default=0.0, ge=0, le=1)
    latency_factor: float = Field(default=1.0, gt=0)


class ClientGroup(_Strict):
    """A share of the clients whose requests fail more often, or are slower, on either version."""

    share: float = Field(gt=0, le=1)
    error_rate: float = Field(default=0.0, ge=0, le=1)
    latency_factor: float = Field(default=1.0, gt=0)


class Clients(_Strict):
    """Who sends the traffic: `count` clients at equal rates, some of them in groups that differ."""

    count: int = Field(ge=1, le=10_000_000)
    sticky: bool = False
    groups: list[ClientGroup] = Field(default_factory=list)

    @model_validator(mode="after")
    def groups_fit(self) -> Clients:
        total = sum(group.share for group in self.groups)
        if total > 1.0 + 1e-9:
            raise ValueError(f"the groups' shares add up to {total:g}, more than 1")
        for position, group in enumerate(self.groups):
            if round(group.share * self.count) < 1:
                raise ValueError(
                    f"groups[{position}]: share {group.share:g} of {self.count} clients is no client"
                )
        if sum(self.group_sizes()[1:]) > self.count:
            raise ValueError("the groups' shares round to more clients than count")
        return self

    def group_sizes(self) -> list[int]:
        """Clients per group: first the plain clients (not in any group), then each group in order."""
        sizes = [round(group.share * self.count) for group in self.groups]
        return [self.count - sum(sizes), *sizes]


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
    lateness_s: float = Field(default=COLLECTOR_LATENESS_S, ge=0, le=30)
    latency_resolution_ms: float = Field(default=HAPROXY_TIMER_RESOLUTION_MS, ge=0, le=1000)
    timeout_s: float = Field(default=HAPROXY_TIMEOUT_SERVER_S, gt=0, le=3600)
    incidents: list[Incident] = Field(default_factory=list)
    clients: Clients | None = None

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

    @property
    def data_lag_s(self) -> float:
        """How long after its end a second reaches the judge: the lateness, then the next flush."""
        return self.lateness_s + FLUSH_INTERVAL_S

    @property
    def canary_first_second(self) -> int:
        """The first second in which the canary takes traffic."""
        return math.ceil(self.startup_s)

    def rps_at(self, second: int) -> float:
        """Total requests per second during `second`."""
        if not isinstance(self.rps, list):
            return float(self.rps)
        current = 0.0
        for at, rate in self.rps:
            if at <= second:
                current = rate
        return current

    def behaviour_at(self, version: Version, second: int) -> Behaviour:
        """How `version` behaves during `second`, after the changes made so far (cold start aside)."""
        behaviour = self.canary if version == "canary" else self.baseline
        for change in self.changes:
            if change.version == version and change.at_s <= second:
                behaviour = Behaviour(
                    error_rate=behaviour.error_rate if change.error_rate is None else change.error_rate,
                    latency_ms=change.latency_ms or behaviour.latency_ms,
                    timeout_rate=behaviour.timeout_rate
                    if change.timeout_rate is None
                    else change.timeout_rate,
                    cold_start=behaviour.cold_start,
                )
        return behaviour

    def cold_factor(self, version: Version, second: int) -> float:
        """The latency factor of `version`'s cold start during `second` (1 once it is warm)."""
        cold = (self.canary if version == "canary" else self.baseline).cold_start
        if cold is None:
            return 1.0
        first = self.canary_first_second if version == "canary" else 0
        return cold.latency_factor if first <= second < first + math.ceil(cold.duration_s) else 1.0

    def incident_at(self, second: int) -> tuple[float, float]:
        """(error rate, latency factor) the incidents in force during `second` add to both versions."""
        passed, factor = 1.0, 1.0
        for incident in self.incidents:
            if _ceil(incident.at_s) <= second < _ceil(incident.at_s + incident.duration_s):
                passed *= 1.0 - incident.error_rate
                factor *= incident.latency_factor
        return 1.0 - passed, factor

    def change_seconds(self) -> list[int]:
        """Seconds at which something changes (rates, behaviours, incidents, cold starts), in order."""
        seconds = {_ceil(change.at_s) for change in self.changes}
        if isinstance(self.rps, list):
            seconds |= {_ceil(at) for at, _ in self.rps}
        for incident in self.incidents:
            seconds |= {_ceil(incident.at_s), _ceil(incident.at_s + incident.duration_s)}
        for version, first in (("canary", self.canary_first_second), ("baseline", 0)):
            cold = (self.canary if version == "canary" else self.baseline).cold_start
            if cold is not None:
                seconds |= {first, first + math.ceil(cold.duration_s)}
        return sorted(seconds)


def _ceil(value: float) -> int:
    """The first whole second at or after `value`."""
    return math.ceil(value)


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
        # An unknown key (a typo) explains the other errors it causes, such as a required key missing.
        errors = error.errors()
        first = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
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

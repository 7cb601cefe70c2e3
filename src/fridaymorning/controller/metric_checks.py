"""Custom checks of a service: their queries run in the background, their outcomes join the verdict.

Each judge interval, `add_checks` starts the queries that are due (at most one in flight per check,
each with its timeout) and adds every check's outcome, decided by the pure `analysis.custom.assess`,
to the judge's verdict. The judge's interval never waits for a provider: a slow or dead server only
delays that check's next measurement, and its timeout is an error measurement. Measurements belong to
one rollout; after a restart of `fm up`, a check holds until it is measured again.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Mapping, Sequence

from fridaymorning.analysis.custom import MetricMeasurement, Threshold, assess
from fridaymorning.analysis.verdict import Check, Verdict, combine
from fridaymorning.config import MetricCheckConfig
from fridaymorning.controller.phases import RolloutState
from fridaymorning.providers import MetricProvider, QueryWindow
from fridaymorning.query_template import render

log = logging.getLogger(__name__)


def query_values(service: str, rollout: RolloutState, window_s: int) -> dict[str, str]:
    """What a check's query placeholders stand for in `rollout`."""
    return {
        "service": service,
        "version": rollout.version,
        "baseline": rollout.baseline,
        "window": f"{window_s}s",
    }


def query_window(now: float, data_lag_s: float, window_s: int) -> QueryWindow:
    """The last `window_s` closed seconds before `now`, as the judge sees them (the collector's lag)."""
    end = math.floor(now - data_lag_s)
    return QueryWindow(end - window_s, end)


def with_checks(verdict: Verdict, extra: Sequence[Check]) -> Verdict:
    """`verdict` with the custom checks added and its phase decided again; itself when there are none."""
    if not extra:
        return verdict
    return combine((*verdict.checks, *extra))


class MetricChecks:
    """The custom checks of one service: their providers, and the measurements of the current rollout."""

    def __init__(
        self,
        service: str,
        checks: Sequence[MetricCheckConfig],
        providers: Mapping[str, MetricProvider],
        data_lag_s: float = 0.0,
    ) -> None:
        self.service = service
        self.checks = list(checks)
        self.providers = providers
        self.data_lag_s = data_lag_s
        self.rollout: int | None = None
        self.measurements: dict[str, list[MetricMeasurement]] = {}
        self._last_started: dict[str, float] = {}
        self._in_flight: dict[str, asyncio.Task[None]] = {}

    def add_checks(self, verdict: Verdict, rollout: RolloutState, now: float) -> Verdict:
        """Start the due queries, then add every check's outcome so far to `verdict`."""
        if not self.checks:
            return verdict
        if rollout.id != self.rollout:
            self._begin(rollout.id)
        for check in self.checks:
            if self._due(check, now):
                self._start(check, rollout, now)
        return with_checks(verdict, self.outcomes())

    def outcomes(self) -> tuple[Check, ...]:
        """Each check's outcome from the measurements so far (pure: analysis.custom.assess)."""
        return tuple(
            assess(
                check.name,
                self.measurements.get(check.name, []),
                Threshold(check.fail_above, check.fail_below),
                check.consecutive_error_limit,
                check.provider,
            )
            for check in self.checks
        )

    def _begin(self, rollout_id: int) -> None:
        self._cancel()
        self.rollout = rollout_id
        self.measurements = {check.name: [] for check in self.checks}
        self._last_started = {}

    def _due(self, check: MetricCheckConfig, now: float) -> bool:
        if check.name in self._in_flight:
            return False
        last = self._last_started.get(check.name)
        return last is None or now - last >= check.interval_s

    def _start(self, check: MetricCheckConfig, rollout: RolloutState, now: float) -> None:
        self._last_started[check.name] = now
        task = asyncio.create_task(self._measure(check, rollout, now), name=f"check-{check.name}")
        self._in_flight[check.name] = task
        task.add_done_callback(lambda done: self._finished(check.name, done))

    def _finished(self, name: str, task: asyncio.Task[None]) -> None:
        if self._in_flight.get(name) is task:
            del self._in_flight[name]

    async def _measure(self, check: MetricCheckConfig, rollout: RolloutState, now: float) -> None:
        """Run the check's query once and record a number or an error; never raises."""
        try:
            query = render(check.query, query_values(self.service, rollout, check.window_s))
            window = query_window(now, self.data_lag_s, check.window_s)
            provider = self.providers[check.provider]
            value = await asyncio.wait_for(provider.run(query, window), check.timeout_s)
            measurement = MetricMeasurement(now, value=value)
        except TimeoutError:
            measurement = MetricMeasurement(now, error=f"no answer within {check.timeout_s:g} s")
        except asyncio.CancelledError:
            raise
        except Exception as error:  # every failure is a measurement with phase error, never a crash
            measurement = MetricMeasurement(now, error=str(error) or type(error).__name__)
        if rollout.id == self.rollout:
            self.measurements.setdefault(check.name, []).append(measurement)
            if measurement.error:
                log.warning("check %s of rollout %s: %s", check.name, rollout.id, measurement.error)

    def _cancel(self) -> None:
        for task in self._in_flight.values():
            task.cancel()
        self._in_flight = {}

    async def close(self) -> None:
        """Cancel the queries in flight and close every provider."""
        tasks = list(self._in_flight.values())
        self._cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for provider in self.providers.values():
            try:
                await provider.aclose()
            except Exception:
                log.exception("closing a metric provider")

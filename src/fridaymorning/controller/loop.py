"""The controller's loop for one service: measure, judge, decide, act, persist.

Decisions come from the pure functions of analysis.judge and controller.strategy; everything here is
the I/O around them. Errors are data: a failing store gives an `error` verdict, never a pass.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fridaymorning.analysis.judge import judge
from fridaymorning.analysis.verdict import Check, Verdict, VerdictPhase
from fridaymorning.config import ServiceConfig, check_version
from fridaymorning.controller.phases import RolloutPhase, RolloutState
from fridaymorning.controller.state import StateStore
from fridaymorning.controller.strategy import (
    Action,
    ActionKind,
    ManualCommand,
    Plan,
    Step,
    manual_action,
    next_action,
)
from fridaymorning.errors import FridayMorningError, RolloutError
from fridaymorning.models import Instance, ServerStatus
from fridaymorning.platform.base import Platform
from fridaymorning.router.base import Router
from fridaymorning.router.haproxy import split_weights
from fridaymorning.store.base import MetricStore

log = logging.getLogger(__name__)

# How long canary servers may take to pass HAProxy's health checks once added.
SERVERS_UP_TIMEOUT_S = 15.0


def plan_of(service: ServiceConfig) -> Plan:
    """The pure strategy's view of a service's rollout config."""
    steps = tuple(
        Step(step.weight, step.min_duration_s, step.max_duration_s, step.min_requests)
        for step in service.rollout.steps
    )
    return Plan(steps, service.rollout.on_insufficient_evidence)


@dataclass(frozen=True, slots=True)
class Measurement:
    """A verdict with what it was judged on: the seconds [start, end) and the step's canary requests."""

    verdict: Verdict
    step_requests: int
    start: int
    end: int

    def evidence(self) -> dict[str, Any]:
        """The verdict as stored with each event, for `fm explain` and `fm replay`."""
        return {
            **self.verdict.to_dict(),
            "window": {"start": self.start, "end": self.end},
            "step_requests": self.step_requests,
        }


def judged_seconds(state: RolloutState, now: float, data_lag_s: float) -> tuple[int, int]:
    """The closed seconds [start, end) a judgement at `now` looks at: from the rollout's start on."""
    return math.floor(state.started_at) + 1, math.floor(now - data_lag_s)


def error_verdict(message: str) -> Verdict:
    """A verdict for evidence that could not be gathered: never a pass."""
    check = Check("metrics", VerdictPhase.ERROR, math.nan, math.nan, math.nan, 0, message)
    return Verdict(VerdictPhase.ERROR, (check,), f"metrics: {message}")


class ServiceController:
    """Runs the stable version of one service and walks its rollouts."""

    def __init__(
        self,
        service: ServiceConfig,
        router: Router,
        platform: Platform,
        metrics: MetricStore,
        states: StateStore,
        clock: Callable[[], float] = time.time,
        data_lag_s: float = 0.0,
    ) -> None:
        self.service = service
        self.router = router
        self.platform = platform
        self.metrics = metrics
        self.states = states
        self.clock = clock
        # How long after a second ends the collector has written it: the judge looks no closer to now.
        self.data_lag_s = data_lag_s
        self.plan = plan_of(service)
        self.stable_version = states.stable_version(service.name, service.stable)
        self.stable_instances: list[Instance] = []
        self.canary_instances: list[Instance] = []
        self.last_verdict: Verdict | None = None
        self._commands: asyncio.Queue[ManualCommand] = asyncio.Queue()
        self._task: asyncio.Task[RolloutState] | None = None

    @property
    def backend(self) -> str:
        return self.service.name

    # --- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        """Close rollouts left by a previous run, then start the stable version and route to it."""
        self._close_orphaned_rollouts()
        await self.router.ensure_backend(self.backend)
        self.stable_instances = await self.platform.start(self.stable_version, self.service.platform.replicas)
        for instance in self.stable_instances:
            await self.router.add_server(self.backend, instance.server, instance.host, instance.port, 0)
        await self._apply_weight(0)
        await self._wait_servers_up(self.stable_instances)

    async def stop(self) -> None:
        """Stop the rollout task and every instance; the rollout's last phase stays recorded."""
        if self._task is not None and not self._task.done():
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self.platform.stop(self.canary_instances + self.stable_instances)
        self.canary_instances, self.stable_instances = [], []

    def _close_orphaned_rollouts(self) -> None:
        # The skeleton does not adopt instances across restarts: a rollout left active by a previous
        # run lost its canary when that run stopped, so record it as aborted.
        active = self.states.active_rollout(self.service.name)
        if active is not None:
            self.states.transition(
                active,
                self.clock(),
                "aborted",
                "the controller restarted; the canary instances of the previous run were stopped",
                phase=RolloutPhase.ABORTED,
                canary_weight=0,
                finished_at=self.clock(),
            )

    # --- requests from people --------------------------------------------------------------------

    def deploy(self, version: str) -> RolloutState:
        """Start a rollout of `version`. Refused with a reason while another rollout runs."""
        try:
            check_version(version)
        except ValueError as error:
            raise RolloutError(str(error)) from error
        if version == self.stable_version:
            raise RolloutError(f"{version} is already the stable version of {self.service.name}")
        state = self.states.create_rollout(self.service.name, version, self.stable_version, self.clock())
        self._commands = asyncio.Queue()
        self._task = asyncio.create_task(self._run(state), name=f"rollout-{state.id}")
        return state

    def command(self, rollout_id: int, command: ManualCommand) -> RolloutState:
        """Queue a person's command for the running rollout, or refuse it with a reason."""
        state = self.states.rollout(rollout_id)
        if state is None or state.service != self.service.name:
            raise RolloutError(f"no rollout {rollout_id} for service {self.service.name}")
        manual_action(state, command)  # raises RolloutError when the phase does not allow it
        self._commands.put_nowait(command)
        return state

    async def wait(self) -> RolloutState | None:
        """Wait for the running rollout to finish; its final state."""
        return await self._task if self._task is not None else None

    # --- the rollout -----------------------------------------------------------------------------

    async def _run(self, state: RolloutState) -> RolloutState:
        try:
            state = await self._start_canary(state)
            while state.active:
                state = await self._tick(state)
        except asyncio.CancelledError:
            raise
        except Exception as error:  # any failure during a rollout removes the canary
            log.exception("rollout %s failed", state.id)
            if state.active:
                state = await self._finish_canary(
                    state, RolloutPhase.ROLLED_BACK, f"controller error: {error}"
                )
        return state

    async def _start_canary(self, state: RolloutState) -> RolloutState:
        try:
            self.canary_instances = await self.platform.start(state.version, self.service.platform.replicas)
            for instance in self.canary_instances:
                await self.router.add_server(self.backend, instance.server, instance.host, instance.port, 0)
            await self._wait_servers_up(self.canary_instances)
        except FridayMorningError as error:
            return await self._finish_canary(
                state, RolloutPhase.ROLLED_BACK, f"canary did not start: {error}"
            )
        first = self.plan.steps[0]
        await self._apply_weight(first.weight)
        now = self.clock()
        return self.states.transition(
            state,
            now,
            "step",
            f"canary healthy; step 1 at {first.weight}%",
            phase=RolloutPhase.PROGRESSING,
            step_index=0,
            canary_weight=first.weight,
            step_started_at=now,
        )

    async def _tick(self, state: RolloutState) -> RolloutState:
        """One judge interval: wait, take commands, measure, decide, act."""
        command = await self._next_command(self.service.rollout.judge_interval_s)
        if command is not None:
            try:
                return await self._act(state, manual_action(state, command), None)
            except RolloutError:
                return state  # the phase moved on since the command was accepted
        if state.phase is not RolloutPhase.PROGRESSING:
            return state  # held: only a person moves it on
        measurement = await self._measure(state)
        verdict = measurement.verdict
        action = next_action(state, verdict, self.clock(), self.plan, measurement.step_requests)
        if self.last_verdict is None or verdict.phase != self.last_verdict.phase:
            self.states.record(state, self.clock(), "verdict", verdict.reason, measurement.evidence())
        self.last_verdict = verdict
        return await self._act(state, action, measurement)

    async def _next_command(self, timeout: float) -> ManualCommand | None:
        try:
            return await asyncio.wait_for(self._commands.get(), timeout)
        except TimeoutError:
            return None

    async def _measure(self, state: RolloutState) -> Measurement:
        """Judge every closed second since the rollout began, and count the current step's canary requests.

        Only seconds the collector has already written are judged, so `fm replay` later sees exactly
        the same data. A dead canary server or a failing store is evidence too: fail, or error.
        """
        start, end = judged_seconds(state, self.clock(), self.data_lag_s)
        down = await self._canary_servers_down()
        if down:
            check = Check("canary_health", VerdictPhase.FAIL, len(down), len(down), 0, len(down), "")
            verdict = Verdict(
                VerdictPhase.FAIL, (check,), f"canary servers down in HAProxy: {', '.join(down)}"
            )
            return Measurement(verdict, 0, start, end)
        try:
            canary = await asyncio.to_thread(self.metrics.query, self.backend, state.version, start, end)
            baseline = await asyncio.to_thread(self.metrics.query, self.backend, state.baseline, start, end)
        except FridayMorningError as error:
            return Measurement(error_verdict(str(error)), 0, start, end)
        step_start = math.floor(state.step_started_at) + 1
        step_requests = sum(window.requests for window in canary if window.second >= step_start)
        return Measurement(judge(canary, baseline, self.service.analysis), step_requests, start, end)

    async def _canary_servers_down(self) -> list[str]:
        names = {instance.server for instance in self.canary_instances}
        states = await self.router.server_states(self.backend)
        return [s.server for s in states if s.server in names and s.status is ServerStatus.DOWN]

    async def _act(
        self, state: RolloutState, action: Action, measurement: Measurement | None
    ) -> RolloutState:
        evidence = measurement.evidence() if measurement is not None else None
        now = self.clock()
        match action.kind:
            case ActionKind.STAY:
                return state
            case ActionKind.ADVANCE:
                assert action.canary_weight is not None and action.step_index is not None
                await self._apply_weight(action.canary_weight)
                return self.states.transition(
                    state,
                    now,
                    "step",
                    action.reason,
                    evidence,
                    step_index=action.step_index,
                    canary_weight=action.canary_weight,
                    step_started_at=now,
                )
            case ActionKind.HOLD:
                return self.states.transition(
                    state, now, "held", action.reason, evidence, phase=RolloutPhase.HELD
                )
            case ActionKind.PROMOTE:
                return await self._promote(state, action.reason, evidence)
            case ActionKind.ROLLBACK:
                return await self._finish_canary(state, RolloutPhase.ROLLED_BACK, action.reason, evidence)
            case ActionKind.ABORT:
                return await self._finish_canary(state, RolloutPhase.ABORTED, action.reason, evidence)
        raise AssertionError(f"unhandled action {action.kind}")

    async def _promote(
        self, state: RolloutState, reason: str, evidence: dict[str, Any] | None
    ) -> RolloutState:
        """Canary to 100%, drain and stop the old stable; the canary becomes the stable."""
        await self._apply_weight(100)
        state = self.states.transition(
            state,
            self.clock(),
            "promoting",
            reason,
            evidence,
            phase=RolloutPhase.PROMOTING,
            canary_weight=100,
        )
        old_stable = self.stable_instances
        await self._remove(old_stable)
        self.stable_instances, self.canary_instances = self.canary_instances, []
        self.stable_version = state.version
        now = self.clock()
        return self.states.transition(
            state, now, "promoted", reason, evidence, phase=RolloutPhase.PROMOTED, finished_at=now
        )

    async def _finish_canary(
        self, state: RolloutState, final: RolloutPhase, reason: str, evidence: dict[str, Any] | None = None
    ) -> RolloutState:
        """Canary to weight 0 at once, then drain, remove and stop it."""
        if self.canary_instances:
            await self._apply_weight(0)
        state = self.states.transition(
            state,
            self.clock(),
            "rolling_back",
            reason,
            evidence,
            phase=RolloutPhase.ROLLING_BACK,
            canary_weight=0,
        )
        await self._remove(self.canary_instances)
        self.canary_instances = []
        now = self.clock()
        kind = "rolled_back" if final is RolloutPhase.ROLLED_BACK else "aborted"
        return self.states.transition(state, now, kind, reason, evidence, phase=final, finished_at=now)

    # --- data plane ------------------------------------------------------------------------------

    async def _apply_weight(self, canary_percent: int) -> None:
        weights = split_weights(
            canary_percent,
            [instance.server for instance in self.stable_instances],
            [instance.server for instance in self.canary_instances],
        )
        await self.router.set_weights(self.backend, weights)

    async def _remove(self, instances: list[Instance]) -> None:
        """Drain, delete from HAProxy, then stop: no request is cut in flight."""
        existing = {state.server for state in await self.router.server_states(self.backend)}
        for instance in instances:
            if instance.server in existing:
                await self.router.drain(self.backend, instance.server)
        for instance in instances:
            if instance.server in existing:
                await self.router.remove_server(self.backend, instance.server)
        await self.platform.stop(instances)

    async def _wait_servers_up(self, instances: list[Instance]) -> None:
        names = {instance.server for instance in instances}
        deadline = time.monotonic() + SERVERS_UP_TIMEOUT_S
        while True:
            states = {s.server: s.status for s in await self.router.server_states(self.backend)}
            if all(states.get(name) is ServerStatus.UP for name in names):
                return
            if time.monotonic() > deadline:
                not_up = sorted(name for name in names if states.get(name) is not ServerStatus.UP)
                raise RolloutError(f"servers not UP in HAProxy after {SERVERS_UP_TIMEOUT_S:.0f} s: {not_up}")
            await asyncio.sleep(0.2)

    def snapshot(self) -> dict[str, object]:
        """What `fm status` shows of this service."""
        active = self.states.active_rollout(self.service.name)
        return {
            "service": self.service.name,
            "stable": self.stable_version,
            "stable_instances": [f"{i.server}@{i.host}:{i.port}" for i in self.stable_instances],
            "canary_instances": [f"{i.server}@{i.host}:{i.port}" for i in self.canary_instances],
            "rollout": rollout_dict(active) if active else None,
            "verdict": self.last_verdict.to_dict() if self.last_verdict and active else None,
        }


def rollout_dict(state: RolloutState) -> dict[str, object]:
    """A JSON-ready rollout."""
    return {
        "id": state.id,
        "service": state.service,
        "version": state.version,
        "baseline": state.baseline,
        "phase": state.phase.value,
        "step": state.step_index + 1,
        "canary_weight": state.canary_weight,
        "started_at": state.started_at,
        "finished_at": state.finished_at,
        "reason": state.reason,
    }

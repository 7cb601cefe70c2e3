"""The controller's loop for one service: measure, judge, decide, act, persist.

Decisions come from the pure functions of analysis.judge and controller.strategy; everything here is
the I/O around them. Errors are data: a failing store gives an `error` verdict, never a pass.

Every transition is persisted before the loop moves on, so a controller killed at any moment resumes
where it was (`start` with the instances the platform adopted): HAProxy and the instances keep serving
while it is away.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from fridaymorning.analysis.verdict import Check, Verdict, VerdictPhase
from fridaymorning.config import HookKind, ServiceConfig, check_version
from fridaymorning.controller.hooks import (
    HookContext,
    HookResult,
    LoadTest,
    all_ok,
    describe_failures,
    run_hooks,
)
from fridaymorning.controller.judging import KeptEvidence, Series
from fridaymorning.controller.notify import build_event
from fridaymorning.controller.phases import RolloutPhase, RolloutState
from fridaymorning.controller.shares import all_or_nothing, version_shares
from fridaymorning.controller.state import StateStore
from fridaymorning.controller.strategy import (
    WATCHED_PHASES,
    Action,
    ActionKind,
    ManualCommand,
    manual_action,
    next_action,
    plan_of,
)
from fridaymorning.errors import FridayMorningError, RolloutError
from fridaymorning.models import Instance, ServerStatus, baseline_label
from fridaymorning.notify import Notifier, Notifiers
from fridaymorning.platform.base import Platform
from fridaymorning.router import ab_backend
from fridaymorning.router.base import Router
from fridaymorning.store.base import MetricStore

log = logging.getLogger(__name__)

# How long new servers may take to pass HAProxy's health checks once added.
SERVERS_UP_TIMEOUT_S = 15.0
# The longest pause between retries of a rollback's HAProxy commands (see _until_done).
ROLLBACK_RETRY_MAX_S = 5.0

# Why a rollout ends when `fm up` is stopped in order (Ctrl-C, SIGTERM) while it runs.
STOPPED_BY_OPERATOR = "stopped by the operator"


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


@dataclass(frozen=True, slots=True)
class JudgedSeries:
    """Where a rollout's judge reads its data, and whether canary and baseline are compared at all."""

    canary_backend: str
    baseline_backend: str
    baseline_version: str
    compare: bool


def judged_series(service: ServiceConfig, rollout: RolloutState) -> JudgedSeries:
    """The series the controller judges for `rollout`, as `fm replay` must read them again."""
    strategy = service.rollout.strategy
    canary_backend = ab_backend(service.name) if strategy == "ab" else service.name
    fresh = service.rollout.fresh_baseline
    baseline_version = baseline_label(rollout.baseline) if fresh else rollout.baseline
    # Blue/green: blue serves nothing once green takes over, so there is nothing to compare with.
    return JudgedSeries(canary_backend, service.name, baseline_version, compare=strategy != "blue_green")


def error_verdict(message: str) -> Verdict:
    """A verdict for evidence that could not be gathered: never a pass."""
    check = Check("metrics", VerdictPhase.ERROR, math.nan, math.nan, math.nan, 0, message)
    return Verdict(VerdictPhase.ERROR, (check,), f"metrics: {message}")


def failed_check_verdict(name: str, reason: str, count: int) -> Verdict:
    """A failing verdict from a check outside the judge (a dead server, a failed rollout hook)."""
    check = Check(name, VerdictPhase.FAIL, count, count, 0, count, reason)
    return Verdict(VerdictPhase.FAIL, (check,), f"{name}: {reason}")


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
        hooks_cwd: str | None = None,
        notifier: Notifier | None = None,
    ) -> None:
        self.service = service
        self.router = router
        self.platform = platform
        self.metrics = metrics
        self.states = states
        self.clock = clock
        # How long after a second ends the collector has written it: the judge looks no closer to now.
        self.data_lag_s = data_lag_s
        # Relative hook commands resolve against the config file's directory, like its other paths.
        self.hooks_cwd = hooks_cwd
        self.plan = plan_of(service)
        self.stable_version = states.stable_version(service.name, service.stable)
        self.stable_instances: list[Instance] = []
        self.canary_instances: list[Instance] = []
        self.baseline_instances: list[Instance] = []
        # The latest verdict, and the rollout it judged: a verdict belongs to its rollout only.
        self.last_verdict: Verdict | None = None
        self.last_verdict_rollout: int | None = None
        # Unless given one, the service's webhooks.
        self.notifier: Notifier = notifier if notifier is not None else Notifiers(service.notifications)
        self._load_tests: list[LoadTest] = []
        self._background: set[asyncio.Task[Any]] = set()
        self._commands: asyncio.Queue[ManualCommand] = asyncio.Queue()
        self._task: asyncio.Task[RolloutState] | None = None
        # The running rollout's evidence, kept between ticks (the runtime says when the collector started).
        self.evidence = KeptEvidence(service.analysis)

    @property
    def backend(self) -> str:
        return self.service.name

    @property
    def ab(self) -> bool:
        return self.service.rollout.strategy == "ab"

    @property
    def canary_backend(self) -> str:
        """Where canary servers live: the A/B backend for `ab`, else the service's backend."""
        return ab_backend(self.backend) if self.ab else self.backend

    # --- lifecycle -------------------------------------------------------------------------------

    async def start(self, adopted: Sequence[Instance] = ()) -> None:
        """Take over what a previous run left (adopted instances, an active rollout), else start stable."""
        await self.router.ensure_backend(self.backend)
        if self.ab:
            await self.router.ensure_backend(self.canary_backend)
        active = self.states.active_rollout(self.service.name)
        await self._sort_adopted(adopted, active)
        if not self.stable_instances:
            self.stable_instances = await self.platform.start(
                self.stable_version, self.service.platform.replicas
            )
        await self._reconcile_servers()
        if active is None:
            await self._apply_weight(0)
        else:
            self._commands = asyncio.Queue()
            self._task = asyncio.create_task(self._resume(active), name=f"rollout-{active.id}")
        await self._wait_servers_up(self.stable_instances, self.backend)

    async def stop(self) -> None:
        """An orderly stop: end the running rollout, then stop every instance.

        A rollout still being decided is aborted "stopped by the operator"; one already promoting,
        rolling back or aborting is finished as decided. So the next `fm up` starts clean. A crash
        (kill -9) never gets here, and the next `fm up` resumes the rollout instead.
        """
        if self._task is not None and not self._task.done():
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        active = self.states.active_rollout(self.service.name)
        if active is not None:
            await self._end_on_stop(active)
        await self._stop_load_tests()
        await asyncio.gather(*self._background, return_exceptions=True)
        await self.platform.stop(self.canary_instances + self.baseline_instances + self.stable_instances)
        self.canary_instances, self.baseline_instances, self.stable_instances = [], [], []

    async def _end_on_stop(self, state: RolloutState) -> None:
        """Finish `state` as an orderly stop must; if the data plane fails, still record the end."""
        try:
            if state.phase is RolloutPhase.PROMOTING:
                await self._complete_promotion(state, state.reason, None)
            elif state.phase in (RolloutPhase.ROLLING_BACK, RolloutPhase.ABORTING):
                await self._complete_removal(state, state.reason, None)
            else:
                await self._finish_canary(state, RolloutPhase.ABORTED, STOPPED_BY_OPERATOR)
        except Exception:
            log.exception("ending rollout %s while stopping", state.id)
            current = self.states.rollout(state.id) or state
            if current.active:
                promoting = current.phase is RolloutPhase.PROMOTING
                final = RolloutPhase.PROMOTED if promoting else RolloutPhase.ABORTED
                reason = current.reason if promoting else STOPPED_BY_OPERATOR
                now = self.clock()
                self.states.transition(current, now, final.value, reason, phase=final, finished_at=now)

    async def _sort_adopted(self, adopted: Sequence[Instance], active: RolloutState | None) -> None:
        """Give each adopted instance its role; stop those that have none any more."""
        orphans = []
        for instance in adopted:
            if not instance.label and instance.version == self.stable_version:
                self.stable_instances.append(instance)
            elif active is not None and not instance.label and instance.version == active.version:
                self.canary_instances.append(instance)
            elif active is not None and instance.label == baseline_label(active.baseline):
                self.baseline_instances.append(instance)
            else:
                orphans.append(instance)
        if orphans:
            log.info("stopping instances no rollout needs: %s", [i.server for i in orphans])
            await self.platform.stop(orphans)

    async def _reconcile_servers(self) -> None:
        """Make HAProxy's servers match the instances: add the missing, remove the stale."""
        wanted = {
            self.backend: self.stable_instances
            + self.baseline_instances
            + ([] if self.ab else self.canary_instances),
        }
        if self.ab:
            wanted[self.canary_backend] = self.canary_instances
        for backend, instances in wanted.items():
            present = {state.server for state in await self.router.server_states(backend)}
            for instance in instances:
                if instance.server not in present:
                    await self.router.add_server(backend, instance.server, instance.host, instance.port)
            names = {instance.server for instance in instances}
            for stale in sorted(present - names):
                await self.router.drain(backend, stale)
                await self.router.remove_server(backend, stale)

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
        self._notify("started", state, f"deploying {version} against {self.stable_version}", None)
        self._task = asyncio.create_task(self._run(state), name=f"rollout-{state.id}")
        return state

    def retry(self, rollout_id: int) -> RolloutState:
        """Deploy again the version of a rollout that was rolled back or aborted."""
        previous = self._own_rollout(rollout_id)
        if previous.phase not in (RolloutPhase.ROLLED_BACK, RolloutPhase.ABORTED):
            raise RolloutError(
                f"cannot retry rollout {rollout_id}: it is {previous.phase} (only rolled back or aborted)"
            )
        return self.deploy(previous.version)

    def command(self, rollout_id: int, command: ManualCommand) -> RolloutState:
        """Queue a person's command for the running rollout, or refuse it with a reason."""
        state = self._own_rollout(rollout_id)
        manual_action(state, command, self.plan)  # raises RolloutError when the phase does not allow it
        self._commands.put_nowait(command)
        return state

    def _own_rollout(self, rollout_id: int) -> RolloutState:
        state = self.states.rollout(rollout_id)
        if state is None or state.service != self.service.name:
            raise RolloutError(f"no rollout {rollout_id} for service {self.service.name}")
        return state

    async def wait(self) -> RolloutState | None:
        """Wait for the running rollout to finish; its final state."""
        return await self._task if self._task is not None else None

    # --- the rollout -----------------------------------------------------------------------------

    async def _run(self, state: RolloutState) -> RolloutState:
        try:
            state = await self._start_canary(state)
            return await self._watch(state)
        except asyncio.CancelledError:
            raise
        except Exception as error:  # any failure during a rollout removes the canary
            log.exception("rollout %s failed", state.id)
            current = self.states.rollout(state.id) or state
            if current.active:
                return await self._finish_canary(
                    current, RolloutPhase.ROLLED_BACK, f"controller error: {error}"
                )
            return current

    async def _resume(self, state: RolloutState) -> RolloutState:
        """Continue a rollout that a previous run of the controller left in `state.phase`."""
        self.states.record(
            state, self.clock(), "resumed", f"controller restarted; resuming in {state.phase}", None
        )
        if state.phase is RolloutPhase.STARTING:
            await self._remove(self.canary_instances + self.baseline_instances)
            self.canary_instances, self.baseline_instances = [], []
            return await self._run(state)
        if state.phase is RolloutPhase.PROMOTING:
            return await self._complete_promotion(state, "promotion resumed after a restart", None)
        if state.phase in (RolloutPhase.ROLLING_BACK, RolloutPhase.ABORTING):
            if self.canary_instances or self.baseline_instances:
                await self._apply_weight(0)  # the weights the previous run set are not trusted
            return await self._complete_removal(state, state.reason, None)
        if not self.canary_instances:
            reason = "the canary instances did not survive the controller's restart"
            return await self._finish_canary(state, RolloutPhase.ROLLED_BACK, reason)
        await self._apply_weight(state.canary_weight)
        self._start_load_tests()
        return await self._watch(state)

    async def _start_canary(self, state: RolloutState) -> RolloutState:
        try:
            await self._start_canary_instances(state)
        except FridayMorningError as error:
            return await self._finish_canary(
                state, RolloutPhase.ROLLED_BACK, f"canary did not start: {error}"
            )
        results = await self._run_hooks("pre_rollout", state)
        if not all_ok(results):
            failed = "; ".join(f"{r.name}: {r.detail}" for r in results if not r.ok)
            return await self._finish_canary(
                state, RolloutPhase.ABORTED, f"pre-rollout hook failed: {failed}"
            )
        first = self.plan.steps[0]
        await self._apply_weight(first.weight)
        now = self.clock()
        state = self.states.transition(
            state,
            now,
            "step",
            f"canary healthy; step 1 at {first.weight}%",
            phase=RolloutPhase.PROGRESSING,
            step_index=0,
            canary_weight=first.weight,
            step_started_at=now,
        )
        self._notify("step", state, state.reason, None)
        self._start_load_tests()
        return await self._after_step_started(state)

    async def _start_canary_instances(self, state: RolloutState) -> None:
        replicas = self.service.platform.replicas
        self.canary_instances = await self.platform.start(state.version, replicas)
        if self.service.rollout.fresh_baseline:
            self.baseline_instances = await self.platform.start(
                state.baseline, replicas, label=baseline_label(state.baseline)
            )
        for instance in self.canary_instances:
            await self.router.add_server(self.canary_backend, instance.server, instance.host, instance.port)
        for instance in self.baseline_instances:
            await self.router.add_server(self.backend, instance.server, instance.host, instance.port)
        await self._wait_servers_up(self.canary_instances, self.canary_backend)
        await self._wait_servers_up(self.baseline_instances, self.backend)

    async def _after_step_started(self, state: RolloutState) -> RolloutState:
        """Run the step's rollout hooks; a failing one counts as a failed check."""
        results = await self._run_hooks("rollout", state)
        failed = [result for result in results if not result.ok]
        if failed:
            verdict = failed_check_verdict("rollout_hook", describe_failures(results), len(failed))
            return await self._finish_canary(state, RolloutPhase.ROLLED_BACK, verdict.reason)
        return state

    async def _watch(self, state: RolloutState) -> RolloutState:
        while state.active:
            state = await self._tick(state)
        return state

    async def _tick(self, state: RolloutState) -> RolloutState:
        """One judge interval: wait, take commands, measure, decide, act."""
        command = await self._next_command(self.service.rollout.judge_interval_s)
        if command is not None:
            try:
                return await self._act(state, manual_action(state, command, self.plan), None)
            except RolloutError:
                return state  # the phase moved on since the command was accepted
        if state.phase not in WATCHED_PHASES:
            return state
        measurement = await self._measure(state)
        verdict = measurement.verdict
        action = next_action(state, verdict, self.clock(), self.plan, measurement.step_requests)
        previous = self.last_verdict if self.last_verdict_rollout == state.id else None
        if previous is None or verdict.phase != previous.phase:
            self.states.record(state, self.clock(), "verdict", verdict.reason, measurement.evidence())
        self.last_verdict, self.last_verdict_rollout = verdict, state.id
        return await self._act(state, action, measurement)

    async def _next_command(self, timeout: float) -> ManualCommand | None:
        try:
            return await asyncio.wait_for(self._commands.get(), timeout)
        except TimeoutError:
            return None

    async def _measure(self, state: RolloutState) -> Measurement:
        """Judge every closed second since the rollout began, and count the current step's canary requests.

        Only seconds the collector has already written are judged, so `fm replay` later sees exactly
        the same data; only those closed since the last tick are read (controller.judging). A dead
        canary server or a failing store is evidence too: fail, or error.
        """
        start, end = judged_seconds(state, self.clock(), self.data_lag_s)
        down = await self._canary_servers_down()
        if down:
            verdict = failed_check_verdict(
                "canary_health", f"servers down in HAProxy: {', '.join(down)}", len(down)
            )
            return Measurement(verdict, 0, start, end)
        judged = judged_series(self.service, state)
        series = Series(
            judged.canary_backend,
            state.version,
            judged.baseline_backend,
            judged.baseline_version,
            judged.compare,
        )
        step_start = math.floor(state.step_started_at) + 1
        try:
            verdict, step_requests = await self.evidence.judge(
                state.id, series, self.metrics.query, start, end, step_start, self.clock()
            )
        except FridayMorningError as error:
            return Measurement(error_verdict(str(error)), 0, start, end)
        return Measurement(verdict, step_requests, start, end)

    async def _canary_servers_down(self) -> list[str]:
        names = {instance.server for instance in self.canary_instances}
        states = await self.router.server_states(self.canary_backend)
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
                return await self._advance(state, action, evidence)
            case ActionKind.HOLD | ActionKind.AWAIT_APPROVAL | ActionKind.PAUSE:
                phase = {
                    ActionKind.HOLD: RolloutPhase.HELD,
                    ActionKind.AWAIT_APPROVAL: RolloutPhase.AWAITING_APPROVAL,
                    ActionKind.PAUSE: RolloutPhase.PAUSED,
                }[action.kind]
                state = self.states.transition(state, now, phase.value, action.reason, evidence, phase=phase)
                self._notify("held", state, action.reason, evidence)
                return state
            case ActionKind.RESUME:
                return self.states.transition(
                    state,
                    now,
                    "resumed",
                    action.reason,
                    evidence,
                    phase=RolloutPhase.PROGRESSING,
                    step_started_at=now,
                )
            case ActionKind.PROMOTE:
                return await self._promote(state, action.reason, evidence)
            case ActionKind.ROLLBACK:
                return await self._finish_canary(state, RolloutPhase.ROLLED_BACK, action.reason, evidence)
            case ActionKind.ABORT:
                return await self._finish_canary(state, RolloutPhase.ABORTED, action.reason, evidence)
        raise AssertionError(f"unhandled action {action.kind}")

    async def _advance(
        self, state: RolloutState, action: Action, evidence: dict[str, Any] | None
    ) -> RolloutState:
        assert action.canary_weight is not None and action.step_index is not None
        await self._apply_weight(action.canary_weight)
        now = self.clock()
        state = self.states.transition(
            state,
            now,
            "step",
            action.reason,
            evidence,
            phase=RolloutPhase.PROGRESSING,
            step_index=action.step_index,
            canary_weight=action.canary_weight,
            step_started_at=now,
        )
        self._notify("step", state, action.reason, evidence)
        return await self._after_step_started(state)

    async def _promote(
        self, state: RolloutState, reason: str, evidence: dict[str, Any] | None
    ) -> RolloutState:
        """Pass the confirm-promotion gate, then give the canary all traffic."""
        results = await self._run_hooks("confirm_promotion", state)
        if not all_ok(results):
            held = f"promotion not confirmed: {describe_failures(results)}"
            state = self.states.transition(
                state, self.clock(), "held", held, evidence, phase=RolloutPhase.HELD
            )
            self._notify("held", state, held, evidence)
            return state
        state = self.states.transition(
            state,
            self.clock(),
            "promoting",
            reason,
            evidence,
            phase=RolloutPhase.PROMOTING,
            canary_weight=100,
        )
        return await self._complete_promotion(state, reason, evidence)

    async def _complete_promotion(
        self, state: RolloutState, reason: str, evidence: dict[str, Any] | None
    ) -> RolloutState:
        """Canary to 100%, drain and stop the old stable (and the fresh baseline). Safe to repeat."""
        if self.ab:
            await self._move_canary_to_main_backend()  # gives the canary 100% on the way
        else:
            await self._apply_weight(100)
        await self._remove(self.stable_instances + self.baseline_instances)
        self.stable_instances, self.canary_instances, self.baseline_instances = self.canary_instances, [], []
        self.stable_version = state.version
        now = self.clock()
        state = self.states.transition(
            state, now, "promoted", reason, evidence, phase=RolloutPhase.PROMOTED, finished_at=now
        )
        await self._stop_load_tests()
        await self._run_hooks("post_rollout", state)
        self._notify("promoted", state, reason, evidence)
        return state

    async def _move_canary_to_main_backend(self) -> None:
        """A/B promotion: the canary's servers join the main backend, then leave the A/B backend."""
        present = {s.server for s in await self.router.server_states(self.backend)}
        for instance in self.canary_instances:
            if instance.server not in present:
                await self.router.add_server(self.backend, instance.server, instance.host, instance.port)
        await self._wait_servers_up(self.canary_instances, self.backend)
        await self._apply_weight(100)
        in_ab = {s.server for s in await self.router.server_states(self.canary_backend)}
        for instance in self.canary_instances:
            if instance.server in in_ab:
                await self.router.drain(self.canary_backend, instance.server)
                await self.router.remove_server(self.canary_backend, instance.server)

    async def _finish_canary(
        self, state: RolloutState, final: RolloutPhase, reason: str, evidence: dict[str, Any] | None = None
    ) -> RolloutState:
        """Canary to weight 0 at once, then drain, remove and stop it (and the fresh baseline)."""
        if self.canary_instances or self.baseline_instances:
            await self._until_done(
                lambda: self._apply_weight(0, only_servers_in_haproxy=True),
                "setting the canary's weight to 0",
            )
        phase = RolloutPhase.ABORTING if final is RolloutPhase.ABORTED else RolloutPhase.ROLLING_BACK
        state = self.states.transition(
            state, self.clock(), phase.value, reason, evidence, phase=phase, canary_weight=0
        )
        return await self._complete_removal(state, reason, evidence)

    async def _complete_removal(
        self, state: RolloutState, reason: str, evidence: dict[str, Any] | None
    ) -> RolloutState:
        """Remove and stop the canary and the fresh baseline (already at weight 0), then record the end."""
        leaving = self.canary_instances + self.baseline_instances
        await self._until_done(lambda: self._remove(leaving), "removing the canary")
        self.canary_instances, self.baseline_instances = [], []
        final = RolloutPhase.ABORTED if state.phase is RolloutPhase.ABORTING else RolloutPhase.ROLLED_BACK
        now = self.clock()
        state = self.states.transition(
            state, now, final.value, reason, evidence, phase=final, finished_at=now
        )
        await self._stop_load_tests()
        await self._run_hooks("rollback", state)
        self._notify(final.value, state, reason, evidence)
        return state

    async def _until_done(self, action: Callable[[], Awaitable[None]], what: str) -> None:
        """Run `action` until it succeeds: a rollback must not end half done because HAProxy was slow.

        A busy HAProxy (or a starved `fm up`) can time out one admin command; giving up would leave the
        canary serving with its rollout stranded. Retries back off to ROLLBACK_RETRY_MAX_S; only a
        cancellation (fm up stopping) ends them.
        """
        delay = 0.2
        for attempt in itertools.count(1):
            try:
                await action()
                return
            except FridayMorningError as error:
                log.warning("%s failed (attempt %d), retrying in %.1f s: %s", what, attempt, delay, error)
            await asyncio.sleep(delay)
            delay = min(delay * 2, ROLLBACK_RETRY_MAX_S)

    # --- data plane ------------------------------------------------------------------------------

    async def _apply_weight(self, canary_percent: int, *, only_servers_in_haproxy: bool = False) -> None:
        """Give the canary `canary_percent` of the traffic (a fresh baseline gets as much), verified.

        `only_servers_in_haproxy` leaves out canary and baseline servers HAProxy does not hold: a rollout
        stopped between starting its instances and adding them has servers that get no traffic already,
        and "No such server" would otherwise be retried for ever.
        """
        stable = [instance.server for instance in self.stable_instances]
        baseline = [instance.server for instance in self.baseline_instances]
        canary = [instance.server for instance in self.canary_instances]
        if only_servers_in_haproxy:
            held = {
                state.server
                for backend in sorted({self.backend, self.canary_backend})
                for state in await self.router.server_states(backend)
            }
            baseline = [server for server in baseline if server in held]
            canary = [server for server in canary if server in held]
        if self.ab:
            in_main = {s.server for s in await self.router.server_states(self.backend)}
            canary_in_main = [server for server in canary if server in in_main]
            if canary and not canary_in_main:
                # A/B: the canary gets every matched request, or none; the main backend keeps stable.
                await self.router.set_shares(self.canary_backend, all_or_nothing(canary_percent > 0, canary))
                await self.router.set_shares(self.backend, version_shares(0, stable, [], []))
                return
            canary = canary_in_main
        await self.router.set_shares(self.backend, version_shares(canary_percent, stable, baseline, canary))

    async def _remove(self, instances: list[Instance]) -> None:
        """Drain, delete from HAProxy, then stop: no request is cut in flight."""
        backends = {self.backend, self.canary_backend}
        for backend in sorted(backends):
            existing = {state.server for state in await self.router.server_states(backend)}
            mine = [instance.server for instance in instances if instance.server in existing]
            for server in mine:
                await self.router.drain(backend, server)
            for server in mine:
                await self.router.remove_server(backend, server)
        await self.platform.stop(instances)

    async def _wait_servers_up(self, instances: list[Instance], backend: str) -> None:
        names = {instance.server for instance in instances}
        deadline = time.monotonic() + SERVERS_UP_TIMEOUT_S
        while names:
            states = {s.server: s.status for s in await self.router.server_states(backend)}
            if all(states.get(name) is ServerStatus.UP for name in names):
                return
            if time.monotonic() > deadline:
                not_up = sorted(name for name in names if states.get(name) is not ServerStatus.UP)
                raise RolloutError(f"servers not UP in HAProxy after {SERVERS_UP_TIMEOUT_S:.0f} s: {not_up}")
            await asyncio.sleep(0.2)

    # --- hooks, load tests, notifications --------------------------------------------------------

    async def _run_hooks(self, kind: HookKind, state: RolloutState) -> list[HookResult]:
        return await run_hooks(self.service.hooks, kind, self._hook_context(state), cwd=self.hooks_cwd)

    def _hook_context(self, state: RolloutState) -> HookContext:
        return HookContext.for_rollout(state, self.service.frontend)

    def _start_load_tests(self) -> None:
        if self._load_tests:
            return
        for hook in self.service.hooks:
            if hook.load_test is not None:
                load_test = LoadTest(hook.load_test)
                load_test.start(self.service.frontend)
                self._load_tests.append(load_test)

    async def _stop_load_tests(self) -> None:
        load_tests, self._load_tests = self._load_tests, []
        for load_test in load_tests:
            await load_test.stop()

    def _notify(self, kind: str, state: RolloutState, reason: str, evidence: dict[str, Any] | None) -> None:
        """Send a notification in the background: a slow webhook never delays a rollback.

        Each webhook receives the rollout's events in the order they happened.
        """
        event = build_event(kind, state, reason, evidence)  # type: ignore[arg-type]
        for task in self.notifier.send_in_background(event):
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    def snapshot(self) -> dict[str, object]:
        """What `fm status` shows of this service."""
        active = self.states.active_rollout(self.service.name)
        return {
            "service": self.service.name,
            "strategy": self.service.rollout.strategy,
            "stable": self.stable_version,
            "stable_instances": [f"{i.server}@{i.host}:{i.port}" for i in self.stable_instances],
            "canary_instances": [f"{i.server}@{i.host}:{i.port}" for i in self.canary_instances],
            "baseline_instances": [f"{i.server}@{i.host}:{i.port}" for i in self.baseline_instances],
            "config_stable": self.service.stable,
            "rollout": rollout_dict(active) if active else None,
            "verdict": self.current_verdict(active),
            "notifications": self.notifier.stats(),
        }

    def current_verdict(self, active: RolloutState | None) -> dict[str, Any] | None:
        """The running rollout's latest verdict; None when no rollout runs, or it has none yet.

        After a restart, until the first judgement, the latest verdict recorded for the rollout.
        """
        if active is None:
            return None
        if self.last_verdict is not None and self.last_verdict_rollout == active.id:
            return self.last_verdict.to_dict()
        return self.states.latest_verdict(active.id)


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

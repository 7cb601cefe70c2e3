"""The controller's loop for one service: measure, judge, decide, act, persist.

Decisions come from the pure functions of analysis.judge and the planner (controller.planner,
controller.strategy); every router call goes through the traffic actuator (controller.actuator). What is
left here sequences the two, with persistence. Errors are data: a failing store gives an `error`
verdict, never a pass.

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
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from fridaymorning.analysis.verdict import Check, Verdict, VerdictPhase
from fridaymorning.config import HookKind, ServiceConfig, check_version
from fridaymorning.controller.actuator import Roster, TrafficActuator
from fridaymorning.controller.hooks import (
    HookContext,
    HookResult,
    LoadTest,
    all_ok,
    describe_failures,
    run_hooks,
)
from fridaymorning.controller.judging import KeptEvidence
from fridaymorning.controller.metric_checks import MetricChecks
from fridaymorning.controller.notify import build_event
from fridaymorning.controller.phases import RolloutPhase, RolloutState
from fridaymorning.controller.planner import judged_seconds, judged_series
from fridaymorning.controller.replacements import gone, replaced_pairs, swap
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
from fridaymorning.errors import FridayMorningError, InstanceLagError, RolloutError
from fridaymorning.models import Instance, baseline_label
from fridaymorning.notify import Notifier, Notifiers
from fridaymorning.platform.base import Platform, TracksReplacements
from fridaymorning.providers import MetricProvider, open_providers
from fridaymorning.router.base import Router
from fridaymorning.store.base import MetricStore

log = logging.getLogger(__name__)

# How often a platform that replaces instances by itself (Swarm) is asked which ones it replaced.
REPLACEMENT_POLL_S = 1.0
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
        providers: Mapping[str, MetricProvider] | None = None,
    ) -> None:
        self.service = service
        # Every router call for this service goes through the actuator.
        self.traffic = TrafficActuator(service, router)
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
        # Custom checks query their providers (unless given some, those their URLs name) in the background.
        if providers is None:
            providers = open_providers((check.provider for check in service.rollout.checks), metrics)
        self.metric_checks = MetricChecks(service.name, service.rollout.checks, providers, data_lag_s)
        self._load_tests: list[LoadTest] = []
        self._background: set[asyncio.Task[Any]] = set()
        self._commands: asyncio.Queue[ManualCommand] = asyncio.Queue()
        self._task: asyncio.Task[RolloutState] | None = None
        # The canary share last given to the router, and the lock that keeps weight changes whole, so a
        # replaced server gets its share without racing a rollout's own change.
        self._applied_percent = 0
        self._weights_lock = asyncio.Lock()
        self._tracker: asyncio.Task[None] | None = None
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
        return self.traffic.canary_backend

    def roster(self) -> Roster:
        """The service's instances by role, as the actuator is given them."""
        return Roster(self.stable_instances, self.baseline_instances, self.canary_instances)

    # --- lifecycle -------------------------------------------------------------------------------

    async def start(self, adopted: Sequence[Instance] = ()) -> None:
        """Take over what a previous run left (adopted instances, an active rollout), else start stable."""
        await self.traffic.ensure_backends()
        active = self.states.active_rollout(self.service.name)
        await self._sort_adopted(adopted, active)
        if not self.stable_instances:
            self.stable_instances = await self.platform.start(
                self.stable_version, self.service.platform.replicas
            )
        await self.traffic.reconcile(self.roster())
        if active is None:
            await self._tolerating_lag(self._apply_weight(0))
        else:
            self._commands = asyncio.Queue()
            self._task = asyncio.create_task(self._resume(active), name=f"rollout-{active.id}")
        await self.traffic.wait_servers_up(self.stable_instances, self.backend)
        if isinstance(self.platform, TracksReplacements):
            self._tracker = asyncio.create_task(self._follow_replacements(self.platform), name="replacements")

    async def stop(self) -> None:
        """An orderly stop: end the running rollout, then stop every instance.

        A rollout still being decided is aborted "stopped by the operator"; one already promoting,
        rolling back or aborting is finished as decided. So the next `fm up` starts clean. A crash
        (kill -9) never gets here, and the next `fm up` resumes the rollout instead.
        """
        if self._tracker is not None:
            self._tracker.cancel()
            await asyncio.gather(self._tracker, return_exceptions=True)
        if self._task is not None and not self._task.done():
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        active = self.states.active_rollout(self.service.name)
        if active is not None:
            await self._end_on_stop(active)
        await self._stop_load_tests()
        await self.metric_checks.close()
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
                # the weights the previous run set are not trusted
                await self._tolerating_lag(self._apply_weight(0))
            return await self._complete_removal(state, state.reason, None)
        if not self.canary_instances:
            reason = "the canary instances did not survive the controller's restart"
            return await self._finish_canary(state, RolloutPhase.ROLLED_BACK, reason)
        await self._tolerating_lag(self._apply_weight(state.canary_weight))
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
        await self.traffic.add_rollout_servers(self.canary_instances, self.baseline_instances)

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
        checked = self.metric_checks.add_checks(measurement.verdict, state, self.clock())
        measurement = replace(measurement, verdict=checked)
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
        series = judged_series(self.service, state)
        step_start = math.floor(state.step_started_at) + 1
        # A buffered store (InfluxDB, VictoriaMetrics) first waits until the judged seconds are all in.
        query = getattr(self.metrics, "query_complete", self.metrics.query)
        try:
            verdict, step_requests = await self.evidence.judge(
                state.id, series, query, start, end, step_start, self.clock()
            )
        except FridayMorningError as error:
            return Measurement(error_verdict(str(error)), 0, start, end)
        return Measurement(verdict, step_requests, start, end)

    async def _canary_servers_down(self) -> list[str]:
        return await self.traffic.servers_down(self.canary_instances)

    async def _act(
        self, state: RolloutState, action: Action, measurement: Measurement | None
    ) -> RolloutState:
        evidence = measurement.evidence() if measurement is not None else None
        now = self.clock()
        match action.kind:
            case ActionKind.STAY:
                return state
            case ActionKind.ADVANCE:
                return await self._unless_lagging(state, self._advance(state, action, evidence))
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
                return await self._unless_lagging(state, self._promote(state, action.reason, evidence))
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
        await self.traffic.check_every_instance()  # a promotion needs every load balancer
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
            await self.traffic.move_canary_to_main_backend(self.roster())  # gives the canary 100% on the way
        else:
            await self._tolerating_lag(self._apply_weight(100))
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
            except InstanceLagError as error:  # done where it could be; the fleet finishes the rest
                log.warning("%s: %s; the fleet restores them when they answer", what, error)
                return
            except FridayMorningError as error:
                log.warning("%s failed (attempt %d), retrying in %.1f s: %s", what, attempt, delay, error)
            await asyncio.sleep(delay)
            delay = min(delay * 2, ROLLBACK_RETRY_MAX_S)

    # --- a fleet's lagging load balancers ----------------------------------------------------------

    async def _unless_lagging(self, state: RolloutState, change: Awaitable[RolloutState]) -> RolloutState:
        """Move forward only when every load balancer takes the change; else hold where we are, say
        which instance lags, and try again at the next judgement."""
        try:
            return await change
        except InstanceLagError as error:
            reason = (
                f"holding at step {state.step_index + 1} ({state.canary_weight}%): "
                f"HAProxy {', '.join(error.instances)} lagging"
            )
            log.warning("rollout %s: %s: %s", state.id, reason, error)
            if state.reason == reason:
                return state
            return self.states.transition(state, self.clock(), "lagging", reason)

    async def _tolerating_lag(self, change: Awaitable[None]) -> None:
        """A change that never waits for a lagging load balancer: the fleet restores it later."""
        try:
            await change
        except InstanceLagError as error:
            log.warning("%s; the fleet restores them when they answer", error)

    # --- data plane ------------------------------------------------------------------------------

    async def _apply_weight(
        self, canary_percent: int | None, *, only_servers_in_haproxy: bool = False
    ) -> None:
        """Give the canary `canary_percent` of the traffic (a fresh baseline gets as much), verified;
        None gives it again the share last given (for replaced servers). One change at a time: the
        rollout's own and the replacement follower's."""
        async with self._weights_lock:
            if canary_percent is None:
                canary_percent = self._applied_percent
            self._applied_percent = canary_percent
            await self.traffic.set_canary_percent(
                canary_percent, self.roster(), only_servers_in_haproxy=only_servers_in_haproxy
            )

    async def _follow_replacements(self, platform: TracksReplacements) -> None:
        """Until stopped: when the platform replaced an instance (a Swarm task restarted on a new port),
        replace its HAProxy server and give it its share again. Errors are logged and retried."""
        drained: set[Instance] = set()
        reweigh = False  # a replaced server still waits for its share
        while True:
            await asyncio.sleep(REPLACEMENT_POLL_S)
            try:
                for role in ("stable_instances", "baseline_instances", "canary_instances"):
                    reweigh = await self._replace_servers(platform, role, drained) or reweigh
                if reweigh:
                    await self._apply_weight(None, only_servers_in_haproxy=True)
                    reweigh = False
            except FridayMorningError as error:
                log.warning("following replaced instances: %s", error)

    async def _replace_servers(self, platform: TracksReplacements, role: str, drained: set[Instance]) -> bool:
        """Drain the stopped instances of `role`, and replace the servers of the replaced ones; True when
        a server was replaced (it then needs its share)."""
        routed: list[Instance] = getattr(self, role)
        if not routed:
            return False
        current = await platform.current(routed)
        if getattr(self, role) != routed:  # the rollout changed them meanwhile
            return False
        backend = self.canary_backend if role == "canary_instances" else self.backend
        present = await self.traffic.servers_held(backend)
        if role != "canary_instances":  # a dead canary stays, for the judge to see DOWN and roll back
            for instance in gone(routed, current):
                if instance not in drained and instance.server in present:
                    log.warning("%s stopped running; draining it until it is replaced", instance.server)
                    await self.traffic.drain_server(backend, instance.server)
                    drained.add(instance)
        pairs = replaced_pairs(routed, current)
        if not pairs:
            return False
        for old, new in pairs:
            log.warning(
                "%s was replaced (%s:%d -> %s:%d)", old.server, old.host, old.port, new.host, new.port
            )
            await self.traffic.replace_server(backend, old, new, present)
        setattr(self, role, swap(routed, pairs))
        return True

    async def _remove(self, instances: list[Instance]) -> None:
        """Drain, delete from HAProxy, then stop: no request is cut in flight."""
        await self.traffic.take_out(instances)
        await self.platform.stop(instances)

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
        record_decision = getattr(self.metrics, "record_decision", None)
        if record_decision is not None:  # for dashboards: the weight, and an annotation
            record_decision(event)
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

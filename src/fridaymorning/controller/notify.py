"""The events a rollout notifies: its state at a transition, and why, explained from the verdict's checks.

The controller builds them here and hands them to its Notifier (fridaymorning.notify), which delivers them.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

from fridaymorning.config import NotificationEvent
from fridaymorning.controller.phases import RolloutState

__all__ = ["build_event", "explain"]

# Wording of a check's phase in an explanation.
CHECK_OUTCOMES = {"fail": "failed", "hold": "holding", "error": "errored"}


def build_event(
    kind: NotificationEvent,
    rollout: RolloutState,
    reason: str,
    verdict: dict[str, Any] | None = None,
    *,
    now: datetime | None = None,
) -> dict[str, Any]:
    """A JSON-ready event (strict JSON: no NaN). `verdict` is `Verdict.to_dict()`; `step` is 1-based."""
    moment = now or datetime.now(UTC)
    return {
        "event": kind,
        "service": rollout.service,
        "rollout_id": rollout.id,
        "version": rollout.version,
        "baseline": rollout.baseline,
        "phase": rollout.phase.value,
        "step": rollout.step_index + 1,
        "canary_weight": rollout.canary_weight,
        "reason": reason,
        "explanation": explain(verdict),
        "verdict": _finite(verdict),
        "timestamp": moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
    }


def explain(verdict: dict[str, Any] | None) -> str:
    """A short text from the checks that decided a non-passing verdict, with their numbers.

    Only the checks in the verdict's own phase are named (a rollback's failing checks, not its holding
    ones), as `combine` decides: "error_rate_slo failed: statistic 0.052, bound 0.031, threshold 0.01,
    n=1200 — <detail>".
    """
    if not verdict:
        return ""
    deciding = [check for check in verdict.get("checks", []) if check.get("phase") == verdict.get("phase")]
    if verdict.get("phase") == "pass" or not deciding:
        return str(verdict.get("reason", ""))
    return "; ".join(_explain_check(check) for check in deciding)


def _explain_check(check: dict[str, Any]) -> str:
    numbers = (
        f"statistic {_number(check.get('statistic'))}, bound {_number(check.get('bound'))}, "
        f"threshold {_number(check.get('threshold'))}, n={check.get('n')}"
    )
    if _is_finite(check.get("evalue")):
        numbers += f", e-value {_number(check['evalue'])} of {_number(check.get('evalue_threshold'))}"
    outcome = CHECK_OUTCOMES.get(check.get("phase", ""), check.get("phase", ""))
    text = f"{check.get('name')} {outcome}: {numbers}"
    return f"{text} — {check['detail']}" if check.get("detail") else text


def _number(value: Any) -> str:
    return f"{value:.4g}" if _is_finite(value) else "n/a"


def _is_finite(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def _finite(value: Any) -> Any:
    """`value` with NaN and infinities replaced by None: strict JSON parsers reject them."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(item) for item in value]
    return value

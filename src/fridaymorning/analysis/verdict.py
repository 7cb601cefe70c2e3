"""The judge's outcome: a phase, and the evidence behind it, check by check."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any


class VerdictPhase(StrEnum):
    """What the evidence says about the canary."""

    PASS = "pass"  # enough evidence that the canary is no worse than allowed
    FAIL = "fail"  # enough evidence that the canary is worse than allowed: roll back
    HOLD = "hold"  # not enough evidence either way yet; never read as a pass
    ERROR = "error"  # the evidence could not be gathered (store down, no windows); never a pass


@dataclass(frozen=True, slots=True)
class Check:
    """One check of the judge: the statistic it measured, the bound it compared, and the threshold.

    `bound` is the confidence bound that decides a pass; `evalue` is the e-value of the sequential test
    that decides a fail, and `evalue_threshold` the value at which it fails (NaN for checks without one).
    """

    name: str
    phase: VerdictPhase
    statistic: float
    bound: float
    threshold: float
    n: int
    detail: str = ""
    evalue: float = math.nan
    evalue_threshold: float = math.nan


@dataclass(frozen=True, slots=True)
class Verdict:
    """The judge's decision on one data window, with every check's evidence."""

    phase: VerdictPhase
    checks: tuple[Check, ...]
    reason: str

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form, as the API and `fm explain` show it."""
        return {
            "phase": self.phase.value,
            "reason": self.reason,
            "checks": [{**asdict(check), "phase": check.phase.value} for check in self.checks],
        }


def combine(checks: tuple[Check, ...]) -> Verdict:
    """A verdict from its checks: any fail fails, else any error errs, else any hold holds, else pass."""
    for phase in (VerdictPhase.FAIL, VerdictPhase.ERROR, VerdictPhase.HOLD):
        matching = [check for check in checks if check.phase is phase]
        if matching:
            reason = "; ".join(f"{check.name}: {check.detail}" for check in matching)
            return Verdict(phase, checks, reason)
    return Verdict(VerdictPhase.PASS, checks, "every check passed")

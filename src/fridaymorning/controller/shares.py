"""The shares of traffic, in percent, that each version of a service gets at a canary percentage."""

from __future__ import annotations

from collections.abc import Sequence

from fridaymorning.router.base import Share


def version_shares(
    canary_percent: int, stable: Sequence[str], baseline: Sequence[str], canary: Sequence[str]
) -> dict[str, Share]:
    """Stable, fresh baseline and canary shares of one backend, for a canary at `canary_percent`.

    A fresh baseline gets as much as the canary, so the two are compared on equal traffic; at 100% the
    canary takes everything.
    """
    if not 0 <= canary_percent <= 100:
        raise ValueError(f"a canary percent must be within 0..100, got {canary_percent}")
    baseline_percent = canary_percent if baseline and canary_percent < 100 else 0
    return {
        "stable": Share(100 - canary_percent - baseline_percent, tuple(stable)),
        "baseline": Share(baseline_percent, tuple(baseline)),
        "canary": Share(canary_percent, tuple(canary)),
    }


def all_or_nothing(canary_on: bool, servers: Sequence[str]) -> dict[str, Share]:
    """A/B: the backend of matched requests sends all of them to the canary, or serves none."""
    return {"canary": Share(100 if canary_on else 0, tuple(servers))}

"""Per-server weights for any number of arms sharing a backend (stable, fresh baseline, canary)."""

from __future__ import annotations

from collections.abc import Sequence

from fridaymorning.router.haproxy import spread, weight_scale


def share_weights(arms: Sequence[tuple[int, Sequence[str]]]) -> dict[str, int]:
    """Weights giving each arm (percent of traffic, its servers) exactly its share.

    The percents must add up to 100; an arm with servers but 0% gets weight 0 on each server.
    """
    if sum(percent for percent, _ in arms) != 100:
        raise ValueError(f"arm shares must add up to 100%, got {[percent for percent, _ in arms]}")
    for percent, servers in arms:
        if percent > 0 and not servers:
            raise ValueError(f"cannot send {percent}% of the traffic to no server")
    scale = weight_scale([(percent, len(servers)) for percent, servers in arms if servers])
    weights: dict[str, int] = {}
    for percent, servers in arms:
        weights.update(spread(percent * scale, list(servers)))
    return weights

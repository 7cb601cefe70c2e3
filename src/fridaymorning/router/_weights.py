"""Shares in percent as HAProxy's per-server weights (0..256), and the shares such weights give back.

Each arm gets a total weight of percent * K and shares it evenly among its servers; the arms' totals
then stand exactly in the ratio of their percents. K is about 2 (weights sum to about 200). It grows
when an arm has more servers than weight, so that no server idles, but never so far that a weight
exceeds 256: when both cannot hold, the share stays exact and some servers of that arm get weight 0.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from fractions import Fraction

from fridaymorning.router._render import MAX_WEIGHT
from fridaymorning.router.base import Share

# The arms' weights sum to about this much, so each weight stays well under MAX_WEIGHT.
TARGET_TOTAL_WEIGHT = 200


def weights_for_shares(shares: Mapping[str, Share]) -> dict[str, int]:
    """Per-server weights that give each arm exactly its share; a 0% arm gets weight 0 on each server."""
    check_shares(shares)
    scale = weight_scale([(share.percent, len(share.servers)) for share in shares.values() if share.servers])
    weights: dict[str, int] = {}
    for share in shares.values():
        weights.update(spread(share.percent * scale, share.servers))
    return weights


def check_shares(shares: Mapping[str, Share]) -> None:
    """Refuse shares that cannot be honoured, with a ValueError naming the arm."""
    percents = {arm: share.percent for arm, share in shares.items()}
    for arm, share in shares.items():
        if isinstance(share.percent, bool) or not isinstance(share.percent, int):
            raise ValueError(f"the {arm} share must be an integer percent, got {share.percent!r}")
        if not 0 <= share.percent <= 100:
            raise ValueError(f"the {arm} share must be within 0..100%, got {share.percent}")
        if share.percent > 0 and not share.servers:
            raise ValueError(f"cannot send {share.percent}% of the traffic to no {arm} server")
    if sum(percents.values()) not in (0, 100):
        raise ValueError(f"shares must add up to 100% (or all be 0%), got {percents}")
    servers = [server for share in shares.values() for server in share.servers]
    if len(set(servers)) != len(servers):
        raise ValueError(f"a server cannot be in two shares, or twice in one: {servers}")


def weight_scale(arms: Sequence[tuple[int, int]]) -> int:
    """K for arms of (percent, server count): each arm's servers share a total weight of percent * K."""
    busy = [(percent, count) for percent, count in arms if percent > 0]
    if not busy:
        return 0
    wanted = max([TARGET_TOTAL_WEIGHT // 100, *(math.ceil(count / percent) for percent, count in busy)])
    allowed = min((MAX_WEIGHT * count) // percent for percent, count in busy)
    return min(wanted, allowed)


def spread(total: int, servers: Sequence[str]) -> dict[str, int]:
    """Share `total` among `servers` as evenly as integers allow (the first ones get the remainder)."""
    if not servers:
        return {}
    base, remainder = divmod(total, len(servers))
    return {server: base + (1 if position < remainder else 0) for position, server in enumerate(servers)}


def realised_percents(weights: Mapping[str, int], shares: Mapping[str, Share]) -> dict[str, Fraction]:
    """The percent of traffic each arm gets from `weights`, among the servers `shares` names.

    When every one of those servers has weight 0, no arm gets any (the backend serves nothing).
    """
    totals = {arm: sum(weights.get(server, 0) for server in share.servers) for arm, share in shares.items()}
    whole = sum(totals.values())
    if whole == 0:
        return dict.fromkeys(shares, Fraction(0))
    return {arm: Fraction(100 * total, whole) for arm, total in totals.items()}


def requested_percents(shares: Mapping[str, Share]) -> dict[str, Fraction]:
    """The percent each arm asks for, comparable with realised_percents."""
    return {arm: Fraction(share.percent) for arm, share in shares.items()}

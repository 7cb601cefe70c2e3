"""The mixture pass bounds: their ranks are the definition's, whatever order they are asked in."""

from __future__ import annotations

import math
import random

from fridaymorning.analysis.stats import (
    OPTIMIZE_AT,
    log_mixture_above,
    log_mixture_below,
    prior_concentration,
    quantile_lower_rank,
    quantile_upper_rank,
    rate_lower_bound,
    rate_upper_bound,
)


def upper_by_scan(count: int, q: float, alpha: float) -> int:
    """The smallest k ≥ floor(nq) at which the mixture for rates above q reaches 1/alpha, by a plain scan."""
    m, threshold = prior_concentration(alpha, OPTIMIZE_AT), math.log(1 / alpha)
    for k in range(math.floor(count * q), count + 1):
        if log_mixture_above(k, count, q, m) >= threshold:
            return k
    return count + 1


def lower_by_scan(count: int, q: float, alpha: float) -> int:
    """One more than the largest count ≤ ceil(nq) at which the mixture for rates below q reaches 1/alpha."""
    m, threshold = prior_concentration(alpha, OPTIMIZE_AT), math.log(1 / alpha)
    for j in range(math.ceil(count * q), -1, -1):
        if log_mixture_below(j, count, q, m) >= threshold:
            return j + 1
    return 0


def test_ranks_match_a_plain_scan_in_any_order() -> None:
    """The rank searches (which start from the last search's answer) give the scan's ranks in any order."""
    cases = [(n, q, a) for n in (7, 50, 333, 1000, 4321) for q in (0.5, 0.9, 0.99) for a in (0.01, 0.001)]
    random.Random(3).shuffle(cases)
    for count, q, alpha in cases:
        assert quantile_upper_rank(count, q, alpha) == upper_by_scan(count, q, alpha), (count, q, alpha)
        assert quantile_lower_rank(count, q, alpha) == lower_by_scan(count, q, alpha), (count, q, alpha)


def test_rate_bounds_sit_where_the_mixture_crosses() -> None:
    """At the upper bound the mixture has reached 1/alpha, and a little inside it has not (likewise below)."""
    alpha = 0.005
    m, threshold = prior_concentration(alpha, OPTIMIZE_AT), math.log(1 / alpha)
    for events, trials in ((0, 1000), (3, 3000), (40, 2000), (500, 1000)):
        upper = rate_upper_bound(events, trials, alpha)
        assert log_mixture_below(events, trials, upper, m) >= threshold
        assert log_mixture_below(events, trials, upper - 1e-4 * upper, m) < threshold
        if events:
            lower = rate_lower_bound(events, trials, alpha)
            assert log_mixture_above(events, trials, lower, m) >= threshold
            assert log_mixture_above(events, trials, lower + 1e-4 * lower, m) < threshold


def test_ranks_only_move_outward_with_confidence() -> None:
    """A smaller alpha never gives a tighter rank: upper ranks rise, lower ranks fall."""
    for count in (100, 1000, 10000):
        for q in (0.5, 0.99):
            assert quantile_upper_rank(count, q, 0.001) >= quantile_upper_rank(count, q, 0.01)
            assert quantile_lower_rank(count, q, 0.001) <= quantile_lower_rank(count, q, 0.01)

"""Shares in percent as HAProxy per-server weights: exact, within 0..256, and read back as asked."""

from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fridaymorning.router import Share, weights_for_shares
from fridaymorning.router._weights import realised_percents, requested_percents

MAX_WEIGHT = 256


@st.composite
def backend_shares(draw: st.DrawFn) -> dict[str, Share]:
    """Up to four arms of 0 to 64 servers, whose percents add up to 100; an arm without servers gets 0%."""
    counts = draw(st.lists(st.integers(0, 64), min_size=1, max_size=4).filter(any))
    busy = [arm for arm, count in enumerate(counts) if count]
    cuts = sorted(draw(st.lists(st.integers(0, 100), min_size=len(busy) - 1, max_size=len(busy) - 1)))
    busy_percents = [high - low for low, high in zip([0, *cuts], [*cuts, 100], strict=True)]
    percents = dict.fromkeys(range(len(counts)), 0) | dict(zip(busy, busy_percents, strict=True))
    return {
        f"arm{arm}": Share(percents[arm], tuple(f"v{arm}-{index}" for index in range(count)))
        for arm, count in enumerate(counts)
    }


@given(backend_shares())
def test_every_weight_is_within_haproxys_range(shares: dict[str, Share]) -> None:
    """Each server of each arm gets one weight, an integer within 0..256."""
    weights = weights_for_shares(shares)
    assert sorted(weights) == sorted(server for share in shares.values() for server in share.servers)
    assert all(0 <= weight <= MAX_WEIGHT for weight in weights.values())


@given(backend_shares())
def test_the_realised_shares_are_the_requested_ones(shares: dict[str, Share]) -> None:
    """The shares the weights give, read back, are exactly the percents asked: they add up to 100."""
    realised = realised_percents(weights_for_shares(shares), shares)
    assert realised == requested_percents(shares)
    assert sum(realised.values()) == 100


@given(backend_shares())
def test_a_0_percent_arm_gets_weight_0(shares: dict[str, Share]) -> None:
    """Every server of an arm at 0% has weight 0: it gets no new request."""
    weights = weights_for_shares(shares)
    idle = [server for share in shares.values() if share.percent == 0 for server in share.servers]
    assert all(weights[server] == 0 for server in idle)


@given(backend_shares().filter(lambda shares: any(s.percent == 100 for s in shares.values())))
def test_a_100_percent_arm_gets_all_traffic(shares: dict[str, Share]) -> None:
    """An arm at 100% has all the weight; every other server has 0."""
    weights = weights_for_shares(shares)
    [everything] = [share for share in shares.values() if share.percent == 100]
    assert sum(weights[server] for server in everything.servers) == sum(weights.values()) > 0


@pytest.mark.parametrize(
    ("percent", "stable", "canary", "expected"),
    [
        (0, ["s1"], ["c1"], {"s1": 200, "c1": 0}),
        (1, ["s1"], ["c1"], {"s1": 198, "c1": 2}),
        (10, ["s1"], ["c1"], {"s1": 180, "c1": 20}),
        (50, ["s1"], ["c1"], {"s1": 100, "c1": 100}),
        (99, ["s1"], ["c1"], {"s1": 2, "c1": 198}),
        (100, ["s1"], ["c1"], {"s1": 0, "c1": 200}),
        (50, ["s1", "s2", "s3"], ["c1"], {"s1": 34, "s2": 33, "s3": 33, "c1": 100}),
        (25, ["s1", "s2"], ["c1", "c2"], {"s1": 75, "s2": 75, "c1": 25, "c2": 25}),
        (100, [], ["c1"], {"c1": 200}),
        (0, ["s1"], [], {"s1": 200}),
        # More canary servers than weight at K=2: K grows so that each canary gets at least 1.
        (
            1,
            ["s1", "s2", "s3", "s4"],
            ["c1", "c2", "c3"],
            {"s1": 75, "s2": 74, "s3": 74, "s4": 74} | {"c1": 1, "c2": 1, "c3": 1},
        ),
    ],
)
def test_typical_splits(percent: int, stable: list[str], canary: list[str], expected: dict[str, int]) -> None:
    """Weights for typical canary splits: they sum to about 200, and the first servers get the remainder."""
    shares = {"stable": Share(100 - percent, tuple(stable)), "canary": Share(percent, tuple(canary))}
    assert weights_for_shares(shares) == expected


def test_no_server_idles_when_weights_allow() -> None:
    """At 1% with five canaries, each canary still gets a weight of at least 1."""
    shares = {"stable": Share(99, ("v1-0", "v1-1")), "canary": Share(1, tuple(f"v2-{i}" for i in range(5)))}
    assert min(weights_for_shares(shares).values()) >= 1


def test_exactness_wins_over_idle_servers_when_256_is_too_small() -> None:
    """64 canaries at 1% against one stable server cannot all get weight: the share stays exact."""
    shares = {"stable": Share(99, ("v1-0",)), "canary": Share(1, tuple(f"v2-{i}" for i in range(64)))}
    weights = weights_for_shares(shares)
    assert realised_percents(weights, shares)["canary"] == Fraction(1)
    assert weights["v1-0"] <= MAX_WEIGHT


def test_all_arms_at_0_percent_close_the_backend() -> None:
    """Shares that are all 0% (an A/B backend whose canary is off) give every server weight 0."""
    weights = weights_for_shares({"canary": Share(0, ("v2-1", "v2-2"))})
    assert weights == {"v2-1": 0, "v2-2": 0}


@pytest.mark.parametrize(
    ("shares", "message"),
    [
        ({"stable": Share(-1, ("s",)), "canary": Share(101, ("c",))}, "within 0..100"),
        ({"stable": Share(90, ("s",)), "canary": Share(20, ("c",))}, "add up to 100"),
        ({"stable": Share(90, ("s",)), "canary": Share(10, ())}, "no canary server"),
        ({"stable": Share(90, ()), "canary": Share(10, ("c",))}, "no stable server"),
        ({"stable": Share(90, ("s",)), "canary": Share(10, ("s",))}, "two shares"),
        ({"stable": Share(90, ("s", "s")), "canary": Share(10, ("c",))}, "twice"),
        ({"stable": Share(True, ("s",))}, "integer percent"),
    ],
)
def test_impossible_shares_are_refused(shares: dict[str, Share], message: str) -> None:
    """Out-of-range or unbalanced percents, traffic for no server, a server in two arms: ValueError."""
    with pytest.raises(ValueError, match=message):
        weights_for_shares(shares)

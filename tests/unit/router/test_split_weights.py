"""split_weights: a canary percentage as per-server HAProxy weights."""

from __future__ import annotations

from fractions import Fraction

import pytest

from fridaymorning.router import split_weights


def canary_share(weights: dict[str, int], canary_servers: list[str]) -> Fraction:
    total = sum(weights.values())
    return Fraction(sum(weights[server] for server in canary_servers), total)


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
def test_split_table(percent: int, stable: list[str], canary: list[str], expected: dict[str, int]) -> None:
    """Weights for typical splits: totals near 200, the canary share exact, 0 % and 100 % absolute."""
    assert split_weights(percent, stable, canary) == expected


@pytest.mark.parametrize("stable_count", [1, 2, 3, 7, 64])
@pytest.mark.parametrize("canary_count", [1, 2, 5, 64])
def test_share_is_exact_and_weights_in_range(stable_count: int, canary_count: int) -> None:
    """For every percentage and server count, the share is exact and every weight is within 0..256."""
    stable = [f"v1-{i}" for i in range(stable_count)]
    canary = [f"v2-{i}" for i in range(canary_count)]
    for percent in range(101):
        weights = split_weights(percent, stable, canary)
        assert canary_share(weights, canary) == Fraction(percent, 100)
        assert all(0 <= weight <= 256 for weight in weights.values())


def test_no_server_idles_when_weights_allow() -> None:
    """At 1 % with five canaries, each canary still gets a weight of at least 1."""
    weights = split_weights(1, ["v1-0", "v1-1"], [f"v2-{i}" for i in range(5)])
    assert min(weights.values()) >= 1


def test_exactness_wins_over_idle_servers_when_256_is_too_small() -> None:
    """64 canaries at 1 % against one stable server cannot all get weight: the share stays exact."""
    canary = [f"v2-{i}" for i in range(64)]
    weights = split_weights(1, ["v1-0"], canary)
    assert canary_share(weights, canary) == Fraction(1, 100)
    assert weights["v1-0"] <= 256


@pytest.mark.parametrize(
    ("percent", "stable", "canary", "message"),
    [
        (-1, ["s"], ["c"], "within 0..100"),
        (101, ["s"], ["c"], "within 0..100"),
        (10, ["s"], [], "no canary server"),
        (10, [], ["c"], "no stable server"),
        (10, ["s"], ["s"], "both stable and canary"),
    ],
)
def test_impossible_splits_are_refused(
    percent: int, stable: list[str], canary: list[str], message: str
) -> None:
    """Out-of-range percentages, an empty arm that should get traffic, and overlaps raise ValueError."""
    with pytest.raises(ValueError, match=message):
        split_weights(percent, stable, canary)

"""The judge's pass bounds against values computed with the authors' `confseq` package.

tests/data/confseq_reference.json was written by bench/confseq_reference.py (which needs confseq); these
tests need only the file.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from fridaymorning.analysis.stats import (
    OPTIMIZE_AT,
    beta_binomial_log_mixture,
    quantile_lower_rank,
    quantile_upper_rank,
    rate_lower_bound,
    rate_upper_bound,
    stitched_boundary,
)

REFERENCE: dict[str, Any] = json.loads(
    (Path(__file__).resolve().parents[2] / "data" / "confseq_reference.json").read_text()
)


def test_reference_is_tuned_like_the_judge() -> None:
    """The reference was computed for the number of trials the judge's bounds are tuned for."""
    assert REFERENCE["t_opt"] == OPTIMIZE_AT
    assert len(REFERENCE["log_mixture"]) > 100 and len(REFERENCE["quantile_ranks"]) > 50


def test_log_mixture_matches_confseq() -> None:
    """beta_binomial_log_mixture gives confseq's value for every (s, v, v_opt, g, h, alpha_opt, sides)."""
    for case in REFERENCE["log_mixture"]:
        mine = beta_binomial_log_mixture(
            case["s"], case["v"], case["v_opt"], case["g"], case["h"], case["alpha_opt"], case["one_sided"]
        )
        assert mine == pytest.approx(case["log_mixture"], abs=1e-7, rel=1e-9), case


def test_quantile_ranks_match_confseq() -> None:
    """The quantile ranks are those of confseq's one-sided beta-binomial mixture boundary, exactly."""
    for case in REFERENCE["quantile_ranks"]:
        count, q, alpha = case["count"], case["q"], case["alpha"]
        assert quantile_upper_rank(count, q, alpha) == case["upper_rank"], case
        assert quantile_lower_rank(count, q, alpha) == case["lower_rank"], case


def test_rate_bounds_match_confseq_and_round_outward() -> None:
    """The rate bounds are confseq's one-sided mixture bounds, never inside them, within 1e-6 of the range."""
    for case in REFERENCE["rates"]:
        events, trials, alpha = case["events"], case["trials"], case["alpha"]
        upper, lower = rate_upper_bound(events, trials, alpha), rate_lower_bound(events, trials, alpha)
        estimate = events / trials
        assert case["upper"] - 1e-11 <= upper <= case["upper"] + 1e-6 * (1.0 - estimate) + 1e-11, case
        assert case["lower"] - 1e-6 * estimate - 1e-11 <= lower <= case["lower"] + 1e-11, case


def test_mixture_ranks_are_tighter_than_stitching_where_canaries_pass() -> None:
    """From 1,000 to 10,000 samples the mixture's p99 ranks are closer to nq than the stitched boundary's."""
    alpha, q = 0.005, 0.99
    for count in (1000, 2000, 3000, 5000, 10000):
        stitched_up = math.floor(count * q + stitched_boundary(count * q * (1 - q), alpha, (1 - q) / 3)) + 1
        stitched_down = math.ceil(count * q - stitched_boundary(count * q * (1 - q), alpha, q / 3))
        assert quantile_upper_rank(count, q, alpha) < stitched_up
        assert quantile_lower_rank(count, q, alpha) > stitched_down

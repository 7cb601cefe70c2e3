"""Reference values for the judge's pass bounds, computed with the `confseq` package.

    python bench/confseq_reference.py [--out tests/data/confseq_reference.json]

The judge's rate bounds and quantile ranks (fridaymorning.analysis.stats) are beta-binomial mixture
confidence sequences (Howard, Ramdas, McAuliffe & Sekhon 2021; Howard & Ramdas 2022). `confseq` is the
authors' implementation. This script computes, with confseq only:

- `log_mixture`: `confseq.boundaries.beta_binomial_log_mixture(s, v, v_opt, g, h, alpha_opt, one_sided)`
  over a grid of arguments;
- `quantile_ranks`: the ranks floor(nq + B) + 1 and ceil(nq - B') of the q-quantile's upper and lower
  bounds, with B and B' from `confseq.boundaries.beta_binomial_mixture_bound` (one-sided, v = nq(1 - q),
  v_opt = q(1 - q)·t_opt, alpha_opt = alpha);
- `rates`: the one-sided rate bounds, found by bisection (to 1e-12) on the p where confseq's one-sided
  mixture (v_opt = p(1 - p)·t_opt, alpha_opt = alpha) reaches log(1/alpha), as confseq's own
  `bernoulli_confidence_interval` does for its two-sided interval.

and writes them as JSON. tests/unit/analysis/test_confseq_reference.py compares the judge's bounds with
the shipped file, so the tests do not need confseq.

confseq 0.0.11 (the latest on PyPI) does not build from its source distribution on Python 3.11: its
build pins pybind11 2.6, which does not compile against 3.11's headers. It builds with a newer pybind11
and Boost's headers (Debian: libboost-dev): unpack the sdist, change `pybind11~=2.6.0` to `pybind11>=2.10`
in pyproject.toml, and `pip install --no-deps .` there. It is not a dependency of fridaymorning.

The last line printed is one JSON object: how many values were written, and how far the judge's
bounds are from confseq's (when fridaymorning is importable).
"""

from __future__ import annotations

import argparse
import json
import math
from functools import partial
from pathlib import Path
from typing import Any

T_OPT = 2000.0  # fridaymorning.analysis.stats.OPTIMIZE_AT
ALPHAS = (0.01, 0.005, 0.01 / 6)
DEFAULT_OUT = Path(__file__).resolve().parent.parent / "tests" / "data" / "confseq_reference.json"


def log_mixture_cases(boundaries: Any) -> list[dict[str, Any]]:
    """confseq's beta-binomial log mixture over a grid of (s, v, v_opt, g, h, alpha_opt, one_sided)."""
    cases = []
    for p in (0.001, 0.01, 0.1, 0.5, 0.9, 0.99):
        for g, h in ((p, 1.0 - p), (1.0 - p, p)):
            for n in (10.0, 300.0, 3000.0, 50000.0):
                v = n * g * h
                for z in (-2.0, 0.0, 1.0, 3.0, 5.0):
                    s = z * math.sqrt(v)
                    if not -g * n <= s <= h * n:
                        continue
                    for alpha_opt, one_sided in ((0.005, True), (0.05, True), (0.01, False)):
                        v_opt = T_OPT * g * h
                        value = boundaries.beta_binomial_log_mixture(s, v, v_opt, g, h, alpha_opt, one_sided)
                        cases.append(
                            {
                                "s": s,
                                "v": v,
                                "v_opt": v_opt,
                                "g": g,
                                "h": h,
                                "alpha_opt": alpha_opt,
                                "one_sided": one_sided,
                                "log_mixture": value,
                            }
                        )
    return cases


def quantile_rank_cases(boundaries: Any) -> list[dict[str, Any]]:
    """Upper and lower ranks of the q-quantile's confidence sequence, from confseq's mixture bound."""
    cases = []
    for q in (0.5, 0.9, 0.99):
        for alpha in ALPHAS:
            for n in (20, 100, 461, 1000, 2000, 3000, 5000, 10000, 30000, 100000):
                v, v_opt = n * q * (1.0 - q), T_OPT * q * (1.0 - q)
                up = boundaries.beta_binomial_mixture_bound(v, alpha, v_opt, q, 1.0 - q, alpha, True)
                down = boundaries.beta_binomial_mixture_bound(v, alpha, v_opt, 1.0 - q, q, alpha, True)
                cases.append(
                    {
                        "count": n,
                        "q": q,
                        "alpha": alpha,
                        "upper_boundary": up,
                        "lower_boundary": down,
                        "upper_rank": math.floor(n * q + up) + 1,
                        "lower_rank": math.ceil(n * q - down),
                    }
                )
    return cases


def _bisect(excess: Any, inside: float, outside: float) -> float:
    """The point between `inside` (excess < 0) and `outside` (excess ≥ 0) where excess turns ≥ 0."""
    for _ in range(200):
        if abs(outside - inside) <= 1e-12:
            break
        middle = (inside + outside) / 2.0
        if excess(middle) >= 0.0:
            outside = middle
        else:
            inside = middle
    return outside


def _excess(boundaries: Any, events: float, trials: int, alpha: float, upward: bool, p: float) -> float:
    """confseq's one-sided log mixture at rate p minus log(1/alpha), for rates above p or below it."""
    v_opt, v = T_OPT * p * (1.0 - p), trials * p * (1.0 - p)
    if upward:
        mixture = boundaries.beta_binomial_log_mixture(events - trials * p, v, v_opt, p, 1.0 - p, alpha, True)
    else:
        mixture = boundaries.beta_binomial_log_mixture(trials * p - events, v, v_opt, 1.0 - p, p, alpha, True)
    return float(mixture) - math.log(1.0 / alpha)


def rate_cases(boundaries: Any) -> list[dict[str, Any]]:
    """One-sided rate bounds from confseq's one-sided beta-binomial mixture, by bisection on p."""
    cases = []
    for alpha in ALPHAS:
        for trials in (10, 100, 1000, 3000, 10000, 100000):
            for rate in (0.0, 0.001, 0.005, 0.01, 0.05, 0.3):
                events = float(round(rate * trials))
                below = partial(_excess, boundaries, events, trials, alpha, False)
                above = partial(_excess, boundaries, events, trials, alpha, True)
                estimate = events / trials
                upper = _bisect(below, estimate, 1.0 - 1e-15) if estimate < 1.0 else 1.0
                lower = _bisect(above, estimate, 1e-15) if events > 0 else 0.0
                cases.append(
                    {"events": events, "trials": trials, "alpha": alpha, "upper": upper, "lower": lower}
                )
    return cases


def compare(reference: dict[str, Any]) -> dict[str, Any]:
    """How far fridaymorning's bounds are from the reference (largest differences)."""
    from fridaymorning.analysis import stats

    mixture_error = max(
        abs(
            stats.beta_binomial_log_mixture(
                c["s"], c["v"], c["v_opt"], c["g"], c["h"], c["alpha_opt"], c["one_sided"]
            )
            - c["log_mixture"]
        )
        for c in reference["log_mixture"]
    )
    rank_mismatches = sum(
        stats.quantile_upper_rank(c["count"], c["q"], c["alpha"]) != c["upper_rank"]
        or stats.quantile_lower_rank(c["count"], c["q"], c["alpha"]) != c["lower_rank"]
        for c in reference["quantile_ranks"]
    )
    rate_error = max(
        max(
            abs(stats.rate_upper_bound(c["events"], c["trials"], c["alpha"]) - c["upper"]),
            abs(stats.rate_lower_bound(c["events"], c["trials"], c["alpha"]) - c["lower"]),
        )
        for c in reference["rates"]
    )
    return {
        "log_mixture_max_abs_error": mixture_error,
        "quantile_rank_mismatches": rank_mismatches,
        "rate_bound_max_abs_error": rate_error,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    arguments = parser.parse_args()

    import confseq
    from confseq import boundaries

    reference = {
        "source": "confseq.boundaries (beta_binomial_log_mixture, beta_binomial_mixture_bound)",
        "confseq_version": getattr(confseq, "__version__", "0.0.11"),
        "t_opt": T_OPT,
        "log_mixture": log_mixture_cases(boundaries),
        "quantile_ranks": quantile_rank_cases(boundaries),
        "rates": rate_cases(boundaries),
    }
    arguments.out.parent.mkdir(parents=True, exist_ok=True)
    arguments.out.write_text(json.dumps(reference, indent=1) + "\n")
    counts = {key: len(reference[key]) for key in ("log_mixture", "quantile_ranks", "rates")}
    print(f"wrote {arguments.out.name}: {counts}")
    summary: dict[str, Any] = {"compared_against": "confseq", "values": counts}
    try:
        summary["fridaymorning"] = compare(reference)
    except ImportError:
        summary["fridaymorning"] = None
    for q in (0.5, 0.9, 0.99):
        row = [c for c in reference["quantile_ranks"] if c["q"] == q and c["alpha"] == 0.005]
        print(f"q={q}: " + ", ".join(f"n={c['count']} [{c['lower_rank']}, {c['upper_rank']}]" for c in row))
    print(json.dumps(summary))


if __name__ == "__main__":
    main()

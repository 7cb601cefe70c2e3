"""Reference judges for the simulator, implemented from their documented algorithms (no code copied).

`flagger` — Flagger's canary analysis as in its Istio tutorial: every `interval` (60 s) the canary's
request success rate over the last interval must be ≥ 99% and its p99 ≤ 500 ms. A failed check (or no
data: Flagger's "no values found") increments `failedChecks`; at `threshold` (5) failed checks the canary
is rolled back. A passed check raises the canary weight by `stepWeight` (10) up to `maxWeight` (50);
a passed check at maxWeight promotes. The canary starts at stepWeight. Flagger judges the canary
alone; the baseline is not compared.
(https://docs.flagger.app/tutorials/istio-progressive-delivery, .../usage/how-it-works)

`kayenta` — Kayenta's NetflixACAJudge as Spinnaker runs it: every 60 s interval, each metric's
per-second samples of canary and baseline are compared with a two-sided Mann-Whitney U test at
confidence 0.98; a metric fails when the difference is significant and the canary is higher. The
interval's score is 100 x passed / metrics with data. A score ≤ the marginal threshold (75) fails the
analysis at once (rollback); after the last interval (lifetime 5 min) a score ≥ the pass threshold (95)
promotes, anything else rolls back. Metrics: error rate, p50 and p99 of Tr. Kayenta compares fixed-size
canary and baseline groups; here the canary keeps 10% of the traffic (the first step of fridaymorning's
default plan) for the whole analysis. An interval without data for any metric scores 0 (assumption:
Kayenta's "no data" fails closed here).
(https://spinnaker.io/docs/guides/user/canary/judge/, Kayenta's docs/canary-config.md)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from fridaymorning.analysis.stats import VALUES, FloatArray


@dataclass(frozen=True, slots=True)
class FlaggerAnalysis:
    """The documented Istio-tutorial analysis of Flagger."""

    interval_s: int = 60
    threshold: int = 5
    step_weight: int = 10
    max_weight: int = 50
    min_success_rate: float = 0.99
    max_p99_ms: float = 500.0


@dataclass(frozen=True, slots=True)
class KayentaAnalysis:
    """Spinnaker canary analysis with Kayenta's NetflixACAJudge."""

    interval_s: int = 60
    lifetime_s: int = 300
    canary_weight: int = 10
    confidence: float = 0.98
    marginal_threshold: float = 75.0
    pass_threshold: float = 95.0


def histogram_quantile(histogram: FloatArray, q: float) -> float:
    """The q-quantile of a histogram as DDSketch reports it; NaN when empty."""
    count = float(histogram.sum())
    if count <= 0:
        return math.nan
    index = int(np.searchsorted(np.cumsum(histogram), q * (count - 1.0), side="right"))
    return float(VALUES[min(index, len(VALUES) - 1)])


def flagger_check(
    analysis: FlaggerAnalysis, requests: int, failed: int, histogram: FloatArray
) -> tuple[bool, str]:
    """One Flagger check on the canary's last interval: (passed, why)."""
    if requests <= 0:
        return False, "no values found for the request success rate"
    success = 1.0 - failed / requests
    p99 = histogram_quantile(histogram, 0.99)
    if success < analysis.min_success_rate:
        return False, f"request success rate {success:.2%} < {analysis.min_success_rate:.0%}"
    if not p99 <= analysis.max_p99_ms:
        return False, f"request duration p99 {p99:.0f} ms > {analysis.max_p99_ms:.0f} ms"
    return True, f"success rate {success:.2%}, p99 {p99:.0f} ms"


def kayenta_score(
    analysis: KayentaAnalysis, canary: dict[str, FloatArray], baseline: dict[str, FloatArray]
) -> tuple[float, str]:
    """An interval's score from per-second samples of each metric, with the metrics that failed."""
    from scipy.stats import mannwhitneyu

    passed = counted = 0
    failed_metrics = []
    for metric, canary_samples in canary.items():
        canary_values = canary_samples[~np.isnan(canary_samples)]
        baseline_values = baseline[metric][~np.isnan(baseline[metric])]
        if len(canary_values) < 1 or len(baseline_values) < 1:
            continue
        counted += 1
        if (
            np.array_equal(np.unique(canary_values), np.unique(baseline_values))
            and len(np.unique(canary_values)) == 1
        ):
            passed += 1  # identical constant samples: no difference to test
            continue
        result = mannwhitneyu(canary_values, baseline_values, alternative="two-sided")
        higher = float(result.statistic) > len(canary_values) * len(baseline_values) / 2.0
        if float(result.pvalue) < 1.0 - analysis.confidence and higher:
            failed_metrics.append(metric)
        else:
            passed += 1
    if counted == 0:
        return 0.0, "no data for any metric"
    score = 100.0 * passed / counted
    return score, f"score {score:.0f}" + (f" (high: {', '.join(failed_metrics)})" if failed_metrics else "")


def per_second_metrics(
    requests: FloatArray, failed: FloatArray, histograms: FloatArray
) -> dict[str, FloatArray]:
    """Kayenta's metrics as per-second samples: error rate, p50 and p99 (NaN for seconds without requests)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        error_rate = np.where(requests > 0, failed / np.maximum(requests, 1), np.nan)
    counts = histograms.sum(axis=1)
    cumulative = np.cumsum(histograms, axis=1)
    metrics = {"error_rate": error_rate}
    for name, q in (("p50", 0.5), ("p99", 0.99)):
        ranks = q * (counts - 1.0)
        indexes = (cumulative <= ranks[:, None]).sum(axis=1)
        values = VALUES[np.minimum(indexes, len(VALUES) - 1)]
        metrics[name] = np.where(counts > 0, values, np.nan)
    return metrics

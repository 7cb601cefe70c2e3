"""Reference judges for the simulator: Flagger's scheduler and Kayenta's NetflixACAJudge, as they decide.

Both are written here from reading their sources and documentation; no code is copied.

`flagger` — Flagger's canary analysis with the Istio tutorial's settings (interval 1 m, threshold 5,
stepWeight 10, maxWeight 50, request-success-rate ≥ 99%, request-duration p99 ≤ 500 ms), run the way
its scheduler runs it (fluxcd/flagger, pkg/controller/scheduler.go `advanceCanary`, and
scheduler_metrics.go `runBuiltinMetricChecks`). Every interval, a tick:

1. if the failed checks already reached the threshold, roll back; the threshold is checked when a tick
   begins, so the check that reaches it is acted upon one interval later;
2. otherwise run the checks on the canary's last interval: the success rate of non-5xx responses, and
   the p99 that Prometheus' `histogram_quantile` interpolates in Istio's request-duration buckets. A
   failed check, or a query without values (no canary traffic), adds one failed check and changes nothing;
3. a passed check raises the canary weight by stepWeight; at maxWeight a passed check promotes.

Failed checks are never reset during an analysis. The canary's first traffic here is the tick that
set it to stepWeight (Flagger's first tick of an analysis only shifts traffic). Flagger judges the
canary alone; the baseline is not compared.
(https://docs.flagger.app/usage/how-it-works, https://docs.flagger.app/tutorials/istio-progressive-delivery)

`kayenta` — Spinnaker's canary analysis with Kayenta's default judge NetflixACAJudge-v1.0
(spinnaker/kayenta, kayenta-judge `NetflixACAJudge.scala`, `MannWhitneyClassifier.scala`,
`IQRDetector.scala`, `ThresholdScoreClassifier.scala`; kayenta-mannwhitney `MannWhitney.scala`, which
follows R's asymptotic `wilcox.test` confidence interval). Every 60 s interval, for each metric (error
rate, p50 and p99 of Tr, as per-second samples of canary and baseline):

1. NaNs (seconds without requests) are removed, then outliers: values beyond min(P1, Q1 - 3·IQR) or
   max(P99, Q3 + 3·IQR) (IQRDetector with factor 3 and reduced sensitivity; percentiles as Apache
   Commons Math's StatUtils.percentile estimates them);
2. empty samples are NODATA (left out of the score); identical samples, or a single value shared by
   both, pass;
3. the Mann-Whitney-Wilcoxon two-sample comparison of canary - baseline: the Hodges-Lehmann shift
   estimate and its 98% confidence interval, both roots of the normal approximation of the rank-sum
   statistic with continuity and tie corrections;
4. the metric is High (fails) when the interval's lower end exceeds the tolerance 0.25 x |estimate|, and
   the effect size (mean of canary / mean of baseline) is at least `allowedIncrease` (1.0 by default).

The interval's score is 100 x passed / metrics with data. A score below the marginal threshold (75)
fails the analysis at once (rollback); after the last interval (lifetime 5 min) a score at or above the
pass threshold (95) promotes, anything else rolls back. Kayenta compares fixed canary and baseline
groups; here the canary keeps 10% of the traffic (the first step of fridaymorning's default plan) for
the whole analysis, and its metric samples are per second (Kayenta reads them at the metric store's
step). An interval without data for any metric scores 0 (assumption: no data fails closed here).
(https://spinnaker.io/docs/guides/user/canary/judge/, https://spinnaker.io/docs/guides/user/canary/config/)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from fridaymorning.analysis.stats import VALUES, FloatArray

# Istio's default buckets of istio_request_duration_milliseconds (le, in ms); +Inf beyond the last.
ISTIO_DURATION_BUCKETS_MS: tuple[float, ...] = (
    1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 300000, 600000, 1800000, 3600000,
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class FlaggerAnalysis:
    """The Istio tutorial's analysis of Flagger."""

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
    tolerance: float = 0.25  # the interval must clear this fraction of the Hodges-Lehmann estimate
    allowed_increase: float = 1.0  # effectSize.allowedIncrease: canary mean / baseline mean at least this
    outlier_factor: float = 3.0
    marginal_threshold: float = 75.0
    pass_threshold: float = 95.0


def histogram_quantile(histogram: FloatArray, q: float) -> float:
    """The q-quantile of a histogram as DDSketch reports it; NaN when empty."""
    count = float(histogram.sum())
    if count <= 0:
        return math.nan
    index = int(np.searchsorted(np.cumsum(histogram), q * (count - 1.0), side="right"))
    return float(VALUES[min(index, len(VALUES) - 1)])


def prometheus_quantile(
    histogram: FloatArray, q: float, bounds: tuple[float, ...] = ISTIO_DURATION_BUCKETS_MS
) -> float:
    """The q-quantile Prometheus' histogram_quantile gives for these latencies in cumulative buckets.

    Each latency bin counts in the buckets whose bound is at or above its value. The quantile is
    interpolated linearly inside the bucket that holds rank q x count (from 0 in the first bucket); in
    the +Inf bucket it is the last finite bound. NaN without requests.
    """
    count = float(histogram.sum())
    if count <= 0:
        return math.nan
    cumulative = np.cumsum(histogram)
    edges = np.asarray(bounds, dtype=np.float64)
    in_buckets = cumulative[np.searchsorted(VALUES, edges, side="right") - 1]
    rank = q * count
    bucket = int(np.searchsorted(in_buckets, rank, side="left"))
    if bucket >= len(edges):
        return float(edges[-1])
    start = 0.0 if bucket == 0 else float(edges[bucket - 1])
    below = 0.0 if bucket == 0 else float(in_buckets[bucket - 1])
    inside = float(in_buckets[bucket]) - below
    if inside <= 0:
        return float(edges[bucket])
    return start + (float(edges[bucket]) - start) * (rank - below) / inside


def flagger_check(
    analysis: FlaggerAnalysis, requests: int, failed: int, histogram: FloatArray
) -> tuple[bool, str]:
    """One run of Flagger's built-in checks on the canary's last interval: (passed, why)."""
    if requests <= 0:
        return False, "no values found for the request success rate"
    success = 1.0 - failed / requests
    if success < analysis.min_success_rate:
        return False, f"request success rate {success:.2%} < {analysis.min_success_rate:.0%}"
    p99 = prometheus_quantile(histogram, 0.99)
    if math.isnan(p99):
        return False, "no values found for the request duration"
    if p99 > analysis.max_p99_ms:
        return False, f"request duration p99 {p99:.0f} ms > {analysis.max_p99_ms:.0f} ms"
    return True, f"success rate {success:.2%}, p99 {p99:.0f} ms"


# --- Kayenta -------------------------------------------------------------------------------------------


def commons_percentile(sorted_values: FloatArray, percent: float) -> float:
    """Apache Commons Math's default percentile estimate: position p(n + 1)/100, interpolated."""
    count = len(sorted_values)
    position = percent * (count + 1) / 100.0
    if position < 1:
        return float(sorted_values[0])
    if position >= count:
        return float(sorted_values[-1])
    low = math.floor(position)
    fraction = position - low
    return float(sorted_values[low - 1] + fraction * (sorted_values[low] - sorted_values[low - 1]))


def without_outliers(values: FloatArray, factor: float) -> FloatArray:
    """The values inside the IQR detector's fences (factor x IQR beyond the quartiles, at least P1..P99)."""
    if len(values) == 0:
        return values
    ordered = np.sort(values)
    q1, q3 = commons_percentile(ordered, 25), commons_percentile(ordered, 75)
    iqr = q3 - q1
    lower = min(commons_percentile(ordered, 1), q1 - factor * iqr)
    upper = max(commons_percentile(ordered, 99), q3 + factor * iqr)
    kept: FloatArray = values[(values >= lower) & (values <= upper)]
    return kept


def hodges_lehmann_interval(
    canary: FloatArray, baseline: FloatArray, confidence: float
) -> tuple[float, float, float]:
    """(lower, estimate, upper) of the shift canary - baseline, as R's asymptotic wilcox.test finds them.

    The standardised rank-sum statistic of (canary - mu) against the baseline, with continuity and tie
    corrections, is a decreasing step function of mu; each bound is where it crosses -/+ z((1 + confidence)/2)
    and the estimate where it crosses 0. Its steps sit at the pairwise differences, so each root is the
    pairwise difference where the crossing happens (or an end of their range when none does), which is
    where a bracketing root finder on the same function ends. The tie correction counts the ties within
    each sample (at a root's neighbourhood no shifted canary value ties a baseline value).
    """
    from scipy.stats import norm

    differences = np.sort(np.subtract.outer(canary, baseline).ravel())
    pairs = len(differences)
    n_canary, n_baseline = len(canary), len(baseline)
    total = n_canary + n_baseline
    ties = sum(_tie_term(sample) for sample in (canary, baseline))
    variance = n_canary * n_baseline / 12.0 * ((total + 1) - ties / (total * (total - 1)))
    if variance <= 0:
        raise ValueError("cannot compute a confidence interval when all observations are tied")
    sigma = math.sqrt(variance)
    distinct, counts = np.unique(differences, return_counts=True)
    at_or_below = np.cumsum(counts)
    # The statistic just above each distinct difference, and exactly at the lowest and highest one.
    above = pairs / 2.0 - at_or_below
    at_lowest = pairs / 2.0 - 0.5 * counts[0]
    at_highest = -pairs / 2.0 + 0.5 * counts[-1]
    z = float(norm.ppf(1.0 - (1.0 - confidence) / 2.0))

    def root(target: float) -> float:
        standardised = (above - 0.5 * np.sign(above)) / sigma - target
        if (at_lowest - 0.5 * np.sign(at_lowest)) / sigma - target <= 0:
            return float(distinct[0])
        if (at_highest - 0.5 * np.sign(at_highest)) / sigma - target >= 0:
            return float(distinct[-1])
        return float(distinct[int(np.argmax(standardised <= 0))])

    return root(z), root(0.0), root(-z)


def _tie_term(sample: FloatArray) -> float:
    _, counts = np.unique(sample, return_counts=True)
    return float(np.sum(counts.astype(np.float64) ** 3 - counts))


def kayenta_classify(analysis: KayentaAnalysis, canary: FloatArray, baseline: FloatArray) -> str:
    """One metric's classification: 'nodata', 'pass' or 'high' (the canary is higher)."""
    canary = without_outliers(canary[~np.isnan(canary)], analysis.outlier_factor)
    baseline = without_outliers(baseline[~np.isnan(baseline)], analysis.outlier_factor)
    if len(canary) == 0 or len(baseline) == 0:
        return "nodata"
    if (
        np.array_equal(np.sort(canary), np.sort(baseline))
        or len(np.unique(np.concatenate((canary, baseline)))) == 1
    ):
        return "pass"
    mean_ratio = 1.0 if float(np.mean(baseline)) == 0.0 else float(np.mean(canary)) / float(np.mean(baseline))
    if len(np.unique(canary)) == 1 and len(np.unique(baseline)) == 1:
        # Kayenta adds tiny noise to two constant samples: the interval then sits at their difference.
        shift = float(canary[0] - baseline[0])
        lower, estimate = shift, shift
    else:
        lower, estimate, _ = hodges_lehmann_interval(canary, baseline, analysis.confidence)
    high = lower > analysis.tolerance * abs(estimate) and mean_ratio >= analysis.allowed_increase
    return "high" if high else "pass"


def kayenta_score(
    analysis: KayentaAnalysis, canary: dict[str, FloatArray], baseline: dict[str, FloatArray]
) -> tuple[float, str]:
    """An interval's score from per-second samples of each metric, with the metrics classified High."""
    classes = {
        metric: kayenta_classify(analysis, samples, baseline[metric]) for metric, samples in canary.items()
    }
    counted = [metric for metric, label in classes.items() if label != "nodata"]
    if not counted:
        return 0.0, "no data for any metric"
    high = [metric for metric in counted if classes[metric] == "high"]
    score = 100.0 * (len(counted) - len(high)) / len(counted)
    return score, f"score {score:.0f}" + (f" (high: {', '.join(high)})" if high else "")


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

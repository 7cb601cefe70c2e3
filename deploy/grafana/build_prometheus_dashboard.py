"""Build dashboards/fridaymorning-prometheus.json with Grafana's own schema types (grafana-foundation-sdk).

The JSON is generated, never edited by hand: the SDK's builders only accept the fields Grafana's
dashboard schema has, so a dashboard built here is one Grafana can load. A test rebuilds it and
compares it with the committed file.

    python deploy/grafana/build_prometheus_dashboard.py           # rewrite the JSON
    python deploy/grafana/build_prometheus_dashboard.py --check   # exit 1 if the JSON is out of date
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from grafana_foundation_sdk.builders import dashboard, prometheus, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import DataSourceRef, VariableRefresh, VariableSort

OUTPUT = Path(__file__).parent / "dashboards" / "fridaymorning-prometheus.json"
DATASOURCE = DataSourceRef(type_val="prometheus", uid="${datasource}")
SERVICE = 'service="$service"'  # fridaymorning's own metrics
NAME = 'name="$service"'  # Flagger's canary_* metrics
QUANTILES = (0.5, 0.9, 0.99)


def query(expr: str, legend: str, ref_id: str) -> prometheus.Dataquery:
    return prometheus.Dataquery().expr(expr).legend_format(legend).ref_id(ref_id).datasource(DATASOURCE)


def panel(title: str, description: str, unit: str, *queries: prometheus.Dataquery) -> timeseries.Panel:
    built = timeseries.Panel().title(title).description(description).unit(unit).datasource(DATASOURCE)
    for target in queries:
        built = built.with_target(target)
    return built.height(8).span(12)


def rate(metric: str) -> str:
    return f"sum by (version) (rate({metric}{{{SERVICE}}}[$__rate_interval]))"


def latency_query(quantile: float, ref_id: str) -> prometheus.Dataquery:
    buckets = f"sum by (version, le) (rate(fm_response_time_seconds_bucket{{{SERVICE}}}[$__rate_interval]))"
    legend = f"{{{{version}}}} p{quantile * 100:g}"
    return query(f"histogram_quantile({quantile:g}, {buckets})", legend, ref_id)


def panels() -> list[timeseries.Panel]:
    return [
        panel(
            "Requests per second",
            "Each version's requests, from HAProxy's logs",
            "reqps",
            query(rate("fm_requests_total"), "{{version}}", "A"),
        ),
        panel(
            "Error rate",
            "Requests that failed because of the server or the proxy, as a share of each version's requests",
            "percentunit",
            query(f"{rate('fm_request_failures_total')} / {rate('fm_requests_total')}", "{{version}}", "A"),
        ),
        panel(
            "Response time p50 / p90 / p99",
            "HAProxy's Tr per version, from the latency histogram's buckets",
            "s",
            *(latency_query(quantile, ref_id) for quantile, ref_id in zip(QUANTILES, "ABC", strict=True)),
        ),
        panel(
            "Traffic weight",
            "Percent of the traffic as set: the canary's, and the primary's",
            "percent",
            query(f"canary_weight{{{NAME}}}", "{{workload}}", "A"),
        ),
        panel(
            "Canary status",
            "Flagger's encoding: 0 running, 1 succeeded or idle, 2 failed; and the rollout's step",
            "none",
            query(f"canary_status{{{NAME}}}", "status", "A"),
            query(f"fm_rollout_step{{{SERVICE}}}", "step", "B"),
        ),
        panel(
            "Latest verdict: checks against their thresholds",
            "Each check's confidence bound and the threshold it is compared with",
            "none",
            query(f"fm_check_bound{{{SERVICE}}}", "{{check}} bound", "A"),
            query(f"fm_check_threshold{{{SERVICE}}}", "{{check}} threshold", "B"),
        ),
        panel(
            "Collector: lines received and lost",
            "Log lines per second, and every count of lost or unusable lines",
            "short",
            query("rate(fm_collector_lines_total[$__rate_interval])", "lines/s", "A"),
            query("fm_collector_rejected_total", "rejected", "B"),
            query("fm_collector_late_requests_total", "late", "C"),
            query("fm_collector_reconciliation_missing_lines_total", "missing (reconciled)", "D"),
        ),
    ]


def annotations() -> list[dashboard.AnnotationQuery]:
    decisions = f'sum by (kind) (increase(fm_rollout_events_total{{{SERVICE}, kind!="verdict"}}[1m])) > 0'
    status_changes = f"changes(canary_status{{{NAME}}}[1m]) > 0"
    return [
        annotation("Decisions", decisions, "orange"),
        annotation("Status changes", status_changes, "red"),
    ]


def annotation(name: str, expr: str, color: str) -> dashboard.AnnotationQuery:
    return dashboard.AnnotationQuery().name(name).datasource(DATASOURCE).expr(expr).icon_color(color)


def build() -> dict[str, object]:
    """The dashboard as Grafana's JSON model."""
    built = (
        dashboard.Dashboard("fridaymorning (Prometheus)")
        .uid("fridaymorning-prometheus")
        .description("Canary rollouts judged by fridaymorning, from its /metrics scraped by Prometheus")
        .tags(["fridaymorning", "canary"])
        .time("now-30m", "now")
        .refresh("10s")
        .with_variable(dashboard.DatasourceVariable("datasource").label("Prometheus").type("prometheus"))
        .with_variable(
            dashboard.QueryVariable("service")
            .label("Service")
            .datasource(DATASOURCE)
            .query("label_values(canary_status, name)")
            .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
            .sort(VariableSort.ALPHABETICAL_ASC)
        )
        .annotations(annotations())
    )
    for each in panels():
        built = built.with_panel(each)
    model: dict[str, object] = json.loads(json.dumps(built.build(), cls=JSONEncoder))
    return model


def rendered() -> str:
    return json.dumps(build(), indent=2, sort_keys=True) + "\n"


def main(argv: list[str]) -> int:
    text = rendered()
    if "--check" in argv:
        if not OUTPUT.exists() or OUTPUT.read_text(encoding="utf-8") != text:
            print(f"{OUTPUT} is out of date: run python {Path(__file__).name}", file=sys.stderr)
            return 1
        return 0
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    OUTPUT.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

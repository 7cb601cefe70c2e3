"""Build dashboards/fridaymorning-influxdb.json with Grafana's own schema types (grafana-foundation-sdk).

The dashboard reads what fridaymorning's InfluxDB store writes (`store.url: influxdb://…`): the
per-second windows (`fm_window`) and the controller's decisions (`fm_decision`, one point per rollout
event with the canary's weight). The JSON is generated, never edited by hand; a test rebuilds it and
compares, and another runs every query of it against a real InfluxDB.

The SDK has no InfluxDB query type, so the InfluxQL targets are plain query objects (raw InfluxQL,
as Grafana's InfluxDB editor saves them in raw mode), and the annotation carries the InfluxDB fields
(`query`, `textColumn`, `tagsColumn`) that Grafana's InfluxDB data source reads.

    python deploy/grafana/build_influxdb_dashboard.py           # rewrite the JSON
    python deploy/grafana/build_influxdb_dashboard.py --check   # exit 1 if the JSON is out of date
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from grafana_foundation_sdk.builders import dashboard, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.cog.runtime import UnknownDataquery
from grafana_foundation_sdk.models.dashboard import DataSourceRef, VariableRefresh, VariableSort

OUTPUT = Path(__file__).parent / "dashboards" / "fridaymorning-influxdb.json"
DATASOURCE = DataSourceRef(type_val="influxdb", uid="${datasource}")
DATASOURCE_JSON = {"type": "influxdb", "uid": "${datasource}"}
# The service's backend, and its A/B backend ('web__ab') for A/B rollouts.
BACKEND = '"backend" =~ /^$service(__ab)?$/'
WINDOWS = f'FROM "fm_window" WHERE {BACKEND} AND $timeFilter'
BY_VERSION = 'GROUP BY time($__interval), "version"'
DECISIONS = 'FROM "fm_decision" WHERE "service" =~ /^$service$/ AND $timeFilter'


class InfluxQuery:
    """A raw InfluxQL target, built like the SDK's query builders."""

    def __init__(self, query: str, alias: str, ref_id: str) -> None:
        self.query, self.alias, self.ref_id = query, alias, ref_id

    def build(self) -> UnknownDataquery:
        return UnknownDataquery(
            {
                "datasource": DATASOURCE_JSON,
                "query": self.query,
                "rawQuery": True,
                "resultFormat": "time_series",
                "alias": self.alias,
                "refId": self.ref_id,
            }
        )


def panel(title: str, description: str, unit: str, *queries: InfluxQuery) -> timeseries.Panel:
    built = timeseries.Panel().title(title).description(description).unit(unit).datasource(DATASOURCE)
    for target in queries:
        built = built.with_target(target)  # type: ignore[arg-type]
    return built.height(8).span(12)


def panels() -> list[timeseries.Panel]:
    quantiles = ", ".join(f'mean("tr_p{q}") AS "p{q}"' for q in (50, 90, 99))
    return [
        panel(
            "Requests per second",
            "Each version's requests, from HAProxy's logs",
            "reqps",
            InfluxQuery(
                f'SELECT sum("requests") * 1000 / $__interval_ms {WINDOWS} {BY_VERSION} fill(0)',
                "$tag_version",
                "A",
            ),
        ),
        panel(
            "Error rate",
            "Requests that failed because of the server or the proxy, as a share of each version's requests",
            "percentunit",
            InfluxQuery(
                f'SELECT sum("failed") / sum("requests") {WINDOWS} {BY_VERSION}', "$tag_version", "A"
            ),
        ),
        panel(
            "Response time p50 / p90 / p99",
            "HAProxy's Tr per version: each second's quantile (from its sketch), averaged over the interval",
            "ms",
            InfluxQuery(f"SELECT {quantiles} {WINDOWS} {BY_VERSION}", "$tag_version $col", "A"),
        ),
        panel(
            "Canary weight",
            "The canary's percent of the traffic, as each decision of the controller set it",
            "percent",
            InfluxQuery(
                f'SELECT last("canary_weight") {DECISIONS} {BY_VERSION} fill(previous)', "$tag_version", "A"
            ),
        ),
        panel(
            "Failed requests and 5xx",
            "Failed requests per interval, and the responses with a 5xx status",
            "short",
            InfluxQuery(
                f'SELECT sum("failed") AS "failed", sum("status_5xx") AS "5xx" '
                f"{WINDOWS} {BY_VERSION} fill(0)",
                "$tag_version $col",
                "A",
            ),
        ),
    ]


def decisions_annotation() -> dict[str, Any]:
    built = (
        dashboard.AnnotationQuery()
        .name("Decisions")
        .datasource(DATASOURCE)
        .enable(True)
        .icon_color("orange")
        .build()
    )
    model: dict[str, Any] = json.loads(json.dumps(built, cls=JSONEncoder))
    model.update(
        {
            "query": f'SELECT "text", "event", "version" {DECISIONS}',
            "textColumn": "text",
            "tagsColumn": "event,version",
        }
    )
    return model


def build() -> dict[str, object]:
    """The dashboard as Grafana's JSON model."""
    built = (
        dashboard.Dashboard("fridaymorning (InfluxDB)")
        .uid("fridaymorning-influxdb")
        .description("Canary rollouts judged by fridaymorning, from the windows its InfluxDB store writes")
        .tags(["fridaymorning", "canary"])
        .time("now-30m", "now")
        .refresh("10s")
        .with_variable(dashboard.DatasourceVariable("datasource").label("InfluxDB").type("influxdb"))
        .with_variable(
            dashboard.QueryVariable("service")
            .label("Service")
            .datasource(DATASOURCE)
            .query('SHOW TAG VALUES FROM "fm_window" WITH KEY = "backend" WHERE "backend" !~ /__ab$/')
            .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
            .sort(VariableSort.ALPHABETICAL_ASC)
        )
    )
    for each in panels():
        built = built.with_panel(each)
    model: dict[str, Any] = json.loads(json.dumps(built.build(), cls=JSONEncoder))
    model["annotations"] = {"list": [decisions_annotation()]}
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

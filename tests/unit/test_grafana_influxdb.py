"""The InfluxDB dashboard under deploy/grafana/ is what Grafana's schema types build, and reads what the
InfluxDB store writes (its queries run on a real InfluxDB in tests/integration/test_remote_stores.py)."""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType

from fridaymorning.store.lineprotocol import DECISION_MEASUREMENT, WINDOW_MEASUREMENT
from fridaymorning.testing import load_script

GRAFANA = Path(__file__).resolve().parents[2] / "deploy" / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "fridaymorning-influxdb.json"


def build_script() -> ModuleType:
    return load_script(GRAFANA / "build_influxdb_dashboard.py")


def test_the_committed_influxdb_dashboard_is_the_one_the_sdk_builds() -> None:
    """fridaymorning-influxdb.json equals what grafana-foundation-sdk builds: nobody edited it by hand."""
    assert DASHBOARD.read_text(encoding="utf-8") == build_script().rendered()
    assert build_script().main(["--check"]) == 0


def test_the_dashboard_shows_rate_errors_quantiles_weight_and_decisions() -> None:
    """Panels for each version's rate, errors, p50/p90/p99 and the weight; decisions as annotations;
    every query on the chosen InfluxDB data source and the chosen service."""
    model = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert {variable["name"] for variable in model["templating"]["list"]} == {"datasource", "service"}
    queries = " ".join(target["query"] for panel in model["panels"] for target in panel["targets"])
    for needed in ('sum("requests")', 'sum("failed")', "tr_p50", "tr_p90", "tr_p99", "canary_weight"):
        assert needed in queries
    for panel in model["panels"]:
        assert panel["datasource"] == {"type": "influxdb", "uid": "${datasource}"}, panel["title"]
        assert all("$service" in target["query"] for target in panel["targets"]), panel["title"]
    assert WINDOW_MEASUREMENT in queries and DECISION_MEASUREMENT in queries
    (decisions,) = model["annotations"]["list"]
    assert DECISION_MEASUREMENT in decisions["query"] and decisions["textColumn"] == "text"

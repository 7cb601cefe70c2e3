"""The Grafana files under deploy/grafana/: the Prometheus dashboard is what Grafana's schema types build,
and the provisioning points Grafana at both data sources and at the dashboards."""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType

import yaml

from fridaymorning.testing import load_script

GRAFANA = Path(__file__).resolve().parents[2] / "deploy" / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "fridaymorning-prometheus.json"


def build_script() -> ModuleType:
    return load_script(GRAFANA / "build_prometheus_dashboard.py")


def test_the_committed_dashboard_is_the_one_grafanas_schema_types_build() -> None:
    """deploy/grafana/dashboards/fridaymorning-prometheus.json equals what grafana-foundation-sdk builds:
    nobody edited it by hand into something the schema does not have."""
    assert DASHBOARD.read_text(encoding="utf-8") == build_script().rendered()
    assert build_script().main(["--check"]) == 0


def test_every_panel_queries_prometheus_through_the_dashboards_variables() -> None:
    """Each panel has at least one PromQL query, on the chosen data source and the chosen service."""
    model = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert {variable["name"] for variable in model["templating"]["list"]} == {"datasource", "service"}
    assert len(model["panels"]) >= 6
    for panel in model["panels"]:
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["targets"], panel["title"]
        exprs = [target["expr"] for target in panel["targets"]]
        assert all(expr.strip() for expr in exprs), panel["title"]
    expressions = " ".join(target["expr"] for panel in model["panels"] for target in panel["targets"])
    for needed in (
        "fm_requests_total",
        "fm_request_failures_total",
        "canary_weight",
        "histogram_quantile(0.99",
    ):
        assert needed in expressions
    assert [annotation["name"] for annotation in model["annotations"]["list"]] == [
        "Decisions",
        "Status changes",
    ]


def test_provisioning_names_both_data_sources_and_the_dashboards() -> None:
    """The provisioning files are Grafana's format: a Prometheus and an InfluxDB data source, and a file
    provider for the fridaymorning dashboards."""
    sources = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "fridaymorning.yaml").read_text())
    assert sources["apiVersion"] == 1
    assert {source["type"] for source in sources["datasources"]} == {"prometheus", "influxdb"}
    assert all(source["url"].startswith("http://") for source in sources["datasources"])
    providers = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "fridaymorning.yaml").read_text())
    (provider,) = providers["providers"]
    assert provider["type"] == "file" and provider["options"]["path"]

"""`store.url` takes the InfluxDB and VictoriaMetrics schemes; a remote store needs a host and a database."""

from __future__ import annotations

from pathlib import Path

import pytest

from fridaymorning.config import parse_config
from fridaymorning.errors import ConfigError
from fridaymorning.registry import resolve
from fridaymorning.store.influxdb import InfluxMetricStore
from fridaymorning.store.victoriametrics import VictoriaMetricsStore

EXAMPLE = (Path(__file__).parents[3] / "src" / "fridaymorning" / "example.yaml").read_text()


@pytest.mark.parametrize(
    ("url", "implementation"),
    [
        ("influxdb://127.0.0.1:8086/fm", InfluxMetricStore),
        ("victoriametrics://127.0.0.1:8428/fm", VictoriaMetricsStore),
    ],
)
def test_remote_store_urls_are_valid_and_pick_their_store(url: str, implementation: type) -> None:
    """The config accepts them as they are, and the registry picks the store by scheme."""
    config = parse_config(EXAMPLE.replace("url: sqlite:///metrics.db", f"url: {url}", 1), "f.yaml")
    assert config.store_url() == url
    assert resolve("store", url) is implementation


def test_a_remote_store_without_a_database_names_the_field() -> None:
    """influxdb://host:8086 (no database) is refused at store.url, with the form it needs."""
    text = EXAMPLE.replace("url: sqlite:///metrics.db", "url: influxdb://127.0.0.1:8086", 1)
    with pytest.raises(ConfigError, match=r"^f\.yaml:\d+: store\.url: .*influxdb://host:port/db"):
        parse_config(text, "f.yaml")

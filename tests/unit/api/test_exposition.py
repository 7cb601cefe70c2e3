"""GET /metrics: Prometheus' text format, read from the runtime at each scrape, over a runtime of fakes."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from fridaymorning import __version__
from fridaymorning.api.app import create_app
from fridaymorning.api.dashboard import VIEWER_TOKEN_FILE
from fridaymorning.api.exposition import (
    Exposition,
    buffer_stats,
    flagger_status,
    store_buffer_families,
)
from fridaymorning.controller.phases import RolloutPhase
from fridaymorning.errors import StoreError
from fridaymorning.ingest.process import stats_of
from fridaymorning.ingest.store_sink import StoreSink
from fridaymorning.models import new_sketch
from fridaymorning.sketches import cumulative_counts
from fridaymorning.testing import FakeClock, synthetic_window

if TYPE_CHECKING:
    from tests.unit.api.conftest import Served

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def samples_of(text: str) -> Samples:
    """Every sample of an exposition, by name and label set."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, metric: str, **labels: str) -> float:
    return samples[(metric, frozenset(labels.items()))]


def scrape(exposition: Exposition) -> Samples:
    return samples_of(exposition.render().decode())


@pytest.fixture
def runtime(served: Served, tmp_path: Path) -> Iterator[Any]:
    """Another runtime of fakes, not started: its store and state are the test's alone."""
    fake: Any = type(served.runtime)(tmp_path / "exposition-state.db")
    yield fake
    fake.states.close()


def test_cumulative_counts_read_a_histogram_off_a_sketch() -> None:
    """Each bound counts the values at or below it; zero is below every bound."""
    sketch = new_sketch()
    for latency_ms in (0, 1, 2, 3, 10, 100):
        sketch.add(latency_ms)
    assert cumulative_counts(sketch, [0.5, 1, 2.5, 5, 10, 50, 100, 1000]) == [1, 2, 3, 4, 5, 5, 6, 6]
    assert cumulative_counts(new_sketch(), [1, 10]) == [0, 0]


@pytest.mark.parametrize(
    ("phase", "status"),
    [
        (None, 1),
        (RolloutPhase.STARTING, 1),
        (RolloutPhase.PROGRESSING, 0),
        (RolloutPhase.PAUSED, 1),
        (RolloutPhase.HELD, 1),
        (RolloutPhase.AWAITING_APPROVAL, 1),
        (RolloutPhase.PROMOTING, 1),
        (RolloutPhase.PROMOTED, 1),
        (RolloutPhase.ROLLING_BACK, 2),
        (RolloutPhase.ROLLED_BACK, 2),
        (RolloutPhase.ABORTING, 2),
        (RolloutPhase.ABORTED, 2),
    ],
)
def test_canary_status_uses_flaggers_encoding(phase: RolloutPhase | None, status: int) -> None:
    """Flagger's canary_status: 0 while progressing, 2 once failed (rolled back or aborted), else 1."""
    assert flagger_status(phase) == status


def test_traffic_counts_each_closed_second_once(runtime: Any) -> None:
    """Requests, failures and latency buckets add up the store's seconds from the exposition's start,
    only seconds the collector has closed, and never one second twice."""
    clock = FakeClock(1000.2)
    exposition = Exposition(runtime, clock)
    runtime.memory.write([synthetic_window("web", "v1", 999, 50)])  # before the start: not counted
    for second in range(1000, 1010):
        runtime.memory.write([synthetic_window("web", "v1", second, 10, failed=2, latency_ms=3)])
    clock.now = 1003.5
    first = scrape(exposition)
    labels = {"service": "web", "backend": "web", "version": "v1"}
    assert value(first, "fm_requests_total", **labels) == 30  # seconds 1000, 1001 and 1002
    clock.now = 1010.5
    later = scrape(exposition)
    assert value(later, "fm_requests_total", **labels) == 100
    assert value(later, "fm_request_failures_total", **labels) == 20
    assert value(later, "fm_response_time_seconds_bucket", **labels, le="0.0025") == 0
    assert value(later, "fm_response_time_seconds_bucket", **labels, le="0.005") == 100
    assert value(later, "fm_response_time_seconds_bucket", **labels, le="+Inf") == 100
    assert value(later, "fm_response_time_seconds_count", **labels) == 100
    assert value(later, "fm_response_time_seconds_sum", **labels) == pytest.approx(0.3, rel=0.02)
    assert value(later, "fm_metric_store_up") == 1


def test_a_failing_store_keeps_the_totals_and_says_so(runtime: Any) -> None:
    """A store that fails a read leaves the counters as they were, and fm_metric_store_up says 0."""
    clock = FakeClock(1000.0)
    exposition = Exposition(runtime, clock)
    runtime.memory.write([synthetic_window("web", "v1", 1000, 7)])
    clock.now = 1002
    labels = {"service": "web", "backend": "web", "version": "v1"}
    assert value(scrape(exposition), "fm_requests_total", **labels) == 7
    runtime.memory.fail_with = StoreError("disk on fire")
    clock.now = 1004
    failing = scrape(exposition)
    assert value(failing, "fm_requests_total", **labels) == 7
    assert value(failing, "fm_metric_store_up") == 0


def test_store_buffer_counters_come_from_buffer_stats() -> None:
    """A store with `buffer_stats()` is exported per writer; a store without one (SQLite) exports nothing."""
    store = SimpleNamespace(buffer_stats=lambda: {"buffered": 3, "overflowed": 1, "last_error": "x"})
    assert buffer_stats(SimpleNamespace()) is None
    families = list(store_buffer_families({"collector": buffer_stats(store) or {}}))
    assert {family.name: family.samples[0].value for family in families} == {
        "fm_store_buffer_buffered": 3,
        "fm_store_buffer_overflowed": 1,
    }
    assert families[0].samples[0].labels == {"writer": "collector"}


def test_metrics_need_no_token_on_loopback_and_show_the_rollout(served: Served) -> None:
    """/metrics answers without a token on loopback: Flagger's canary metrics, and the verdict's checks."""
    answer = served.client.post("/api/v1/services/web/deploy", json={"version": "v2"}, headers=served.auth)
    assert answer.status_code == 202, answer.text
    controller = served.runtime.controllers["web"]
    served.wait_until(lambda: controller.last_verdict is not None)
    response = served.client.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    samples = samples_of(response.text)
    assert value(samples, "canary_total") == 2
    assert value(samples, "canary_status", name="web") == 0
    assert value(samples, "canary_status", name="shop") == 1  # no rollout yet
    assert value(samples, "canary_weight", name="web", workload="web") == 10
    assert value(samples, "canary_weight", name="web", workload="web-primary") == 90
    assert value(samples, "fm_rollout_phase", service="web", phase="progressing") == 1
    assert value(samples, "fm_rollout_phase", service="web", phase="starting") == 0
    assert value(samples, "fm_rollout_events_total", service="web", kind="started") == 1
    checks = {dict(labels)["check"] for name, labels in samples if name == "fm_check_threshold"}
    assert checks, "the latest verdict's checks are exported with their thresholds"
    phases = ("pass", "fail", "hold", "error")
    assert sum(value(samples, "fm_verdict_phase", service="web", phase=phase) for phase in phases) == 1
    assert value(samples, "fm_info", version=__version__) == 1


def test_metrics_beyond_loopback_need_a_token(served: Served, tmp_path: Path) -> None:
    """When the API listens beyond loopback, /metrics needs the viewer (or admin) token, as other reads do."""
    runtime: Any = type(served.runtime)(tmp_path / "state.db")
    runtime.config = SimpleNamespace(api=SimpleNamespace(listen="0.0.0.0:8787"))
    runtime.state_dir = tmp_path
    app = create_app(runtime, "admin-token-for-metrics")
    viewer = (tmp_path / VIEWER_TOKEN_FILE).read_text().strip()
    with TestClient(app) as client:
        assert client.get("/metrics").status_code == 401
        answer = client.get("/metrics", headers={"Authorization": f"Bearer {viewer}"})
        assert answer.status_code == 200
        assert "canary_total" in answer.text
    runtime.states.close()


def test_the_collector_process_passes_its_stores_buffer_to_metrics(runtime: Any) -> None:
    """The collector process writes its store's `buffer_stats()` into its stats file; /metrics exports it
    as fm_store_buffer_*{writer="collector"}, beside the collector's loss counters. A store without a
    buffer (here the API's own, in memory) adds nothing."""
    store = SimpleNamespace(buffer_stats=lambda: {"buffered": 5, "overflowed": 2})
    collector = SimpleNamespace(
        stats=lambda: {"lines": 10, "rejected": 1, "reconciliation": {"missing_lines": 3}}
    )
    sink = StoreSink(store, lateness_s=1.0)
    written = json.loads(json.dumps(stats_of(collector, sink)))  # through the stats file, as JSON
    status = runtime.status
    runtime.status = lambda: {**status(), "collector": {**written, "process_running": True}}
    samples = scrape(Exposition(runtime, FakeClock(1000.0)))
    assert value(samples, "fm_store_buffer_buffered", writer="collector") == 5
    assert value(samples, "fm_store_buffer_overflowed", writer="collector") == 2
    assert not [
        labels
        for name, labels in samples
        if name.startswith("fm_store_buffer") and ("writer", "fm_up") in labels
    ]
    assert value(samples, "fm_collector_lines_total") == 10
    assert value(samples, "fm_collector_rejected_total") == 1
    assert value(samples, "fm_collector_reconciliation_missing_lines_total") == 3
    assert value(samples, "fm_collector_up") == 1

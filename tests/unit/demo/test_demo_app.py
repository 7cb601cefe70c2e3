"""The demo service's behaviour table, its environment overrides, and its HTTP answers."""

from __future__ import annotations

import random
import socket
import statistics
import threading
from collections.abc import Iterator

import httpx
import pytest

from fridaymorning.demo.app import (
    BEHAVIOURS,
    Behaviour,
    DemoServer,
    behaviour_for,
)


def test_bad_version_is_worse_than_stable_on_errors_and_latency() -> None:
    """v3 fails about 8% of requests and is 1.5x slower than v1; v1 never fails."""
    stable, bad = BEHAVIOURS["v1"], BEHAVIOURS["v3"]
    assert stable.error_rate == 0
    assert bad.error_rate == pytest.approx(0.08)
    assert bad.median_latency_ms == pytest.approx(1.5 * stable.median_latency_ms)
    assert bad.p99_latency_ms > stable.p99_latency_ms


def test_good_canary_behaves_exactly_like_stable() -> None:
    """v2 is the 'good release': identical to v1, so the judge should promote it."""
    assert BEHAVIOURS["v2"] == BEHAVIOURS["v1"]


def test_unknown_versions_behave_like_v1() -> None:
    """A made-up version name gets the stable behaviour rather than an error."""
    assert behaviour_for("2024.11.26", {}) == BEHAVIOURS["v1"]


def test_stable_latency_has_the_documented_median_and_p99() -> None:
    """Sampled latency has a median near 8 ms and a p99 near 25 ms."""
    rng = random.Random(7)
    samples_ms = sorted(BEHAVIOURS["v1"].sample_latency_s(rng) * 1000 for _ in range(50_000))
    assert statistics.median(samples_ms) == pytest.approx(8.0, rel=0.05)
    assert samples_ms[int(0.99 * len(samples_ms))] == pytest.approx(25.0, rel=0.1)


def test_bad_version_fails_at_its_error_rate() -> None:
    """v3's sampled failure rate is close to 8%."""
    rng = random.Random(11)
    failures = sum(BEHAVIOURS["v3"].sample_failure(rng) for _ in range(50_000))
    assert failures / 50_000 == pytest.approx(0.08, abs=0.005)


def test_error_rate_override_replaces_the_tables_rate() -> None:
    """FM_DEMO_ERROR_RATE=1 makes any version always fail, and keeps its latency."""
    behaviour = behaviour_for("v2", {"FM_DEMO_ERROR_RATE": "1"})
    assert behaviour.error_rate == 1.0
    assert behaviour.median_latency_ms == BEHAVIOURS["v2"].median_latency_ms


def test_latency_factor_multiplies_the_tables_latency() -> None:
    """FM_DEMO_LATENCY_FACTOR scales the median; 0 means answer at once."""
    assert behaviour_for("v3", {"FM_DEMO_LATENCY_FACTOR": "2"}).median_latency_ms == pytest.approx(24.0)
    instant = behaviour_for("v1", {"FM_DEMO_LATENCY_FACTOR": "0"})
    assert instant.sample_latency_s(random.Random(1)) == 0.0


def test_blank_overrides_are_ignored() -> None:
    """An empty variable (e.g. `FM_DEMO_ERROR_RATE=` in a shell) means 'no override'."""
    assert behaviour_for("v3", {"FM_DEMO_ERROR_RATE": " ", "FM_DEMO_LATENCY_FACTOR": ""}) == BEHAVIOURS["v3"]


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("FM_DEMO_ERROR_RATE", "often"),
        ("FM_DEMO_ERROR_RATE", "1.5"),
        ("FM_DEMO_ERROR_RATE", "-0.1"),
        ("FM_DEMO_ERROR_RATE", "nan"),
        ("FM_DEMO_LATENCY_FACTOR", "-1"),
    ],
)
def test_invalid_overrides_are_refused_naming_the_variable(variable: str, value: str) -> None:
    """An override that is not a number in range is an error, not silently ignored."""
    with pytest.raises(ValueError, match=variable):
        behaviour_for("v1", {variable: value})


@pytest.fixture
def always_failing_server() -> Iterator[str]:
    """A v9 demo server in a thread, failing every request without latency; yields its base URL."""
    server = DemoServer(
        ("127.0.0.1", 0), "v9", Behaviour(error_rate=1.0, median_latency_ms=0, latency_sigma=0)
    )
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def test_health_answers_ok_even_when_requests_fail(always_failing_server: str) -> None:
    """/healthz is 200 'ok' whatever the error rate: a bad version still passes its health check."""
    response = httpx.get(f"{always_failing_server}/healthz", trust_env=False, timeout=5)
    assert (response.status_code, response.text) == (200, "ok\n")


def test_requests_carry_the_version_header_also_on_errors(always_failing_server: str) -> None:
    """Other paths answer with X-Version, here with a 500 because the error rate is 1."""
    response = httpx.get(f"{always_failing_server}/anything", trust_env=False, timeout=5)
    assert response.status_code == 500
    assert response.headers["X-Version"] == "v9"


def test_a_burst_of_connections_is_queued_not_refused() -> None:
    """64 connections opened at once, before the server accepts any, all complete their handshake: the
    listen backlog holds a burst from HAProxy, which would otherwise mark the server DOWN."""
    server = DemoServer(("127.0.0.1", 0), "v1", BEHAVIOURS["v1"])
    clients: list[socket.socket] = []
    try:
        for _ in range(64):
            # A full backlog drops the SYN and the connect hangs: the timeout turns that into a failure.
            clients.append(socket.create_connection(("127.0.0.1", server.server_port), timeout=30))
        assert len(clients) == 64
    finally:
        for client in clients:
            client.close()
        server.server_close()

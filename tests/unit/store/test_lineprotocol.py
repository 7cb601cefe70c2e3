"""Windows as line protocol, and back: escaping, timestamps, and sketches restored bit for bit."""

from __future__ import annotations

import random

import pytest

from fridaymorning.models import Window
from fridaymorning.sketches import sketch_to_bytes
from fridaymorning.store.lineprotocol import (
    decision_line,
    escape_tag,
    float_halves,
    float_of_halves,
    merged_by_second,
    sketch_fields,
    sketch_from_fields,
    timestamp_ns,
    window_from_fields,
    window_lines,
)


def noisy_window(second: int, seed: int) -> Window:
    """A window with latencies around 1 ms and 100 ms (negative sketch keys too), and some failures."""
    rng = random.Random(seed)
    window = Window("web", "v2", second)
    for _ in range(200):
        latency = rng.choice((rng.expovariate(1.0), rng.expovariate(0.01), 0.0))
        window.tr.add(latency)
        window.ta.add(latency + 0.3)
        window.requests += 1
        window.status[4 if rng.random() < 0.1 else 1] += 1
    window.failed = window.status[4]
    window.bytes = 12345
    return window


def fields_of(line: str) -> dict[str, object]:
    """The fields of one line (no spaces in this test's tags or strings), typed as InfluxDB would."""
    _, field_text, _ = line.split(" ")
    fields: dict[str, object] = {}
    for pair in field_text.split(","):
        name, value = pair.split("=", 1)
        if value.startswith('"'):
            fields[name] = value.strip('"')
        elif value.endswith("i"):
            fields[name] = int(value[:-1])
        else:
            fields[name] = float(value)
    return fields


def assert_same_window(expected: Window, actual: Window) -> None:
    assert (actual.second, actual.requests, actual.status, actual.failed, actual.bytes) == (
        expected.second,
        expected.requests,
        expected.status,
        expected.failed,
        expected.bytes,
    )
    assert sketch_to_bytes(actual.tr) == sketch_to_bytes(expected.tr)
    assert sketch_to_bytes(actual.ta) == sketch_to_bytes(expected.ta)


def test_influxdb_lines_carry_the_window_and_its_sketches_exactly() -> None:
    """One fm_window line per window; its counts and base64 sketches read back as the same window."""
    window = noisy_window(1_700_000_000, seed=1)
    (line,) = window_lines(window, "w1", 0, "influxdb")
    assert line.startswith("fm_window,backend=web,version=v2,writer=w1 ")
    assert line.endswith(f" {1_700_000_000 * 10**9}")
    restored = window_from_fields("web", "v2", window.second, fields_of(line))
    assert_same_window(window, restored)


def test_victoriametrics_lines_carry_sketches_as_numbers_exactly() -> None:
    """For VictoriaMetrics (numbers only) each sketch is one fm_sketch line of totals and bins."""
    window = noisy_window(1_700_000_000, seed=2)
    window_line, tr_line, ta_line = window_lines(window, "w1", 3, "victoriametrics")
    assert '"' not in window_line
    assert tr_line.startswith("fm_sketch,backend=web,version=v2,writer=w1,sketch=tr ")
    sketches = {
        "tr": sketch_from_fields(fields_of(tr_line)),  # type: ignore[arg-type]
        "ta": sketch_from_fields(fields_of(ta_line)),  # type: ignore[arg-type]
    }
    restored = window_from_fields("web", "v2", window.second, fields_of(window_line), sketches)
    assert_same_window(window, restored)


def test_an_empty_window_has_no_sketch_line_and_reads_back_empty() -> None:
    """A window without latencies (only events) has no fm_sketch line, and reads back with empty sketches."""
    window = Window("web", "v1", 5, requests=0)
    (line,) = window_lines(window, "w1", 0, "victoriametrics")
    restored = window_from_fields("web", "v1", 5, fields_of(line), {})
    assert_same_window(window, restored)
    assert sketch_to_bytes(sketch_from_fields({})) == sketch_to_bytes(Window("a", "b", 0).tr)


@pytest.mark.parametrize("value", [0.0, -0.0, 1e-300, 0.1 + 0.2, 123456.789012345678, float("inf")])
def test_floats_split_into_32_bit_halves_come_back_identical(value: float) -> None:
    """VictoriaMetrics keeps ~12 digits of a float but integers below 2**32 exactly: halves are exact."""
    halves = dict(float_halves(value))
    fields = {f"x_{half}": float(bits) for half, bits in halves.items()}
    assert all(bits < 2**32 for bits in halves.values())
    assert repr(float_of_halves(fields, "x", 7.0)) == repr(value)
    assert float_of_halves({}, "x", 7.0) == 7.0


def test_sketch_fields_name_negative_keys_with_m() -> None:
    """Sub-millisecond latencies have negative keys, spelled 'pm<key>' (a field name has no '-')."""
    window = noisy_window(1, seed=3)
    names = [pair.split("=")[0] for pair in sketch_fields(window.tr).split(",")]
    assert any(name.startswith("pm") for name in names)
    assert not any("-" in name for name in names)


def test_tags_are_escaped_and_newlines_refused() -> None:
    """Commas, spaces, equals signs and backslashes are escaped; a newline or an empty value is refused."""
    assert escape_tag("a,b c=d\\") == "a\\,b\\ c\\=d\\\\"
    with pytest.raises(ValueError):
        escape_tag("a\nb")
    with pytest.raises(ValueError):
        escape_tag("")


def test_timestamps_number_the_points_of_one_second_apart_in_milliseconds() -> None:
    """Distinct milliseconds within the second (VictoriaMetrics keeps ms); at most 1000 per second."""
    assert timestamp_ns(10, 0) == 10 * 10**9
    assert timestamp_ns(10, 999) == 10 * 10**9 + 999 * 10**6
    with pytest.raises(ValueError):
        timestamp_ns(10, 1000)


def test_points_of_one_second_are_merged_in_time_order() -> None:
    """Two points of the same second (a late window) read back as one merged window."""
    first, late, other = noisy_window(7, 4), noisy_window(7, 5), noisy_window(6, 6)
    merged = merged_by_second([first, late, other])
    assert [window.second for window in merged] == [6, 7]
    assert merged[1].requests == 400
    assert merged[1].tr.count == 400


def test_a_decision_is_a_point_with_the_weight_and_a_text() -> None:
    """A notification event becomes an fm_decision point: tags service/version/event, weight, and a
    one-line text."""
    event = {
        "event": "step",
        "service": "web",
        "version": "v2",
        "canary_weight": 25,
        "rollout_id": 3,
        "step": 2,
        "phase": "progressing",
        "reason": 'a "quoted"\nreason',
    }
    line = decision_line(event, 42)
    assert line.startswith("fm_decision,service=web,version=v2,event=step ")
    assert "canary_weight=25i" in line
    assert 'text="step: a \\"quoted\\" reason"' in line
    assert line.endswith(" 42")

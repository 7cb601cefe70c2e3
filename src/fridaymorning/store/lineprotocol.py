"""Windows as InfluxDB line protocol, and back: pure functions, no I/O.

A window is one point of the measurement `fm_window`, tagged with its backend, its version and the
writer (one random token per store instance, so that two collectors, or one restarted, never overwrite
each other's points). Its timestamp is its second plus a sequence number in milliseconds, distinct for
every window a writer gives for the same (backend, version, second): InfluxDB keeps one point per
series and timestamp, and VictoriaMetrics keeps only millisecond precision. Reading back merges all the
points of one second, as the SQLite store merges its rows.

Fields of `fm_window`: `requests`, `failed`, `bytes`, one `status_<class>` per status class (integers),
and for each latency sketch (`tr`, `ta`) its quantiles `<sketch>_p50`, `_p90`, `_p99` (floats, for
dashboards: the judge never reads them). The sketch itself travels in one of two losslessly invertible
forms:

- for InfluxDB, a string field `<sketch>_bins`: `sketches.sketch_to_bytes` in base64;
- for VictoriaMetrics, which keeps numbers only, one more point `fm_sketch` per sketch (tag
  `sketch=tr|ta`) whose fields are the sketch's totals (`zero`, `count`, `sum`, `min`, `max`, each
  as the two 32-bit halves of its IEEE 754 bits, `sum_hi` and `sum_lo`, so no digit is lost) and one
  field per non-empty bin (its count, an integer in practice, which VictoriaMetrics keeps exactly):
  `p<key>` for the positive store, `n<key>` for the negative one, a negative key spelled with `m`
  (`pm3` is key -3).
"""

from __future__ import annotations

import base64
import math
import re
import struct
from collections.abc import Iterable, Mapping
from typing import Literal

from ddsketch import DDSketch
from ddsketch.store import DenseStore

from fridaymorning.models import SKETCH_RELATIVE_ACCURACY, STATUS_CLASSES, LatencySketch, Window, new_sketch
from fridaymorning.sketches import SHOWN_QUANTILES, sketch_from_bytes, sketch_to_bytes

WINDOW_MEASUREMENT = "fm_window"
SKETCH_MEASUREMENT = "fm_sketch"
MARK_MEASUREMENT = "fm_mark"
DECISION_MEASUREMENT = "fm_decision"
SKETCHES = ("tr", "ta")
STATUS_FIELDS = tuple(f"status_{name}" for name in STATUS_CLASSES)
COUNT_FIELDS = ("requests", "failed", "bytes", *STATUS_FIELDS)
NANOSECONDS = 1_000_000_000
MILLISECONDS_PER_SECOND = 1000

Flavour = Literal["influxdb", "victoriametrics"]

_TAG_SPECIALS = re.compile(r"([,= \\])")
_BIN_FIELD = re.compile(r"^([pn])(m?)(\d+)$")


def escape_tag(value: str) -> str:
    """A tag key or value as line protocol needs it: commas, equals signs, spaces and backslashes escaped.

    Line protocol has no escape for a newline, and a tag value may not be empty: both are refused.
    """
    if not value or "\n" in value:
        raise ValueError(f"a tag value must be non-empty and on one line: {value!r}")
    return _TAG_SPECIALS.sub(r"\\\1", value)


def string_field(value: str) -> str:
    """A string field value: double-quoted, with quotes and backslashes escaped."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def float_field(value: float) -> str:
    """A float field value that reads back as the same float (repr is the shortest exact form)."""
    if not math.isfinite(value):
        raise ValueError(f"line protocol cannot carry {value}")
    return repr(float(value))


def timestamp_ns(second: int, sequence: int) -> int:
    """The timestamp of the `sequence`-th point a writer gives for `second`: whole milliseconds."""
    if not 0 <= sequence < MILLISECONDS_PER_SECOND:
        raise ValueError(f"at most {MILLISECONDS_PER_SECOND} points per series and second")
    return second * NANOSECONDS + sequence * 1_000_000


def window_lines(window: Window, writer: str, sequence: int, flavour: Flavour) -> list[str]:
    """The line(s) of one window: its `fm_window` point, plus `fm_sketch` points for VictoriaMetrics."""
    tags = f"backend={escape_tag(window.backend)},version={escape_tag(window.version)},writer={writer}"
    stamp = timestamp_ns(window.second, sequence)
    counts = (window.requests, window.failed, window.bytes, *window.status)
    fields = [f"{name}={int(count)}i" for name, count in zip(COUNT_FIELDS, counts, strict=True)]
    lines = []
    for name, sketch in (("tr", window.tr), ("ta", window.ta)):
        fields.extend(_quantile_fields(name, sketch))
        if flavour == "influxdb":
            fields.append(f"{name}_bins=" + string_field(base64.b64encode(sketch_to_bytes(sketch)).decode()))
        elif sketch.count:
            lines.append(f"{SKETCH_MEASUREMENT},{tags},sketch={name} {sketch_fields(sketch)} {stamp}")
    lines.insert(0, f"{WINDOW_MEASUREMENT},{tags} {','.join(fields)} {stamp}")
    return lines


def _quantile_fields(name: str, sketch: DDSketch) -> list[str]:
    if not sketch.count:
        return []
    fields = []
    for quantile in SHOWN_QUANTILES:
        value = sketch.get_quantile_value(quantile)
        if value is not None:
            fields.append(f"{name}_p{round(quantile * 100)}={float_field(value)}")
    return fields


def mark_line(writer: str, complete_below: int, now_ns: int) -> str:
    """A mark: every window of a second below `complete_below` that this writer was given is in the store.

    Written through the same ordered buffer as the windows, so it lands only after them.
    """
    return f"{MARK_MEASUREMENT},writer={writer} complete_below={int(complete_below)}i {now_ns}"


def decision_line(event: Mapping[str, object], now_ns: int) -> str:
    """A controller's decision (a notification event) as a point, for dashboards' annotations."""
    tags = ",".join(
        f"{key}={escape_tag(str(event[key]))}" for key in ("service", "version", "event") if event.get(key)
    )
    reason = " ".join(str(event.get("reason") or "").split())  # no newline may end the line early
    fields = [f"{name}={_whole(event.get(name))}i" for name in ("canary_weight", "rollout_id", "step")]
    fields += [
        "phase=" + string_field(str(event.get("phase") or "")),
        "text=" + string_field(f"{event.get('event')}: {reason}"),
    ]
    return f"{DECISION_MEASUREMENT},{tags} {','.join(fields)} {now_ns}"


def _whole(value: object) -> int:
    """An event's number as an integer field (0 when absent)."""
    return int(value) if isinstance(value, int | float | str) and str(value).strip() else 0


# --- sketches as numbers (VictoriaMetrics) ------------------------------------------------------------


def sketch_fields(sketch: DDSketch) -> str:
    """The `fm_sketch` fields of a non-empty sketch: its totals and one field per non-empty bin."""
    totals = {
        "zero": sketch._zero_count,
        "count": sketch._count,
        "sum": sketch._sum,
        "min": sketch._min,
        "max": sketch._max,
    }
    fields = [
        f"{name}_{half}={bits}i" for name, value in totals.items() for half, bits in float_halves(value)
    ]
    for prefix, store in (("p", sketch._store), ("n", sketch._negative_store)):
        for key, count in _bins(store):
            fields.append(f"{bin_field(prefix, key)}={float_field(count)}")
    return ",".join(fields)


def bin_field(prefix: str, key: int) -> str:
    """The field of bin `key` of the positive ('p') or negative ('n') store: 'p12', 'pm3'."""
    return f"{prefix}m{-key}" if key < 0 else f"{prefix}{key}"


def _bins(store: DenseStore) -> Iterable[tuple[int, float]]:
    if not store.count:
        return ()
    first = store.min_key - store.offset
    counts = store.bins[first : store.max_key - store.offset + 1]
    return ((store.min_key + index, count) for index, count in enumerate(counts) if count)


def sketch_from_fields(fields: Mapping[str, float]) -> LatencySketch:
    """The sketch whose `sketch_fields` were `fields` (names without the measurement's prefix)."""
    sketch = LatencySketch(SKETCH_RELATIVE_ACCURACY)
    bins: dict[str, dict[int, float]] = {"p": {}, "n": {}}
    for name, value in fields.items():
        matched = _BIN_FIELD.match(name)
        if matched:
            sign, minus, digits = matched.groups()
            bins[sign][-int(digits) if minus else int(digits)] = float(value)
    sketch._store = _store_of(bins["p"])
    sketch._negative_store = _store_of(bins["n"])
    sketch._zero_count = float_of_halves(fields, "zero", 0.0)
    sketch._count = float_of_halves(fields, "count", 0.0)
    sketch._sum = float_of_halves(fields, "sum", 0.0)
    sketch._min = float_of_halves(fields, "min", math.inf)
    sketch._max = float_of_halves(fields, "max", -math.inf)
    return sketch


def float_halves(value: float) -> tuple[tuple[str, int], tuple[str, int]]:
    """The IEEE 754 bits of `value` as two 32-bit integers ('hi', 'lo'): VictoriaMetrics keeps about
    twelve significant digits of a float, but every integer below 2**32 exactly."""
    bits = struct.unpack("<Q", struct.pack("<d", value))[0]
    return ("hi", bits >> 32), ("lo", bits & 0xFFFFFFFF)


def float_of_halves(fields: Mapping[str, float], name: str, default: float) -> float:
    """The float that `float_halves` split into the fields `<name>_hi` and `<name>_lo`."""
    if f"{name}_hi" not in fields:
        return default
    bits = (int(fields[f"{name}_hi"]) << 32) | int(fields[f"{name}_lo"])
    value: float = struct.unpack("<d", struct.pack("<Q", bits))[0]
    return value


def _store_of(counts: Mapping[int, float]) -> DenseStore:
    store = DenseStore()
    if not counts:
        return store
    low, high = min(counts), max(counts)
    store.bins = [counts.get(key, 0.0) for key in range(low, high + 1)]
    store.offset = store.min_key = low
    store.max_key = high
    store.count = float(sum(store.bins))
    return store


# --- windows from fields ---------------------------------------------------------------------------


def window_from_fields(
    backend: str,
    version: str,
    second: int,
    fields: Mapping[str, object],
    sketches: Mapping[str, LatencySketch] | None = None,
) -> Window:
    """A window from one point's fields (InfluxDB: `<sketch>_bins` strings; else `sketches` by name)."""
    counts = [int(fields.get(name) or 0) for name in COUNT_FIELDS]  # type: ignore[call-overload]
    return Window(
        backend=backend,
        version=version,
        second=second,
        requests=counts[0],
        failed=counts[1],
        bytes=counts[2],
        status=counts[3:],
        tr=_sketch_of(fields, sketches, "tr"),
        ta=_sketch_of(fields, sketches, "ta"),
    )


def _sketch_of(
    fields: Mapping[str, object], sketches: Mapping[str, LatencySketch] | None, name: str
) -> LatencySketch:
    encoded = fields.get(f"{name}_bins")
    if isinstance(encoded, str) and encoded:
        return sketch_from_bytes(base64.b64decode(encoded))
    if sketches is not None and name in sketches:
        return sketches[name]
    return new_sketch()


def merged_by_second(windows: Iterable[Window]) -> list[Window]:
    """One window per second, in time order: the windows of a second merged, as the SQLite store does."""
    merged: dict[int, Window] = {}
    for window in sorted(windows, key=lambda window: window.second):
        if window.second in merged:
            merged[window.second].merge(window)
        else:
            merged[window.second] = window
    return list(merged.values())

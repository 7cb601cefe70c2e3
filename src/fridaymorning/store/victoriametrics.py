"""VictoriaMetrics metric store: `victoriametrics://host:8428/database`.

VictoriaMetrics takes InfluxDB line protocol at `/write`: each field becomes a series named
`<measurement>_<field>`, the tags become labels, and `?db=` adds a `db` label. It keeps numbers only,
so the sketches travel as `fm_sketch` points, one field per bin (store.lineprotocol). Windows are read
back with `/api/v1/export`, which returns the raw samples, and are rebuilt from them exactly.

Its instant queries (`/api/v1/query`, which Grafana and PromQL checks use) hide the newest 30 s unless
it runs with `-search.latencyOffset` set lower; `-dedup.minScrapeInterval` would merge the points of one
second. fm reads `/flags` and refuses to judge from a server started either way (StoreError naming the
flag): a judge, or a dashboard beside it, must not look at a store that hides the newest seconds.

Samples reach VictoriaMetrics' search only after about a second (a new series: about ten), so every
batch that carries a collector's mark is followed by `/internal/force_flush`, which makes all that was
written so far searchable: the mark is never visible before the windows it vouches for.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterable, Sequence

import httpx

from fridaymorning.errors import StoreError
from fridaymorning.models import Window
from fridaymorning.store.buffer import RejectedBatchError
from fridaymorning.store.lineprotocol import (
    MARK_MEASUREMENT,
    SKETCH_MEASUREMENT,
    WINDOW_MEASUREMENT,
    merged_by_second,
    sketch_from_fields,
    window_from_fields,
)
from fridaymorning.store.remote import LineProtocolStore

# The most a latency offset may hide for fm to judge from the server (its default hides 30 s).
MAX_LATENCY_OFFSET_S = 5.0
DEFAULT_LATENCY_OFFSET_S = 30.0
MARK_LOOKBACK_S = 600
_FLAG = re.compile(r'^-([\w.]+)="?([^"]*)"?$')
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|us|µs|ns|s|m|h|d|w|y)")
_UNIT_SECONDS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
    "d": 86400.0,
    "w": 604800.0,
    "y": 31536000.0,
}


def duration_seconds(text: str) -> float:
    """A Go/VictoriaMetrics duration ('1s', '500ms', '1m30s'; a bare number is ms for VM's flags)."""
    text = text.strip()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text) / 1000.0
    parts = _DURATION_PART.findall(text)
    if not parts or "".join(number + unit for number, unit in parts) != text:
        raise ValueError(f"not a duration: {text!r}")
    return sum(float(number) * _UNIT_SECONDS[unit] for number, unit in parts)


def parse_flags(text: str) -> dict[str, str]:
    """The flags `/flags` lists (those set on the command line): name → value."""
    flags = {}
    for line in text.splitlines():
        matched = _FLAG.match(line.strip())
        if matched:
            flags[matched.group(1)] = matched.group(2)
    return flags


def judgeable_problem(flags: dict[str, str]) -> str | None:
    """Why a VictoriaMetrics server with these flags would show a judge stale data; None if it would not."""
    offset_text = flags.get("search.latencyOffset")
    offset = DEFAULT_LATENCY_OFFSET_S if offset_text is None else duration_seconds(offset_text)
    if offset > MAX_LATENCY_OFFSET_S:
        return (
            f"its queries hide the newest {offset:g} s (-search.latencyOffset "
            f"{'default' if offset_text is None else offset_text}); start it with -search.latencyOffset=1s"
        )
    dedup = flags.get("dedup.minScrapeInterval")
    if dedup is not None and duration_seconds(dedup) > 0:
        return f"-dedup.minScrapeInterval={dedup} merges the points of one second; start it without that flag"
    return None


def selector(labels: dict[str, str], name_pattern: str) -> str:
    """A series selector: `{__name__=~"pattern",label="value",…}` with values escaped."""
    matchers = [f'__name__=~"{name_pattern}"']
    for key, value in labels.items():
        escaped = value.replace("\\", "\\\\").replace('"', '\\"')
        matchers.append(f'{key}="{escaped}"')
    return "{" + ",".join(matchers) + "}"


def points_of_export(lines: Iterable[str]) -> dict[tuple[str, str, int], dict[str, float]]:
    """Export lines regrouped into points: (measurement, writer and sketch, ms) → {field: value}."""
    points: dict[tuple[str, str, int], dict[str, float]] = {}
    for line in lines:
        if not line.strip():
            continue
        series = json.loads(line)
        metric = series["metric"]
        name = metric["__name__"]
        for measurement in (WINDOW_MEASUREMENT, SKETCH_MEASUREMENT):
            if name.startswith(measurement + "_"):
                field = name[len(measurement) + 1 :]
                break
        else:
            continue
        key_labels = metric.get("writer", "") + "/" + metric.get("sketch", "")
        for value, stamp in zip(series["values"], series["timestamps"], strict=True):
            points.setdefault((measurement, key_labels, int(stamp)), {})[field] = float(value)
    return points


def windows_of_points(
    backend: str, version: str, points: dict[tuple[str, str, int], dict[str, float]]
) -> list[Window]:
    """The windows the export's points describe, sketches rebuilt from their `fm_sketch` points."""
    windows = []
    for (measurement, key_labels, stamp), fields in points.items():
        if measurement != WINDOW_MEASUREMENT:
            continue
        writer = key_labels.split("/")[0]
        sketches = {
            name: sketch_from_fields(points[(SKETCH_MEASUREMENT, f"{writer}/{name}", stamp)])
            for name in ("tr", "ta")
            if (SKETCH_MEASUREMENT, f"{writer}/{name}", stamp) in points
        }
        windows.append(window_from_fields(backend, version, stamp // 1000, fields, sketches))
    return merged_by_second(windows)


class VictoriaMetricsStore(LineProtocolStore):
    """MetricStore on VictoriaMetrics (single node) over HTTP."""

    flavour = "victoriametrics"
    default_port = 8428

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self._judgeable = False

    def _send(self, lines: Sequence[str]) -> None:
        response = self._writer_client.post(
            "/write", params={"db": self.url.database}, content="\n".join(lines).encode()
        )
        if response.status_code == 400:
            raise RejectedBatchError(response.text[:300])
        response.raise_for_status()
        if any(line.startswith(MARK_MEASUREMENT + ",") for line in lines):
            # Newly written samples become searchable only after about 1 s, and those of a new series
            # after about 10 s: a mark must not be seen before the windows it vouches for.
            self._writer_client.get("/internal/force_flush").raise_for_status()

    def _export(self, match: str, start: float, end: float) -> list[str]:
        try:
            response = self._client.get(
                "/api/v1/export", params={"match[]": match, "start": f"{start:.3f}", "end": f"{end:.3f}"}
            )
        except httpx.HTTPError as error:
            raise StoreError(f"cannot read {self.url.shown}: {error}") from error
        if response.status_code >= 400:
            raise StoreError(f"{self.url.shown} answered {response.status_code}: {response.text[:300]}")
        return response.text.splitlines()

    def query(self, backend: str, version: str, start: int, end: int) -> list[Window]:
        if end <= start:
            return []
        labels = {"db": self.url.database, "backend": backend, "version": version}
        match = selector(labels, f"{WINDOW_MEASUREMENT}_.*|{SKETCH_MEASUREMENT}_.*")
        # export's end is inclusive; timestamps are whole milliseconds
        points = points_of_export(self._export(match, start, end - 0.001))
        return windows_of_points(backend, version, points)

    def newest_mark(self) -> int:
        now = time.time()
        match = selector({"db": self.url.database}, f"{MARK_MEASUREMENT}_complete_below")
        marks = [
            value
            for line in self._export(match, now - MARK_LOOKBACK_S, now + 60)
            if line.strip()
            for value in json.loads(line)["values"]
        ]
        return int(max(marks)) if marks else 0

    def check_judgeable(self) -> None:
        if self._judgeable:
            return
        try:
            response = self._client.get("/flags")
        except httpx.HTTPError as error:
            raise StoreError(f"cannot read {self.url.shown}/flags: {error}") from error
        if response.status_code != 200:
            raise StoreError(f"{self.url.shown}/flags answered {response.status_code}: fm cannot check it")
        problem = judgeable_problem(parse_flags(response.text))
        if problem is not None:
            raise StoreError(f"refusing to judge from {self.url.shown}: {problem}")
        self._judgeable = True

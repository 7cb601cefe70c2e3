"""Benchmark of the collector's fast path with the lines of one HAProxy against those of a fleet.

`python bench/fastpath_instances.py [--quick]`. The same compact lines are parsed and counted by
`IngestPipeline.ingest` (in this process, no socket), once with syslog headers without a host name (a
single HAProxy) and once with three host names (`log-send-hostname lb1..lb3`, a fleet, counted per
instance). Reports the CPU time per line (process time, the best of several rounds so that other
load on the machine counts as little as possible). Last line: one JSON object
{"us_per_line": {"single": s, "fleet_of_3": f}, "ratio": f / s, "lines": n}.
"""

from __future__ import annotations

import argparse
import json
import time

from fridaymorning.ingest.pipeline import IngestPipeline

FIRST_SECOND = 1_795_696_730
LINES_PER_SECOND = 20_000
BATCH = 1000


def batches(count: int, hosts: list[str]) -> list[bytes]:
    """`count` compact lines joined into batches, each line's header naming hosts[i % len(hosts)]."""
    lines = []
    for index in range(count):
        second = FIRST_SECOND + index // LINES_PER_SECOND
        stamp = time.strftime("%b %d %H:%M:%S", time.localtime(second))
        host = hosts[index % len(hosts)]
        lines.append(
            f"<134>{stamp} {host + ' ' if host else ''}haproxy[6027]: fm1 {second}.{index % 1000:03d} "
            f"web v{1 + index % 2}-1 200 {index % 50} {index % 80} 217 -- 10.0.0.{index % 200}"
        )
    return ["\n".join(lines[start : start + BATCH]).encode() for start in range(0, count, BATCH)]


def cpu_per_line(data: list[bytes], rounds: int) -> float:
    """The best CPU time per line (µs) of `rounds` fresh pipelines ingesting every batch."""
    best = float("inf")
    lines = sum(batch.count(b"\n") + 1 for batch in data)
    for _ in range(rounds):
        pipeline = IngestPipeline()
        started = time.process_time()
        for batch in data:
            pipeline.ingest(batch, BATCH)
        pipeline.logged_by_server()  # the merge of the raw counts, per distinct key
        best = min(best, time.process_time() - started)
        assert pipeline.counters.fast_path_requests == lines
    return best / lines * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    arguments = parser.parse_args()
    count = 50_000 if arguments.quick else 200_000
    rounds = 5 if arguments.quick else 15
    single = batches(count, [""])
    fleet = batches(count, ["lb1", "lb2", "lb3"])
    results = {"single": 0.0, "fleet_of_3": 0.0}
    for _ in range(3):  # alternate, so that a change of the machine's load hits both alike
        for name, data in (("single", single), ("fleet_of_3", fleet)):
            measured = cpu_per_line(data, rounds)
            results[name] = measured if not results[name] else min(results[name], measured)
    for name, value in results.items():
        print(f"{name:>10}: {value:.3f} µs of CPU per line ({1e6 / value:,.0f} lines/s on one core)")
    print(
        json.dumps(
            {
                "us_per_line": {name: round(value, 3) for name, value in results.items()},
                "ratio": round(results["fleet_of_3"] / results["single"], 3),
                "lines": count,
            }
        )
    )


if __name__ == "__main__":
    main()

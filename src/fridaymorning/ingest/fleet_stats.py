"""HAProxy's counters summed over a fleet, for the collector's loss accounting.

Every instance logs to the one collector, so the requests the collector counts per server are the
fleet's: they are reconciled with the sum of every instance's `show stat` counters, and the lines
HAProxy could not send (`DroppedLogs`) are summed too. The worker "Pid" combines every instance's,
so a restart of any one of them reads as a counter reset, as a restart of a single HAProxy does.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from fridaymorning.ingest.accounting import HAProxyStats

# Counters of `show stat` that add up over instances (the loss accounting reads `stot`).
SUMMED_FIELDS = ("stot", "scur")


def summed_rows(per_instance: Sequence[list[dict[str, str]]]) -> list[dict[str, str]]:
    """`show stat` rows of several instances as one: counters summed per (proxy, server)."""
    merged: dict[tuple[str, str], dict[str, str]] = {}
    for rows in per_instance:
        for row in rows:
            key = (row.get("pxname", ""), row.get("svname", ""))
            seen = merged.get(key)
            if seen is None:
                merged[key] = dict(row)
                continue
            for field in SUMMED_FIELDS:
                seen[field] = str(int(seen.get(field) or 0) + int(row.get(field) or 0))
    return list(merged.values())


def combined_info(per_instance: Sequence[dict[str, str]]) -> dict[str, str]:
    """`show info` of several instances as one: DroppedLogs summed, a Pid that changes with any."""
    dropped = sum(int(info.get("DroppedLogs") or 0) for info in per_instance)
    pids = sorted(info.get("Pid", "0") for info in per_instance)
    combined_pid = 0
    for pid in pids:
        combined_pid = (combined_pid * 1_000_003 + int(pid if pid.isdigit() else 0)) % (2**61 - 1)
    return {"Name": "HAProxy fleet", "Pid": str(combined_pid), "DroppedLogs": str(dropped)}


class FleetStats:
    """HAProxyStats over several instances; a RouterError when any one of them does not answer."""

    def __init__(self, instances: Sequence[HAProxyStats]) -> None:
        self.instances = list(instances)

    async def show_stat(self) -> list[dict[str, str]]:
        return summed_rows(await asyncio.gather(*(instance.show_stat() for instance in self.instances)))

    async def show_info(self) -> dict[str, str]:
        return combined_info(await asyncio.gather(*(instance.show_info() for instance in self.instances)))

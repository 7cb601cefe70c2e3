"""Which instances a platform replaced by itself: pure, so the controller's tracker stays I/O only.

A platform such as Swarm restarts a task whose container died under the same server name (its slot), at a
new address or port. The controller pairs what it routes to with what the platform now runs, by server
name, and replaces the HAProxy server of each pair that differs.
"""

from __future__ import annotations

from collections.abc import Sequence

from fridaymorning.models import Instance


def replaced_pairs(
    routed: Sequence[Instance], current: Sequence[Instance]
) -> list[tuple[Instance, Instance]]:
    """(routed, replacement) for each routed instance that `current` runs under the same server name but
    as another instance (another ref, address or port). A routed instance missing from `current` (gone,
    not yet replaced) pairs with nothing: HAProxy's checks keep it DOWN until its replacement runs."""
    by_server = {instance.server: instance for instance in current}
    pairs = []
    for instance in routed:
        replacement = by_server.get(instance.server)
        if replacement is not None and replacement != instance:
            pairs.append((instance, replacement))
    return pairs


def gone(routed: Sequence[Instance], current: Sequence[Instance]) -> list[Instance]:
    """The routed instances that `current` does not run at all: stopped, and not replaced yet."""
    running = {instance.server for instance in current}
    return [instance for instance in routed if instance.server not in running]


def swap(instances: Sequence[Instance], pairs: Sequence[tuple[Instance, Instance]]) -> list[Instance]:
    """`instances` with each replaced one swapped for its replacement, in the same order."""
    replacement = dict(pairs)
    return [replacement.get(instance, instance) for instance in instances]

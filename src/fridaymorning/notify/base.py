"""The Notifier role: tells people what a rollout did, without ever holding the rollout up."""

from __future__ import annotations

import asyncio
from typing import Any, Protocol


class Notifier(Protocol):
    """Delivers a rollout's events (fridaymorning.controller.notify.build_event) to people.

    Best effort: a target that is down, slow or refusing is counted, never raised into the controller,
    and never delays it. Each target receives the events one at a time, in the order they were given.
    """

    def send_in_background(self, event: dict[str, Any]) -> list[asyncio.Task[bool]]:
        """Queue `event` behind every event given before it and return at once: the delivery tasks, each
        True when its target accepted the event (the controller awaits them when it stops)."""
        ...

    def stats(self) -> dict[str, Any]:
        """What `fm status` shows: {"sent", "failed", "skipped", "targets": [per-target counts]}."""
        ...

"""The API's event stream: every committed rollout event reaches each open stream, as server-sent events."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from fridaymorning.api.events import EventHub
from fridaymorning.controller.phases import RolloutPhase
from fridaymorning.controller.state import StateStore


async def test_committed_events_reach_every_stream_filtered_by_service(tmp_path: Path) -> None:
    """A stream opens with a comment, then carries each committed event of its service as `event:`/`data:`."""
    states = StateStore(tmp_path / "state.db")
    hub = EventHub(states)
    everything, only_api = hub.stream(None), hub.stream("api")
    assert await anext(everything) == ": connected\n\n"
    assert await anext(only_api) == ": connected\n\n"
    rollout = states.create_rollout("web", "v2", "v1", now=1.0)
    states.transition(rollout, 2.0, "step", "step 1 at 10%", phase=RolloutPhase.PROGRESSING, canary_weight=10)
    states.create_rollout("api", "v7", "v6", now=3.0)
    received = [await asyncio.wait_for(anext(everything), 30) for _ in range(3)]
    kinds = [chunk.split("\n")[0] for chunk in received]
    assert kinds == ["event: started", "event: step", "event: started"]
    step = json.loads(received[1].split("data: ", 1)[1])
    assert (step["service"], step["canary_weight"], step["reason"]) == ("web", 10, "step 1 at 10%")
    api_only = await asyncio.wait_for(anext(only_api), 30)
    assert json.loads(api_only.split("data: ", 1)[1])["version"] == "v7"
    await everything.aclose()
    await only_api.aclose()
    states.close()

"""The event stream: every committed rollout event, as server-sent events."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import StreamingResponse

from fridaymorning.api.dependencies import Responses
from fridaymorning.controller.state import StateStore

# Seconds between keep-alive comments on the event stream, so proxies keep it open.
KEEPALIVE_S = 15.0


class EventStreamResponse(StreamingResponse):
    """A server-sent event stream; its media type is what the OpenAPI document declares."""

    media_type = "text/event-stream"


EVENT_STREAM: Responses = {
    200: {
        "description": "A server-sent event stream: one `event: KIND` and `data: {json}` per committed "
        "rollout event, and a comment every 15 s to keep the connection open",
        "content": {"text/event-stream": {"schema": {"type": "string"}}},
    }
}


class EventHub:
    """Fans the state store's committed events out to every open event stream."""

    def __init__(self, states: StateStore) -> None:
        self._queues: set[asyncio.Queue[dict[str, Any]]] = set()
        states.listeners.append(self.publish)

    def publish(self, event: dict[str, Any]) -> None:
        for queue in self._queues:
            queue.put_nowait(event)

    async def stream(self, service: str | None) -> AsyncGenerator[str, None]:
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._queues.add(queue)
        try:
            yield ": connected\n\n"
            while True:
                try:
                    event = await asyncio.wait_for(queue.get(), KEEPALIVE_S)
                except TimeoutError:
                    yield ": keep-alive\n\n"
                    continue
                if service is None or event["service"] == service:
                    yield f"event: {event['kind']}\ndata: {json.dumps(event, default=str)}\n\n"
        finally:
            self._queues.discard(queue)


def hub_of(request: Request) -> EventHub:
    """The app's hub, created with it (`create_app`)."""
    hub: EventHub = request.app.state.hub
    return hub


router = APIRouter()


@router.get("/api/v1/events", response_class=EventStreamResponse, responses=EVENT_STREAM)
async def events(
    hub: Annotated[EventHub, Depends(hub_of)], service: str | None = None
) -> EventStreamResponse:
    """Server-sent events: every committed rollout event, as it happens."""
    return EventStreamResponse(hub.stream(service))

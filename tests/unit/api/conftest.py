"""Fixtures for the API's tests: the real app over a runtime of fakes, served in-process.

The app's handlers start rollouts with `asyncio.create_task`, so the controllers, the handlers and
the rollouts they start must share one running event loop. Starlette's TestClient, entered as a
context manager, runs one in a thread (its portal) for the whole test: the controllers are started
there, every request runs there, and at teardown every controller is stopped there, which cancels
any rollout a request started.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
from anyio.from_thread import BlockingPortal
from fastapi import FastAPI
from fastapi.testclient import TestClient

from fridaymorning.api.app import create_app
from fridaymorning.config import ServiceConfig
from fridaymorning.controller.loop import ServiceController
from fridaymorning.controller.state import StateStore
from fridaymorning.store.base import MetricStore
from fridaymorning.testing import FakePlatform, FakeRouter, MemoryMetricStore, unstarted_service

TOKEN = "api-test-token-0123456789abcdef"

T = TypeVar("T")


def service_config(name: str, *, approval: bool = False) -> ServiceConfig:
    """A canary service whose steps last an hour: a rollout waits for people, nothing moves on its own."""
    step = {"min_duration_s": 3600, "max_duration_s": 7200, "min_requests": 50, "approval": approval}
    return ServiceConfig.model_validate(
        unstarted_service(
            name,
            "127.0.0.1:18080",
            rollout={"judge_interval_s": 0.05, "steps": [{"weight": 10, **step}, {"weight": 50, **step}]},
            analysis={"min_requests": 50},
        )
    )


class FakeRuntime:
    """What the API needs of `fm up` (a RuntimeView), on FakeRouter, FakePlatform and MemoryMetricStore.

    Two services: `web` walks its steps; `shop` waits for approval after each step. The state store
    is the real SQLite one.
    """

    def __init__(self, state_path: Path) -> None:
        self.states = StateStore(state_path)
        self.reloads = 0
        self.memory = MemoryMetricStore()
        self.metrics: MetricStore | None = self.memory
        self.platforms = {"web": FakePlatform(), "shop": FakePlatform()}
        self.routers = {"web": FakeRouter(), "shop": FakeRouter()}
        self.controllers = {
            name: ServiceController(
                service_config(name, approval=name == "shop"),
                self.routers[name],
                self.platforms[name],
                self.memory,
                self.states,
            )
            for name in ("web", "shop")
        }

    async def start(self) -> None:
        for controller in self.controllers.values():
            await controller.start()

    async def stop(self) -> None:
        for controller in self.controllers.values():
            await controller.stop()

    def status(self) -> dict[str, Any]:
        return {
            "services": [controller.snapshot() for controller in self.controllers.values()],
            "collector": {},
        }

    async def reload_haproxy(self) -> None:
        self.reloads += 1


async def unfinished_rollout_tasks() -> list[str]:
    """Names of the rollout tasks still pending on the running loop."""
    return sorted(
        task.get_name()
        for task in asyncio.all_tasks()
        if task.get_name().startswith("rollout-") and not task.done()
    )


@dataclass
class Served:
    """The app, its runtime, and a client whose requests run on the loop the controllers run on."""

    runtime: FakeRuntime
    app: FastAPI
    client: TestClient
    portal: BlockingPortal
    token: str = TOKEN

    @property
    def auth(self) -> dict[str, str]:
        """The Authorization header that carries the app's token."""
        return {"Authorization": f"Bearer {self.token}"}

    def run(self, function: Callable[[], Awaitable[T]]) -> T:
        """Run a coroutine function on the app's event loop, from the test's thread."""
        return self.portal.call(function)

    def wait_until(self, condition: Callable[[], bool], timeout: float = 60.0) -> None:
        """Let the app's loop run until `condition()` holds; fail after `timeout` seconds."""

        async def poll() -> None:
            async with asyncio.timeout(timeout):
                while not condition():
                    await asyncio.sleep(0.01)

        self.run(poll)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    """The API over a started FakeRuntime; at teardown every controller stops and no rollout is left."""
    runtime = FakeRuntime(tmp_path / "state.db")
    app = create_app(runtime, TOKEN)
    with TestClient(app, raise_server_exceptions=False) as client:
        portal = client.portal
        assert portal is not None
        portal.call(runtime.start)
        try:
            yield Served(runtime, app, client, portal)
        finally:
            portal.call(runtime.stop)
            left = portal.call(unfinished_rollout_tasks)
    runtime.states.close()
    assert left == [], f"rollout tasks still running after the controllers stopped: {left}"

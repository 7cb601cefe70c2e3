"""Fixtures for the router's unit tests: a Config to render, and a fake admin socket."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from fridaymorning.config import Config


def build_config(tmp_path: Path, **haproxy: Any) -> Config:
    """A Config with two services, 'web' and 'api', rooted at `tmp_path`."""
    services = [
        {
            "name": name,
            "frontend": f"127.0.0.1:{port}",
            "stable": "v1",
            "platform": {"command": ["app", "--port", "{port}"], "health_path": "/healthz"},
            "rollout": {"steps": [{"weight": 10}]},
        }
        for name, port in (("web", 8080), ("api", 8081))
    ]
    config = Config.model_validate({"haproxy": haproxy, "services": services})
    config.base_dir = str(tmp_path)
    return config


@pytest.fixture
def make_config(tmp_path: Path) -> Callable[..., Config]:
    """`make_config(**haproxy_settings)` → a two-service Config rooted at tmp_path."""
    return lambda **haproxy: build_config(tmp_path, **haproxy)


class FakeAdminSocket:
    """A Unix socket that answers like HAProxy's admin socket: one command per connection.

    `answers` maps a command prefix to its answer (the longest matching prefix wins); unknown
    commands get HAProxy's "Unknown command" answer. Every command received is kept in `commands`.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.commands: list[str] = []
        self.answers: dict[str, str] = {}

    def answer(self, command: str) -> str:
        matches = [prefix for prefix in self.answers if command.startswith(prefix)]
        if not matches:
            return "Unknown command, but maybe one of the following ones is a better match:\n  help\n\n"
        return self.answers[max(matches, key=len)]

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        command = (await reader.readline()).decode().rstrip("\n")
        self.commands.append(command)
        writer.write(self.answer(command).encode())
        await writer.drain()
        writer.close()


@pytest.fixture
async def fake_admin_socket(tmp_path: Path) -> AsyncIterator[FakeAdminSocket]:
    """A running FakeAdminSocket at tmp_path/admin.sock."""
    fake = FakeAdminSocket(tmp_path / "admin.sock")
    server = await asyncio.start_unix_server(fake.handle, path=str(fake.path))
    async with server:
        yield fake

"""What every platform does alike: check a start request, and ask an instance's health endpoint."""

from __future__ import annotations

import asyncio
import re

import httpx

from fridaymorning.errors import PlatformError
from fridaymorning.models import VERSION_PATTERN, Instance

# A health check that takes longer has failed.
HEALTH_REQUEST_TIMEOUT_S = 1.0
# A label names instances apart from their version ('v1__baseline'), so unlike a version it may hold '__'.
LABEL_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._]{0,63}$")


def check_start(version: str, replicas: int, label: str) -> None:
    """Refuse a start request no platform can honour: a bad version token or label, or no replica."""
    if not VERSION_PATTERN.match(version):
        raise PlatformError(f"cannot start version {version!r}: not a valid version token")
    if label and not LABEL_PATTERN.match(label):
        raise PlatformError(f"cannot start version {version} as {label!r}: not a valid label")
    if replicas < 1:
        raise PlatformError(f"cannot start version {version}: replicas must be at least 1, got {replicas}")


def url_host(host: str) -> str:
    """`host` as it stands in a URL: an IPv6 address in brackets."""
    return f"[{host}]" if ":" in host else host


class HealthProbe:
    """GET http://host:port{path} for instances, through one client opened on first use;
    trust_env=False so that a proxy setting never catches an instance's address."""

    def __init__(self, path: str, poll_interval_s: float) -> None:
        self.path = path
        self.poll_interval_s = poll_interval_s
        self._client: httpx.AsyncClient | None = None

    async def health(self, instance: Instance) -> bool:
        """True when the instance answers GET path with 2xx within HEALTH_REQUEST_TIMEOUT_S."""
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=HEALTH_REQUEST_TIMEOUT_S, trust_env=False)
        url = f"http://{url_host(instance.host)}:{instance.port}{self.path}"
        try:
            response = await self._client.get(url)
        except httpx.HTTPError:
            return False
        return response.is_success

    async def answers_within(self, instance: Instance, timeout_s: float) -> bool:
        """True when the instance answers its health check with 2xx within `timeout_s` (polled)."""
        try:
            async with asyncio.timeout(timeout_s):
                while not await self.health(instance):
                    await asyncio.sleep(self.poll_interval_s)
                return True
        except TimeoutError:
            return False

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

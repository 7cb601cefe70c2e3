"""What the HTTP providers share: the base URL from a provider URL, one async client, and errors."""

from __future__ import annotations

import math
from typing import Any, TypedDict
from urllib.parse import urlsplit

import httpx

from fridaymorning.errors import ConfigError, ProviderError
from fridaymorning.store.base import MetricStore

# A query that takes longer is an error measurement; the controller may give a check less time.
DEFAULT_TIMEOUT_S = 10.0


def base_url(url: str) -> tuple[str, str]:
    """('http://HOST:PORT', '/path') from 'scheme://HOST:PORT/path'; ConfigError without a host."""
    parts = urlsplit(url)
    if not parts.hostname or parts.port is None:
        raise ConfigError(f"provider {url!r} needs a host and a port, e.g. {parts.scheme}://127.0.0.1:9090")
    return f"http://{parts.netloc}", parts.path.rstrip("/")


def finite(value: Any, what: str) -> float:
    """`value` as a finite float, else ProviderError saying what it was."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ProviderError(f"{what} is {value!r}, not a number") from None
    if not math.isfinite(number):
        raise ProviderError(f"{what} is {value}, not a finite number")
    return number


class HttpOptions(TypedDict, total=False):
    """What every HTTP provider takes besides its URL (see HttpProvider)."""

    store: MetricStore | None
    timeout_s: float
    transport: httpx.AsyncBaseTransport | None


class HttpProvider:
    """An async httpx client to one server, opened at the first query and closed by `aclose`."""

    def __init__(
        self,
        url: str,
        *,
        store: MetricStore | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        """`store` is the metric store, which every provider is offered; these query servers instead."""
        self.url = url
        self.transport = transport  # httpx's own: e.g. httpx.MockTransport in unit tests
        self.root, self.path = base_url(url)
        self.timeout_s = timeout_s
        self._client: httpx.AsyncClient | None = None

    async def get_json(self, path: str, params: dict[str, str]) -> Any:
        """GET `path` and decode its JSON; any failure is a ProviderError with the server's reason."""
        if self._client is None:
            self._client = httpx.AsyncClient(
                base_url=self.root, timeout=self.timeout_s, transport=self.transport
            )
        try:
            response = await self._client.get(self.path + path, params=params)
        except httpx.TimeoutException:
            raise ProviderError(f"{self.url}: no answer within {self.timeout_s:g} s") from None
        except httpx.HTTPError as error:
            raise ProviderError(f"{self.url}: {type(error).__name__}: {error}") from None
        try:
            body = response.json()
        except ValueError:
            body = None
        if response.status_code != 200:
            reason = body.get("error") if isinstance(body, dict) else None
            raise ProviderError(f"{self.url}: HTTP {response.status_code}: {reason or response.text[:200]}")
        if body is None:
            raise ProviderError(f"{self.url}: the answer is not JSON: {response.text[:200]!r}")
        return body

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

"""The MetricProvider role: one number from a monitoring system, for a custom check.

A provider runs a query (already rendered from its template) over a window of time and returns one
finite number. Anything else (an HTTP error, a timeout, a bad query, no series, several series, NaN)
raises ProviderError with a message a person can act on; the controller records it as a measurement
with phase `error`, never as a pass.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class QueryWindow:
    """The closed seconds [start, end) a query looks at (Unix time), for providers that read windows;
    PromQL and InfluxQL say their range in the query itself (`{{ window }}`)."""

    start: int
    end: int

    @property
    def seconds(self) -> int:
        return self.end - self.start


class MetricProvider(Protocol):
    """Runs a check's query. Calls are async; a provider holds its connections until `aclose`."""

    async def run(self, query: str, window: QueryWindow) -> float:
        """The query's value over `window`: one finite number, else ProviderError."""
        ...

    async def aclose(self) -> None:
        """Release the provider's connections."""
        ...
